"""FastGolden against Golden: same cycles, activity, halt cycles, MEM and unit state, and the same
ProgramError (type, cycle, slice, instruction, message) on every program: the examples, random
programs (and mutations of them that break the timing), compiled FFN layers, programs in sequence
on one chip (unit state persists), hand-written error programs and configs with other latencies."""

from importlib import resources

import numpy as np
import pytest

from tests.harness import variant
from tests.sim.golden.test_programs import ERRORS, ROWS4, ROWS4_ERRORS, ROWS4_LW
from tinylpu.config import load_config
from tinylpu.firmware.asm import assemble
from tinylpu.firmware.check import ProgramCheckError
from tinylpu.firmware.compiler import compile_ffn
from tinylpu.firmware.program import Program
from tinylpu.firmware.quant import FFNWeights, quantize_ffn
from tinylpu.firmware.randprog import random_program
from tinylpu.isa import OPS, Format, Insn, Opcode, StreamRef
from tinylpu.sim.golden import fast as fast_mod
from tinylpu.sim.golden.chip import Golden, ProgramError
from tinylpu.sim.golden.fast import FastGolden
from tinylpu.sim.perf.bench import steady_state_source

CFG = load_config("tiny")
STATE = ("mem", "weights", "acc", "lut", "req_m", "req_sh", "req_z", "perm")


def outcome(g, program, image, max_cycles=20_000):
    """Run `program` on engine `g` after writing `image` ({bank: [(addr, vectors)]})."""
    g.load_program(program)
    for bank, lst in image.items():
        for addr, v in lst:
            g.write_mem(bank, addr, v)
    try:
        r = g.run(max_cycles=max_cycles)
    except ProgramError as e:
        return ("error", type(e), e.cycle, e.slice, e.index, e.insn, e.message)
    return ("ok", r.cycles, r.activity, r.halted)


def assert_same_state(g, f):
    for attr in STATE:
        a, b = getattr(g, attr), getattr(f, attr)
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k]), f"{attr}[{k}] differs"


def compare(cfg, program, image, g=None, f=None, max_cycles=20_000):
    """Run on both engines (fresh ones unless given); returns (outcome, FastGolden used its fast path)."""
    g = g or Golden(cfg)
    f = f or FastGolden(cfg)
    before = f.fallbacks
    want = outcome(g, program, image, max_cycles)
    got = outcome(f, program, image, max_cycles)
    assert got == want
    assert_same_state(g, f)
    return want, f.fallbacks == before


def case_image(case):
    return {bank: [(addr, img)] for bank, (addr, img) in case.mem.items()}


# --- (a) the example programs and the steady-state benchmark program -----------------------------

def test_examples():
    rng = np.random.default_rng(0)
    files = [p for p in (resources.files("tinylpu.firmware") / "examples").iterdir() if p.name.endswith(".s")]
    assert files
    for p in files:
        prog = assemble(p.read_text(), CFG, p.name)
        image = {f"mem{b}": [(0, rng.integers(-128, 128, (64, CFG.lanes), dtype=np.int8))] for b in range(8)}
        res, fast = compare(CFG, prog, image)
        assert res[0] == "ok" and fast, p.name


def test_steady_state_program():
    prog = assemble(steady_state_source(CFG, cycles=1000), CFG, "<steady>")
    rng = np.random.default_rng(1)
    image = {f"mem{b}": [(0, rng.integers(-128, 128, (4, CFG.lanes), dtype=np.int8))] for b in range(4)}
    res, fast = compare(CFG, prog, image)
    assert res[0] == "ok" and fast


# --- (b) random programs, and mutations that break them ------------------------------------------

@pytest.mark.parametrize("cfgname", ["tiny", "fpga", "ice40", "duo"])
def test_random_programs(cfgname):
    cfg = load_config(cfgname)
    for seed in range(60 if cfgname == "tiny" else 25):
        res, fast = compare(cfg, (case := random_program(cfg, seed)).program, case_image(case))
        assert res[0] == "ok" and fast, (cfgname, seed, case.flows)


def test_random_programs_other_latencies():
    """Minimum latencies, and long ones, change every landing and hazard window."""
    for cfg in (variant("tiny", "tiny-min", mem_read=2, mem_write=2, mxm_install=1, mxm_mm=3, mxm_emit=2,
                        vxm_alu=2, vxm_mul=2, vxm_req=2, vxm_lut=2, sxm=2, notify=1),
                variant("tiny", "tiny-long", mem_read=4, mem_write=5, mxm_install=3, mxm_mm=7, vxm_req=6, notify=4)):
        for seed in range(20):
            res, fast = compare(cfg, (case := random_program(cfg, seed)).program, case_image(case))
            assert res[0] == "ok" and fast, (cfg.name, seed)


@pytest.mark.parametrize("rows", [2, 4, 8])
def test_random_programs_install_rows(rows):
    """LW installing `rows` rows per element from as many streams (mxm.install_rows)."""
    cfg = variant("tiny", f"tiny-rows{rows}", install_rows=rows)
    lws = 0
    for seed in range(25):
        case = random_program(cfg, seed)
        lws += sum(f" from {rows} streams" in f for f in case.flows)
        res, fast = compare(cfg, case.program, case_image(case))
        assert res[0] == "ok" and fast, (cfg.name, seed, case.flows)
    assert lws >= 10


def test_install_rows_hand_written():
    """The golden tests' R = 4 programs: a clean one and its errors (empty 4th stream, busy)."""
    rng = np.random.default_rng(7)
    image = {f"mem{b}": [(0, rng.integers(-128, 128, (16, CFG.lanes), dtype=np.int8))] for b in range(8)}
    res, fast = compare(ROWS4, assemble(ROWS4_LW.format(n=7, n3=1, second=""), ROWS4), image)
    assert res[0] == "ok" and fast
    for name, (src, _) in ROWS4_ERRORS.items():
        res, fast = compare(ROWS4, assemble(src, ROWS4), image)
        assert res[0] == "error" and not fast, name


def _stream_fields(insn):
    return [o.field for o in OPS[insn.op].operands if o.kind in ("stream", "group")
            and not (o.imm_flag and insn.fields.get("use_imm"))]


