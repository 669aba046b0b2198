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

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from tinylpu import isa
from tinylpu.hdl.common import below, drive_landing, pick_stream, port_landing, predecode, unit_signature, vec
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
        self.bank = Memory(shape=vec(lanes), depth=cfg.mem_depth, init=[])

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        depth = cfg.mem_depth
        abits = max(1, (depth - 1).bit_length())
        l_read, l_write = cfg.latency["mem_read"], cfg.latency["mem_write"]
        assert l_read >= 2 and l_write >= 2
        el_reg = int(l_read >= 3)
        addr_reg = int(l_read >= 4)

        m.submodules.bank = bank = self.bank
        rport = bank.read_port()            # not transparent: sees writes of earlier cycles only
        wport = bank.write_port()

        args = self.insn.args.mem
        # decoded from the instruction word alone, in the cycle before the issue on chips with
        # registered issue (``common.predecode``); `*_multi`: count >= 2, so a register can say
        # "elements left" without a compare in the sample cycle
        dec_rd = predecode(m, self, "dec_rd", lambda i: ((i.op == Opcode.READ) | (i.op == Opcode.GATHER))
                           & (i.args.mem.count != 0))
        dec_wr = predecode(m, self, "dec_wr", lambda i: ((i.op == Opcode.WRITE) | (i.op == Opcode.SCATTER))
                           & (i.args.mem.count != 0))
        dec_gather = predecode(m, self, "dec_gather", lambda i: i.op == Opcode.GATHER)
        dec_scatter = predecode(m, self, "dec_scatter", lambda i: i.op == Opcode.SCATTER)
        dec_multi = predecode(m, self, "dec_multi", lambda i: i.args.mem.count[1:].any())
        issue_rd = Signal(name="issue_rd")
        issue_wr = Signal(name="issue_wr")
        m.d.comb += [issue_rd.eq(self.issue & dec_rd), issue_wr.eq(self.issue & dec_wr)]

        def in_range(addr):
            return below(addr, depth)

        # ------------------------------------------------------------------------------------
        # read sub-unit
        # ------------------------------------------------------------------------------------
        rd_left = Signal(12, name="rd_left")          # elements still to run, from this cycle on
        rd_more = Signal(name="rd_more")              # rd_left != 0, as a register
        rd_gather = Signal(name="rd_gather")
        rd_s = Signal(isa.StreamField, name="rd_s")
        rd_a = Signal(isa.StreamField, name="rd_a")
        rd_base = Signal(16, name="rd_base")
        rd_addr = Signal(ADDR, name="rd_addr")        # READ: address of this cycle's element
        rd_stride = Signal(signed(8), name="rd_stride")

        # this cycle's element (from insn in the issue cycle, else from the registers)
        rd_el = Signal(name="rd_el")
        rd_el_gather = Signal(name="rd_el_gather")
        rd_el_s = Signal(isa.StreamField, name="rd_el_s")
        rd_el_a = Signal(isa.StreamField, name="rd_el_a")
        rd_el_base = Signal(16, name="rd_el_base")
        rd_el_seq = Signal(ADDR, name="rd_el_seq")
        rd_el_stride = Signal(signed(8), name="rd_el_stride")
        with m.If(issue_rd):
            m.d.comb += [
                rd_el.eq(1), rd_el_gather.eq(dec_gather), rd_el_s.eq(args.s), rd_el_a.eq(args.a),
                rd_el_base.eq(args.addr), rd_el_seq.eq(args.addr), rd_el_stride.eq(args.stride),
            ]
            m.d.sync += [rd_left.eq(args.count - 1), rd_more.eq(dec_multi)]
        with m.Else():
            m.d.comb += [
                rd_el.eq(rd_more), rd_el_gather.eq(rd_gather), rd_el_s.eq(rd_s), rd_el_a.eq(rd_a),
                rd_el_base.eq(rd_base), rd_el_seq.eq(rd_addr), rd_el_stride.eq(rd_stride),
            ]
            with m.If(rd_more):
                m.d.sync += [rd_left.eq(rd_left - 1), rd_more.eq(rd_left != 1)]
        m.d.sync += [
            rd_gather.eq(rd_el_gather), rd_s.eq(rd_el_s), rd_a.eq(rd_el_a), rd_base.eq(rd_el_base),
            rd_stride.eq(rd_el_stride), rd_addr.eq(rd_el_seq + rd_el_stride),
        ]

        rd_idx_data, rd_idx_valid = pick_stream(self.tap, rd_el_a.west, rd_el_a.index)
        rd_operands_ok = ~rd_el_gather | rd_idx_valid
        rd_err_empty = rd_el & ~rd_operands_ok
        # with L_r >= 3 the element is registered first (|el|): its address is formed, checked and
        # sent to the bank one cycle after the sample cycle, and the write path gets one more stage
        # so that the ordering stays the same
        rd_stage_valids = []
        q = element_stage(m, "rd", el_reg, rd_el & rd_operands_ok, rd_el_gather, rd_el_base, rd_el_seq,
                          rd_idx_data[:16], rd_el_s, rd_stage_valids)
        rd_el_addr = Signal(ADDR, name="rd_el_addr")
        m.d.comb += rd_el_addr.eq(Mux(q["gather"], q["base"] + q["idx"], q["seq"]))
        rd_ok = Signal(name="rd_ok")                  # the element reads the bank this cycle
        m.d.comb += rd_ok.eq(q["el"] & in_range(rd_el_addr))
        rd_err_addr = q["el"] & ~in_range(rd_el_addr)
        port_ok, port_addr, port_s = rd_ok, rd_el_addr[:abits], q["dst"]
        if addr_reg:
            # |addr| (L_r >= 4): the checked address is registered in front of the bank too
            port_ok, port_addr = Signal(name="rd_a_ok"), Signal(abits, name="rd_a_addr")
            port_s = Signal(isa.StreamField, name="rd_a_dst")
            m.d.sync += [port_ok.eq(rd_ok), port_addr.eq(rd_el_addr[:abits]), port_s.eq(q["dst"])]
            rd_stage_valids.append(port_ok)
        m.d.comb += [
            rport.addr.eq(Mux(port_ok, port_addr, self.host_addr[:abits])),
            rport.en.eq(port_ok | self.host_re),
            self.host_rdata.eq(rport.data),
        ]

        # result pipeline: stage 1 = the cycle the read data is valid, then pad stages
        rd_valid = Signal(name="rd_s1_valid")
        rd_dst = Signal(isa.StreamField, name="rd_s1_dst")
        m.d.sync += [rd_valid.eq(port_ok), rd_dst.eq(port_s)]
        last_in = (port_ok, port_s)         # the inputs of the last result register
        rd_data = rport.data
        rd_stage_valids.append(rd_valid)
        for k in range(2 + el_reg + addr_reg, l_read):
            v = Signal(name=f"rd_s{k}_valid")
            d = Signal(isa.StreamField, name=f"rd_s{k}_dst")
            x = Signal(vec(cfg.lanes), name=f"rd_s{k}_data")
            m.d.sync += [v.eq(rd_valid), d.eq(rd_dst), x.eq(rd_data)]
            last_in = (rd_valid, rd_dst)
            rd_valid, rd_dst, rd_data = v, d, x
            rd_stage_valids.append(v)
        drive_landing(m, self.out, *port_landing(m, "rd", last_in[0], last_in[1].index, last_in[1].west, 0, cfg,
                                                 planes=False))
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
        wr_left = Signal(12, name="wr_left")
        wr_more = Signal(name="wr_more")              # wr_left != 0, as a register
        wr_scatter = Signal(name="wr_scatter")
        wr_s = Signal(isa.StreamField, name="wr_s")
        wr_a = Signal(isa.StreamField, name="wr_a")
        wr_base = Signal(16, name="wr_base")
        wr_addr = Signal(ADDR, name="wr_addr")
        wr_stride = Signal(signed(8), name="wr_stride")

        wr_el = Signal(name="wr_el")
        wr_el_scatter = Signal(name="wr_el_scatter")
        wr_el_s = Signal(isa.StreamField, name="wr_el_s")
        wr_el_a = Signal(isa.StreamField, name="wr_el_a")
        wr_el_base = Signal(16, name="wr_el_base")
        wr_el_seq = Signal(ADDR, name="wr_el_seq")
        wr_el_stride = Signal(signed(8), name="wr_el_stride")
        with m.If(issue_wr):
            m.d.comb += [
                wr_el.eq(1), wr_el_scatter.eq(dec_scatter), wr_el_s.eq(args.s), wr_el_a.eq(args.a),
                wr_el_base.eq(args.addr), wr_el_seq.eq(args.addr), wr_el_stride.eq(args.stride),
            ]
            m.d.sync += [wr_left.eq(args.count - 1), wr_more.eq(dec_multi)]
        with m.Else():
            m.d.comb += [
                wr_el.eq(wr_more), wr_el_scatter.eq(wr_scatter), wr_el_s.eq(wr_s), wr_el_a.eq(wr_a),
                wr_el_base.eq(wr_base), wr_el_seq.eq(wr_addr), wr_el_stride.eq(wr_stride),
            ]
            with m.If(wr_more):
                m.d.sync += [wr_left.eq(wr_left - 1), wr_more.eq(wr_left != 1)]
        m.d.sync += [
            wr_scatter.eq(wr_el_scatter), wr_s.eq(wr_el_s), wr_a.eq(wr_el_a), wr_base.eq(wr_el_base),
            wr_stride.eq(wr_el_stride), wr_addr.eq(wr_el_seq + wr_el_stride),
        ]

        wr_src_data, wr_src_valid = pick_stream(self.tap, wr_el_s.west, wr_el_s.index)
        wr_idx_data, wr_idx_valid = pick_stream(self.tap, wr_el_a.west, wr_el_a.index)
        wr_operands_ok = wr_src_valid & (~wr_el_scatter | wr_idx_valid)
        wr_err_empty = wr_el & ~wr_operands_ok
        wr_stage_valids = []
        q = element_stage(m, "wr", el_reg, wr_el & wr_operands_ok, wr_el_scatter, wr_el_base, wr_el_seq,
                          wr_idx_data[:16], wr_src_data, wr_stage_valids)
        wr_el_addr = Signal(ADDR, name="wr_el_addr")
        m.d.comb += wr_el_addr.eq(Mux(q["gather"], q["base"] + q["idx"], q["seq"]))
        wr_ok = Signal(name="wr_ok")
        m.d.comb += wr_ok.eq(q["el"] & in_range(wr_el_addr))
        wr_err_addr = q["el"] & ~in_range(wr_el_addr)

        # L_w - 1 stages after the address (|el| counts as one more); the last drives the write port
        wr_valid, wr_stage_addr, wr_data = wr_ok, wr_el_addr[:abits], q["dst"]
        for k in range(1, l_write + addr_reg):
            v = Signal(name=f"wr_s{k}_valid")
            a = Signal(abits, name=f"wr_s{k}_addr")
            x = Signal(vec(cfg.lanes), name=f"wr_s{k}_data")
            m.d.sync += [v.eq(wr_valid), a.eq(wr_stage_addr), x.eq(wr_data)]
            wr_valid, wr_stage_addr, wr_data = v, a, x
            wr_stage_valids.append(v)
        host_we_ok = self.host_we & below(self.host_addr, depth)
        m.d.comb += [
            wport.addr.eq(Mux(wr_valid, wr_stage_addr, self.host_addr[:abits])),
            wport.data.eq(Mux(wr_valid, wr_data, self.host_wdata)),
            wport.en.eq(wr_valid | host_we_ok),
        ]

        # ------------------------------------------------------------------------------------
        # status
        # ------------------------------------------------------------------------------------
        # (|el|: the address is checked in the cycle after the sample cycle, the pulse's cycle)
        addr_dom = m.d.comb if el_reg else m.d.sync
        addr_dom += self.err.addr.eq(rd_err_addr | wr_err_addr)
        m.d.sync += [
            self.err.empty.eq(rd_err_empty | wr_err_empty),
            self.err.busy.eq((issue_rd & rd_more) | (issue_wr & wr_more)),
        ]
        # (the write stages added for |el| and |addr| drive the port in or after the commit cycle:
        # architecturally the write is done)
        wr_busy_stages = wr_stage_valids[:len(wr_stage_valids) - el_reg - addr_reg]
        m.d.comb += self.busy.eq(issue_rd | issue_wr | rd_more | wr_more
                                 | Cat(*rd_stage_valids, *wr_busy_stages).any())
        return m
