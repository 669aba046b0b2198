"""MemSlice (hdl/mem.py) against the golden model, cycle by cycle, in Amaranth's simulator.

The reference is sim/golden/chip.py itself: ``GoldenSlice`` feeds the golden model's own element code
(``Golden._dispatch`` / ``Golden._element`` / its effect queue) with the stream taps the test drives
into the RTL, so outputs, bank contents, ``busy`` and the cycle of each program error come from
the golden model, not from a re-implementation.
"""


import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from tests.harness import check_landing, drive_issue, issue_words, lead_in, shared_dut, simulate, variant, vec_int
from tests.hdl.test_taps import cut_config, unit_config
from tinylpu.config import load_config
from tinylpu.hdl.mem import MemSlice
from tinylpu.hdl.taps import Tapped
from tinylpu.isa import Insn, Opcode, StreamRef, encode
from tinylpu.sim.golden.chip import ProgramError
from tinylpu.sim.golden.stepper import SliceStepper

ERROR_KINDS = {"holds no data": "empty", "is busy until": "busy", "out of range": "addr",
               "accumulator hazard": "hazard"}


CONFIGS = {
    "tiny": lambda: load_config("tiny"),
    "fpga": lambda: unit_config("fpga"),
    "padded": lambda: variant("tiny", mem_read=5, mem_write=4),
    "lanes4": lambda: variant("tiny", lanes=4, streams=4, mem_read=3),
    "cut": cut_config,                  # configs/fpga.yaml: tap registers (hdl/taps.py)
}


GoldenSlice = SliceStepper


def int_vec(x, lanes):
    return np.frombuffer(int(x).to_bytes(lanes, "little"), np.int8).copy()


def vecs_int(vs):
    return int.from_bytes(np.asarray(vs, np.int8).tobytes(), "little")


def random_taps(rng, cfg, n, valid_p=1.0):
    taps = []
    edge = np.array([-128, 127, 0, -1, 1], np.int8)
    for _ in range(n):
        d = rng.integers(-128, 128, (2, cfg.streams, cfg.lanes)).astype(np.int8)
        mask = rng.random(d.shape) < 0.1
        d[mask] = rng.choice(edge, mask.sum())
        v = rng.random((2, cfg.streams)) < valid_p
        taps.append([d[0], v[0], d[1], v[1]])
    return taps


def set_idx(tap, sref, idx):
    """Put the uint16 `idx` into lanes 0 (low) and 1 (high) of stream `sref` in a tap, mark it valid."""
    d = 2 if sref.west else 0
    tap[d][sref.index][0] = np.uint8(idx & 0xFF).view(np.int8)
    tap[d][sref.index][1] = np.uint8(idx >> 8).view(np.int8)
    tap[d + 1][sref.index] = True


def _mem(cfg, sl, early):
    # with tap registers (hdl/taps.py) the unit is wrapped: err/busy come one cycle late
    dut = Tapped(MemSlice, cfg, sl) if cfg.tap_registers else MemSlice(cfg, sl)
    dut.early = early             # the chip's registered issue: pre_insn one cycle ahead
    return dut


