"""C2C link layer (hdl/c2c.py): LinkTX -> wire -> LinkRX in Amaranth's simulator, two clocks.

The sender's clock "tx" also clocks the receiver's front end (the recovered clock); the receiver's
own clock "rx" runs some ppm off.  The harness is sim/c2c_bench.py (``run_link``), which the
goodput/latency measurement in docs/c2c.md uses too.  Exaggerated drift (thousands of ppm) with a
short SKIP interval exercises the elastic buffer in short runs; the long runs at the real config's
numbers are marked slow.
"""

import random

import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from tinylpu.config import load_config
from tinylpu.hdl.c2c import C2CLinkPair, LinkRX, LinkTX, secded_check, secded_correct
from tinylpu.link import (
    CORRECTED,
    OK,
    UNCORRECTABLE,
    LinkParams,
    Sym,
    decode_frame,
    encode_flit,
    encode_hac,
    link_problems,
    min_link_latency,
    secded_check_bits,
    secded_decode,
    secded_encode,
)
from tinylpu.sim.perf.c2c import flit_variant, link_variant, measure_link, run_link

SLOW = pytest.mark.slow


#: the tray's link on per-vector flit framing: the tests up to "burst framing" are about that framing
FLIT_TRAY = flit_variant("tray")


@pytest.fixture(scope="module")
def tray():
    return FLIT_TRAY


def width_variant(width, **c2c):
    """The tray's link at another ``width_bits`` (and other ``c2c`` fields), with ``link_latency``
    raised to what that link needs (the loader refuses less: ``tinylpu.link.link_problems``)."""
    base = FLIT_TRAY
    need = min_link_latency(base.lanes, dict(base.link, width_bits=width, **c2c))
    return link_variant(base, width_bits=width, link_latency=max(base.link_latency, need), **c2c)


def delivered(r):
    return [v for _, v, _ in r.received]


