"""Queue compression (firmware/compress.py): REPEAT runs that issue exactly what the uncompressed
program issues.  Every comparison records every unit-instruction dispatch of the golden reference
stepper (slice, cycle, instruction with its operands and addresses) and requires the two programs'
dispatches to be identical, plus the same cycles, halt cycles, busy counts and MEM; FastGolden must
give the reference's outcome on both."""

import copy
import re

import numpy as np
import pytest
import yaml

from tests.firmware.test_compiler import layer
from tests.harness import variant
from tests.sim.golden.test_fast import case_image, mutate
from tinylpu.config import load_config, parse_config
from tinylpu.firmware import compress as cz
from tinylpu.firmware.asm import assemble
from tinylpu.firmware.check import ProgramCheckError, check_program
from tinylpu.firmware.compiler import compile_ffn
from tinylpu.firmware.compress import advance, compress_program, expand_program
from tinylpu.firmware.program import Program
from tinylpu.firmware.quant import quantize_ffn
from tinylpu.firmware.randprog import random_program
from tinylpu.isa import OPS, Insn, Opcode, StreamRef
from tinylpu.sim.golden.chip import Golden, ProgramError, _advance
from tinylpu.sim.golden.fast import FastGolden, _advance_fields
from tinylpu.sim.host.api import run_compiled

TINY = load_config("tiny")


class _Recorder(Golden):
    """The reference stepper, recording every dispatch: (slice, cycle, instruction, queue index)."""

    def _dispatch(self, sname, insn, idx, c):
        self.log.append((sname, c, insn, idx))
        return super()._dispatch(sname, insn, idx, c)


def _load(g, program, image):
    g.load_program(program)
    for bank, lst in image.items():
        for addr, v in lst:
            g.write_mem(bank, addr, v)


def reference(cfg, program, image, max_cycles=200_000):
    """Run on the reference stepper: (outcome, dispatch log, engine)."""
    g = _Recorder(cfg)
    g.log = []
    _load(g, program, image)
    try:
        r = g.run(max_cycles=max_cycles)
        out = ("ok", r.cycles, _busy(r.activity), r.halted)
    except ProgramError as e:
        out = ("error", e.cycle, e.slice, e.index, e.insn, e.message)
    return out, g.log, g


def fast(cfg, program, image, max_cycles=200_000):
    f = FastGolden(cfg)
    _load(f, program, image)
    try:
        r = f.run(max_cycles=max_cycles)
        return ("ok", r.cycles, _busy(r.activity), r.halted), f
    except ProgramError as e:
        return ("error", e.cycle, e.slice, e.index, e.insn, e.message), f


def _busy(activity):
    """Activity without ``issued`` (queue words fetched: what compression changes)."""
    return {s: {k: v for k, v in a.items() if k != "issued"} for s, a in activity.items()}


def _same_mem(a, b):
    return a.mem.keys() == b.mem.keys() and all(np.array_equal(a.mem[k], b.mem[k]) for k in a.mem)


def _log_key(log):
    return sorted((s, c, str(i)) for s, c, i, _ in log)


def assert_equivalent(cfg, p0, p1, image, use_fast=True):
    """p1 (compressed) issues exactly what p0 issues, on the reference and on FastGolden."""
    o0, log0, g0 = reference(cfg, p0, image)
    o1, log1, g1 = reference(cfg, p1, image)
    assert o0[0] == "ok", o0
    assert o1 == o0
    assert _log_key(log1) == _log_key(log0)
    assert _same_mem(g0, g1)
    if use_fast:
        for p in (p0, p1):
            fo, f = fast(cfg, p, image)
            assert fo == o0 and _same_mem(f, g0)
    return o0, log1


def assert_listing(program, listing, log):
    """The listing's cycle of every unit instruction is its dispatch cycle, of a REPEAT its first
    repetition's (``Schedule.finish``'s convention)."""
    first = {}
    reps = {}
    for s, c, insn, idx in log:
        first.setdefault((s, idx), c)
        if first[(s, idx)] != c:
            reps.setdefault((s, idx), c)
    for (q, k), c in listing.items():
        op = program.queues[q][k].op
        if OPS[op].unit != "any":
            assert first[(q, k)] == c, (q, k, program.queues[q][k])
        elif op == Opcode.REPEAT:
            assert reps[(q, k - 1)] == c, (q, k)
    assert set(listing) == {(q, k) for q, v in program.queues.items() for k in range(len(v))}


