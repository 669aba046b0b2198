"""SxmSlice against the golden model, cycle by cycle, in Amaranth's simulator.

As in test_rtl_vxm.py, the reference is the golden model itself: a ``Golden`` instance whose stream
registers at the SXM's position hold the tap of each cycle; its ``_dispatch``/``_element`` run the
instructions (TRANS included) and the stream writes it schedules for cycle D are what the RTL must
drive during D-1.
"""

import dataclasses

import numpy as np
import pytest
from amaranth.back import verilog

from tests.harness import run_unit_rtl, shared_dut, tap_ints, vec_int
from tests.hdl.test_taps import cut_config, tapped, unit_config
from tinylpu.config import load_config
from tinylpu.hdl.sxm import SxmSlice
from tinylpu.hdl.taps import Tapped
from tinylpu.isa import Insn, Opcode, StreamRef
from tinylpu.sim.golden.chip import ProgramError
from tinylpu.sim.golden.stepper import SliceStepper

O = Opcode

E = lambda i: StreamRef(i, False)
W = lambda i: StreamRef(i, True)


def config(name):
    if name in ("min", "deep"):
        cfg = load_config("tiny")
        return dataclasses.replace(cfg, name=name, latency={**cfg.latency, "sxm": 2 if name == "min" else 5})
    if name == "lanes8":
        cfg = load_config("tiny")
        return dataclasses.replace(cfg, name=name, lanes=8, latency={**cfg.latency, "sxm": 3})
    if name == "cut":               # configs/fpga.yaml: 4 streams, tap registers (hdl/taps.py)
        return cut_config()
    if name.endswith("-tap"):       # tap registers, every result latency one longer
        return tapped(name[:-4])
    return unit_config(name)


# ---------------------------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------------------------

SPECIAL8 = [-128, 127, 0, -1, 1]


class Tap:
    def __init__(self, cfg, rng=None):
        S, lanes = cfg.streams, cfg.lanes
        self.data = np.zeros((2, S, lanes), np.int8)
        self.valid = np.ones((2, S), bool)
        if rng is not None:
            self.data = rng.integers(-128, 128, size=(2, S, lanes)).astype(np.int8)
            mask = rng.random((2, S, lanes)) < 0.2
            self.data[mask] = rng.choice(SPECIAL8, size=int(mask.sum()))

    def ints(self, cfg):
        return tap_ints(cfg, self)


def sxm(cfg, early=False):
    """The SXM under test, one per config and ``early`` in a test process (its simulator is reused)."""
    def build():
        cls = SxmSlice
        if cfg.tap_registers:       # the unit behind tap registers: err/busy one cycle late (harness)
            dut = Tapped(cls, cfg, cfg.slice("sxm0"))
        else:
            dut = cls(cfg, cfg.slice("sxm0"))
        dut.early = early             # the chip's registered issue: pre_insn one cycle ahead
        return dut
    return shared_dut(("sxm", repr(cfg), early), build)


def run_rtl(dut, cfg, cycles, issues, taps):
    return run_unit_rtl(dut, cfg, cycles, issues, taps, wide_unit=False)


def out_vec(rec, c, lanes):
    return np.frombuffer((rec[c][4] & ((1 << 8 * lanes) - 1)).to_bytes(lanes, "little"), np.int8)


def check_against_golden(cfg, issues, taps, cycles, early=False):
    ref = SliceStepper(cfg, "sxm0")
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
    rec = run_rtl(sxm(cfg, early), cfg, cycles, issues, taps)
    lanes = cfg.lanes
    for c, (got, exp) in enumerate(zip(rec, expect)):
        valid, west, index, wide, data, err, bsy = got
        ctx = f"cycle {c} (config {cfg.name}, issues {[(k, str(v)) for k, v in issues.items() if k <= c]})"
        assert not any(err.values()), f"{ctx}: unexpected error {err}"
        assert bsy == busy[c], f"{ctx}: busy {bsy}, expected {busy[c]}"
        if exp is None:
            assert not valid, f"{ctx}: unexpected result driven"
            continue
        d, idx, (v,) = exp
        assert valid, f"{ctx}: expected a result"
        assert (west, index, wide) == (d, idx, 0), ctx
        assert (data & ((1 << 8 * lanes) - 1)) == vec_int(v), f"{ctx}: got {out_vec(rec, c, lanes)}, expected {v}"
    return rec


# ---------------------------------------------------------------------------------------------
# Random schedules
# ---------------------------------------------------------------------------------------------

ALL_OPS = [O.SHIFT, O.ROT, O.PERM, O.DIST, O.TRANS, O.LDPERM]


