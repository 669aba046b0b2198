"""FastGolden's first runs walked in one pass (sim/golden/walk.py) against Golden: random programs
on several configs, broken mutants of them (every kind of program error), the unit ops with their
register state, a first (walked) run followed by runs from the plan on one chip, and which programs
are walked at all."""

import numpy as np
import pytest

from tests.harness import variant
from tests.sim.golden.test_fast import CFG, _mutants, case_image, compare, mutate, outcome, unit_op_jobs
from tests.sim.golden.test_programs import ROWS4
from tinylpu.config import load_config
from tinylpu.firmware.asm import assemble
from tinylpu.firmware.program import Program
from tinylpu.firmware.randprog import random_program
from tinylpu.sim.golden import fast as fast_mod
from tinylpu.sim.golden.chip import Golden
from tinylpu.sim.golden.fast import FastGolden
from tinylpu.sim.golden.walk import walk


def walked(f, program):
    """The program's first run on `f` was walked (and its plan not built)."""
    p = f._fast_cached(program)
    return p is not None and p.walked and p.flow is None


def test_fuzz_random_programs_tiny():
    """1,000 random programs: the same cycles, activity, halt cycles and state as Golden, every one walked."""
    for seed in range(3000, 4000):
        case = random_program(CFG, seed)
        f = FastGolden(CFG)
        res, fast = compare(CFG, case.program, case_image(case), f=f)
        assert res[0] == "ok" and fast and walked(f, case.program), (seed, case.flows)


@pytest.mark.parametrize("cfg", [load_config("fpga"), load_config("ice40"), load_config("duo"), ROWS4,
                                 variant("tiny", "tiny-rows2", install_rows=2),
                                 variant("tiny", "tiny-min", mem_read=2, mem_write=2, mxm_install=1, mxm_mm=3,
                                         mxm_emit=2, vxm_alu=2, vxm_mul=2, vxm_req=2, vxm_lut=2, sxm=2, notify=1),
                                 variant("tiny", "tiny-long", mem_read=4, mem_write=5, mxm_install=3, mxm_mm=7,
                                         vxm_req=6, notify=4)], ids=lambda c: c.name)
def test_fuzz_random_programs_other_configs(cfg):
    for seed in range(5000, 5080):
        case = random_program(cfg, seed)
        f = FastGolden(cfg)
        res, fast = compare(cfg, case.program, case_image(case), f=f)
        assert res[0] == "ok" and fast and walked(f, case.program), (cfg.name, seed, case.flows)


def test_fuzz_error_programs():
    """Mutants of random programs (shifted issue times, renamed streams, changed counts and addresses,
    dropped instructions): the same outcome as Golden, errors reported by Golden itself."""
    stats = _mutants(range(6000, 6250), 4)
    assert stats["error"] >= 250 and stats["ok"] >= 80 and stats["fast"] >= stats["ok"], stats


def test_fuzz_error_programs_install_rows():
    stats = _mutants(range(6500, 6560), 4, ROWS4)
    assert stats["error"] >= 50 and stats["ok"] >= 20 and stats["fast"] >= stats["ok"], stats


def test_errors_leave_the_model_untouched():
    """A walk that finds an error writes nothing: MEM, weights, accumulators and registers are as
    before (Golden.run then starts from them), and the plan is marked bad (later runs: Golden.run)."""
    rng = np.random.default_rng(3)
    bad = 0
    for seed in range(7000, 7150):
        case = random_program(CFG, seed)
        prog = case.program
        for _ in range(2):
            prog = mutate(prog, rng, CFG)
        f = FastGolden(CFG)
        try:
            f.load_program(prog)
        except ValueError:
            continue
        for b, (a, v) in case.mem.items():
            f.write_mem(b, a, v)
        state = {attr: {k: np.array(v) for k, v in getattr(f, attr).items()}
                 for attr in ("weights", "acc", "lut", "req_m", "req_sh", "req_z", "perm")}
        mem = {b: f.mem[b].copy() for b in f.mem}
        f.program = prog
        f._fast_cached(prog) or fast_mod._remember(f._fast_cfg_key, prog)
        try:
            r = walk(f, 20_000, fast_mod._WALK_ELEMENTS)
        except fast_mod.Bail:
            bad += 1
            assert all(np.array_equal(f.mem[b], mem[b]) for b in mem)
            for attr, d in state.items():
                assert all(np.array_equal(getattr(f, attr)[k], v) for k, v in d.items()), attr
            g = FastGolden(CFG)
            assert outcome(g, prog, case_image(case))[0] == "error"
            assert g._fast_cached(prog).bad and g.fallbacks == 1
            continue
        assert r is not None
    assert bad >= 50