def mutate(program, rng, cfg):
    """A random small change: an issue time shifted, a stream renamed, a count or address changed,
    an instruction dropped.  Most make the program wrong; some leave it valid."""
    queues = {k: list(v) for k, v in program.queues.items()}
    names = [k for k, v in queues.items() if v]
    if not names:
        return Program(queues)
    name = names[int(rng.integers(len(names)))]
    q = queues[name]
    i = int(rng.integers(len(q)))
    insn = q[i]
    kind = rng.choice(["shift", "shift", "stream", "stream", "count", "addr", "drop"])
    if kind == "shift":
        if insn.op == Opcode.NOP and (insn.n > 1 or rng.random() < 0.5):
            q[i] = insn.replace(n=max(1, insn.n + int(rng.choice([-2, -1, 1, 2]))))
        else:
            q.insert(i, Insn.make(Opcode.NOP, n=int(rng.integers(1, 4))))
    elif kind == "stream" and _stream_fields(insn):
        fld = _stream_fields(insn)[int(rng.integers(len(_stream_fields(insn))))]
        s = insn.fields[fld]
        if rng.random() < 0.3:
            new = StreamRef(s.index, not s.west)
        else:
            new = StreamRef(int(rng.integers(cfg.streams)), s.west)
        q[i] = insn.replace(**{fld: new})
    elif kind == "count" and OPS[insn.op].fmt != Format.CTL and not OPS[insn.op].fixed:
        q[i] = insn.replace(count=max(1, insn.count + int(rng.choice([-1, 1, 3]))))
    elif kind == "addr" and "addr" in insn.fields:
        q[i] = insn.replace(addr=max(0, insn.addr + int(rng.choice([-40, -1, 1, 40, 500]))))
    else:
        del q[i]
    return Program(queues)


def _mutants(seeds, per_seed, cfg=CFG):
    stats = {"ok": 0, "error": 0, "check": 0, "fast": 0}
    for seed in seeds:
        case = random_program(cfg, seed)
        rng = np.random.default_rng(10_000 + seed)
        for _ in range(per_seed):
            prog = case.program
            for _ in range(int(rng.integers(1, 3))):
                prog = mutate(prog, rng, cfg)
            try:
                res, fast = compare(cfg, prog, case_image(case))
            except ProgramCheckError:
                stats["check"] += 1
                continue
            stats[res[0]] += 1
            stats["fast"] += fast
    return stats


def test_mutated_random_programs():
    stats = _mutants(range(60), 4)
    # both kinds occur, and the valid mutants ran on the fast path
    assert stats["error"] >= 50 and stats["ok"] >= 20 and stats["fast"] >= stats["ok"], stats


def test_mutated_random_programs_install_rows():
    stats = _mutants(range(30), 4, ROWS4)
    assert stats["error"] >= 25 and stats["ok"] >= 10 and stats["fast"] >= stats["ok"], stats


def test_program_errors_hand_written():
    for name, (src, _) in ERRORS.items():
        res, fast = compare(CFG, assemble(src, CFG, f"{name}.s"), {})
        assert res[0] == "error" and not fast, name


def test_error_kinds():
    """One program per kind of error the fast path must see (and hand to Golden to report)."""
    progs = {
        "port conflict": """
            .queue mem2
                READ e0, 0, n=2
                HALT
            .queue vxm0
                NOP 4
                MUL e1, e0, e0
                MOV e2, e0
                NOP 5
                HALT
            """,
        "empty stream mid-instruction": """
            .queue mem0
                READ e0, 0, n=3
                NOP 2
                HALT
            .queue mem1
                NOP 3
                WRITE e0, 0, n=4
                NOP 3
                HALT
            """,
        "gather index out of range": """
            .queue mem0
                READ e0, 0
                NOP 4
                HALT
            .queue mem1
                NOP 3
                GATHER e1, e0, base=500
                NOP 3
                HALT
            """,
        "repeat runs off the weight rows": """
            .queue mem0
                READ w0, 0, n=16
                NOP 16
                HALT
            .queue mxm0
                NOP 4
                LW w0, 0, 8, n=8
                REPEAT 1, 8
                NOP 3
                HALT
            """,
        "write in flight at the end": """
            .queue mem0
                READ e0, 0, n=2
                NOP 1
                HALT
            .queue mem1
                NOP 3
                WRITE e0, 0, n=2            ; the last element commits at 6, the program ends at 5
                HALT
            """,
        "deadlock after a notify": """
            .queue mem0
                NOTIFY
                SYNC
                HALT
            .queue mem1
                NOP 5
                SYNC
                HALT
            """,
        "emit hazard": """
            .queue mem0
                READ w0, 0
                HALT
            .queue mxm0
                NOP 4
                MM w0, 0, 3
                NOP 1
                EMIT e0, 3
                NOP 6
                HALT
            """,
    }
    rng = np.random.default_rng(3)
    image = {f"mem{b}": [(0, rng.integers(-128, 128, (8, CFG.lanes), dtype=np.int8))] for b in range(8)}
    for name, src in progs.items():
        res, fast = compare(CFG, assemble(src, CFG, name), image)
        assert res[0] == "error" and not fast, (name, res)


def test_max_cycles_and_sync_in_fire_cycle():
    src = f"""
    .queue mem0
        SYNC
        HALT
    .queue mem1
        NOP 10
        NOTIFY
        HALT
    .queue mem2
        NOP {10 + CFG.latency['notify']}
        SYNC                        ; issued in the fire cycle: waits for the next NOTIFY
        HALT
    .queue mem3
        NOP 20
        NOTIFY
        HALT
    """
    res, fast = compare(CFG, assemble(src, CFG), {})
    assert res[0] == "ok" and fast
    res, fast = compare(CFG, assemble(src, CFG), {}, max_cycles=15)
    assert res[0] == "error" and "did not halt" in res[-1]
    res, fast = compare(CFG, Program({}), {})
    assert res[:2] == ("ok", 0) and fast


def test_state_persists_across_runs():
    """Programs in sequence on one chip: weights, accumulators, LUT, LDM registers, PERM and MEM carry over."""
    g, f = Golden(CFG), FastGolden(CFG)
    n = 0
    for seed in range(100, 130):
        case = random_program(CFG, seed)
        res, fast = compare(CFG, case.program, case_image(case), g, f)
        n += res[0] == "ok" and fast
    assert n == 30


# --- (c) compiled FFN layers ----------------------------------------------------------------------

def _layer(dm, dff, act, gated=False, seed=0):
    rng = np.random.default_rng(seed)
    return FFNWeights(rng.normal(size=(dm, dff)) / np.sqrt(dm), rng.normal(size=(dff, dm)) / np.sqrt(dff),
                      rng.normal(size=(dm, dff)) / np.sqrt(dm) if gated else None,
                      rng.normal(size=dff) * 0.1, rng.normal(size=dm) * 0.1,
                      rng.normal(size=dff) * 0.1 if gated else None, act)