def length(p):
    return sum(len(v) for v in p.queues.values())


# --- the REPEAT semantics it relies on -----------------------------------------------------------

def _random_unit_insn(rng, op):
    info = OPS[op]
    fields = {}
    for o in info.operands:
        if o.kind in ("stream", "group"):
            fields[o.field] = StreamRef(int(rng.integers(0, 13)), bool(rng.integers(2)))
        elif o.kind == "count":
            fields[o.field] = int(rng.integers(1, 40))
        elif o.kind == "uint":
            fields[o.field] = int(rng.integers(0, min(1 << o.bits, 200)))
        elif o.kind == "sint":
            fields[o.field] = int(rng.integers(-(1 << (o.bits - 1)), 1 << (o.bits - 1)))
    if any(o.imm_flag for o in info.operands) and rng.random() < 0.5:
        fields["use_imm"], fields["imm"] = 1, int(rng.integers(-128, 128))
    return Insn.make(op, **fields)


def test_advance_is_the_golden_models():
    """compress.advance is chip._advance and fast._advance_fields for every unit opcode (the RTL ICU's
    ``advance``: READ/WRITE addr += count x stride, LW/MM/EMIT addr += count, LDLUT imm += count)."""
    rng = np.random.default_rng(0)
    for op, info in OPS.items():
        if info.unit == "any":
            continue
        for _ in range(20):
            i = _random_unit_insn(rng, op)
            a = advance(i)
            assert a == _advance(i, TINY.lanes)
            assert _advance_fields((op, i.fields)) == (op, a.fields)
            if op in (Opcode.READ, Opcode.WRITE, Opcode.LW, Opcode.MM, Opcode.EMIT, Opcode.LDLUT):
                assert a != i
            else:
                assert a == i, op


# --- hand-written queues: the rules ---------------------------------------------------------------

def _prog(src, cfg=TINY):
    return assemble(src, cfg, "<test>")


def _q(program, name):
    return [str(i) for i in program.queues[name]]


def _image(cfg=TINY, banks=8, rows=64, seed=0):
    rng = np.random.default_rng(seed)
    return {f"mem{b}": [(0, rng.integers(-128, 128, (rows, cfg.lanes), dtype=np.int8))] for b in range(banks)}


def test_run_with_nop_gaps_becomes_one_repeat():
    p0 = _prog("""
        .queue mem0
            READ e0, 0, n=2
            NOP 4
            READ e0, 2, n=2
            NOP 4
            READ e0, 4, n=2
            NOP 4
            READ e0, 6, n=2
            NOP 9
            READ e1, 7, n=1, stride=-1
            READ e1, 6, n=1, stride=-1
            READ e1, 5, n=1, stride=-1
            HALT
        """)
    p1, _, imap = compress_program(p0)
    assert _q(p1, "mem0") == ["READ e0, 0, n=2", "REPEAT 3, 5", "NOP 5", "READ e1, 7, stride=-1", "REPEAT 2, 1",
                              "HALT"]
    assert imap[("mem0", 4)] == 0 and imap[("mem0", 9)] == 3 and imap[("mem0", 11)] == 5
    check_program(p1, TINY)
    assert_equivalent(TINY, p0, p1, _image())


def test_next_instruction_too_soon_keeps_the_last_member():
    """The instruction after a REPEAT issues d cycles after its last repetition at the earliest: a
    run followed sooner gives up its last member."""
    p0 = _prog("""
        .queue mem0
            READ e0, 0
            NOP 2
            READ e0, 1
            NOP 2
            READ e0, 2
            READ e1, 30
            NOP 3
            HALT
        """)
    p1, _, _ = compress_program(p0)
    assert _q(p1, "mem0") == ["READ e0, 0", "REPEAT 1, 3", "READ e0, 2", "READ e1, 30", "NOP 3", "HALT"]
    assert_equivalent(TINY, p0, p1, _image())


def test_what_does_not_merge():
    """Operands other than the address must match; the address must continue exactly; GATHER keeps its
    base (no advance); a spacing change ends a run; SYNC and NOTIFY end a run."""
    p0 = _prog("""
        .queue mem0
            READ e0, 0, n=2
            READ e0, 3, n=2
            READ e1, 5, n=2
            READ e1, 7
            NOP 1
            GATHER e2, e3, 8
            GATHER e2, e3, 8
            GATHER e2, e3, 8
            NOP 1
            GATHER e2, e3, 8
            NOTIFY
            READ e0, 10
            SYNC
            READ e0, 11
            HALT
        """)
    p1, _, _ = compress_program(p0)
    assert _q(p1, "mem0") == ["READ e0, 0, n=2", "READ e0, 3, n=2", "READ e1, 5, n=2", "READ e1, 7", "NOP",
                              "GATHER e2, e3, base=8", "REPEAT 2, 1", "NOP", "GATHER e2, e3, base=8", "NOTIFY",
                              "READ e0, 10", "SYNC", "READ e0, 11", "HALT"]


