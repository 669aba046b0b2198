"""VxmSlice against the golden model, cycle by cycle, in Amaranth's simulator.

The reference is the golden model itself: a ``Golden`` instance whose stream registers at the VXM's
position are set to the tap of each cycle; its own ``_dispatch``/``_element`` process the elements,
and the stream writes it schedules for cycle D are the results the RTL must drive during D-1.
Register loads (LDM, LDLUT) go through the golden model's delayed effects.
"""

import dataclasses

import numpy as np
import pytest
from amaranth.back import verilog

from tests.harness import run_unit_rtl, shared_dut, tap_ints, vec_int
from tests.hdl.test_taps import cut_config, tapped, unit_config
from tinylpu.arith import int32_to_planes, requantize, rshift_round, sat8
from tinylpu.config import load_config
from tinylpu.hdl.taps import Tapped
from tinylpu.hdl.vxm import VxmSlice
from tinylpu.isa import Insn, Opcode, StreamRef
from tinylpu.sim.golden.chip import ProgramError
from tinylpu.sim.golden.stepper import SliceStepper

O = Opcode


WIDE_IMM = [-32768, 32767, 255, 256, -129, -257, 511, 512, -512, -513, 0x1234, -0x7F01]

def config(name):
    if name.endswith("-late"):      # the ECP5 build's LUT table: operand registered, read late
        return dataclasses.replace(config(name[:-5]), name=name)
    if name == "cut":               # configs/fpga.yaml: 4 streams, tap registers (hdl/taps.py)
        return cut_config()
    if name.endswith("-tap"):       # tap registers, every result latency one longer
        return tapped(name[:-4])
    if name == "min":
        cfg = load_config("tiny")
        return dataclasses.replace(cfg, name="min", latency={**cfg.latency, "vxm_alu": 2, "vxm_mul": 2,
                                                                "vxm_req": 2, "vxm_lut": 2})
    if name == "deep":
        cfg = load_config("tiny")
        return dataclasses.replace(cfg, name="deep", latency={**cfg.latency, "vxm_alu": 4, "vxm_mul": 6,
                                                                 "vxm_req": 9, "vxm_lut": 5})
    return unit_config(name)


def vxm(cfg, early=False):
    """The VXM under test, one per config and ``early`` in a test process (its simulator is reused,
    tests/harness.py ``simulate``); ``fpga-late`` elaborates the LUT-RAM variant an ECP5 build uses."""
    def build():
        kw = {"lut_read": "late" if cfg.name.endswith("-late") else None}
        if cfg.tap_registers:       # the unit behind tap registers: err/busy one cycle late (harness)
            dut = Tapped(VxmSlice, cfg, cfg.slice("vxm0"), **kw)
        else:
            dut = VxmSlice(cfg, cfg.slice("vxm0"), **kw)
        dut.early = early             # the chip's registered issue: pre_insn one cycle ahead
        return dut
    return shared_dut(("vxm", repr(cfg), early), build)


# ---------------------------------------------------------------------------------------------
# Harness: a schedule of issues and per-cycle taps, the golden reference, the RTL run
# ---------------------------------------------------------------------------------------------

class Tap:
    """The stream registers at the unit's position in one cycle: data[dir][stream] int8 vectors."""

    def __init__(self, cfg, rng=None, fill=None):
        S, lanes = cfg.streams, cfg.lanes
        self.data = np.zeros((2, S, lanes), np.int8) if fill is None else fill
        self.valid = np.ones((2, S), bool)
        if rng is not None:
            self.data = random_vectors(rng, (2, S), lanes)

    def ints(self, cfg):
        return tap_ints(cfg, self)


SPECIAL8 = [-128, 127, 0, -1, 1, 64, -64, 126, -127]
SPECIAL32 = [0, 1, -1, 2, -2, 3, -3, 2**31 - 1, -2**31, 2**15, -2**15, 2**16 + 1, -(2**24), 12345678]


