"""MxmSlice (hdl/mxm.py) against the golden model, cycle by cycle, in Amaranth's simulator.

As in test_rtl_mem.py, the reference is sim/golden/chip.py's own element code (``GoldenSlice`` drives
``Golden._dispatch`` / ``Golden._element`` with the taps the test feeds the RTL): EMIT results,
``busy``, the cycle and kind of each program error, and finally the weight buffers and the whole
accumulator must match.
"""


import numpy as np
import pytest
from amaranth.back import verilog

from tests.harness import check_landing, drive_issue, issue_words, lead_in, shared_dut, simulate, variant
from tests.hdl.test_taps import cut_config, tapped, unit_config
from tinylpu.arith import int32_to_planes, planes_to_int32
from tinylpu.config import load_config
from tinylpu.hdl.mxm import MxmSlice, tree_cuts
from tinylpu.hdl.taps import Tapped
from tinylpu.isa import Insn, Opcode, StreamRef, element_count, encode
from tinylpu.sim.golden.chip import ProgramError
from tinylpu.sim.golden.stepper import SliceStepper

ERROR_KINDS = {"holds no data": "empty", "is busy until": "busy", "out of range": "addr",
               "accumulator hazard": "hazard"}


CONFIGS = {
    "tiny": lambda: load_config("tiny"),             # install 1, mm 5, emit 2
    "fpga": lambda: unit_config("fpga"),             # install 1, mm 7 (fully pipelined tree), emit 3
    "min": lambda: variant("tiny", mxm_install=1, mxm_mm=3, mxm_emit=2),
    "padded": lambda: variant("tiny", mxm_install=3, mxm_mm=9, mxm_emit=4),
    "mm4": lambda: variant("tiny", mxm_install=2, mxm_mm=4),
    "lanes8": lambda: variant("tiny", lanes=8, mxm_mm=6),              # 8 lanes, fully pipelined tree
    # several weight rows installed per cycle (mxm.install_rows R): LW element k takes rows k*R + j
    # from streams s+j
    "rows2": lambda: variant("tiny", install_rows=2),
    "rows4": lambda: variant("tiny", install_rows=4, mxm_install=2, mxm_mm=4),
    "rows8": lambda: variant("tiny", install_rows=8),                  # R = streams: every stream
    "rows8_lanes8": lambda: variant("tiny", lanes=8, install_rows=8, mxm_install=2, mxm_mm=6),  # all rows at once
    "cut": cut_config,                  # configs/fpga.yaml: tap registers (hdl/taps.py)
    "tiny-tap": lambda: tapped("tiny"),
}
ROWS_CONFIGS = ["rows2", "rows4", "rows8", "rows8_lanes8"]


GoldenSlice = SliceStepper


def vec_int(v):
    return int.from_bytes(np.asarray(v, np.int8).tobytes(), "little")


def int_vec(x, lanes):
    return np.frombuffer(int(x).to_bytes(lanes, "little"), np.int8).copy()


def acc_int(v):
    return int.from_bytes(np.asarray(v, np.int32).astype("<i4").tobytes(), "little")


def int_acc(x, lanes):
    return np.frombuffer(int(x).to_bytes(4 * lanes, "little"), "<i4").astype(np.int32)


def random_taps(rng, cfg, n, edge_p=0.15):
    taps = []
    edge = np.array([-128, 127, -127, 0, -1, 1], np.int8)
    for _ in range(n):
        d = rng.integers(-128, 128, (2, cfg.streams, cfg.lanes)).astype(np.int8)
        mask = rng.random(d.shape) < edge_p
        d[mask] = rng.choice(edge, mask.sum())
        v = np.ones((2, cfg.streams), bool)
        taps.append([d[0], v[0], d[1], v[1]])
    return taps


def set_stream(tap, sref, vec):
    d = 2 if sref.west else 0
    tap[d][sref.index] = np.asarray(vec).astype(np.int8)


