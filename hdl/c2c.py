"""Chip-to-chip (C2C) link layer: ``LinkTX``, ``LinkRX`` and the test top ``C2CLinkPair``.

The full contract (symbols, flit layout, CRC, elastic buffer, ppm budget, training, HAC exchange,
alarms, measured goodput and latency) is in docs/c2c.md.  In short:

* The wire carries one word per sender clock: ``width_bits`` of data plus a control flag ``k``
  (a K symbol, like an 8b/10b comma).  K words carry a 4-bit symbol code in bits [0, 4).
* ``LinkTX`` (sender's clock domain) sends TRAIN words after reset, then IDLE, a SKIP every
  ``skip_interval`` words (always, even inside a flit), a HAC frame (the sender's hardware-aligned
  counter) every ``hac_interval`` cycles when the link is free, and one DATA flit per vector:
  a header field (k=1, DATA, sequence number, the 9 SECDED check bits of sequence number + vector)
  + ``8*lanes/width_bits`` payload words.  A SKIP falls due every ``skip_interval`` words and goes
  out at the next frame boundary (never inside a frame).
* ``LinkRX`` samples the wire in the recovered (= sender's) clock, locks on TRAIN words, writes
  every word into an elastic buffer (a gray-coded ``AsyncFIFO``), dropping a SKIP when the buffer
  is above its centre; the reader (receiver's clock) repeats a SKIP when it is below its centre.
  Behind the buffer, in the receiver's clock, the deframer takes a frame's words by position,
  corrects any single-bit error with the SECDED code, detects double-bit errors (counted, the flit
  dropped, ``error`` pulsed: the chip's ``link`` flag) and delivers vectors (``recv_valid``); it
  never retransmits.

Inside a chip there is no back-pressure: ``LinkTX`` accepts a vector in any cycle, holds at most
one waiting vector, and raises the sticky ``overrun`` flag if the chip offers a vector while one is
still waiting.  A chip that offers at most one vector every ``LinkParams.send_interval`` cycles
(``flit_words + 1``) never overruns (docs/c2c.md, "Link rate").

Burst framing (``c2c.framing: burst``, docs/c2c.md "Burst framing"): a SEND of n vectors (its count
on ``LinkTX.send_count``) travels as one frame: a header word (DATA, sequence number, n - 1 and
their own SECDED bits), the n vectors back to back, one trailer word with a Hamming SECDED code over
the whole frame (syndrome accumulated word by word).  ``LinkRX`` stores the frame, checks it,
corrects one bit in its frame buffer or drops the frame (counted, ``error``), then delivers its
vectors one per cycle.
"""

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, DomainRenamer, Module, Mux, Signal, signed
from amaranth.lib import cdc, data, fifo, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from tinylpu.hdl.common import vec
from tinylpu.link import (
    CRC_BITS,
    CRC_POLY,
    HAC_BITS,
    LinkParams,
    Sym,
    burst_bit_codes,
    secded_check_bits,
    secded_positions,
)

__all__ = ["Sym", "LinkParams", "LinkWire", "AlarmFlags", "LinkTX", "LinkRX", "C2CLinkPair",
           "HAC_BITS", "secded_check", "secded_correct", "RX_STATUS"]

def LinkWire(width):  # noqa: N802 (a signature constructor)
    """The wire from a ``LinkTX`` to a ``LinkRX``: one word per sender clock."""
    return wiring.Signature({"data": Out(width), "k": Out(1)})


class AlarmFlags(data.Struct):
    """Why ``LinkRX.alarm`` is set (all sticky)."""
    overflow: 1    # a word arrived while the elastic buffer was full: the word is lost
    underflow: 1   # the reader found the elastic buffer empty: the latency is no longer fixed
    high: 1        # the fill rose above the upper guard (writer's view >= depth - 1)
    low: 1         # the fill fell below the lower guard (reader's view <= 1)


# ---------------------------------------------------------------------------------------------
# SECDED (tinylpu.link.secded_*) as XOR trees

def _secded_hamming(data, k):
    """The r Hamming bits of ``data`` (a k-bit Value): bit j is the XOR of the data bits whose
    position has bit j set."""
    pos = secded_positions(k)
    r = secded_check_bits(k) - 1
    return Cat(*[Cat(*[data[i] for i, q in enumerate(pos) if (q >> j) & 1]).xor() for j in range(r)])


def secded_check(data, k):
    """Gateware ``secded_encode``: the check bits (Hamming bits, then the overall parity)."""
    h = _secded_hamming(data, k)
    return Cat(h, data.xor() ^ h.xor())


def secded_correct(m, data, check, k, name):
    """Gateware ``secded_decode``: ``(corrected data, corrected, uncorrectable)`` (comb)."""
    r = secded_check_bits(k) - 1
    syn = Signal(r, name=f"{name}_syndrome")
    odd = Signal(name=f"{name}_odd")
    m.d.comb += [syn.eq(_secded_hamming(data, k) ^ check[:r]), odd.eq(data.xor() ^ check.xor())]
    fixed = Cat(*[data[i] ^ (odd & (syn == q)) for i, q in enumerate(secded_positions(k))])
    return fixed, odd & (syn <= k + r), (~odd & (syn != 0)) | (odd & (syn > k + r))


def _burst_word_fec(p, word, j):
    """A payload word's contribution to a burst frame's Hamming syndrome (``tinylpu.link.
    burst_bit_codes``: the XOR of its set bits' codes, plus ``j << bit_code_bits`` when its parity
    is odd) and its parity: ``(syndrome part, parity)``."""
    codes = burst_bit_codes(p)
    lo = Cat(*[Cat(*[word[b] for b, c in enumerate(codes) if (c >> t) & 1]).xor()
               for t in range(p.bit_code_bits)])
    par = word.xor()
    return Cat(lo, Mux(par, j, 0)), par


def _crc16_word(crc, word):
    """Gateware ``tinylpu.link.crc16_word``: the CRC after one more word (bit 0 first), as one XOR
    tree per CRC bit (the bit-serial register unrolled symbolically)."""
    state = [frozenset([("c", i)]) for i in range(CRC_BITS)]
    for b in range(len(word)):
        fb = state[CRC_BITS - 1] ^ {("x", b)}
        state = [frozenset()] + state[:CRC_BITS - 1]
        state = [st ^ fb if (CRC_POLY >> i) & 1 else st for i, st in enumerate(state)]
    src = {"c": crc, "x": word}
    return Cat(*[Cat(*[src[k][i] for k, i in sorted(st)]).xor() if st else Const(0, 1) for st in state])


def _gray(x):
    return x ^ (x >> 1)


