"""Tap registers (``fabric.tap_registers`` in the chip config): a unit that reads a registered copy
of the stream registers at its position.

``Tapped(cls, cfg, s)`` has the signature of the unit ``cls(cfg, s)`` it wraps and behaves like it
at the port, cycle for cycle, except that its ``err`` and ``busy`` are one cycle later
(``FLAG_DELAY``).  Inside:

* ``tap_<e|w><k>`` / ``..._valid``: every stream register of the position, registered, so the long
  wires of the stream fabric end at a flip-flop beside the unit and the unit's operand selects read
  only these local copies;
* ``issue`` / ``insn`` (and ``pre_insn`` for a unit with predecoded issue) pass through a register
  too, so the unit sees an issue of cycle c in c+1, together with the streams of cycle c;
* the unit itself (``unit``) is built with every result latency (``TAP_LATENCY_KEYS``) one shorter,
  so a result of an instruction issued in c still lands in c + latency.  The latencies between two
  instructions of one unit (``mem_write``, ``mxm_install``, ``mxm_mm``) are unchanged: both move by
  the same cycle.

So the golden model's semantics hold with the config's latencies: an instruction issued in cycle c
reads the streams of c, its result is visible in c + latency.  ``err`` is the unit's, a pulse one
cycle after the cycle it belongs to; ``busy`` in c + 1 is "work left in cycle c or later": the
unit's busy in c + 1 (it runs one cycle behind) or a result it drove in c (the unit, built one
cycle shorter, no longer counts that as work).  The chip reads both one cycle later (hdl/chip.py).
The config loader refuses a result latency below its minimum + 1 with taps.
"""

import dataclasses
from types import SimpleNamespace

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Flow

from tinylpu.config import TAP_LATENCY_KEYS

__all__ = ["Tapped", "inner_config"]


def inner_config(cfg):
    """The config the wrapped unit is built with: every result latency one shorter."""
    lat = dict(cfg.latency)
    for k in TAP_LATENCY_KEYS:
        lat[k] -= 1
    return dataclasses.replace(cfg, latency=lat)


class Tapped(wiring.Component):
    """The unit ``cls(inner_config(cfg), s, **kw)`` behind tap, issue and flag registers."""

    FLAG_DELAY = 1      # err and busy are one cycle late (the chip reads them so)

    def __init__(self, cls, cfg, s, **kw):
        self.cfg = cfg
        self.unit = cls(inner_config(cfg), s, **kw)
        self.WIDE_OUT = getattr(cls, "WIDE_OUT", True)
        self.early = False
        super().__init__({name: mem for name, mem in self.unit.signature.members.items()})

    def elaborate(self, platform):
        m = Module()
        u = self.unit
        m.submodules.unit = u
        if hasattr(self, "pre_insn"):
            u.early = self.early
        if hasattr(u, "ahead"):
            # the unit's next-cycle issue, for the select registers it loads a cycle ahead
            u.ahead = SimpleNamespace(issue=self.issue, insn=self.insn)
        S = self.cfg.streams
        for d, nm in ((0, "e"), (1, "w")):
            data_in = self.tap.west if d else self.tap.east
            valid_in = self.tap.west_valid if d else self.tap.east_valid
            data_u = u.tap.west if d else u.tap.east
            valid_u = u.tap.west_valid if d else u.tap.east_valid
            for k in range(S):
                r = Signal.like(data_in[k], name=f"tap_{nm}{k}", reset_less=True)
                v = Signal(name=f"tap_{nm}{k}_valid")
                m.d.sync += [r.eq(data_in[k]), v.eq(valid_in[k])]
                m.d.comb += [data_u[k].eq(r), valid_u[k].eq(v)]
        issue = Signal(name="tap_issue")
        insn = Signal.like(self.insn, name="tap_insn", reset_less=True)     # (data: used with the issue)
        m.d.sync += [issue.eq(self.issue), insn.eq(self.insn)]
        m.d.comb += [u.issue.eq(issue), u.insn.eq(insn)]
        if self.early:
            pre = Signal.like(self.pre_insn, name="tap_pre_insn", reset_less=True)
            m.d.sync += pre.eq(self.pre_insn)
            m.d.comb += u.pre_insn.eq(pre)
        wiring.connect(m, u.out, wiring.flipped(self.out))
        drove = Signal(name="tap_drove")            # a result was driven in the previous cycle
        m.d.sync += drove.eq(u.out.valid)
        # err: the unit's pulses come a cycle after the cycle they belong to, as the unit runs a
        # cycle behind; except ``port`` (two results driven at once), which the unit flags in the
        # drive cycle itself and which is registered here to be one cycle late as well
        port = Signal(name="tap_err_port")
        m.d.sync += port.eq(u.err.port)
        m.d.comb += [self.busy.eq(u.busy | drove), self.err.eq(u.err), self.err.port.eq(port)]
        # the unit's other ports (host access, C2C) pass straight through
        for name, mem in self.signature.members.items():
            if name in ("issue", "insn", "pre_insn", "tap", "out", "busy", "err"):
                continue
            assert mem.is_port, name
            if mem.flow == Flow.In:
                m.d.comb += getattr(u, name).eq(getattr(self, name))
            else:
                m.d.comb += getattr(self, name).eq(getattr(u, name))
        return m
