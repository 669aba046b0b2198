"""A reservation table for static schedules, shared by the compiler and the random-program generator.

It mirrors the timing rules of docs/microarchitecture.md: each slice's queue issues one
instruction per cycle, each sub-unit runs one element per cycle, each slice's stream port takes
one result per cycle, and a value travelling on a stream register must not be overwritten before
its consumer samples it.  A `Txn` gathers the reservations of one operation (say READ -> MM, or
EMIT -> REQL -> WRITE), checks them all, and commits them together or not at all.
"""

import bisect
from dataclasses import dataclass

from tinylpu.firmware.program import Program
from tinylpu.isa import Insn, Opcode, StreamRef

__all__ = ["Schedule", "Txn", "read_to", "write_from", "stream_toward"]


def stream_toward(src_pos, dst_pos, idx):
    return StreamRef(idx, west=dst_pos < src_pos)


class _Intervals:
    """Disjoint closed intervals [a, b], kept sorted, with an overlap query."""

    def __init__(self):
        self.starts, self.ends = [], []

    def free(self, a, b):
        i = bisect.bisect_right(self.starts, b)
        return i == 0 or self.ends[i - 1] < a

    def add(self, a, b):
        i = bisect.bisect_right(self.starts, a)
        self.starts.insert(i, a)
        self.ends.insert(i, b)


@dataclass
class Entry:
    start: int
    end: int          # first cycle the queue may issue again
    insns: list
    tag: str = ""


class Schedule:
    def __init__(self, cfg):
        self.cfg, self.L = cfg, cfg.latency
        self.pos = {s.name: s.position for s in cfg.slices}
        self.q = {s.name: [] for s in cfg.slices}          # slice -> [Entry]
        self.qiv = {s.name: _Intervals() for s in cfg.slices}
        self.sub = {}                                      # (slice, sub) -> _Intervals (inclusive)
        self.port = {}                                     # slice -> set of landing cycles
        self.acc_w = {}                                    # (mxm, addr) -> MM sample cycles
        self.acc_r = {}                                    # (mxm, addr) -> read cycles (MM acc=1, EMIT)
        self.max_due = 0
        self.max_busy = 0
        self.cells = set()      # (west, idx, pos, cycle) a travelling value occupies
        self.landings = set()   # (west, idx, pos, cycle) where a result is written into a register
        self.barriers = []      # DESKEW epoch boundaries: no operation may span one

    def crosses(self, tx):
        """True if the transaction is active on both sides of a DESKEW boundary."""
        return any(tx.lo < b <= tx.hi for b in self.barriers)

    def queue_free(self, s, t, end):
        return t >= 0 and self.qiv[s].free(t, end - 1)

    def sub_free(self, s, sub, t0, t1):
        iv = self.sub.get((s, sub))
        return t0 >= 0 and (iv is None or iv.free(t0, t1))

    def port_free(self, s, cycles):
        return not (self.port.get(s, set()) & set(cycles))

    def txn(self):
        return Txn(self)

    @property
    def end_cycle(self):
        """The last HALT cycle H: everything has landed by H+1 and every queue is idle."""
        return max([self.max_due - 1, self.max_busy, 0] + [e.end for s in self.q for e in self.q[s]])

    def finish(self, halt_at=None, keep_empty=False):
        """Turn the reservations into a Program: NOPs fill the gaps, every used queue HALTs at H.

        Returns (program, halt cycle H, listing) where listing maps (queue, index) -> issue cycle.
        """
        H = self.end_cycle if halt_at is None else halt_at
        queues, listing = {}, {}
        for s, entries in self.q.items():
            if not entries and not keep_empty:
                continue
            out, cur = [], 0
            pending = [b for b in self.barriers if b <= H]
            for e in sorted(entries, key=lambda e: e.start) + [Entry(H, H, [])]:
                while pending and pending[0] <= e.start:
                    b = pending.pop(0)      # park in DESKEW from the last free cycle before the boundary
                    if b - 1 > cur:
                        listing[(s, len(out))] = cur
                        out.append(Insn.make(Opcode.NOP, n=b - 1 - cur))
                    listing[(s, len(out))] = max(cur, b - 1)
                    out.append(Insn.make(Opcode.DESKEW))
                    cur = b
                if not e.insns:
                    break
                if e.start > cur:
                    listing[(s, len(out))] = cur
                    out.append(Insn.make(Opcode.NOP, n=e.start - cur))
                t = e.start
                for k, insn in enumerate(e.insns):
                    listing[(s, len(out))] = t + insn.d if insn.op == Opcode.REPEAT else t
                    out.append(insn)
                cur = e.end
            if H > cur:
                listing[(s, len(out))] = cur
                out.append(Insn.make(Opcode.NOP, n=H - cur))
            listing[(s, len(out))] = max(H, cur)
            out.append(Insn.make(Opcode.HALT))
            queues[s] = out
        return Program(queues), H, listing