def _gray_decode(m, g, name):
    b = Signal(len(g), name=name)
    m.d.comb += b[-1].eq(g[-1])
    for i in reversed(range(len(g) - 1)):
        m.d.comb += b[i].eq(b[i + 1] ^ g[i])
    return b


# ---------------------------------------------------------------------------------------------

class LinkTX(wiring.Component):
    """Link transmitter, in the sender's clock domain ``domain``.

    Ports:

    * ``send_valid``/``send_data`` (in): a vector to send.  Accepted in any cycle; the TX holds
      one waiting vector besides the flit on the wire.  A vector offered while one is already
      waiting, or during training, is dropped and sets the sticky ``overrun``.
    * ``send_count`` (in, burst framing only): the count of the SEND the vector belongs to, read
      with a frame's first vector (0 counts as 1).  Burst framing queues ``queue_vectors()``
      vectors instead of one waiting slot.
    * ``hac`` (in, 32): the local hardware-aligned counter, sampled when a HAC frame starts.
    * ``train_done`` (in): leave training now (else after ``train_words`` words).
    * ``wire`` (out, ``LinkWire``): registered word and K flag, one per cycle.
    * ``training`` (out): still sending TRAIN.  ``busy`` (out): a frame on the wire or a vector
      waiting.  ``flits_sent`` (out, 32): DATA flits started.
    """

    def __init__(self, cfg, *, domain="tx", train_words=None):
        self.cfg = cfg
        self.params = p = LinkParams.from_cfg(cfg)
        self._domain = domain
        self.train_words = 4 * p.depth if train_words is None else train_words
        super().__init__({
            "send_valid": In(1),
            "send_data": In(vec(cfg.lanes)),
            "send_count": In(range(p.burst_vectors + 1)),
            "hac": In(HAC_BITS),
            "train_done": In(1),
            "wire": Out(LinkWire(p.width)),
            "training": Out(1, init=1),
            "busy": Out(1),
            "overrun": Out(1),
            "flits_sent": Out(32),
        })

    def elaborate(self, platform):
        if self.params.burst:
            return self._elaborate_burst()
        p = self.params
        w = p.width
        m = Module()
        d = m.d[self._domain]

        frame_words = max(p.flit_words, p.hac_frame_words)
        training = self.training
        train_cnt = Signal(range(max(self.train_words, 1) + 1))
        skip_cnt = Signal(range(p.skip_interval))
        skip_pend = Signal()
        hac_timer = Signal(range(p.hac_interval))
        hac_due = Signal()
        pend_valid = Signal()
        pend_data = Signal(vec(p.lanes))
        active = Signal()
        left = Signal(range(frame_words))
        body = Signal((frame_words - 1) * w)
        seq = Signal(p.seq_bits)
        word = Signal(w)
        k = Signal()
        start_data = Signal()
        start_hac = Signal()
        send_skip = Signal()

        self._skip_and_wire(m, skip_cnt, skip_pend, send_skip, word, k)
        m.d.comb += self.busy.eq(active | pend_valid)

        have_vec = pend_valid | self.send_valid
        vec_now = Mux(pend_valid, pend_data, self.send_data)
        # DATA frame: code | seq | SECDED(seq, vector), padded to hdr_words words, then the vector
        data_frame = Signal(p.flit_words * w)
        prot = Cat(seq, vec_now)
        m.d.comb += data_frame.eq(Cat(Const(Sym.DATA.value, 4), seq, secded_check(prot, p.fec_data_bits),
                                      Const(0, p.hdr_words * w - 4 - p.seq_bits - p.fec_bits), vec_now))
        hac_frame = Signal(p.hac_frame_words * w)
        m.d.comb += hac_frame.eq(Cat(Const(Sym.HAC.value, 4), secded_check(self.hac, HAC_BITS),
                                     Const(0, p.hac_hdr_words * w - 4 - p.hac_fec_bits), self.hac))

        m.d.comb += [k.eq(1), word.eq(Sym.IDLE.value)]
        with m.If(active):                               # the rest of a frame, word by word
            m.d.comb += [k.eq(0), word.eq(body[:w])]
            d += [body.eq(body >> w), left.eq(left - 1)]
            with m.If(left == 1):
                d += active.eq(0)
        with m.Elif(skip_pend | (skip_cnt == p.skip_interval - 1)):
            m.d.comb += [send_skip.eq(1), word.eq(Sym.SKIP.value)]
        with m.Elif(training):
            m.d.comb += word.eq(Sym.TRAIN.value)
        with m.Elif(have_vec):
            m.d.comb += [start_data.eq(1), word.eq(data_frame[:w])]
            d += [active.eq(1), left.eq(p.flit_words - 1), body.eq(data_frame[w:]),
                  seq.eq(seq + 1), self.flits_sent.eq(self.flits_sent + 1)]
        with m.Elif(hac_due):
            m.d.comb += [start_hac.eq(1), word.eq(hac_frame[:w])]
            d += [active.eq(1), left.eq(p.hac_frame_words - 1), body.eq(hac_frame[w:])]

        self._train_and_hac(m, training, train_cnt, hac_timer, hac_due, start_hac)

        # accepting vectors: one waiting slot; no back-pressure, overrun instead
        with m.If(training):
            with m.If(self.send_valid):
                d += self.overrun.eq(1)
        with m.Elif(start_data & pend_valid):
            d += [pend_valid.eq(self.send_valid), pend_data.eq(self.send_data)]
        with m.Elif(start_data):
            pass                                         # send_data went straight onto the wire
        with m.Elif(self.send_valid):
            with m.If(pend_valid):
                d += self.overrun.eq(1)
            with m.Else():
                d += [pend_valid.eq(1), pend_data.eq(self.send_data)]
        return m

    def _skip_and_wire(self, m, skip_cnt, skip_pend, send_skip, word, k):
        """Both framings: the SKIP schedule (one falls due every skip_interval words and goes out at the
        next frame boundary: a frame's words are never split, so the receiver takes them by position)
        and the registered wire word."""
        d, p = m.d[self._domain], self.params
        d += skip_cnt.eq(Mux(skip_cnt == p.skip_interval - 1, 0, skip_cnt + 1))
        with m.If(send_skip):
            d += skip_pend.eq(0)
        with m.Elif(skip_cnt == p.skip_interval - 1):
            d += skip_pend.eq(1)
        d += [self.wire.data.eq(word), self.wire.k.eq(k)]

    def _train_and_hac(self, m, training, train_cnt, hac_timer, hac_due, start_hac):
        """Both framings: TRAIN for train_words words (or until train_done); then a HAC frame due every
        hac_interval cycles, sent when the link is free (``start_hac``)."""
        d, p = m.d[self._domain], self.params
        with m.If(training):
            d += train_cnt.eq(train_cnt + 1)
            if self.train_words:
                with m.If(train_cnt == self.train_words - 1):
                    d += training.eq(0)
            with m.If(self.train_done):
                d += training.eq(0)
        with m.If(~training):
            d += hac_timer.eq(Mux(hac_timer == p.hac_interval - 1, 0, hac_timer + 1))
            with m.If(hac_timer == p.hac_interval - 1):
                d += hac_due.eq(1)
            with m.Elif(start_hac):
                d += hac_due.eq(0)

    def queue_vectors(self):
        """Burst framing: vectors the TX queue holds (it falls behind the SEND elements by at most
        ``max_tx_wait`` words plus the header word; the frame gap repays it)."""
        p = self.params
        return -(-(p.max_tx_wait + 2) // p.payload_words) + 1

    def _elaborate_burst(self):
        """Burst framing (docs/c2c.md, "Burst framing"): a queue of vectors (with the count of the
        SEND they belong to); a frame starts when the TX is free and a vector waits: the header
        (DATA, sequence number, count - 1, their SECDED), the frame's ``count`` vectors word by word
        as they arrive, the Hamming syndrome accumulated per word, then the trailer word."""
        p = self.params
        w, P, B = p.width, p.payload_words, p.burst_vectors
        assert p.trailer_words == 1 and p.bhdr_bits <= w           # link_problems refuses the rest
        m = Module()
        d = m.d[self._domain]
        cb = p.count_bits
        r = p.frame_syndrome_bits
        m.submodules.queue = q = DomainRenamer(self._domain)(
            fifo.SyncFIFO(width=8 * p.lanes + cb, depth=self.queue_vectors()))
        training = self.training
        train_cnt = Signal(range(max(self.train_words, 1) + 1))
        skip_cnt = Signal(range(p.skip_interval))
        skip_pend = Signal()
        hac_timer = Signal(range(p.hac_interval))
        hac_due = Signal()
        hac_left = Signal(range(p.hac_frame_words))
        hac_body = Signal(max(1, (p.hac_frame_words - 1) * w))
        in_frame = Signal()
        vleft = Signal(range(B + 1))
        wleft = Signal(range(P))
        shreg = Signal(max(1, (P - 1) * w))
        j = Signal(p.word_index_bits)
        syn = Signal(r)
        par = Signal()
        crc = Signal(CRC_BITS)
        seq = Signal(p.seq_bits)
        word = Signal(w)
        k = Signal()
        send_skip = Signal()
        start_hac = Signal()

        self._skip_and_wire(m, skip_cnt, skip_pend, send_skip, word, k)
        m.d.comb += self.busy.eq(in_frame | q.r_rdy | (hac_left != 0))

        head = q.r_data[:8 * p.lanes]
        head_cnt = q.r_data[8 * p.lanes:]
        hdr_data = Cat(seq, head_cnt)
        hac_frame = Signal(p.hac_frame_words * w)
        m.d.comb += hac_frame.eq(Cat(Const(Sym.HAC.value, 4), secded_check(self.hac, HAC_BITS),
                                     Const(0, p.hac_hdr_words * w - 4 - p.hac_fec_bits), self.hac))

        def payload(x):                     # one payload word onto the wire, into the syndrome
            part, wpar = _burst_word_fec(p, x, j)
            m.d.comb += [k.eq(0), word.eq(x)]
            m.d[self._domain] += [syn.eq(syn ^ part), par.eq(par ^ wpar), j.eq(j + 1), crc.eq(_crc16_word(crc, x))]

        m.d.comb += [k.eq(1), word.eq(Sym.IDLE.value)]
        with m.If(hac_left != 0):                        # the rest of a HAC frame
            m.d.comb += [k.eq(0), word.eq(hac_body[:w])]
            d += [hac_body.eq(hac_body >> w), hac_left.eq(hac_left - 1)]
        with m.Elif(in_frame):
            with m.If(wleft != 0):
                payload(shreg[:w])
                d += [shreg.eq(shreg >> w), wleft.eq(wleft - 1)]
            with m.Elif(vleft != 0):
                # the next vector of the frame; the contract (one per send_interval, the frame's
                # vectors in consecutive elements) has it waiting: if not, a zero vector keeps the
                # frame's length and ``overrun`` reports it
                payload(Mux(q.r_rdy, head[:w], 0))
                if P > 1:
                    d += [shreg.eq(Mux(q.r_rdy, head[w:], 0)), wleft.eq(P - 1)]
                d += vleft.eq(vleft - 1)
                m.d.comb += q.r_en.eq(1)
                with m.If(~q.r_rdy):
                    d += self.overrun.eq(1)
            with m.Else():                               # the trailer: syndrome, overall parity, CRC
                cpart, cpar = _burst_word_fec(p, Cat(crc, Const(0, w - CRC_BITS)), j)   # the CRC is word n*P
                fsyn = syn ^ cpart
                m.d.comb += [k.eq(0), word.eq(Cat(fsyn, par ^ cpar ^ fsyn.xor(), crc))]
                d += in_frame.eq(0)
        with m.Elif(skip_pend | (skip_cnt == p.skip_interval - 1)):
            m.d.comb += [send_skip.eq(1), word.eq(Sym.SKIP.value)]
        with m.Elif(training):
            m.d.comb += word.eq(Sym.TRAIN.value)
        with m.Elif(q.r_rdy):                            # a frame's header
            m.d.comb += word.eq(Cat(Const(Sym.DATA.value, 4), hdr_data, secded_check(hdr_data, p.bhdr_data_bits)))
            d += [in_frame.eq(1), vleft.eq(head_cnt + 1), wleft.eq(0), j.eq(0), syn.eq(0), par.eq(0), crc.eq(0),
                  seq.eq(seq + 1), self.flits_sent.eq(self.flits_sent + 1)]
        with m.Elif(hac_due):
            m.d.comb += [start_hac.eq(1), word.eq(hac_frame[:w])]
            d += [hac_left.eq(p.hac_frame_words - 1), hac_body.eq(hac_frame[w:])]

        self._train_and_hac(m, training, train_cnt, hac_timer, hac_due, start_hac)

        # accepting vectors into the queue; no back-pressure, overrun instead
        cnt_m1 = Signal(cb)
        m.d.comb += [cnt_m1.eq(Mux(self.send_count == 0, 0, self.send_count - 1)),
                     q.w_data.eq(Cat(self.send_data, cnt_m1))]
        with m.If(self.send_valid):
            with m.If(training | ~q.w_rdy):
                d += self.overrun.eq(1)
            with m.Else():
                m.d.comb += q.w_en.eq(1)
        return m


#: Status outputs of ``LinkRX`` (all in the receiver's domain), forwarded by ``C2CLinkPair``.
RX_STATUS = ["recv_valid", "recv_data", "recv_seq", "locked", "trained", "crc_errors", "corrected",
             "error", "frame_errors", "seq_errors", "flits_ok", "hac_ok", "skips_removed", "skips_inserted",
             "fill", "fill_min", "fill_max", "remote_hac", "hac_offset", "hac_valid", "alarm",
             "alarm_flags"]


class LinkRX(wiring.Component):
    """Link receiver.  ``wire`` and ``flip`` are in ``rec_domain`` (the clock recovered from /
    forwarded with the wire, i.e. the sender's clock); everything else is in ``domain``.

    Ports (besides ``wire``):

    * ``flip`` (in, width+1, rec domain): error injection, XOR-ed into the incoming word (bit
      ``width`` flips the K flag).  Tie to 0 outside tests.
    * ``hac`` (in, 32): the local hardware-aligned counter.
    * ``recv_valid``/``recv_data``/``recv_seq``: one pulse per good DATA flit (burst framing: per
      vector of a good frame, one per cycle from the frame buffer; ``recv_seq`` the frame's).
    * ``locked``: the writer saw ``lock_words`` consecutive TRAIN words; ``trained``: locked, the
      elastic buffer centred and the end of training seen.
    * counters (32 bits, wrapping): ``crc_errors`` (frames with an uncorrectable error: SECDED saw
      two or more flipped bits; not delivered; the name is the CRC era's), ``corrected`` (frames
      delivered after correcting a single-bit error, or with a flipped K flag ignored),
      ``frame_errors`` (framing violations: a K symbol inside a frame, an invalid code, data words
      outside a frame; the frame in progress is dropped), ``seq_errors`` (a good flit whose
      sequence number is not the one expected: a flit vanished without a CRC trace),
      ``flits_ok`` (burst framing: good frames), ``hac_ok``, ``skips_removed``, ``skips_inserted``.
    * ``fill`` / ``fill_min`` / ``fill_max``: elastic buffer fill as the reader sees it (since
      centring).
    * ``remote_hac``: the last good HAC value; ``hac_offset`` = local hac - (remote hac +
      ``hac_latency``), updated (``hac_valid`` pulse) with each good HAC frame.
    * ``alarm`` (sticky) and ``alarm_flags`` (``AlarmFlags``).
    * ``error``: a one-cycle pulse whenever ``crc_errors``, ``frame_errors`` or ``seq_errors``
      counts (a vector may be lost): the chip raises its ``link`` error flag on it.

    ``compensate=False`` disables SKIP removal and insertion (for tests that prove it matters).
    """

    #: In steady state the writer's view of the fill (``AsyncFIFO.w_level``) exceeds the reader's
    #: (``r_level``) by about this many words: each side sees the other's pointer through a
    #: 2-FF synchronizer (and the writer's level is registered once more).  Measured in
    #: simulation with Amaranth's AsyncFIFO; see docs/c2c.md, "Elastic buffer".
    SYNC_GAP = 5
    #: The reader's view lags the true fill by about this many words.
    R_LAG = 3

    def __init__(self, cfg, *, domain="rx", rec_domain="rxrec", compensate=True, lock_words=8,
                 hac_latency=None):
        self.cfg = cfg
        self.params = p = LinkParams.from_cfg(cfg)
        if p.depth < 16:
            self._MustUse__silence = True      # never elaborated: no UnusedElaboratable warning
            raise ValueError(f"LinkRX needs c2c.elastic_depth >= 16 (got {p.depth}): the two "
                             "synchronizer round trips alone take ~7 words of the buffer")
        self._domain, self._rec = domain, rec_domain
        self.compensate = compensate
        self.lock_words = lock_words
        D = p.depth
        # Thresholds (docs/c2c.md, "Elastic buffer").  The reader starts when its view reaches
        # `start_level`, which puts the true fill at about D/2; in steady state the reader then
        # sees start_level + 1 and the writer start_level + 1 + SYNC_GAP.  A dead band of one word
        # each side of those keeps SKIP removal and insertion from chattering at 0 ppm.
        self.start_level = D // 2 - self.R_LAG
        self.ins_level = self.start_level - 1                           # reader: repeat a SKIP
        self.rem_level = self.start_level + 1 + self.SYNC_GAP + 2       # writer: drop a SKIP
        self.guard_lo = 1                                               # reader's view
        self.guard_hi = D - 1                                           # writer's view
        self.hac_latency = self.nominal_hac_latency() if hac_latency is None else hac_latency
        super().__init__({
            "wire": In(LinkWire(p.width)),
            "flip": In(p.width + 1),
            "hac": In(HAC_BITS),
            "recv_valid": Out(1),
            "recv_data": Out(vec(cfg.lanes)),
            "recv_seq": Out(p.seq_bits),
            "locked": Out(1),
            "trained": Out(1),
            "crc_errors": Out(32),
            "corrected": Out(32),
            "error": Out(1),
            "frame_errors": Out(32),
            "seq_errors": Out(32),
            "flits_ok": Out(32),
            "hac_ok": Out(32),
            "skips_removed": Out(32),
            "skips_inserted": Out(32),
            "fill": Out(range(D + 1)),
            "fill_min": Out(range(D + 1), init=D),
            "fill_max": Out(range(D + 1)),
            "remote_hac": Out(HAC_BITS),
            "hac_offset": Out(signed(HAC_BITS)),
            "hac_valid": Out(1),
            "alarm": Out(1),
            "alarm_flags": Out(AlarmFlags),
        })

    def nominal_hac_latency(self):
        """Receiver cycles from the cycle the sender loads a HAC header into its wire register
        to the cycle the good HAC frame updates ``remote_hac``, at equal clocks and a centred
        elastic buffer (measured; see docs/c2c.md).  DESKEW uses ``hac_offset``."""
        p = self.params
        return p.hac_frame_words + p.depth // 2 + 1

    def elaborate(self, platform):
        m = Module()
        locked, ebuf, ovf_w, high_w, removed_gray = self._writer(m)
        locked_rx, ovf_rx, high_rx = self._crossing(m, locked, ovf_w, high_w, removed_gray)
        o_valid, o_k, o_d, running = self._reader(m, ebuf, locked_rx, ovf_rx, high_rx)
        self._deframer(m, o_valid, o_k, o_d, running)
        return m

    def _writer(self, m):
        """Recovered-clock side: input register (+ error injection), lock on TRAIN, SKIP removal,
        the elastic buffer's write port, the overflow / high flags and the count of removed SKIPs.
        Returns ``(locked, ebuf, ovf_w, high_w, removed_gray)``."""
        w, D = self.params.width, self.params.depth
        rec = m.d[self._rec]
        in_d = Signal(w)
        in_k = Signal()
        rec += [in_d.eq(self.wire.data ^ self.flip[:w]), in_k.eq(self.wire.k ^ self.flip[w])]
        is_train = in_k & (in_d[:4] == Sym.TRAIN.value)
        is_skip = in_k & (in_d[:4] == Sym.SKIP.value)

        locked = Signal()
        lock_cnt = Signal(range(self.lock_words + 1))
        with m.If(~locked):
            with m.If(is_train):
                rec += lock_cnt.eq(lock_cnt + 1)
                with m.If(lock_cnt == self.lock_words - 1):
                    rec += locked.eq(1)
            with m.Elif(~is_skip):
                rec += lock_cnt.eq(0)

        m.submodules.ebuf = ebuf = self._ebuf = fifo.AsyncFIFO(width=w + 1, depth=D, r_domain=self._domain,
                                                               w_domain=self._rec)
        # a SKIP is never inside a frame: a frame word that a flipped K flag makes look like one
        # must not be dropped (the deframer takes frame words by position and corrects it)
        in_frame = self._frame_tracker(m, self._rec, in_k, in_d, locked, "w")
        remove = Signal()
        m.d.comb += remove.eq(self.compensate & locked & is_skip & ~in_frame & (ebuf.w_level >= self.rem_level))
        w_en = locked & ~remove
        m.d.comb += [ebuf.w_data.eq(Cat(in_d, in_k)), ebuf.w_en.eq(w_en)]
        ovf_w = Signal()
        high_w = Signal()
        with m.If(w_en & ~ebuf.w_rdy):
            rec += ovf_w.eq(1)
        with m.If(locked & (ebuf.w_level >= self.guard_hi)):
            rec += high_w.eq(1)
        removed_bin = Signal(32)
        removed_gray = Signal(32)
        removed_next = removed_bin + remove
        rec += [removed_bin.eq(removed_next), removed_gray.eq(_gray(removed_next))]
        return locked, ebuf, ovf_w, high_w, removed_gray

    def _frame_tracker(self, m, domain, k, d, step, name):
        """``in_frame``: the current word (k, d), presented when ``step``, is a body word of a frame
        (one of the words after a DATA or HAC header)."""
        p = self.params
        if p.burst:
            body = p.burst_vectors * p.payload_words + p.trailer_words
            _seq, n_m1, _st = self._burst_header(m, d, name)
            data_left = n_m1 * p.payload_words + (p.payload_words + p.trailer_words)
        else:
            body = p.flit_words - 1
            data_left = p.flit_words - 1
        left = Signal(range(max(body, p.hac_frame_words) + 1), name=f"{name}_frame_left")
        with m.If(step):
            with m.If(left != 0):
                m.d[domain] += left.eq(left - 1)
            with m.Elif(k & (d[:4] == Sym.DATA.value)):
                m.d[domain] += left.eq(data_left)
            with m.Elif(k & (d[:4] == Sym.HAC.value)):
                m.d[domain] += left.eq(p.hac_frame_words - 1)
        return left != 0

    def _burst_header(self, m, d, name):
        """A burst header word ``d`` decoded (comb): ``(seq, count - 1, corrected, uncorrectable)``
        after its own SECDED (``tinylpu.link.decode_burst_header``)."""
        p = self.params
        k = p.bhdr_data_bits
        fixed, corr, bad = secded_correct(m, d[4:4 + k], d[4 + k:4 + k + p.bhdr_fec_bits], k, f"{name}_bhdr")
        return fixed[:p.seq_bits], fixed[p.seq_bits:], (corr, bad)

    def _crossing(self, m, locked, ovf_w, high_w, removed_gray):
        """The writer's status into the receiver's domain (2-FF synchronizers; the SKIP count as a
        gray code).  Drives ``locked`` and ``skips_removed``; returns ``(locked_rx, ovf_rx, high_rx)``."""
        locked_rx = Signal()
        ovf_rx = Signal()
        high_rx = Signal()
        removed_gray_rx = Signal(32)
        m.submodules.sync_locked = cdc.FFSynchronizer(locked, locked_rx, o_domain=self._domain)
        m.submodules.sync_ovf = cdc.FFSynchronizer(ovf_w, ovf_rx, o_domain=self._domain)
        m.submodules.sync_high = cdc.FFSynchronizer(high_w, high_rx, o_domain=self._domain)
        m.submodules.sync_removed = cdc.FFSynchronizer(removed_gray, removed_gray_rx,
                                                       o_domain=self._domain)
        m.d.comb += [self.locked.eq(locked_rx),
                     self.skips_removed.eq(_gray_decode(m, removed_gray_rx, "removed_rx"))]
        return locked_rx, ovf_rx, high_rx

    def _reader(self, m, ebuf, locked_rx, ovf_rx, high_rx):
        """Receiver's side of the elastic buffer: centring, SKIP insertion, underflow, the fill
        statistics and the alarms.  Returns the word stream to the deframer ``(o_valid, o_k, o_d)``
        and ``running`` (the reader has started)."""
        w = self.params.width
        rx = m.d[self._domain]
        r_level = ebuf.r_level
        running = Signal()
        ins_done = Signal()
        underflow = Signal()
        low = Signal()
        o_valid = Signal()
        o_k = Signal()
        o_d = Signal(w)
        head_k = ebuf.r_data[w]
        head_d = ebuf.r_data[:w]
        head_skip = head_k & (head_d[:4] == Sym.SKIP.value)
        popping = Signal()
        in_frame = self._frame_tracker(m, self._domain, head_k, head_d, popping, "r")
        m.d.comb += self.fill.eq(r_level)

        with m.If(~running):
            with m.If(locked_rx & (r_level >= self.start_level)):
                rx += running.eq(1)
        with m.Else():
            with m.If(ebuf.r_rdy):
                m.d.comb += [o_valid.eq(1), o_k.eq(head_k), o_d.eq(head_d)]
                with m.If(self.compensate & head_skip & ~in_frame & ~ins_done & (r_level <= self.ins_level)):
                    # present the SKIP now and again next cycle: one word inserted
                    rx += [ins_done.eq(1), self.skips_inserted.eq(self.skips_inserted + 1)]
                with m.Else():
                    m.d.comb += [ebuf.r_en.eq(1), popping.eq(1)]
                    rx += ins_done.eq(0)
            with m.Else():
                rx += underflow.eq(1)
            with m.If(r_level <= self.guard_lo):
                rx += low.eq(1)
            with m.If(r_level < self.fill_min):
                rx += self.fill_min.eq(r_level)
            with m.If(r_level > self.fill_max):
                rx += self.fill_max.eq(r_level)

        flags = self.alarm_flags
        m.d.comb += [flags.overflow.eq(ovf_rx), flags.underflow.eq(underflow),
                     flags.high.eq(high_rx), flags.low.eq(low),
                     self.alarm.eq(ovf_rx | underflow | high_rx | low)]
        return o_valid, o_k, o_d, running

    # ---- deframer: framing, SECDED, sequence, HAC (receiver's clock) ----
    _IDLE_M, _FRAME_M, _HUNT_M, _BURST_M = 0, 1, 2, 3   # between frames, in a frame (flit or HAC),
    # hunting (after an error), in a burst frame

    def _deframer(self, m, o_valid, o_k, o_d, running):
        """Deframe the word stream: outside a frame a K symbol starts one (DATA, HAC) or is a
        SKIP/IDLE/TRAIN (``_deframe_symbol``); inside, the next ``flit_words - 1`` (or
        ``hac_frame_words - 1``) words are the frame's body, taken by position whatever their K
        flag; the last one ends the frame (``_frame_end``)."""
        p = self.params
        w = p.width
        rx = m.d[self._domain]
        frame_words = max(p.flit_words, p.hac_frame_words)
        st = _DeframerState(
            mode=Signal(2, name="mode"),
            is_data=Signal(name="is_data"),
            left=Signal(range(frame_words), name="left"),
            body=Signal((frame_words - 1) * w, name="body"),
            kflip=Signal(name="kflip"),
            exp_seq=Signal(p.seq_bits, name="exp_seq"),
            seen_traffic=Signal(name="seen_traffic"),
            frame_words=frame_words)
        self._err_now = []

        rx += [self.recv_valid.eq(0), self.hac_valid.eq(0)]
        m.d.comb += self.trained.eq(running & st.seen_traffic)

        if p.burst:
            self._burst_init(m)
        with m.If(o_valid):
            with m.If(st.mode == self._FRAME_M):
                self._deframe_word(m, st, o_k, o_d)
            if p.burst:
                with m.Elif(st.mode == self._BURST_M):
                    self._burst_word(m, st, o_k, o_d)
            with m.Elif(o_k):
                self._deframe_symbol(m, st, o_d, running)
            with m.Elif(st.mode == self._IDLE_M):                  # a data word outside a frame
                self._count(m, self.frame_errors)
                rx += st.mode.eq(self._HUNT_M)
        rx += self.error.eq(Cat(*self._err_now).any() if self._err_now else 0)

    def _count(self, m, counter):
        """Count an error (and pulse ``error`` in the next cycle)."""
        now = Signal(name=f"{counter.name}_now")
        m.d.comb += now.eq(1)
        self._err_now.append(now)
        m.d[self._domain] += counter.eq(counter + 1)

    def _deframe_symbol(self, m, st, o_d, running):
        """A K symbol outside a frame: SKIP ignored; DATA/HAC open a frame; IDLE/TRAIN keep the
        deframer idle; anything else is a framing error (the deframer hunts for the next valid
        symbol)."""
        p = self.params
        w = p.width
        rx = m.d[self._domain]
        code = o_d[:4]
        valid_code = (code == Sym.IDLE.value) | (code == Sym.SKIP.value) | \
            (code == Sym.TRAIN.value) | (code == Sym.HAC.value) | (code == Sym.DATA.value)
        with m.If(code == Sym.SKIP.value):
            pass
        if p.burst:
            with m.Elif(code == Sym.DATA.value):
                self._burst_start(m, st, o_d)
        with m.Elif((code == Sym.DATA.value) | (code == Sym.HAC.value)):
            rx += [st.mode.eq(self._FRAME_M), st.is_data.eq(code == Sym.DATA.value), st.kflip.eq(0),
                   st.left.eq(Mux(code == Sym.DATA.value, p.flit_words, p.hac_frame_words) - 1),
                   st.body.eq(Cat(st.body[w:], o_d))]
        with m.Elif(valid_code):                               # IDLE, TRAIN
            rx += st.mode.eq(self._IDLE_M)
        with m.Else():                                         # not a symbol
            with m.If(st.mode == self._IDLE_M):
                self._count(m, self.frame_errors)
            rx += st.mode.eq(self._HUNT_M)
        with m.If(valid_code & (code != Sym.TRAIN.value) & (code != Sym.SKIP.value) & running):
            rx += st.seen_traffic.eq(1)

    def _deframe_word(self, m, st, o_k, o_d):
        """A body word: shifted into the body by position (a K flag here is an error, corrected by
        ignoring it); after the last one the frame is decoded (``_frame_end``)."""
        w = self.params.width
        rx = m.d[self._domain]
        rx += [st.body.eq(Cat(st.body[w:], o_d)), st.left.eq(st.left - 1), st.kflip.eq(st.kflip | o_k)]
        with m.If(st.left == 1):
            # the whole frame: header word(s) and body, the last word just arriving
            self._frame_end(m, st, Cat(st.body, o_d), st.kflip | o_k)

    def _frame_end(self, m, st, bits, kflip):
        """The last word of a frame: SECDED-correct it; deliver a DATA flit (and check its sequence
        number) or a HAC value; count an uncorrectable frame in ``crc_errors``."""
        p = self.params
        w = p.width
        rx = m.d[self._domain]
        rx += st.mode.eq(self._IDLE_M)
        top = len(bits)
        data_bits = bits[top - p.flit_words * w:]
        hac_bits = bits[top - p.hac_frame_words * w:]
        sb = p.seq_bits
        prot = Cat(data_bits[4:4 + sb], data_bits[p.hdr_words * w:])
        check = data_bits[4 + sb:4 + sb + p.fec_bits]
        fixed, corr, bad = secded_correct(m, prot, check, p.fec_data_bits, "flit")
        seq = fixed[:sb]
        hac_val, hcorr, hbad = secded_correct(m, hac_bits[p.hac_hdr_words * w:][:HAC_BITS],
                                              hac_bits[4:4 + p.hac_fec_bits], HAC_BITS, "hac")
        with m.If(st.is_data):
            with m.If(~bad):
                rx += [self.recv_valid.eq(1), self.recv_seq.eq(seq), self.recv_data.eq(fixed[sb:]),
                       self.flits_ok.eq(self.flits_ok + 1), st.exp_seq.eq(seq + 1)]
                with m.If(corr | kflip):
                    rx += self.corrected.eq(self.corrected + 1)
                with m.If(seq != st.exp_seq):
                    self._count(m, self.seq_errors)
            with m.Else():
                self._count(m, self.crc_errors)
                rx += st.exp_seq.eq(st.exp_seq + 1)
        with m.Else():
            with m.If(~hbad):
                rx += [self.remote_hac.eq(hac_val), self.hac_valid.eq(1),
                       self.hac_ok.eq(self.hac_ok + 1),
                       self.hac_offset.eq(self.hac - hac_val - self.hac_latency)]
                with m.If(hcorr | kflip):
                    rx += self.corrected.eq(self.corrected + 1)
            with m.Else():
                self._count(m, self.crc_errors)

    # ---- burst framing: frame buffer, frame FEC, delivery (receiver's clock) ----
    def ring_vectors(self):
        """Vectors of the burst frame buffer: a frame arriving while the previous one is delivered
        (one vector per cycle) needs at most two frames."""
        return 1 << (2 * self.params.burst_vectors - 1).bit_length()

    def _burst_init(self, m):
        """The frame buffer (a ``Memory`` of ``ring_vectors`` vectors), its pointers and the
        delivery: vectors of committed frames leave at one per cycle on ``recv_valid``."""
        p = self.params
        rx = m.d[self._domain]
        R = self.ring_vectors()
        ab = (R - 1).bit_length()
        m.submodules.frame_buf = mem = Memory(shape=8 * p.lanes, depth=R, init=[])
        b = self._b = {
            "mem_w": mem.write_port(domain=self._domain),
            "rd": mem.read_port(domain="comb"),
            "rd_fix": mem.read_port(domain="comb"),
            "base": Signal(ab, name="bf_base"),          # first slot of the frame being received
            "vw": Signal(ab, name="bf_written"),         # its vectors written so far
            "commit": Signal(ab, name="bf_commit"),      # slots before this are checked
            "out": Signal(ab, name="bf_out"),            # next slot to deliver
            "nvec": Signal(range(p.burst_vectors + 1), name="bf_nvec"),
            "jw": Signal(range(p.burst_vectors * p.payload_words + 1), name="bf_word"),
            "wi": Signal(range(p.payload_words), name="bf_word_in_vec"),
            "vreg": Signal(max(1, (p.payload_words - 1) * p.width), name="bf_vreg"),
            "syn": Signal(p.frame_syndrome_bits, name="bf_syn"),
            "par": Signal(name="bf_par"),
            "hcorr": Signal(name="bf_hdr_corrected"),
            "fseq": Signal(p.seq_bits, name="bf_seq"),
            "pend": Signal(name="bf_commit_pend"),
            "pend_to": Signal(ab, name="bf_commit_to"),
            "fix": Signal(name="bf_fix"),
            "fix_slot": Signal(ab, name="bf_fix_slot"),
            "fix_mask": Signal(8 * p.lanes, name="bf_fix_mask"),
        }
        wp, rd, rf = b["mem_w"], b["rd"], b["rd_fix"]
        m.d.comb += [rd.addr.eq(b["out"]), rf.addr.eq(b["fix_slot"])]
        with m.If(b["pend"]):                      # the cycle after a good trailer: correct, commit
            m.d.comb += [wp.addr.eq(b["fix_slot"]), wp.data.eq(rf.data ^ b["fix_mask"]), wp.en.eq(b["fix"])]
            rx += [b["commit"].eq(b["pend_to"]), b["pend"].eq(0)]
        # the CRC of each committed frame's corrected vectors, computed as they leave, against its
        # trailer's CRC (a queue of (end slot, CRC) per committed frame): a mismatch is a
        # miscorrection of 3+ errors, counted in crc_errors (``error``: the chip's link flag)
        m.submodules.frame_check = vq = DomainRenamer(self._domain)(fifo.SyncFIFO(width=ab + CRC_BITS, depth=4))
        b["vq"] = vq
        dcrc = Signal(CRC_BITS, name="bf_deliver_crc")
        with m.If(b["out"] != b["commit"]):
            rx += [self.recv_valid.eq(1), self.recv_data.eq(rd.data), self.recv_seq.eq(b["fseq"]),
                   b["out"].eq(b["out"] + 1)]
            nxt = dcrc
            for i in range(p.payload_words):        # a signal per word: no re-expanded trees
                step = Signal(CRC_BITS, name=f"bf_deliver_crc{i}")
                m.d.comb += step.eq(_crc16_word(nxt, rd.data[i * p.width:(i + 1) * p.width]))
                nxt = step
            crc_next = nxt
            with m.If(vq.r_rdy & ((b["out"] + 1)[:ab] == vq.r_data[:ab])):     # the frame's last vector
                m.d.comb += vq.r_en.eq(1)
                rx += dcrc.eq(0)
                with m.If(crc_next != vq.r_data[ab:]):
                    self._count(m, self.crc_errors)
            with m.Else():
                rx += dcrc.eq(crc_next)

    def _burst_start(self, m, st, o_d):
        """A DATA header outside a frame: its own SECDED; a good one opens a burst frame."""
        b = self._b
        rx = m.d[self._domain]
        seq, n_m1, (corr, bad) = self._burst_header(m, o_d, "df")
        with m.If(bad):
            self._count(m, self.crc_errors)
            rx += [st.mode.eq(self._HUNT_M), st.exp_seq.eq(st.exp_seq + 1)]
        with m.Else():
            rx += [st.mode.eq(self._BURST_M), st.kflip.eq(0), b["nvec"].eq(n_m1 + 1), b["jw"].eq(0),
                   b["wi"].eq(0), b["vw"].eq(0), b["syn"].eq(0), b["par"].eq(0), b["hcorr"].eq(corr),
                   b["fseq"].eq(seq)]

    def _burst_word(self, m, st, o_k, o_d):
        """A word of a burst frame, by position: payload words into the frame buffer and the
        syndrome; the trailer decides: correct one bit (in the buffer, the next cycle), or drop the
        frame as uncorrectable (``crc_errors``)."""
        p = self.params
        b = self._b
        rx = m.d[self._domain]
        w, P = p.width, p.payload_words
        r = p.frame_syndrome_bits
        bb = p.bit_code_bits
        rx += st.kflip.eq(st.kflip | o_k)
        n_words = b["nvec"] * P
        with m.If(b["jw"] != n_words):
            part, wpar = _burst_word_fec(p, o_d, b["jw"])
            rx += [b["syn"].eq(b["syn"] ^ part), b["par"].eq(b["par"] ^ wpar), b["jw"].eq(b["jw"] + 1)]
            full = Cat(b["vreg"], o_d) if P > 1 else o_d
            with m.If(b["wi"] == P - 1):
                wp = b["mem_w"]
                m.d.comb += [wp.addr.eq(b["base"] + b["vw"]), wp.data.eq(full), wp.en.eq(1)]
                rx += [b["vw"].eq(b["vw"] + 1), b["wi"].eq(0)]
            with m.Else():
                rx += b["wi"].eq(b["wi"] + 1)
                if P > 1:
                    rx += b["vreg"].eq(Cat(b["vreg"][w:], o_d))
        with m.Else():                                     # the trailer
            syn = Signal(r, name="bf_syndrome")
            odd = Signal(name="bf_odd")
            crc_rx = o_d[r + 1:r + 1 + CRC_BITS]
            cpart, cpar = _burst_word_fec(p, Cat(crc_rx, Const(0, w - CRC_BITS)), b["jw"])   # word n*P
            m.d.comb += [syn.eq(b["syn"] ^ cpart ^ o_d[:r]), odd.eq(b["par"] ^ cpar ^ o_d[:r + 1].xor())]
            lo, jerr = syn[:bb], syn[bb:]
            bit = Signal(range(w), name="bf_err_bit")
            hit = Signal(name="bf_err_code")
            with m.Switch(lo):
                for i, c in enumerate(burst_bit_codes(p)):
                    with m.Case(c):
                        m.d.comb += [bit.eq(i), hit.eq(1)]
            one_bit = (syn & (syn - 1)) == 0                     # 0 or a check bit
            data_err = odd & ~one_bit & hit & (jerr < n_words)
            crc_err = odd & ~one_bit & hit & (jerr == n_words) & (bit < CRC_BITS)
            bad = (~odd & (syn != 0)) | (odd & ~one_bit & ~data_err & ~crc_err)
            rx += st.mode.eq(self._IDLE_M)
            with m.If(bad):
                self._count(m, self.crc_errors)
                rx += st.exp_seq.eq(st.exp_seq + 1)
            with m.Else():
                lg = P.bit_length() - 1
                off = (jerr[:lg] if lg else 0) * w + bit if lg else bit
                vq = b["vq"]
                crc_fixed = crc_rx ^ Mux(crc_err, Const(1, CRC_BITS) << bit[:4], 0)
                m.d.comb += [vq.w_en.eq(1), vq.w_data.eq(Cat((b["base"] + b["nvec"])[:len(b["base"])], crc_fixed))]
                rx += [b["pend"].eq(1), b["pend_to"].eq(b["base"] + b["nvec"]), b["base"].eq(b["base"] + b["nvec"]),
                       b["fix"].eq(data_err), b["fix_slot"].eq(b["base"] + (jerr >> lg)),
                       b["fix_mask"].eq(Const(1, 8 * p.lanes) << off),
                       self.flits_ok.eq(self.flits_ok + 1), st.exp_seq.eq(b["fseq"] + 1)]
                with m.If(odd | b["hcorr"] | st.kflip | o_k):
                    rx += self.corrected.eq(self.corrected + 1)
                with m.If(b["fseq"] != st.exp_seq):
                    self._count(m, self.seq_errors)


@dataclass(frozen=True, eq=False)
class _DeframerState:
    """The deframer's registers (``LinkRX._deframer``)."""
    mode: Signal            # LinkRX._IDLE_M / _FRAME_M / _HUNT_M
    is_data: Signal         # the frame in progress is a DATA flit (else a HAC frame)
    left: Signal            # body words of the frame still to come
    body: Signal            # the frame's words so far (shifted in from the top)
    kflip: Signal           # a body word arrived with k=1 (ignored: counted as corrected)
    exp_seq: Signal         # the sequence number expected next
    seen_traffic: Signal    # a non-TRAIN symbol read since the reader started
    frame_words: int


class C2CLinkPair(wiring.Component):
    """Test top: ``LinkTX`` (domain ``tx_domain``) -> wire -> ``LinkRX`` whose recovered clock
    is the TX clock and whose local clock is ``rx_domain``.  Each side's ``hac`` is a free-running
    cycle counter of its own domain (``tx_cycle``, ``rx_cycle``), both starting at 0.

    Ports: ``send_valid``, ``send_data`` (tx domain), ``flip`` (tx domain), ``train_done`` (tx
    domain), ``overrun``/``training`` (from the TX), ``tx_cycle``, ``rx_cycle`` and every
    ``RX_STATUS`` output of the RX.  ``self.tx``/``self.rx`` are the two components.
    """

    def __init__(self, cfg, *, tx_domain="tx", rx_domain="rx", compensate=True, train_words=None,
                 hac_latency=None):
        self.cfg = cfg
        self._txd, self._rxd = tx_domain, rx_domain
        self.tx = LinkTX(cfg, domain=tx_domain, train_words=train_words)
        self.rx = LinkRX(cfg, domain=rx_domain, rec_domain=tx_domain, compensate=compensate,
                         hac_latency=hac_latency)
        self.params = self.tx.params
        members = {
            "send_valid": In(1),
            "send_data": In(vec(cfg.lanes)),
            "send_count": In(range(self.params.burst_vectors + 1)),
            "flip": In(self.params.width + 1),
            "train_done": In(1),
            "overrun": Out(1),
            "training": Out(1),
            "tx_cycle": Out(HAC_BITS),
            "rx_cycle": Out(HAC_BITS),
        }
        for name in RX_STATUS:
            member = self.rx.signature.members[name]
            members[name] = Out(member.shape, init=member.init)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx = tx = self.tx
        m.submodules.rx = rx = self.rx
        wiring.connect(m, tx.wire, rx.wire)
        m.d[self._txd] += self.tx_cycle.eq(self.tx_cycle + 1)
        m.d[self._rxd] += self.rx_cycle.eq(self.rx_cycle + 1)
        m.d.comb += [tx.send_valid.eq(self.send_valid), tx.send_data.eq(self.send_data),
                     tx.send_count.eq(self.send_count),
                     tx.train_done.eq(self.train_done), tx.hac.eq(self.tx_cycle),
                     rx.flip.eq(self.flip), rx.hac.eq(self.rx_cycle),
                     self.overrun.eq(tx.overrun), self.training.eq(tx.training)]
        for name in RX_STATUS:
            m.d.comb += getattr(self, name).eq(getattr(rx, name))
        return m
