"""MEM slice: one SRAM bank with a read sub-unit (READ, GATHER) and a write sub-unit (WRITE, SCATTER).

The bank is ``cfg.mem_depth`` vectors of ``8 * lanes`` bits in one ``lib.memory.Memory`` with one
read port (synchronous, *not* transparent) and one write port: 1R1W, as docs/microarchitecture.md
demands.  Both ports are shared with the host interface while the chip is idle.

Each sub-unit runs the ``count`` elements of one instruction on consecutive cycles: element 0 in
the issue cycle t (its fields come straight from ``insn``), element k in cycle t+k (fields from the
sub-unit's registers: ``rd_*`` / ``wr_*``).

Read element sampled in cycle t (``L_r = latency["mem_read"]`` >= 2)::

    cycle    t                    t+1                    t+2 .. t+L_r-1        t+L_r
             GATHER: sample a,    bank read data valid   rd_pad stages         visible in
             address check,       (rd_s1_*)              (L_r-2 registers)     stream s
             addr -> read port    out driven in t+L_r-1 from the last stage

    natural latency 2: with L_r = 2, ``out`` is driven in t+1 straight from the SRAM read data.
    With L_r >= 3 the element is registered first (``rd_q_*``, |el|: valid operands, base, index,
    sequential address): its address is formed and range-checked in t+1 and goes straight to the
    bank, the data is valid in t+2, and L_r - 3 pad stages follow.  The write path then has one
    more stage (``wr_q_*``; the last stage drives the port in t+L_w), so a read still sees exactly
    the writes committed by its sample cycle.  With L_r >= 4 the checked address is registered as
    well (``rd_a_*``, |addr|): the bank is read in t+2, and the write path gets a second extra
    stage.  An ``addr`` error is then flagged combinationally
    in t+1 (still the cycle after the sample cycle).

Write element sampled in cycle t (``L_w = latency["mem_write"]`` >= 2)::

    cycle    t                    t+1 .. t+L_w-1                      t+L_w
             sample s (and a),    wr_s1 .. wr_s{L_w-1} stages; the    a READ element sampled
             address check        last one drives the write port      here sees the vector;
                                  in t+L_w-1 (bank updated at the     one sampled in t+L_w-1
                                  end of that cycle)                  still reads the old one

    natural latency 2: sample register, then the write port.

Because the read port is not transparent, a read in cycle c returns exactly the writes whose port
cycle was <= c-1, i.e. whose commit cycle (sample + L_w) is <= c: the golden model's rule.

Addresses: READ/WRITE use ``addr + k * stride`` (a signed running address, so a negative stride
that walks below 0 is caught); GATHER/SCATTER use ``addr + idx``, idx the uint16 in lanes 0 (low
byte) and 1 (high byte) of stream ``a``.  An element whose address is outside ``0..mem_depth-1``
does not touch the bank (and a read drives no result).  An element that samples an empty stream
slot does nothing either.

Errors (``err``) are registered: a problem of an element sampled (or an instruction issued) in
cycle c pulses in cycle c+1.

* ``empty``: a sampled stream slot (s of WRITE/SCATTER, a of GATHER/SCATTER) has valid = 0.
* ``addr``:  the element's address is out of range (only flagged when its stream slots were valid,
  the golden model's order of checks).
* ``busy``:  an instruction issues to a sub-unit that still has elements left; the new instruction
  replaces the old one.

``busy`` (out) is high in cycle c when an element runs in c or later, a result is still to be
driven, or a write is still to reach the bank (the issue cycle included).

Host access (chip idle): ``host_we`` in cycle c writes ``host_wdata`` to ``host_addr`` at the end
of c (ignored when ``host_addr >= mem_depth``, or when the chip's write stage uses the port).
``host_re`` in cycle c reads ``host_addr`` (low address bits); ``host_rdata`` holds the vector from
cycle c+1 until the next read of the port.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from tinylpu import isa
from tinylpu.hdl.common import (
    ElementField,
    ElementSequencer,
    below,
    drive_landing,
    pick_stream,
    port_landing,
    predecode,
    unit_signature,
    vec,
)
from tinylpu.isa import Opcode

__all__ = ["MemSlice"]

#: running address: 16-bit base + up to 4095 * (-128..127), or base + uint16 index
ADDR = signed(22)


def element_stage(m, prefix, reg, el, gather, base, seq, idx, dst, valids):
    """This cycle's element (valid operands, GATHER/SCATTER flag, base, sequential address, index,
    and the destination or the data), registered when `reg` (|el|, appending its valid to
    `valids`), else as it is."""
    vals = {"el": el, "gather": gather, "base": base, "seq": seq, "idx": idx, "dst": dst}
    if not reg:
        return vals
    out = {}
    for k, v in vals.items():
        r = Signal(v.shape(), name=f"{prefix}_q_{k}")
        m.d.sync += r.eq(v)
        out[k] = r
    valids.append(out["el"])
    return out


class MemSlice(wiring.Component):
    """One MEM bank; built as ``MemSlice(cfg, slice)``.  See the module docstring for timing."""

    WIDE_OUT = False        # ``out.wide`` is always 0 (the stream fabric relies on it)

    def __init__(self, cfg, slice):
        self.cfg = cfg
        self.slice = slice
        lanes = cfg.lanes
        super().__init__(unit_signature(cfg, {
            "host_addr": In(16),
            "host_wdata": In(vec(lanes)),
            "host_we": In(1),
            "host_re": In(1),
            "host_rdata": Out(vec(lanes)),
        }))
        self.ahead = None       # set by hdl/taps.py's ``Tapped`` (``ElementSequencer`` ahead)
        self.bank = Memory(shape=vec(lanes), depth=cfg.mem_depth, init=[])
        depth = cfg.mem_depth
        self._abits = max(1, (depth - 1).bit_length())          # bank address bits
        self._el_reg = int(cfg.latency["mem_read"] >= 3)        # |el|
        self._addr_reg = int(cfg.latency["mem_read"] >= 4)      # |addr|

    def elaborate(self, platform):
        m = Module()
        l_read, l_write = self.cfg.latency["mem_read"], self.cfg.latency["mem_write"]
        assert l_read >= 2 and l_write >= 2
        m.submodules.bank = bank = self.bank
        rport = bank.read_port()            # not transparent: sees writes of earlier cycles only
        wport = bank.write_port()
        dec = self._decode(m)
        rd = self._read_unit(m, rport, dec)
        wr = self._write_unit(m, wport, dec)
        self._status(m, dec, rd, wr)
        return m

    def _decode(self, m):
        """The issuing instruction's class, decoded from the word alone (``common.predecode``: in
        the cycle before the issue on chips with registered issue); ``multi``: count >= 2, so a
        register can say "elements left" without a compare in the sample cycle."""
        fns = {
            "rd": lambda i: ((i.op == Opcode.READ) | (i.op == Opcode.GATHER)) & (i.args.mem.count != 0),
            "wr": lambda i: ((i.op == Opcode.WRITE) | (i.op == Opcode.SCATTER)) & (i.args.mem.count != 0),
            "gather": lambda i: i.op == Opcode.GATHER,
            "scatter": lambda i: i.op == Opcode.SCATTER,
        }
        dec_rd = predecode(m, self, "dec_rd", fns["rd"])
        dec_wr = predecode(m, self, "dec_wr", fns["wr"])
        dec_gather = predecode(m, self, "dec_gather", fns["gather"])
        dec_scatter = predecode(m, self, "dec_scatter", fns["scatter"])
        dec_multi = predecode(m, self, "dec_multi", lambda i: i.args.mem.count[1:].any())
        issue_rd = Signal(name="issue_rd")
        issue_wr = Signal(name="issue_wr")
        m.d.comb += [issue_rd.eq(self.issue & dec_rd), issue_wr.eq(self.issue & dec_wr)]
        # behind tap registers (``ElementSequencer`` ahead): the same, for the next cycle's issue
        ahead = None
        if self.ahead is not None:
            a = self.ahead
            ahead = {k: Value.cast(fn(a.insn)) for k, fn in fns.items()}
            ahead["rd"], ahead["wr"] = a.issue & ahead["rd"], a.issue & ahead["wr"]
        return SimpleNamespace(rd=issue_rd, wr=issue_wr, gather=dec_gather, scatter=dec_scatter, multi=dec_multi,
                               ahead=ahead)

    def _sequencer(self, m, prefix, issue, dec_indexed, indexed, multi, dec):
        """The element sequencer of the read (``rd``) or write (``wr``) sub-unit: this cycle's
        element's streams ``s``/``a``, GATHER/SCATTER flag (`indexed`), base, stride and sequential
        address ``seq`` (register ``<prefix>_addr``, advanced by the stride every element).  Behind
        tap registers the fields are registers loaded a cycle ahead (``ElementSequencer`` ahead)."""
        def values(args, flag):
            return {indexed: flag, "s": args.s, "a": args.a, "base": args.addr, "seq": args.addr,
                    "stride": args.stride}
        v = values(self.insn.args.mem, dec_indexed)
        fields = {key: ElementField(x) for key, x in v.items()}
        fields["seq"] = ElementField(v["seq"], shape=ADDR, reg=f"{prefix}_addr", step=lambda el: el["seq"] + el["stride"])
        kw = {}
        if dec.ahead is not None:
            # WRITE's data stream select once per lane (``wr_el_s_copy<j>``, common.pick_stream)
            kw = {"ahead": SimpleNamespace(issue=dec.ahead[prefix],
                                           fields=values(self.ahead.insn.args.mem, dec.ahead[indexed])),
                  "copies": self.cfg.lanes if prefix == "wr" else 1, "copy_keys": {"s"}}
        return ElementSequencer(m, prefix, issue, self.insn.args.mem.count, multi=multi, fields=fields, **kw)

    def _address(self, m, prefix, q):
        """The element's address (``<prefix>_el_addr``: base + index, or the sequential address)
        and its range check: (in range and live ``<prefix>_ok``, address, addr error)."""
        depth = self.cfg.mem_depth
        addr = Signal(ADDR, name=f"{prefix}_el_addr")
        m.d.comb += addr.eq(Mux(q["gather"], q["base"] + q["idx"], q["seq"]))
        ok = Signal(name=f"{prefix}_ok")              # the element uses the bank
        m.d.comb += ok.eq(q["el"] & below(addr, depth))
        return ok, addr, q["el"] & ~below(addr, depth)

    # ------------------------------------------------------------------------------------
    # read sub-unit
    # ------------------------------------------------------------------------------------
    def _read_unit(self, m, rport, dec):
        """READ / GATHER: the elements, their addresses, the read port and the result pipeline."""
        seq = self._sequencer(m, "rd", dec.rd, dec.gather, "gather", dec.multi, dec)
        el = seq.fields
        idx_data, idx_valid = pick_stream(self.tap, el["a"].west, el["a"].index)
        operands_ok = ~el["gather"] | idx_valid
        # with L_r >= 3 the element is registered first (|el|): its address is formed, checked and
        # sent to the bank one cycle after the sample cycle, and the write path gets one more stage
        # so that the ordering stays the same
        valids = []
        q = element_stage(m, "rd", self._el_reg, seq.el & operands_ok, el["gather"], el["base"], el["seq"],
                          idx_data[:16], el["s"], valids)
        ok, addr, err_addr = self._address(m, "rd", q)
        port_ok, port_s = self._read_port(m, rport, ok, addr, q["dst"], valids)
        self._result_port(m, rport.data, port_ok, port_s, valids)
        return SimpleNamespace(seq=seq, err_empty=seq.el & ~operands_ok, err_addr=err_addr, valids=valids)

    def _read_port(self, m, rport, ok, addr, dst, valids):
        """The bank's read port (shared with the host); with |addr| (L_r >= 4) the checked address
        is registered in front of it.  Returns (reads now, destination) of the element at the port."""
        abits = self._abits
        port_ok, port_addr, port_s = ok, addr[:abits], dst
        if self._addr_reg:
            port_ok, port_addr = Signal(name="rd_a_ok"), Signal(abits, name="rd_a_addr")
            port_s = Signal(isa.StreamField, name="rd_a_dst")
            m.d.sync += [port_ok.eq(ok), port_addr.eq(addr[:abits]), port_s.eq(dst)]
            valids.append(port_ok)
        m.d.comb += [
            rport.addr.eq(Mux(port_ok, port_addr, self.host_addr[:abits])),
            rport.en.eq(port_ok | self.host_re),
            self.host_rdata.eq(rport.data),
        ]
        return port_ok, port_s

    def _result_port(self, m, data, port_ok, port_s, valids):
        """The result pipeline: stage 1 = the cycle the read data is valid, then pad stages; the
        last one drives ``out``."""
        rd_valid = Signal(name="rd_s1_valid")
        rd_dst = Signal(isa.StreamField, name="rd_s1_dst")
        m.d.sync += [rd_valid.eq(port_ok), rd_dst.eq(port_s)]
        last_in = (port_ok, port_s)         # the inputs of the last result register
        rd_data = data
        valids.append(rd_valid)
        for k in range(2 + self._el_reg + self._addr_reg, self.cfg.latency["mem_read"]):
            v = Signal(name=f"rd_s{k}_valid")
            d = Signal(isa.StreamField, name=f"rd_s{k}_dst")
            x = Signal(vec(self.cfg.lanes), name=f"rd_s{k}_data")
            m.d.sync += [v.eq(rd_valid), d.eq(rd_dst), x.eq(rd_data)]
            last_in = (rd_valid, rd_dst)
            rd_valid, rd_dst, rd_data = v, d, x
            valids.append(v)
        drive_landing(m, self.out, *port_landing(m, "rd", last_in[0], last_in[1].index, last_in[1].west, 0,
                                                 self.cfg, planes=False))
        m.d.comb += [
            self.out.valid.eq(rd_valid),
            self.out.west.eq(rd_dst.west),
            self.out.index.eq(rd_dst.index),
            self.out.wide.eq(0),
            self.out.data[0].eq(rd_data),
        ]

    # ------------------------------------------------------------------------------------
    # write sub-unit
    # ------------------------------------------------------------------------------------
    def _write_unit(self, m, wport, dec):
        """WRITE / SCATTER: the elements, their addresses and the write stages."""
        seq = self._sequencer(m, "wr", dec.wr, dec.scatter, "scatter", dec.multi, dec)
        el = seq.fields
        src_data, src_valid = pick_stream(self.tap, el["s"].west, el["s"].index)
        if seq.ahead is not None:
            src_data = Cat(*(pick_stream(self.tap, c["s"].west, c["s"].index, lane=j)[0]
                             for j, c in enumerate(seq.field_copies)))
        idx_data, idx_valid = pick_stream(self.tap, el["a"].west, el["a"].index)
        operands_ok = src_valid & (~el["scatter"] | idx_valid)
        valids = []
        q = element_stage(m, "wr", self._el_reg, seq.el & operands_ok, el["scatter"], el["base"], el["seq"],
                          idx_data[:16], src_data, valids)
        ok, addr, err_addr = self._address(m, "wr", q)
        self._write_port(m, wport, ok, addr, q["dst"], valids)
        return SimpleNamespace(seq=seq, err_empty=seq.el & ~operands_ok, err_addr=err_addr, valids=valids)

    def _write_port(self, m, wport, ok, addr, data, valids):
        """L_w - 1 stages after the address (|el| and |addr| count as one more each); the last
        drives the bank's write port, which the host uses while it is free."""
        abits, lanes = self._abits, self.cfg.lanes
        wr_valid, wr_stage_addr, wr_data = ok, addr[:abits], data
        stages = self.cfg.latency["mem_write"] + self._addr_reg
        lane_valid = None
        for k in range(1, stages):
            v = Signal(name=f"wr_s{k}_valid")
            a = Signal(abits, name=f"wr_s{k}_addr")
            x = Signal(vec(lanes), name=f"wr_s{k}_data")
            m.d.sync += [v.eq(wr_valid), a.eq(wr_stage_addr), x.eq(wr_data)]
            if k == stages - 1 and self.ahead is not None:
                # behind tap registers the last stage's valid also once per lane
                # (``wr_s<k>_valid_copy<j>``), for that lane's data select in front of the bank: the
                # one register fed all 64 data selects at the bank's 16 block RAMs (the routed
                # critical path of seed 2 at ee12e9f, 78.25 MHz: 11.89 ns of routing from it)
                lane_valid = [Signal(name=f"wr_s{k}_valid_copy{j}") for j in range(lanes)]
                m.d.sync += [c.eq(wr_valid) for c in lane_valid]
            wr_valid, wr_stage_addr, wr_data = v, a, x
            valids.append(v)
        host_we_ok = self.host_we & below(self.host_addr, self.cfg.mem_depth)
        if lane_valid is None:
            m.d.comb += wport.data.eq(Mux(wr_valid, wr_data, self.host_wdata))
        else:
            m.d.comb += wport.data.eq(Cat(*(Mux(lane_valid[j], wr_data[8 * j:8 * j + 8], self.host_wdata[8 * j:8 * j + 8])
                                            for j in range(lanes))))
        m.d.comb += [
            wport.addr.eq(Mux(wr_valid, wr_stage_addr, self.host_addr[:abits])),
            wport.en.eq(wr_valid | host_we_ok),
        ]

    def _status(self, m, dec, rd, wr):
        """``err`` (registered pulses) and ``busy``."""
        el_reg, addr_reg = self._el_reg, self._addr_reg
        # (|el|: the address is checked in the cycle after the sample cycle, the pulse's cycle)
        addr_dom = m.d.comb if el_reg else m.d.sync
        addr_dom += self.err.addr.eq(rd.err_addr | wr.err_addr)
        m.d.sync += [
            self.err.empty.eq(rd.err_empty | wr.err_empty),
            self.err.busy.eq(rd.seq.err_busy | wr.seq.err_busy),
        ]
        # (the write stages added for |el| and |addr| drive the port in or after the commit cycle:
        # architecturally the write is done)
        wr_busy_stages = wr.valids[:len(wr.valids) - el_reg - addr_reg]
        m.d.comb += self.busy.eq(dec.rd | dec.wr | rd.seq.more | wr.seq.more
                                 | Cat(*rd.valids, *wr_busy_stages).any())
