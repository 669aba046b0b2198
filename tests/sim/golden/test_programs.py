"""Hand-written programs on the golden model: MEM, MXM, ICU timing, and every program error."""

from importlib import resources

import numpy as np
import pytest

from tests.harness import variant
from tinylpu.arith import planes_to_int32, requantize
from tinylpu.config import load_config
from tinylpu.firmware.asm import AsmError, assemble
from tinylpu.firmware.check import ProgramCheckError, check_program, program_problems
from tinylpu.firmware.program import Program
from tinylpu.firmware.randprog import random_program
from tinylpu.isa import Insn, Opcode, StreamRef
from tinylpu.sim.golden.chip import Golden, ProgramError

CFG = load_config("tiny")
L = CFG.latency
RNG = np.random.default_rng(1234)


def run(src, mem=(), cfg=CFG, max_cycles=10_000):
    g = Golden(cfg)
    g.load_program(assemble(src, cfg, "test.s"))
    for bank, addr, data in mem:
        g.write_mem(bank, addr, data)
    return g, g.run(max_cycles=max_cycles)


def rnd(n):
    return RNG.integers(-128, 128, (n, CFG.lanes), dtype=np.int8)


# --- the example program: one tile, matmul -> requantize -> write back ---------------------------

def test_tile_matmul_example():
    src = (resources.files("tinylpu.firmware") / "examples" / "tile_matmul.s").read_text()
    W, X = rnd(16), rnd(16)
    W[0] = -128
    X[0] = -128                    # -128 * -128 * 16 accumulates to 2^18 in lane 0
    g, r = run(src, [("mem0", 0, W), ("mem1", 0, X)])
    assert r.cycles == 55
    assert np.array_equal(g.read_mem("mem4", 0, 16), requantize(X.astype(np.int64) @ W.astype(np.int64), 3, 9))
    assert r.activity["mxm0"]["mm_busy"] == 16 and r.activity["mem4"]["wr_busy"] == 16


def test_tile_matmul_relu_program():
    """matmul -> requantize -> write -> read back -> relu -> write: two VXM passes over one tile."""
    src = """
    .queue mem0
        READ w0, 0, n=16            ; W reaches mxm0 at 4..19
        HALT
    .queue mem1
        NOP 15
        READ w1, 0, n=16            ; X reaches mxm0 at 20..35
        HALT
    .queue mxm0
        NOP 4
        LW w0, 0, 0, n=16           ; 4..19
        NOP 15
        MM w1, 0, 0, n=16           ; 20..35, committed 25..40
        NOP 4
        EMIT e0, 0, n=16            ; 25..40: planes reach vxm0 at 33..48
        HALT
    .queue vxm0
        NOP 33
        REQ w5, e0, 5, 11, n=16     ; 33..48, lands 37..52 on w5 -> mem3 at 38..53
        NOP 17
        RELU e6, e4, n=16           ; 51..66, lands 53..68 -> mem4 at 54..69
        HALT
    .queue mem3
        NOP 38
        WRITE w5, 0, n=16           ; 38..53, committed 40..55
        NOP 9
        READ e4, 0, n=16            ; 48..63: row k read at 48+k >= its commit; reaches vxm0 at 51..66
        HALT
    .queue mem4
        NOP 54
        WRITE e6, 0, n=16           ; 54..69, committed 56..71
        NOP 15
        HALT                        ; 70: the program takes 71 cycles
    """
    W, X = rnd(16), rnd(16)
    g, r = run(src, [("mem0", 0, W), ("mem1", 0, X)])
    ref = requantize(X.astype(np.int64) @ W.astype(np.int64), 5, 11)
    assert np.array_equal(g.read_mem("mem3", 0, 16), ref)
    assert np.array_equal(g.read_mem("mem4", 0, 16), np.maximum(ref, 0))
    assert r.cycles == 71