def random_vectors(rng, shape, lanes):
    """Random int8 vectors with edge values, and in some groups of 4 streams int32 edge values."""
    v = rng.integers(-128, 128, size=shape + (lanes,)).astype(np.int8)
    mask = rng.random(shape + (lanes,)) < 0.25
    v[mask] = rng.choice(SPECIAL8, size=int(mask.sum()))
    d, S = shape
    for di in range(d):
        for g in range(0, S - 3, 4):
            if rng.random() < 0.5:
                x = rng.integers(-2**31, 2**31, size=lanes)
                sm = rng.random(lanes) < 0.5
                x[sm] = rng.choice(SPECIAL32, size=int(sm.sum()))
                small = rng.random(lanes) < 0.3
                x[small] = rng.integers(-5000, 5000, size=int(small.sum()))
                for b, p in enumerate(int32_to_planes(x.astype(np.int32))):
                    v[di, g + b] = p
    return v


def run_rtl(dut, cfg, cycles, issues, taps):
    return run_unit_rtl(dut, cfg, cycles, issues, taps, wide_unit=True)


def check_against_golden(cfg, dut, issues, taps, cycles):
    ref = SliceStepper(cfg, "vxm0")
    expect, busy = [], []
    for c in range(cycles):
        occ, drv = ref.step(c, issues.get(c), taps[c])
        assert len(drv) <= 1
        expect.append(drv[0] if drv else None)
        busy.append(occ)
    drive_cycles = [c for c, e in enumerate(expect) if e is not None]
    for c in range(cycles):
        busy[c] = busy[c] or any(ref.samples[d] < c <= d for d in drive_cycles)
    assert not ref.g.active and not ref.g.effects, "schedule too short"
    rec = run_rtl(dut, cfg, cycles, issues, taps)
    lanes = cfg.lanes
    vmask = (1 << (8 * lanes)) - 1
    for c, (got, exp) in enumerate(zip(rec, expect)):
        valid, west, index, wide, data, err, bsy = got
        ctx = f"cycle {c} (config {cfg.name}, issues {[(k, str(v)) for k, v in issues.items() if k <= c]})"
        assert not any(err.values()), f"{ctx}: unexpected error {err}"
        assert bsy == busy[c], f"{ctx}: busy {bsy}, expected {busy[c]}"
        if exp is None:
            assert not valid, f"{ctx}: unexpected result driven"
            continue
        d, idx, vecs = exp
        assert valid, f"{ctx}: expected a result"
        assert (west, index, wide) == (d, idx, int(len(vecs) == 4)), ctx
        for b, v in enumerate(vecs):
            gv = (data >> (8 * lanes * b)) & vmask
            assert gv == vec_int(v), (f"{ctx}: plane {b} got "
                                      f"{np.frombuffer(gv.to_bytes(lanes, 'little'), np.int8)}, expected {v}")
    return rec


# ---------------------------------------------------------------------------------------------
# Random schedules
# ---------------------------------------------------------------------------------------------

LAT_KEY = {O.MUL: "vxm_mul", O.REQ: "vxm_req", O.REQL: "vxm_req", O.LUT: "vxm_lut"}
ALL_OPS = [O.MOV, O.ADD, O.SUB, O.MUL, O.MIN, O.MAX, O.RELU, O.SHL, O.SHR, O.AND, O.OR, O.XOR, O.SEL,
           O.REQ, O.REQL, O.LUT, O.ADD32, O.LDM, O.LDLUT]
BINARY = {O.ADD, O.SUB, O.MUL, O.MIN, O.MAX, O.AND, O.OR, O.XOR}
GROUP = {O.REQ, O.REQL, O.ADD32}
SHIFTS = [0, 1, 2, 7, 8, 15, 16, 23, 24, 25, 31, 32, 40, 45, 46, 47, 48, 49, 61, 62, 63]
MULTS = [0, 1, -1, 2, 32767, -32768, -32767, 3, 16384, -5]