def run(cfg, schedule, taps, *, preload=None, expect_error=None, after=None, garbage=True, early=False):
    """Simulate MemSlice (position of mem0) and the golden model side by side for len(taps) cycles.

    schedule: {cycle: Insn}.  preload: {addr: vector}.  Without `expect_error` every cycle's out,
    busy and err, and finally the whole bank, must match.  With it, the golden model must raise
    that kind of error in some cycle c; the RTL must be clean before and pulse exactly that flag in
    c+1; `after(ctx, dut, c)` may check more.  Returns the golden model.
    """
    sl = cfg.slices_of("mem")[0]
    dut = shared_dut(("mem", repr(cfg), early), lambda: _mem(cfg, sl, early))
    gs = GoldenSlice(cfg, sl.name)
    gmem = gs.g.mem[sl.name]
    preload = preload or {}
    for a, v in preload.items():
        gmem[a] = v
    rng = np.random.default_rng(7)
    result = {}

    # without `garbage` the word stays the last one set (the tests of unchanged-insn behaviour)
    words = issue_words(len(taps), schedule, encode,
                        (lambda c: int(rng.integers(0, 1 << 63))) if garbage else None)

    inner = getattr(dut, "unit", dut)           # (the unit inside tap registers)
    delay = getattr(dut, "FLAG_DELAY", 0)       # err/busy of cycle c come in c + delay
    exp_busy = {}

    async def bench(ctx):
        for a, v in preload.items():
            ctx.set(inner.bank.data[a], vec_int(v))
        await lead_in(ctx, dut, words)
        err_at = None
        for c, tap in enumerate(taps):
            insn = schedule.get(c)
            drive_issue(ctx, dut, words, c)
            ctx.set(dut.tap.east.as_value(), vecs_int(tap[0]))
            ctx.set(dut.tap.east_valid, int(np.dot(tap[1], 1 << np.arange(cfg.streams))))
            ctx.set(dut.tap.west.as_value(), vecs_int(tap[2]))
            ctx.set(dut.tap.west_valid, int(np.dot(tap[3], 1 << np.arange(cfg.streams))))
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
            check_landing(ctx, dut.out, cfg, wide_unit=False)
            if out:
                (d, s, v), = out
                assert ctx.get(dut.out.valid) == 1, c
                assert ctx.get(dut.out.wide) == 0
                assert (ctx.get(dut.out.west), ctx.get(dut.out.index)) == (d, s), c
                got = int_vec(ctx.get(dut.out.data[0]), cfg.lanes)
                assert np.array_equal(got, v), (c, got, v)
            else:
                assert ctx.get(dut.out.valid) == 0, c
            await ctx.tick()
        assert expect_error is None, "the golden model raised no error"
        for a in range(cfg.mem_depth):
            got = int_vec(ctx.get(inner.bank.data[a]), cfg.lanes)
            assert np.array_equal(got, gmem[a]), (a, got, gmem[a])
        result["checked"] = True

    simulate(dut, bench)
    assert result.get("checked")
    return gs.g


def random_program(rng, cfg, n_insns, region=24):
    """Random READ/WRITE/GATHER/SCATTER mix on [0, region): sub-units never double-booked."""
    schedule, needs = {}, []
    free = {"rd": 0, "wr": 0}
    t = 0
    S = cfg.streams
    for _ in range(n_insns):
        op = rng.choice([Opcode.READ, Opcode.WRITE, Opcode.GATHER, Opcode.SCATTER])
        sub = "rd" if op in (Opcode.READ, Opcode.GATHER) else "wr"
        t = max(t, free[sub]) + int(rng.choice([0, 0, 0, 1, 2]))
        n = int(rng.integers(1, 6))
        s = StreamRef(int(rng.integers(0, S)), bool(rng.integers(0, 2)))
        if op in (Opcode.READ, Opcode.WRITE):
            stride = int(rng.choice([1, 1, -1, 2, -3, 0, 5]))
            lo = max(0, -(n - 1) * stride)
            hi = min(region, region - (n - 1) * stride)
            addr = int(rng.integers(lo, hi))
            insn = Insn.make(op, s=s, addr=addr, count=n, stride=stride)
        else:
            a = StreamRef(int(rng.integers(0, S)), bool(rng.integers(0, 2)))
            base = int(rng.integers(0, 6))
            insn = Insn.make(op, s=s, a=a, addr=base, count=n)
            needs += [(t + k, a, int(rng.integers(0, region - 6))) for k in range(n)]
        schedule[t] = insn
        free[sub] = t + n
        t += 1
    return schedule, needs, t + max(free.values()) + 8


def apply_needs(taps, needs):
    for c, a, idx in needs:
        set_idx(taps[c], a, idx)


@pytest.mark.parametrize("cfgname", list(CONFIGS))
@pytest.mark.parametrize("seed", [1, 2])
def test_random_program(cfgname, seed):
    """Seed 2 runs the unit with predecoded issue (``early``, as on a chip with registered issue)."""
    cfg = CONFIGS[cfgname]()
    rng = np.random.default_rng(seed)
    schedule, needs, n = random_program(rng, cfg, 24)
    taps = random_taps(rng, cfg, n)
    apply_needs(taps, needs)
    preload = {a: rng.integers(-128, 128, cfg.lanes) for a in range(32)}
    run(cfg, schedule, taps, preload=preload, early=seed == 2)


