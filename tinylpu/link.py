"""C2C link wire format and timing: the K-symbol codes, the flit layout, the SECDED forward error
correction and every number derived from the config's ``c2c`` section.  The one formula for link
timing: the gateware (``hdl/c2c.py``, ``hdl/c2cslice.py``), the golden model, the compiler and the
host all read it from here (``ChipConfig.vector_interval`` is ``LinkParams.from_cfg(cfg).send_interval``).

Every power-of-two ``width_bits`` from 8 to ``8 * lanes`` works (docs/c2c.md, "Link width").  What a
width changes is the flit length, so the link rate and the latency: ``link_problems`` is the config
loader's check that ``c2c.link_latency`` covers the latency of the configured link.

The software codec here (``secded_encode``/``secded_decode``, ``encode_flit``/``decode_flit``) is the
reference the gateware is tested against bit for bit, and what the golden tray uses to inject errors.
"""

import math
from dataclasses import dataclass

from amaranth.lib import enum

__all__ = ["Sym", "LinkParams", "HAC_BITS", "link_problems", "min_link_latency",
           "secded_check_bits", "secded_positions", "secded_encode", "secded_decode",
           "encode_flit", "encode_hac", "decode_frame", "OK", "CORRECTED", "UNCORRECTABLE"]

#: Width of the hardware-aligned counter carried by HAC frames.
HAC_BITS = 32

#: ``secded_decode`` / ``decode_frame`` outcomes.
OK, CORRECTED, UNCORRECTABLE = "ok", "corrected", "uncorrectable"


class Sym(enum.Enum, shape=4):
    """K-symbol codes (bits [0, 4) of a word with k=1).  The five codes have even parity, so a
    single flipped bit never turns one symbol into another: it becomes an invalid code."""
    IDLE = 0x3
    SKIP = 0x5
    TRAIN = 0x6
    HAC = 0x9
    DATA = 0xA


# ---------------------------------------------------------------------------------------------
# SECDED: extended Hamming code (single error corrected, double error detected)

def secded_check_bits(k):
    """Check bits of the extended Hamming code over ``k`` data bits: r Hamming bits with
    2^r >= k + r + 1, plus one overall parity bit."""
    r = 0
    while (1 << r) < k + r + 1:
        r += 1
    return r + 1


def secded_positions(k):
    """Hamming positions (1-based, never a power of two) of the ``k`` data bits, in order."""
    out, pos = [], 3
    while len(out) < k:
        if pos & (pos - 1):
            out.append(pos)
        pos += 1
    return out


def secded_encode(data, k):
    """The ``secded_check_bits(k)`` check bits of ``data`` (``k`` bits): bit j < r is the parity of
    the data bits whose position has bit j set; the top bit is the parity of data and Hamming bits
    (so the whole codeword has even parity)."""
    c = secded_check_bits(k)
    r = c - 1
    h = 0
    for i, pos in enumerate(secded_positions(k)):
        if (data >> i) & 1:
            h ^= pos
    overall = (bin(data).count("1") + bin(h).count("1")) & 1
    return h | (overall << r)