def random_insn(rng, cfg, op):
    S = cfg.streams

    def sref(group=False):
        hi = S - 4 if group else S - 1
        i = int(rng.integers(0, hi + 1))
        if group and rng.random() < 0.7:
            i -= i % 4
        return StreamRef(i, bool(rng.integers(0, 2)))

    f = {"d": sref(op == O.ADD32), "a": sref(op in GROUP), "count": int(rng.choice([1, 1, 2, 3, 5]))}
    if op in BINARY or op in (O.SEL, O.ADD32):
        f["b"] = sref(op == O.ADD32)
    if op == O.SEL:
        f["c"] = sref()
    if op in BINARY and rng.random() < 0.4:
        f["use_imm"] = 1
        # all 16 bits of the immediate count (the ALU clamps b to 10 bits for ADD/SUB/MIN/MAX and
        # uses its low byte for AND/OR/XOR): wide values around those edges too
        f["imm"] = int(rng.choice(SPECIAL8 + WIDE_IMM + [int(rng.integers(-128, 128)),
                                                        int(rng.integers(-32768, 32768))]))
    if op == O.MUL:
        f["sh"] = int(rng.choice([0, 0, 1, 3, 7, 8, 14, 15, 16, 30, 63]))
    if op in (O.SHL, O.SHR):
        f["sh"] = int(rng.choice([0, 1, 3, 7, 8, 13, 63]))
    if op == O.REQ:
        f["imm"] = int(rng.choice(MULTS + [int(rng.integers(-32768, 32768))]))
        f["sh"] = int(rng.choice(SHIFTS))
    if op == O.LDM:
        f["count"] = 4 if rng.random() < 0.8 else int(rng.integers(1, 6))    # partial / extra loads too
    if op == O.LDLUT:
        rows = 256 // cfg.lanes
        n = int(rng.integers(1, rows + 1)) if rng.random() < 0.4 else int(rng.integers(1, 3))
        f["count"] = n
        f["imm"] = int(rng.integers(0, rows - n + 1))
    return Insn.make(op, **f)


def random_schedule(cfg, seed, n_insns, ops=ALL_OPS, max_gap=3):
    """Issues that keep the sub-unit and the output port free of conflicts; all taps valid.
    Every op of `ops` appears at least once (in random order), the rest are random picks."""
    rng = np.random.default_rng(seed)
    seq = list(ops) + [ops[int(i)] for i in rng.integers(0, len(ops), max(0, n_insns - len(ops)))]
    seq = [seq[int(i)] for i in rng.permutation(len(seq))]
    issues, landings = {}, set()
    t = 0
    for op in seq:
        insn = random_insn(rng, cfg, op)
        t += int(rng.integers(0, max_gap + 1)) if rng.random() < 0.5 else 0
        lands = op not in (O.LDM, O.LDLUT)
        L = cfg.latency[LAT_KEY.get(op, "vxm_alu")]
        while lands and any(t + k + L in landings for k in range(insn.count)):
            t += 1
        issues[t] = insn
        if lands:
            landings.update(t + k + L for k in range(insn.count))
        t += insn.count
    cycles = t + max(cfg.latency[k] for k in ("vxm_alu", "vxm_mul", "vxm_req", "vxm_lut")) + 2
    taps = [Tap(cfg, rng) for _ in range(cycles)]
    return issues, taps, cycles


SLOW = pytest.mark.slow
RANDOM = [("tiny", 1, 50), ("tiny", 2, 50), ("fpga", 7, 150), ("fpga-late", 5, 150), ("min", 4, 50),
          ("deep-late", 6, 150)]
RANDOM += [pytest.param(c, s, 150, marks=SLOW, id=f"{c}-{s}-long") for c, s, n in RANDOM if n < 150]
# the fast tier's 5-minute budget: a second tiny seed and the min config's own simulator build run slow
RANDOM = [pytest.param(*r, marks=SLOW) if r in (("tiny", 2, 50), ("min", 4, 50)) else r for r in RANDOM]
# each (config, early) pair is a simulator build of ~8 s: these two add builds the fast tier has not made
RANDOM += [pytest.param("fpga", 3, 150, marks=SLOW), pytest.param("deep", 5, 150, marks=SLOW)]
# tap registers (hdl/taps.py): the ECP5 build of the synthesized cut (4 streams), early issue (seed 6);
# slow: the cut with the synchronous LUT, and taps on 8 and 16 lanes with 8 streams
RANDOM += [("cut-late", 6, 150), pytest.param("cut", 8, 150, marks=SLOW),
           pytest.param("fpga-tap", 9, 150, marks=SLOW), pytest.param("tiny-tap", 2, 50, marks=SLOW)]