@pytest.mark.parametrize("cfgname", list(CONFIGS))
def test_read_after_write_boundary(cfgname):
    """A READ sampled mem_write cycles after the WRITE element sees the data; one cycle earlier not."""
    cfg = CONFIGS[cfgname]()
    lw = cfg.latency["mem_write"]
    rng = np.random.default_rng(3)
    e0, w3 = StreamRef(0, False), StreamRef(3, True)
    schedule = {
        0: Insn.make(Opcode.WRITE, s=e0, addr=10, count=1),
        lw - 1: Insn.make(Opcode.READ, s=w3, addr=10, count=2, stride=0),   # old, then new
        lw + 4: Insn.make(Opcode.WRITE, s=e0, addr=cfg.mem_depth - 1, count=2, stride=-1),
        lw + 5: Insn.make(Opcode.READ, s=e0, addr=cfg.mem_depth - 4, count=4, stride=1),
    }
    taps = random_taps(rng, cfg, 30)
    preload = {10: np.full(cfg.lanes, 5), cfg.mem_depth - 2: np.arange(cfg.lanes) - 128,
               cfg.mem_depth - 1: np.full(cfg.lanes, 127)}
    g = run(cfg, schedule, taps, preload=preload)
    assert np.array_equal(g.mem["mem0"][10], taps[0][0][0])


def test_same_cycle_read_write_and_gather_scatter():
    """Both ports every cycle; GATHER/SCATTER with indices using both index bytes (fpga: 2048 deep)."""
    cfg = CONFIGS["fpga"]()
    rng = np.random.default_rng(4)
    e1, e2, w0, w5 = StreamRef(1, False), StreamRef(2, False), StreamRef(0, True), StreamRef(5, True)
    schedule = {
        0: Insn.make(Opcode.SCATTER, s=e1, a=e2, addr=3, count=6),
        1: Insn.make(Opcode.GATHER, s=w0, a=w5, addr=1, count=8),
        9: Insn.make(Opcode.READ, s=w0, addr=300, count=3, stride=-128),
        10: Insn.make(Opcode.WRITE, s=e1, addr=2000, count=3, stride=20),
    }
    taps = random_taps(rng, cfg, 24)
    idx = [300, 1023, 0, 2044, 700, 1536]
    for k, i in enumerate(idx):
        set_idx(taps[k], e2, i)
    for k, i in enumerate([302, 1025, 2, 2046, 0, 700, 1535, 1024]):    # + base 1
        set_idx(taps[1 + k], w5, i)
    preload = {a: rng.integers(-128, 128, cfg.lanes) for a in (1, 3, 44, 172, 300, 701, 1024, 1025, 1026, 1536)}
    run(cfg, schedule, taps, preload=preload)


@pytest.mark.parametrize("kind", ["empty_write", "empty_gather", "addr_read", "addr_scatter", "busy"])
def test_error_pulses(kind):
    cfg = CONFIGS["tiny"]()
    rng = np.random.default_rng(5)
    taps = random_taps(rng, cfg, 16)
    e0, e1 = StreamRef(0, False), StreamRef(1, False)
    marker = np.full(cfg.lanes, 99, np.int8)
    preload = {a: marker for a in range(cfg.mem_depth - 4, cfg.mem_depth)}
    preload.update({a: marker for a in range(0, 8)})

    untouched = []

    async def no_effect(ctx, dut, c):
        # the bad element drives no result and writes nothing (later elements still run)
        for _ in range(4):
            assert ctx.get(dut.out.valid) == 0
            await ctx.tick()
        for a in untouched:
            assert np.array_equal(int_vec(ctx.get(dut.bank.data[a]), cfg.lanes), marker), a

    after = no_effect
    if kind == "empty_write":
        sched = {2: Insn.make(Opcode.WRITE, s=e0, addr=4, count=3)}
        taps[3][1][0] = False
        untouched = [5]
        expect = "empty"
    elif kind == "empty_gather":
        sched = {2: Insn.make(Opcode.GATHER, s=e0, a=e1, addr=0, count=2)}
        set_idx(taps[2], e1, 1)
        taps[3][1][1] = False
        expect = "empty"
    elif kind == "addr_read":
        sched = {1: Insn.make(Opcode.READ, s=e0, addr=2, count=4, stride=-1)}    # 2, 1, 0, -1
        expect = "addr"
        after = None
    elif kind == "addr_scatter":
        sched = {2: Insn.make(Opcode.SCATTER, s=e0, a=e1, addr=cfg.mem_depth - 4, count=2)}
        set_idx(taps[2], e1, 3)
        set_idx(taps[3], e1, 4)                     # depth - 4 + 4 = depth: out of range
        untouched = [0]                             # no wrap-around to address 0
        expect = "addr"
    else:
        sched = {1: Insn.make(Opcode.READ, s=e0, addr=0, count=3), 3: Insn.make(Opcode.GATHER, s=e0, a=e1)}
        set_idx(taps[3], e1, 2)
        expect = "busy"
        after = None
    run(cfg, sched, taps, preload=preload, expect_error=expect, after=after)


