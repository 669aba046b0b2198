"""The RTL tray (hdl/tray.py): chips on their own drifting clocks, C2C links, SEND/RECV, DESKEW.

Every run is compared with the golden tray (ideal lockstep clocks): the same MEM bits and the same
program cycle counts on every chip, whatever the drift.  Every test that runs the Verilog is in
the slow tier (full trays in Icarus: the ``duo`` build alone is about a minute); the fast tier
checks the link itself in Amaranth's simulator at every width (tests/hdl/test_c2c.py,
test_c2cslice.py) and the tray programs on the golden tray.
"""


import numpy as np
import pytest

from tests import harness
from tests.tray_programs import receiver, sender
from tinylpu.config import load_config
from tinylpu.firmware.asm import assemble
from tinylpu.firmware.quant import quantize_ffn
from tinylpu.firmware.tray import compile_tp
from tinylpu.link import LinkParams, arrival_cycles
from tinylpu.sim.golden.chip import ProgramError
from tinylpu.sim.golden.tray import GoldenTray, run_tray_golden
from tinylpu.sim.rtl.tray import link_flip_fn, run_tray_compiled_rtl, run_tray_rtl

DUO = load_config("duo")
#: per-vector flit framing (the tests of that framing's wire format and its RTL FEC; burst framing
#: is the shipped duo's, tested with it and at the end of the file)
FLIT_DUO = harness.flit("duo")


def variant(base, name, **c2c):
    return harness.variant(base, name, c2c=c2c)


def golden(cfg, progs, mems):
    t = GoldenTray(cfg)
    t.load_programs(progs)
    for chip, m in enumerate(mems):
        for bank, data in (m or {}).items():
            t.chips[chip].write_mem(bank, 0, data)
    return t, t.run()


@pytest.mark.slow
@pytest.mark.parametrize("ppm", [(300, -300), (0, 0), (-300, 300)])
def test_send_recv_equals_golden_under_drift(ppm):
    """One Icarus launch per case."""
    n = 4
    data = np.random.default_rng(1).integers(-128, 128, (n, DUO.lanes), dtype=np.int8)
    p = LinkParams.from_cfg(DUO)
    t_recv = arrival_cycles(p, DUO.link_latency, 3, n)[0]     # burst framing: the frame's last element + L
    progs = [assemble(sender(DUO, 0, n), DUO, "s.s"), assemble(receiver(DUO, 0, n, t_recv), DUO, "r.s")]
    mems = [{"mem7": data}, None]
    t, g = golden(DUO, progs, mems)
    res = run_tray_rtl(DUO, progs, mems, [None, [("mem7", 5, n)]], ppm=ppm)
    chips = res["chips"]
    assert [c["errors"] for c in chips] == [[], []]
    assert [c["cycles"] for c in chips] == g.cycles
    assert np.array_equal(chips[1]["mem"][0], t.chips[1].read_mem("mem7", 5, n))
    assert np.array_equal(chips[1]["mem"][0], data)
    link = chips[1]["links"][0]
    assert link["flits_ok"] == (1 if p.burst else n) and link["crc_errors"] == link["seq_errors"] == link["alarm"] == 0
    assert chips[0]["links"][0]["overrun"] == 0


@pytest.mark.slow
def test_recv_too_early_is_flagged():
    """A RECV well before the vector can have arrived: the golden model refuses it, the RTL raises
    the ``link`` error flag and stops the chip."""
    progs = [assemble(sender(DUO, 0, 1), DUO, "s.s"), assemble(receiver(DUO, 0, 1, 3 + 8), DUO, "r.s")]
    res = run_tray_rtl(DUO, progs, [{"mem7": np.ones((1, DUO.lanes), np.int8)}, None], ppm=(0, 0))
    assert res["chips"][1]["errors"] == ["link"]
    assert res["chips"][0]["errors"] == []


def _layer(dm, dff, seed):
    from tests.firmware.test_tray_compiler import layer
    return layer(dm, dff, seed, True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3, 4])