@pytest.mark.parametrize("cfg_name,seed,n_insns", RANDOM)
def test_random_against_golden(cfg_name, seed, n_insns):
    """Seeds 2, 3 and 6 run the unit with predecoded issue (``early``, as on a chip with
    registered issue). The 16-lane runs take 50 instructions in the fast tier, 150 in the slow."""
    cfg = config(cfg_name)
    issues, taps, cycles = random_schedule(cfg, seed, n_insns)
    dut = vxm(cfg, early=seed in (2, 3, 6))
    check_against_golden(cfg, dut, issues, taps, cycles)


# ---------------------------------------------------------------------------------------------
# Directed: arithmetic edge cases (golden-checked plus hand-written expectations)
# ---------------------------------------------------------------------------------------------

def fill_tap(cfg, streams):
    """A tap with the given {(west, index): int8 vector} contents, all slots valid."""
    t = Tap(cfg)
    for (w, i), v in streams.items():
        t.data[w, i] = np.asarray(v, np.int64).astype(np.int8)
    return t


def group_tap(cfg, streams8=None, groups=None):
    t = fill_tap(cfg, streams8 or {})
    for (w, i), x in (groups or {}).items():
        for b, p in enumerate(int32_to_planes(np.asarray(x, np.int64).astype(np.int32))):
            t.data[w, i + b] = p
    return t


def run_directed(cfg, seq, extra=4):
    """seq: list of (insn, tap-per-element list), issued one after the other as early as the
    sub-unit and the output port allow."""
    issues, taps, landings, t = {}, [], set(), 0
    for insn, tlist in seq:
        n = insn.count
        assert len(tlist) == n
        lands = insn.op not in (O.LDM, O.LDLUT)
        L = cfg.latency[LAT_KEY.get(insn.op, "vxm_alu")]
        while lands and any(t + k + L in landings for k in range(n)):
            t += 1
            taps.append(Tap(cfg))
        if lands:
            landings.update(t + k + L for k in range(n))
        issues[t] = insn
        taps.extend(tlist)
        t += n
    cycles = t + max(cfg.latency.values()) + extra
    taps.extend(Tap(cfg) for _ in range(cycles - len(taps)))
    dut = vxm(cfg)
    return check_against_golden(cfg, dut, issues, taps, cycles), issues


def out_at(rec, c, plane=0, lanes=16):
    data = rec[c][4]
    return np.frombuffer(((data >> (8 * lanes * plane)) & ((1 << 8 * lanes) - 1)).to_bytes(lanes, "little"), np.int8)


E = lambda i: StreamRef(i, False)
W = lambda i: StreamRef(i, True)