def test_unit_ops_and_register_state_walked(monkeypatch):
    """Every VXM / SXM opcode with its register loads, walked on fresh chips and in sequence on one
    chip (REQL / LUT / PERM using the state an earlier program left)."""
    jobs = unit_op_jobs(monkeypatch)
    for program, image in jobs:
        f = FastGolden(CFG)
        res, fast = compare(CFG, program, image, f=f)
        assert res[0] == "ok" and fast and walked(f, program), program
    g, f = Golden(CFG), FastGolden(CFG)
    for program, image in jobs:
        program = Program(program.queues)                   # (a new program: walked again)
        res, fast = compare(CFG, program, image, g, f)
        assert res[0] == "ok" and fast and walked(f, program)


def test_walked_then_planned_on_one_chip():
    """Programs in sequence on one chip, each run three times with new data: walked first, then the
    plan is built and run, then run from the cache; unit state carries over through all three."""
    g, f = Golden(CFG), FastGolden(CFG)
    rng = np.random.default_rng(9)
    for seed in range(8000, 8030):
        case = random_program(CFG, seed)
        for run in range(3):
            image = case_image(case)
            if run:                                          # (new data; GATHER / SCATTER index rows kept)
                image = {b: [(a, np.concatenate([v[:4], rng.integers(-128, 128, v[4:].shape, dtype=np.int8)]))]
                         for b, [(a, v)] in image.items()}
            res, fast = compare(CFG, case.program, image, g, f)
            assert res[0] == "ok" and fast
            p = f._fast_cached(case.program)
            assert p.walked and (p.flow is None) == (run == 0)


def test_what_is_walked():
    """Small programs are walked; REPEAT bursts of many elements (the steady-state benchmark) and
    programs of more than _WALK_ELEMENTS elements are planned; so are max_cycles overruns (not
    marked bad: a larger max_cycles runs them fast)."""
    from tinylpu.sim.perf.bench import steady_state_source
    prog = assemble(steady_state_source(CFG, cycles=1000), CFG, "<steady>")
    rng = np.random.default_rng(1)
    image = {f"mem{b}": [(0, rng.integers(-128, 128, (4, CFG.lanes), dtype=np.int8))] for b in range(4)}
    f = FastGolden(CFG)
    res, fast = compare(CFG, prog, image, f=f)
    assert res[0] == "ok" and fast and not f._fast_cached(prog).walked
    case = random_program(CFG, 1)
    f = FastGolden(CFG)
    res, fast = compare(CFG, case.program, case_image(case), f=f, max_cycles=10)
    assert res[0] == "error" and not fast
    p = f._fast_cached(case.program)
    assert not p.bad and not p.walked
    res, fast = compare(CFG, case.program, case_image(case), f=FastGolden(CFG))
    assert res[0] == "ok" and fast
    big = Program({name: list(insns) for name, insns in case.program.queues.items()})
    old = fast_mod._WALK_ELEMENTS
    try:
        fast_mod._WALK_ELEMENTS = 10
        f = FastGolden(CFG)
        res, fast = compare(CFG, big, case_image(case), f=f)
        assert res[0] == "ok" and fast and not f._fast_cached(big).walked and f._fast_cached(big).flow is not None
    finally:
        fast_mod._WALK_ELEMENTS = old


@pytest.mark.parametrize("cfgname,dm,dff,act,tokens", [("tiny", 16, 32, "relu", 4), ("tiny", 64, 128, "gelu", 1),
                                                       ("fpga", 32, 64, "gelu", 4), ("lpu", 128, 256, "gelu", 1)])
def test_compiled_layers_walked(cfgname, dm, dff, act, tokens):
    """Compiled FFN layers (the LPU-class chip's with 8 weight rows installed per cycle) are walked,
    with the reference's cycles and state and the layer's integer output."""
    from tests.sim.golden.test_fast import _layer, compiled_layer
    cfg = load_config(cfgname)
    w = _layer(dm, dff, act)
    x = np.random.default_rng(2).normal(size=(tokens, dm))
    q, c, image = compiled_layer(cfg, w, x, tokens)
    f = FastGolden(cfg)
    res, fast = compare(cfg, c.program, image, f=f, max_cycles=1_000_000)
    assert res[0] == "ok" and fast and walked(f, c.program)
    assert np.array_equal(c.unpack_output(f.read_mem), q.run_int(q.quantize_input(x)))