def secded_decode(data, check, k):
    """``(data, outcome)``: the syndrome names the flipped position when the overall parity is odd
    (one error, corrected, also when it hit a check bit); an even parity with a nonzero syndrome, or
    a syndrome beyond the codeword, is ``UNCORRECTABLE`` (data returned as received)."""
    c = secded_check_bits(k)
    r = c - 1
    s = (secded_encode(data, k) ^ check) & ((1 << r) - 1)
    odd = (bin(data).count("1") + bin(check).count("1")) & 1
    if not odd:
        return (data, OK) if s == 0 else (data, UNCORRECTABLE)
    if s > k + r:
        return data, UNCORRECTABLE
    pos = secded_positions(k)
    if s in pos:
        data ^= 1 << pos.index(s)
    return data, CORRECTED


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
    def seq_bits(self):
        return min(8, self.width - 4)

    @property
    def fec_data_bits(self):
        """Bits a DATA flit's SECDED code protects: the sequence number and the vector."""
        return self.seq_bits + 8 * self.lanes

    @property
    def fec_bits(self):
        """SECDED check bits of a DATA flit (9 at 16 lanes)."""
        return secded_check_bits(self.fec_data_bits)

    @property
    def hdr_words(self):
        """Words of a DATA flit's header field: code (4 bits), sequence number, check bits."""
        return -(-(4 + self.seq_bits + self.fec_bits) // self.width)

    @property
    def hac_words(self):
        return -(-HAC_BITS // self.width)

    @property
    def hac_fec_bits(self):
        return secded_check_bits(HAC_BITS)

    @property
    def hac_hdr_words(self):
        return -(-(4 + self.hac_fec_bits) // self.width)

    @property
    def flit_words(self):
        """Words of one DATA flit: header field (code, sequence number, SECDED bits) + payload."""
        return self.hdr_words + self.payload_words

    @property
    def hac_frame_words(self):
        return self.hac_hdr_words + self.hac_words

    @property
    def send_interval(self):
        """The link rate the compiler must respect: at most one vector per this many cycles.
        One word per flit slot is left for SKIP/HAC, so the link never falls behind."""
        return self.flit_words + 1

    @property
    def goodput_max(self):
        """Payload bits / wire data bits at one vector per ``send_interval``."""
        return 8 * self.lanes / (self.send_interval * self.width)

    @property
    def framing_efficiency(self):
        """Payload bits / wire data bits of the flit alone (no spare word)."""
        return 8 * self.lanes / (self.flit_words * self.width)

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
        the cycle before the vector (``hac_frame_words`` - 1) plus the SKIPs that fall due in that
        frame and the flit (a SKIP waits for the end of a frame, then goes first; a window of
        ``hac_frame_words + flit_words + k`` words holds k SKIPs when (k - 1)(skip_interval - 1) <=
        hac_frame_words + flit_words).  Needs ``skip_interval`` > ``send_interval``
        (``link_problems``): then no slot holds two SKIPs and a burst's delay only shrinks, one spare
        word per flit."""
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


# ---------------------------------------------------------------------------------------------
# flits as words (the software model of LinkTX's frames and of LinkRX's deframer)

def _words(bits, n, width):
    return [(bits >> (width * i)) & ((1 << width) - 1) for i in range(n)]


def encode_flit(p, vector, seq):
    """The DATA flit of ``vector`` with sequence number ``seq``: ``[(k, word), ...]``, header field
    first (``Sym.DATA`` | seq << 4 | SECDED << 4 + seq_bits, least significant word first; only word
    0 has k=1), then the vector, lane 0 in the low bits of the first payload word."""
    seq &= (1 << p.seq_bits) - 1
    data = seq | (vector << p.seq_bits)
    hdr = Sym.DATA.value | (seq << 4) | (secded_encode(data, p.fec_data_bits) << (4 + p.seq_bits))
    words = _words(hdr, p.hdr_words, p.width) + _words(vector, p.payload_words, p.width)
    return [(int(i == 0), w) for i, w in enumerate(words)]


def encode_hac(p, value):
    """A HAC frame: header field (``Sym.HAC`` | SECDED of the value << 4) + the 32-bit value."""
    hdr = Sym.HAC.value | (secded_encode(value, HAC_BITS) << 4)
    words = _words(hdr, p.hac_hdr_words, p.width) + _words(value, p.hac_words, p.width)
    return [(int(i == 0), w) for i, w in enumerate(words)]


def decode_frame(p, words):
    """Decode one frame ``[(k, word), ...]`` as the deframer does: the first word must be a K word
    with code DATA or HAC (else ``(None, None, None, UNCORRECTABLE)``: the frame is not recognised,
    a framing error); the remaining words are taken by position, whatever their K flag (a flipped
    K flag there is corrected by ignoring it).  Returns ``(kind, value, seq, outcome)`` with kind
    ``"data"`` or ``"hac"``."""
    k0, w0 = words[0]
    code = w0 & 0xF
    if not k0 or code not in (Sym.DATA.value, Sym.HAC.value):
        return None, None, None, UNCORRECTABLE
    bits = sum(w << (p.width * i) for i, (_, w) in enumerate(words))
    kflip = any(k for k, _ in words[1:])
    if code == Sym.DATA.value:
        sb, fb = p.seq_bits, p.fec_bits
        seq = (bits >> 4) & ((1 << sb) - 1)
        check = (bits >> (4 + sb)) & ((1 << fb) - 1)
        vec = (bits >> (p.width * p.hdr_words)) & ((1 << (8 * p.lanes)) - 1)
        data, out = secded_decode(seq | (vec << sb), check, p.fec_data_bits)
        kind, value, seq = "data", data >> sb, data & ((1 << sb) - 1)
    else:
        check = (bits >> 4) & ((1 << p.hac_fec_bits) - 1)
        value = (bits >> (p.width * p.hac_hdr_words)) & ((1 << HAC_BITS) - 1)
        value, out = secded_decode(value, check, HAC_BITS)
        kind, seq = "hac", None
    if out == OK and kflip:
        out = CORRECTED
    return kind, value, seq, out


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