class Txn:
    """The reservations of one operation, checked together and committed together."""

    def __init__(self, sch):
        self.sch, self.items, self.ok = sch, [], True
        self.qspans, self.subspans, self.lands = {}, {}, {}
        self.cells, self.plands = set(), set()
        self.due = 0
        self.acc = []       # (key, 'w'|'r', cycle)
        self.why = None
        self.lo, self.hi = 1 << 60, -1     # first and last cycle anything of this operation happens
        self.extra = []                     # further sub-unit intervals (REPEAT repetitions)

    def fail(self, why):
        if self.ok:
            self.why = why
        self.ok = False

    def add(self, s, t, insns, end, sub=None, busy=None, lands=(), tag=""):
        sch = self.sch
        if not sch.queue_free(s, t, end) or any(not (end <= a or t >= b) for a, b in self.qspans.get(s, [])):
            self.fail(f"queue {s} busy at {t}")
        if sub is not None:
            if not sch.sub_free(s, sub, *busy) or any(not (busy[1] < a or busy[0] > b)
                                                      for a, b in self.subspans.get((s, sub), [])):
                self.fail(f"{s}.{sub} busy in {busy}")
            self.subspans.setdefault((s, sub), []).append(busy)
        if lands:
            if not sch.port_free(s, lands) or self.lands.get(s, set()) & set(lands):
                self.fail(f"{s} port busy")
            self.lands.setdefault(s, set()).update(lands)
        self.qspans.setdefault(s, []).append((t, end))
        self.items.append((s, t, insns, end, sub, busy, tuple(lands), tag))
        self.lo = min(self.lo, t)
        self.hi = max([self.hi, end - 1] + ([busy[1]] if busy else []) + [x - 1 for x in lands])

    def reserve(self, s, sub, a, b):
        """Occupy sub-unit `sub` of slice `s` for cycles a..b (e.g. one repetition of a REPEAT)."""
        if not self.sch.sub_free(s, sub, a, b) or any(not (b < x or a > y) for x, y in self.subspans.get((s, sub), [])):
            self.fail(f"{s}.{sub} busy in {(a, b)}")
        self.subspans.setdefault((s, sub), []).append((a, b))
        self.extra.append((s, sub, a, b))
        self.hi = max(self.hi, b)

    def path(self, s, p_from, land, p_to, n, reps=0, d=0):
        """Element k lands at p_from in cycle land + k (+ r*d) and is sampled at p_to."""
        step = -1 if s.west else 1
        cells, lands = set(), set()
        for r in range(reps + 1):
            for k in range(n):
                c0 = land + r * d + k
                lands.add((s.west, s.index, p_from, c0))
                for i, p in enumerate(range(p_from, p_to + step, step)):
                    cells.add((s.west, s.index, p, c0 + i))
        sch = self.sch
        if lands & sch.cells or lands & self.cells or cells & sch.landings or cells & self.plands:
            self.fail(f"stream {s} path collision")
        self.cells |= cells
        self.plands |= lands
        if cells:
            self.hi = max(self.hi, max(c for _, _, _, c in cells))

    def acc_write(self, mxm, addr, w):
        self._acc_check(mxm, addr, writes=[w], reads=[])
        self.acc.append(((mxm, addr), "w", w))

    def acc_read(self, mxm, addr, r):
        self._acc_check(mxm, addr, writes=[], reads=[r])
        self.acc.append(((mxm, addr), "r", r))

    def _acc_check(self, mxm, addr, writes, reads):
        key = (mxm, addr)
        L = self.sch.L["mxm_mm"]
        ws = self.sch.acc_w.get(key, []) + [c for k, t, c in self.acc if k == key and t == "w"]
        rs = self.sch.acc_r.get(key, []) + [c for k, t, c in self.acc if k == key and t == "r"]
        for w in ws + writes:
            for r in rs + reads:
                if (w in writes or r in reads) and w < r < w + L:
                    self.fail(f"accumulator hazard on {key}")
                    return

    def expect(self, due):
        self.due = max(self.due, due)
        self.hi = max(self.hi, due - 1)

    def commit(self):
        sch = self.sch
        assert self.ok, self.why
        for s, t, insns, end, sub, busy, lands, tag in self.items:
            sch.q[s].append(Entry(t, end, insns, tag))
            sch.qiv[s].add(t, end - 1)
            if sub is not None:
                sch.sub.setdefault((s, sub), _Intervals()).add(*busy)
                sch.max_busy = max(sch.max_busy, busy[1])
            if lands:
                sch.port.setdefault(s, set()).update(lands)
                sch.max_due = max(sch.max_due, max(lands))
        for s, sub, a, b in self.extra:
            sch.sub.setdefault((s, sub), _Intervals()).add(a, b)
            sch.max_busy = max(sch.max_busy, b)
        sch.cells |= self.cells
        sch.landings |= self.plands
        sch.max_due = max(sch.max_due, self.due)
        for key, kind, c in self.acc:
            (sch.acc_w if kind == "w" else sch.acc_r).setdefault(key, []).append(c)


