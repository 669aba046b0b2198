"""SXM slice: lane shifts, rotates, permutes, broadcast, transpose and the PERM lane map.

One sub-unit.  SHIFT/ROT/PERM/DIST: element k of an instruction issued at t samples stream ``a``
during t+k, goes through one byte crossbar (every output lane picks any input lane, or zero) and
is driven on ``out`` during t+k+L-1, L = ``sxm``: the crossbar output is registered (the minimum
L = 2); with L >= 3 the crossbar's input row and lane map are registered too (|in|), and the rest
of L pads the result with delay registers.

TRANS (count field 0) takes ``lanes`` rows x_0..x_{lanes-1} on cycles t..t+lanes-1 into a register
buffer that shifts rows in; from the last input cycle on, output row j = (x_0[j], ..., x_{lanes-1}[j])
is lane 0 of every buffered row (plus the row being sampled, for j = 0), and the buffer shifts one
lane per cycle, so row j leaves on cycle t+lanes-1+j through the same crossbar and result pipeline.
The sub-unit is busy for 2 x lanes cycles.

LDPERM writes the lane map at the end of its sample cycle (PERM elements from the next cycle on use
it).  ``err.busy``: an issue while the sub-unit is occupied (the new instruction is ignored);
``err.empty``: an element (or TRANS input row) samples an empty stream slot.  All SXM results have
the same latency and TRANS's last row lands before anything issued after it, so the port never
sees two results at once.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.utils import exact_log2

from tinylpu.config import MIN_LATENCY
from tinylpu.hdl.common import (
    ElementField,
    ElementSequencer,
    drive_landing,
    pick_stream,
    port_landing,
    predecode,
    predecode_held,
    select,
    unit_signature,
    vec,
)
from tinylpu.isa import COUNT_MAX, Opcode

__all__ = ["SxmSlice"]


class SxmSlice(wiring.Component):
    """The SXM slice unit; ``SxmSlice(cfg, slice)``."""

    WIDE_OUT = False        # ``out.wide`` is always 0 (the stream fabric relies on it)

    def __init__(self, cfg, slice=None):
        self.cfg = cfg
        self.slice = slice
        self.lanes = cfg.lanes
        self.latency = cfg.latency["sxm"]
        if self.latency < MIN_LATENCY["sxm"]:
            self._MustUse__silence = True           # never elaborated: no "unused" warning
            raise ValueError(f"latency sxm = {self.latency} is below the minimum of {MIN_LATENCY['sxm']}")
        self.ahead = None       # set by hdl/taps.py's ``Tapped`` (``ElementSequencer`` ahead)
        super().__init__(unit_signature(cfg))

    def elaborate(self, platform):
        m = Module()
        seq = self._sequencer(m)
        dec = self._decode(m, seq)
        v = seq.fields["insn"].args.sxm
        op = self._sample(m, seq, dec, v)
        perm = self._perm_map(m, op, dec)
        xin = Signal(vec(self.lanes), name="xbar_in")
        m.d.comb += xin.eq(Mux(dec[Opcode.TRANS], self._trans_buffer(m, op), op.x))
        srcs, zeros = self._crossbar_selects(m, seq.fields["insn"].op, v.imm, perm)
        rvalid = (op.sample & (dec[Opcode.SHIFT] | dec[Opcode.ROT] | dec[Opcode.PERM] | dec[Opcode.DIST])) | op.trans_out
        self._result_pipeline(m, {"valid": rvalid, "index": v.d.index, "west": v.d.west, "data": xin,
                                  "src": Cat(*srcs), "zero": Cat(*zeros)}, seq.el)
        return m

    def _sequencer(self, m):
        """Sequencing of the running instruction's cycles (``common.ElementSequencer``): ``rel`` is
        the cycle index since the issue, ``el_insn`` the instruction (``cur_insn`` from the cycle
        after the issue); TRANS spans 2 x lanes cycles.  An issue while it runs is ignored."""
        lanes = self.lanes

        # decoded from the instruction word alone (``common.predecode``: in the cycle before the
        # issue on chips with registered issue)
        def span_of(i):
            return Mux(i.op == Opcode.TRANS, 2 * lanes, i.args.sxm.count)
        new_span = predecode(m, self, "dec_span", span_of)
        new_some = predecode(m, self, "dec_some", lambda i: span_of(i) != 0)
        new_few = predecode(m, self, "dec_few", lambda i: span_of(i) <= 1)
        kw = {}
        if self.ahead is not None:
            # behind tap registers: active, rel, el_insn and the op flags are registers loaded a
            # cycle ahead (no mux on the issue before the operand select), el_insn also once per
            # lane (``el_insn_copy<j>``) for that lane's operand select (the routed critical path
            # of seed 2 at 86f96d4, 72.09 MHz, ran from the one el_insn register through a lane's
            # select into the TRANS buffer)
            a = self.ahead
            kw = {"ahead": SimpleNamespace(issue=a.issue, insn=a.insn, fields={"insn": a.insn},
                                           some=span_of(a.insn) != 0, multi=span_of(a.insn) >= 2),
                  "copies": lanes}
        seq = ElementSequencer(
            m, "el", self.issue, new_span, replace=False, some=new_some, few=new_few, index=True,
            span=max(COUNT_MAX, 2 * lanes),
            fields={"insn": ElementField(self.insn, reg="cur_insn", el="el_insn", lanes=(("args", "sxm", "a"),))},
            names={"start": "accept", "el": "active", "left": "cycles_left", "idle": "idle", "k": "rel",
                   "knext": "rel_next"}, **kw)
        m.d.comb += self.err.busy.eq(seq.err_busy)
        return seq

    def _decode(self, m, seq):
        """Each op: predecoded for a new instruction, held while it runs (``predecode_held``)."""
        return {o: predecode_held(m, self, f"dec_{o.name.lower()}", lambda i, o=o: i.op == o, seq.start, seq)
                for o in (Opcode.SHIFT, Opcode.ROT, Opcode.PERM, Opcode.DIST, Opcode.TRANS, Opcode.LDPERM)}

    def _sample(self, m, seq, dec, v):
        """Operand a and when it is sampled: by an element, or as a TRANS input row (cycles
        0..lanes-1); TRANS output rows leave in cycles lanes-1..2 x lanes-2.  Also ``err.empty``."""
        lanes, active, rel, is_trans = self.lanes, seq.el, seq.k, dec[Opcode.TRANS]
        x = Signal(vec(lanes), name="opa")
        x_ok = Signal(name="opa_ok")
        xd, xv = pick_stream(self.tap, v.a.west, v.a.index)
        if seq.ahead is not None:
            xd = Cat(*(pick_stream(self.tap, c["insn"].args.sxm.a.west, c["insn"].args.sxm.a.index, lane=j)[0]
                       for j, c in enumerate(seq.field_copies)))
        m.d.comb += [x.eq(xd), x_ok.eq(xv)]
        sample = Signal(name="sample")          # an element (or TRANS input row) samples a now
        trans_in = Signal(name="trans_in")
        trans_out = Signal(name="trans_row_out")
        # rel's range tests; behind tap registers registers of their own, loaded from next cycle's
        # rel (``rel_next``), so no compare chain sits between rel and the TRANS buffer's or the
        # lane map's enables (the routed critical path of seed 1 at ee12e9f, 62.78 MHz, ran rel
        # through rel < lanes to LDPERM's enable of perm7; seed 2 at 332cb7a, 75.37 MHz, ran it
        # into the TRANS buffer)
        tests = {"lt_n": lambda r: r < lanes, "lt_n1": lambda r: r < lanes - 1,
                 "out": lambda r: (r >= lanes - 1) & (r <= 2 * lanes - 2)}
        if seq.ahead is not None:
            rt = {}
            for key, fn in tests.items():
                rt[key] = Signal(name=f"rel_{key}", init=int(bool(fn(0))))     # rel is 0 after reset
                m.d.sync += rt[key].eq(fn(seq.k_next))
        else:
            rt = {key: fn(rel) for key, fn in tests.items()}
        m.d.comb += [
            trans_in.eq(active & is_trans & rt["lt_n"]),
            trans_out.eq(active & is_trans & rt["out"]),
            sample.eq((active & ~is_trans) | trans_in),
            self.err.empty.eq(sample & ~x_ok),
        ]
        lanes_ctl = [SimpleNamespace(trans_in=trans_in, trans_busy=active & is_trans, rel_lt_n1=rt["lt_n1"])] * lanes
        if seq.ahead is not None:
            # the TRANS buffer's controls once per row (``trans_in_copy<i>``, ``trans_busy_copy<i>``,
            # ``trans_lt_n1_copy<i>``, kept apart by scripts/synth.py ``KEEP_COPIES``), registers
            # loaded from next cycle's element, op and rel: no gate between the one ``active``
            # register and 512 buffer flip-flops (the routed critical path of seed 3 at dabd5b1,
            # 69.55 MHz, ran ``active`` through trans_in into ``trans_buf7``)
            trans_next = Mux(seq.start_next, seq.ahead.insn.op == Opcode.TRANS, is_trans)
            busy_next = seq.el_next & trans_next
            lanes_ctl = []
            for i in range(lanes):
                ctl = SimpleNamespace(trans_in=Signal(name=f"trans_in_copy{i}"),
                                      trans_busy=Signal(name=f"trans_busy_copy{i}"),
                                      rel_lt_n1=Signal(name=f"trans_lt_n1_copy{i}", init=int(0 < lanes - 1)))
                m.d.sync += [ctl.trans_in.eq(busy_next & tests["lt_n"](seq.k_next)),
                             ctl.trans_busy.eq(busy_next), ctl.rel_lt_n1.eq(tests["lt_n1"](seq.k_next))]
                lanes_ctl.append(ctl)
        return SimpleNamespace(x=x, sample=sample, trans_in=trans_in, trans_out=trans_out, rows=lanes_ctl,
                               rel=rel, active=active)

    def _perm_map(self, m, op, dec):
        """The PERM lane map, written by LDPERM at the end of its sample cycle."""
        lanes = self.lanes
        perm = [Signal(range(lanes), name=f"perm{j}", init=j) for j in range(lanes)]
        # (LDPERM is not TRANS: its elements sample whenever they run, with no TRANS row test)
        with m.If(op.active & dec[Opcode.LDPERM]):
            for j in range(lanes):
                m.d.sync += perm[j].eq(op.x[8 * j:8 * j + 8])      # mod lanes: the low bits
        return perm

    def _trans_buffer(self, m, op):
        """TRANS: the row buffer (rows shift in, then lanes shift out); returns this cycle's
        output row ``trans_row`` (lane 0 of every buffered row)."""
        lanes = self.lanes
        buf = [Signal(vec(lanes), name=f"trans_buf{i}") for i in range(lanes)]
        rows = [Mux(op.rows[i].trans_in, buf[i + 1], buf[i]) for i in range(lanes - 1)]
        rows.append(Mux(op.rows[-1].trans_in, op.x, buf[lanes - 1]))
        trow = Signal(vec(lanes), name="trans_row")
        m.d.comb += trow.eq(Cat(*(r[0:8] for r in rows)))
        for i, ctl in enumerate(op.rows):
            with m.If(ctl.trans_busy):
                m.d.sync += buf[i].eq(Mux(ctl.rel_lt_n1, rows[i], rows[i][8:]))
        return trow

    def _crossbar_selects(self, m, op, k, perm):
        """Per output lane j: the input lane it takes (``xbar_src<j>``) and whether it is zero
        (``xbar_zero<j>``), from the opcode, the amount / DIST lane `k` and the PERM map."""
        lanes = self.lanes
        lb = exact_log2(lanes)
        O = Opcode
        dist_src = (k + Const(0, signed(lb + 1)))[0:lb]            # python-style negative lanes too
        srcs, zeros = [], []
        for j in range(lanes):
            d = Signal(signed(max(lb, 8) + 2), name=f"shift_src{j}")
            src = Signal(lb, name=f"xbar_src{j}")
            zero = Signal(name=f"xbar_zero{j}")
            m.d.comb += d.eq(j - k)
            with m.Switch(op):
                with m.Case(O.SHIFT):
                    m.d.comb += [src.eq(d[0:lb]), zero.eq((d < 0) | (d >= lanes))]
                with m.Case(O.ROT):
                    m.d.comb += src.eq(d[0:lb])
                with m.Case(O.PERM):
                    m.d.comb += src.eq(perm[j])
                with m.Case(O.DIST):
                    m.d.comb += src.eq(dist_src)
                with m.Default():
                    m.d.comb += src.eq(j)
            srcs.append(src)
            zeros.append(zero)
        return srcs, zeros

    def _result_pipeline(self, m, stage, active):
        """|in| (sxm >= 3: the selected row and the lane map registered before the crossbar), the
        crossbar (output lane j takes input lane src[j], or zero), the register after it, then
        delay stages; the last drives ``out``.  Also ``busy``."""
        lanes = self.lanes
        lb = exact_log2(lanes)
        valids = []

        def register(tag, vals):
            out = {}
            for key, val in vals.items():
                sig = Signal(len(val) if key != "valid" else 1, name=f"res_{tag}_{key}")
                m.d.sync += sig.eq(val)
                out[key] = sig
            valids.append(out["valid"])
            return out

        cut = self.latency >= 3
        if cut:
            stage = register("in", stage)
        res = []
        for j in range(lanes):
            lane = Signal(8, name=f"xbar_out{j}")
            src = stage["src"][lb * j:lb * (j + 1)]
            byte = select([stage["data"][8 * i:8 * i + 8] for i in range(lanes)], src)
            m.d.comb += lane.eq(Mux(stage["zero"][j], 0, byte))
            res.append(lane)
        stage = {"valid": stage["valid"], "index": stage["index"], "west": stage["west"], "data": Cat(*res)}

        for n in range(self.latency - 1 - cut):
            last_in = stage                 # the inputs of the last result register
            stage = register("r" if n == 0 else f"d{n}", stage)
        drive_landing(m, self.out, *port_landing(m, "res", last_in["valid"], last_in["index"], last_in["west"], 0,
                                                 self.cfg, planes=False))
        m.d.comb += [
            self.out.valid.eq(stage["valid"]),
            self.out.index.eq(stage["index"]),
            self.out.west.eq(stage["west"]),
            self.out.wide.eq(0),
            self.out.data[0].eq(stage["data"]),
            self.busy.eq(active | Cat(*valids).any()),
        ]