def test_barriers_and_existing_repeats():
    """Existing REPEATs are expanded and re-found (merging with neighbours); runs never span a SYNC;
    a queue whose REPEAT follows no unit instruction is left as it is (check_program refuses it)."""
    p0 = _prog("""
        .queue mem0
            READ e0, 0, n=2
            REPEAT 1, 3
            READ e0, 4, n=2
            NOP 2
            READ e0, 6, n=2
            NOP 3
            NOTIFY
            NOP 2
            HALT
        .queue mem1
            SYNC
            READ e4, 0
            NOP 2
            READ e4, 1
            NOP 2
            HALT
        """)
    p1, _, _ = compress_program(p0)
    assert _q(p1, "mem0") == ["READ e0, 0, n=2", "REPEAT 3, 3", "NOP", "NOTIFY", "NOP 2", "HALT"]
    assert _q(p1, "mem1") == ["SYNC", "READ e4, 0", "REPEAT 1, 3", "HALT"]
    assert_equivalent(TINY, p0, p1, _image())
    bad = Program({"mem0": [Insn.make(Opcode.NOP, n=2), Insn.make(Opcode.REPEAT, n=1, d=1),
                            Insn.make(Opcode.READ, s=StreamRef(0, False), addr=0), Insn.make(Opcode.READ, s=StreamRef(0, False), addr=1),
                            Insn.make(Opcode.HALT)]})
    assert compress_program(bad)[0].queues == bad.queues


def test_field_limits(monkeypatch):
    """n <= 2^24 - 1 (runs longer are split), d <= 2^16 - 1 (larger spacings are not merged), NOPs
    longer than 2^24 - 1 are split."""
    monkeypatch.setattr(cz, "REPEAT_N_MAX", 3)
    reads = []
    for k in range(10):
        reads += [Insn.make(Opcode.READ, s=StreamRef(0, False), addr=k)]
    p0 = Program({"mem0": reads + [Insn.make(Opcode.HALT)]})
    p1, _, _ = compress_program(p0)
    assert _q(p1, "mem0") == ["READ e0, 0", "REPEAT 3, 1", "READ e0, 4", "REPEAT 3, 1", "READ e0, 8",
                              "REPEAT 1, 1", "HALT"]
    assert_equivalent(TINY, p0, p1, _image())
    monkeypatch.undo()
    far = cz.REPEAT_D_MAX + 1
    p0 = Program({"mem0": [Insn.make(Opcode.READ, s=StreamRef(0, False), addr=0), Insn.make(Opcode.NOP, n=far - 1),
                           Insn.make(Opcode.READ, s=StreamRef(0, False), addr=1), Insn.make(Opcode.HALT)]})
    assert compress_program(p0)[0].queues == p0.queues
    monkeypatch.setattr(cz, "NOP_N_MAX", 100)
    p0 = Program({"mem0": [Insn.make(Opcode.NOP, n=250), Insn.make(Opcode.HALT)]})
    assert _q(compress_program(p0)[0], "mem0") == ["NOP 100", "NOP 100", "NOP 50", "HALT"]


# --- compiled layers -------------------------------------------------------------------------------

def _compiled(cfg, dm, dff, T, act, seed=0):
    gated = act in ("swiglu", "geglu")
    w = layer(dm, dff, act, gated=gated, seed=seed)
    x = np.random.default_rng(seed + 1).normal(size=(T, dm))
    q = quantize_ffn(w, x)
    return q, compile_ffn(q, cfg, T), q.quantize_input(x)


def _run_image(c, xq, run):
    img = {}
    for bank, lst in c.mem_image.items():
        img.setdefault(bank, []).extend(lst)
    for bank, lst in c.pack_input(xq, run).items():
        img.setdefault(bank, []).extend(lst)
    return img


def _uncompressed(r):
    """The run's program as the schedule finishes it, before compression."""
    p0, H, l0 = r.schedule.finish()
    assert H + 1 == r.predicted_cycles
    return p0, l0