def read_to(tx, bank, addr, n, dst_pos, arrive, stream_idx, stride=1, reps=0, d=0, tag=""):
    """READ so that element k reaches position dst_pos at cycle arrive + k (+ r*d for repetitions)."""
    sch = tx.sch
    p = sch.pos[bank]
    s = stream_toward(p, dst_pos, stream_idx)
    Lr = sch.L["mem_read"]
    t = arrive - Lr - abs(dst_pos - p)
    insns = [Insn.make(Opcode.READ, s=s, addr=addr, count=n, stride=stride)]
    end = t + 1
    if reps:
        insns.append(Insn.make(Opcode.REPEAT, n=reps, d=d))
        end = t + (reps + 1) * d
    lands = [t + r * d + k + Lr for r in range(reps + 1) for k in range(n)]
    tx.add(bank, t, insns, end, "rd", (t, t + n - 1), lands, tag)
    for r in range(1, reps + 1):
        tx.reserve(bank, "rd", t + r * d, t + r * d + n - 1)
    tx.path(s, p, t + Lr, dst_pos, n, reps, d)
    return s


def write_from(tx, bank, s, addr, n, sample, reps=0, d=0, src_pos=None, tag=""):
    """WRITE sampling element k at `sample` + k; with src_pos, also reserve the stream path from it."""
    sch = tx.sch
    if src_pos is not None:
        tx.path(s, src_pos, sample - abs(sch.pos[bank] - src_pos), sch.pos[bank], n, reps, d)
    insns = [Insn.make(Opcode.WRITE, s=s, addr=addr, count=n)]
    end = sample + 1
    if reps:
        insns.append(Insn.make(Opcode.REPEAT, n=reps, d=d))
        end = sample + (reps + 1) * d
    busy_end = sample + reps * d + n - 1
    tx.add(bank, sample, insns, end, "wr", (sample, sample + n - 1), tag=tag)
    for r in range(1, reps + 1):
        tx.reserve(bank, "wr", sample + r * d, sample + r * d + n - 1)
    tx.expect(busy_end + sch.L["mem_write"])
