"""A fast golden model: the same results as ``Golden``, bit- and cycle-exact, without stepping cycles.

``FastGolden`` has the public API of ``Golden`` (it is a subclass: ``write_mem``, ``read_mem``,
``load_program``, ``run``, the unit state dicts, ``tx_hook``/``rx``, and the per-cycle
``start``/``step``/``result`` that a tray drives) and replaces ``run`` by a run in three phases:

1. **Issue schedule.**  Issue times are static given the queues, so the queues are stepped from
   event to event (NOP, REPEAT, SYNC/NOTIFY), not cycle by cycle; only SYNC, NOTIFY, DESKEW and
   HALT interact with other queues, so each queue runs ahead on its own up to its next one.  This
   gives every unit instruction's issue cycle, the activity counters, the halt cycles and the cycle
   count.  REPEAT repetitions that continue each other (each starts where the last one's elements
   ended, its addresses where they ended) are one *unit* of all their elements, dispatched at once.
2. **Static checks and the stream graph.**  Every result lands at a known (position, cycle,
   stream), so an element reading stream s at position p in cycle c sees the last landing upstream
   on the diagonal (c - p for eastward streams, c + p westward).  Landings are intervals (one
   instruction's results land on consecutive cycles), so each stream operand of each instruction
   resolves into a few *segments*: element range -> (producer instruction, byte plane, first
   producer element).  Busy sub-units, port conflicts, empty stream slots, static addresses,
   accumulator hazards and work in flight at the end are all decided here.
3. **The dataflow, level by level** (``sim/golden/flow.py``).  Phases 1 and 2 decide, for every
   element, which producer row, MEM write, weight install, accumulator write and register load it
   sees, so the program becomes a graph of computing nodes over row ids, built once; a run then
   evaluates it with one numpy operation per level and kind of node (MEM moves cost nothing,
   accumulation chains are single matmuls), and writes the unit state back at the end.

Phases 1 and 2 and the dataflow depend only on the program and the configuration, so they are
kept (with the fact that the program passed ``check_program``) in a plan cache, keyed by the
program object and checked against its instructions: running a program again, with other data,
costs only phase 3's evaluation (``load_program`` skips the static check too).  The cache holds the
last 64 programs, each only by a weak reference; a program whose queues changed is planned anew.
Evaluation runs with one BLAS thread (the products are small; OpenBLAS threads only contend).

A program's *first* run (no plan cached) is walked instead when it is small (``sim/golden/walk.py``:
one pass that issues, runs and checks the program without building the plan; most of a random test
program's cost was building the plan it then runs once); its second run builds the plan.  The
walk reports errors the same way (nothing written, ``Golden.run`` redoes the run).

What a first run reuses from earlier programs is per instruction word only (an ``Insn`` object:
``Insn.make`` makes one per word), never per program: the result of its own static tests
(``firmware.check.program_ok``; the tests of its place, slice kind, REPEAT and queue length, are made every time)
and the walk's function of a VXM / SXM op without unit registers (``walk._vx_insn``).

Program errors are detected (any of: queue past its end, busy sub-unit, port conflict, empty
stream slot, address out of range (also GATHER/SCATTER indices), accumulator hazard, deadlock,
work in flight at the end, ``max_cycles``), and then the run is redone by ``Golden.run`` from the
untouched state: phase 3 writes the unit state back only at the end of a clean run, so the error
is reported by the reference itself, with its cycle, slice and instruction.

C2C: DESKEW is scheduled (a queue parks until the next epoch boundary; phase 1 checks that every
live queue is parked there, phase 2 that nothing started before it is still busy or in flight).
SEND and RECV elements are scheduled as one unit per element (``vector_interval`` cycles apart).
A chip alone cannot SEND or RECV, so ``run`` redoes such programs on ``Golden.run`` (which
reports the error); their plans keep the scheduled units (phases 1 and 2 done) for a tray, which
builds one flow over all its chips (``sim/golden/fasttray.py``).
"""

import bisect
import gc
import heapq
import weakref

import numpy as np

from tinylpu.firmware.check import check_program
from tinylpu.isa import BINARY_OPS, INT32_PLANES, OPS, Opcode
from tinylpu.sim.golden.chip import _SUBUNIT, Golden, ProgramError, RunResult
from tinylpu.sim.golden.flow import KEY as _BIG
from tinylpu.sim.golden.flow import Flow, FlowError
from tinylpu.sim.golden.walk import Bail, TooLong, walk

__all__ = ["FastGolden", "ProgramError", "RunResult"]