@pytest.mark.parametrize("cfg_name", ["tiny", "fpga", "fpga-tap"])
def test_edge_arithmetic(cfg_name):
    cfg = config(cfg_name)
    lanes = cfg.lanes
    L = cfg.latency
    A8 = np.array([-128, 127, -128, 127, 0, -1, 1, 100, -100, 127, -128, 50, -50, 64, -64, 3])[:lanes]
    B8 = np.array([-128, 127, 127, -128, -1, -1, 1, 100, -100, 1, -1, 80, -80, 64, -64, -2])[:lanes]
    C8 = np.array([0, 1, 0, 5, 0, -1, 0, 1, 0, 0, 7, 0, 1, 0, -128, 0])[:lanes]
    base = {(0, 0): A8, (0, 1): B8, (1, 2): C8}
    acc = np.array([3, -3, 1, -1, 2**31 - 1, -2**31, 5, -5, 7, -7, 2**30, -(2**30), 12345, -12345, 0, 6])[:lanes]
    acc2 = np.array([1, 1, -1, -1, 1, -1, 2**31 - 1, -2**31, 2**31 - 1, 0, 5, -5, 1, 1, 1, 1])[:lanes]
    gt = lambda: group_tap(cfg, base, {(0, 4): acc, (1, 4): acc2})
    seq = [
        (Insn.make(O.ADD, d=E(2), a=E(0), b=E(1)), [gt()]),
        (Insn.make(O.SUB, d=E(2), a=E(0), b=E(1)), [gt()]),
        (Insn.make(O.ADD, d=W(3), a=E(0), use_imm=1, imm=-128), [gt()]),
        (Insn.make(O.SUB, d=W(3), a=E(0), use_imm=1, imm=127), [gt()]),
        (Insn.make(O.MUL, d=E(2), a=E(0), b=E(1)), [gt()]),
        (Insn.make(O.MUL, d=E(2), a=E(0), b=E(1), sh=7), [gt()]),
        (Insn.make(O.MUL, d=E(2), a=E(0), use_imm=1, imm=-1, sh=1), [gt()]),
        (Insn.make(O.MIN, d=E(2), a=E(0), b=E(1)), [gt()]),
        (Insn.make(O.MAX, d=E(2), a=E(0), use_imm=1, imm=-3), [gt()]),
        (Insn.make(O.RELU, d=E(2), a=E(0)), [gt()]),
        (Insn.make(O.SHL, d=E(2), a=E(0), sh=3), [gt()]),
        (Insn.make(O.SHR, d=E(2), a=E(0), sh=2), [gt()]),
        (Insn.make(O.SHR, d=E(2), a=E(0), sh=9), [gt()]),
        (Insn.make(O.XOR, d=E(2), a=E(0), use_imm=1, imm=-1), [gt()]),
        (Insn.make(O.SEL, d=E(2), a=E(0), b=E(1), c=W(2)), [gt()]),
        (Insn.make(O.ADD32, d=W(4), a=E(4), b=W(4)), [gt()]),
        (Insn.make(O.REQ, d=E(2), a=E(4), imm=1, sh=1), [gt()]),      # rounding ties: 1.5 -> 2, -1.5 -> -1
        (Insn.make(O.REQ, d=E(2), a=E(4), imm=1, sh=0), [gt()]),
        (Insn.make(O.REQ, d=E(2), a=E(4), imm=-32768, sh=47), [gt()]),
        (Insn.make(O.REQ, d=E(2), a=E(4), imm=-32768, sh=48), [gt()]),
        (Insn.make(O.REQ, d=E(2), a=E(4), imm=32767, sh=63), [gt()]),
        (Insn.make(O.REQ, d=E(2), a=E(4), imm=-7, sh=2), [gt()]),
        # wide immediates (all 16 bits count; after the indexed expectations below)
        (Insn.make(O.ADD, d=E(2), a=E(0), use_imm=1, imm=-32768), [gt()]),
        (Insn.make(O.SUB, d=E(2), a=E(0), use_imm=1, imm=-32768), [gt()]),
        (Insn.make(O.ADD, d=E(2), a=E(0), use_imm=1, imm=256), [gt()]),
        (Insn.make(O.ADD, d=E(2), a=E(0), use_imm=1, imm=-513), [gt()]),
        (Insn.make(O.MIN, d=E(2), a=E(0), use_imm=1, imm=600), [gt()]),
        (Insn.make(O.MAX, d=E(2), a=E(0), use_imm=1, imm=-600), [gt()]),
        (Insn.make(O.AND, d=E(2), a=E(0), use_imm=1, imm=0x1234), [gt()]),
        (Insn.make(O.OR, d=E(2), a=E(0), use_imm=1, imm=-0x7F01), [gt()]),
    ]
    rec, issues = run_directed(cfg, seq)
    # a few hand-written expectations on top of the golden comparison
    starts = sorted(issues)
    drive = lambda i: starts[i] + L[LAT_KEY.get(seq[i][0].op, "vxm_alu")] - 1
    assert list(out_at(rec, drive(0), lanes=lanes)) == list(np.clip(A8 + B8, -128, 127))
    assert list(out_at(rec, drive(1), lanes=lanes)) == list(np.clip(A8 - B8, -128, 127))
    assert list(out_at(rec, drive(4), lanes=lanes)) == list(np.clip(A8 * B8, -128, 127))
    assert list(out_at(rec, drive(5), lanes=lanes)) == list(sat8(rshift_round(A8 * B8, 7)))
    s = (acc.astype(np.int64) + acc2) & 0xFFFFFFFF
    s = s.astype(np.uint32).view(np.int32)
    for b, p in enumerate(int32_to_planes(s)):
        assert list(out_at(rec, drive(15), plane=b, lanes=lanes)) == list(p)
    r = out_at(rec, drive(16), lanes=lanes)
    assert r[0] == 2 and r[1] == -1 and r[2] == 1 and r[3] == 0
    assert list(r) == list(requantize(acc, 1, 1))
    assert list(out_at(rec, drive(18), lanes=lanes)) == list(requantize(acc, -32768, 47))
    assert out_at(rec, drive(18), lanes=lanes)[5] == 1           # (-2^31 * -2^15) >> 47 rounds to 1
    assert not out_at(rec, drive(19), lanes=lanes).any()         # sh >= 48: everything rounds to 0
    assert not out_at(rec, drive(20), lanes=lanes).any()


