"""The golden tray on the fast path: every chip runs as ``FastGolden`` does, exactly as the lockstep tray.

``GoldenTray.run`` steps every chip's per-cycle reference in lockstep; ``run_fast`` gives the same
cycles, MEM and unit state, link counts and activity without stepping cycles, in three parts:

1. **Plans.**  Every chip's program is planned as on one chip (``FastGolden``'s phases 1 and 2,
   cached with the program): SEND and RECV elements are scheduled like any unit's, so every
   element's cycle is known; DESKEW parks queues until the epoch boundary and the chip's quiet
   there is checked statically.
2. **The link, replayed.**  The SEND and RECV elements of all chips go through the lockstep
   tray's own link code in the lockstep order (cycle, then chip): ``GoldenTray.arrive`` for every
   SEND element (the RX buffer, the arrival rule ``tinylpu.link.arrival_cycles``, the burst
   frame rules), and each RECV element takes the head of its RX buffer if it has arrived.  The
   timing is data-independent, so this decides every link error and which vector each RECV gets:
   the j-th RECV element of a port receives the j-th vector its peer port sent, at least one cycle
   after it was sampled.
3. **One dataflow for the tray.**  The chips that SEND or RECV are walked together, in cycle order,
   into one flow (``sim/golden/flow.py``, slices named (chip, name)): a RECV element's result is the
   id of the row its peer's SEND element sampled, so data crosses the links as ids, like a MOV, and
   the flow evaluates every chip level by level at once (a level's matmuls of all chips in one
   batch).  Chips without C2C run their own flows.  Every flow runs before any state is written.

Steps 2 and 3 depend only on the programs and the configuration: their results are kept with chip
0's plan (for the same plans of the other chips), so a tray run again costs the flows' evaluation.

Whenever this cannot prove its run exact (any program error, a link error, injected link bit
errors (``link_flips``), a GATHER/SCATTER index out of its bank, a run past ``max_cycles``) it
raises ``NotExact`` before writing anything, and ``GoldenTray.run`` runs the lockstep tray from the
untouched state, which reports the error with its cycle, slice and instruction.
"""

import gc
import weakref

import numpy as np

from tinylpu.isa import Opcode
from tinylpu.sim.golden.chip import ProgramError
from tinylpu.sim.golden.fast import FastGolden, _cfg_key, _evaluate, _Fallback, _Unit
from tinylpu.sim.golden.flow import Flow

__all__ = ["NotExact", "run_fast"]


class NotExact(Exception):
    """The fast tray cannot prove its run exact: run the lockstep tray (nothing has been written)."""


def run_fast(tray, max_cycles):
    """Run ``tray`` (a ``GoldenTray`` with its programs and MEM loaded) on the fast path.  Returns
    (cycles per chip, vectors sent per (chip, port), activity per chip), or raises ``NotExact``."""
    chips = tray.chips
    tray.stats = None                       # (set below on success: the chips the tray's flow spans, its steps)
    if tray.link_flips is not None or not all(isinstance(g, FastGolden) for g in chips):
        raise NotExact
    plans = []
    for g in chips:
        try:
            plans.append(g._fast_plan(max_cycles))
        except _Fallback:
            raise NotExact from None
    # the lockstep loop counts a tray cycle after every chip has stepped it
    if max(p.last_halt for p in plans) + 1 >= max_cycles:
        raise NotExact
    flow, linked = _link(tray, plans)
    pending = []
    try:
        if flow is not None:
            state = _TrayState(chips, linked)
            pending.append((state, _evaluate(flow, state, False)))
        for a, (g, plan) in enumerate(zip(chips, plans)):
            if a not in linked:
                pending.append((g, _evaluate(plan.flow, g, False)))
    except _Fallback:
        raise NotExact from None
    for g, pend in pending:
        Flow.commit(g, pend)
    out = []
    for g, plan in zip(chips, plans):
        g.active, g.effects = {}, {}
        out.append(g._fast_finish(plan))
    tray.stats = {"linked_chips": len(linked), "flow_steps": len(flow.steps) if flow is not None else 0}
    return [r.cycles for r in out], dict(tray.sent), [r.activity for r in out]