def test_host_port():
    """host_we writes at the end of its cycle; host_re data appears the next cycle and is held;
    unit READ/WRITE and host access see each other's data."""
    cfg = CONFIGS["tiny"]()
    rng = np.random.default_rng(6)
    vals = {a: rng.integers(-128, 128, cfg.lanes).astype(np.int8) for a in (0, 7, cfg.mem_depth - 1)}
    wvec = rng.integers(-128, 128, cfg.lanes).astype(np.int8)
    dut = MemSlice(cfg, cfg.slices_of("mem")[0])

    async def host_read(ctx, a):
        ctx.set(dut.host_addr, a)
        ctx.set(dut.host_re, 1)
        await ctx.tick()
        ctx.set(dut.host_re, 0)
        ctx.set(dut.host_addr, 1)
        got = int_vec(ctx.get(dut.host_rdata), cfg.lanes)
        await ctx.tick()
        assert np.array_equal(int_vec(ctx.get(dut.host_rdata), cfg.lanes), got)    # held
        return got

    async def bench(ctx):
        for a, v in vals.items():
            ctx.set(dut.host_addr, a)
            ctx.set(dut.host_wdata, vec_int(v))
            ctx.set(dut.host_we, 1)
            await ctx.tick()
        ctx.set(dut.host_addr, cfg.mem_depth)          # out of range: ignored (not aliased to 0)
        await ctx.tick()
        ctx.set(dut.host_we, 0)
        assert not ctx.get(dut.busy)
        for a, v in vals.items():
            assert np.array_equal(await host_read(ctx, a), v)
        # a READ sees host-written data
        ctx.set(dut.issue, 1)
        ctx.set(dut.insn.as_value(), encode(Insn.make(Opcode.READ, s=StreamRef(2, True), addr=7)))
        await ctx.tick()
        ctx.set(dut.issue, 0)
        for _ in range(cfg.latency["mem_read"] - 2):
            await ctx.tick()
        assert ctx.get(dut.out.valid) and ctx.get(dut.out.west) and ctx.get(dut.out.index) == 2
        assert np.array_equal(int_vec(ctx.get(dut.out.data[0]), cfg.lanes), vals[7])
        # a WRITE's data is readable by the host once the unit is idle
        ctx.set(dut.issue, 1)
        ctx.set(dut.insn.as_value(), encode(Insn.make(Opcode.WRITE, s=StreamRef(4, False), addr=9)))
        ctx.set(dut.tap.east.as_value(), vec_int(wvec) << (4 * 8 * cfg.lanes))
        ctx.set(dut.tap.east_valid, 1 << 4)
        await ctx.tick()
        ctx.set(dut.issue, 0)
        while ctx.get(dut.busy):
            await ctx.tick()
        assert np.array_equal(await host_read(ctx, 9), wvec)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("cfgname", ["tiny", "fpga"])
def test_verilog(cfgname):
    cfg = load_config(cfgname)
    text = verilog.convert(MemSlice(cfg, cfg.slices_of("mem")[0]))
    assert "module" in text