def _mxm(cfg, sl, early):
    # with tap registers (hdl/taps.py) the unit is wrapped: err/busy come one cycle late
    dut = Tapped(MxmSlice, cfg, sl) if cfg.tap_registers else MxmSlice(cfg, sl)
    dut.early = early             # the chip's registered issue: pre_insn one cycle ahead
    return dut


def run(cfg, schedule, taps, *, preload=None, expect_error=None, after=None, early=False):
    """Simulate MxmSlice and the golden model side by side for len(taps) cycles (see test_rtl_mem)."""
    sl = cfg.slices_of("mxm")[0]
    dut = shared_dut(("mxm", repr(cfg), early), lambda: _mxm(cfg, sl, early))
    gs = GoldenSlice(cfg, sl.name)
    gacc, gw = gs.g.acc[sl.name], gs.g.weights[sl.name]
    preload = preload or {}
    for a, v in preload.items():
        gacc[a] = v
    rng = np.random.default_rng(11)
    result = {"emits": 0}
    S = cfg.streams

    words = issue_words(len(taps), schedule, encode, lambda c: int(rng.integers(0, 1 << 63)))

    inner = getattr(dut, "unit", dut)           # (the unit inside tap registers)
    delay = getattr(dut, "FLAG_DELAY", 0)       # err/busy of cycle c come in c + delay
    exp_busy = {}

    async def bench(ctx):
        for a, v in preload.items():
            ctx.set(inner.acc.data[a], acc_int(v))
        await lead_in(ctx, dut, words)
        err_at = None
        for c, tap in enumerate(taps):
            insn = schedule.get(c)
            drive_issue(ctx, dut, words, c)
            ctx.set(dut.tap.east.as_value(), vec_int(tap[0]))
            ctx.set(dut.tap.east_valid, int(np.dot(tap[1], 1 << np.arange(S))))
            ctx.set(dut.tap.west.as_value(), vec_int(tap[2]))
            ctx.set(dut.tap.west_valid, int(np.dot(tap[3], 1 << np.arange(S))))
            err = {k: ctx.get(getattr(dut.err, k)) for k in ("empty", "busy", "addr", "hazard")}
            if err_at is not None and c == err_at + 1 + delay:
                assert err == {k: int(k == expect_error) for k in err}, (c, err)
                if after:
                    await after(ctx, dut, err_at)
                result["checked"] = True
                return
            assert not any(err.values()), (c, err)
            if err_at is not None:
                await ctx.tick()
                continue
            try:
                out, busy = gs.cycle(c, insn, tap)
            except ProgramError as e:
                kind = next(v for k, v in ERROR_KINDS.items() if k in e.message)
                assert kind == expect_error, e
                err_at = c
                await ctx.tick()
                continue
            exp_busy[c] = busy
            if c - delay in exp_busy:
                assert ctx.get(dut.busy) == exp_busy[c - delay], (c - delay, exp_busy[c - delay])
            check_landing(ctx, dut.out, cfg, wide_unit=True)
            if out:
                assert len(out) == 4
                d, s, _ = out[0]
                assert [(o[0], o[1]) for o in out] == [(d, s + b) for b in range(4)]
                assert ctx.get(dut.out.valid) == 1, c
                assert ctx.get(dut.out.wide) == 1
                assert (ctx.get(dut.out.west), ctx.get(dut.out.index)) == (d, s), c
                planes = [int_vec(ctx.get(dut.out.data[b]), cfg.lanes) for b in range(4)]
                for b in range(4):
                    assert np.array_equal(planes[b], out[b][2]), (c, b)
                result["emits"] += 1
            else:
                assert ctx.get(dut.out.valid) == 0, c
            await ctx.tick()
        assert expect_error is None, "the golden model raised no error"
        assert not ctx.get(dut.busy)
        for b in range(2):
            for i in range(cfg.lanes):
                assert np.array_equal(int_vec(ctx.get(inner.weights[b][i]), cfg.lanes), gw[b][i]), (b, i)
        for a in range(cfg.acc_depth):
            assert np.array_equal(int_acc(ctx.get(inner.acc.data[a]), cfg.lanes), gacc[a]), a
        result["checked"] = True

    simulate(dut, bench)
    assert result.get("checked")
    return gs.g, result