def random_insn(rng, cfg, op):
    S, lanes = cfg.streams, cfg.lanes
    sref = lambda: StreamRef(int(rng.integers(0, S)), bool(rng.integers(0, 2)))
    f = {"d": sref(), "a": sref()}
    if op in (O.SHIFT, O.ROT, O.PERM, O.DIST):
        f["count"] = int(rng.choice([1, 1, 2, 3, 6]))
    if op == O.SHIFT:
        f["imm"] = int(rng.choice([0, 1, -1, lanes, -lanes, lanes - 1, 1 - lanes, int(rng.integers(-lanes, lanes + 1))]))
    if op == O.ROT:
        f["imm"] = int(rng.choice([0, 1, -1, lanes, -lanes, 127, -128, int(rng.integers(-128, 128))]))
    if op == O.DIST:
        f["imm"] = int(rng.choice([0, lanes - 1, int(rng.integers(0, lanes))]))
    return Insn.make(op, **f)


def random_schedule(cfg, seed, n_insns, max_gap=2):
    rng = np.random.default_rng(seed)
    seq = ALL_OPS + [ALL_OPS[int(i)] for i in rng.integers(0, len(ALL_OPS), max(0, n_insns - len(ALL_OPS)))]
    seq = [seq[int(i)] for i in rng.permutation(len(seq))]
    issues, t = {}, 0
    for op in seq:
        insn = random_insn(rng, cfg, op)
        t += int(rng.integers(0, max_gap + 1)) if rng.random() < 0.4 else 0
        issues[t] = insn
        t += 2 * cfg.lanes if op == O.TRANS else insn.count
    cycles = t + cfg.latency["sxm"] + 2
    return issues, [Tap(cfg, rng) for _ in range(cycles)], cycles


@pytest.mark.parametrize("cfg_name,seed", [("tiny", 1), ("tiny", 2), ("fpga", 3), ("min", 4), ("deep", 5),
                                           ("lanes8", 6), ("cut", 2),
                                           pytest.param("tiny-tap", 7, marks=pytest.mark.slow)])
def test_random_against_golden(cfg_name, seed):
    """Seeds 2, 3 and 6 run the unit with predecoded issue (``early``, as on a chip with
    registered issue)."""
    cfg = config(cfg_name)
    issues, taps, cycles = random_schedule(cfg, seed, 80)
    check_against_golden(cfg, issues, taps, cycles, early=seed in (2, 3, 6))


# ---------------------------------------------------------------------------------------------
# Directed
# ---------------------------------------------------------------------------------------------

def tap_with(cfg, contents):
    t = Tap(cfg)
    for (w, i), v in contents.items():
        t.data[w, i] = np.asarray(v, np.int64).astype(np.int8)
    return t


@pytest.mark.parametrize("cfg_name", ["tiny", "fpga", "deep", "fpga-tap"])
def test_trans(cfg_name):
    """Two TRANS back to back (the second at the earliest cycle), then a SHIFT right after."""
    cfg = config(cfg_name)
    lanes, L = cfg.lanes, cfg.latency["sxm"]
    X = (np.arange(lanes)[:, None] * lanes + np.arange(lanes)[None, :]) % 251 - 125   # x_i[j]
    Y = -X
    issues = {0: Insn.make(O.TRANS, d=W(2), a=E(1)), 2 * lanes: Insn.make(O.TRANS, d=E(7), a=W(0)),
              4 * lanes: Insn.make(O.SHIFT, d=E(0), a=E(1), imm=3)}
    taps = [tap_with(cfg, {(0, 1): X[i]}) for i in range(lanes)] + [Tap(cfg) for _ in range(lanes)]
    taps += [tap_with(cfg, {(1, 0): Y[i]}) for i in range(lanes)] + [Tap(cfg) for _ in range(lanes)]
    taps += [tap_with(cfg, {(0, 1): X[0]})]
    cycles = 4 * lanes + L + 4
    taps += [Tap(cfg) for _ in range(cycles - len(taps))]
    rec = check_against_golden(cfg, issues, taps, cycles)
    for j in range(lanes):
        c = lanes - 1 + L - 1 + j          # row j driven at (last input) + L - 1 + j
        assert rec[c][:4] == (1, 1, 2, 0)
        assert list(out_vec(rec, c, lanes)) == list(X[:, j].astype(np.int8))
        c2 = c + 2 * lanes
        assert rec[c2][:4] == (1, 0, 7, 0)
        assert list(out_vec(rec, c2, lanes)) == list(Y[:, j].astype(np.int8))
    # busy for 2 x lanes cycles from issue (and until the last row is driven)
    assert all(r[6] for r in rec[:4 * lanes + L - 1])