EAST, WEST = 0, 1
_MAX_UNITS = 200_000           # more dispatched unit instructions than this: run on Golden
_WALK_ELEMENTS = 4000          # a first run of a program of at most this many elements is walked (walk.py)
_I8 = np.dtype(np.int8)
_READS = (Opcode.READ, Opcode.GATHER)
_LOADS = (Opcode.LDM, Opcode.LDLUT, Opcode.LDPERM)
# REPEAT repetitions never merged into one unit: TRANS and LDM (their elements' roles restart with each
# repetition), C2C (one unit per element)
_UNMERGED = frozenset((Opcode.TRANS, Opcode.LDM, Opcode.SEND, Opcode.RECV))
# the queue instructions that interact with other queues (phase 1 runs a queue ahead up to one)
# (by id: an enum member's hash runs Python code)
_CONTROL_IDS = frozenset(id(op) for op in (Opcode.SYNC, Opcode.NOTIFY, Opcode.DESKEW, Opcode.HALT))
_SUB_BY_ID = {id(op): sub for op, sub in _SUBUNIT.items()}


class _Fallback(Exception):
    """The fast run cannot (or must not) finish: redo the run on Golden.run."""


class _TooLong(_Fallback):
    """The schedule passes ``max_cycles``."""


_PLANS = {}                    # (config key, id(program)) -> _Plan, oldest first
_PLANS_MAX = 64
_CFG_KEYS = {}                 # id(config) -> (config, key)


def _cfg_key(cfg):
    """A key naming everything of a configuration that a plan depends on (its repr: every field)."""
    e = _CFG_KEYS.get(id(cfg))
    if e is None or e[0] is not cfg:
        e = _CFG_KEYS[id(cfg)] = (cfg, repr(cfg))
        if len(_CFG_KEYS) > 256:
            _CFG_KEYS.pop(next(iter(_CFG_KEYS)))
    return e[1]


class _Plan:
    """What a program's runs share: it passed ``check_program``, and (after its first run) phases 1
    and 2 and the dataflow of phase 3 (or that it is in error).  Held for the program object while
    its queues hold the same instructions (``snap``); the program itself only by a weak reference,
    whose death drops the plan."""
    __slots__ = ("__weakref__", "activity", "bad", "c2c", "flow", "halted", "last_halt", "ref", "snap", "tray",
                 "units", "walked")

    def __init__(self, program, key):
        self.ref = weakref.ref(program, lambda r: _forget(key, r))
        self.snap = {name: list(insns) for name, insns in program.queues.items()}
        self.units = self.flow = self.c2c = None
        self.tray = None        # (sim/golden/fasttray.py: its link replay of a tray with this chip 0)
        self.bad = False
        self.walked = False     # its first run was walked (sim/golden/walk.py)


def _forget(key, ref):
    p = _PLANS.get(key)
    if p is not None and p.ref is ref:
        del _PLANS[key]


def _remember(cfg_key, program):
    """A new (empty) plan for `program`, cached."""
    key = (cfg_key, id(program))
    plan = _Plan(program, key)
    _PLANS.pop(key, None)
    _PLANS[key] = plan
    if len(_PLANS) > _PLANS_MAX:
        _PLANS.pop(next(iter(_PLANS)))
    return plan


_BLAS = []


class _one_blas_thread:
    """Run with one BLAS thread: the MM products are small, and on a shared machine OpenBLAS's
    threads cost far more than they gain (measured: 4x slower on a 256-token layer).  Entered only
    for flows with matmuls of more than a few rows (it costs ~20 us, a tenth of a small run)."""

    def __enter__(self):
        if not _BLAS:
            try:
                from threadpoolctl import ThreadpoolController
                _BLAS.append(ThreadpoolController())
            except ImportError:             # pragma: no cover - threadpoolctl is a dependency
                _BLAS.append(None)
        ctl = _BLAS[0]
        self.limit = None if ctl is None else ctl.limit(limits=1, user_api="blas")
        return self

    def __exit__(self, *exc):
        if self.limit is not None:
            self.limit.unregister()
        return False


class _Unit:
    """One dispatched unit instruction (a REPEAT repetition is its own unit); ``f``: its fields."""
    __slots__ = (
        "buf",
        "busy",
        "done",
        "f",
        "idx",
        "lat",
        "n",
        "op",
        "out",
        "planes",
        "port",
        "pos",
        "ready",
        "rpe",
        "sl",
        "srcs",
        "sub",
        "t",
        "tbuf",
        "uid",
    )

    def __init__(self, uid, sl, pos, sub, op, f, idx, t, n, busy):
        self.uid, self.sl, self.pos, self.sub, self.op, self.f, self.idx = uid, sl, pos, sub, op, f, idx
        self.t, self.n, self.busy = t, n, busy
        self.rpe = None             # LW: weight rows per element (install_rows, or fewer: see _fast_schedule)
        self.done = self.ready = 0
        self.srcs = ()
        self.out = self.tbuf = None
        self.port = None


