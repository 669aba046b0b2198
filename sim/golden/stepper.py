"""The per-slice reference: the golden model's element machinery for one slice, stepped one
cycle at a time with the stream taps at its position driven from outside.  RTL unit tests of a
single slice compare against it."""

import numpy as np

from tinylpu.sim.golden.chip import Golden

__all__ = ["SliceStepper"]


class SliceStepper:
    """The golden model's element machinery for one slice, with the stream taps at its position driven
    from outside, one cycle at a time: the reference for RTL unit tests of a single slice."""

    def __init__(self, cfg, sname):
        self.g = g = Golden(cfg)
        self.sname, self.p = sname, g.pos[sname]
        g.sdata = np.zeros((2, g.S, g.P, g.lanes), np.int8)
        g.svalid = np.zeros((2, g.S, g.P), bool)
        g.effects, g.port_busy, g.active = {}, {}, {}
        g.acc_pending = {n: {} for n in g.acc}
        g._last_dispatched, g._last_issue = {}, {}
        g.activity = {n: {"issued": 0} for n in g.pos}

    def cycle(self, c, insn, tap):
        """Run cycle c; returns (stream results driven during c, busy in c).  May raise ProgramError."""
        g, p = self.g, self.p
        g.sdata[0, :, p], g.svalid[0, :, p], g.sdata[1, :, p], g.svalid[1, :, p] = tap
        if insn is not None:
            g._dispatch(self.sname, insn, 0, c)
        busy = any(a.busy_until >= c for a in g.active.values())
        for key in list(g.active):
            a = g.active[key]
            if 0 <= c - a.start < a.n:
                g._element(key[0], a, c - a.start, c)
            if c >= a.busy_until:
                del g.active[key]
        busy = busy or any(d > c for d in g.effects)
        out = []
        for e in g.effects.pop(c + 1, ()):
            if e[0] == "s":
                out.append((e[1], e[2], e[4].copy()))
            else:
                e[1]()
        for key in [k for k in g.port_busy if k[1] <= c + 1]:
            del g.port_busy[key]
        return out, busy
