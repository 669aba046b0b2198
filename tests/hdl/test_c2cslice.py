"""C2CSlice (hdl/c2cslice.py) on its own in Amaranth's simulator, against the golden model's SEND/RECV.

The reference is the golden model's element machinery for the slice (``SliceStepper(cfg, "c2c0")``):
its ``tx_hook`` records what each SEND element hands to the link and in which cycle, and its RX
queues get the vectors the test delivers to the RTL (``rx_valid``/``rx_data``) in the same cycles.
Checked cycle by cycle: the SEND elements every F = ``vector_interval`` cycles (``tx_valid``,
``tx_data``), the RECV results on the stream port ``c2c_recv`` cycles after their element (``out``,
as the golden model's stream writes), ``busy``, and the error flags where the golden model raises:
RECV before a vector arrived, RX FIFO overflow and a rising ``tx_overrun`` (``err.link``), an issue
to a busy sub-unit, a SEND from an empty stream slot, two ports' RECV results in one cycle, a port the
chip lacks.  Widths 8, 16, 32 and 64 bits change F (22, 12, 7, 5 on ``duo``).
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from tests import harness
from tests.harness import check_landing, drive_issue, issue_words, tap_ints, vec_int
from tinylpu.hdl.c2cslice import C2CSlice
from tinylpu.isa import Insn, Opcode, StreamRef, encode
from tinylpu.link import min_link_latency
from tinylpu.sim.golden.chip import ProgramError
from tinylpu.sim.golden.stepper import SliceStepper
from tinylpu.wire import ERROR_BITS


def E(i):
    return StreamRef(i, False)


def W(i):
    return StreamRef(i, True)


def duo_variant(width=32, **latency):
    """``duo`` at another link width (``link_latency`` raised as the loader requires) and latencies."""
    duo = harness.flit("duo")            # per-vector flit framing (burst framing: the end of the file)
    need = min_link_latency(duo.lanes, dict(duo.link, width_bits=width))
    return harness.variant(duo, f"duo-w{width}", c2c={"width_bits": width,
                                                        "link_latency": max(duo.link_latency, need)}, **latency)


def send(port, s, n):
    return Insn.make(Opcode.SEND, port=port, s=s, count=n)


def recv(port, d, n):
    return Insn.make(Opcode.RECV, port=port, s=d, count=n)


class Tap:
    """The stream registers at the slice in one cycle (random data, every slot valid unless told)."""

    def __init__(self, cfg, rng, empty=()):
        self.data = rng.integers(-128, 128, size=(2, cfg.streams, cfg.lanes)).astype(np.int8)
        self.valid = np.ones((2, cfg.streams), bool)
        for d, s in empty:
            self.valid[d, s] = False




def run_rtl(cfg, cycles, issues, taps, arrivals=None, overrun=None):
    """Run C2CSlice for ``cycles`` cycles.  ``issues``: {cycle: Insn}; ``taps``: a Tap per cycle;
    ``arrivals``: {cycle: [(port, vector)]} driven on ``rx_valid``/``rx_data`` in that cycle;
    ``overrun``: {cycle: mask} the ``tx_overrun`` input from that cycle on.  Returns per cycle a dict
    of what the slice drives during it."""
    arrivals, overrun = arrivals or {}, overrun or {}
    dut = C2CSlice(cfg, cfg.slice("c2c0"))
    P = cfg.c2c_ports
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    words = issue_words(cycles, issues, encode)
    ints = [tap_ints(cfg, t) for t in taps]
    te, tev, tw, twv = (dut.tap.east.as_value(), dut.tap.east_valid, dut.tap.west.as_value(),
                        dut.tap.west_valid)
    rec = []

    async def bench(ctx):
        ovr = 0
        for c in range(cycles):
            drive_issue(ctx, dut, words, c)
            for sig, v in zip((te, tev, tw, twv), ints[c]):
                ctx.set(sig, v)
            got = dict(arrivals.get(c, []))
            ctx.set(dut.rx_valid, sum(1 << p for p in got))
            for p in range(P):
                ctx.set(dut.rx_data[p], vec_int(got[p]) if p in got else 0)
            ovr = overrun.get(c, ovr)
            ctx.set(dut.tx_overrun, ovr)
            err = ctx.get(dut.err.as_value())
            errs = {n for i, n in enumerate(ERROR_BITS) if (err >> i) & 1}
            if "port" not in errs:                 # a port clash ORs two results' selects
                check_landing(ctx, dut.out, cfg, wide_unit=False)
            txv = ctx.get(dut.tx_valid)
            rec.append({
                "tx": {p: ctx.get(dut.tx_data[p]) for p in range(P) if (txv >> p) & 1},
                "out": ((ctx.get(dut.out.west), ctx.get(dut.out.index),
                         ctx.get(dut.out.data[0]) & ((1 << 8 * cfg.lanes) - 1))
                        if ctx.get(dut.out.valid) else None),
                "wide": ctx.get(dut.out.wide), "errors": errs, "busy": ctx.get(dut.busy),
                "level": [ctx.get(dut.rx_level[p]) for p in range(P)]})
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    return rec


def reference(cfg, cycles, issues, taps, arrivals=None):
    """The golden model's view, per cycle: SENDs handed to the link {port: vector}, the stream result
    driven (direction, index, vector) or None, busy; and the first ProgramError (cycle, message)."""
    ref = SliceStepper(cfg, "c2c0")
    sent = {}
    ref.g.tx_hook = lambda port, c, v: sent.setdefault(c, {}).__setitem__(port, vec_int(v))
    out, busy = [], []
    for c in range(cycles):
        for port, v in (arrivals or {}).get(c, []):
            ref.g.rx[port].append((c, np.asarray(v, np.int8)))
        try:
            occ, drv = ref.step(c, issues.get(c), taps[c])
        except ProgramError as e:
            return sent, out, busy, (c, e.message)
        assert len(drv) <= 1 and all(len(v) == 1 for _, _, v in drv)
        out.append((drv[0][0], drv[0][1], vec_int(drv[0][2][0])) if drv else None)
        busy.append(occ)
    for d in [c for c, o in enumerate(out) if o is not None]:        # a result on its way keeps it busy
        for c in range(ref.samples[d] + 1, d + 1):
            busy[c] = True
    return sent, out, busy, None


def check_against_golden(cfg, cycles, issues, taps, arrivals):
    sent, out, busy, err = reference(cfg, cycles, issues, taps, arrivals)
    assert err is None, err
    rec = run_rtl(cfg, cycles, issues, taps, arrivals)
    for c, r in enumerate(rec):
        where = f"cycle {c} (config {cfg.name}, F {cfg.vector_interval})"
        assert r["errors"] == set(), f"{where}: {r['errors']}"
        assert r["tx"] == sent.get(c, {}), where
        assert r["out"] == out[c], where
        assert r["wide"] == 0 and r["busy"] == busy[c], where
    return rec, sent, out


def rng_taps(cfg, cycles, seed, empty=None):
    rng = np.random.default_rng(seed)
    return [Tap(cfg, rng, (empty or {}).get(c, ())) for c in range(cycles)]


# ---------------------------------------------------------------------------------------------
# SEND and RECV against the golden model, at every link width and several c2c_recv latencies

@pytest.mark.parametrize("width,latency", [(8, 2), (16, 2), (32, 2), (32, 4), (64, 3)])
def test_send_recv_against_golden(width, latency):
    """Two SENDs back to back on the port (the second issued the cycle the first frees it) and a
    RECV of four vectors running alongside: one delivered before the RECV, one in the cycle of its
    element (taken directly), two queued in the RX FIFO, received in order."""
    cfg = duo_variant(width, c2c_recv=latency)
    F = cfg.vector_interval
    assert F == cfg.link_params.send_interval
    rng = np.random.default_rng(width + latency)
    vecs = rng.integers(-128, 128, size=(4, cfg.lanes)).astype(np.int8)
    t_rx = 6
    issues = {2: send(0, E(1), 3), 2 + 3 * F: send(0, W(5), 2), t_rx: recv(0, W(2), 4)}
    arrivals = {1: [(0, vecs[0])], t_rx + F: [(0, vecs[1])], t_rx + F + 2: [(0, vecs[2])],
                t_rx + F + 3: [(0, vecs[3])]}
    cycles = 2 + 5 * F + latency + 4
    rec, sent, out = check_against_golden(cfg, cycles, issues, rng_taps(cfg, cycles, width), arrivals)
    assert sorted(sent) == [2 + k * F for k in range(5)]                    # SEND elements F apart
    results = [(c, o) for c, o in enumerate(out) if o is not None]
    assert [c for c, _ in results] == [t_rx + k * F + latency - 1 for k in range(4)]
    assert [o for _, o in results] == [(1, 2, vec_int(v)) for v in vecs]   # in arrival order
    levels = [rec[t_rx + F + 3]["level"], rec[t_rx + F + 4]["level"], rec[t_rx + 3 * F + 1]["level"]]
    assert levels == [[1], [2], [0]]                                       # v2, v3 queued, then taken


def test_send_samples_the_stream_each_element():
    """Each SEND element hands the stream slot of its own cycle to the link (random taps differ per
    cycle); a stream west-bound and an east-bound one."""
    cfg = duo_variant()
    F = cfg.vector_interval
    issues = {0: send(0, E(7), 4), 4 * F: send(0, W(0), 2)}
    cycles = 6 * F + 2
    taps = rng_taps(cfg, cycles, 3)
    _, sent, _ = check_against_golden(cfg, cycles, issues, taps, {})
    assert sent == {**{k * F: {0: vec_int(taps[k * F].data[0, 7])} for k in range(4)},
                    **{(4 + k) * F: {0: vec_int(taps[(4 + k) * F].data[1, 0])} for k in range(2)}}


def test_two_ports_against_golden():
    """tray (7 ports): SEND and RECV on different ports at once, RECVs on ports 2 and 6 whose
    elements fall in different cycles."""
    cfg = harness.flit("tray")
    F = cfg.vector_interval
    rng = np.random.default_rng(4)
    v = rng.integers(-128, 128, size=(4, cfg.lanes)).astype(np.int8)
    issues = {1: send(3, E(0), 2), 2: recv(2, E(4), 2), 3: recv(6, W(6), 2), 4: send(0, W(1), 1)}
    arrivals = {0: [(2, v[0]), (6, v[1])], 2 + F: [(2, v[2])], 3 + F - 2: [(6, v[3])]}
    cycles = 4 + 2 * F + 4
    _, sent, _ = check_against_golden(cfg, cycles, issues, rng_taps(cfg, cycles, 4), arrivals)
    assert set(sent) == {1, 1 + F, 4} and sent[4].keys() == {0}


# ---------------------------------------------------------------------------------------------
# errors where the golden model raises

def first_error(rec):
    return next(((c, r["errors"]) for c, r in enumerate(rec) if r["errors"]), None)


@pytest.mark.parametrize("width", [8, 32])
def test_recv_with_nothing_received_flags_link(width):
    """A RECV element that finds no vector (neither queued nor arriving in its cycle): the golden
    model raises at that element, the slice flags ``link`` in that cycle."""
    cfg = duo_variant(width)
    F = cfg.vector_interval
    v = np.arange(cfg.lanes, dtype=np.int8)
    issues = {3: recv(0, W(1), 2)}
    arrivals = {2: [(0, v)], 3 + F + 1: [(0, v)]}          # the second arrives a cycle too late
    cycles = 3 + 2 * F + 4
    taps = rng_taps(cfg, cycles, 1)
    _, _, _, err = reference(cfg, cycles, issues, taps, arrivals)
    assert err[0] == 3 + F and "no vector has arrived" in err[1]
    rec = run_rtl(cfg, cycles, issues, taps, arrivals)
    assert first_error(rec) == (3 + F, {"link"})
    # the same one cycle earlier: taken directly in the element's cycle, no error
    arrivals[3 + F] = arrivals.pop(3 + F + 1)
    assert first_error(run_rtl(cfg, cycles, issues, taps, arrivals)) is None
    assert reference(cfg, cycles, issues, taps, arrivals)[3] is None


def test_rx_fifo_overflow_flags_link():
    """``rx_vectors`` vectors wait in the port's FIFO; one more arriving is flagged (the golden
    tray's "RX buffer overflows")."""
    cfg = duo_variant()
    n = cfg.link["rx_vectors"]
    v = np.ones(cfg.lanes, np.int8)
    arrivals = {2 + 3 * k: [(0, v)] for k in range(n + 1)}
    cycles = 3 * n + 6
    rec = run_rtl(cfg, cycles, {}, rng_taps(cfg, cycles, 2), arrivals)
    assert rec[2 + 3 * n]["level"] == [n]
    assert [c for c, r in enumerate(rec) if r["errors"]] == [2 + 3 * n]
    assert rec[2 + 3 * n]["errors"] == {"link"}