def test_long_copy_chain():
    """A value copied 200 times through one bank and then computed on: resolving its READs and WRITEs
    when first needed recurses through the chain (walked); with too little stack for that the
    walk gives the program to the plan (RecursionError: nothing written), with the same result."""
    import inspect
    import sys
    lines = [".queue mem0"]
    for h in range(200):
        lines += [f"    READ e0, {h}, n=1", "    NOP 1", f"    WRITE e0, {h + 1}, n=1", "    NOP 2"]
    t = 200 * 5
    lines += ["    READ e0, 200, n=1", "    NOP 20", "    HALT",
              ".queue vxm0", f"    NOP {t + 6}", "    MOV e1, e0", "    NOP 10", "    HALT",
              ".queue mem4", f"    NOP {t + 9}", "    WRITE e1, 7", "    NOP 8", "    HALT"]
    src = "\n".join(lines)
    image = {"mem0": [(0, np.arange(16 * 4, dtype=np.int8).reshape(4, 16))]}
    for limit in (None, 120):
        prog = assemble(src, CFG, "<chain>")
        f = FastGolden(CFG)
        old = sys.getrecursionlimit()
        if limit:
            sys.setrecursionlimit(len(inspect.stack()) + limit)
        try:
            res, fast = compare(CFG, prog, image, f=f)
        finally:
            sys.setrecursionlimit(old)
        assert res[0] == "ok" and fast
        assert np.array_equal(f.read_mem("mem4", 7, 1)[0], np.arange(16))
        p = f._fast_cached(prog)
        assert (p.walked, p.flow is None) == ((True, True) if limit is None else (False, False))


def _trans_source(read_at=0, mov_n=16, trans_at=10, cut=False):
    """A TRANS on sxm0 (position 1) whose rows a VXM MOV (position 6) makes while the TRANS runs:
    mem3 READ -> MOV onto w1 -> TRANS (rows at cycles trans_at + 1 + k) -> its columns on e2 ->
    WRITE to mem0.  ``cut``: mem1 (position 3) READs three rows onto w1 in between, which replace
    what MOV sent for TRANS rows 5..7 (the reader's nearest landing upstream)."""
    cut_src = ".queue mem1\n    NOP 12\n    READ w1, 0, n=3\n    HALT\n" if cut else ""
    return cut_src + f"""
.queue mem3
    NOP {read_at + 1}
    READ e0, 0, n=16
    HALT
.queue vxm0
    NOP 4
    MOV w1, e0, n={mov_n}
    HALT
.queue sxm0
    NOP {trans_at + 1}
    TRANS e2, w1
    HALT
.queue mem0
    NOP 29
    WRITE e2, 0, n=16
    NOP 15
    HALT
"""


def test_trans_reads_rows_made_while_it_runs():
    """The walk reads a TRANS's rows at once in its last element's cycle: rows that a VXM op makes
    while the TRANS runs, some replaced upstream by a READ, are the reference's; a row missing (a
    late READ, a short MOV, the TRANS a cycle early or late) is the reference's error."""
    rng = np.random.default_rng(21)
    image = {b: [(0, rng.integers(-128, 128, (16, CFG.lanes), dtype=np.int8))] for b in ("mem1", "mem3")}
    written = []
    for cut in (False, True):
        prog = assemble(_trans_source(cut=cut), CFG, "<trans>")
        f = FastGolden(CFG)
        res, fast = compare(CFG, prog, image, f=f)
        assert res[0] == "ok" and fast and walked(f, prog)
        written.append(f.read_mem("mem0", 0, 16))
    # (the cut replaced rows 5..7 of the matrix: columns keep their other bytes)
    diff = np.flatnonzero((written[0] != written[1]).any(axis=0))
    assert diff.tolist() == [5, 6, 7]
    for kw in ({"read_at": 1}, {"mov_n": 15}, {"trans_at": 9}, {"trans_at": 11}):
        res, _ = compare(CFG, assemble(_trans_source(**kw), CFG, "<trans>"), image)
        assert res[0] == "error", kw