def test_requantize_exhaustive_shifts():
    """REQ at every shift 0..63 with extreme and tie-making accumulators and multipliers."""
    cfg = config("tiny")
    lanes = cfg.lanes
    acc = np.array([2**31 - 1, -2**31, 1, -1, 3, -3, 2**20 + 2**19, -(2**20 + 2**19), 255, -256,
                    2**31 - 1, -2**31, 77777, -77777, 2**16, -(2**16)])[:lanes]
    seq = []
    for sh in range(64):
        m = [-32768, 32767, -1, 1, 3, -3, 12345, -32767][sh % 8]
        seq.append((Insn.make(O.REQ, d=W(0), a=E(sh % 5), imm=m, sh=sh, count=1),
                    [group_tap(cfg, None, {(0, sh % 5): acc})]))
    run_directed(cfg, seq)


# ---------------------------------------------------------------------------------------------
# Directed: register loads
# ---------------------------------------------------------------------------------------------

def test_ldm_then_reql_next_cycle():
    cfg = config("tiny")
    lanes = cfg.lanes
    rng = np.random.default_rng(7)
    acc = np.array([2**31 - 1, -2**31, 3, -3, 1000, -1000, 5, -5, 2**24, -(2**24), 1, -1, 77, 0, 9, -9])[:lanes]
    mlist = np.array([-32768, 32767, 1, 1, -7, 7, 3, 3, 100, -100, 1, 1, 2, 0, -1, 5])[:lanes]
    shs = np.array([0, 63, 1, 1, 5, 5, 1, 2, 20, 20, 0, 0, 1, 7, 48, 47])[:lanes]
    lo = (mlist & 0xFF).astype(np.uint8).view(np.int8)
    hi = ((mlist >> 8) & 0xFF).astype(np.uint8).view(np.int8)
    shv = (shs + 64 * rng.integers(0, 4, lanes)).astype(np.uint8).view(np.int8)  # mod 64
    zs = np.array([0, -128, 127, -1, 1, 100, -100, 5, 3, -3, 127, -128, 64, -64, 0, 0])[:lanes]
    t_ldm = [fill_tap(cfg, {(1, 7): v}) for v in (lo, hi, shv, zs)]
    t_req = lambda: group_tap(cfg, {(0, 0): -lo}, {(1, 0): acc})
    seq = [
        (Insn.make(O.REQL, d=E(5), a=W(0), count=1), [t_req()]),          # before any LDM: M = 0
        (Insn.make(O.LDM, a=W(7)), t_ldm),
        (Insn.make(O.REQL, d=E(5), a=W(0), count=2), [t_req(), t_req()]),
        (Insn.make(O.LDM, a=E(0), count=2), [t_req(), t_req()]),             # a partial load: M only
        (Insn.make(O.REQL, d=E(5), a=W(0), count=1), [t_req()]),
    ]
    rec, issues = run_directed(cfg, seq)
    t3 = sorted(issues)[2]
    assert list(out_at(rec, t3 + cfg.latency["vxm_req"] - 1, lanes=lanes)) == list(requantize(acc, mlist, shs, zs))


