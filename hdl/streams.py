"""The stream fabric: every position's eastward and westward stream registers.

Each clock the eastward register ``eK`` at position p takes the value of ``eK`` at p-1 (an empty
slot enters at position 0) and the westward register ``wK`` at p takes ``wK`` at p+1 (an empty slot
enters at the east end), unless the slice at p drives its ``out`` port into that register: driving
``out.valid`` during cycle c loads register ``out.index`` (and the three after it when
``out.wide``) in direction ``out.west`` at the end of c (docs/rtl.md).  Values leaving the ends of
the line are dropped.  ``clear`` empties every register (the chip asserts it in the START cycle).

The fabric reads that decision only in its pre-decoded form, ``out.land``/``out.plane``, which
every unit registers beside its result (``common.port_landing``): per copy g of ``LAND_LANES``
lanes, one bit per (direction, stream) and the plane rotation.  So each register bit's input is a
2:1 mux (4:1 plane select in front at positions that can land an int32 group) whose select comes
straight from a register with a fanout of a few dozen, and nothing is decoded between the unit and
the stream register: on an FPGA this was the longest route of the chip (docs/fpga.md).

``wide`` (optional, one bool per position) says which positions' units can drive an int32 group
(``out.wide``); a position whose unit never does (MEM, SXM) has no plane select.  The plane that
lands on stream s is selected once per position and shared by both directions.

On a chip with 4 streams per direction (``common.aligned``) every int32 group starts at stream 0,
so the units drive a one-vector result on all four planes of ``data`` (the VXM, hdl/vxm.py) and
stream s always takes plane s: there is no plane select at all, and ``out.plane`` is unused.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tinylpu.hdl.common import LAND_LANES, OutPortSignature, StreamTap, aligned, land_copies, vec
from tinylpu.isa import INT32_PLANES

__all__ = ["StreamFabric"]


class StreamFabric(wiring.Component):
    """``outs[p]``: the result port of the slice at position p; ``taps[p]``: its registers."""

    def __init__(self, cfg, wide=None):
        self.cfg = cfg
        self.lanes, self.streams, self.positions = cfg.lanes, cfg.streams, cfg.positions
        self.wide = [True] * cfg.positions if wide is None else [bool(w) for w in wide]
        self.aligned = aligned(cfg)
        assert len(self.wide) == cfg.positions
        super().__init__({
            "outs": In(OutPortSignature(cfg.lanes, cfg.streams)).array(cfg.positions),
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

        G = land_copies(lanes)
        # the lanes of copy g of the landing selects: bits [lo, hi) of a register
        spans = [(8 * LAND_LANES * g, min(8 * LAND_LANES * (g + 1), 8 * lanes)) for g in range(G)]
        for p in range(P):
            out = self.outs[p]
            # value[s][g]: what lands on stream s at the lanes of copy g (shared by both directions)
            value = [[None] * G for _ in range(S)]
            for g, (lo, hi) in enumerate(spans):
                for s in range(S):
                    if not self.wide[p]:
                        value[s][g] = out.data[0][lo:hi]
                        continue
                    if self.aligned:
                        # every int32 group starts at stream 0, and a unit drives a one-vector
                        # result on every plane: stream s takes plane s, no plane select
                        value[s][g] = out.data[s][lo:hi]
                        continue
                    v = Signal(hi - lo, name=f"land{s}_p{p}_g{g}")
                    # stream s takes plane (s - index) % 4; planes above s cannot land on it
                    with m.Switch(out.plane[g]):
                        for k in range(INT32_PLANES):
                            b = (s - k) % INT32_PLANES
                            with m.Case(k):
                                m.d.comb += v.eq(out.data[b if b <= s else 0][lo:hi])
                    value[s][g] = v
            for d in (0, 1):
                src_p = p - 1 if d == 0 else p + 1
                for s in range(S):
                    dat, val = reg[d][s][p]
                    src = reg[d][s][src_p] if 0 <= src_p < P else None
                    bit = d * S + s
                    with m.If(self.clear):
                        m.d.sync += val.eq(0)
                    with m.Elif(out.land[0][bit]):
                        m.d.sync += val.eq(1)
                    with m.Else():
                        m.d.sync += val.eq(src[1] if src else 0)
                    for g, (lo, hi) in enumerate(spans):
                        with m.If(out.land[g][bit]):
                            m.d.sync += dat[lo:hi].eq(value[s][g])
                        if src:
                            with m.Else():
                                m.d.sync += dat[lo:hi].eq(src[0][lo:hi])
        return m
