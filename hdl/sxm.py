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

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.utils import exact_log2

from tinylpu.config import MIN_LATENCY
from tinylpu.hdl.common import (
    drive_landing,
    pick_stream,
    port_landing,
    predecode,
    predecode_held,
    select,
    unit_signature,
    vec,
)
from tinylpu.isa import COUNT_MAX, Instr, Opcode

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
        super().__init__(unit_signature(cfg))

    def elaborate(self, platform):
        m = Module()
        lanes = self.lanes
        lb = exact_log2(lanes)
        O = Opcode

        # --- sequencing: cycles of the running instruction ------------------------------------
        span = max(COUNT_MAX, 2 * lanes)
        cur = Signal(Instr, name="cur_insn")
        left = Signal(range(span + 1), name="cycles_left")     # busy cycles after this one
        knext = Signal(range(span + 1), name="rel_next")
        accept = Signal(name="accept")
        ins = Signal(Instr, name="el_insn")
        active = Signal(name="active")
        rel = Signal(range(span + 1), name="rel")                # cycle index since issue
        new = self.insn
        # decoded from the instruction word alone (``common.predecode``: in the cycle before the
        # issue on chips with registered issue)
        def span_of(i):
            return Mux(i.op == O.TRANS, 2 * lanes, i.args.sxm.count)
        new_span = predecode(m, self, "dec_span", span_of)
        new_some = predecode(m, self, "dec_some", lambda i: span_of(i) != 0)
        new_few = predecode(m, self, "dec_few", lambda i: span_of(i) <= 1)
        idle = Signal(init=1, name="idle")            # left == 0, as a register
        m.d.comb += [
            accept.eq(self.issue & idle),
            self.err.busy.eq(self.issue & ~idle),
            ins.eq(Mux(accept, new.as_value(), cur.as_value())),
            active.eq((accept & new_some) | ~idle),
            rel.eq(Mux(accept, 0, knext)),
        ]
        with m.If(accept):
            m.d.sync += [cur.eq(new), left.eq(Mux(new_some, new_span - 1, 0)), knext.eq(1),
                         idle.eq(new_few)]
        with m.Elif(~idle):
            m.d.sync += [left.eq(left - 1), knext.eq(knext + 1), idle.eq(left == 1)]

        v = ins.args.sxm
        op = ins.op
        dec = {}
        for o in (O.SHIFT, O.ROT, O.PERM, O.DIST, O.TRANS, O.LDPERM):
            dec[o] = predecode_held(m, self, f"dec_{o.name.lower()}", lambda i, o=o: i.op == o, accept)
        is_trans = dec[O.TRANS]

        # --- operand a -------------------------------------------------------------------------
        x = Signal(vec(lanes), name="opa")
        x_ok = Signal(name="opa_ok")
        xd, xv = pick_stream(self.tap, v.a.west, v.a.index)
        m.d.comb += [x.eq(xd), x_ok.eq(xv)]
        sample = Signal(name="sample")          # an element (or TRANS input row) samples a now
        trans_in = Signal(name="trans_in")
        trans_out = Signal(name="trans_row_out")
        m.d.comb += [
            trans_in.eq(active & is_trans & (rel < lanes)),
            trans_out.eq(active & is_trans & (rel >= lanes - 1) & (rel <= 2 * lanes - 2)),
            sample.eq((active & ~is_trans) | trans_in),
            self.err.empty.eq(sample & ~x_ok),
        ]

        # --- PERM lane map -----------------------------------------------------------------------
        perm = [Signal(range(lanes), name=f"perm{j}", init=j) for j in range(lanes)]
        with m.If(sample & dec[O.LDPERM]):
            for j in range(lanes):
                m.d.sync += perm[j].eq(x[8 * j:8 * j + 8])      # mod lanes: the low bits

        # --- TRANS buffer ------------------------------------------------------------------------
        buf = [Signal(vec(lanes), name=f"trans_buf{i}") for i in range(lanes)]
        rows = [Mux(trans_in, buf[i + 1], buf[i]) for i in range(lanes - 1)]
        rows.append(Mux(trans_in, x, buf[lanes - 1]))
        trow = Signal(vec(lanes), name="trans_row")
        m.d.comb += trow.eq(Cat(*(r[0:8] for r in rows)))
        with m.If(active & is_trans):
            with m.If(rel < lanes - 1):
                m.d.sync += [buf[i].eq(rows[i]) for i in range(lanes)]
            with m.Else():
                m.d.sync += [buf[i].eq(rows[i][8:]) for i in range(lanes)]

        # --- crossbar: output lane j takes input lane src[j], or zero ------------------------------
        xin = Signal(vec(lanes), name="xbar_in")
        m.d.comb += xin.eq(Mux(is_trans, trow, x))
        k = v.imm                                                  # signed 8
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
        rvalid = (sample & (dec[O.SHIFT] | dec[O.ROT] | dec[O.PERM] | dec[O.DIST])) | trans_out
        stage = {"valid": rvalid, "index": v.d.index, "west": v.d.west, "data": xin,
                 "src": Cat(*srcs), "zero": Cat(*zeros)}
        valids = []

        def register(tag, vals):
            out = {}
            for key, val in vals.items():
                sig = Signal(len(val) if key != "valid" else 1, name=f"res_{tag}_{key}")
                m.d.sync += sig.eq(val)
                out[key] = sig
            valids.append(out["valid"])
            return out

        # |in| (sxm >= 3): the selected row and the lane map are registered before the crossbar
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

        # --- result pipeline: the register after the crossbar, then delay stages ---------------------
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
        return m
