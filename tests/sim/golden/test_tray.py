"""The golden tray: SEND/RECV over C2C with the configured latency, DESKEW, and their errors."""

import numpy as np
import pytest

from tests import tray_programs
from tests.harness import flit
from tinylpu.config import load_config
from tinylpu.firmware.asm import AsmError, assemble
from tinylpu.sim.golden.chip import ProgramError
from tinylpu.sim.golden.tray import GoldenTray

CFG = flit("tray")         # the per-vector timing below is flit framing's; burst framing: the end of the file
F = CFG.vector_interval
LAT = CFG.link_latency
EMPTY = ".queue mem0\n HALT\n"


def tray(sources, mem=()):
    t = GoldenTray(CFG)
    progs = [assemble(s, CFG, f"chip{i}.s") for i, s in enumerate(sources)]
    progs += [assemble(EMPTY, CFG)] * (CFG.chips - len(progs))
    t.load_programs(progs)
    for chip, bank, addr, data in mem:
        t.chips[chip].write_mem(bank, addr, data)
    return t


def sender(port, n, t_send=3):
    return tray_programs.sender(CFG, port, n, t_send)


def receiver(port, n, t_recv, out_addr=5):
    return tray_programs.receiver(CFG, port, n, t_recv, out_addr)


def test_send_recv_all_pairs_of_chip0():
    data = np.random.default_rng(0).integers(-128, 128, (3, 16), dtype=np.int8)
    for port in range(CFG.c2c_ports):
        peer, peer_port = CFG.peer(0, port)
        srcs = [EMPTY] * CFG.chips
        srcs[0] = sender(port, 3)
        srcs[peer] = receiver(peer_port, 3, 3 + LAT)
        t = tray(srcs, [(0, "mem7", 0, data)])
        r = t.run()
        assert np.array_equal(t.chips[peer].read_mem("mem7", 5, 3), data), port
        assert r.link_vectors == {(0, port): 3}


def test_peer_map_is_symmetric():
    for a in range(CFG.chips):
        for p in range(CFG.c2c_ports):
            b, q = CFG.peer(a, p)
            assert b != a and CFG.peer(b, q) == (a, p)


def test_recv_before_arrival_is_an_error():
    srcs = [sender(0, 1), receiver(0, 1, 3 + LAT - 1)]
    with pytest.raises(ProgramError, match=rf"chip1.c2c0, instruction #1 `RECV w0, 0`: RECV on port 0: no vector "
                                           rf"has arrived; the next arrives at cycle {3 + LAT}"):
        tray(srcs).run()


def test_unreceived_vectors_are_an_error():
    with pytest.raises(ProgramError, match=r"chip1.c2c: vectors arrived but were never received: \{0: 2\}"):
        tray([sender(0, 2)]).run()


def test_rx_buffer_overflow():
    n = CFG.link["rx_vectors"] + 1
    with pytest.raises(ProgramError, match=r"RX buffer of port 0 overflows"):
        tray([sender(0, n)]).run()


def test_deskew_waits_for_the_epoch_boundary():
    E = CFG.link["epoch"]
    src = """
    .queue mem0
        NOP 10
        DESKEW
        HALT
    .queue mem1
        DESKEW
        HALT
    """
    t = tray([src, src])
    r = t.run()
    assert t.chips[0].halted["mem0"] == E and t.chips[1].halted["mem1"] == E
    assert r.cycles[:2] == [E + 1, E + 1]


def test_deskew_needs_every_queue_parked_and_the_chip_quiet():
    E = CFG.link["epoch"]
    src = f"""
    .queue mem0
        DESKEW
        HALT
    .queue mem1
        NOP {E + 5}
        HALT
    """
    with pytest.raises(ProgramError, match=r"needs every live queue parked in DESKEW; queue mem1 is not"):
        tray([src]).run()
    src = f"""
    .queue mem0
        NOP {E - 2}
        READ e0, 0, n=4
        DESKEW
        HALT
    """
    with pytest.raises(ProgramError, match=r"the chip is not quiet \(mem0.rd\)"):
        tray([src]).run()


def test_port_out_of_range_and_c2c_on_a_single_chip():
    with pytest.raises(AsmError, match=r"port 7 out of range: config tray has 7 C2C ports"):
        assemble(".queue c2c0\n SEND 7, e0\n", load_config("tray"), "x.s")
    with pytest.raises(AsmError, match=r"RECV needs a C2C slice; config tiny has no C2C ports"):
        assemble(".queue mem0\n RECV e0, 0\n", load_config("tiny"), "x.s")