@pytest.mark.parametrize("cfgname,dm,dff,T,act", [
    ("tiny", 64, 128, 16, "swiglu"),      # make sim's layer
    ("tiny", 32, 48, 1, "gelu"),
    ("tiny", 48, 16, 70, "gelu"),         # several token blocks
    ("fpga", 32, 64, 20, "swiglu"),
    ("fpga", 32, 64, 1, "gelu"),
    ("lpu", 256, 512, 4, "gelu"),
    ("lpu", 128, 192, 1, "swiglu"),
])
def test_compiled_layer_on_reference_and_fast(cfgname, dm, dff, T, act):
    """The compiler's program is the compressed one; it is shorter and issues exactly what the
    uncompressed program issues (reference stepper), FastGolden agrees, the cycles are the
    compiler's, the listing's cycles are the issue cycles, the numbers the integer reference."""
    cfg = load_config(cfgname)
    q, c, xq = _compiled(cfg, dm, dff, T, act)
    r = c.runs[0]
    p0, l0 = _uncompressed(r)
    p1, l1, _ = compress_program(p0, l0)
    assert p1.queues == r.program.queues and l1 == r.listing
    assert compress_program(r.program)[0].queues == r.program.queues             # a fixed point
    pe, le, _ = expand_program(r.program, r.listing)
    assert pe.queues == expand_program(p0)[0].queues and compress_program(pe, le)[1] is not None
    assert length(r.program) < length(p0)
    assert all(len(r.program.queues[k]) <= len(v) for k, v in p0.queues.items())
    out, log = assert_equivalent(cfg, p0, r.program, _run_image(c, xq, 0))
    assert out[1] == r.predicted_cycles
    assert_listing(r.program, r.listing, log)
    if len(c.runs) == 1:
        assert np.array_equal(run_compiled(c, xq).y, q.run_int(xq))


@pytest.mark.parametrize("cfgname,dm,dff,T,act", [
    ("tiny", 64, 256, 64, "swiglu"),      # three runs (SRAM)
    ("lpu", 576, 1536, 1, "swiglu"),
    ("lpu", 576, 1536, 17, "gelu"),
])
def test_larger_compiled_layers_on_fast(cfgname, dm, dff, T, act):
    """Larger layers on FastGolden only: every run's compressed program gives the uncompressed one's
    outcome and MEM, and the layer the integer reference."""
    cfg = load_config(cfgname)
    q, c, xq = _compiled(cfg, dm, dff, T, act)
    for i, r in enumerate(c.runs):
        p0, _ = _uncompressed(r)
        assert length(r.program) < length(p0)
        img = _run_image(c, xq, i)
        o0, f0 = fast(cfg, p0, img)
        o1, f1 = fast(cfg, r.program, img)
        assert o0[0] == "ok" and o1 == o0 and o0[1] == r.predicted_cycles and _same_mem(f0, f1)
    assert np.array_equal(run_compiled(c, xq).y, q.run_int(xq))


def _with_queue_depth(base, depth):
    raw = copy.deepcopy(load_config(base).raw)
    raw["name"], raw["queue_depth"] = f"{base}-q{depth}", depth
    return parse_config(yaml.safe_dump(raw), f"<{raw['name']}>")


def test_layer_that_failed_the_queue_depth_now_compiles():
    """lpu, 256 x 512 GELU, 4 tokens (one block): the uncompressed program's longest queue is mem4
    (274 instructions; mxm0 271); compressed, mem4 takes 265, so with queue_depth 272 the layer
    compiles into one run where it used to fail; at 260 it runs cut by work (several runs).  (On the
    shipped configs the MXM queue, which REPEAT cannot shorten, is the longest of every measured
    layer: see docs/compiler.md.)"""
    cfg = _with_queue_depth("lpu", 272)
    q, c, xq = _compiled(cfg, 256, 512, 4, "gelu")
    assert len(c.runs) == 1
    p0, _ = _uncompressed(c.runs[0])
    before = {k: len(v) for k, v in p0.queues.items()}
    after = {k: len(v) for k, v in c.program.queues.items()}
    assert max(before.values()) > 272 >= max(after.values())
    assert before["mem4"] == max(before.values()) and after["mem4"] < before["mem4"]
    out = run_compiled(c, xq)
    assert out.cycles == c.predicted_cycles and np.array_equal(out.y, q.run_int(xq))
    q, c, xq = _compiled(_with_queue_depth("lpu", 260), 256, 512, 4, "gelu")   # too long: cut by work
    assert len(c.runs) > 1 and all(r.work is not None for r in c.runs)
    out = run_compiled(c, xq)
    assert out.run_cycles == [r.predicted_cycles for r in c.runs] and np.array_equal(out.y, q.run_int(xq))