def compiled_layer(cfg, w, x, tokens):
    """The layer `w` quantized for inputs `x`, compiled for `cfg`, and its MEM image with the packed
    input: (quantized layer, Compiled, {bank: [(addr, vectors)]})."""
    q = quantize_ffn(w, x)
    c = compile_ffn(q, cfg, tokens)
    image = {}
    for bank, lst in list(c.mem_image.items()) + list(c.pack_input(q.quantize_input(x)).items()):
        image.setdefault(bank, []).extend(lst)
    return q, c, image


@pytest.mark.parametrize("dm,dff,act,gated,tokens", [(16, 32, "relu", False, 4), (32, 48, "gelu", False, 8),
                                                     (32, 48, "swiglu", True, 5), (48, 64, "gelu", False, 1)])
def test_compiled_ffn(dm, dff, act, gated, tokens):
    w = _layer(dm, dff, act, gated)
    x = np.random.default_rng(1).normal(size=(tokens, dm))
    q, c, image = compiled_layer(CFG, w, x, tokens)
    f = FastGolden(CFG)
    res, fast = compare(CFG, c.program, image, f=f, max_cycles=1_000_000)
    assert res[0] == "ok" and fast and res[1] == c.predicted_cycles
    y = c.unpack_output(f.read_mem)
    assert np.array_equal(y, q.run_int(q.quantize_input(x)))


@pytest.mark.parametrize("dm,dff,tokens", [(64, 128, 17), (128, 128, 9), (64, 192, 1), (128, 64, 40)])
def test_compiled_ffn_install_rows(dm, dff, tokens):
    """Compiled GELU layers on lpu-mini (64 lanes, 8 install rows): with several tokens the compiler
    installs 4 rows per cycle (``LW`` of 4 rows, ``REPEAT E-1, 1``), which the fast path runs as one
    unit of E elements of 4 rows each (``_Unit.rpe``); it equals the reference stepper."""
    cfg = load_config("lpu-mini")
    w = _layer(dm, dff, "gelu", seed=dm + tokens)
    x = np.random.default_rng(2).normal(size=(tokens, dm))
    q, c, image = compiled_layer(cfg, w, x, tokens)
    f = FastGolden(cfg)
    res, fast = compare(cfg, c.program, image, f=f, max_cycles=1_000_000)
    assert res[0] == "ok" and fast and res[1] == c.predicted_cycles
    assert np.array_equal(c.unpack_output(f.read_mem), q.run_int(q.quantize_input(x)))
    g = FastGolden(cfg)
    g.load_program(c.program)
    units = g._fast_schedule(1_000_000)[0]
    short = [u for u in units if u.op is Opcode.LW and u.rpe < cfg.install_rows]
    assert bool(short) == (tokens > 1) and all(u.n > 1 for u in short)


