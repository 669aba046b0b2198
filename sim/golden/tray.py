"""A tray of chips on the golden model: every chip cycle-exact, links with the configured latency.

The golden tray runs its chips in lockstep (ideal clocks): a vector SENT on chip a's port p at
cycle c can be RECEIVED on the peer port from cycle c + link_latency.  Clock drift, the elastic
buffers and the DESKEW realignment are the RTL's business; programs that are correct here keep
their cycle counts there, because DESKEW realigns every chip to the same epoch boundaries.
"""

from dataclasses import dataclass, field

import numpy as np

from tinylpu.config import load_config
from tinylpu.firmware.asm import assemble
from tinylpu.link import UNCORRECTABLE, LinkParams, decode_frame, encode_flit
from tinylpu.sim.golden.chip import Golden, ProgramError

__all__ = ["GoldenTray", "TrayResult", "run_tray_golden"]


@dataclass
class TrayResult:
    cycles: list                       # per chip
    link_vectors: dict = field(default_factory=dict)   # (chip, port) -> vectors sent
    activity: list = field(default_factory=list)


class GoldenTray:
    """``link_flips``: optional ``f(chip, port, index) -> [(word, mask), ...]``, bit errors injected
    into the ``index``-th DATA flit chip ``chip`` sends on ``port`` (mask bit ``width_bits`` = the K
    flag).  The flit goes through the wire format's software codec (``tinylpu.link.encode_flit`` /
    ``decode_frame``): a corrected vector arrives bit-exact, an uncorrectable one raises the link
    error, as the RTL's ``link`` flag does.  ``self.corrected`` counts corrected flits."""

    def __init__(self, config="tray", link_flips=None):
        self.cfg = cfg = load_config(config)
        self.link_flips = link_flips
        self.corrected = 0
        if cfg.chips < 2 or not cfg.c2c_ports:
            raise ValueError(f"config {cfg.name} is not a tray (chips {cfg.chips}, C2C ports {cfg.c2c_ports})")
        self.chips = [Golden(cfg) for _ in range(cfg.chips)]
        self.sent = {}
        for a, g in enumerate(self.chips):
            g.tx_hook = self._hook(a)

    def _hook(self, a):
        cfg = self.cfg

        def send(port, cycle, vec):
            b, q = cfg.peer(a, port)
            rx = self.chips[b].rx[q]
            if len(rx) >= cfg.link["rx_vectors"]:
                raise ProgramError(cycle, f"chip{b}.c2c", None, None,
                                   f"RX buffer of port {q} overflows: {cfg.link['rx_vectors']} vectors from chip {a} "
                                   f"have not been received yet")
            index = self.sent.get((a, port), 0)
            flips = self.link_flips(a, port, index) if self.link_flips else None
            if flips:
                vec = self._through_wire(a, port, index, cycle, vec, flips)
            rx.append((cycle + cfg.link_latency, vec.copy()))
            self.sent[(a, port)] = index + 1
        return send

    def _through_wire(self, a, port, index, cycle, vec, flips):
        """``vec`` encoded as its DATA flit, ``flips`` applied, decoded: the vector that arrives."""
        p = LinkParams.from_cfg(self.cfg)
        value = int.from_bytes(np.asarray(vec, np.int8).tobytes(), "little")
        words = encode_flit(p, value, index)
        for w, mask in flips:
            k, d = words[w]
            words[w] = (k ^ (mask >> p.width) & 1, d ^ (mask & ((1 << p.width) - 1)))
        kind, got, seq, out = decode_frame(p, words)
        if out == UNCORRECTABLE or kind != "data" or seq != index % (1 << p.seq_bits):
            raise ProgramError(cycle, f"chip{a}.c2c", None, None,
                               f"link error: flit {index} on port {port} has an uncorrectable error ({flips})")
        if out != "ok":
            self.corrected += 1
        return np.frombuffer(got.to_bytes(p.lanes, "little"), np.int8).copy()

    def load_programs(self, programs):
        if len(programs) != len(self.chips):
            raise ValueError(f"{len(programs)} programs for a tray of {len(self.chips)} chips")
        for g, p in zip(self.chips, programs):
            g.load_program(p)

    def run(self, max_cycles=1_000_000) -> TrayResult:
        self.sent = {}
        for g in self.chips:
            g.start()
        c = 0
        while not all(g.done for g in self.chips):
            for i, g in enumerate(self.chips):
                try:
                    g.step()
                except ProgramError as e:
                    raise ProgramError(e.cycle, f"chip{i}.{e.slice}", e.index, e.insn, e.message) from None
            c += 1
            if c >= max_cycles:
                raise ProgramError(c, "-", None, None, f"the tray did not halt within {max_cycles} cycles")
        res = [g.result() for g in self.chips]
        for i, g in enumerate(self.chips):
            left = {p: len(q) for p, q in g.rx.items() if q}
            if left:
                raise ProgramError(res[i].cycles, f"chip{i}.c2c", None, None,
                                   f"vectors arrived but were never received: {left} (port: count)")
        return TrayResult([r.cycles for r in res], dict(self.sent), [r.activity for r in res])


def run_tray_golden(tc, xq_per_chip):
    """Run a ``firmware.tray.TrayCompiled`` on the golden tray; xq_per_chip: int8 inputs per chip (None for idle)."""
    t = GoldenTray(tc.cfg)
    empty = assemble(".queue mem0\n HALT\n", tc.cfg)
    t.load_programs([c.program if c is not None else empty for c in tc.chips])
    for chip, (c, xq) in enumerate(zip(tc.chips, xq_per_chip)):
        if c is None:
            continue
        for bank, lst in list(c.mem_image.items()) + list(c.pack_input(xq).items()):
            for addr, v in lst:
                t.chips[chip].write_mem(bank, addr, v)
    res = t.run()
    return t, res