def test_mem_read_write_visibility_and_stride():
    """A READ sees a WRITE exactly mem_write cycles after it; stride -1 reverses."""
    data = rnd(4)
    src = f"""
    .queue mem0
        READ e0, 3, n=4, stride=-1  ; rows 3,2,1,0 land at mem0 at 2..5, at mem1 at 3..6
        HALT
    .queue mem1
        NOP 3
        WRITE e0, 10, n=4           ; cycle 3..6: committed 5..8
        NOP {L['mem_write'] - 1}
        READ e1, 10                 ; cycle 3+mem_write = 5: sees row 10 (committed at 5)
        READ e1, 11                 ; cycle 6: sees row 11 (committed at 6)
        READ e2, 13                 ; cycle 7: row 13 commits at 8: still the old value (zero)
        NOP 4
        HALT
    .queue mem2
        NOP 8
        WRITE e1, 0, n=2            ; cycle 8: rows from mem1's reads land at mem1 at 7, 8 -> mem2 at 8, 9
        NOP 1
        WRITE e2, 5                 ; cycle 10: lands at mem1 at 9 -> mem2 at 10
        HALT
    """
    g, r = run(src, [("mem0", 0, data)])
    assert np.array_equal(g.read_mem("mem1", 10, 4), data[::-1])
    assert np.array_equal(g.read_mem("mem2", 0, 2), data[::-1][:2])
    assert not g.read_mem("mem2", 5, 1).any()


def test_mxm_accumulate_across_tiles_and_double_buffer():
    """Two K tiles accumulated into the same entries; tile 2's weights install while tile 1 runs."""
    W1, W2, X1, X2 = rnd(16), rnd(16), rnd(4), rnd(4)
    W1[:, 0] = -128
    X1[:, :] = -128                 # lane 0: 16 * 2^14 from tile 1 alone
    src = """
    .queue mem0
        READ w0, 0, n=16            ; W1 reaches mxm0 at 4..19
        NOP 15
        READ w0, 16, n=16           ; W2 reaches mxm0 at 20..35
        HALT
    .queue mem1
        NOP 16
        READ w1, 0, n=4             ; X1 reaches mxm0 at 21..24
        NOP 14
        READ w1, 4, n=4             ; X2 reaches mxm0 at 36..39
        HALT
    .queue mxm0
        NOP 4
        LW w0, 0, 0, n=16           ; buffer 0: 4..19
        NOP 15
        LW w0, 1, 0, n=16           ; buffer 1: 20..35, while buffer 0 computes
        MM w1, 0, 0, n=4            ; 21..24, committed 26..29
        NOP 14
        MM w1, 1, 0, n=4, acc=1     ; 36..39, committed 41..44
        NOP 4
        EMIT e0, 0, n=4             ; 41..44: planes land 43..46 -> mem4..mem7 at 50..56
        HALT
    .queue mem4
        NOP 50
        WRITE e0, 0, n=4
        HALT
    .queue mem5
        NOP 51
        WRITE e1, 0, n=4
        HALT
    .queue mem6
        NOP 52
        WRITE e2, 0, n=4
        HALT
    .queue mem7
        NOP 53
        WRITE e3, 0, n=4            ; 53..56, committed 55..58
        NOP 3
        HALT                        ; 57
    """
    g, r = run(src, [("mem0", 0, np.concatenate([W1, W2])), ("mem1", 0, np.concatenate([X1, X2]))])
    got = planes_to_int32([g.read_mem(f"mem{4 + b}", 0, 4) for b in range(4)])
    exp = X1.astype(np.int64) @ W1.astype(np.int64) + X2.astype(np.int64) @ W2.astype(np.int64)
    assert np.array_equal(got, exp.astype(np.int32))
    assert r.cycles == 58