# the stream operands an element samples: (field, byte planes), in the order Golden reads them;
# a 'b' operand of a binary VXM op is skipped when it is the immediate
_SRCS = {
    Opcode.READ: (), Opcode.EMIT: (), Opcode.GATHER: (("a", 1),), Opcode.WRITE: (("s", 1),),
    Opcode.LW: (("s", 1),), Opcode.MM: (("s", 1),), Opcode.SCATTER: (("s", 1), ("a", 1)),
    Opcode.REQ: (("a", INT32_PLANES),), Opcode.REQL: (("a", INT32_PLANES),),
    Opcode.ADD32: (("a", INT32_PLANES), ("b", INT32_PLANES)), Opcode.SEL: (("a", 1), ("b", 1), ("c", 1)),
    Opcode.SEND: (("s", 1),), Opcode.RECV: (),
    **{op: (("a", 1), ("b", 1)) for op in BINARY_OPS},
}


_TABLES = {}


def _tables(L):
    """Per opcode: (result latency, (result field, planes) or None, latency of its other effects),
    and the stream operands."""
    tab, srcs = {}, {}
    for op, info in OPS.items():
        if info.unit not in ("mem", "mxm", "vxm", "sxm"):
            continue
        lat = L["sxm"] if op is Opcode.TRANS else L[info.latency]
        if op in _READS:
            out = ("s", 1)
        elif op is Opcode.EMIT:
            out = ("s", INT32_PLANES)
        elif info.unit in ("vxm", "sxm") and op not in _LOADS:
            out = ("d", INT32_PLANES if op is Opcode.ADD32 else 1)
        else:
            out = None
        eff = {Opcode.WRITE: L["mem_write"], Opcode.SCATTER: L["mem_write"], Opcode.LW: L["mxm_install"],
               Opcode.MM: L["mxm_mm"]}.get(op, 1)
        tab[op] = (lat, out, eff)
        srcs[op] = _SRCS.get(op, (("a", 1),) if info.unit in ("vxm", "sxm") else ())
    # C2C: a SEND element samples its stream (and hands the vector to the link at once), a RECV
    # element's vector lands c2c_recv cycles later
    tab[Opcode.SEND], srcs[Opcode.SEND] = (0, None, 0), _SRCS[Opcode.SEND]
    tab[Opcode.RECV], srcs[Opcode.RECV] = (L["c2c_recv"], ("s", 1), 1), _SRCS[Opcode.RECV]
    # (keyed by the opcode's id: an enum member's hash runs Python code)
    return {id(op): v for op, v in tab.items()}, {id(op): v for op, v in srcs.items()}


def _evaluate(flow, g, commit):
    """``flow.run(g, commit)`` (the state written in place only at its end, unless ``commit`` is
    false: then its pending final state is returned); ``_Fallback`` on a GATHER / SCATTER index out
    of its bank (nothing written)."""
    try:
        if flow.blas:
            with _one_blas_thread():
                return flow.run(g, commit)
        return flow.run(g, commit)
    except FlowError:
        raise _Fallback from None


def _c2c_elements(units):
    """The C2C elements of a schedule: {"send": {port: [(cycle, first element's cycle, elements of
    the SEND)]}, "recv": {port: [cycle]}} in element order, or None without any."""
    out = None
    for u in units:
        if u.port is not None:
            if out is None:
                out = {"send": {}, "recv": {}}
            port, _, t0, n = u.port
            if u.op is Opcode.SEND:
                out["send"].setdefault(port, []).append((u.t, t0, n))
            else:
                out["recv"].setdefault(port, []).append(u.t)
    return out


def _advance_fields(insn, k=1):
    """``chip._advance`` on (opcode, fields), `k` times: the next repetition under REPEAT continues at
    the address where this one ended (without building an ``Insn`` per repetition)."""
    op, f = insn
    if op is Opcode.READ or op is Opcode.WRITE:
        f = dict(f)
        f["addr"] += k * f["count"] * f["stride"]
    elif op is Opcode.LW or op is Opcode.MM or op is Opcode.EMIT:
        f = dict(f)
        f["addr"] += k * f["count"]
    elif op is Opcode.LDLUT:
        f = dict(f)
        f["imm"] += k * f["count"]
    else:
        return insn
    return op, f