@pytest.mark.parametrize("cfg_name", ["tiny", "fpga", "fpga-late", "cut-late"])
def test_ldlut_then_lut(cfg_name):
    cfg = config(cfg_name)
    lanes = cfg.lanes
    rows = 256 // lanes
    rng = np.random.default_rng(11)
    table = rng.integers(-128, 128, 256).astype(np.int8)
    allbytes = np.arange(256).astype(np.uint8).view(np.int8)
    seq = [(Insn.make(O.LUT, d=E(1), a=E(0), count=1), [fill_tap(cfg, {(0, 0): allbytes[:lanes]})])]
    seq.append((Insn.make(O.LDLUT, a=W(3), imm=0, count=rows),
                [fill_tap(cfg, {(1, 3): table[r * lanes:(r + 1) * lanes]}) for r in range(rows)]))
    # every table entry, immediately after the load
    seq.append((Insn.make(O.LUT, d=W(1), a=E(0), count=rows),
                [fill_tap(cfg, {(0, 0): allbytes[r * lanes:(r + 1) * lanes][::-1]}) for r in range(rows)]))
    # overwrite row 5 right after a LUT: that LUT (its table read may be a cycle late) sees the old
    # row, the LUT sampled in the next cycle the new one
    row5 = fill_tap(cfg, {(0, 0): allbytes[5 * lanes:6 * lanes]})
    seq.append((Insn.make(O.LUT, d=W(1), a=E(0), count=1), [row5]))
    seq.append((Insn.make(O.LDLUT, a=W(3), imm=5, count=1), [fill_tap(cfg, {(1, 3): -table[:lanes]})]))
    seq.append((Insn.make(O.LUT, d=W(1), a=E(0), count=2), [row5, row5]))
    run_directed(cfg, seq)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

def run_flags(cfg, issues, taps, cycles):
    rec = run_rtl(vxm(cfg), cfg, cycles, issues, taps)
    return [{n for n, v in r[5].items() if v} for r in rec], rec


@pytest.mark.parametrize("cfg_name", ["tiny", "fpga", "cut"])
def test_port_conflict(cfg_name):
    cfg = config(cfg_name)
    L = cfg.latency
    taps = [Tap(cfg, np.random.default_rng(c)) for c in range(20)]
    # REQ lands at t+L_req; an ADD issued L_req - L_alu cycles later lands on the same cycle
    gap = L["vxm_req"] - L["vxm_alu"]
    issues = {0: Insn.make(O.REQ, d=E(0), a=E(0), imm=3, sh=1), gap: Insn.make(O.ADD, d=E(1), a=E(0), b=E(1))}
    ref = SliceStepper(cfg, "vxm0")
    with pytest.raises(ProgramError, match="stream port conflict"):
        for c in range(20):
            ref.step(c, issues.get(c), taps[c])
    flags, rec = run_flags(cfg, issues, taps, 20)
    clash = L["vxm_req"] - 1
    assert flags[clash] == {"port"}
    assert all(not f for c, f in enumerate(flags) if c != clash)
    # one cycle apart: no conflict, two results on consecutive cycles
    issues = {0: Insn.make(O.REQ, d=E(0), a=E(0), imm=3, sh=1), gap + 1: Insn.make(O.ADD, d=E(1), a=E(0), b=E(1))}
    flags, rec = run_flags(cfg, issues, taps, 20)
    assert not any(flags)
    assert [r[0] for r in rec[clash:clash + 2]] == [1, 1]
    # MUL then LUT in the fpga/tiny configs with different latencies
    if L["vxm_mul"] != L["vxm_lut"]:
        lo, hi = sorted([(L["vxm_mul"], O.MUL), (L["vxm_lut"], O.LUT)], key=lambda x: x[0])
        issues = {0: Insn.make(hi[1], d=E(0), a=E(0), b=E(1)), hi[0] - lo[0]: Insn.make(lo[1], d=E(0), a=E(2))}
        flags, _ = run_flags(cfg, issues, taps, 20)
        assert flags[hi[0] - 1] == {"port"}