@pytest.mark.parametrize("cfg_name", ["tiny", "lanes8"])
def test_perm(cfg_name):
    cfg = config(cfg_name)
    lanes = cfg.lanes
    rng = np.random.default_rng(5)
    src = np.arange(lanes) * 7 + 3
    p1 = rng.integers(0, 256, lanes)                       # reduced mod lanes by LDPERM
    p2 = (lanes - 1 - np.arange(lanes)) + lanes * rng.integers(0, 256 // lanes, lanes)
    x = tap_with(cfg, {(0, 2): src, (1, 5): p1, (0, 0): p2})
    issues = {0: Insn.make(O.PERM, d=E(3), a=E(2)),                 # identity map before any LDPERM
              1: Insn.make(O.LDPERM, a=W(5)),
              2: Insn.make(O.PERM, d=E(3), a=E(2)),                 # sees the map loaded in cycle 1
              3: Insn.make(O.LDPERM, a=E(0)),
              4: Insn.make(O.PERM, d=W(4), a=E(2), count=2),
              6: Insn.make(O.LDPERM, a=W(5)),
              7: Insn.make(O.DIST, d=E(1), a=E(2), imm=lanes - 1),
              8: Insn.make(O.ROT, d=E(1), a=E(2), imm=-3),
              9: Insn.make(O.SHIFT, d=E(1), a=E(2), imm=-2),
              10: Insn.make(O.PERM, d=E(1), a=E(2))}
    cycles = 16
    rec = check_against_golden(cfg, issues, [x] * cycles, cycles)
    L = cfg.latency["sxm"]
    s8 = src.astype(np.int8)
    assert list(out_vec(rec, L - 1, lanes)) == list(s8)
    assert list(out_vec(rec, 2 + L - 1, lanes)) == list(s8[p1 % lanes])
    assert list(out_vec(rec, 4 + L - 1, lanes)) == list(s8[p2 % lanes])
    assert list(out_vec(rec, 7 + L - 1, lanes)) == [s8[-1]] * lanes
    assert list(out_vec(rec, 9 + L - 1, lanes)) == list(s8[2:]) + [0, 0]


def test_busy_and_empty_flags():
    cfg = config("tiny")
    lanes = cfg.lanes
    rng = np.random.default_rng(9)
    taps = [Tap(cfg, rng) for _ in range(3 * lanes + 8)]
    issues = {0: Insn.make(O.TRANS, d=W(2), a=E(1)),
              2 * lanes - 1: Insn.make(O.SHIFT, d=E(0), a=E(1), imm=1),     # one cycle too early
              2 * lanes: Insn.make(O.ROT, d=E(0), a=E(1), imm=1, count=2),
              2 * lanes + 1: Insn.make(O.DIST, d=E(0), a=E(1), imm=1)}      # ROT still running
    taps[3].valid[0, 1] = False           # a TRANS input row is missing
    taps[lanes + 2].valid[0, 1] = False   # not an input row of the TRANS: no error
    taps[2 * lanes + 1].valid[0, 1] = False
    rec = run_rtl(sxm(cfg), cfg, len(taps), issues, taps)
    flags = [{n for n, v in r[5].items() if v} for r in rec]
    expect = {3: {"empty"}, 2 * lanes - 1: {"busy"}, 2 * lanes + 1: {"busy", "empty"}}
    for c, f in enumerate(flags):
        assert f == expect.get(c, set()), (c, f)
    # the golden model agrees on each of them
    clean = [Tap(cfg) for _ in taps]
    for c0, bad, tl in [(2 * lanes - 1, "busy", clean), (3, "holds no data", taps)]:
        ref = SliceStepper(cfg, "sxm0")
        with pytest.raises(ProgramError, match=bad):
            for c in range(c0 + 1):
                ref.step(c, issues.get(c), tl[c])


def test_ldperm_empty():
    cfg = config("tiny")
    t = Tap(cfg)
    t.valid[1, 6] = False
    rec = run_rtl(sxm(cfg), cfg, 4, {0: Insn.make(O.LDPERM, a=W(6))}, [t] + [Tap(cfg)] * 3)
    assert [r[5]["empty"] for r in rec] == [1, 0, 0, 0]
    assert not any(r[0] for r in rec)


@pytest.mark.parametrize("cfg_name", ["tiny", "fpga"])
def test_verilog(cfg_name):
    cfg = config(cfg_name)
    text = verilog.convert(SxmSlice(cfg, cfg.slice("sxm0")), name=f"sxm_{cfg_name}")
    assert "module sxm_" in text


def test_latency_below_minimum_rejected():
    cfg = dataclasses.replace(config("tiny"), latency={**config("tiny").latency, "sxm": 1})
    with pytest.raises(ValueError, match="sxm"):
        SxmSlice(cfg, cfg.slice("sxm0"))