def test_repeat_continues_addresses_and_timing():
    data = rnd(12)
    src = """
    .queue mem0
        READ e0, 0, n=3
        REPEAT 3, 5                 ; reads 3..5 at 5, 6..8 at 10, 9..11 at 15
        NOP 2                       ; next instruction at 15 + 5 = 20: the NOP ends at 22
        HALT
    .queue mem1
        NOP 3
        WRITE e0, 0, n=3
        REPEAT 3, 5
        HALT
    """
    g, r = run(src, [("mem0", 0, data)])
    assert np.array_equal(g.read_mem("mem1", 0, 12), data)
    assert r.halted["mem0"] == 22 and r.halted["mem1"] == 23 and r.cycles == 24


def test_repeat_with_d1_is_back_to_back():
    data = rnd(4)
    src = """
    .queue mem0
        READ e0, 0
        REPEAT 3, 1                 ; rows 1, 2, 3 at cycles 1, 2, 3
        HALT                        ; cycle 4
    .queue mem1
        NOP 3
        WRITE e0, 0, n=4
        NOP 4
        HALT
    """
    g, r = run(src, [("mem0", 0, data)])
    assert np.array_equal(g.read_mem("mem1", 0, 4), data)
    assert r.halted["mem0"] == 4


def test_sync_notify_timing():
    src = f"""
    .queue mem0
        SYNC                        ; parks at 0
        HALT                        ; issues when the NOTIFY fires: 10 + notify
    .queue mem1
        NOP 10
        NOTIFY                      ; cycle 10
        HALT
    .queue mem2
        NOP {10 + L['notify']}
        SYNC                        ; issued in the fire cycle: waits for the next NOTIFY
        HALT
    .queue mem3
        NOP 20
        NOTIFY
        HALT
    """
    g, r = run(src)
    assert r.halted["mem0"] == 10 + L["notify"]
    assert r.halted["mem2"] == 20 + L["notify"]


def test_gather_scatter():
    data = rnd(8)
    idx = np.zeros((2, 16), np.int8)
    idx[0, 0], idx[1, 0], idx[1, 1] = 5, 2, 0        # 5 and 2 (+256*0)
    src = """
    .queue mem0
        READ e0, 0, n=2             ; index vectors reach mem1 at 3, 4
        HALT
    .queue mem1
        NOP 3
        GATHER e1, e0, base=1, n=2  ; rows 6 and 3 of mem1 -> e1, land 5, 6 -> mem2 at 6, 7
        HALT
    .queue mem2
        NOP 6
        WRITE e1, 0, n=2
        NOP 2
        HALT
    """
    g, r = run(src, [("mem0", 0, idx), ("mem1", 0, data)])
    assert np.array_equal(g.read_mem("mem2", 0, 2), data[[6, 3]])


# --- program errors: each names cycle, slice and instruction ------------------------------------