def test_busy_flag():
    cfg = config("tiny")
    taps = [Tap(cfg, np.random.default_rng(c)) for c in range(16)]
    issues = {0: Insn.make(O.ADD, d=E(0), a=E(0), b=E(1), count=3), 2: Insn.make(O.MOV, d=E(1), a=E(0)),
              3: Insn.make(O.MOV, d=E(1), a=E(0))}
    flags, rec = run_flags(cfg, issues, taps, 16)
    assert flags[2] == {"busy"}
    assert all(not f for c, f in enumerate(flags) if c != 2)
    # the ADD's three results at cycles 1..3, then the second MOV's at 4
    assert [r[0] for r in rec[:7]] == [0, 1, 1, 1, 1, 0, 0]
    assert [r[6] for r in rec[:7]] == [1, 1, 1, 1, 1, 0, 0]


def test_empty_flags():
    cfg = config("tiny")

    def tap_missing(*slots):
        t = Tap(cfg, np.random.default_rng(len(slots)))
        for w, i in slots:
            t.valid[w, i] = False
        return t

    cases = [
        (Insn.make(O.ADD, d=E(0), a=E(3), b=W(1)), [(0, 3)], True),
        (Insn.make(O.ADD, d=E(0), a=E(3), b=W(1)), [(1, 1)], True),
        (Insn.make(O.ADD, d=E(0), a=E(3), b=W(1), use_imm=1, imm=4), [(1, 1)], False),
        (Insn.make(O.MOV, d=E(0), a=E(3), b=W(1)), [(1, 1)], False),
        (Insn.make(O.SEL, d=E(0), a=E(3), b=W(1), c=W(6)), [(1, 6)], True),
        (Insn.make(O.SEL, d=E(0), a=E(3), b=W(1), c=W(6), use_imm=1), [(1, 1)], True),
        (Insn.make(O.REQ, d=E(0), a=W(2), imm=1), [(1, 5)], True),
        (Insn.make(O.REQ, d=E(0), a=W(2), imm=1), [(1, 6)], False),
        (Insn.make(O.ADD32, d=E(0), a=W(2), b=E(4)), [(0, 7)], True),
        (Insn.make(O.LDM, a=E(0), count=1), [(0, 0)], True),
        (Insn.make(O.LDM, a=E(0), count=1), [(0, 1)], False),
        (Insn.make(O.LDLUT, a=E(5), imm=0), [(0, 5)], True),
        (Insn.make(O.LUT, d=E(1), a=E(5)), [(0, 4)], False),
    ]
    issues, taps, expect = {}, [], []
    for n, (insn, missing, err) in enumerate(cases):
        issues[5 * n] = insn               # 5 apart: no two results on one cycle
        taps += [tap_missing(*missing)] + [Tap(cfg) for _ in range(4)]
        expect += [err] + [False] * 4
        ref = SliceStepper(cfg, "vxm0")
        try:
            ref.step(0, insn, taps[-5])
            golden_err = False
        except ProgramError as e:
            golden_err = "holds no data" in str(e)
        assert golden_err == err, insn
    taps += [Tap(cfg) for _ in range(8)]
    flags, _ = run_flags(cfg, issues, taps, len(taps))
    got = ["empty" in f for f in flags]
    assert got[:len(expect)] == expect
    assert not any(f - {"empty"} for f in flags)


def test_ldlut_row_out_of_range():
    cfg = config("tiny")
    rows = 256 // cfg.lanes
    taps = [Tap(cfg, np.random.default_rng(c)) for c in range(8)]
    issues = {0: Insn.make(O.LDLUT, a=E(0), imm=rows - 1, count=2)}
    flags, _ = run_flags(cfg, issues, taps, 8)
    assert [("addr" in f) for f in flags[:3]] == [False, True, False]


# ---------------------------------------------------------------------------------------------
# Elaboration
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg_name", [pytest.param("tiny", marks=SLOW), "fpga"])
def test_verilog(cfg_name):
    """(The fast tier converts the whole tiny chip, VXM included, for its RTL tests.)"""
    cfg = config(cfg_name)
    text = verilog.convert(VxmSlice(cfg, cfg.slice("vxm0")), name=f"vxm_{cfg_name}")
    assert "module vxm_" in text


def test_latency_below_minimum_rejected():
    cfg = dataclasses.replace(config("tiny"), latency={**config("tiny").latency, "vxm_req": 1})
    with pytest.raises(ValueError, match="vxm_req"):
        vxm(cfg)