def random_program(rng, cfg, n_insns, region=6):
    """Random LW/MM/EMIT mix: sub-units never double-booked, no accumulator hazards."""
    lm, lanes, S, R = cfg.latency["mxm_mm"], cfg.lanes, cfg.streams, cfg.install_rows
    writes, reads, schedule = [], [], {}
    free = {"lw": 0, "mm": 0, "em": 0}
    t = 0

    def clash(w, r):   # a read in cycle r[0] of an entry an earlier MM element writes after r[0]
        return w[1] == r[1] and w[0] < r[0] < w[0] + lm

    for _ in range(n_insns):
        op = rng.choice([Opcode.LW, Opcode.MM, Opcode.MM, Opcode.EMIT])
        sub = {Opcode.LW: "lw", Opcode.MM: "mm", Opcode.EMIT: "em"}[op]
        top = {Opcode.EMIT: 3, Opcode.LW: R - 1}.get(op, 0)
        s = StreamRef(int(rng.integers(0, S - top)), bool(rng.integers(0, 2)))
        if op == Opcode.LW:
            n = int(rng.choice([1, 3, lanes] if R == 1 else [1, R - 1, R, R + 1, 2 * R + 1, lanes]))
            n = min(n, lanes)
            insn = Insn.make(op, s=s, buf=int(rng.integers(0, 2)), addr=int(rng.integers(0, lanes - n + 1)), count=n)
        else:
            n = int(rng.integers(1, 5))
            addr = int(rng.integers(0, region - n + 1))
            if op == Opcode.MM:
                insn = Insn.make(op, s=s, buf=int(rng.integers(0, 2)), addr=addr, count=n, acc=int(rng.integers(0, 2)))
            else:
                insn = Insn.make(op, s=s, addr=addr, count=n)
        t0 = max(t, free[sub]) + int(rng.choice([0, 0, 1, 3]))
        while True:
            new_w = [(t0 + k, insn.addr + k) for k in range(n)] if op == Opcode.MM else []
            new_r = ([(t0 + k, insn.addr + k) for k in range(n)]
                     if op == Opcode.EMIT or (op == Opcode.MM and insn.acc) else [])
            if not (any(clash(w, r) for w in writes for r in new_r)
                    or any(clash(w, r) for w in new_w for r in reads)):
                break
            t0 += 1
        schedule[t0] = insn
        writes += new_w
        reads += new_r
        free[sub] = t0 + element_count(op, n, R)
        t = t0 + 1
    return schedule, max(free.values()) + lm + cfg.latency["mxm_emit"] + cfg.latency["mxm_install"] + 2


@pytest.mark.parametrize("cfgname", list(CONFIGS))
@pytest.mark.parametrize("seed", [1, 2])
def test_random_program(cfgname, seed):
    """Seed 2 runs the unit with predecoded issue (``early``, as on a chip with registered issue)."""
    cfg = CONFIGS[cfgname]()
    rng = np.random.default_rng([seed, list(CONFIGS).index(cfgname)])
    schedule, n = random_program(rng, cfg, 40)
    taps = random_taps(rng, cfg, n)
    _, res = run(cfg, schedule, taps, early=seed == 2)
    assert res["emits"] > 5


def test_tree_cuts():
    assert tree_cuts(16, 3) == (set(), 0)
    assert tree_cuts(16, 5) == ({2, 4}, 0)
    assert tree_cuts(16, 7) == ({1, 2, 3, 4}, 0)
    assert tree_cuts(16, 9) == ({1, 2, 3, 4}, 2)