def expect_clean(r, n):
    """Every vector received exactly once, in order, uncorrupted; no error, alarm or overrun."""
    assert delivered(r) == [v for v, _ in r.sent]
    assert len(r.sent) == n
    s = r.status
    assert (s["crc_errors"], s["frame_errors"], s["seq_errors"]) == (0, 0, 0)
    assert s["flits_ok"] == n
    assert s["alarm"] == 0, s["alarm_flags"]
    assert s["overrun"] == 0
    assert [q for q, _, _ in r.received] == [i % (1 << r.params.seq_bits) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# framing numbers and SECDED

def test_params_tray(tray):
    p = LinkParams.from_cfg(tray)
    assert (p.payload_words, p.hdr_words, p.fec_bits, p.flit_words, p.send_interval) == (4, 1, 9, 5, 6)
    assert p.hac_frame_words == 2
    assert p.goodput_max == pytest.approx(128 / (6 * 32))
    assert p.compensation_ppm == pytest.approx(1e6 / 1024)
    assert p.compensation_ppm > 2 * p.ppm_budget            # +-300 ppm per side fits


def _flip(d, c, k, bits):
    for b in bits:
        if b < k:
            d ^= 1 << b
        else:
            c ^= 1 << (b - k)
    return d, c


@pytest.mark.parametrize("k", [32, 132, 136])
def test_secded_model_every_single_and_double_error(k):
    """The software code: every single-bit error (data or check bit) corrected, every double-bit
    error detected, for every bit position (random data, all positions / random pairs)."""
    rng = random.Random(k)
    n = k + secded_check_bits(k)
    for _ in range(8):
        d = rng.getrandbits(k)
        c = secded_encode(d, k)
        assert secded_decode(d, c, k) == (d, OK)
        for b in range(n):
            assert secded_decode(*_flip(d, c, k, [b]), k) == (d, CORRECTED), b
        for _ in range(300):
            assert secded_decode(*_flip(d, c, k, rng.sample(range(n), 2)), k)[1] == UNCORRECTABLE


def test_secded_gateware_equals_model():
    """``secded_check`` / ``secded_correct`` (XOR trees) against the software code, no flip, one
    and two flips, at the DATA flit's 136 bits."""
    from amaranth.hdl import Module, Signal
    k = 136
    c = secded_check_bits(k)
    m = Module()
    d_in, c_in = Signal(k), Signal(c)
    enc = Signal(c)
    m.d.comb += enc.eq(secded_check(d_in, k))
    fixed, corr, bad = secded_correct(m, d_in, c_in, k, "t")
    fx, cr, bd = Signal(k), Signal(), Signal()
    m.d.comb += [fx.eq(fixed), cr.eq(corr), bd.eq(bad)]
    sim = Simulator(m)
    rng = random.Random(2)

    async def bench(ctx):
        for i in range(120):
            d = rng.getrandbits(k)
            ctx.set(d_in, d)
            assert ctx.get(enc) == secded_encode(d, k)
            dd, cc = _flip(d, secded_encode(d, k), k, rng.sample(range(k + c), i % 3))
            ctx.set(d_in, dd)
            ctx.set(c_in, cc)
            want, out = secded_decode(dd, cc, k)
            assert (ctx.get(cr), ctx.get(bd)) == (out == CORRECTED, out == UNCORRECTABLE)
            if out != UNCORRECTABLE:
                assert ctx.get(fx) == want == d

    sim.add_testbench(bench)
    sim.run()


def test_symbol_codes_have_distance_two():
    codes = [s.value for s in Sym]
    for a in codes:
        for b in codes:
            if a != b:
                assert bin(a ^ b).count("1") >= 2


def test_wire_format(tray):
    """Capture the TX wire: training, SKIP every skip_interval words, flits = header + payload
    (lane 0 in the low byte of the first word) + zlib CRC-32, HAC frames with the TX counter."""
    cfg = link_variant(FLIT_TRAY, skip_interval=32, hac_interval=64)
    p = LinkParams.from_cfg(cfg)
    dut = C2CLinkPair(cfg, train_words=40)
    sim = Simulator(dut)
    sim.add_clock(10e-9, domain="tx")
    sim.add_clock(10e-9, domain="rx")
    rng = random.Random(7)
    vecs = [rng.getrandbits(8 * cfg.lanes) for _ in range(12)]
    wire = []

    async def bench(ctx):
        i = 0
        for cycle in range(300):
            send = cycle >= 60 and cycle % p.send_interval == 0 and i < len(vecs)
            ctx.set(dut.send_valid, send)
            ctx.set(dut.send_data, vecs[i] if send else 0)
            i += send
            _, _, k, d, hac = await ctx.tick("tx").sample(dut.tx.wire.k, dut.tx.wire.data, dut.tx_cycle)
            wire.append((k, d, hac))
        ctx.set(dut.send_valid, 0)

    sim.add_testbench(bench)
    sim.run()
    # a SKIP falls due at fixed positions (the word in the wire register during cycle c was chosen
    # in c-1) and goes out then or at the end of the frame in progress
    skips = [c for c, (k, d, _) in enumerate(wire) if k and d == Sym.SKIP.value]
    due = list(range(p.skip_interval, len(wire), p.skip_interval))
    assert len(skips) == len(due) and all(0 <= s - t < p.flit_words for s, t in zip(skips, due))
    assert wire[0][:2] == (0, 0)                 # the wire register before the first edge
    body = [(k, d, h) for k, d, h in wire[1:] if not (k and d == Sym.SKIP.value)]
    assert all(k and d == Sym.TRAIN.value for k, d, _ in body[:38])
    frames, cur = [], None
    for k, d, h in body:
        if k and (d & 0xF) in (Sym.DATA.value, Sym.HAC.value):
            cur = [(d, h)]
            frames.append(cur)
        elif not k:
            cur.append((d, h))
    data = [f for f in frames if f[0][0] & 0xF == Sym.DATA.value]
    hacs = [f for f in frames if f[0][0] & 0xF == Sym.HAC.value]
    assert len(data) == len(vecs) and hacs
    for n, (f, v) in enumerate(zip(data, vecs)):
        words = [d for d, _ in f]
        assert [(int(i == 0), wd) for i, wd in enumerate(words)] == encode_flit(p, v, n)
        assert words[0] & 0xFF == Sym.DATA.value | (n << 4)
        assert sum(wd << (32 * j) for j, wd in enumerate(words[1:5])) == v
    for f in hacs:
        words = [d for d, _ in f]
        # the value is the TX counter in the cycle the header was loaded into the wire register
        assert [(int(i == 0), wd) for i, wd in enumerate(words)] == encode_hac(p, f[0][1] - 1)


# ---------------------------------------------------------------------------------------------
# (a) the configured link at 0, +-100, +-300 ppm

@pytest.mark.parametrize("tx_ppm,rx_ppm", [(0, 0), (300, -300)] + [pytest.param(t, r, marks=SLOW) for t, r in
                                                                  [(100, 0), (-100, 0), (300, 0), (-300, 0)]])
def test_link_ppm(tray, tx_ppm, rx_ppm):
    """The fast tier runs the configured link at 0 and at the largest offset (+-300 ppm on both
    sides); the slow tier adds +-100 and +-300 on one side."""
    r = run_link(tray, tx_ppm=tx_ppm, rx_ppm=rx_ppm, n_vectors=300, seed=tx_ppm + 7 * rx_ppm + 1)
    expect_clean(r, 300)
    if tx_ppm == rx_ppm:
        assert r.status["skips_removed"] == r.status["skips_inserted"] == 0
        assert r.status["fill_min"] == r.status["fill_max"]


def test_link_random_gaps(tray):
    r = run_link(tray, tx_ppm=-300, rx_ppm=300, n_vectors=200, gap_jitter=9, seed=11)
    expect_clean(r, 200)


@pytest.mark.parametrize("width", [8, pytest.param(16, marks=SLOW), pytest.param(64, marks=SLOW), 128])
def test_link_widths(width):
    cfg = width_variant(width, skip_interval=64)
    r = run_link(cfg, tx_ppm=2000, rx_ppm=-2000, n_vectors=60, seed=width)
    expect_clean(r, 60)


# ---------------------------------------------------------------------------------------------
# every width the loader accepts: LinkParams against the words LinkTX puts on the wire

WIDTHS = [8, 16, 32, 64, 128]          # every power of two from 8 to 8 x lanes (tray: 16 lanes)


@pytest.mark.parametrize("width,flit,interval,hac_frame,seq_bits", [
    (8, 19, 20, 6, 4), (16, 10, 11, 3, 8), (32, 5, 6, 2, 8), (64, 3, 4, 2, 8), (128, 2, 3, 2, 8)])
def test_params_at_width(width, flit, interval, hac_frame, seq_bits):
    cfg = width_variant(width)
    p = LinkParams.from_cfg(cfg)
    assert (p.flit_words, p.send_interval, p.hac_frame_words, p.seq_bits) == (flit, interval, hac_frame, seq_bits)
    assert (cfg.flit_words, cfg.vector_interval) == (flit, interval)        # the config's view is the same


def _tx_wire(cfg, offers, cycles):
    """``LinkTX`` alone: ``offers`` maps a cycle to the vector offered in it (``send_valid``).
    Returns ([(k, data)] of the word chosen in each cycle, final ``overrun``)."""
    dut = LinkTX(cfg, domain="tx", train_words=4)
    sim = Simulator(dut)
    sim.add_clock(10e-9, domain="tx")
    wire, out = [], {}

    async def bench(ctx):
        for c in range(cycles):
            v = offers.get(c)
            ctx.set(dut.send_valid, v is not None)
            ctx.set(dut.send_data, v or 0)
            _, _, k, d = await ctx.tick("tx").sample(dut.wire.k, dut.wire.data)
            wire.append((k, d))
        out["overrun"] = ctx.get(dut.overrun)

    sim.add_testbench(bench)
    sim.run()
    return wire[1:], out["overrun"]       # the wire register holds the word chosen a cycle before


def _tx_frames(wire):
    """[(code, first cycle, last cycle, [words])] of the DATA and HAC frames (SKIPs left out)."""
    frames, cur = [], None
    for c, (k, d) in enumerate(wire):
        if k and d & 0xF == Sym.SKIP.value:
            continue
        if k and d & 0xF in (Sym.DATA.value, Sym.HAC.value):
            cur = [d & 0xF, c, c, [d]]
            frames.append(cur)
        elif not k and cur is not None:
            cur[2] = c
            cur[3].append(d)
        else:
            cur = None
    return frames


@pytest.mark.parametrize("width", WIDTHS)
def test_tx_flit_words_at_width(width):
    """One vector into an idle LinkTX: the DATA flit is flit_words words (header field with the
    sequence number and the SECDED bits, then the vector's bits lane 0 first: ``encode_flit``), its
    header chosen in the cycle the vector is offered; a HAC frame is hac_frame_words words."""
    cfg = width_variant(width, hac_interval=64)
    p = LinkParams.from_cfg(cfg)
    v = random.Random(width).getrandbits(8 * cfg.lanes)
    wire, overrun = _tx_wire(cfg, {20: v}, 20 + 64 + 2 * p.flit_words + p.hac_frame_words)
    frames = _tx_frames(wire)
    data = [f for f in frames if f[0] == Sym.DATA.value]
    hacs = [f for f in frames if f[0] == Sym.HAC.value]
    assert overrun == 0 and len(data) == 1 and hacs
    _, first, last, words = data[0]
    assert first == 20 and last - first + 1 == len(words) == p.flit_words
    assert words == [wd for _, wd in encode_flit(p, v, 0)]
    h = p.hdr_words
    assert sum(wd << (width * j) for j, wd in enumerate(words[h:])) == v
    _, first, last, words = hacs[0]                  # (a later one may be cut off by the end of the run)
    assert last - first + 1 == len(words) == p.hac_frame_words


@pytest.mark.parametrize("width", WIDTHS)
def test_tx_keeps_the_link_rate_at_width(width):
    """Vectors every send_interval cycles, with a SKIP every send_interval + 1 words (the most the
    loader allows) and a HAC frame due every 16 cycles: no overrun, and every flit ends at most
    max_tx_wait cycles after it would from an idle TX.  One cycle faster, the SKIPs overrun it."""
    F = LinkParams.from_cfg(width_variant(width)).send_interval
    for skip in (max(16, F + 1), 1024):
        cfg = width_variant(width, skip_interval=skip, hac_interval=16)
        p = LinkParams.from_cfg(cfg)
        rng = random.Random(width + skip)
        t0, n = 10 + rng.randrange(min(skip, 40)), 30
        offers = {t0 + i * F: rng.getrandbits(8 * cfg.lanes) for i in range(n)}
        wire, overrun = _tx_wire(cfg, offers, t0 + n * F + 3 * p.flit_words)
        data = [f for f in _tx_frames(wire) if f[0] == Sym.DATA.value]
        assert overrun == 0 and len(data) == n
        late = [last - (t + p.flit_words - 1) for (_, _, last, _), t in zip(data, sorted(offers))]
        assert 0 <= min(late) and max(late) <= p.max_tx_wait, late
        if skip < 1024:
            fast = 2 * F * skip // (F - 1)               # enough vectors for 2F SKIPs
            offers = {t0 + i * (F - 1): 1 for i in range(fast)}
            assert _tx_wire(cfg, offers, t0 + fast * (F - 1))[1] == 1


@pytest.mark.parametrize("width", WIDTHS)
def test_latency_at_width_within_max_latency(width):
    """TX accept to recv_valid at equal clocks, with HAC frames due every 16 cycles and random gaps:
    never below nominal_latency, never above max_latency (what link_latency must cover)."""
    cfg = width_variant(width, skip_interval=64, hac_interval=16)
    p = LinkParams.from_cfg(cfg)
    r = run_link(cfg, n_vectors=40, gap_jitter=p.hac_frame_words + 2, seed=width)
    expect_clean(r, 40)
    lat = [round(x, 6) for x in r.latencies()]
    assert p.nominal_latency in lat
    assert min(lat) >= p.nominal_latency and max(lat) <= p.max_latency, lat


def test_loader_link_rules():
    """Every power-of-two width from 8 to 8 x lanes loads when link_latency covers the link's
    latency; narrow links need more (named with the reason), and a SKIP rate above one per flit
    slot is refused."""
    base = FLIT_TRAY
    for w in WIDTHS:
        assert width_variant(w).link["width_bits"] == w
    assert link_problems(base.lanes, base.link, base.link_latency) == []
    with pytest.raises(ValueError, match=r"'c2c.link_latency': is 24 but with c2c.width_bits 8 a vector can take "
                                         r"up to 36 cycles from SEND to RECV .*19-word flits.* at least 40"):
        link_variant(FLIT_TRAY, width_bits=8)
    with pytest.raises(ValueError, match=r"'c2c.link_latency': is 20 but with c2c.width_bits 16 .* at least 28"):
        link_variant(FLIT_TRAY, width_bits=16, link_latency=20)
    with pytest.raises(ValueError, match=r"'c2c.skip_interval': is 20 but with c2c.width_bits 8 a vector takes 20 "
                                         r"link cycles .*must be more than 20"):
        link_variant(FLIT_TRAY, width_bits=8, skip_interval=20, link_latency=64)
    with pytest.raises(ValueError, match=r"'c2c.width_bits': is 256 but a vector has only 128 bits"):
        link_variant(FLIT_TRAY, width_bits=256, link_latency=64)
    assert link_problems(16, dict(base.link, width_bits=24), 64) == [
        ("c2c.width_bits", ("is 24 but a link word must be a power of two of at least 8 bits that divides the "
                            "vector's 128 bits"))]


# ---------------------------------------------------------------------------------------------
# (b) exaggerated drift: SKIP removal and insertion in short runs

@pytest.mark.parametrize("tx_ppm,rx_ppm", [pytest.param(5000, 0, marks=SLOW),
                                           pytest.param(-5000, 0, marks=SLOW),
                                           (5000, -5000), pytest.param(-5000, 5000, marks=SLOW)])
def test_exaggerated_drift(tx_ppm, rx_ppm):
    cfg = link_variant(FLIT_TRAY, skip_interval=64)              # absorbs up to 1/64 = 15625 ppm
    r = run_link(cfg, tx_ppm=tx_ppm, rx_ppm=rx_ppm, n_vectors=300, seed=3)
    expect_clean(r, 300)
    s = r.status
    words = len(r.sent) * r.params.send_interval
    need = abs(tx_ppm - rx_ppm) * 1e-6 * words          # words of drift to compensate, roughly
    if tx_ppm > rx_ppm:                                  # writer faster: SKIPs dropped
        assert s["skips_inserted"] == 0 and s["skips_removed"] >= need - 3
    else:                                                # reader faster: SKIPs repeated
        assert s["skips_removed"] == 0 and s["skips_inserted"] >= need - 3
    assert s["fill_min"] > 1 and s["fill_max"] < r.params.depth - 1


# ---------------------------------------------------------------------------------------------
# (c) bit errors: single ones corrected, double ones detected, never a wrong vector

def _flip_run(flips, n=120, cfg=FLIT_TRAY):
    """Run with ``flips``; every delivered vector is the one sent (in order), a vector is missing
    only if its flit was hit, and nothing raises the alarm."""
    r = run_link(cfg, n_vectors=n, flips=flips, seed=5)
    got = delivered(r)
    sent = [v for v, _ in r.sent]
    it = iter(enumerate(sent))
    for v in got:                               # a subsequence of the sent vectors, in order
        for i, s in it:
            if s == v:
                break
            assert i in r.corrupted, f"vector {i} lost without a flipped bit"
        else:
            raise AssertionError("a delivered vector was never sent (silently wrong)")
    assert r.status["flits_ok"] == len(got)
    assert r.status["alarm"] == 0
    return r


def _protected_bits(p, word):
    """Bit positions of flit word ``word`` covered by the SECDED code (the header's code bits and
    padding are not; K flags of body words are ignored by the deframer)."""
    if word >= p.hdr_words:
        return list(range(p.width))
    lo, hi = word * p.width, (word + 1) * p.width
    return [b - lo for b in range(4, 4 + p.seq_bits + p.fec_bits) if lo <= b < hi]


@pytest.mark.parametrize("width", [32, 8])
def test_single_bit_errors_corrected(width):
    """One flipped bit in every flit, anywhere in its sequence number, check bits, payload or in a
    body word's K flag: every vector delivered bit-exact, each counted as corrected."""
    cfg = FLIT_TRAY if width == 32 else width_variant(width)
    p = LinkParams.from_cfg(load_config(cfg))
    rng = random.Random(width)
    flips = []
    for f in range(60):
        word = rng.randrange(p.flit_words)
        bits = _protected_bits(p, word) + ([p.width] if word else [])
        flips.append((f, word, 1 << rng.choice(bits)))
    r = _flip_run(flips, n=60, cfg=cfg)
    assert delivered(r) == [v for v, _ in r.sent]
    s = r.status
    assert s["corrected"] == 60 and (s["crc_errors"], s["frame_errors"], s["seq_errors"]) == (0, 0, 0)


def test_double_bit_errors_detected(tray):
    """Two flipped protected bits in every other flit (same word or two words): every one
    detected (``crc_errors``), none delivered, the rest intact."""
    p = LinkParams.from_cfg(tray)
    rng = random.Random(9)
    cells = [(w, b) for w in range(p.flit_words) for b in _protected_bits(p, w)]
    flips = []
    for f in range(0, 120, 2):
        for w, b in rng.sample(cells, 2):
            flips.append((f, w, 1 << b))
    r = _flip_run(flips)
    assert len(delivered(r)) == 60
    assert r.status["crc_errors"] == 60 and r.status["frame_errors"] == 0 and r.status["corrected"] == 0


def test_bit_errors_in_header_code_and_k_flag(tray):
    """Flips in the header's symbol code or K flag: the flit is not recognised, so it is lost, but
    always reported (framing error; the next flit's sequence number), and the next is delivered."""
    rng = random.Random(4)
    flips = []
    for f in range(0, 120, 3):
        bits = rng.sample(list(range(4)) + [32], rng.choice([1, 2]))
        flips.append((f, 0, sum(1 << b for b in bits)))
    r = _flip_run(flips)
    s = r.status
    assert len(delivered(r)) == 80
    assert s["frame_errors"] + s["crc_errors"] >= len(flips) and s["seq_errors"] == len(flips)


@pytest.mark.parametrize("burst", [2])
def test_bursts_corrected_or_flagged(tray, burst):
    """A burst of up to ``burst`` consecutive wire bits (K flag included) flipped at random in every
    flit: each vector is delivered bit-exact or its loss is counted; never a wrong vector.  (SECDED
    guarantees this up to 2 bits; 3 or more bits in one flit can be miscorrected: docs/c2c.md.)"""
    p = LinkParams.from_cfg(tray)
    rng = random.Random(burst)
    flips = []
    for f in range(120):
        word = rng.randrange(p.flit_words)
        n = rng.randint(1, burst)
        lo = rng.randrange(p.width + 1)
        mask = sum(1 << b for b in range(lo, min(lo + n, p.width + 1)) if rng.random() < 0.7 or b == lo)
        flips.append((f, word, mask))
    r = _flip_run(flips)
    s = r.status
    lost = 120 - len(delivered(r))
    assert s["crc_errors"] + s["frame_errors"] + s["seq_errors"] >= min(lost, 1)
    assert s["crc_errors"] + s["frame_errors"] >= lost - s["seq_errors"]


def test_decode_frame_model_matches_rtl_injection(tray):
    """The software deframer (``decode_frame``, used by the golden tray) decides like the RTL for
    random single, double and K-flag flips: delivered (same bits) or not."""
    p = LinkParams.from_cfg(tray)
    rng = random.Random(12)
    flips, expect = [], []
    r0 = run_link(tray, n_vectors=80, seed=5)
    sent = [v for v, _ in r0.sent]
    for f in range(80):
        word = rng.randrange(p.flit_words)
        mask = sum(1 << b for b in rng.sample(range(p.width + 1), rng.choice([1, 1, 2])))
        flips.append((f, word, mask))
        words = encode_flit(p, sent[f], f)
        k, w = words[word]
        words[word] = (k ^ (mask >> p.width), w ^ (mask & ((1 << p.width) - 1)))
        kind, v, _, out = decode_frame(p, words)
        expect.append(sent[f] if out != UNCORRECTABLE and kind == "data" else None)
    r = run_link(tray, n_vectors=80, flips=flips, seed=5)
    assert delivered(r) == [v for v in expect if v is not None]


# ---------------------------------------------------------------------------------------------
# (d) drift beyond the budget raises the alarm; (e) without compensation the buffer runs away

@pytest.mark.parametrize("tx_ppm,flag", [(25000, "high"), pytest.param(-25000, "low", marks=SLOW)])
def test_drift_beyond_budget_alarms(tx_ppm, flag):
    cfg = link_variant(FLIT_TRAY, skip_interval=64)              # absorbs at most 15625 ppm
    r = run_link(cfg, tx_ppm=tx_ppm, n_vectors=100, run_cycles=2000, seed=2)
    assert r.status["alarm"] == 1 and r.status["alarm_flags"][flag] == 1


@pytest.mark.slow
@pytest.mark.parametrize("tx_ppm,flags", [(5000, ("high", "overflow")), (-5000, ("low", "underflow"))])
def test_no_compensation_runs_away(tx_ppm, flags):
    cfg = link_variant(FLIT_TRAY, skip_interval=64)
    off = run_link(cfg, tx_ppm=tx_ppm, n_vectors=200, run_cycles=3000, compensate=False, seed=8)
    on = run_link(cfg, tx_ppm=tx_ppm, n_vectors=200, run_cycles=3000, compensate=True, seed=8)
    assert off.status["alarm"] == 1
    assert all(off.status["alarm_flags"][f] for f in flags)
    assert on.status["alarm"] == 0 and delivered(on) == [v for v, _ in on.sent]


# ---------------------------------------------------------------------------------------------
# (f) latency and the HAC exchange

@pytest.mark.parametrize("tx_ppm,rx_ppm", [(300, -300), pytest.param(0, 0, marks=SLOW),
                                           pytest.param(-300, 300, marks=SLOW)])
def test_latency_stable(tray, tx_ppm, rx_ppm):
    p = LinkParams.from_cfg(tray)
    m = measure_link(tray, tx_ppm, 200, rx_ppm=rx_ppm)
    assert m["lost"] == 0 and m["in_order_exact"]
    # a vector waits at most for a HAC frame (+ a SKIP) ahead of it in the TX
    assert p.nominal_latency - 1 <= m["latency_min"]
    assert m["latency_max"] <= p.nominal_latency + p.hac_frame_words + 1
    assert m["goodput_data"] == pytest.approx(p.goodput_max, rel=2e-3)


def test_latency_isolated_vectors_exact(tray):
    """Vectors that find the TX idle arrive exactly nominal_latency rx cycles later."""
    p = LinkParams.from_cfg(tray)
    r = run_link(tray, n_vectors=60, interval=23, seed=4)
    lat = [round(x, 6) for x in r.latencies()]
    assert lat.count(p.nominal_latency) >= 50
    assert set(lat) <= set(range(p.nominal_latency, p.nominal_latency + p.hac_frame_words + 2))


def test_hac_offset_tracks_drift():
    cfg = link_variant(FLIT_TRAY, skip_interval=64, hac_interval=64)
    r0 = run_link(cfg, n_vectors=100, seed=1)
    assert r0.hac_offsets and all(off == 0 for _, off in r0.hac_offsets)
    r = run_link(cfg, tx_ppm=4000, n_vectors=200, seed=1)
    assert len(r.hac_offsets) > 10
    for edge, off in r.hac_offsets:
        # the sender's counter runs 4000 ppm fast: local - remote falls by 4 per 1000 cycles
        assert abs(off + 4000e-6 * edge) <= 2.5, (edge, off)


# ---------------------------------------------------------------------------------------------
# the rate contract, training

def test_overrun_when_faster_than_link_rate():
    cfg = link_variant(FLIT_TRAY, skip_interval=16)
    p = LinkParams.from_cfg(cfg)
    r = run_link(cfg, n_vectors=150, interval=p.send_interval - 1)
    assert r.status["overrun"] == 1
    ok = run_link(cfg, n_vectors=150, interval=p.send_interval)
    assert ok.status["overrun"] == 0 and len(ok.received) == 150


def test_training_handshake(tray):
    """With train_words=0 the TX trains until told `train_done`; sending during training is an
    overrun; the RX reports locked, then trained once the buffer is centred and training ends."""
    dut = C2CLinkPair(tray, train_words=0)
    sim = Simulator(dut)
    sim.add_clock(10e-9, domain="tx")
    sim.add_clock(10.003e-9, domain="rx")

    async def bench(ctx):
        await ctx.tick("tx").repeat(100)
        assert ctx.get(dut.training) == 1 and ctx.get(dut.locked) == 1 and ctx.get(dut.trained) == 0
        ctx.set(dut.send_valid, 1)
        await ctx.tick("tx")
        ctx.set(dut.send_valid, 0)
        assert ctx.get(dut.overrun) == 1 and ctx.get(dut.trained) == 0
        ctx.set(dut.train_done, 1)
        await ctx.tick("tx")
        assert ctx.get(dut.training) == 0
        await ctx.tick("tx").repeat(30)
        assert ctx.get(dut.trained) == 1 and ctx.get(dut.alarm) == 0
        assert ctx.get(dut.flits_ok) == 0

    sim.add_testbench(bench)
    sim.run()


def test_small_elastic_buffer_rejected():
    # the config refuses it (two synchronizer delays alone use about 7 words of the buffer)
    with pytest.raises(ValueError, match=r"c2c.elastic_depth': must be in \[16, 1024\], got 8"):
        LinkRX(link_variant(FLIT_TRAY, elastic_depth=8))


@SLOW
def test_verilog_convert(tray):
    """(The fast tier converts LinkTX and LinkRX inside the duo tray's Verilog build.)"""
    text = verilog.convert(C2CLinkPair(tray), name="c2c_link_pair")
    assert "module c2c_link_pair" in text and "tx_clk" in text and "rx_clk" in text


# ---------------------------------------------------------------------------------------------
# slow: the configured SKIP interval over long runs

@pytest.mark.slow
@pytest.mark.parametrize("tx_ppm,rx_ppm", [(300, -300), (-300, 300)])
def test_long_run_real_config(tray, tx_ppm, rx_ppm):
    """600 ppm apart with a SKIP every 1024 words: ~1 compensation per 1700 words."""
    r = run_link(tray, tx_ppm=tx_ppm, rx_ppm=rx_ppm, n_vectors=4000, seed=13)
    expect_clean(r, 4000)
    moved = r.status["skips_removed"] if tx_ppm > rx_ppm else r.status["skips_inserted"]
    assert moved >= 8


@pytest.mark.slow
@pytest.mark.parametrize("tx_ppm", [600, -600])
def test_long_run_no_compensation_real_config(tray, tx_ppm):
    """Without SKIP handling even the in-budget 600 ppm runs the 16-word buffer out."""
    r = run_link(tray, tx_ppm=tx_ppm, n_vectors=100, run_cycles=16000, compensate=False)
    assert r.status["alarm"] == 1
    r = run_link(tray, tx_ppm=tx_ppm, n_vectors=100, run_cycles=16000, compensate=True)
    assert r.status["alarm"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("tx_ppm", [14000, -14000])
def test_near_compensation_limit(tx_ppm):
    cfg = link_variant(FLIT_TRAY, skip_interval=64)              # limit 15625 ppm
    r = run_link(cfg, tx_ppm=tx_ppm, n_vectors=1500, seed=21)
    expect_clean(r, 1500)


@pytest.mark.slow
@pytest.mark.parametrize("tx_ps,rx_ps", [(10000, 10050), (10050, 10000)])
def test_cocotb_icarus_two_clocks(tmp_path, tx_ps, rx_ps):
    """The Verilog of C2CLinkPair under cocotb + Icarus, two cocotb Clocks ~5000 ppm apart."""
    import shutil
    import xml.etree.ElementTree as ET

    assert shutil.which("iverilog"), "Icarus Verilog is missing: `make setup` installs it (apt-get install iverilog)"
    from tinylpu.sim.rtl.cocotb_c2c import run_c2c_cocotb
    results = run_c2c_cocotb(link_variant(FLIT_TRAY, skip_interval=64), tmp_path, tx_ps=tx_ps, rx_ps=rx_ps)
    cases = ET.parse(results).getroot().iter("testcase")
    outcomes = [(c.get("name"), [x.tag for x in c if x.tag in ("failure", "error", "skipped")])
                for c in cases]
    assert outcomes and all(not bad for _, bad in outcomes), outcomes


# ---------------------------------------------------------------------------------------------
# burst framing (c2c.framing: burst): one frame per SEND, a frame FEC, store and forward

def burst_cfg(width=32, burst_vectors=None, **c2c):
    from tinylpu.sim.perf.c2c import burst_variant
    B = burst_vectors or (16 if width == 32 else 64)
    return burst_variant("tray", B, **({"width_bits": width} if width != 32 else {}), **c2c)


def test_burst_params():
    p = LinkParams.from_cfg(burst_cfg())
    assert (p.send_interval, p.count_bits, p.bhdr_bits, p.frame_syndrome_bits, p.frame_fec_bits, p.trailer_words,
            p.frame_gap) == (4, 4, 22, 13, 30, 1, 3)
    assert p.frame_words(16) == 66 and p.frame_period(16) == 67
    assert p.goodput_max == 64 / 67 >= 0.94
    p64 = LinkParams.from_cfg(burst_cfg(64))
    assert (p64.send_interval, p64.frame_gap, p64.frame_period(64)) == (2, 3, 131)
    assert p64.goodput_max == 128 / 131 >= 0.97
    # every payload bit has its own code, none a power of two (a check bit's syndrome)
    from tinylpu.link import burst_bit_codes
    for q in (p, p64):
        codes = {(j << q.bit_code_bits) | c for j in range(q.burst_vectors * q.payload_words)
                 for c in burst_bit_codes(q)}
        assert len(codes) == q.burst_vectors * q.payload_words * q.width
        assert all(c & (c - 1) for c in codes) and max(codes) < 1 << q.frame_syndrome_bits


@pytest.mark.parametrize("width,n", [(32, 1), (32, 3), (32, 16), (64, 5), pytest.param(64, 64, marks=SLOW)])
def test_burst_codec_every_single_and_random_double_error(width, n):
    """``encode_burst``/``decode_burst``: every covered bit flipped alone is corrected bit-exact;
    two in one code are detected; a body K flag is ignored; a bit in each code is corrected."""
    from tests.tray_programs import burst_cells
    from tinylpu.link import decode_burst, encode_burst
    p = LinkParams.from_cfg(burst_cfg(width))
    rng = random.Random(n)
    vecs = [rng.getrandbits(128) for _ in range(n)]
    frame = encode_burst(p, vecs, 7)
    assert len(frame) == p.frame_words(n) and decode_burst(p, frame) == (vecs, 7, OK)

    def hit(cells):
        f = list(frame)
        for w, b in cells:
            k, d = f[w]
            f[w] = (k ^ 1, d) if b == p.width else (k, d ^ (1 << b))
        return decode_burst(p, f)
    cells = burst_cells(p, n)
    for w, b, _ in cells:
        assert hit([(w, b)]) == (vecs, 7, CORRECTED), (w, b)
    for _ in range(2000):
        (w1, b1, c1), (w2, b2, c2) = rng.sample(cells, 2)
        got = hit([(w1, b1), (w2, b2)])
        if "k" in (c1, c2) or c1 != c2:
            assert got == (vecs, 7, CORRECTED)
        else:
            assert got[2] == UNCORRECTABLE, ((w1, b1), (w2, b2))


@pytest.mark.parametrize("ppm", [0, pytest.param(300, marks=SLOW), pytest.param(-300, marks=SLOW), pytest.param(600, marks=SLOW),
                                 pytest.param(-600, marks=SLOW), pytest.param(100, marks=SLOW),
                                 pytest.param(-100, marks=SLOW)])
def test_burst_link_goodput_at_ppm(ppm):
    """Frames of 16 vectors back to back at the link rate (4 cycles per vector + the 3-cycle frame
    gap), the sender ppm/2 fast and the receiver ppm/2 slow: every vector delivered in order, the
    goodput the formula's (64/67 >= 0.94) within the run's edges, the frame latency within
    [nominal - 2, max_latency]."""
    cfg = burst_cfg()
    p = LinkParams.from_cfg(cfg)
    r = run_link(cfg, tx_ppm=ppm / 2, rx_ppm=-ppm / 2, n_vectors=12 * 16)
    assert delivered(r) == [v for v, _ in r.sent]
    s = r.status
    assert (s["crc_errors"], s["frame_errors"], s["seq_errors"], s["alarm"], s["overrun"]) == (0, 0, 0, 0, 0)
    assert s["flits_ok"] == 12
    assert abs(r.goodput() - p.goodput_max) < 0.003 and r.goodput() >= 0.94
    lat = r.frame_latencies()
    assert p.nominal_latency - 2 <= min(lat) and max(lat) <= p.max_latency


def test_burst_link_width_64():
    cfg = burst_cfg(64)
    p = LinkParams.from_cfg(cfg)
    r = run_link(cfg, tx_ppm=150, rx_ppm=-150, n_vectors=4 * 64)
    assert delivered(r) == [v for v, _ in r.sent] and r.status["overrun"] == 0
    assert abs(r.goodput() - p.goodput_max) < 0.003 and r.goodput() >= 0.97
    lat = r.frame_latencies()
    assert p.nominal_latency - 2 <= min(lat) and max(lat) <= p.max_latency


def test_burst_link_short_frames_and_gaps():
    """Frames of 1 and 3 vectors (a SEND of 1 is a frame of 1), random gaps: all delivered."""
    cfg = burst_cfg()
    for frame in (1, 3):
        r = run_link(cfg, n_vectors=18, frame=frame, gap_jitter=5, seed=frame)
        assert delivered(r) == [v for v, _ in r.sent] and r.status["overrun"] == 0
        assert r.status["flits_ok"] == 18 // frame


def _burst_flip_run(flips, n, frame, ppm=200):
    return run_link(burst_cfg(), tx_ppm=ppm, n_vectors=n, frame=frame, flips=flips)


def test_burst_single_bit_errors_corrected_rtl():
    """One random covered bit flipped in every frame (header fields, payload, trailer, body K
    flags): every vector delivered bit-exact, every frame counted as corrected."""
    from tests.tray_programs import burst_cells
    p = LinkParams.from_cfg(burst_cfg())
    rng = random.Random(11)
    cells = burst_cells(p, 4)
    picks = [cells[0], cells[-1], cells[-2]] + rng.sample(cells, 21)      # header, trailer K and bits
    flips = [(f, w, 1 << b) for f, (w, b, _) in enumerate(picks)]
    r = _burst_flip_run(flips, 4 * len(picks), 4)
    assert delivered(r) == [v for v, _ in r.sent]
    s = r.status
    assert s["corrected"] == len(picks) and (s["crc_errors"], s["frame_errors"], s["seq_errors"]) == (0, 0, 0)


def test_burst_double_bit_errors_detected_rtl():
    """Two covered bits of one code flipped in every other frame: each such frame detected
    (``crc_errors``, ``error``), none of its vectors delivered, the others intact."""
    from tests.tray_programs import burst_cells
    p = LinkParams.from_cfg(burst_cfg())
    rng = random.Random(12)
    by = {c: [(w, b) for w, b, cc in burst_cells(p, 4) if cc == c] for c in ("hdr", "frame")}
    flips = []
    for f in range(0, 16, 2):
        two = rng.sample(by["hdr" if f % 4 == 0 else "frame"], 2)
        flips += [(f, w, 1 << b) for w, b in two]
    r = _burst_flip_run(flips, 64, 4, ppm=-200)
    sent = [v for v, _ in r.sent]
    assert delivered(r) == [v for i, v in enumerate(sent) if (i // 4) % 2 == 1]
    s = r.status
    assert s["crc_errors"] == 8 and s["corrected"] == 0 and s["frame_errors"] == 0


def test_burst_adjacent_bit_bursts_corrected_or_flagged_rtl():
    """Bursts of 2 adjacent wire bits anywhere in a frame: every frame either delivered bit-exact
    or counted as uncorrectable (or a framing error), never a wrong vector."""
    p = LinkParams.from_cfg(burst_cfg())
    rng = random.Random(13)
    flips = []
    n_frames = 16
    for f in range(n_frames):
        w = rng.randrange(p.frame_words(4))
        b = rng.randrange(p.width)
        flips.append((f, w, 3 << b))
    r = _burst_flip_run(flips, 4 * n_frames, 4)
    sent = [v for v, _ in r.sent]
    got = delivered(r)
    assert all(v in sent for v in got) and got == sorted(got, key=sent.index)
    s = r.status
    assert len(got) // 4 + s["crc_errors"] + s["frame_errors"] >= n_frames
    assert len(got) % 4 == 0


def test_burst_loader_rules():
    from tinylpu.config import ConfigError
    from tinylpu.sim.perf.c2c import link_variant
    with pytest.raises(ConfigError, match=r"c2c.framing.*must be one of flit, burst; got 'wide'"):
        link_variant(FLIT_TRAY, framing="wide")
    with pytest.raises(ConfigError, match=r"c2c.burst_vectors.*applies to c2c.framing burst only"):
        link_variant(FLIT_TRAY, burst_vectors=4)
    with pytest.raises(ConfigError, match=r"c2c.width_bits.*burst framing needs width_bits >= 32"):
        link_variant(FLIT_TRAY, framing="burst", burst_vectors=16, width_bits=16, link_latency=60, rx_vectors=64)
    with pytest.raises(ConfigError, match=r"c2c.link_latency.*is 24 but .* link_latency must be at least 26"):
        link_variant(FLIT_TRAY, framing="burst", burst_vectors=16, rx_vectors=64)
    with pytest.raises(ConfigError, match=r"c2c.rx_vectors.*is 8 but a SEND of c2c.burst_vectors 16 .* at least 24"):
        link_variant(FLIT_TRAY, framing="burst", burst_vectors=16, link_latency=26)
    with pytest.raises(ConfigError, match=r"c2c.skip_interval.*is 64 but .* skip_interval must be more than 67"):
        link_variant(FLIT_TRAY, framing="burst", burst_vectors=16, link_latency=26, rx_vectors=24, skip_interval=64)
    with pytest.raises(ConfigError, match=r"c2c.hac_interval.*is 64 but .* hac_interval must be more than 67"):
        link_variant(FLIT_TRAY, framing="burst", burst_vectors=16, link_latency=26, rx_vectors=24, hac_interval=64)
    with pytest.raises(ConfigError, match=r"c2c.burst_vectors.*"):
        link_variant(FLIT_TRAY, framing="burst", burst_vectors=0)


@SLOW      # the fast tier: the duo build converts the link; the codec test covers triples
def test_burst_verilog_convert():
    cfg = burst_cfg()
    verilog.convert(C2CLinkPair(cfg), name="c2c_pair_burst")


@pytest.mark.parametrize("n", [1, pytest.param(2, marks=SLOW)])
def test_burst_every_single_bit_error_corrected_rtl(n):
    """Every covered bit of a frame of n vectors (header fields, payload bits, trailer bits, the
    body words' K flags) flipped in its own frame on the RTL link: every vector delivered bit-exact,
    every frame counted as corrected, nothing detected."""
    from tests.tray_programs import burst_cells
    p = LinkParams.from_cfg(burst_cfg())
    cells = burst_cells(p, n)
    flips = [(f, w, 1 << b) for f, (w, b, _) in enumerate(cells)]
    r = _burst_flip_run(flips, n * len(cells), n, ppm=-150)
    assert delivered(r) == [v for v, _ in r.sent]
    s = r.status
    assert s["corrected"] == len(cells) and (s["crc_errors"], s["frame_errors"], s["seq_errors"]) == (0, 0, 0)


def test_burst_codec_triple_errors_never_silently_wrong():
    """Three flipped bits of the frame code (which SECDED alone may miscorrect): the CRC-16 of the
    trailer, checked on the corrected payload, refuses every one of 3000 random patterns."""
    from tests.tray_programs import burst_cells
    from tinylpu.link import decode_burst, encode_burst
    p = LinkParams.from_cfg(burst_cfg())
    rng = random.Random(21)
    vecs = [rng.getrandbits(128) for _ in range(16)]
    frame = encode_burst(p, vecs, 3)
    cells = [(w, b) for w, b, c in burst_cells(p, 16) if c == "frame"]
    for _ in range(3000):
        f = list(frame)
        for w, b in rng.sample(cells, 3):
            k, d = f[w]
            f[w] = (k, d ^ (1 << b))
        assert decode_burst(p, f)[2] == UNCORRECTABLE


@SLOW      # the codec test (fast) refuses every triple pattern; this is the RTL's side
def test_burst_triple_errors_detected_rtl():
    """Three flipped payload / trailer bits in each of 12 frames of 4 vectors on the RTL link:
    no wrong vector is silent: every such frame is counted uncorrectable (by the Hamming code, or
    by the CRC of the corrected frame as it is delivered, which pulses ``error`` too)."""
    from tests.tray_programs import burst_cells
    p = LinkParams.from_cfg(burst_cfg())
    rng = random.Random(22)
    cells = [(w, b) for w, b, c in burst_cells(p, 4) if c == "frame"]
    flips = []
    for f in range(12):
        for w, b in rng.sample(cells, 3):
            flips.append((f, w, 1 << b))
    r = _burst_flip_run(flips, 48, 4)
    assert r.status["crc_errors"] == 12


def test_burst_header_code_and_k_flag_hits_detected_rtl():
    """A flipped bit of a burst header's symbol code or its K flag (outside the header's SECDED):
    the frame is not recognised, a framing / sequence error is counted (``error``: the link flag),
    its vectors are lost, nothing wrong is delivered and the next frames arrive intact."""
    p = LinkParams.from_cfg(burst_cfg())
    flips = [(1, 0, 1 << 1), (3, 0, 1 << p.width), (5, 0, 1 << 3)]
    r = _burst_flip_run(flips, 32, 4)
    sent = [v for v, _ in r.sent]
    assert delivered(r) == [v for i, v in enumerate(sent) if i // 4 not in (1, 3, 5)]
    s = r.status
    assert s["frame_errors"] + s["seq_errors"] >= 3 and s["corrected"] == 0