@pytest.mark.parametrize("lanes", [1, 4, 16, 64])
def test_small_vector_ops_equal_numpy(lanes):
    """The walk's plain-Python ops on vectors of few lanes (``walk._vx_small``: the two-operand byte
    ops by table, SEL by masks, REQ lane by lane) equal its numpy ops (``walk._vx``, the arithmetic
    of ``Golden._vxm``) bit for bit, on random bytes and on the extreme values."""
    from tinylpu.isa import Insn, Opcode
    from tinylpu.sim.golden.walk import _vx, _vx_small
    rng = np.random.default_rng(lanes)
    edge = np.array([-128, -127, -1, 0, 1, 126, 127], np.int8)

    def vec(k):
        return [np.resize(np.roll(edge, i), lanes).tobytes() if k == 0 else
                rng.integers(-128, 128, lanes, dtype=np.int8).tobytes() for i in range(8)]

    cases = [(op, {"use_imm": 0, "sh": sh}) for op in (Opcode.ADD, Opcode.SUB, Opcode.MIN, Opcode.MAX)
             for sh in (0, 3)]
    cases += [(Opcode.MUL, {"use_imm": 0, "sh": sh}) for sh in (0, 1, 5, 7, 15, 63)]
    cases += [(Opcode.SEL, {})]
    cases += [(Opcode.REQ, {"imm": m, "sh": sh}) for m in (-32768, -300, -1, 0, 1, 77, 32767)
              for sh in (0, 1, 8, 17, 31, 47, 48, 62, 63)]
    for op, kw in cases:
        insn = Insn.make(op, **kw)
        ins, fast = _vx_small(op, insn.fields, lanes)
        ins_ref, ref = _vx(op, insn.fields, lanes, None, None)
        assert ins == ins_ref
        for k in range(20):
            v = vec(k)[:sum(planes for _, planes in ins)]
            if op is Opcode.REQ and k == 1:                  # (the int32 extremes)
                v = [bytes([0x00] * lanes), bytes([0x00] * lanes), bytes([0x00] * lanes), bytes([0x80] * lanes)]
            if op is Opcode.REQ and k == 2:
                v = [bytes([0xFF] * lanes)] * 3 + [bytes([0x7F] * lanes)]
            assert fast(v) == ref(v), (op, kw, k)
    assert _vx_small(Opcode.ADD, Insn.make(Opcode.ADD, use_imm=1, imm=3).fields, lanes) is None
    assert _vx_small(Opcode.XOR, Insn.make(Opcode.XOR).fields, lanes) is None


def test_one_read_word_at_two_positions():
    """One READ instruction word (one ``Insn`` object) in two queues: the walk decodes a READ /
    WRITE word's addresses and stream key once per word and position (``walk._TABLES``), so the
    second queue's READ lands at its own position; mem5 (position 8) writes what arrives from mem1
    (position 3), then what arrives from mem3 (position 5), and the REPEAT of the word in mem3 runs
    past the bank's end (the reference's error)."""
    lr = CFG.latency["mem_read"]
    rng = np.random.default_rng(5)
    image = {b: [(0, rng.integers(-128, 128, (8, CFG.lanes), dtype=np.int8))] for b in ("mem1", "mem3")}

    def source(rep=""):
        return f"""
.queue mem1
    READ e0, 0, n=4
    NOP 4
    HALT
.queue mem3
    NOP 10
    READ e0, 0, n=4
{rep}    NOP 4
    HALT
.queue mem5
    NOP {lr + 5}
    WRITE e0, 16, n=4
    NOP 7
    WRITE e0, 20, n=4
    NOP 12
    HALT
"""
    prog = assemble(source(), CFG, "<two positions>")
    assert prog.queues["mem1"][0] is prog.queues["mem3"][1]
    for _ in range(2):                                   # (the second time: decoded words remembered)
        prog = Program(prog.queues)
        f = FastGolden(CFG)
        res, fast = compare(CFG, prog, image, f=f)
        assert res[0] == "ok" and fast and walked(f, prog)
        assert np.array_equal(f.read_mem("mem5", 16, 4), image["mem1"][0][1][:4])
        assert np.array_equal(f.read_mem("mem5", 20, 4), image["mem3"][0][1][:4])
    depth = CFG.mem_depth
    res, fast = compare(CFG, assemble(source(f"    REPEAT {depth // 4}, 4\n"), CFG, "<past the end>"), image)
    assert res[0] == "error" and not fast


def test_walked_model_freed_without_the_cyclic_collector():
    """After a walk nothing refers back to the model through the walk's nested functions: a model
    dropped after its run is freed at once (with the cyclic collector off), and a run leaves no
    cyclic garbage (which cost a collection every few runs)."""
    import gc
    import weakref
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        for seed in range(20):
            case = random_program(CFG, seed)
            f = FastGolden(CFG)
            f.load_program(Program(case.program.queues))
            f.write_image(case_image(case))
            f.run()
            assert walked(f, f.program)
            ref = weakref.ref(f)
            del f
            assert ref() is None, seed
        assert gc.collect() == 0
    finally:
        if was:
            gc.enable()