def test_tx_overrun_rise_flags_link():
    """The port's LinkTX raises its sticky ``overrun``: flagged once, in the cycle it rises."""
    cfg = duo_variant()
    cycles = 12
    rec = run_rtl(cfg, cycles, {}, rng_taps(cfg, cycles, 5), overrun={5: 1})
    assert [c for c, r in enumerate(rec) if r["errors"]] == [5]
    assert rec[5]["errors"] == {"link"}


def test_issue_to_busy_port_flags_busy():
    """A second SEND on a port whose SEND still runs (the last cycle of its busy window): the golden
    model raises, the slice flags ``busy``.  A RECV on the same port is another sub-unit: fine."""
    cfg = duo_variant()
    F = cfg.vector_interval
    cycles = 2 * F + 6
    taps = rng_taps(cfg, cycles, 6)
    for issues, bad in (({1: send(0, E(0), 2), 2 * F: send(0, E(1), 1)}, 2 * F),
                        ({1: send(0, E(0), 2), 1 + 2 * F: send(0, E(1), 1)}, None)):
        _, _, _, err = reference(cfg, cycles, issues, taps)
        rec = run_rtl(cfg, cycles, issues, taps)
        if bad is None:
            assert err is None and first_error(rec) is None
        else:
            assert err[0] == bad and "busy" in err[1]
            assert first_error(rec) == (bad, {"busy"})
    v = np.ones(cfg.lanes, np.int8)
    issues = {1: send(0, E(0), 2), 2: recv(0, E(2), 1)}
    check_against_golden(cfg, cycles, issues, taps, {0: [(0, v)]})