@pytest.mark.parametrize("cfgname", ["tiny", "padded"])
def test_install_boundary_and_double_buffer(cfgname):
    """Install buf1 while multiplying with buf0; MM elements sampled at t+L-1 / t+L of a row's LW."""
    cfg = CONFIGS[cfgname]()
    lanes, li, lm = cfg.lanes, cfg.latency["mxm_install"], cfg.latency["mxm_mm"]
    rng = np.random.default_rng(21)
    e0, w1, e4 = StreamRef(0, False), StreamRef(1, True), StreamRef(4, False)
    sched = {0: Insn.make(Opcode.LW, s=e0, buf=0, addr=0, count=lanes)}
    t = lanes
    sched[t] = Insn.make(Opcode.LW, s=e0, buf=1, addr=0, count=lanes)            # install buf1 ...
    sched[t + 1] = Insn.make(Opcode.MM, s=w1, buf=0, addr=0, count=lanes)        # ... while using buf0
    t2 = t + lanes + lm
    sched[t2] = Insn.make(Opcode.MM, s=w1, buf=1, addr=0, count=lanes, acc=1)    # both buffers, accumulate
    # single-row boundary: LW buf0 row 5 at tb; MM elements sampled in tb-1 .. tb+li, the last two
    # at tb+li-1 (still the old row) and tb+li (the new row)
    tb = t2 + lanes + 2
    sched[tb] = Insn.make(Opcode.LW, s=e0, buf=0, addr=5, count=1)
    sched[tb - 1] = Insn.make(Opcode.MM, s=w1, buf=0, addr=lanes, count=li + 2)
    te = max(tb + li + 1 + lm, t2 + lanes + lm)
    n_emit = lanes + li + 2
    sched[te] = Insn.make(Opcode.EMIT, s=e4, addr=0, count=n_emit)
    taps = random_taps(rng, cfg, te + n_emit + cfg.latency["mxm_emit"] + 2)
    x = np.zeros(lanes, np.int8)
    x[5] = 3
    for c in range(tb - 1, tb + li + 1):
        set_stream(taps[c], w1, x)
    g, res = run(cfg, sched, taps)
    assert res["emits"] == n_emit
    acc = g.acc["mxm0"]
    old_row, new_row = taps[5][0][0].astype(np.int32) * 3, taps[tb][0][0].astype(np.int32) * 3
    assert np.array_equal(acc[lanes + li], old_row) and np.array_equal(acc[lanes + li + 1], new_row)
    assert not np.array_equal(old_row, new_row)


@pytest.mark.parametrize("cfgname", ["tiny", "fpga"])
def test_int32_wraparound(cfgname):
    """Extreme products (-128 * -128 on every lane), accumulation across int32 overflow both ways."""
    cfg = CONFIGS[cfgname]()
    lanes, lm = cfg.lanes, cfg.latency["mxm_mm"]
    e0, e2 = StreamRef(0, False), StreamRef(2, False)
    sched = {0: Insn.make(Opcode.LW, s=e0, buf=0, addr=0, count=lanes)}
    t = lanes
    sched[t] = Insn.make(Opcode.MM, s=e0, buf=0, addr=0, count=4, acc=1)
    sched[t + lm] = Insn.make(Opcode.MM, s=e0, buf=0, addr=0, count=4, acc=1)  # again on the wrapped sums
    sched[t + 2 * lm] = Insn.make(Opcode.MM, s=e0, buf=0, addr=4, count=1, acc=0)
    sched[t + 3 * lm] = Insn.make(Opcode.EMIT, s=e2, addr=0, count=5)
    taps = random_taps(np.random.default_rng(1), cfg, t + 3 * lm + 5 + cfg.latency["mxm_emit"] + 2)
    for c in range(lanes):
        set_stream(taps[c], e0, np.full(lanes, -128))
    for k, c in enumerate(range(t, t + 2 * lm + 1)):
        set_stream(taps[c], e0, np.full(lanes, [-128, 127, -128, 127, -128][k % 5]))
    big = 2**31 - 1
    preload = {0: np.full(lanes, big - 1000), 1: np.full(lanes, -2**31 + 5),
               2: np.arange(lanes) * 1000 - 2**31, 3: np.full(lanes, big), 4: np.full(lanes, 77)}
    g, res = run(cfg, sched, taps, preload=preload)
    acc = g.acc["mxm0"]
    assert (acc[0] < 0).all()        # it wrapped
    y = planes_to_int32(int32_to_planes(acc[0]))
    assert np.array_equal(y, acc[0])


