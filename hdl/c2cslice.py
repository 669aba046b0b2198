"""C2C slice: SEND and RECV between the chip's stream fabric and its C2C links (docs/c2c.md).

Sub-units per port p (``cfg.c2c_ports``), each with the element spacing F = ``cfg.vector_interval``
(one flit plus the spare word, ``LinkParams.send_interval``):

* ``tx<p>`` (SEND port, src, n): element k samples stream ``src`` at the slice's position during
  cycle t + k*F and hands it to the port's ``LinkTX`` in that same cycle (``tx_valid[p]`` /
  ``tx_data[p]``; the link's accept edge is the end of the cycle).  Busy until t + n*F - 1.
  With burst framing (``c2c.framing: burst``) F is one vector's payload words, the SEND travels as
  one frame and ``tx_count[p]`` carries n (a SEND of more than ``c2c.burst_vectors`` sets ``err.link``
  at issue, as the golden tray refuses it); the chip wires it to the ``LinkTX``'s ``send_count``.
* ``rx<p>`` (RECV dst, port, n): element k pops the oldest vector of the port's RX vector FIFO
  during cycle t + k*F; it is driven on ``out`` c2c_recv - 1 cycles later, so it is visible on
  ``dst`` at t + k*F + c2c_recv (the golden model's timing).

The RX vector FIFO of each port (``cfg.link["rx_vectors"]`` deep, a ``lib.fifo.SyncFIFO`` in the
chip's clock) is written by the port's ``LinkRX`` (``rx_valid[p]`` / ``rx_data[p]``, already in the
chip's clock); a vector delivered (``recv_valid``) in cycle a can be popped from a on (a RECV
element that finds the FIFO empty takes the vector arriving in its cycle directly).

Errors: ``err.link`` for a RECV element that finds the FIFO empty (the golden model's "no vector has
arrived"), a vector arriving at a full FIFO (overflow: the golden tray's "RX buffer overflows"),
a newly raised ``tx_overrun`` of a port's ``LinkTX``, and ``rx_error`` (the port's ``LinkRX``
counted an uncorrectable flit, a framing or a sequence error: a vector may be lost); ``err.busy`` for an issue to a busy
sub-unit; ``err.empty`` for a SEND element sampling an empty stream slot; ``err.port`` for RECV
elements of two ports landing in the same cycle; ``err.addr`` for a port number the chip lacks.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from tinylpu.config import MIN_LATENCY
from tinylpu.hdl.common import drive_landing, pick_stream, port_landing, unit_signature, vec
from tinylpu.isa import COUNT_MAX, Opcode, StreamField

__all__ = ["C2CSlice"]


class C2CSlice(wiring.Component):
    """``C2CSlice(cfg, slice)``: the c2c slice unit, one TX and one RX sub-unit per port."""

    WIDE_OUT = False        # ``out.wide`` is always 0 (the stream fabric relies on it)

    def __init__(self, cfg, slice=None):
        self.cfg, self.slice = cfg, slice
        self.ports = P = cfg.c2c_ports
        if P < 1:
            self._MustUse__silence = True
            raise ValueError(f"config {cfg.name} has no C2C ports")
        self.F = cfg.vector_interval
        self.latency = cfg.latency["c2c_recv"]
        if self.latency < max(2, MIN_LATENCY["c2c_recv"]):
            # The stream fabric takes a registered landing select (``port_landing``), decided the
            # cycle before the result lands; at c2c_recv 1 a RECV's first result lands in its issue
            # cycle, whose destination stream is not known a cycle earlier (``pre_insn`` defines
            # only the opcode and count).
            self._MustUse__silence = True
            raise ValueError(f"config {cfg.name}: latency c2c_recv = {self.latency}: the C2C slice needs at least 2 "
                             "(the landing select of a RECV result is registered the cycle before it lands)")
        self.rx_vectors = cfg.link["rx_vectors"]
        self.link = lp = cfg.link_params
        super().__init__(unit_signature(cfg, {
            "tx_valid": Out(P),
            "tx_data": Out(data.ArrayLayout(vec(cfg.lanes), P)),
            "tx_count": Out(data.ArrayLayout(range(lp.burst_vectors + 1), P)),
            "tx_overrun": In(P),
            "rx_valid": In(P),
            "rx_data": In(data.ArrayLayout(vec(cfg.lanes), P)),
            "rx_error": In(P),
            "rx_level": Out(data.ArrayLayout(range(self.rx_vectors + 1), P)),
        }))

    def _sequencer(self, m, name, accept, count):
        """Element timing of one sub-unit.  Returns (busy_now, element_now, stream field register)."""
        F = self.F
        rem = Signal(range(COUNT_MAX * F + 1), name=f"{name}_rem")     # busy cycles from this one on
        wait = Signal(range(F), name=f"{name}_wait")                  # cycles after this one to the next element
        els = Signal(range(COUNT_MAX + 1), name=f"{name}_els")        # elements still to come
        el = Signal(name=f"{name}_el")
        m.d.comb += el.eq((accept & (count != 0)) | ((rem != 0) & (wait == 0) & (els != 0)))
        with m.If(accept):
            m.d.sync += [rem.eq(Mux(count != 0, count * F - 1, 0)), wait.eq(F - 1),
                         els.eq(Mux(count != 0, count - 1, 0))]
        with m.Elif(rem != 0):
            m.d.sync += rem.eq(rem - 1)
            with m.If(el):
                m.d.sync += [wait.eq(F - 1), els.eq(els - 1)]
            with m.Elif(wait != 0):
                m.d.sync += wait.eq(wait - 1)
        return rem != 0, el

    def elaborate(self, platform):
        m = Module()
        P, cfg = self.ports, self.cfg
        new = self.insn
        c = new.args.c2c
        is_send = Signal()
        is_recv = Signal()
        m.d.comb += [is_send.eq(self.issue & (new.op == Opcode.SEND)),
                     is_recv.eq(self.issue & (new.op == Opcode.RECV)),
                     self.err.addr.eq((is_send | is_recv) & (c.port >= P))]

        busy_any = []
        errs_busy, errs_empty, errs_link = [], [], []
        rx_el = []
        rx_dst = []
        for p in range(P):
            for kind, is_op in (("tx", is_send), ("rx", is_recv)):
                name = f"{kind}{p}"
                busy = Signal(name=f"{name}_busy")
                accept = Signal(name=f"{name}_accept")
                hit = is_op & (c.port == p)
                m.d.comb += accept.eq(hit & ~busy)
                errs_busy.append(hit & busy)
                src = Signal(StreamField, name=f"{name}_s")
                with m.If(accept):
                    m.d.sync += src.eq(c.s)
                cur = Signal(StreamField, name=f"{name}_s_now")
                m.d.comb += cur.eq(Mux(accept, c.s, src))
                b, el = self._sequencer(m, name, accept, c.count)
                m.d.comb += busy.eq(b)
                busy_any.append(b | el)
                if kind == "tx":
                    x, ok = pick_stream(self.tap, cur.west, cur.index)
                    m.d.comb += [self.tx_valid[p].eq(el), self.tx_data[p].eq(x)]
                    errs_empty.append(el & ~ok)
                    if self.link.burst:
                        # burst framing: the SEND is one frame; its count goes with every element
                        # (the LinkTX reads it with the first) and may not exceed burst_vectors
                        cnt = Signal(range(COUNT_MAX + 1), name=f"{name}_count")
                        with m.If(accept):
                            m.d.sync += cnt.eq(c.count)
                        cnt_now = Mux(accept, c.count, cnt)
                        m.d.comb += self.tx_count[p].eq(Mux(cnt_now > self.link.burst_vectors, 0, cnt_now))
                        errs_link.append(accept & (c.count > self.link.burst_vectors))
                else:
                    rx_el.append(el)
                    rx_dst.append(cur)

        # --- RX vector FIFOs -------------------------------------------------------------------
        pops, heads = [], []
        for p in range(P):
            q = fifo.SyncFIFO(width=8 * cfg.lanes, depth=self.rx_vectors)
            m.submodules[f"rxq{p}"] = q
            # a RECV element that finds the FIFO empty takes a vector arriving in the same cycle
            bypass = rx_el[p] & ~q.r_rdy & self.rx_valid[p]
            m.d.comb += [q.w_en.eq(self.rx_valid[p] & ~bypass), q.w_data.eq(self.rx_data[p]),
                         self.rx_level[p].eq(q.level)]
            errs_link.append(self.rx_valid[p] & ~bypass & ~q.w_rdy)     # overflow
            m.d.comb += q.r_en.eq(rx_el[p] & q.r_rdy)
            errs_link.append(rx_el[p] & ~q.r_rdy & ~self.rx_valid[p])   # RECV before arrival
            pops.append(rx_el[p] & (q.r_rdy | self.rx_valid[p]))
            heads.append(Mux(q.r_rdy, q.r_data, self.rx_data[p]))

        # the LinkRX lost a vector: an uncorrectable flit, a framing or a sequence error
        errs_link.append(self.rx_error.any())

        # LinkTX overrun (sticky there): flag when it rises
        ovr_d = Signal(P)
        m.d.sync += ovr_d.eq(self.tx_overrun)
        errs_link.append((self.tx_overrun & ~ovr_d).any())

        # --- result pipeline: the popped vector, visible c2c_recv cycles after the element --------
        v0 = Signal(name="res_valid0")
        d0 = Signal(vec(cfg.lanes), name="res_data0")
        s0 = Signal(StreamField, name="res_dst0")
        m.d.comb += v0.eq(Cat(*pops).any())
        for p in reversed(range(P)):
            with m.If(pops[p]):
                m.d.comb += [d0.eq(heads[p]), s0.eq(rx_dst[p])]
        two = 0
        for i in range(P):
            for j in range(i + 1, P):
                two = two | (rx_el[i] & rx_el[j])
        stage = (v0, d0, s0)
        valids = []
        for n in range(self.latency - 1):
            v = Signal(name=f"res_valid{n + 1}")
            d = Signal(vec(cfg.lanes), name=f"res_data{n + 1}")
            s = Signal(StreamField, name=f"res_dst{n + 1}")
            m.d.sync += [v.eq(stage[0]), d.eq(stage[1]), s.eq(stage[2])]
            valids.append(v)
            last_in = stage                 # the inputs of the last result register
            stage = (v, d, s)
        drive_landing(m, self.out, *port_landing(m, "res", last_in[0], last_in[2].index, last_in[2].west, 0, cfg,
                                                 planes=False))
        m.d.comb += [
            self.out.valid.eq(stage[0]),
            self.out.index.eq(stage[2].index),
            self.out.west.eq(stage[2].west),
            self.out.wide.eq(0),
            self.out.data[0].eq(stage[1]),
            self.busy.eq(Cat(*busy_any, *valids).any()),
            self.err.busy.eq(Cat(*errs_busy).any()),
            self.err.empty.eq(Cat(*errs_empty).any()),
            self.err.link.eq(Cat(*errs_link).any()),
            self.err.port.eq(two),
        ]
        return m