class _TrayState:
    """The state of a tray's chips as one model, keyed by (chip, name): what a tray's flow reads
    and writes (the arrays are the chips' own, written in place)."""

    def __init__(self, chips, index):
        by = {a: chips[a] for a in index}
        g0 = chips[index[0]]
        self.cfg, self.lanes, self.L = g0.cfg, g0.lanes, g0.L
        self.mem = _TrayBanks(by)
        for attr in ("weights", "acc", "lut", "req_m", "req_sh", "req_z", "perm"):
            setattr(self, attr, {(a, n): v for a, g in by.items() for n, v in getattr(g, attr).items()})


class _TrayBanks:
    """``_TrayState.mem``: the chips' MEM banks keyed by (chip, bank)."""

    def __init__(self, by):
        self.by = by

    def rows(self, key, hi):
        return self.by[key[0]].mem.rows(key[1], hi)

    def __getitem__(self, key):
        return self.by[key[0]].mem[key[1]]


def _link(tray, plans):
    """The link replay's outcome (``_replay_link``) and the tray's flow with the chips it spans,
    from the last run of these plans on a tray of this config (kept with chip 0's plan), or
    computed.  ``NotExact`` on a link error."""
    key = _cfg_key(tray.cfg)
    memo = plans[0].tray
    if memo is not None and memo[0] == key and len(memo[1]) == len(plans) and all(
            r() is p for r, p in zip(memo[1], plans)):
        if memo[2] is None:
            raise NotExact
        tray.sent = dict(memo[2])
        for g in tray.chips:
            g.rx = {p: [] for p in range(tray.cfg.c2c_ports)}
        return memo[3]
    refs = tuple(weakref.ref(p) for p in plans)
    try:
        _replay_link(tray, plans)
    except NotExact:
        plans[0].tray = (key, refs, None, None)
        raise
    collect = gc.isenabled()
    gc.disable()                            # (as FastGolden's planning: no cyclic garbage is made here)
    try:
        built = _tray_flow(tray, plans)
    finally:
        if collect:
            gc.enable()
    plans[0].tray = (key, refs, dict(tray.sent), built)
    return built


def _tray_flow(tray, plans):
    """(the flow of every chip that SENDs or RECVs, walked together; the indices of those chips),
    or (None, []) without any."""
    cfg = tray.cfg
    linked = [a for a, p in enumerate(plans) if p.c2c]
    if not linked:
        return None, []
    units, link = [], {}
    for a in linked:
        off = len(units)
        for u in plans[a].units:
            v = _Unit(off + u.uid, (a, u.sl), u.pos, u.sub, u.op, u.f, u.idx, u.t, u.n, u.busy)
            v.lat, v.planes, v.buf, v.port, v.rpe = u.lat, u.planes, getattr(u, "buf", None), u.port, u.rpe
            v.srcs = [[(ka, kb, off + pid, pl, pka) for ka, kb, pid, pl, pka in segs] for segs in u.srcs]
            units.append(v)
            if u.op is Opcode.RECV:
                link[(a, u.port[0])] = cfg.peer(a, u.port[0])
    return Flow.build(tray.chips[linked[0]], units, link), linked


def _replay_link(tray, plans):
    """Every SEND and RECV element of the tray in the lockstep order (cycle, then chip; within a
    chip's cycle its SENDs and RECVs touch different RX buffers, as no port leads back to its own
    chip), through the lockstep tray's link code.  Raises ``NotExact`` on any link error, a RECV
    of a vector that has not arrived, or a vector never received."""
    cfg, chips = tray.cfg, tray.chips
    events = []
    for a, plan in enumerate(plans):
        if not plan.c2c:
            continue
        for port, lst in plan.c2c["send"].items():
            if cfg.peer(a, port)[0] == a:
                raise NotExact
            events += [(c, a, 0, port, t0, n) for c, t0, n in lst]
        for port, lst in plan.c2c["recv"].items():
            events += [(c, a, 1, port, 0, 0) for c in lst]
    events.sort()
    tray.sent = {}
    for g in chips:
        g.rx = {p: [] for p in range(cfg.c2c_ports)}
    zero = np.zeros(cfg.lanes, np.int8)          # (the timing does not depend on the data)
    for c, a, kind, port, t0, n in events:
        if kind == 0:
            try:
                tray.arrive(a, port, c, zero, t0, n)
            except ProgramError:
                raise NotExact from None
        else:
            q = chips[a].rx[port]
            if not q or q[0][0] > c:
                raise NotExact
            q.pop(0)
    if any(q for g in chips for q in g.rx.values()):
        raise NotExact