@pytest.mark.parametrize("cfgname", ["tiny", "min"])
def test_hazard_boundary(cfgname):
    cfg = CONFIGS[cfgname]()
    lm = cfg.latency["mxm_mm"]
    rng = np.random.default_rng(3)
    e0, e4 = StreamRef(0, False), StreamRef(4, True)
    n = 3 * lm + 12
    # clean: EMIT of addr 4 exactly L_mm after the MM element that wrote it, MM acc=1 likewise;
    # an EMIT in the same cycle as an MM element on the same entry reads the old value
    ok = {0: Insn.make(Opcode.MM, s=e0, addr=3, count=2),
          lm + 1: Insn.make(Opcode.EMIT, s=e4, addr=4, count=1),
          lm + 2: Insn.make(Opcode.MM, s=e0, addr=4, count=1, acc=1),
          2 * lm + 2: Insn.make(Opcode.EMIT, s=e4, addr=3, count=3),
          2 * lm + 3: Insn.make(Opcode.MM, s=e0, addr=4, count=1, acc=1)}
    run(cfg, ok, random_taps(rng, cfg, n))
    # one cycle earlier: hazards
    run(cfg, {0: Insn.make(Opcode.MM, s=e0, addr=3, count=2), lm: Insn.make(Opcode.EMIT, s=e4, addr=4)},
        random_taps(rng, cfg, n), expect_error="hazard")
    run(cfg, {0: Insn.make(Opcode.MM, s=e0, addr=3, count=2),
              lm: Insn.make(Opcode.MM, s=e0, addr=4, count=1, acc=1)},
        random_taps(rng, cfg, n), expect_error="hazard")


@pytest.mark.parametrize("kind", ["empty_lw", "empty_mm", "addr_lw", "addr_mm", "addr_emit", "busy_mm", "busy_emit"])
def test_error_pulses(kind):
    cfg = CONFIGS["tiny"]()
    lanes, depth = cfg.lanes, cfg.acc_depth
    rng = np.random.default_rng(8)
    taps = random_taps(rng, cfg, 24)
    e0, e4 = StreamRef(0, False), StreamRef(4, False)
    marker = np.full(lanes, 12345, np.int32)
    preload = {a: marker for a in (0, 1, depth - 1)}

    async def untouched(ctx, dut, c):
        # the bad element has no effect (the good ones before it do)
        for _ in range(8):
            await ctx.tick()
        if kind == "empty_lw":
            assert ctx.get(dut.weights[1][3]) != 0 and ctx.get(dut.weights[1][4]) == 0
        else:
            assert np.array_equal(int_acc(ctx.get(dut.acc.data[0]), lanes), marker)

    after = untouched
    if kind == "empty_lw":
        sched = {1: Insn.make(Opcode.LW, s=e0, buf=1, addr=3, count=2)}
        taps[2][1][0] = False
    elif kind == "empty_mm":
        sched = {1: Insn.make(Opcode.MM, s=e0, addr=0, count=1)}
        taps[1][1][0] = False
    elif kind == "addr_lw":
        sched = {1: Insn.make(Opcode.LW, s=e0, buf=0, addr=lanes - 1, count=2)}
        after = None
    elif kind == "addr_mm":
        sched = {1: Insn.make(Opcode.MM, s=e0, addr=depth - 1, count=2)}    # depth-1 ok, then depth
        after = None
    elif kind == "addr_emit":
        sched = {1: Insn.make(Opcode.EMIT, s=e4, addr=depth - 1, count=2)}
        after = None
    elif kind == "busy_mm":
        sched = {1: Insn.make(Opcode.MM, s=e0, addr=0, count=3), 2: Insn.make(Opcode.LW, s=e0, buf=0, addr=0),
                 3: Insn.make(Opcode.MM, s=e0, addr=8, count=1)}
        after = None
    else:
        sched = {1: Insn.make(Opcode.EMIT, s=e4, addr=10, count=3), 3: Insn.make(Opcode.EMIT, s=e4, addr=20)}
        after = None
    expect = kind.split("_")[0]
    run(cfg, sched, taps, preload=preload, expect_error=expect, after=after)