# --- link errors through the wire format's codec -----------------------------------------------

def _flip_cells(p):
    """(word, bit) of every bit of a DATA flit the SECDED code covers, plus the body words' K flags."""
    from tests.hdl.test_c2c import _protected_bits
    return [(w, b) for w in range(p.flit_words) for b in _protected_bits(p, w) + ([p.width] if w else [])]


def test_single_bit_link_errors_corrected_bit_exact():
    """Every flit of a 3-vector SEND hit by one random bit: every vector arrives bit-exact, each
    corrected; over 30 runs every position class is hit."""
    import random

    from tinylpu.link import LinkParams
    p = LinkParams.from_cfg(CFG)
    cells = _flip_cells(p)
    rng = random.Random(1)
    data = np.random.default_rng(0).integers(-128, 128, (3, 16), dtype=np.int8)
    for _ in range(30):
        picks = {}

        def flips(a, port, i):
            picks[i] = rng.choice(cells)
            return [(picks[i][0], 1 << picks[i][1])]

        srcs = [sender(0, 3), receiver(0, 3, 3 + LAT)]
        t = GoldenTray(CFG, link_flips=flips)
        t.load_programs([assemble(s, CFG) for s in srcs] + [assemble(EMPTY, CFG)] * (CFG.chips - 2))
        t.chips[0].write_mem("mem7", 0, data)
        t.run()
        assert np.array_equal(t.chips[1].read_mem("mem7", 5, 3), data)
        assert t.corrected == 3


def test_double_bit_link_errors_raise_the_link_error():
    import random

    from tinylpu.link import LinkParams
    p = LinkParams.from_cfg(CFG)
    cells = [(w, b) for w, b in _flip_cells(p) if b < p.width]
    rng = random.Random(2)
    data = np.ones((1, 16), np.int8)
    for _ in range(30):
        two = rng.sample(cells, 2)
        t = GoldenTray(CFG, link_flips=lambda a, port, i: [(w, 1 << b) for w, b in two])
        srcs = [sender(0, 1), receiver(0, 1, 3 + LAT)]
        t.load_programs([assemble(s, CFG) for s in srcs] + [assemble(EMPTY, CFG)] * (CFG.chips - 2))
        t.chips[0].write_mem("mem7", 0, data)
        with pytest.raises(ProgramError, match="link error: flit 0 on port 0 has an uncorrectable error"):
            t.run()


# --- one READ, several SENDs: how the gather split broadcasts the gated product ---------------------

@pytest.mark.parametrize("ports", [2, 3, F])
def test_stride0_read_feeds_sends_on_several_ports(ports):
    """A READ of n=P with stride 0 puts one vector on the stream P cycles in a row; SENDs on P ports,
    issued one cycle apart, each sample their copy (``firmware.tray._bcast``): every peer receives
    every vector, one READ per vector."""
    data = np.random.default_rng(ports).integers(-128, 128, (2, 16), dtype=np.int8)
    reads = "".join(f"        READ e0, {k}, n={ports}, stride=0\n        NOP {F - 1}\n" for k in range(2))
    sends = "".join(f"        SEND {p}, e0, n=2\n" for p in range(ports))
    src0 = f"""
    .queue mem7
{reads}        HALT
    .queue c2c0
        NOP 3
{sends}        NOP {2 * F + 4}
        HALT
    """
    srcs = [EMPTY] * CFG.chips
    srcs[0] = src0
    for p in range(ports):
        peer, peer_port = CFG.peer(0, p)
        srcs[peer] = receiver(peer_port, 2, 3 + p + LAT)
    t = tray(srcs, [(0, "mem7", 0, data)])
    r = t.run()
    for p in range(ports):
        peer, _ = CFG.peer(0, p)
        assert np.array_equal(t.chips[peer].read_mem("mem7", 5, 2), data), p
    assert r.link_vectors == {(0, p): 2 for p in range(ports)}


# --- burst framing (c2c.framing: burst): a SEND is one frame ---------------------------------------

def _burst():
    from tinylpu.sim.perf.c2c import burst_variant
    return burst_variant("duo", 16)


def _burst_tray(cfg, srcs, data, flips=None):
    t = GoldenTray(cfg, link_flips=flips)
    t.load_programs([assemble(s, cfg) for s in srcs])
    t.chips[0].write_mem("mem7", 0, data)
    return t