ERRORS = {
    "empty stream": ("""
        .queue mem0
            WRITE e0, 0
            HALT
        """, r"cycle 0, slice mem0, instruction #0 `WRITE e0, 0`: stream e0 at slice mem0 \(position 2\) holds no data"),
    "bank port twice": ("""
        .queue mem0
            READ e0, 0, n=4
            READ e1, 8
            NOP 5
            HALT
        """, r"cycle 1, slice mem0, instruction #1 `READ e1, 8`: rd port is busy until cycle 3"),
    "address out of range": ("""
        .queue mem0
            READ e0, 500, n=8
            REPEAT 2, 8
            NOP 20
            HALT
        """, r"slice mem0, instruction #0 `READ e0, 508, n=8`: bank address 512 out of range 0..511"),
    "accumulator hazard": ("""
        .queue mem0
            READ w0, 0, n=2
            HALT
        .queue mxm0
            NOP 4
            MM w0, 0, 0
            MM w0, 0, 0, acc=1
            NOP 6
            HALT
        """, r"cycle 5, slice mxm0, instruction #2 `MM w0, 0, 0, acc=1`: accumulator hazard"),
    "deadlock": ("""
        .queue mem0
            SYNC
            HALT
        """, r"deadlock: queues wait in SYNC and no NOTIFY is coming"),
    "in flight at halt": ("""
        .queue mem0
            READ e0, 0, n=4
            HALT
        """, r"work still in flight when the last queue halted: mem0.rd \(READ #0\)"),
    "no halt": ("""
        .queue mem0
            NOP 3
        """, r"cycle 3, slice mem0: queue ran past its last instruction without HALT"),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_program_errors(name):
    src, pattern = ERRORS[name]
    with pytest.raises(ProgramError, match=pattern):
        run(src)


def test_port_conflict_from_different_latencies():
    """MUL (3 cycles) then MOV (2 cycles) one cycle later land in the same cycle: an error."""
    src = """
    .queue mem2
        READ e0, 0, n=2
        HALT
    .queue vxm0
        NOP 4
        MUL e1, e0, e0
        MOV e2, e0
        NOP 5
        HALT
    """
    assert L["vxm_mul"] == L["vxm_alu"] + 1
    with pytest.raises(ProgramError, match=r"cycle 5, slice vxm0, instruction #2 `MOV e2, e0`: stream port "
                                           r"conflict: a result of MUL #1 also lands in cycle 7"):
        run(src)


def test_max_cycles():
    with pytest.raises(ProgramError, match="did not halt within 100 cycles"):
        run(".queue mem0\n NOP 1000\n HALT\n", max_cycles=100)


def test_random_programs_run_clean():
    """The shared generator's programs are valid on the golden model (the RTL differential input)."""
    total = 0
    for seed in range(40):
        case = random_program(CFG, seed)
        g = Golden(CFG)
        g.load_program(case.program)
        for bank, (addr, img) in case.mem.items():
            g.write_mem(bank, addr, img)
        r = g.run()
        total += r.cycles
        # deterministic: the same program and data give the same cycles and MEM
        g2 = Golden(CFG)
        g2.load_program(case.program)
        for bank, (addr, img) in case.mem.items():
            g2.write_mem(bank, addr, img)
        assert g2.run().cycles == r.cycles
        assert all(np.array_equal(g.read_mem(b, 0, 64), g2.read_mem(b, 0, 64)) for b, _, _ in case.readback)
    assert total > 1000


# --- several weight rows per cycle (mxm.install_rows) --------------------------------------------

ROWS4 = variant("tiny", "tiny-rows4", install_rows=4)
# LW w0, 0, 1, n=7 at cycle 10 runs 2 elements: rows 1..4 from w0..w3 at 10, rows 5..7 from w0..w2 at
# 11 (w3 is not sampled then).  mem k (position 2 + k) READs at 6 - k so that its vectors reach
# mxm0 (position 0) at 10, 11.  MM at 11 sees rows 1..4 (installed at 10) but not yet 5..7.
ROWS4_LW = """
    .queue mem0
        NOP 6
        READ w0, 0, n=2
        NOP 10
        HALT
    .queue mem1
        NOP 5
        READ w1, 0, n=2
        HALT
    .queue mem2
        NOP 4
        READ w2, 0, n=2
        HALT
    .queue mem3
        NOP 3
        READ w3, 0, n={n3}
        HALT
    .queue mem4
        NOP 2
        READ w4, 8, n=2
        HALT
    .queue mxm0
        NOP 10
        LW w0, 0, 1, n={n}
        {second}
        MM w4, 0, 0, n=2
        NOP 5
        HALT
"""
ROWS4_ERRORS = {
    "empty 4th stream": (ROWS4_LW.format(n=8, n3=1, second=""),
                         r"cycle 11, slice mxm0, instruction #1 `LW w0, 0, 1, n=8`: stream w3 at slice mxm0 "
                         r"\(position 0\) holds no data in cycle 11"),
    "install busy for ceil(n/R) cycles": (ROWS4_LW.format(n=7, n3=1, second="LW w0, 1, 0"),
                                          r"cycle 11, slice mxm0, instruction #2 `LW w0, 1, 0`: install unit "
                                          r"is busy until cycle 11 with LW \(#1\) issued at cycle 10"),
}


def test_install_rows_lw():
    """R = 4 rows per LW element; a partial last element; rows usable mxm_install after their element."""
    W = [rnd(2) for _ in range(4)]
    X = rnd(10)
    src = ROWS4_LW.format(n=7, n3=1, second="")
    g, r = run(src, [(f"mem{k}", 0, W[k]) for k in range(4)] + [("mem4", 0, X)], cfg=ROWS4)
    assert r.cycles == 18
    assert r.activity["mxm0"]["install_busy"] == 2          # ceil(7 / 4) cycles, not 7
    w = g.weights["mxm0"][0]
    want = np.zeros((CFG.lanes, CFG.lanes), np.int8)
    for row in range(7):
        k, j = divmod(row, 4)
        want[1 + row] = W[j][k]
    assert np.array_equal(w, want)
    early = want.astype(np.int64).copy()
    early[5:8] = 0                                           # the MM element of cycle 11
    acc = g.acc["mxm0"]
    assert np.array_equal(acc[0], X[8].astype(np.int64) @ early)
    assert np.array_equal(acc[1], X[9].astype(np.int64) @ want.astype(np.int64))


@pytest.mark.parametrize("name", list(ROWS4_ERRORS))
def test_install_rows_errors(name):
    src, pattern = ROWS4_ERRORS[name]
    with pytest.raises(ProgramError, match=pattern):
        run(src, cfg=ROWS4)


def test_install_rows_past_the_last_stream():
    """LW w5 with R = 4 needs w5..w8 of 8 streams: the checker and the assembler refuse it, and the
    golden model (given the program unchecked) reports it with cycle, slice and instruction, even
    for an LW of one row."""
    src = ".queue mxm0\n    LW w5, 0, 0\n    NOP 2\n    HALT\n"
    with pytest.raises(AsmError, match=r"LW installs 4 rows per cycle from streams w5..w8: the chip has 8 streams "
                                       r"per direction, so the first is at most w4"):
        assemble(src, ROWS4)
    prog = assemble(src)
    with pytest.raises(ProgramCheckError, match=r"queue mxm0 #0 LW w5, 0, 0: LW installs 4 rows per cycle"):
        check_program(prog, ROWS4)
    assert program_problems(assemble(src.replace("w5", "w4")), ROWS4) == []
    g = Golden(ROWS4)
    g.program = prog
    with pytest.raises(ProgramError, match=r"cycle 0, slice mxm0, instruction #0 `LW w5, 0, 0`: LW installs 4 "
                                           r"rows per cycle from streams w5..w8: stream index out of range \(the "
                                           r"chip has 8 streams per direction\)"):
        g.run()


def test_install_rows_random_programs_run_clean():
    """The random generator feeds LW from R streams on configs with install_rows > 1."""
    lws = 0
    for R in (2, 4, 8):
        cfg = variant("tiny", f"tiny-rows{R}", install_rows=R)
        for seed in range(15):
            case = random_program(cfg, seed)
            lws += sum(f" from {R} streams" in f for f in case.flows)
            g = Golden(cfg)
            g.load_program(case.program)
            for bank, (addr, img) in case.mem.items():
                g.write_mem(bank, addr, img)
            g.run()
    assert lws >= 15



@pytest.mark.parametrize("prev", [Opcode.NOP, Opcode.SYNC, Opcode.NOTIFY, Opcode.DESKEW, Opcode.REPEAT, None])
def test_repeat_must_follow_a_unit_instruction(prev):
    """REPEAT repeats the last unit instruction: after a control instruction (NOP, SYNC, NOTIFY,
    DESKEW, another REPEAT: the instructions of unit "any") or at the start of a queue the checker
    refuses it.  (DESKEW is not of the CTL format, and was once let through.)  The assembler refuses
    such a queue itself, so it is built from instructions."""
    cfg = load_config("duo")
    read = Insn.make(Opcode.READ, s=StreamRef(0, False), addr=0)
    rep = Insn.make(Opcode.REPEAT, n=2, d=1)
    tail = [Insn.make(Opcode.NOP, n=4), Insn.make(Opcode.HALT)]
    head = [] if prev is None else [read, Insn.make(prev, n=1, d=1) if prev is Opcode.REPEAT else
                                    Insn.make(prev, n=2) if prev is Opcode.NOP else Insn.make(prev)]
    k = len(head)
    with pytest.raises(ProgramCheckError, match=rf"queue mem0 #{k} REPEAT 2, 1: REPEAT must follow a unit instruction"):
        check_program(Program({"mem0": head + [rep] + tail}), cfg)
    assert program_problems(Program({"mem0": head + [read, rep] + tail}), cfg) == []


def test_program_ok_agrees_with_program_problems():
    """``check_program``'s fast test (``program_ok``) accepts exactly the programs in which
    ``program_problems`` finds nothing: random instructions of every opcode, with fields around
    their limits, on random slices of configs with and without C2C ports and install_rows > 1."""
    from tinylpu.firmware.check import program_ok
    from tinylpu.isa import COUNT_MAX, OPS
    rng = np.random.default_rng(7)
    bad = good = 0
    for cfg in (load_config("tiny"), load_config("duo"), variant("tiny", "tiny-rows4", install_rows=4)):
        S, names, L = cfg.streams, [s.name for s in cfg.slices], cfg.lanes
        limits = (L, cfg.acc_depth, cfg.mem_depth, 256 // L)        # (values on both sides of every limit)
        edges = {"imm": (-L - 1, -L, -129, -128, 0, 1, L - 1, L, 127, 128), "stride": (-3, -1, 0, 1, 2),
                 "count": (-1, 0, 1, 2, 3, 4, 5, L // 2, L, COUNT_MAX, COUNT_MAX + 1), "n": (0, 1, 2), "d": (0, 1, 2)}

        def value(k, v, count, S=S):
            if isinstance(v, StreamRef):
                i = int(rng.integers(0, S)) if rng.random() < 0.5 else S - int(rng.integers(0, 6))
                return StreamRef(max(i, 0), bool(rng.integers(0, 2)))
            if k in ("addr", "imm") and rng.random() < 0.5:     # addr + count (imm + count) near a limit
                return int(limits[int(rng.integers(0, 4))] - max(count, 1) + rng.integers(-1, 2))
            if k in edges:
                return int(rng.choice(edges[k]))
            return int(rng.integers(-2, 70 if k == "addr" else 4))

        ops = list(OPS)
        for it in range(6000):
            insns = []
            for j in range(int(rng.integers(1, 3)), 0, -1):       # (the last one: every opcode in turn)
                op = ops[it % len(ops)] if j == 1 else ops[int(rng.integers(0, len(ops)))]
                base = Insn.make(op)
                count = int(rng.choice(edges["count"]))
                f = {k: count if k == "count" else value(k, v, count) for k, v in base.fields.items()}
                insns.append(base.replace(**f) if rng.random() < 0.8 else base)
            unit = OPS[insns[-1].op].unit                # (mostly a slice that runs the last one)
            fits = [s.name for s in cfg.slices if s.kind == unit] or names
            names_ = fits if rng.random() < 0.9 else names
            prog = Program({names_[int(rng.integers(0, len(names_)))]: insns})
            probs = program_problems(prog, cfg)
            assert program_ok(prog, cfg) == (not probs), (cfg.name, [str(i) for i in insns], probs)
            bad += bool(probs)
            good += not probs
    assert bad > 3000 and good > 3000
    cfg = load_config("tiny")                   # queues: an unknown slice, more than the queue holds
    for prog in (Program({"nosuch": [Insn.make(Opcode.HALT)]}),
                 Program({"mem0": [Insn.make(Opcode.NOP, n=1)] * cfg.queue_depth + [Insn.make(Opcode.HALT)]})):
        assert program_problems(prog, cfg) and not program_ok(prog, cfg)