def test_send_from_empty_slot_flags_empty():
    cfg = duo_variant()
    F = cfg.vector_interval
    cycles = 2 * F + 4
    taps = rng_taps(cfg, cycles, 7, empty={2 + F: [(1, 3)]})
    issues = {2: send(0, W(3), 2)}
    _, _, _, err = reference(cfg, cycles, issues, taps)
    assert err[0] == 2 + F and "holds no data" in err[1]
    assert first_error(run_rtl(cfg, cycles, issues, taps)) == (2 + F, {"empty"})


def test_two_ports_landing_together_flag_port():
    """RECV elements of two ports in the same cycle (port 1's RECV issued in the cycle of port 2's
    second element): both results would land in one cycle."""
    cfg = harness.flit("tray")
    v = np.ones(cfg.lanes, np.int8)
    F = cfg.vector_interval
    issues = {3: recv(2, E(1), 2), 3 + F: recv(1, E(0), 1)}
    arrivals = {0: [(1, v), (2, v)], 1: [(2, v)]}
    cycles = 3 + 2 * F + 4
    taps = rng_taps(cfg, cycles, 8)
    _, _, _, err = reference(cfg, cycles, issues, taps, arrivals)
    assert err[0] == 3 + F and "stream port conflict" in err[1]
    assert first_error(run_rtl(cfg, cycles, issues, taps, arrivals)) == (3 + F, {"port"})