# --- random programs -------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [TINY, load_config("fpga"), load_config("ice40"), load_config("duo"),
                                 variant("tiny", "tiny-rows4", install_rows=4)], ids=lambda c: c.name)
def test_random_programs(cfg):
    """randprog's programs (REPEAT bursts on MEM copies), written out without REPEAT
    (``expand_program``) and compressed again: all three issue the same, and the compressed program
    is no longer than randprog's."""
    shorter = 0
    for seed in range(16):
        case = random_program(cfg, seed)
        p0 = case.program
        pe, _, _ = expand_program(p0)
        p1, _, _ = compress_program(pe)
        check_program(p1, cfg)
        assert not any(i.op == Opcode.REPEAT for v in pe.queues.values() for i in v)
        assert compress_program(p1)[0].queues == p1.queues
        assert all(len(p1.queues[k]) <= len(v) for k, v in p0.queues.items())
        shorter += length(p1) < length(pe)
        assert_equivalent(cfg, p0, pe, case_image(case), use_fast=False)
        assert_equivalent(cfg, p0, p1, case_image(case))
    assert shorter >= 2, shorter


def test_mutated_random_programs_same_errors():
    """Mutants of random programs (most break the timing): the compressed mutant reports the same
    error (cycle, slice, instruction, message) as the mutant, its index mapped by the index map."""
    errors = 0
    for seed in range(30):
        case = random_program(TINY, seed)
        rng = np.random.default_rng(20_000 + seed)
        for _ in range(3):
            prog = mutate(case.program, rng, TINY)
            try:
                check_program(prog, TINY)
            except ProgramCheckError:
                continue
            p1, _, imap = compress_program(prog)
            o0, log0, _ = reference(TINY, prog, case_image(case), 20_000)
            o1, log1, _ = reference(TINY, p1, case_image(case), 20_000)
            assert _log_key(log1) == _log_key(log0)
            if o0[0] == "ok":
                assert o1 == o0
                continue
            errors += 1
            _, cyc, sl, idx, insn, msg = o0
            if idx is not None:
                idx = imap[(sl, idx)]
                msg = re.sub(r"\(#(\d+)\)", lambda m, sl=sl, imap=imap: f"(#{imap[(sl, int(m.group(1)))]})", msg)
            assert o1 == ("error", cyc, sl, idx, insn, msg)
            assert fast(TINY, p1, case_image(case), 20_000)[0] == o1
    assert errors >= 20, errors


# --- RTL ---------------------------------------------------------------------------------------

@pytest.mark.slow      # every compiled program is compressed, so the fast tier's RTL FFN tests run REPEATs too
def test_compressed_layer_on_rtl():
    """tiny, 32 x 64 SwiGLU, 8 tokens: the compressed program (17 READ REPEATs with d > 1) on the
    Verilog under Icarus takes the predicted cycles and gives golden's numbers."""
    _on_rtl(32, 64, 8, {Opcode.READ})


@pytest.mark.slow
def test_make_sim_layer_compressed_on_rtl():
    """make sim's layer (tiny, 64 x 128 SwiGLU, 16 tokens; READ and WRITE REPEATs, the MEM queues of
    the uncompressed program 2.4x longer) on Icarus (~35 s)."""
    _on_rtl(64, 128, 16, {Opcode.READ, Opcode.WRITE})


def _on_rtl(dm, dff, T, ops):
    q, c, xq = _compiled(TINY, dm, dff, T, "swiglu")
    p0, _ = _uncompressed(c.runs[0])
    reps = [c.program.queues[k][i - 1].op for k, v in c.program.queues.items()
            for i, insn in enumerate(v) if insn.op == Opcode.REPEAT and insn.d > 1]
    assert set(reps) >= ops
    assert length(c.program) < length(p0)
    out = run_compiled(c, xq, "rtl")
    assert out.cycles == c.predicted_cycles
    assert np.array_equal(out.y, run_compiled(c, xq).y)
    assert np.array_equal(out.y, q.run_int(xq))
    assert assemble(c.listing_text(), TINY).queues == c.program.queues
