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

__all__ = ["Sym", "LinkParams", "HAC_BITS", "FRAMINGS", "link_problems", "min_link_latency",
           "secded_check_bits", "secded_positions", "secded_encode", "secded_decode",
           "encode_flit", "encode_hac", "decode_frame", "encode_burst", "decode_burst", "burst_bit_codes",
           "arrival_cycles", "decode_burst_header", "min_rx_vectors", "crc16_word", "CRC_BITS", "CRC_POLY", "OK", "CORRECTED", "UNCORRECTABLE"]

#: ``c2c.framing``: one flit per vector, or one frame per SEND (a burst of up to ``burst_vectors``).
FRAMINGS = ("flit", "burst")

#: Width of the hardware-aligned counter carried by HAC frames.
HAC_BITS = 32

#: The burst trailer's CRC: CRC-16 (x^16 + x^12 + x^5 + 1), zero initial value, each payload word's
#: bits least significant first (``crc16_word``).
CRC_BITS, CRC_POLY = 16, 0x1021

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
    framing: str = "flit"
    burst_vectors: int = 1

    @classmethod
    def from_cfg(cls, cfg):
        return cls.from_link(cfg.lanes, cfg.link)

    @classmethod
    def from_link(cls, lanes, lk):
        """From ``lanes`` and the loader's ``c2c`` dict (``ChipConfig.link``)."""
        return cls(lanes=lanes, width=lk["width_bits"], skip_interval=lk["skip_interval"],
                   hac_interval=lk["hac_interval"], depth=lk["elastic_depth"],
                   ppm_budget=float(lk["ppm_budget"]), framing=lk.get("framing", "flit"),
                   burst_vectors=lk.get("burst_vectors", 1))

    @property
    def burst(self):
        """Burst framing: one frame (header, the vectors back to back, a frame FEC word) per SEND."""
        return self.framing == "burst"

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
        """The link rate the compiler must respect: at most one vector per this many cycles (the
        element spacing F of SEND and RECV, ``ChipConfig.vector_interval``).  Flit framing: one word
        per flit slot is left for SKIP/HAC, so the link never falls behind.  Burst framing: the
        payload words of one vector (the frame's overhead is paid per frame: ``frame_gap``)."""
        if self.burst:
            return self.payload_words
        return self.flit_words + 1

    # ---- burst framing (docs/c2c.md, "Burst framing") ----
    @property
    def count_bits(self):
        """Bits of a burst header's count field (vectors in the frame - 1)."""
        return max(1, (self.burst_vectors - 1).bit_length())

    @property
    def bhdr_data_bits(self):
        """Bits the burst header's own SECDED protects: sequence number and count."""
        return self.seq_bits + self.count_bits

    @property
    def bhdr_fec_bits(self):
        return secded_check_bits(self.bhdr_data_bits)

    @property
    def bhdr_bits(self):
        """Bits of a burst header word: code, sequence number, count, their SECDED check bits."""
        return 4 + self.bhdr_data_bits + self.bhdr_fec_bits

    @property
    def word_index_bits(self):
        """Bits of a payload word's index in a frame (the high part of a frame FEC bit code); index
        n*P is the trailer's CRC field, which the Hamming code covers too."""
        return max(1, (self.burst_vectors * self.payload_words).bit_length())

    @property
    def bit_code_bits(self):
        """Bits of a payload bit's position code inside its word (the low part of its FEC bit code)."""
        return self.width.bit_length()

    @property
    def frame_syndrome_bits(self):
        """Hamming bits of a burst frame's code (word index bits + bit code bits)."""
        return self.word_index_bits + self.bit_code_bits

    @property
    def frame_fec_bits(self):
        """Trailer bits of a burst frame: the Hamming bits, the overall parity and the CRC-16 of the
        payload (checked on the corrected payload: it catches the miscorrections of 3+ errors)."""
        return self.frame_syndrome_bits + 1 + CRC_BITS

    @property
    def trailer_words(self):
        """Words of a burst frame's trailer (its FEC check bits, taken by position)."""
        return -(-self.frame_fec_bits // self.width)

    def frame_words(self, n):
        """Wire words of a burst frame of ``n`` vectors: header, payload, trailer."""
        return 1 + n * self.payload_words + self.trailer_words

    @property
    def frame_gap(self):
        """Burst framing: cycles a port's next frame must leave after the previous frame's last
        element slot (first element >= last element + ``send_interval`` + ``frame_gap``): the
        header and trailer words plus one spare word that repays SKIP and HAC words.  0 for flits
        (their spare word is inside ``send_interval``)."""
        if not self.burst:
            return 0
        return 1 + self.trailer_words + 1

    def frame_period(self, n):
        """Cycles from a frame's first element to the earliest first element of the next frame."""
        return n * self.send_interval + self.frame_gap

    @property
    def goodput_max(self):
        """Payload bits / wire data bits at the link rate: one vector per ``send_interval``
        (flits), or back-to-back frames of ``burst_vectors`` vectors (bursts)."""
        if self.burst:
            B = self.burst_vectors
            return 8 * self.lanes * B / (self.frame_period(B) * self.width)
        return 8 * self.lanes / (self.send_interval * self.width)

    @property
    def framing_efficiency(self):
        """Payload bits / wire data bits of the flit alone (no spare word)."""
        return 8 * self.lanes / (self.flit_words * self.width)

    @property
    def nominal_latency(self):
        """Receiver cycles from the TX accepting a vector (into an idle TX) to ``recv_valid``, at
        equal clocks with the elastic buffer centred (measured; docs/c2c.md).  Drift moves it by
        at most a cycle or two either way while the buffer stays inside its guard band.
        Burst framing: from the frame's *last* element (every vector of a frame is delivered after
        its trailer has been checked; the vectors before it wait in the receiver's frame buffer)."""
        if self.burst:
            return 1 + self.payload_words + self.trailer_words + self.depth // 2 + self.BURST_RX_EXTRA
        return self.flit_words + self.depth // 2 + 2

    #: Burst framing: receiver cycles from the trailer word leaving the elastic buffer side to the
    #: frame's first vector reaching ``recv_valid`` (decode, correction write, commit), measured.
    BURST_RX_EXTRA = 5

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
        fw = self.frame_words(self.burst_vectors) if self.burst else self.flit_words
        return self.hac_frame_words + (self.hac_frame_words + fw) // (self.skip_interval - 1)

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


# ---------------------------------------------------------------------------------------------
# burst frames (c2c.framing: burst): one header, the vectors back to back, one frame FEC trailer

def burst_bit_codes(p):
    """The low part of the frame FEC code of bit b of a payload word: the b-th integer below
    2^bit_code_bits with at least two bits set (never a check bit's syndrome, a power of two).
    Bit b of payload word j has the code ``(j << bit_code_bits) | burst_bit_codes(p)[b]``: a
    Hamming code whose syndrome the gateware accumulates word by word (a fixed XOR tree per word
    plus ``j`` when the word's parity is odd)."""
    out = [c for c in range(3, 1 << p.bit_code_bits) if c & (c - 1)]
    return out[:p.width]


def crc16_word(crc, word, width):
    """The burst trailer's CRC after one more ``width``-bit payload word (bit 0 first)."""
    for b in range(width):
        fb = ((crc >> 15) ^ (word >> b)) & 1
        crc = (crc << 1) & 0xFFFF
        if fb:
            crc ^= CRC_POLY
    return crc


def _burst_hamming(p, payload_words):
    codes = burst_bit_codes(p)
    h, par = 0, 0
    for j, w in enumerate(payload_words):
        pw = bin(w).count("1") & 1
        par ^= pw
        if pw:
            h ^= j << p.bit_code_bits
        b = 0
        while w:
            if w & 1:
                h ^= codes[b]
            w >>= 1
            b += 1
    return h, par


def _burst_header(p, seq, n):
    seq &= (1 << p.seq_bits) - 1
    data = seq | ((n - 1) << p.seq_bits)
    return Sym.DATA.value | (data << 4) | (secded_encode(data, p.bhdr_data_bits) << (4 + p.bhdr_data_bits))


def encode_burst(p, vectors, seq):
    """The burst frame of ``vectors`` (1 to ``burst_vectors`` ints of 8*lanes bits) with sequence
    number ``seq``: ``[(k, word), ...]``: the header word (k=1: ``Sym.DATA`` | seq << 4 | (n-1) <<
    4+seq_bits | SECDED(seq, n-1) above), the payload (vector i's word j at 1 + i*P + j, lane 0 in
    the low bits), then ``trailer_words`` words of frame FEC: the Hamming bits of
    ``burst_bit_codes`` (over the payload and the CRC field, word n*P), the overall parity, the
    CRC-16 of the payload."""
    n = len(vectors)
    if not 1 <= n <= p.burst_vectors:
        raise ValueError(f"a burst frame holds 1 to {p.burst_vectors} vectors, got {n}")
    pay = [w for v in vectors for w in _words(v, p.payload_words, p.width)]
    crc = 0
    for w in pay:
        crc = crc16_word(crc, w, p.width)
    h, par = _burst_hamming(p, [*pay, crc])            # the CRC field is word n*P of the code
    r = p.frame_syndrome_bits
    fec = h | ((par ^ (bin(h).count("1") & 1)) << r) | (crc << (r + 1))
    words = [_burst_header(p, seq, n)] + pay + _words(fec, p.trailer_words, p.width)
    return [(int(i == 0), w) for i, w in enumerate(words)]


def decode_burst_header(p, word):
    """``(seq, n, outcome)`` of a burst header word (its code and K flag already checked)."""
    data = (word >> 4) & ((1 << p.bhdr_data_bits) - 1)
    check = (word >> (4 + p.bhdr_data_bits)) & ((1 << p.bhdr_fec_bits) - 1)
    data, out = secded_decode(data, check, p.bhdr_data_bits)
    return data & ((1 << p.seq_bits) - 1), (data >> p.seq_bits) + 1, out


def decode_burst(p, words):
    """Decode one burst frame ``[(k, word), ...]`` as the receiver does: ``(vectors, seq, outcome)``.
    The header must be a K word with code DATA and a correctable header code (else ``(None, None,
    UNCORRECTABLE)``); it gives the frame's length, and every later word is taken by position
    whatever its K flag (a flipped K flag is ignored: ``CORRECTED``).  The frame FEC corrects one
    flipped bit anywhere in header-count-protected payload and trailer, and detects two; the CRC-16,
    checked on the corrected payload, catches almost every miscorrection of three or more."""
    k0, w0 = words[0]
    if not k0 or (w0 & 0xF) != Sym.DATA.value:
        return None, None, UNCORRECTABLE
    seq, n, hout = decode_burst_header(p, w0)
    if hout == UNCORRECTABLE or n > p.burst_vectors or len(words) < p.frame_words(n):
        return None, None, UNCORRECTABLE
    P, w = p.payload_words, p.width
    body = words[1:p.frame_words(n)]
    pay = [d for _, d in body[:n * P]]
    tr = sum(d << (w * i) for i, (_, d) in enumerate(body[n * P:]))
    r = p.frame_syndrome_bits
    crc = (tr >> (r + 1)) & ((1 << CRC_BITS) - 1)
    pay.append(crc)                                 # word n*P of the code
    h, par = _burst_hamming(p, pay)
    syn = (h ^ tr) & ((1 << r) - 1)
    odd = par ^ (bin(tr & ((1 << (r + 1)) - 1)).count("1") & 1)
    out = OK
    if not odd:
        if syn:
            return None, seq, UNCORRECTABLE
    elif syn & (syn - 1):                           # a payload or CRC bit (or nothing: uncorrectable)
        j, lo = syn >> p.bit_code_bits, syn & ((1 << p.bit_code_bits) - 1)
        codes = burst_bit_codes(p)
        if j > n * P or lo not in codes or (j == n * P and codes.index(lo) >= CRC_BITS):
            return None, seq, UNCORRECTABLE
        pay[j] ^= 1 << codes.index(lo)
        out = CORRECTED
    else:                                           # a check bit or the overall parity bit
        out = CORRECTED
    crc = pay.pop()
    got = 0
    for x in pay:
        got = crc16_word(got, x, w)
    if got != crc:                                  # 3+ errors the Hamming code miscorrected
        return None, seq, UNCORRECTABLE
    if hout == CORRECTED or any(k for k, _ in body):
        out = CORRECTED
    vecs = [sum(pay[i * P + j] << (w * j) for j in range(P)) for i in range(n)]
    return vecs, seq, out


def arrival_cycles(p, link_latency, t0, n):
    """The golden rx arrival rule, the one place it is computed: the cycles from which the ``n``
    vectors of a SEND whose element 0 is at cycle ``t0`` can be RECEIVED.  Flits: element k
    arrives ``link_latency`` cycles after it is sampled.  Bursts: the SEND is one frame; every
    vector arrives ``link_latency`` cycles after the frame's last element (the receiver checks
    the frame's FEC before it delivers any of it)."""
    F = p.send_interval
    if p.burst:
        return [t0 + (n - 1) * F + link_latency] * n
    return [t0 + k * F + link_latency for k in range(n)]


def min_link_latency(lanes, link):
    """The smallest ``c2c.link_latency`` the link of ``link`` (the loader's ``c2c`` dict) supports:
    ``LinkParams.max_latency`` + ``link_slack`` (the drift a scheduled RECV must tolerate between
    DESKEWs, firmware/tray.py)."""
    return LinkParams.from_link(lanes, link).max_latency + math.ceil(link["link_slack"])


def min_rx_vectors(lanes, link, link_latency):
    """The smallest ``c2c.rx_vectors`` a burst-framed link supports: a SEND of ``burst_vectors``
    and the RECV of it at its arrival (``link_latency`` after the last element, plus ``link_slack``)
    hold every vector of it in the port's RX buffer (the golden tray counts the ones in flight)."""
    p = LinkParams.from_link(lanes, link)
    if not p.burst:
        return 1
    return p.burst_vectors + -(-(link_latency + math.ceil(link["link_slack"]) + 1) // p.send_interval)


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
    if p.burst:
        return out + _burst_problems(p, link, link_latency)
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


def _burst_problems(p, link, link_latency):
    """``link_problems`` for ``c2c.framing: burst``."""
    w, B = p.width, p.burst_vectors
    if p.bhdr_bits > w or p.frame_fec_bits > w:
        return [("c2c.width_bits",
                 (f"is {w} but a burst frame's header needs {p.bhdr_bits} bits (code, {p.seq_bits}-bit sequence "
                  f"number, {p.count_bits}-bit count for c2c.burst_vectors {B}, {p.bhdr_fec_bits} SECDED bits) in "
                  f"one link word: burst framing needs width_bits >= 32"))]
    per = p.frame_period(B)
    if p.skip_interval <= per:
        return [("c2c.skip_interval",
                 (f"is {p.skip_interval} but with c2c.width_bits {w} and c2c.burst_vectors {B} a frame takes up to "
                  f"{per} link cycles (header, {B} x {p.payload_words} payload words, trailer, 1 spare word): one SKIP "
                  f"per frame must be the most; skip_interval must be more than {per}"))]
    if p.hac_interval <= per:
        return [("c2c.hac_interval",
                 (f"is {p.hac_interval} but a burst frame takes up to {per} link cycles (c2c.burst_vectors {B}): the "
                  f"spare word of one frame must repay a HAC frame before the next falls due; hac_interval must be "
                  f"more than {per}"))]
    need = min_link_latency(p.lanes, link)
    if link_latency < need:
        return [("c2c.link_latency",
                 (f"is {link_latency} but with c2c.width_bits {w} and burst framing the last vector of a frame can "
                  f"take up to {p.max_latency} cycles from SEND to RECV ({p.payload_words} payload words and a "
                  f"{p.trailer_words}-word trailer behind it, a {p.hac_frame_words}-word HAC frame ahead, a "
                  f"{p.depth}-word elastic buffer, the frame check), plus c2c.link_slack "
                  f"{math.ceil(link['link_slack'])}: link_latency must be at least {need}"))]
    F = p.send_interval
    rxv = min_rx_vectors(p.lanes, link, link_latency)
    if link["rx_vectors"] < rxv:
        return [("c2c.rx_vectors",
                 (f"is {link['rx_vectors']} but a SEND of c2c.burst_vectors {B} vectors arrives all at once "
                  f"c2c.link_latency {link_latency} cycles after its last element, and the RX buffer holds the vectors "
                  f"in flight too (one per {F} cycles): rx_vectors must be at least {rxv}"))]
    return []