@pytest.mark.parametrize("cfgname", ["tiny", "fpga"])
def test_verilog(cfgname):
    cfg = load_config(cfgname)
    text = verilog.convert(MxmSlice(cfg, cfg.slices_of("mxm")[0]))
    assert "module" in text


# --- several weight rows per cycle (install_rows R > 1) ------------------------------------------

def streams_at(tap, s, R):
    """The R vectors an LW element samples from `tap` (streams s..s+R-1)."""
    d = 2 if s.west else 0
    return [tap[d][s.index + j] for j in range(R)]


@pytest.mark.parametrize("cfgname", ROWS_CONFIGS)
def test_install_rows_edges(cfgname):
    """LW A installs every row of buf0 (from e0..); LW B, unaligned with a partial last element,
    from the last legal westward streams, fills buf1 back to back while MM reads buf0; LW C refills
    rows 1.. of buf0 while MM reads buf1; two MM elements sampled on either side of the install of
    C's last element.  The rows land where the ISA says (checked against the taps, not only against
    the golden model)."""
    cfg = CONFIGS[cfgname]()
    lanes, S, R = cfg.lanes, cfg.streams, cfg.install_rows
    li, lm = cfg.latency["mxm_install"], cfg.latency["mxm_mm"]
    rng = np.random.default_rng([31, R, lanes])
    e0, wl, x_s = StreamRef(0, False), StreamRef(S - R, True), StreamRef(S - 1, False)
    els = lambda n: element_count(Opcode.LW, n, R)     # noqa: E731
    n_b, n_c = min(2 * R + 1, lanes - 1), min(3 * R, lanes - 1)   # counts not multiples of R
    row_b = lanes - n_b                                # unaligned: row_b mod R != 0
    # (one issue per cycle: every instruction has its own cycle)
    t_b = els(lanes)                                   # back to back: the install sub-unit is free again
    t_c0 = t_b + els(n_b)                              # ... and again
    tm = max(els(lanes) - 1 + li, t_b + 1)             # every buf0 row is usable from els(lanes) - 1 + li
    c0 = max(1, min(4, t_c0 - tm))
    tm1 = max(tm + c0, t_c0 - 1)                       # MM of 2 elements on buf1 ...
    t_c = tm1 + 1                                      # ... while C starts
    kb = els(n_c) - 1
    tb = t_c + kb + li - 1                             # MM elements at tb (old rows) and tb + 1 (new)
    assert tb >= tm1 + 2
    te = tb + 2 + lm
    sched = {0: Insn.make(Opcode.LW, s=e0, buf=0, addr=0, count=lanes),
             t_b: Insn.make(Opcode.LW, s=wl, buf=1, addr=row_b, count=n_b),
             t_c: Insn.make(Opcode.LW, s=e0, buf=0, addr=1, count=n_c),
             tm: Insn.make(Opcode.MM, s=x_s, buf=0, addr=0, count=c0),
             tm1: Insn.make(Opcode.MM, s=x_s, buf=1, addr=4, count=2),
             tb: Insn.make(Opcode.MM, s=x_s, buf=0, addr=8, count=2),
             te: Insn.make(Opcode.EMIT, s=StreamRef(0, True), addr=0, count=10)}
    assert len(sched) == 7
    taps = random_taps(rng, cfg, te + 10 + cfg.latency["mxm_emit"] + 2)
    g, res = run(cfg, sched, taps)
    assert res["emits"] == 10

    def row(t, s, r):                                  # row r (from the LW's first) of an LW issued at t
        return streams_at(taps[t + r // R], s, R)[r % R]

    w = g.weights["mxm0"]
    for r in range(lanes):
        assert np.array_equal(w[0][r], row(t_c, e0, r - 1) if 1 <= r <= n_c else row(0, e0, r)), r
    for r in range(n_b):
        assert np.array_equal(w[1][row_b + r], row(t_b, wl, r)), r
    assert not w[1][:row_b].any()
    # C's last element's rows were not yet there for the MM element sampled in tb
    before = w[0].astype(np.int64).copy()
    for r in range(kb * R, n_c):
        before[1 + r] = row(0, e0, 1 + r)
    x = [taps[c][0][x_s.index].astype(np.int64) for c in (tb, tb + 1)]
    acc = g.acc["mxm0"]
    assert np.array_equal(acc[8], (x[0] @ before).astype(np.int32))
    assert np.array_equal(acc[9], (x[1] @ w[0].astype(np.int64)).astype(np.int32))
    assert not np.array_equal(acc[8], (x[0] @ w[0].astype(np.int64)).astype(np.int32))


@pytest.mark.parametrize("kind", ["oob_stream", "empty_row", "addr_row", "busy"])
@pytest.mark.parametrize("cfgname", ["rows4", "rows8"])
def test_install_rows_errors(cfgname, kind):
    """A stream past the last one (whatever n: ``addr``), an empty slot on one of the R streams of
    the second element (``empty``; the first element's rows are installed, none of the second's), a
    row past the last one in a partial element (``addr``), an LW issued while the previous one has
    elements left (``busy``, after ceil(n / R) cycles, not n)."""
    cfg = CONFIGS[cfgname]()
    lanes, S, R = cfg.lanes, cfg.streams, cfg.install_rows
    taps = random_taps(np.random.default_rng(5), cfg, 24)
    e1 = StreamRef(1 if R < S else 0, False)
    after = None
    if kind == "oob_stream":
        sched = {1: Insn.make(Opcode.LW, s=StreamRef(S - R + 1, True), buf=0, addr=0, count=1)}
        expect = "addr"
    elif kind == "empty_row":
        sched = {1: Insn.make(Opcode.LW, s=e1, buf=1, addr=0, count=2 * R)}
        taps[2][1][e1.index + R - 1] = False           # element 1, its last stream
        expect = "empty"

        async def after(ctx, dut, c):
            for _ in range(8):
                await ctx.tick()
            assert all(ctx.get(dut.weights[1][r]) != 0 for r in range(R))
            assert all(ctx.get(dut.weights[1][r]) == 0 for r in range(R, 2 * R))
    elif kind == "addr_row":
        # the second element's rows: lanes - 1 and lanes
        sched = {1: Insn.make(Opcode.LW, s=e1, buf=0, addr=lanes - R - 1, count=R + 2)}
        expect = "addr"
    else:
        n = min(2 * R + 1, lanes)
        e = element_count(Opcode.LW, n, R)             # 3 elements (2 for R = 8, 16 lanes)
        sched = {1: Insn.make(Opcode.LW, s=e1, buf=0, addr=0, count=n),
                 1 + e: Insn.make(Opcode.LW, s=e1, buf=1, addr=0, count=1),         # free again: fine
                 2 + e: Insn.make(Opcode.LW, s=e1, buf=1, addr=1, count=R + 1),     # busy for 2 cycles
                 3 + e: Insn.make(Opcode.LW, s=e1, buf=0, addr=0, count=1)}
        expect = "busy"
    run(cfg, sched, taps, expect_error=expect, after=after)
