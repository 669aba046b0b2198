"""C2C link wire format and timing: the K-symbol codes, the flit layout and every number derived
from the config's ``c2c`` section.  The one formula for link timing: the gateware (``hdl/c2c.py``,
``hdl/c2cslice.py``), the golden model, the compiler and the host all read it from here
(``ChipConfig.vector_interval`` is ``LinkParams.from_cfg(cfg).send_interval``).

Every power-of-two ``width_bits`` from 8 to ``8 * lanes`` works (docs/c2c.md, "Link width").  What a
width changes is the flit length, so the link rate and the latency: ``link_problems`` is the config
loader's check that ``c2c.link_latency`` covers the latency of the configured link.
"""

import math
from dataclasses import dataclass

from amaranth.lib import enum

__all__ = ["Sym", "LinkParams", "HAC_BITS", "CRC_POLY_REFLECTED", "CRC_INIT", "link_problems", "min_link_latency"]

#: Width of the hardware-aligned counter carried by HAC frames.
HAC_BITS = 32
#: CRC-32 (IEEE 802.3 / zlib): polynomial 0x04C11DB7, reflected, init and final XOR 0xFFFFFFFF.
CRC_POLY_REFLECTED = 0xEDB88320
CRC_INIT = 0xFFFFFFFF


class Sym(enum.Enum, shape=4):
    """K-symbol codes (bits [0, 4) of a word with k=1).  The five codes have even parity, so a
    single flipped bit never turns one symbol into another: it becomes an invalid code."""
    IDLE = 0x3
    SKIP = 0x5
    TRAIN = 0x6
    HAC = 0x9
    DATA = 0xA


@dataclass(frozen=True)
class LinkParams:
    """Numbers derived from the config's ``c2c`` section (``cfg.link``) and ``lanes``."""
    lanes: int
    width: int
    skip_interval: int
    hac_interval: int
    depth: int
    ppm_budget: float

    @classmethod
    def from_cfg(cls, cfg):
        return cls.from_link(cfg.lanes, cfg.link)

    @classmethod
    def from_link(cls, lanes, lk):
        """From ``lanes`` and the loader's ``c2c`` dict (``ChipConfig.link``)."""
        return cls(lanes=lanes, width=lk["width_bits"], skip_interval=lk["skip_interval"],
                   hac_interval=lk["hac_interval"], depth=lk["elastic_depth"],
                   ppm_budget=float(lk["ppm_budget"]))

    @property
    def payload_words(self):
        return 8 * self.lanes // self.width

    @property
    def crc_words(self):
        return -(-32 // self.width)

    @property
    def hac_words(self):
        return -(-HAC_BITS // self.width)

    @property
    def flit_words(self):
        """Words of one DATA flit: header + payload + CRC."""
        return 1 + self.payload_words + self.crc_words

    @property
    def hac_frame_words(self):
        return 1 + self.hac_words + self.crc_words

    @property
    def send_interval(self):
        """The link rate the compiler must respect: at most one vector per this many cycles.
        One word per flit slot is left for SKIP/HAC, so the link never falls behind."""
        return self.flit_words + 1

    @property
    def seq_bits(self):
        return min(8, self.width - 4)

    @property
    def goodput_max(self):
        """Payload bits / wire data bits at one vector per ``send_interval``."""
        return 8 * self.lanes / (self.send_interval * self.width)

    @property
    def nominal_latency(self):
        """Receiver cycles from the TX accepting a vector (into an idle TX) to ``recv_valid``, at
        equal clocks with the elastic buffer centred (measured; docs/c2c.md).  Drift moves it by
        at most a cycle or two either way while the buffer stays inside its guard band."""
        return self.flit_words + self.depth // 2 + 2

    @property
    def max_tx_wait(self):
        """Most cycles the last word of a vector's flit leaves the TX later than it would from an idle
        TX, for vectors offered at most one per ``send_interval``: a HAC frame whose header went out in
        the cycle before the vector (``hac_frame_words`` - 1) plus the SKIPs that fit in that frame
        and the flit (a window of ``hac_frame_words + flit_words + k`` words holds k SKIPs when
        (k - 1)(skip_interval - 1) <= hac_frame_words + flit_words).  Needs ``skip_interval`` >
        ``send_interval`` (``link_problems``): then no slot holds two SKIPs and a burst's delay only
        shrinks, one spare word per flit."""
        return self.hac_frame_words + (self.hac_frame_words + self.flit_words) // (self.skip_interval - 1)

    @property
    def max_latency(self):
        """Worst cycles from a SEND element to the first cycle a RECV of that vector succeeds, at
        equal clocks: ``nominal_latency`` (a RECV at SEND + ``nominal_latency`` receives when the
        TX was idle, measured on the RTL tray at widths 8 and 32) + ``max_tx_wait`` + one cycle of
        elastic-buffer wander.  ``c2c.link_latency`` must exceed it by ``c2c.link_slack``."""
        return self.nominal_latency + self.max_tx_wait + 1

    @property
    def compensation_ppm(self):
        """Largest relative clock difference the SKIP mechanism can absorb: one word per SKIP."""
        return 1e6 / self.skip_interval


def min_link_latency(lanes, link):
    """The smallest ``c2c.link_latency`` the link of ``link`` (the loader's ``c2c`` dict) supports:
    ``LinkParams.max_latency`` + ``link_slack`` (the drift a scheduled RECV must tolerate between
    DESKEWs, firmware/tray.py)."""
    return LinkParams.from_link(lanes, link).max_latency + math.ceil(link["link_slack"])


def link_problems(lanes, link, link_latency):
    """The config loader's link check: ``[(field, message), ...]``, empty when the ``c2c`` section
    (``link``: width_bits, skip_interval, elastic_depth, ..., with ``lanes`` and ``link_latency``)
    describes a link the gateware, the golden tray and the compiler agree on."""
    out = []
    w = link["width_bits"]
    if w < 8 or w & (w - 1) or (8 * lanes) % w:
        out.append(("c2c.width_bits", (f"is {w} but a link word must be a power of two of at least 8 bits "
                                       f"that divides the vector's {8 * lanes} bits")))
        return out
    p = LinkParams.from_link(lanes, link)
    if p.skip_interval <= p.send_interval:
        out.append(("c2c.skip_interval",
                    (f"is {p.skip_interval} but with c2c.width_bits {w} a vector takes {p.send_interval} link "
                     f"cycles ({p.flit_words}-word flit + 1 spare word for SKIP/HAC): one SKIP every "
                     f"{p.skip_interval} words would eat more than the spare word and the sender would fall "
                     f"behind; skip_interval must be more than {p.send_interval} at this width")))
        return out
    need = min_link_latency(lanes, link)
    if link_latency < need:
        out.append(("c2c.link_latency",
                    (f"is {link_latency} but with c2c.width_bits {w} a vector can take up to {p.max_latency} "
                     f"cycles from SEND to RECV ({p.flit_words}-word flits, a {p.hac_frame_words}-word HAC "
                     f"frame ahead, a {p.depth}-word elastic buffer), plus c2c.link_slack "
                     f"{math.ceil(link['link_slack'])}: link_latency must be at least {need} at this width")))
    return out
