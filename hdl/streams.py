"""The stream fabric: every position's eastward and westward stream registers.

Each clock the eastward register ``eK`` at position p takes the value of ``eK`` at p-1 (an empty
slot enters at position 0) and the westward register ``wK`` at p takes ``wK`` at p+1 (an empty slot
enters at the east end), unless the slice at p drives its ``out`` port into that register: driving
``out.valid`` during cycle c loads register ``out.index`` (and the three after it when
``out.wide``) in direction ``out.west`` at the end of c (docs/rtl.md).  Values leaving the ends of
the line are dropped.  ``clear`` empties every register (the chip asserts it in the START cycle).

``wide`` (optional, one bool per position) says which positions' units can drive an int32 group
(``out.wide``); a position whose unit never does (MEM, SXM) gets a plain 2:1 mux per register bit
instead of the plane select, which is most of the fabric's LUTs on an FPGA.  The plane that lands
on stream s (plane s - index) is selected once per position and shared by both directions.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..firmware.isa import INT32_PLANES
from .common import OutPortSignature, StreamTap, vec

__all__ = ["StreamFabric"]


class StreamFabric(wiring.Component):
    """``outs[p]``: the result port of the slice at position p; ``taps[p]``: its registers."""

    def __init__(self, cfg, wide=None):
        self.cfg = cfg
        self.lanes, self.streams, self.positions = cfg.lanes, cfg.streams, cfg.positions
        self.wide = [True] * cfg.positions if wide is None else [bool(w) for w in wide]
        assert len(self.wide) == cfg.positions
        super().__init__({
            "outs": In(OutPortSignature(cfg.lanes)).array(cfg.positions),
            "taps": Out(StreamTap(cfg.lanes, cfg.streams)).array(cfg.positions),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        S, P, lanes = self.streams, self.positions, self.lanes
        names = {0: "e", 1: "w"}
        # reg[d][s][p]: (data, valid)
        reg = [[[(Signal(vec(lanes), name=f"{names[d]}{s}_p{p}", reset_less=True),
                  Signal(name=f"{names[d]}{s}_p{p}_valid"))
                 for p in range(P)] for s in range(S)] for d in (0, 1)]

        for p in range(P):
            tap = self.taps[p]
            for s in range(S):
                m.d.comb += [
                    tap.east[s].eq(reg[0][s][p][0]), tap.east_valid[s].eq(reg[0][s][p][1]),
                    tap.west[s].eq(reg[1][s][p][0]), tap.west_valid[s].eq(reg[1][s][p][1]),
                ]

        for p in range(P):
            out = self.outs[p]
            # per stream s: does the port land on it this cycle, and with which plane
            land, value = [], []
            for s in range(S):
                if self.wide[p]:
                    planes = range(min(INT32_PLANES, s + 1))
                    hit = Signal(name=f"land{s}_p{p}")
                    dat = Signal(vec(lanes), name=f"land{s}_p{p}_data")
                    # a wide (int32) group starting below s covers s; no group starts below stream 0
                    # (equality tests only: an adder or comparator here becomes a carry chain in
                    # front of every register of the position on an FPGA)
                    covers = (out.wide & Cat(*(out.index == k for k in range(max(0, s - 3), s))).any()
                              if s > 0 else 0)
                    m.d.comb += hit.eq(out.valid & ((out.index == s) | covers))
                    with m.Switch(out.index):
                        for b in planes:
                            with m.Case(s - b):
                                m.d.comb += dat.eq(out.data[b])
                    land.append(hit)
                    value.append(dat)
                else:
                    land.append(out.valid & (out.index == s))
                    value.append(out.data[0])
            for d in (0, 1):
                src_p = p - 1 if d == 0 else p + 1
                for s in range(S):
                    dat, val = reg[d][s][p]
                    with m.If(self.clear):
                        m.d.sync += val.eq(0)
                    with m.Elif(land[s] & (out.west == d)):
                        m.d.sync += [dat.eq(value[s]), val.eq(1)]
                    with m.Else():
                        if 0 <= src_p < P:
                            sdat, sval = reg[d][s][src_p]
                            m.d.sync += [dat.eq(sdat), val.eq(sval)]
                        else:
                            m.d.sync += val.eq(0)
        return m