def test_burst_every_vector_arrives_link_latency_after_the_last_element():
    cfg = _burst()
    Fb, Lb, n = cfg.vector_interval, cfg.link_latency, 5
    assert Fb == cfg.link_params.payload_words == 4
    data = np.random.default_rng(5).integers(-128, 128, (n, 16), dtype=np.int8)
    arrive = 3 + (n - 1) * Fb + Lb
    t = _burst_tray(cfg, [tray_programs.sender(cfg, 0, n), tray_programs.receiver(cfg, 0, n, arrive)], data)
    r = t.run()
    assert np.array_equal(t.chips[1].read_mem("mem7", 5, n), data) and r.link_vectors == {(0, 0): n}
    t = _burst_tray(cfg, [tray_programs.sender(cfg, 0, n), tray_programs.receiver(cfg, 0, n, arrive - 1)], data)
    with pytest.raises(ProgramError, match=rf"RECV on port 0: no vector has arrived; the next arrives at cycle {arrive}"):
        t.run()


def test_burst_send_longer_than_a_frame_is_an_error():
    cfg = _burst()
    n = cfg.link["burst_vectors"] + 1
    data = np.zeros((n, 16), np.int8)
    t = _burst_tray(cfg, [tray_programs.sender(cfg, 0, n), EMPTY], data)
    with pytest.raises(ProgramError, match=r"cycle 3, slice chip0.c2c0: SEND of 17 vectors on port 0: a burst frame holds at "
                                           r"most c2c.burst_vectors = 16"):
        t.run()


def test_burst_frames_need_the_frame_gap():
    """Two SENDs back to back (the second one element slot after the first): the link needs
    ``frame_gap`` cycles between frames, refused as an overrun; with the gap they run."""
    cfg = _burst()
    Fb, G = cfg.vector_interval, cfg.link_params.frame_gap
    for extra, ok in ((0, False), (G - 1, False), (G, True)):
        src = f"""
        .queue mem7
            READ e0, 0
            NOP {Fb - 1}
            READ e0, 1
            NOP {Fb - 1 + extra}
            READ e0, 2
            NOP {Fb - 1}
            READ e0, 3
            NOP 40
            HALT
        .queue c2c0
            NOP 3
            SEND 0, e0, n=2
            NOP {Fb * 2 - 1 + extra}
            SEND 0, e0, n=2
            NOP 40
            HALT
        """
        recv = """
        .queue c2c0
            NOP 100
            RECV w0, 0, n=4
            NOP 40
            HALT
        """
        t = _burst_tray(cfg, [src, recv], np.zeros((4, 16), np.int8))
        if ok:
            t.run()
        else:
            with pytest.raises(ProgramError, match=rf"link overrun on port 0: a SEND may start a frame at cycle "
                                                   rf"{3 + 2 * Fb + G} at the earliest"):
                t.run()


def _burst_flip_run(cfg, n, flips):
    data = np.random.default_rng(n).integers(-128, 128, (n, 16), dtype=np.int8)
    arrive = 3 + (n - 1) * cfg.vector_interval + cfg.link_latency
    t = _burst_tray(cfg, [tray_programs.sender(cfg, 0, n), tray_programs.receiver(cfg, 0, n, arrive)], data, flips)
    return t, data


def test_burst_single_bit_link_errors_corrected_bit_exact():
    """Every covered bit of a 3-vector frame (header fields, payload, trailer, body K flags) flipped
    on its own: every vector arrives bit-exact, the frame counted as corrected."""
    cfg = _burst()
    p = cfg.link_params
    cells = tray_programs.burst_cells(p, 3)
    for w, b, _ in cells[::7] + cells[-3:]:
        t, data = _burst_flip_run(cfg, 3, lambda a, port, i: [(w, 1 << b)])
        t.run()
        assert np.array_equal(t.chips[1].read_mem("mem7", 5, 3), data), (w, b)
        assert t.corrected == 1


def test_burst_double_bit_link_errors_raise_the_link_error():
    """Two flipped bits in one code (the header's or the frame's): the link error, never a wrong
    vector.  (A body word's K flag is ignored, and a bit in each code is corrected by each.)"""
    import random
    cfg = _burst()
    p = cfg.link_params
    rng = random.Random(4)
    for code in ("hdr", "frame"):
        cells = [(w, b) for w, b, c in tray_programs.burst_cells(p, 2) if c == code]
        for _ in range(8):
            two = rng.sample(cells, 2)
            t, _ = _burst_flip_run(cfg, 2, lambda a, port, i: [(w, 1 << b) for w, b in two])
            with pytest.raises(ProgramError, match="link error: frame 0 on port 0 has an uncorrectable error"):
                t.run()
