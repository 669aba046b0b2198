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
        self.index = 0             # instruction index, for error messages
        self.samples = {}          # drive cycle -> cycle of the element that scheduled the drive

    def cycle(self, c, insn, tap):
        """Run cycle c; returns (stream results driven during c, busy in c).  May raise ProgramError."""
        g, p = self.g, self.p
        g.sdata[0, :, p], g.svalid[0, :, p], g.sdata[1, :, p], g.svalid[1, :, p] = tap
        if insn is not None:
            g._dispatch(self.sname, insn, 0, c)
        busy = any(a.busy_until >= c for a in g.active.values())
        for key in list(g.active):
            a = g.active[key]
            d = c - a.start
            if d % a.stride == 0 and 0 <= d // a.stride < a.n:      # element k at start + k x stride
                g._element(key[0], a, d // a.stride, c)
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

    def step(self, c, insn, tap):
        """Run cycle c with the stream registers at the slice's position set to ``tap.data``
        (2 x streams x lanes int8) and ``tap.valid`` (2 x streams).  Returns ``(occupied, drives)``:
        whether an instruction occupies the unit in c, and the results the unit drives during c as
        ``[(direction, first stream, [vectors])]`` (an int32 result: four consecutive streams).
        May raise ProgramError."""
        g, s = self.g, self.sname
        if insn is not None:
            g._dispatch(s, insn, self.index, c)
            self.index += 1
        g.sdata[:, :, self.p] = tap.data
        g.svalid[:, :, self.p] = tap.valid
        occupied = False
        for key in list(g.active):
            a = g.active[key]
            occupied |= a.start <= c <= a.busy_until
            d = c - a.start
            if d % a.stride == 0 and 0 <= d // a.stride < a.n:      # element k at start + k x stride
                before = {due: len(ents) for due, ents in g.effects.items()}
                g._element(s, a, d // a.stride, c)
                for due, ents in g.effects.items():
                    if any(e[0] == "s" for e in ents[before.get(due, 0):]):
                        self.samples[due - 1] = c
            if c >= a.busy_until:
                del g.active[key]
        drives = []
        for e in g.effects.pop(c + 1, ()):
            if e[0] == "s":
                _, d, idx, _p, v = e
                if drives and drives[-1][0] == d and drives[-1][1] + len(drives[-1][2]) == idx:
                    drives[-1][2].append(v.copy())
                else:
                    drives.append((d, idx, [v.copy()]))
            else:
                e[1]()
        for key in [k for k in g.port_busy if k[1] <= c + 1]:
            del g.port_busy[key]
        return occupied, drives