def _mm_while_installing_source():
    """mxm0 (position 0): LW of rows 0..3 into buffer 0 from mem1 while MM (8 rows of mem0, the
    buffer's weights changing under it) runs, then an accumulating MM onto those 8 rows, EMIT of
    rows 0..3 and the MEM write of the EMITted planes: the walk's MM products are computed when
    read, one matmul per run of elements on the same weights."""
    lr = CFG.latency["mem_read"]
    t0 = lr + 5                                          # LW's first row at mxm0
    return f"""
.queue mem1
    NOP {t0 - lr - 3}
    READ w1, 8, n=4
    NOP 30
    HALT
.queue mem0
    NOP {t0 - lr - 1}
    READ w0, 0, n=8
    NOP 8
    READ w0, 8, n=8
    NOP 30
    HALT
.queue mxm0
    NOP {t0}
    LW w1, 0, 0, n=4
    MM w0, 0, 0, n=8
    NOP 8
    MM w0, 0, 0, n=8, acc=1
    NOP 12
    EMIT e0, 0, n=4
    NOP 20
    HALT
"""


def test_mm_products_when_read():
    """MM products computed when first read (``walk``'s ``products``): over weights installed while
    the MM runs (several runs of one weights in one MM), accumulated onto, EMITted; and a chain of
    500 MMs accumulating into one row, none read before the next adds to it (computed as it
    grows, not as a recursion at the end), from the accumulator's preset contents."""
    rng = np.random.default_rng(17)
    image = {b: [(0, rng.integers(-128, 128, (16, CFG.lanes), dtype=np.int8))] for b in ("mem0", "mem1")}
    prog = assemble(_mm_while_installing_source(), CFG, "<mm>")
    g, f = Golden(CFG), FastGolden(CFG)
    w = rng.integers(-128, 128, (2, CFG.lanes, CFG.lanes), dtype=np.int8)
    for e in (g, f):
        e.weights["mxm0"][...] = w
    res, fast = compare(CFG, prog, image, g, f)
    assert res[0] == "ok" and fast and walked(f, prog)
    assert not np.array_equal(f.acc["mxm0"][:8], 0)
    n, lmm = 500, CFG.latency["mxm_mm"]
    pos = {s.name: s.position for s in CFG.slices}
    t0 = CFG.latency["mem_read"] + pos["mem0"] - pos["mxm0"]
    # (mxm0's queue first: the walk's issue sees its 500 units before the READ's 2,500 elements)
    src = "\n".join([".queue mxm0", f"    NOP {t0}"] + [f"    MM w0, 0, 3, acc=1\n    NOP {lmm - 1}"] * n
                    + [f"    NOP {lmm + 1}", "    HALT",
                       ".queue mem0", f"    READ w0, 0, n={n * lmm}, stride=0", f"    NOP {n * lmm + 10}", "    HALT"])
    prog = assemble(src, CFG, "<chain>")
    g, f = Golden(CFG), FastGolden(CFG)
    a = rng.integers(-(1 << 31), 1 << 31, (CFG.acc_depth, CFG.lanes), dtype=np.int64).astype(np.int32)
    for e in (g, f):
        e.weights["mxm0"][...] = w
        e.acc["mxm0"][...] = a
    res, fast = compare(CFG, prog, image, g, f)
    assert res[0] == "ok" and fast and walked(f, prog)


def test_walked_or_planned_whatever_the_queue_order():
    """Whether a first run is walked is decided on the program's totals (elements per unit
    instruction), not while issuing: one READ of 2,100 elements beside 196 one-element READs
    (11.7 elements per instruction) is walked with its long queue issued first or last."""
    small = "\n".join(["    READ e1, 0, n=1"] * 28)
    src = ".queue mem0\n    READ e0, 0, n=2100, stride=0\n    NOP 2110\n    HALT\n" + "".join(
        f".queue mem{b}\n{small}\n    NOP 2130\n    HALT\n" for b in range(1, 8))
    prog = assemble(src, CFG, "<order>")
    image = {f"mem{b}": [(0, np.full((1, CFG.lanes), b, np.int8))] for b in range(8)}
    names = list(prog.queues)
    for order in (names, names[::-1]):
        p = Program({n: prog.queues[n] for n in order})
        f = FastGolden(CFG)
        res, fast = compare(CFG, p, image, f=f)
        assert res[0] == "ok" and fast and walked(f, p)