def _split_repeats(program, rng, R):
    """The same program with unit instructions of e > 1 elements cut into e / s repetitions of s
    elements (``X(s); REPEAT e/s - 1, s``) where the queue waits for them anyway (a NOP follows that
    ends no earlier than they do): every element issues in the same cycle with the same address, so
    the fast path, which joins such repetitions into one unit again, must still equal the reference.
    (LW: only of whole elements of R rows.)  None when nothing was cut."""
    out, cut = {}, False
    for name, insns in program.queues.items():
        q = []
        i = 0
        while i < len(insns):
            x = insns[i]
            nxt = insns[i + 1] if i + 1 < len(insns) else None
            c = x.fields.get("count", 0)
            step = R if x.op is Opcode.LW else 1
            e = c // step
            if (OPS[x.op].unit in ("mem", "mxm", "vxm", "sxm") and x.op not in (Opcode.TRANS, Opcode.LDM)
                    and e > 1 and c % step == 0 and nxt is not None and nxt.op is Opcode.NOP and nxt.n + 1 >= e):
                s = int(rng.choice([d for d in range(1, e) if e % d == 0]))
                q += [x.replace(count=s * step), Insn.make(Opcode.REPEAT, n=e // s - 1, d=s)]
                if nxt.n + 1 > e:
                    q.append(Insn.make(Opcode.NOP, n=nxt.n + 1 - e))
                i += 2
                cut = True
                continue
            q.append(x)
            i += 1
        out[name] = q
    return Program(out) if cut else None


LW_REPEATED = """
    .queue mem0
        NOP 6
        READ w0, 0, n=4
        NOP 14
        HALT
    .queue mem1
        NOP 5
        READ w1, 0, n=4
        HALT
    .queue mem2
        NOP 4
        READ w2, 0, n=4
        HALT
    .queue mem3
        NOP 3
        READ w3, 0, n=4
        HALT
    .queue mem4
        NOP 5
        READ w4, 8, n=2
        HALT
    .queue mxm0
        NOP 10
        LW w0, 0, 0, n={n}
        REPEAT {rep}, {d}
        MM w4, 0, 1, n=2
        NOP 5
        HALT
"""


@pytest.mark.parametrize("n,rep,d,units", [(6, 1, 2, 2), (3, 3, 1, 1), (8, 1, 2, 1), (4, 3, 1, 1), (2, 3, 1, 1),
                                           (5, 1, 2, 2)])
def test_repeated_lw_with_install_rows(n, rep, d, units):
    """LW with R = 4 repeated on back-to-back cycles: repetitions of whole elements (n = 8, 4) or of
    one short element (n = 3, 2: 3 or 2 rows per element) are joined into one unit, repetitions with
    a partial last element (n = 6, 5) are not (their rows do not continue element by element)."""
    rng = np.random.default_rng(7)
    image = {f"mem{b}": [(0, rng.integers(-128, 128, (16, CFG.lanes), dtype=np.int8))] for b in range(8)}
    prog = assemble(LW_REPEATED.format(n=n, rep=rep, d=d), ROWS4)
    res, fast = compare(ROWS4, prog, image)
    assert res[0] == "ok" and fast
    g = FastGolden(ROWS4)
    g.load_program(prog)
    assert sum(u.op is Opcode.LW for u in g._fast_schedule(100)[0]) == units


@pytest.mark.parametrize("rows", [1, 4])
def test_repetitions_joined_into_one_unit(rows):
    """Random programs with their multi-element instructions cut into REPEATed pieces (READ, WRITE,
    LW, MM, EMIT, LDLUT, GATHER, SCATTER, the VXM and SXM ops): FastGolden equals Golden, on its
    fast path, and it joins the pieces (fewer units than dispatches)."""
    cfg = CFG if rows == 1 else ROWS4
    rng = np.random.default_rng(rows)
    cut = joined = 0
    ops = set()
    for seed in range(40):
        case = random_program(cfg, seed)
        prog = _split_repeats(case.program, rng, cfg.install_rows)
        if prog is None:
            continue
        cut += 1
        res, fast = compare(cfg, prog, case_image(case))
        assert res[0] == "ok" and fast, (seed, case.flows)
        g = FastGolden(cfg)
        g.load_program(prog)
        units = g._fast_schedule(20_000)[0]
        dispatched = 0
        for insns in prog.queues.values():
            for k, x in enumerate(insns):
                if x.op is Opcode.REPEAT:
                    dispatched += x.n
                    ops.add(insns[k - 1].op)
                elif OPS[x.op].unit != "any":
                    dispatched += 1
        joined += len(units) < dispatched
    assert cut >= 20 and joined == cut
    assert {Opcode.READ, Opcode.WRITE, Opcode.LW, Opcode.MM, Opcode.EMIT, Opcode.GATHER} <= ops, ops


# --- slow: a larger sweep -------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("cfgname", ["tiny", "fpga", "ice40"])
def test_random_programs_sweep(cfgname):
    cfg = load_config(cfgname)
    for seed in range(1000, 2000):
        res, fast = compare(cfg, (case := random_program(cfg, seed)).program, case_image(case))
        assert res[0] == "ok" and fast, (cfgname, seed)


@pytest.mark.slow
def test_mutated_random_programs_sweep():
    stats = _mutants(range(1000, 1500), 4)
    assert stats["error"] >= 500 and stats["ok"] >= 100, stats


# --- (d) the batched path (sim/golden/flow.py) and the plan cache ----------------------------------

@pytest.fixture
def no_walk(monkeypatch):
    """First runs on the plan (phases 1 and 2 and the dataflow), not walked (sim/golden/walk.py)."""
    monkeypatch.setattr(fast_mod, "_WALK_ELEMENTS", 0)


@pytest.fixture
def no_gather(monkeypatch):
    """Random programs without GATHER/SCATTER (their flows drawn as VXM and MXM flows instead): more
    computing nodes per program, and no dynamic banks."""
    from tinylpu.firmware import randprog
    monkeypatch.setitem(randprog._FLOWS, "gather", randprog._FLOWS["vxm"])
    monkeypatch.setitem(randprog._FLOWS, "scatter", randprog._FLOWS["mxm"])


def batched(f, program):
    """The program's plan is cached with its dataflow (FastGolden's phase 3)."""
    p = f._fast_cached(program)
    return p is not None and p.flow is not None


@pytest.mark.parametrize("cfgname", ["tiny", "fpga", "ice40", "duo"])
def test_batched_random_programs(cfgname, no_gather, no_walk):
    cfg = load_config(cfgname)
    for seed in range(40 if cfgname == "tiny" else 20):
        case = random_program(cfg, seed)
        f = FastGolden(cfg)
        res, fast = compare(cfg, case.program, case_image(case), f=f)
        assert res[0] == "ok" and fast and batched(f, case.program), (cfgname, seed, case.flows)


def test_batched_other_latencies_and_install_rows(no_gather, no_walk):
    for cfg in (variant("tiny", "tiny-min", mem_read=2, mem_write=2, mxm_install=1, mxm_mm=3, mxm_emit=2,
                        vxm_alu=2, vxm_mul=2, vxm_req=2, vxm_lut=2, sxm=2, notify=1),
                variant("tiny", "tiny-long", mem_read=4, mem_write=5, mxm_install=3, mxm_mm=7, vxm_req=6, notify=4),
                variant("tiny", "tiny-rows2", install_rows=2), ROWS4, variant("tiny", "tiny-rows8", install_rows=8)):
        for seed in range(15):
            case = random_program(cfg, seed)
            f = FastGolden(cfg)
            res, fast = compare(cfg, case.program, case_image(case), f=f)
            assert res[0] == "ok" and fast and batched(f, case.program), (cfg.name, seed)


def test_batched_mutants(no_gather, no_walk):
    """Broken timing on the batched path's programs: the errors still reach Golden.run."""
    stats = _mutants(range(30), 4)
    assert stats["error"] >= 25 and stats["ok"] >= 10 and stats["fast"] >= stats["ok"], stats


def test_batched_state_persists_and_repeats(no_gather, no_walk):
    """Programs in sequence on one chip, each run twice (the second run from the cached plan), with
    other MEM contents the second time: unit state carries over, and the cached flow reads the new data."""
    g, f = Golden(CFG), FastGolden(CFG)
    rng = np.random.default_rng(5)
    for seed in range(200, 220):
        case = random_program(CFG, seed)
        res, fast = compare(CFG, case.program, case_image(case), g, f)
        assert res[0] == "ok" and fast and batched(f, case.program)
        image = {b: [(a, rng.integers(-128, 128, v.shape, dtype=np.int8))] for b, (a, v) in case.mem.items()}
        res, fast = compare(CFG, case.program, image, g, f)
        assert res[0] == "ok" and fast


def test_plan_cache_follows_the_program():
    """A cached plan is used only for the same program object with the same instructions: a queue
    changed in place is planned (and checked) again; a program in error stays in error when rerun;
    max_cycles is checked on every run."""
    case = random_program(CFG, 3)
    prog = case.program
    f = FastGolden(CFG)
    res, fast = compare(CFG, prog, case_image(case), f=f)
    assert res[0] == "ok" and fast and f._fast_cached(prog) is not None
    res2, _ = compare(CFG, prog, case_image(case), f=f)
    assert res2 == res
    # a NOP longer: the first program's timing no longer holds
    name = next(k for k, v in prog.queues.items() if any(i.op == Opcode.NOP for i in v))
    q = prog.queues[name]
    i = next(j for j, insn in enumerate(q) if insn.op == Opcode.NOP)
    q[i] = q[i].replace(n=q[i].n + 1)
    before = f.fallbacks
    want = outcome(Golden(CFG), prog, case_image(case))
    assert outcome(f, prog, case_image(case)) == want
    assert outcome(f, prog, case_image(case)) == want
    if want[0] == "error":
        assert f.fallbacks == before + 2
    # a statically wrong instruction put in place is caught by load_program again
    q.insert(0, Insn.make(Opcode.NOP, n=0))
    with pytest.raises(ProgramCheckError):
        f.load_program(prog)
    del q[0]
    # max_cycles below the plan's length
    want = outcome(Golden(CFG), prog, case_image(case), max_cycles=10)
    assert want[0] == "error" and outcome(f, prog, case_image(case), max_cycles=10) == want


def unit_op_jobs(monkeypatch):
    """(program, image) of every VXM/SXM opcode (the per-opcode programs of tests/harness.py, with
    edge operands, immediates, shifts and register loads), in an order where REQL / LUT / PERM
    without a load of their own follow programs with LDM / LDLUT / LDPERM."""
    from tests import harness
    from tinylpu.arith import int32_to_planes
    jobs = []

    class Recorder(Golden):
        def load_program(self, program):
            super().load_program(program)
            self.job = (program, {})
            jobs.append(self.job)

        def write_mem(self, bank, addr, vectors):
            super().write_mem(bank, addr, vectors)
            self.job[1].setdefault(bank, []).append((addr, np.array(vectors, np.int8)))

    monkeypatch.setattr(harness, "Golden", Recorder)
    rng = np.random.default_rng(21)
    lanes = CFG.lanes

    def v(n=4):
        x = rng.integers(-128, 128, (n, lanes), dtype=np.int8)
        x[0, :4] = [-128, 127, 0, -1]
        return x

    def acc():
        x = rng.integers(-(1 << 31), 1 << 31, (4, lanes), dtype=np.int64)
        x[0, :4] = [-(1 << 31), (1 << 31) - 1, 64, -96]
        return int32_to_planes(x.astype(np.int32))

    run = harness.run_unit_op
    for op in (Opcode.ADD, Opcode.SUB, Opcode.MUL, Opcode.MIN, Opcode.MAX, Opcode.AND, Opcode.OR, Opcode.XOR):
        run(CFG, "vxm0", op, {"a": v(), "b": v()}, sh=3 if op == Opcode.MUL else 0)
        for imm in (-128, 127, -1):
            run(CFG, "vxm0", op, {"a": v()}, imm=imm, use_imm=1, sh=1 if op == Opcode.MUL else 0)
    for sh in (0, 3, 7):
        run(CFG, "vxm0", Opcode.SHL, {"a": v()}, sh=sh)
        run(CFG, "vxm0", Opcode.SHR, {"a": v()}, sh=sh)
    run(CFG, "vxm0", Opcode.MOV, {"a": v()})
    run(CFG, "vxm0", Opcode.RELU, {"a": v()})
    c = v()
    c[1] = 0
    run(CFG, "vxm0", Opcode.SEL, {"a": v(), "b": v(), "c": c})
    for m, sh in ((3, 9), (-32768, 47), (12345, 63)):
        run(CFG, "vxm0", Opcode.REQ, {"a": acc()}, imm=m, sh=sh)
    run(CFG, "vxm0", Opcode.ADD32, {"a": acc(), "b": acc()}, out_planes=4)
    regs = v()
    regs[2] = rng.integers(0, 64, lanes)
    run(CFG, "vxm0", Opcode.REQL, {"a": acc()}, pre=[(Opcode.LDM, {"a": regs}, {"count": 4})])
    run(CFG, "vxm0", Opcode.REQL, {"a": acc()})
    rows = rng.integers(-128, 128, (256 // lanes, lanes), dtype=np.int8)
    run(CFG, "vxm0", Opcode.LUT, {"a": v()}, pre=[(Opcode.LDLUT, {"a": rows}, {"count": len(rows)})])
    run(CFG, "vxm0", Opcode.LUT, {"a": v()})
    for k in (0, 5, -3, 16):
        run(CFG, "sxm0", Opcode.SHIFT, {"a": v()}, imm=k)
        run(CFG, "sxm0", Opcode.ROT, {"a": v()}, imm=k)
    run(CFG, "sxm0", Opcode.DIST, {"a": v()}, imm=5)
    perm = rng.integers(0, 256, (1, lanes)).astype(np.uint8).view(np.int8)
    run(CFG, "sxm0", Opcode.PERM, {"a": v()}, pre=[(Opcode.LDPERM, {"a": perm}, {})])
    run(CFG, "sxm0", Opcode.PERM, {"a": v()})
    run(CFG, "sxm0", Opcode.TRANS, {"a": rng.integers(-128, 128, (lanes, lanes), dtype=np.int8)})
    assert len(jobs) >= 50
    return jobs


def test_batched_unit_ops_and_register_state(monkeypatch, no_walk):
    """The unit ops on the batched path, each on a fresh chip and then all in sequence on one chip,
    where REQL / LUT / PERM without a load of their own use the LDM / LDLUT / LDPERM state an earlier
    program left."""
    jobs = unit_op_jobs(monkeypatch)
    for program, image in jobs:
        f = FastGolden(CFG)
        res, fast = compare(CFG, program, image, f=f)
        assert res[0] == "ok" and fast and batched(f, program), program
    g, f = Golden(CFG), FastGolden(CFG)
    for program, image in jobs:
        res, fast = compare(CFG, program, image, g, f)
        assert res[0] == "ok" and fast


def _chains_source(cfg, mms, emit_at):
    """MXM accumulation chains of uneven length: MM k (one per cycle) adds into acc[k % 5] (the
    first five onto the accumulators' contents), x from a READ of mem0; in the cycle of MM `emit_at`
    (a multiple of 5) an EMIT of acc[0] goes first, which cuts that chain (its row is read twice)."""
    pos = {s.name: s.position for s in cfg.slices}
    t0 = cfg.latency["mem_read"] + pos["mem0"] - pos["mxm0"]
    lines = [".queue mem0", f"    READ w0, 0, n={mms + 1}, stride=1", f"    NOP {mms + 10}", "    HALT",
             ".queue mxm0", f"    NOP {t0}"]
    for k in range(mms):
        if k == emit_at:
            lines.append("    EMIT e0, 0")
        lines.append(f"    MM w0, 0, {k % 5}, acc=1")
    lines += [f"    NOP {cfg.latency['mxm_mm'] + 1}", "    HALT"]
    return "\n".join(lines)


@pytest.mark.parametrize("cfgname,mms,emit_at", [("tiny", 23, 10), ("tiny", 353, 175), ("tiny", 350, None),
                                                 ("lpu", 93, 45), ("lpu", 90, None)])
def test_batched_accumulation_chains(cfgname, mms, emit_at, no_walk):
    """Fused accumulation chains (flow.py's chain steps): uneven chain lengths in one step, chains
    longer than one exact float32 slice (64 products at 16 lanes, 16 at 64 lanes), initial
    accumulator contents and an EMITted row as the chains' bases; weights and accumulators preset
    alike on both engines."""
    cfg = load_config(cfgname)
    prog = assemble(_chains_source(cfg, mms, emit_at), cfg, "<chains>")
    rng = np.random.default_rng(mms)
    image = {"mem0": [(0, rng.integers(-128, 128, (mms + 1, cfg.lanes), dtype=np.int8))]}
    g, f = Golden(cfg), FastGolden(cfg)
    w = rng.integers(-128, 128, (2, cfg.lanes, cfg.lanes), dtype=np.int8)
    w[0, 0, :3] = -128
    a = rng.integers(-(1 << 31), 1 << 31, (cfg.acc_depth, cfg.lanes), dtype=np.int64).astype(np.int32)
    for e in (g, f):
        e.weights["mxm0"][...] = w
        e.acc["mxm0"][...] = a
    res, fast = compare(cfg, prog, image, g, f)
    assert res[0] == "ok" and fast and batched(f, prog)
    steps = [s[0] for s in f._fast_cached(prog).flow.steps]
    assert steps.count("mm") + steps.count("mmc") == (1 if emit_at is None else 2)


@pytest.mark.parametrize("numpy_paths", [False, True], ids=["small", "numpy"])
def test_dynamic_banks_rerun_with_bad_indices(monkeypatch, numpy_paths):
    """GATHER/SCATTER programs (dynamic banks: their accesses resolved when the flow runs), run
    again from the cached plan, then with index rows that point out of the bank: the error is found
    when the flow runs, before any state is written, and Golden.run reports it.  ``numpy_paths``:
    the addresses, reads and last writes of dynamic banks by numpy even when few (``flow._SMALL_*``)."""
    if numpy_paths:
        from tinylpu.sim.golden import flow
        monkeypatch.setattr(flow, "_SMALL_DYN", -1)
        monkeypatch.setattr(flow, "_SMALL_LOG", -1)
    g, f = Golden(CFG), FastGolden(CFG)
    n = 0
    for seed in range(40):
        case = random_program(CFG, seed)
        if not any(("GATHER" in d or "SCATTER" in d) for d in case.flows):
            continue
        for run in range(2):                          # (walked, then from the plan: its flow)
            res, fast = compare(CFG, case.program, case_image(case), g, f)
            assert res[0] == "ok" and fast
        assert batched(f, case.program)
        bad = {}
        for bank, (addr, img) in case.mem.items():
            img = img.copy()
            img[:4, :2] = -1                          # index 0xFFFF: past every bank
            bad[bank] = [(addr, img)]
        res, fast = compare(CFG, case.program, bad, g, f)
        assert res[0] == "error" and not fast and "out of range" in res[-1], (seed, res)
        n += 1
    assert n >= 10


# --- DESKEW on one chip -----------------------------------------------------------------------------

def test_deskew_in_the_schedule():
    """Queues parking in DESKEW around the epoch boundary, a READ -> WRITE in flight near it: clean
    runs on the fast path, equal to Golden; the DESKEW errors (a queue not parked, the chip not
    quiet) reported by Golden."""
    E = CFG.link["epoch"]
    image = {"mem0": [(0, np.arange(2 * CFG.lanes, dtype=np.int8).reshape(2, CFG.lanes))]}
    seen = set()
    for k in (1, 2, 3, 4, 6, 12):
        for j, w in ((0, True), (5, True), (E + 2, True), (0, False), (E - 1, False)):
            write = f"""        NOP {E - k + 3}
        WRITE e0, 4, n=2
""" if w else ""
            src = f"""
    .queue mem0
        NOP {E - k}
        READ e0, 0, n=2
        DESKEW
        READ e0, 1
        NOP 20
        HALT
    .queue mem1
{write}        DESKEW
        NOP 3
        WRITE e0, 9
        HALT
    .queue mem7
{f"        NOP {j}" if j else ""}
        DESKEW
        HALT
    """
            res, fast = compare(CFG, assemble(src, CFG), image, max_cycles=3 * E)
            assert fast == (res[0] == "ok")
            seen.add(res[0] if res[0] == "ok" else res[-1][:30])
    assert "ok" in seen and len(seen) >= 3, seen


# --- MEM: lazily zeroed banks, write_image -----------------------------------------------------------

def _writes(g, image):
    try:
        for bank, lst in image.items():
            for addr, v in lst:
                g.write_mem(bank, addr, v)
    except ValueError as e:
        return str(e)
    return None


@pytest.mark.parametrize("cfgname", ["tiny", "lpu"])
@pytest.mark.parametrize("cls", [Golden, FastGolden])
def test_write_image_equals_write_mem(cls, cfgname):
    """``write_image`` leaves every bank as ``write_mem`` on its pieces in order does, and raises
    the same error at the same piece: contiguous and scattered pieces, overlaps (the later wins), 1-D
    vectors, wider int dtypes, numpy addresses, bank numbers, and bad banks, shapes, values and
    addresses; unwritten rows read as zeros (``lpu``: lazily zeroed banks, written at both ends)."""
    cfg = load_config(cfgname)
    rng = np.random.default_rng(0)
    L, depth = cfg.lanes, cfg.mem_depth

    def v(n):
        return rng.integers(-128, 128, (n, L), dtype=np.int8)

    good = [
        {"mem0": [(0, v(4)), (4, v(3)), (7, v(1))], "mem3": [(100, v(2))]},
        {"mem1": [(50, v(4)), (0, v(2)), (20, v(5))]},                         # scattered
        {"mem2": [(0, v(6)), (3, v(2)), (5, v(4))]},                          # overlaps
        {"mem4": [(depth - 2, v(2)), (0, rng.integers(-128, 128, L, dtype=np.int8))]},
        {"mem5": [(np.int64(3), v(2)), (10, v(1).astype(np.int16))], 6: [(1, v(1))]},
        {"mem6": []},
    ]
    bad = [
        {"mem0": [(0, v(2))], "mem9": [(0, v(1))]},
        {"mem0": [(0, v(2)), (depth - 1, v(2))]},
        {"mem0": [(0, v(2)), (-1, v(1))]},
        {"mem1": [(0, v(2)), (4, rng.integers(-128, 128, (2, L + 1), dtype=np.int8))]},
        {"mem1": [(0, v(2)), (4, np.full((1, L), 300, np.int16))]},
        {"mem1": [(0, v(2)), (4, v(1).astype(np.float32))]},
    ]
    for image in good + bad:
        a, b = cls(cfg), cls(cfg)
        want = _writes(a, image)
        try:
            b.write_image(image)
            got = None
        except ValueError as e:
            got = str(e)
        assert got == want
        assert (want is None) == (image in good)
        assert list(a.mem) == list(b.mem) == [f"mem{k}" for k in range(cfg.banks)]
        for bank in a.mem:
            assert np.array_equal(a.read_mem(bank, 0, 200), b.read_mem(bank, 0, 200)), bank
            assert np.array_equal(a.mem[bank], b.mem[bank]), bank
    g = cls(cfg)
    assert not g.read_mem("mem3", depth - 4, 4).any() and not g.mem["mem7"].any()
    with pytest.raises(ValueError, match=r"MEM read mem3\[0:\d+\] is outside the bank"):
        g.read_mem("mem3", 0, depth + 1)


def test_banks_of_dead_models_are_reused_only_when_free():
    """A dead model's (large, lazily zeroed) banks go to the next model, where they read as zeros;
    a bank array (or a view of one) that someone still holds is never handed on."""
    cfg = load_config("lpu")
    rng = np.random.default_rng(1)
    full = rng.integers(-128, 128, (cfg.mem_depth, cfg.lanes), dtype=np.int8)
    g = FastGolden(cfg)
    for b in g.mem:
        g.write_mem(b, 0, full)
    held, view = g.mem["mem0"], g.mem["mem1"][5:9]
    want_held, want_view = held.copy(), view.copy()
    del g
    for _ in range(3):
        f = Golden(cfg)
        assert all(not f.read_mem(b).any() for b in f.mem)
        f.write_image({b: [(0, full[::-1].copy())] for b in f.mem})
        assert all(np.array_equal(f.mem[b], full[::-1]) for b in f.mem)
        del f
    assert np.array_equal(held, want_held) and np.array_equal(view, want_view)


def test_random_programs_with_deskews():
    """DESKEW inserted into random programs (one to three, anywhere): a queue parks until the epoch
    boundary, where every live queue must be parked and the chip quiet; equal to Golden, the clean
    ones on the fast path."""
    stats = {"ok": 0, "DESKEW": 0, "stream": 0}
    for seed in range(40):
        case = random_program(CFG, seed)
        rng = np.random.default_rng(20_000 + seed)
        queues = {k: list(v) for k, v in case.program.queues.items()}
        names = [k for k, v in queues.items() if v]
        for _ in range(int(rng.integers(1, 4))):
            q = queues[names[int(rng.integers(len(names)))]]
            at = len(q) - 1 if rng.random() < 0.5 else int(rng.integers(len(q)))   # (before HALT, or anywhere)
            q.insert(at, Insn.make(Opcode.DESKEW))
        if rng.random() < 0.3:                      # a queue still running at the boundary
            q = queues[names[int(rng.integers(len(names)))]]
            q.insert(len(q) - 1, Insn.make(Opcode.NOP, n=CFG.link["epoch"] + 10))
        res, fast = compare(CFG, Program(queues), case_image(case))
        stats[res[0] if res[0] == "ok" else res[-1].split(" ")[0]] += 1
        assert fast == (res[0] == "ok")
        if res[0] == "ok":
            assert res[1] > CFG.link["epoch"]
    assert stats["ok"] >= 8 and stats["DESKEW"] >= 3 and stats["stream"] >= 3, stats


def test_accumulator_hazard_by_pairs_and_by_elements():
    """Phase 2's accumulator-hazard test, by pairs of instructions and element by element, against
    its definition: a read of acc[a] in cycle r while an MM element that sampled at w < r writes a
    after r (w + mxm_mm > r)."""
    from tinylpu.sim.golden.fast import _acc_hazard
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(3000):
        Lmm = int(rng.integers(1, 6))
        wr = [(int(rng.integers(0, 12)), int(rng.integers(0, 30)), int(rng.integers(1, 6)))
              for _ in range(int(rng.integers(1, 4)))]
        rd = [(int(rng.integers(0, 12)), int(rng.integers(0, 30)), int(rng.integers(1, 6)))
              for _ in range(int(rng.integers(1, 4)))]
        want = any(a + i == b + j and s + i < t + j < s + i + Lmm
                   for a, s, n in wr for i in range(n) for b, t, m in rd for j in range(m))
        assert _acc_hazard(wr, rd, Lmm, pairs=True) == want
        assert _acc_hazard(wr, rd, Lmm, pairs=False) == want
        hits += want
    assert 150 < hits < 2850


def _levels_both_ways(cfg, program, monkeypatch):
    """The node levels of a program's flow with runs of MM nodes leveled together (the default) and
    node by node; and how many runs went together."""
    from tinylpu.sim.golden import flow as flow_mod
    g = FastGolden(cfg)
    g.load_program(program)
    units, _, _, last_halt, deskews = g._fast_schedule(1_000_000)
    g._fast_prepare(units, last_halt, deskews)
    bld = flow_mod._Builder(g, units)
    bld.walk()
    fused = bld.fuse(bld.finals())
    together = []
    real = flow_mod._Builder._mm_levels

    def spy(self, *a):
        together.append(real(self, *a))
        return together[-1]

    monkeypatch.setattr(flow_mod._Builder, "_mm_levels", spy)
    a = bld.levels(fused)
    monkeypatch.setattr(flow_mod._Builder, "_mm_levels", lambda self, *a: False)
    b = bld.levels(fused)
    assert a.keys() == b.keys()
    for key in a:
        for pa, pb in zip(a[key], b[key], strict=True):
            for x, y in zip(pa, pb, strict=True):
                assert np.array_equal(np.asarray(x, dtype=object), np.asarray(y, dtype=object))
    return sum(together)


def test_mm_levels_in_runs(monkeypatch):
    """``_Builder.levels`` levels a run of consecutive MM nodes with a few numpy operations: the same
    levels, on compiled layers (K-loop chains, one and several tokens) and random programs."""
    runs = 0
    for cfgname, dm, dff, tokens in [("tiny", 64, 128, 1), ("tiny", 48, 64, 8), ("lpu-mini", 128, 128, 9),
                                     ("lpu-mini", 64, 192, 1)]:
        cfg = load_config(cfgname)
        w = _layer(dm, dff, "gelu", seed=tokens)
        x = np.random.default_rng(3).normal(size=(tokens, dm))
        q = quantize_ffn(w, x)
        runs += _levels_both_ways(cfg, compile_ffn(q, cfg, tokens).program, monkeypatch)
    for seed in range(20):
        _levels_both_ways(CFG, random_program(CFG, seed).program, monkeypatch)
    assert runs >= 4


def test_mm_levels_in_runs_synthetic():
    """The same on random synthetic node lists: MM nodes whose x and W rows come from computed rows
    of several levels, chains across nodes, chain bases from earlier MM nodes (also from the same run
    of MM nodes, which must then go node by node)."""
    from types import SimpleNamespace

    from tinylpu.sim.golden import flow as flow_mod
    rng = np.random.default_rng(11)
    together = 0
    for _ in range(300):
        nb, lanes = 40, 4
        nodes, mm = [], []
        nodes += [(("ew", 0), None, (np.array([i]),), (), np.array([i + 1]), None) for i in range(0, 8)]  # levels 1..8
        na = 0
        sizes = []
        for _ in range(int(rng.integers(3, 9))):
            m = int(rng.integers(1, 4))
            xs = rng.integers(0, 10, m)
            W = rng.integers(0, 10, lanes)
            mm.append((xs, W, None, np.arange(na, na + m)))
            na += m
            sizes.append(m)
            nodes.append(("mm", len(mm) - 1))
            if rng.random() < 0.2:                      # an EMIT-like node between runs
                nodes.append((("emit",), None, (), (np.array([na - 1]),), np.array([nb - 1]), None))
        E = na
        first = np.concatenate([[0], np.cumsum(sizes)])
        root = np.arange(E)
        for e in range(E - 1):                          # chains: e continues at a later element
            if rng.random() < 0.4:
                root[e] = int(rng.integers(e + 1, E))
        while True:
            far = root[root]
            if (far == root).all():
                break
            root = far
        base = np.full(E, -1, np.int64)
        for e in np.unique(root):
            if rng.random() < 0.5:
                base[e] = int(rng.integers(0, E))       # an A id: another chain's output (maybe in the run)
        e_out = np.concatenate([p[3] for p in mm])
        fused = (root, base, first, e_out)
        bld = SimpleNamespace(nodes=nodes, mm=mm, B=SimpleNamespace(n=nb), A=SimpleNamespace(n=na))
        calls = []

        def batched(*a, bld=bld, calls=calls):
            calls.append(flow_mod._Builder._mm_levels(bld, *a))
            return calls[-1]

        bld._mm_levels = batched
        a = flow_mod._Builder.levels(bld, fused)
        bld._mm_levels = lambda *a: False
        b = flow_mod._Builder.levels(bld, fused)
        assert a.keys() == b.keys()
        for key in a:
            for pa, pb in zip(a[key], b[key], strict=True):
                for x, y in zip(pa if isinstance(pa, tuple) else (pa,), pb if isinstance(pb, tuple) else (pb,),
                                strict=True):
                    assert np.array_equal(np.asarray(x, dtype=object), np.asarray(y, dtype=object))
        together += sum(calls)
    assert together > 50


def test_unique_rows_equals_numpy():
    """``flow._unique_rows`` (the chain step's grouping by weight sequence) is ``np.unique(axis=0,
    return_inverse=True)``."""
    from tinylpu.sim.golden.flow import _unique_rows
    rng = np.random.default_rng(2)
    for _ in range(300):
        a = rng.integers(0, 3, (int(rng.integers(1, 30)), int(rng.integers(1, 5))))
        s, inv = _unique_rows(a)
        s2, inv2 = np.unique(a, axis=0, return_inverse=True)
        assert np.array_equal(s, s2) and np.array_equal(inv, inv2.reshape(-1))


# --- small flows: the Python lookups of dynamic banks, the direct final-state writes ---------------

def _random_log(rng, entries, n_addr, n_rows):
    """A dynamic bank's log [(commit cycles, addresses, data ids)]: few cycles and addresses, so
    that one address is written at one cycle by several entries (the later one must win)."""
    return [(rng.integers(0, 6, k).astype(np.int64), rng.integers(0, n_addr, k).astype(np.int64),
             rng.integers(0, n_rows, k).astype(np.int64)) for k in rng.integers(1, 5, entries)]


def test_last_writes_small_equals_numpy(monkeypatch):
    """``flow._last_writes`` by Python (small logs) and by numpy (large ones): the same last write
    per address, the later log entry winning a tie of commit cycles."""
    from tinylpu.sim.golden import flow
    rng = np.random.default_rng(11)
    ties = 0
    for _ in range(300):
        B = rng.integers(-128, 128, (40, CFG.lanes), dtype=np.int8)
        log = _random_log(rng, int(rng.integers(1, 5)), 6, len(B))
        got = {}
        for small in (64, -1):
            monkeypatch.setattr(flow, "_SMALL_LOG", small)
            addrs, rows = flow._last_writes(log, B)
            got[small] = {int(a): r.tobytes() for a, r in zip(addrs, rows)}
            assert len(got[small]) == len(addrs)
        assert got[64] == got[-1]
        T, a = (np.concatenate(x) for x in list(zip(*log))[:2])
        ties += len(set(zip(T.tolist(), a.tolist()))) < len(T)
    assert ties >= 100


def test_dread_small_equals_numpy(monkeypatch):
    """``flow._dread`` by Python (few reads of few writes) and by numpy: each read gets the last
    logged write to its address committed by its cycle (ties: the later entry), else the bank."""
    from tinylpu.sim.golden import flow
    rng = np.random.default_rng(12)
    g = FastGolden(CFG)
    g.write_mem("mem2", 0, rng.integers(-128, 128, (8, CFG.lanes), dtype=np.int8))
    for _ in range(300):
        B0 = rng.integers(-128, 128, (40, CFG.lanes), dtype=np.int8)
        log = _random_log(rng, int(rng.integers(0, 4)), 8, 30)
        k = int(rng.integers(1, 6))
        T, addr, out = rng.integers(0, 8, k), rng.integers(0, 8, k), rng.choice(np.arange(30, 40), k, replace=False)
        got = []
        for small in (64, -1):
            monkeypatch.setattr(flow, "_SMALL_LOG", small)
            B = B0.copy()
            flow._dread(g, B, log or None, "mem2", T, addr, out)
            got.append(B)
        assert np.array_equal(got[0], got[1])


def test_sel_slices_only_contiguous_runs():
    from tinylpu.sim.golden.flow import _sel
    assert _sel(np.array([3])) == slice(3, 4)
    assert _sel(np.array([3, 4, 5, 6])) == slice(3, 7)
    for ids in ([3, 5], [4, 3], [1, 3, 3], [1, 2, 2, 3], [5, 4, 3, 2]):
        got = _sel(np.array(ids))
        assert isinstance(got, np.ndarray) and got.tolist() == ids


def test_committing_run_equals_pending_commit():
    """A flow run that writes its final state as it goes (``commit``, one chip) leaves the same
    state as a run that returns it pending and ``Flow.commit`` (a tray's flows)."""
    from tinylpu.sim.golden.flow import Flow
    for seed in range(9300, 9360):
        case = random_program(CFG, seed)
        ref = FastGolden(CFG)
        for _ in range(2):                                    # (walked, then planned)
            outcome(ref, case.program, case_image(case))
        plan = ref._fast_cached(case.program)
        assert plan.flow is not None
        a, b = FastGolden(CFG), FastGolden(CFG)
        for g in (a, b):
            for bank, lst in case_image(case).items():
                for addr, v in lst:
                    g.write_mem(bank, addr, v)
        plan.flow.run(a, True)
        Flow.commit(b, plan.flow.run(b, False))
        assert_same_state(a, b)