def _acc_hazard(wr, rd, Lmm, pairs=None):
    """Whether an accumulator read (an MM with acc=1 or an EMIT: (first address, first cycle, n), element
    k reading address + k in cycle + k) in cycle r reads an entry that an MM element (``wr``, alike)
    sampled at w < r writes after r (w + Lmm > r).  ``pairs``: decide by pairs of instructions (True) or
    element by element (False); default: pairs unless there are very many."""
    if pairs is None:
        pairs = len(wr) * len(rd) <= 1 << 20
    if pairs:
        # both run along a diagonal, so where a write's and a read's addresses overlap, every common
        # address is written (w - r) = (t_w - a_w) - (t_r - a_r) cycles after it is read: a hazard iff
        # that lag is in (-Lmm, 0)
        w = np.array(wr, np.int64)
        r = np.array(rd, np.int64)
        lag = (w[:, 1] - w[:, 0])[:, None] - (r[:, 1] - r[:, 0])[None, :]
        overlap = (w[:, 0, None] < (r[:, 0] + r[:, 2])[None, :]) & (r[:, 0][None, :] < (w[:, 0] + w[:, 2])[:, None])
        return bool((overlap & (lag < 0) & (lag > -Lmm)).any())
    wa = np.concatenate([np.arange(a, a + n) for a, _, n in wr])
    wc = np.concatenate([np.arange(t, t + n) for _, t, n in wr])
    key = np.sort(wa * _BIG + wc)
    ra = np.concatenate([np.arange(a, a + n) for a, _, n in rd])
    rc = np.concatenate([np.arange(t, t + n) for _, t, n in rd])
    lo = np.searchsorted(key, ra * _BIG + rc - Lmm + 1, "left")
    hi = np.searchsorted(key, ra * _BIG + rc, "left")
    return bool((hi > lo).any())


class _Landings:
    """One stream's landings (pos, key_lo, key_hi, uid, plane, c_lo), indexed by key_lo:
    ``window(k0, k1)`` returns every landing that may overlap the keys k0..k1 (key_lo within the
    longest landing's length below k0, up to k1).  Landings from one position never overlap (one
    result per slice and cycle), so their order does not matter to a reader."""

    def __init__(self, ivs):
        self.ivs = sorted(ivs, key=lambda iv: iv[1])          # (stable: ties in landing order)
        self.klo = [iv[1] for iv in self.ivs]
        self.span = max(iv[2] - iv[1] for iv in ivs) if ivs else 0

    def window(self, k0, k1):
        return self.ivs[bisect.bisect_left(self.klo, k0 - self.span):bisect.bisect_right(self.klo, k1)]


_NO_LANDINGS = _Landings([])