def test_recv_latency_one_refused():
    """The loader allows c2c_recv 1, the slice does not (its RECV result would land in the RECV's
    issue cycle, but the landing select is registered a cycle ahead)."""
    with pytest.raises(ValueError, match=r"latency c2c_recv = 1: the C2C slice needs at least 2"):
        C2CSlice(duo_variant(c2c_recv=1))


def test_port_out_of_range_flags_addr():
    cfg = duo_variant()                                   # one port
    cycles = 6
    rec = run_rtl(cfg, cycles, {2: send(1, E(0), 1)}, rng_taps(cfg, cycles, 9))
    assert first_error(rec) == (2, {"addr"})
    assert all(r["tx"] == {} for r in rec)


def test_burst_send_carries_its_count_and_refuses_more_than_a_frame():
    """Burst framing (``c2c.framing: burst``): SEND elements every F = payload words (4 on ``duo``),
    each with the SEND's count on ``tx_count`` (the LinkTX reads it with the frame's first vector);
    a SEND of more than ``burst_vectors`` flags ``link`` at issue, as the golden tray refuses it."""
    from tinylpu.sim.perf.c2c import burst_variant
    cfg = burst_variant("duo", 16)
    assert cfg.vector_interval == 4
    rng = np.random.default_rng(3)
    cycles = 30
    taps = [Tap(cfg, rng) for _ in range(cycles)]
    dut = C2CSlice(cfg, cfg.slice("c2c0"))
    words = issue_words(cycles, {2: send(0, E(1), 3), 20: send(0, E(1), 17)}, encode)
    ints = [tap_ints(cfg, t) for t in taps]
    te, tev, tw, twv = (dut.tap.east.as_value(), dut.tap.east_valid, dut.tap.west.as_value(), dut.tap.west_valid)
    seen = []

    async def bench(ctx):
        for c in range(cycles):
            drive_issue(ctx, dut, words, c)
            for sig, v in zip((te, tev, tw, twv), ints[c]):
                ctx.set(sig, v)
            err = ctx.get(dut.err.as_value())
            errs = {n for i, n in enumerate(ERROR_BITS) if (err >> i) & 1}
            if ctx.get(dut.tx_valid) or errs:
                seen.append((c, ctx.get(dut.tx_valid), ctx.get(dut.tx_count[0]),
                             ctx.get(dut.tx_data[0]) == vec_int(taps[c].data[0, 1]), errs))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen[:3] == [(2, 1, 3, True, set()), (6, 1, 3, True, set()), (10, 1, 3, True, set())]
    assert seen[3][0] == 20 and "link" in seen[3][4]