def test_tensor_parallel_equals_golden_tray(seed):
    """A compiled tensor-parallel SwiGLU at random clock offsets (the seed draws them)."""
    w = _layer(32, 64, 7)
    x = np.random.default_rng(5).normal(size=(3, 32))
    q = quantize_ffn(w, x)
    tc = compile_tp(q, DUO, 3, 2)
    xq = q.quantize_input(x)
    tray, gres = run_tray_golden(tc, [xq] * DUO.chips)
    y_gold = tc.chips[0].unpack_output(tray.chips[0].read_mem)
    ppm = np.random.default_rng(seed).uniform(-300, 300, DUO.chips).round(1).tolist()
    y, res = run_tray_compiled_rtl(tc, [xq] * DUO.chips, ppm=ppm)
    assert [c["errors"] for c in res["chips"]] == [[], []]
    assert [c["cycles"] for c in res["chips"]] == gres.cycles == tc.predicted_cycles
    assert np.array_equal(y, y_gold)
    assert np.array_equal(y, q.run_int(xq))


# --- bit errors on the C2C wires (hdl/tray.py LinkInjector) ------------------------------------

def test_link_injector_hits_the_named_word_of_the_named_data_flit():
    """The injector alone (Amaranth's simulator): DATA flits and a HAC frame go through untouched
    but for the entries' (flit index, word), whose masks are XOR-ed in (bit width = the K flag)."""
    from amaranth.sim import Simulator

    from tinylpu.hdl.tray import LinkInjector
    from tinylpu.link import LinkParams, Sym, encode_flit, encode_hac
    p = LinkParams.from_cfg(FLIT_DUO)
    idle = [(1, Sym.IDLE.value)]
    frames = [encode_flit(p, 0x1234 + i, i) for i in range(4)]
    stream = idle + frames[0] + encode_hac(p, 77) + frames[1] + idle * 2 + frames[2] + frames[3] + idle
    K = 1 << p.width
    entries = [(1, 0, 1 << 5), (2, p.flit_words - 1, K | 1), (3, 1, 3), (9, 0, 1)]
    want = []
    flit = -1
    pos = None
    for k, w in stream:
        if pos is None and k and (w & 15) == Sym.DATA.value:
            flit, pos = flit + 1, 0
        mask = sum(m for i, wd, m in entries if pos is not None and (i, wd) == (flit, pos))
        want.append((k ^ (mask >> p.width), w ^ (mask & (K - 1))))
        if pos is not None:
            pos = pos + 1 if pos + 1 < p.flit_words else None
    assert sum(a != b for a, b in zip(want, stream)) == 3
    dut = LinkInjector(FLIT_DUO)
    got = []

    async def bench(ctx):
        for e, (i, wd, m) in zip(dut.entry, entries):
            ctx.set(e.en, 1)
            ctx.set(e.index, i)
            ctx.set(e.word, wd)
            ctx.set(e.mask, m)
        for k, w in stream:
            ctx.set(dut.wire_in.k, k)
            ctx.set(dut.wire_in.data, w)
            got.append((ctx.get(dut.wire_out.k), ctx.get(dut.wire_out.data)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == want


def _tp_duo():
    w = _layer(32, 64, 7)
    x = np.random.default_rng(5).normal(size=(3, 32))
    q = quantize_ffn(w, x)
    tc = compile_tp(q, FLIT_DUO, 3, 2)
    return q, tc, q.quantize_input(x)


def _golden_with_flips(tc, xq, flips):
    """``run_tray_golden`` with bit errors on the links."""
    t = GoldenTray(tc.cfg, link_flips=link_flip_fn(flips))
    t.load_programs([c.program for c in tc.chips])
    for chip, c in enumerate(tc.chips):
        for bank, lst in list(c.mem_image.items()) + list(c.pack_input(xq).items()):
            for addr, v in lst:
                t.chips[chip].write_mem(bank, addr, v)
    return t, t.run()


#: single-bit flips (chip, port, DATA flit index, word, mask) on both links of the duo (chip 0
#: sends 6 flits, chip 1 sends 9): header (sequence number, SECDED bits), payload, a K flag
K32 = 1 << 32
SINGLE = [(0, 0, 0, 0, 1 << 5), (0, 0, 2, 3, 1 << 17), (0, 0, 5, 2, K32),
          (1, 0, 1, 1, 1 << 0), (1, 0, 4, 0, 1 << 15), (1, 0, 8, 4, 1 << 31), (1, 0, 6, 2, K32)]


@pytest.mark.slow        # flit framing's Verilog (the shipped burst framing's: test_burst_tensor_parallel_...)
@pytest.mark.parametrize("seed", [6, 7])
def test_tensor_parallel_with_corrected_link_errors_equals_golden_tray(seed):
    """Flit framing, single-bit errors on the wires: every hit flit is corrected (counted in the receiver's
    ``corrected``), the output bit-exact, the cycles those of the clean run, no error flag."""
    q, tc, xq = _tp_duo()
    assert FLIT_DUO.link["width_bits"] == 32
    tray, gres = _golden_with_flips(tc, xq, SINGLE)
    assert tray.corrected == len(SINGLE)
    y_gold = tc.chips[0].unpack_output(tray.chips[0].read_mem)
    ppm = np.random.default_rng(seed).uniform(-300, 300, FLIT_DUO.chips).round(1).tolist()
    y, res = run_tray_compiled_rtl(tc, [xq] * FLIT_DUO.chips, ppm=ppm, link_flips=SINGLE)
    chips = res["chips"]
    assert [c["errors"] for c in chips] == [[], []]
    assert [c["cycles"] for c in chips] == gres.cycles == tc.predicted_cycles
    assert np.array_equal(y, y_gold)
    assert np.array_equal(y, q.run_int(xq))
    for a in range(FLIT_DUO.chips):
        b, port = FLIT_DUO.peer(a, 0)
        link = chips[b]["links"][port]
        assert link["corrected"] == sum(f[0] == a for f in SINGLE)
        assert link["flits_ok"] == gres.link_vectors[(a, 0)]
        assert link["crc_errors"] == link["frame_errors"] == link["seq_errors"] == link["alarm"] == 0


@pytest.mark.slow
def test_tensor_parallel_with_a_double_bit_link_error_raises_the_link_flag():
    """Two flipped bits in one flit: the receiver detects it and raises ``link`` (no silent wrong
    vector); the golden tray with the same flips raises its link error."""
    _, tc, xq = _tp_duo()
    flips = [(0, 0, 2, 1, (1 << 3) | (1 << 20))]
    with pytest.raises(ProgramError, match="link error: flit 2 on port 0 has an uncorrectable error"):
        _golden_with_flips(tc, xq, flips)
    _, res = run_tray_compiled_rtl(tc, [xq] * FLIT_DUO.chips, ppm=[120.0, -80.0], link_flips=flips)
    chips = res["chips"]
    assert "link" in chips[1]["errors"]
    assert chips[1]["links"][0]["crc_errors"] == 1
    assert chips[1]["links"][0]["corrected"] == 0


# --- DESKEW ------------------------------------------------------------------------------------

class _Q:
    """One queue's assembly with its golden issue cycle tracked (for NOP padding)."""

    def __init__(self, name, E):
        self.lines, self.c, self.E = [f".queue {name}"], 0, E

    def nop(self, n):
        if n > 0:
            self.lines.append(f"    NOP {n}")
            self.c += n

    def op(self, text, slots=1):
        self.lines.append(f"    {text}")
        self.c += slots

    def at(self, t):
        self.nop(t - self.c)

    def barrier(self, deskew):
        nxt = (self.c // self.E + 1) * self.E
        if deskew:
            self.op("DESKEW")
        else:
            self.nop(nxt - self.c)
        self.c = nxt


def ping_pong(cfg, rounds, deskew, slack=0):
    """Chip 0 sends one vector per epoch to chip 1 (RECV at SEND + link_latency + slack, written to
    mem7[r]); between rounds every queue parks in DESKEW (or, without, NOPs to the same cycle)."""
    E, lat, lr = cfg.link["epoch"], cfg.link_latency + slack, cfg.latency["c2c_recv"]
    qs = [{n: _Q(n, E) for n in ("mem7", "c2c0")} for _ in range(2)]
    for r in range(rounds):
        b = r * E
        qs[0]["mem7"].at(b)
        qs[0]["mem7"].op(f"READ e0, {r}")
        qs[0]["c2c0"].at(b + 3)
        qs[0]["c2c0"].op("SEND 0, e0")
        qs[1]["c2c0"].at(b + 3 + lat)
        qs[1]["c2c0"].op("RECV w0, 0")
        qs[1]["mem7"].at(b + 3 + lat + lr + 1)
        qs[1]["mem7"].op(f"WRITE w0, {r}")
        for chip in qs:
            for q in chip.values():
                q.nop(cfg.vector_interval + 2)
                if r < rounds - 1:
                    q.barrier(deskew)
    srcs = []
    for chip in qs:
        for q in chip.values():
            q.op("HALT")
        srcs.append("\n".join(line for q in chip.values() for line in q.lines) + "\n")
    return [assemble(s, cfg, f"chip{i}.s") for i, s in enumerate(srcs)]


#: duo with a short epoch and a SKIP rate that absorbs 2 x 2500 ppm (the drift exaggerated 8x).
DRIFT = dict(epoch=256, hac_interval=64, skip_interval=64)


@pytest.mark.slow
def test_deskew_keeps_the_schedule_under_exaggerated_drift():
    """Its own Verilog build (a duo with a short epoch).  The fast tier checks DESKEW on the golden
    tray (tests/sim/golden/test_tray.py)."""
    cfg = variant(FLIT_DUO, "duo-drift", **DRIFT)     # SKIPs every 64 words: shorter than a burst frame
    rounds = 12
    data = np.random.default_rng(2).integers(-128, 128, (rounds, cfg.lanes), dtype=np.int8)
    mems = [{"mem7": data}, None]
    progs = ppm_progs = ping_pong(cfg, rounds, deskew=True)
    t, g = golden(cfg, progs, mems)
    res = run_tray_rtl(cfg, ppm_progs, mems, [None, [("mem7", 0, rounds)]], ppm=(2500, -2500))
    chips = res["chips"]
    assert [c["errors"] for c in chips] == [[], []]
    assert [c["cycles"] for c in chips] == g.cycles
    assert np.array_equal(chips[1]["mem"][0], data)
    assert all(c["stall"] > 0 for c in chips)
    # without DESKEW the receiver (2500 ppm fast) drifts ~1.3 cycles per epoch ahead of the sender
    # and eventually RECEIVEs before the vector is there
    progs = ping_pong(cfg, rounds, deskew=False)
    t, g2 = golden(cfg, progs, mems)
    assert g2.cycles == g.cycles
    res = run_tray_rtl(cfg, progs, mems, [None, [("mem7", 0, rounds)]], ppm=(2500, -2500))
    assert res["chips"][1]["errors"] == ["link"]


@pytest.mark.slow
def test_tray_eight_chips_deskew_under_drift():
    """The 8-chip tray: chip 0 and chip 7 (the extremes of a drift spread), DESKEW each epoch; then
    the same without DESKEW fails."""
    cfg = variant(harness.flit("tray"), "tray-drift", **DRIFT)
    rounds = 12
    data = np.random.default_rng(2).integers(-128, 128, (rounds, cfg.lanes), dtype=np.int8)
    mems = [{"mem7": data}]
    ppm = [2500, -2500, 1000, -1000, 0, 500, -500, 2000]
    progs = ping_pong(cfg, rounds, deskew=True)
    empty = assemble(".queue mem0\n HALT\n", cfg)
    full = progs + [empty] * (cfg.chips - 2)
    t, g = golden(cfg, full, mems + [None] * (cfg.chips - 1))
    res = run_tray_rtl(cfg, full, mems, [None, [("mem7", 0, rounds)]], ppm=ppm)
    chips = res["chips"]
    assert all(c["errors"] == [] for c in chips)
    assert [c["cycles"] for c in chips] == g.cycles
    assert np.array_equal(chips[1]["mem"][0], data)
    progs = ping_pong(cfg, rounds, deskew=False) + [empty] * (cfg.chips - 2)
    res = run_tray_rtl(cfg, progs, mems, [None, [("mem7", 0, rounds)]], ppm=ppm)
    assert res["chips"][1]["errors"] == ["link"]


# --- burst framing (c2c.framing: burst) -------------------------------------------------------------

def _burst_duo():
    """The shipped ``duo`` is the burst-framed duo (16-vector bursts, the least ``rx_vectors`` and
    ``link_latency`` + 2 the loader accepts): its RTL tray build is the one the other tests here
    share (a variant of the same values under another name was a second Verilog build of ~1 min)."""
    from tinylpu.sim.perf.c2c import burst_variant
    duo, b = load_config("duo"), burst_variant("duo", 16)
    assert duo.link["framing"] == "burst" and duo.link == b.link and duo.link_latency == b.link_latency
    return duo


#: single-bit flips (chip, port, frame, word, mask) on both links of the burst duo at 16 tokens
#: (4-vector frames: 18 words): header fields, payload, trailer, K flags of body words
BURST_SINGLE = [(0, 0, 0, 0, 1 << 5), (0, 0, 1, 3, 1 << 17), (0, 0, 2, 2, K32), (0, 0, 3, 17, 1 << 12),
                (1, 0, 0, 1, 1 << 0), (1, 0, 1, 0, 1 << 15), (1, 0, 2, 5, 1 << 31), (1, 0, 3, 2, K32)]


@pytest.mark.slow
@pytest.mark.parametrize("seed,flips", [(8, BURST_SINGLE), (9, None)])
def test_burst_tensor_parallel_equals_golden_tray(seed, flips):
    """Burst framing on the RTL duo: a compiled tensor-parallel SwiGLU (16 tokens: multi-vector
    frames) at random clock offsets, with and without single-bit link errors: the golden tray's
    cycles and bits, every hit frame corrected, no error flag."""
    cfg = _burst_duo()
    w = _layer(32, 64, 7)
    x = np.random.default_rng(5).normal(size=(16, 32))
    q = quantize_ffn(w, x)
    tc = compile_tp(q, cfg, 16, 2)
    xq = q.quantize_input(x)
    tray, gres = _golden_with_flips(tc, xq, flips or [])
    assert tray.corrected == len(flips or [])
    y_gold = tc.chips[0].unpack_output(tray.chips[0].read_mem)
    ppm = np.random.default_rng(seed).uniform(-300, 300, cfg.chips).round(1).tolist()
    y, res = run_tray_compiled_rtl(tc, [xq] * cfg.chips, ppm=ppm, link_flips=flips)
    chips = res["chips"]
    assert [c["errors"] for c in chips] == [[], []]
    assert [c["cycles"] for c in chips] == gres.cycles == tc.predicted_cycles
    assert np.array_equal(y, y_gold) and np.array_equal(y, q.run_int(xq))
    for a in range(cfg.chips):
        b, port = cfg.peer(a, 0)
        link = chips[b]["links"][port]
        assert link["corrected"] == sum(f[0] == a for f in flips or [])
        assert link["crc_errors"] == link["frame_errors"] == link["seq_errors"] == link["alarm"] == 0
        assert chips[a]["links"][0]["overrun"] == 0