class FastGolden(Golden):
    """``Golden`` with a fast ``run``: same results, same errors (see the module docstring)."""

    def __init__(self, config="tiny"):
        super().__init__(config)
        self.fallbacks = 0          # runs redone on Golden.run (errors, C2C programs)
        self._fast_cfg_key = key = _cfg_key(self.cfg)          # (names every latency too)
        if key not in _TABLES:
            _TABLES[key] = _tables(self.L)
        self._fast_tab, self._fast_srcs = _TABLES[key]
        self._valid, self._row = self.mem.valid, (self.lanes,)

    def load_program(self, program):
        """``Golden.load_program``; the static check is skipped for a program whose plan is cached
        (it passed the check on this configuration, and its instructions are unchanged)."""
        if self._fast_cached(program) is None:
            check_program(program, self.cfg)
            _remember(self._fast_cfg_key, program)
        self.program = program

    def write_mem(self, bank, addr, vectors):
        """``Golden.write_mem``, with its checks short-cut for the common case (a bank name, an int
        address, (n, lanes) int8 vectors that fit): a compiled layer's image is thousands of pieces."""
        if type(vectors) is np.ndarray and type(addr) is int and vectors.dtype is _I8 and type(bank) is str:
            shape = vectors.shape
            if shape[1:] == self._row:
                m = self._valid.get(bank)                          # (the bank's valid rows)
                if m is not None and 0 <= addr <= len(m) - shape[0]:
                    m[addr:addr + shape[0]] = vectors
                    return
                if bank in self.mem and 0 <= addr <= self.mem.depth - shape[0]:
                    self.mem.rows(bank, addr + shape[0])[addr:addr + shape[0]] = vectors
                    return
        Golden.write_mem(self, bank, addr, vectors)

    def run(self, max_cycles=1_000_000) -> RunResult:
        try:
            return self._fast_run(max_cycles)
        except _Fallback:
            self.fallbacks += 1
            return Golden.run(self, max_cycles)

    # ------------------------------------------------------------------------------------------
    def _fast_cached(self, program):
        """The cached plan of `program` on this configuration, if its queues are still the ones planned."""
        p = _PLANS.get((self._fast_cfg_key, id(program)))
        if p is None or p.ref() is not program:
            return None
        q = program.queues
        if len(q) != len(p.snap):
            return None
        for name, insns in p.snap.items():
            if q.get(name) != insns:             # (list ==: identical Insn objects compare by identity first)
                return None
        return p

    def _fast_plan(self, max_cycles, plan=None):
        """Phases 1 and 2 and the dataflow of phase 3 for the loaded program: from the cache, or
        computed (and cached, also when the program is in error: its runs go to Golden.run).
        ``plan``: the loaded program's cached plan, if the caller has just looked it up."""
        if plan is None:
            program = self.program
            plan = self._fast_cached(program)
            if plan is None:
                plan = _remember(self._fast_cfg_key, program)
        if plan.bad:
            raise _Fallback
        if plan.units is None:
            # (planning allocates tens of thousands of small containers, none of them garbage in a
            # cycle: the cyclic collector's passes over them cost ~15 % of a first run)
            collect = gc.isenabled()
            gc.disable()
            try:
                units, activity, halted, last_halt, deskews = self._fast_schedule(max_cycles)
                self._fast_prepare(units, last_halt, deskews)
                plan.units, plan.activity, plan.halted, plan.last_halt = units, activity, halted, last_halt
                plan.c2c = _c2c_elements(units)
                if plan.c2c is None:
                    plan.flow = Flow.build(self, units)
                    plan.units = ()               # (the flow holds all it needs)
                # (SEND / RECV: the units are kept for a tray's flow, sim/golden/fasttray.py)
            except _TooLong:
                plan.units = None
                raise                             # (not a property of the program: not cached)
            except _Fallback:
                plan.units = None
                plan.bad = True
                raise
            finally:
                if collect:
                    gc.enable()
        if plan.last_halt >= max_cycles:
            raise _Fallback                       # Golden.run reports that it did not halt in time
        return plan

    def _fast_run(self, max_cycles):
        self.rx = {p: [] for p in range(self.cfg.c2c_ports)}
        plan = None
        if _WALK_ELEMENTS:
            program = self.program
            plan = self._fast_cached(program) or _remember(self._fast_cfg_key, program)
            if not (plan.walked or plan.bad or plan.units is not None or plan.flow is not None):
                # a first run: walked in one pass (a later run builds the plan)
                # (the walk allocates thousands of small containers and no cyclic garbage to speak of:
                # as for planning, the cyclic collector's passes over them would only cost time)
                collect = gc.isenabled()
                gc.disable()
                try:
                    r = walk(self, max_cycles, _WALK_ELEMENTS)
                except TooLong:
                    raise _Fallback from None
                except Bail:
                    plan.bad = True
                    raise _Fallback from None
                finally:
                    if collect:
                        gc.enable()
                if r is not None:
                    plan.walked = True
                    return r
        plan = self._fast_plan(max_cycles, plan)
        if plan.c2c:
            raise _Fallback                       # SEND / RECV: only in a tray (``fasttray``)
        _evaluate(plan.flow, self, True)
        return self._fast_finish(plan)

    def _fast_finish(self, plan):
        """The run's bookkeeping (activity, halt cycles, cycle count) after a clean evaluation."""
        activity = dict(zip(plan.activity, map(dict, plan.activity.values())))
        halted, last_halt = dict(plan.halted), plan.last_halt
        self.activity, self.halted, self.last_halt = activity, halted, last_halt
        self.c, self.done = last_halt + 1, True
        return RunResult(last_halt + 1, activity, halted)

    # --- phase 1: the issue schedule ------------------------------------------------------------
    def _fast_schedule(self, max_cycles):
        """Step the queues from event to event.  Within one cycle the order of the queues only
        matters for which error is reported first, and errors are reported by Golden.run.  A queue
        runs ahead of the others up to its next SYNC, NOTIFY, DESKEW or HALT, which are taken in
        cycle order (they are all that one queue's issue depends on of another's), so the units are
        not in cycle order; nothing after this depends on their order."""
        lanes, pos, kind = self.lanes, self.pos, self.kind
        install_rows = self.cfg.install_rows
        notify_lat = self.L["notify"]
        # [name, insns, pc, next_issue, state, rep_left, rep_d, rep_insn, rep_index, last unit dispatched]
        queues = []
        for name, insns in self.program.queues.items():
            queues.append([name, insns, 0, 0, "run", 0, 0, None, 0, None])
        F = self.cfg.vector_interval if self.cfg.c2c_ports else 1   # (SEND / RECV need C2C ports)
        epoch = self.cfg.link["epoch"]                                 # (as Golden._issue)
        deskews = []           # epoch boundaries where queues leave DESKEW (checked in phase 2)
        parked_deskew = 0      # queues parked in DESKEW
        c2c_seq = {}           # (sub-unit) -> elements so far
        halted = {}
        for n in pos:
            if n not in self.program.queues:
                halted[n] = -1
        activity = {n: {"issued": 0} for n in pos}
        busy_until = {}
        last_disp, last_issue = {}, {}
        units = []
        last_halt = -1
        if not queues:
            return units, activity, halted, last_halt, deskews
        run = [(0, qi) for qi in range(len(queues))]      # heap of (next issue, queue)
        parked = []
        fires = []             # heap of notify fire cycles
        nhalt_left = len(queues)
        uid = 0
        NOP, REPEAT, LW = Opcode.NOP, Opcode.REPEAT, Opcode.LW

        while True:
            if run:
                c = run[0][0]
                if parked and fires and fires[0] < c:
                    c = fires[0]
            elif parked and fires:
                c = fires[0]
            else:                                           # pragma: no cover - handled below
                raise _Fallback
            if c >= max_cycles:
                raise _TooLong
            if parked_deskew and run and run[0][0] == c and any(q[4] == "deskew" and q[3] == c for q in queues):
                # leaving DESKEW at an epoch boundary: every live queue parked in DESKEW until now
                # (the quiet chip is checked in phase 2)
                for q in queues:
                    if q[4] != "halt" and not (q[4] == "deskew" and q[3] == c):
                        raise _Fallback
                    if q[4] == "deskew":
                        q[4] = "run"
                        parked_deskew -= 1
                deskews.append(c)
            while fires and fires[0] < c:
                heapq.heappop(fires)
            if fires and fires[0] == c and parked:
                for qi in parked:
                    q = queues[qi]
                    q[4], q[3] = "run", c
                    heapq.heappush(run, (c, qi))
                parked = []
            while fires and fires[0] <= c:
                heapq.heappop(fires)
            while run and run[0][0] == c:
                qi = heapq.heappop(run)[1]
                q = queues[qi]
                name = q[0]
                act, p_, vsub = activity[name], pos[name], ("alu" if kind[name] == "vxm" else "sxm")
                qc = c          # the queue's own cycle: it runs ahead of the others up to its next control
                while True:     # instruction (SYNC, NOTIFY, DESKEW, HALT: the only ones that interact)
                    while True:                                 # a REPEAT with d = 1 issues in its own cycle
                        rep = q[5]
                        if rep:
                            q[7] = insn = _advance_fields(q[7])
                            idx = q[8]
                            q[5] -= 1
                            q[3] = qc + q[6]
                        else:
                            if q[2] >= len(q[1]):
                                raise _Fallback                 # ran past its last instruction
                            insn, idx = q[1][q[2]], q[2]
                            q[2] += 1                           # (activity "issued": q[2] at the end)
                            op = insn.op
                            if op is NOP:
                                q[3] = qc + insn.fields["n"]
                                insn = None
                            elif op is REPEAT:
                                f = insn.fields
                                q[7], q[8], q[5], q[6] = last_disp[name], idx - 1, f["n"], f["d"]
                                q[3] = last_issue[name] + f["d"]
                                if q[3] == qc:
                                    continue
                                if q[3] < qc:                    # pragma: no cover - check_program forbids it
                                    raise _Fallback
                                insn = None
                            elif op is Opcode.SYNC:
                                q[4] = "sync"
                                insn = None
                            elif op is Opcode.NOTIFY:
                                heapq.heappush(fires, qc + notify_lat)
                                q[3] = qc + 1
                                insn = None
                            elif op is Opcode.HALT:
                                q[4] = "halt"
                                halted[name] = qc
                                insn = None
                            elif op is Opcode.DESKEW:
                                q[4], q[3] = "deskew", (qc // epoch + 1) * epoch
                                parked_deskew += 1
                                insn = None
                            else:
                                q[3] = qc + 1
                                insn = (op, insn.fields)
                        if insn is not None:                    # dispatch a unit instruction: (opcode, fields)
                            op, f = insn
                            last_disp[name] = insn
                            last_issue[name] = qc
                            sub = _SUB_BY_ID.get(id(op)) or vsub
                            n = busy = f["count"]
                            if op is LW:
                                n = busy = -(-n // install_rows)        # (isa.element_count)
                            elif op is Opcode.TRANS:
                                n, busy = lanes, 2 * lanes
                            elif op is Opcode.SEND or op is Opcode.RECV:
                                sub = f"{'tx' if op is Opcode.SEND else 'rx'}{f['port']}"
                                busy = n * F
                            key = (name, sub)
                            if busy_until.get(key, -1) >= qc:
                                raise _Fallback                 # busy sub-unit
                            busy_until[key] = qc + busy - 1
                            k = sub + "_busy"
                            act[k] = act.get(k, 0) + busy
                            if op is Opcode.SEND or op is Opcode.RECV:
                                # one unit per element (elements F cycles apart); ``port``: (port, element
                                # index on the port's sub-unit, first element's cycle, elements of the insn)
                                seq = c2c_seq.get(sub, 0)
                                for e in range(n):
                                    u = _Unit(uid, name, p_, sub, op, f, idx, qc + e * F, 1, busy - e * F)
                                    u.port = (f["port"], seq + e, qc, n)
                                    units.append(u)
                                    uid += 1
                                c2c_seq[sub] = seq + n
                            else:
                                pu = q[9]
                                if (rep and pu is not None and pu.t + pu.n == qc and pu.idx == idx and busy == n
                                        and op not in _UNMERGED
                                        and (op is not Opcode.LW or f["count"] % install_rows == 0 or n == 1)):
                                    # a repetition that starts where the last one ended (d = its elements) continues
                                    # it: one unit (addresses continue as the repetitions' do, see _advance_fields;
                                    # an LW of fewer rows than install_rows (one element) installs that many rows
                                    # per element from as many streams: its rows per element, ``rpe``)
                                    reps = 1
                                    if q[5] and q[6] == n:
                                        # every further repetition continues it too: all of them at once
                                        more, q[5] = q[5], 0
                                        reps += more
                                        last = qc + more * n
                                        q[7] = insn = _advance_fields(insn, more)
                                        last_disp[name], last_issue[name] = insn, last
                                        q[3] = last + n
                                        busy_until[key] = last + busy - 1
                                        act[k] += more * busy
                                    pu.n += reps * n
                                    pu.busy += reps * busy
                                    if op is Opcode.LW:
                                        pu.f = dict(pu.f, count=pu.f["count"] + reps * f["count"])
                                        if f["count"] < install_rows:
                                            pu.rpe = f["count"]
                                else:
                                    q[9] = u = _Unit(uid, name, p_, sub, op, f, idx, qc, n, busy)
                                    if op is Opcode.LW:
                                        u.rpe = install_rows
                                    units.append(u)
                                    uid += 1
                            if uid > _MAX_UNITS:
                                raise _Fallback
                        break
                    if q[4] != "run":
                        break
                    qc = q[3]
                    if qc >= max_cycles or (not q[5] and (q[2] >= len(q[1]) or id(q[1][q[2]].op) in _CONTROL_IDS)):
                        break
                st = q[4]
                if st == "run" or st == "deskew":
                    heapq.heappush(run, (q[3], qi))
                elif st == "sync":
                    parked.append(qi)
                else:
                    last_halt = max(last_halt, qc)
                    nhalt_left -= 1
            if not nhalt_left:
                for q in queues:
                    activity[q[0]]["issued"] = q[2]
                return units, activity, halted, last_halt, deskews
            if not run and not fires:
                raise _Fallback                              # deadlock

    # --- phase 2: landings, operands, static checks ----------------------------------------------
    def _fast_prepare(self, units, last_halt, deskews=()):
        lanes, S, tab = self.lanes, self.S, self._fast_tab
        mem_depth, acc_depth, R = self.cfg.mem_depth, self.cfg.acc_depth, self.cfg.install_rows
        end = last_halt + 1
        lands = {}               # (dir, stream) -> [(pos, key_lo, key_hi, uid, plane, c_lo)]
        port = {}                # slice -> [(c_lo, c_hi)]
        acc_w, acc_r = {}, {}    # mxm -> [(first addr, first cycle, n)]
        quiet = [] if deskews else None   # per unit (first cycle, last busy cycle, last effect's due cycle)
        TRANS, READ, WRITE, LW, MM, EMIT, LDLUT = (Opcode.TRANS, Opcode.READ, Opcode.WRITE, Opcode.LW, Opcode.MM,
                                                   Opcode.EMIT, Opcode.LDLUT)
        for u in units:
            op, t, n = u.op, u.t, u.n
            f = u.f
            if t + u.busy - 1 > last_halt:
                raise _Fallback          # sub-unit still running at the end
            lat, out, eff = tab[id(op)]
            u.lat = lat
            if out is not None:
                dst = f[out[0]]
                planes = out[1]
                c_lo = t + lat if op is not TRANS else t + lanes - 1 + lat
                c_hi = c_lo + n - 1
                if quiet is not None:
                    quiet.append((t, t + u.busy - 1, c_hi))
                if c_hi > end or dst.index + planes > S:
                    raise _Fallback      # a result still in flight at the end
                d = WEST if dst.west else EAST
                p = u.pos
                for b in range(planes):
                    if d == EAST:
                        iv = (p, c_lo - p, c_hi - p, u.uid, b, c_lo)
                    else:
                        iv = (p, c_lo + p, c_hi + p, u.uid, b, c_lo)
                    key = (d, dst.index + b)
                    lst = lands.get(key)
                    if lst is None:
                        lands[key] = [iv]
                    else:
                        lst.append(iv)
                lst = port.get(u.sl)
                if lst is None:
                    port[u.sl] = [(c_lo, c_hi)]
                else:
                    lst.append((c_lo, c_hi))
                u.planes = planes
            else:
                u.planes = 0
                if quiet is not None:
                    quiet.append((t, t + u.busy - 1, t + n - 1 + eff))
                if t + n - 1 + eff > end:
                    raise _Fallback      # a write still in flight at the end
            # static addresses (REPEAT repetitions may run off the end)
            if op is READ or op is WRITE:
                a0 = f["addr"]
                a1 = a0 + (n - 1) * f["stride"]
                if a0 < 0 or a1 < 0 or a0 >= mem_depth or a1 >= mem_depth:
                    raise _Fallback
            elif op is LW:
                if f["addr"] + f["count"] > lanes or f["s"].index + R > S:
                    raise _Fallback
                u.buf = f["buf"]
            elif op is MM or op is EMIT:
                if f["addr"] + n > acc_depth:
                    raise _Fallback
                if op is MM:
                    u.buf = f["buf"]
                    acc_w.setdefault(u.sl, []).append((f["addr"], t, n))
                if op is EMIT or f["acc"]:
                    acc_r.setdefault(u.sl, []).append((f["addr"], t, n))
            elif op is LDLUT and f["imm"] + n > 256 // lanes:
                raise _Fallback
        # DESKEW: at each epoch boundary D where queues leave DESKEW, nothing that started before D may
        # still be busy (last busy cycle >= D) or have an effect due after D
        if quiet:
            q = np.array(sorted(quiet), np.int64)
            busy_max = np.maximum.accumulate(q[:, 1])
            due_max = np.maximum.accumulate(q[:, 2])
            for D in deskews:
                i = int(np.searchsorted(q[:, 0], D, "left"))
                if i and (busy_max[i - 1] >= D or due_max[i - 1] > D):
                    raise _Fallback
        # one result per slice and cycle
        for ivs in port.values():
            if len(ivs) > 1:
                ivs.sort()
                prev = ivs[0][1]
                for b0, b1 in ivs[1:]:
                    if b0 <= prev:
                        raise _Fallback
                    prev = b1
        # accumulator hazards: a read in cycle r of an entry that an MM element sampled at w < r
        # writes after r (w + mxm_mm > r)
        Lmm = self.L["mxm_mm"]
        for sl, rd in acc_r.items():
            wr = acc_w.get(sl)
            if wr and _acc_hazard(wr, rd, Lmm):
                raise _Fallback
        # stream operands -> segments (each stream's landings indexed by key, so a reader looks only at
        # the landings that overlap its own window: linear, not quadratic, in the program's length)
        lands = {key: _Landings(lst) for key, lst in lands.items()}
        resolve, specs = self._fast_resolve, self._fast_srcs
        for u in units:
            if u.op is LW and R > 1:
                # stream s+j feeds element k when k*r + j < count: ceil((count - j) / r) elements (r: the
                # unit's rows per element, install_rows unless merged repetitions of a shorter LW)
                s, cnt, r = u.f["s"], u.f["count"], u.rpe
                d = WEST if s.west else EAST
                u.srcs = [resolve(lands.get((d, s.index + j), _NO_LANDINGS), u.pos, d, u.t, -(-(cnt - j) // r))
                          for j in range(min(r, cnt))]
                continue
            spec = specs[id(u.op)]
            if spec:
                f = u.f
                srcs = []
                for fld, planes in spec:
                    if fld == "b" and planes == 1 and f["use_imm"]:
                        continue
                    s = f[fld]
                    d = WEST if s.west else EAST
                    for b in range(planes):
                        srcs.append(resolve(lands.get((d, s.index + b), _NO_LANDINGS), u.pos, d, u.t, u.n))
                u.srcs = srcs

    @staticmethod
    def _fast_resolve(ivs, p, d, t, n):
        """Segments (k_a, k_b, producer uid, plane, producer element at k_a) covering elements 0..n-1
        of a reader at position p sampling a stream in cycles t..t+n-1."""
        K0 = t - p if d == EAST else t + p
        K1 = K0 + n - 1
        window = ivs.window(K0, K1)
        if d == EAST:
            cands = [iv for iv in window if iv[0] <= p and iv[1] <= K1 and iv[2] >= K0]
            if len(cands) > 1:
                cands.sort(key=lambda iv: -iv[0])
        else:
            cands = [iv for iv in window if iv[0] >= p and iv[1] <= K1 and iv[2] >= K0]
            if len(cands) > 1:
                cands.sort(key=lambda iv: iv[0])
        if cands:                        # the common case: the nearest landing covers every element
            pp, klo, khi, uid, pl, clo = cands[0]
            if klo <= K0 and khi >= K1:
                return [(0, n, uid, pl, (K0 + pp if d == EAST else K0 - pp) - clo)]
        gaps = [(K0, K1)]
        segs = []
        for pp, klo, khi, uid, pl, clo in cands:
            ng = []
            for a, b in gaps:
                lo = max(klo, a)
                hi = min(khi, b)
                if lo > hi:
                    ng.append((a, b))
                    continue
                if a < lo:
                    ng.append((a, lo - 1))
                if hi < b:
                    ng.append((hi + 1, b))
                pk = (lo + pp if d == EAST else lo - pp) - clo
                segs.append((lo - K0, hi - K0 + 1, uid, pl, pk))
            gaps = ng
            if not gaps:
                break
        if gaps:
            raise _Fallback              # an element reads an empty stream slot
        segs.sort()
        return segs
