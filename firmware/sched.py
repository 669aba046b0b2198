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

    def next_free(self, a, length):
        """The first x >= a with [x, x + length - 1] free."""
        x = a
        i = bisect.bisect_right(self.starts, x) - 1
        if i >= 0 and self.ends[i] >= x:
            x = self.ends[i] + 1
        i += 1
        while i < len(self.starts) and self.starts[i] <= x + length - 1:
            x = self.ends[i] + 1
            i += 1
        return x

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
        # accumulator writes (MM) and reads (MM acc=1, EMIT): (mxm, cycle - entry) -> [(first, last entry)]
        self.acc = {"w": {}, "r": {}}
        self.max_due = 0
        self.max_busy = 0
        # stream register cells (west, idx, pos, cycle) as ints (``cell``): where a travelling value
        # is, and where a result is written into a register
        self.cell_pos = 2 * max(16, cfg.streams)
        self.cell_cycle = self.cell_pos * (len(cfg.slices) + 1)
        self.cells = set()
        self.landings = set()
        self.barriers = []      # DESKEW epoch boundaries: no operation may span one

    def cell(self, s, pos, cycle):
        """The int naming stream register `s` at slice position `pos` in `cycle` (cells, landings)."""
        return cycle * self.cell_cycle + pos * self.cell_pos + 2 * s.index + int(s.west)

    def crosses(self, tx):
        """True if the transaction is active on both sides of a DESKEW boundary."""
        return any(tx.lo < b <= tx.hi for b in self.barriers)

    def queue_free(self, s, t, end):
        return t >= 0 and self.qiv[s].free(t, end - 1)

    def sub_free(self, s, sub, t0, t1):
        iv = self.sub.get((s, sub))
        return t0 >= 0 and (iv is None or iv.free(t0, t1))

    def sub_shift(self, s, sub, t0, t1):
        """The least d >= 1 with sub-unit `sub` of `s` free in [t0 + d, t1 + d] (and t0 + d >= 0)."""
        iv = self.sub.get((s, sub))
        x = max(t0 + 1, 0)
        return (x if iv is None else iv.next_free(x, t1 - t0 + 1)) - t0

    def port_free(self, s, cycles):
        return not (self.port.get(s, set()) & set(cycles))

    def port_shift(self, s, cycles):
        """The least d >= 0 such that slice `s`'s stream port is free in every cycle of `cycles` + d
        (an operation whose results land there fails the same way at every smaller move)."""
        busy = self.port.get(s)
        d = 0
        if busy:
            while any(c + d in busy for c in cycles):
                d += 1
        return d

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
        self.acc = []       # ('w'|'r', (mxm, diagonal), (first entry, last entry)): see _acc
        self.acc_runs = {"w": {}, "r": {}}
        self.why = None
        self.lo, self.hi = 1 << 60, -1     # first and last cycle anything of this operation happens
        self.extra = []                     # further sub-unit intervals (REPEAT repetitions)
        # Every reservation of an operation sits at a fixed offset from its cycle t (only stream
        # choices vary), so a queue or sub-unit found busy fails the same way until the operation
        # moves past that occupancy: `skip` is the least move that can succeed (at least 1).
        self.skip = 1

    def fail(self, why, skip=1):
        if self.ok:
            self.why = why
        self.ok = False
        self.skip = max(self.skip, skip)

    def add(self, s, t, insns, end, sub=None, busy=None, lands=(), tag=""):
        sch = self.sch
        if not sch.queue_free(s, t, end):
            self.fail(f"queue {s} busy at {t}", sch.qiv[s].next_free(max(t + 1, 0), end - t) - t)
        elif any(not (end <= a or t >= b) for a, b in self.qspans.get(s, [])):
            self.fail(f"queue {s} busy at {t}")
        if sub is not None:
            if not sch.sub_free(s, sub, *busy):
                self.fail(f"{s}.{sub} busy in {busy}", sch.sub_shift(s, sub, *busy))
            elif any(not (busy[1] < a or busy[0] > b) for a, b in self.subspans.get((s, sub), [])):
                self.fail(f"{s}.{sub} busy in {busy}")
            self.subspans.setdefault((s, sub), []).append(busy)
        hi = end - 1
        if busy and busy[1] > hi:
            hi = busy[1]
        if lands:
            mine = set(lands)
            own = self.lands.get(s)
            if not sch.port_free(s, mine) or (own is not None and not own.isdisjoint(mine)):
                self.fail(f"{s} port busy")
            self.lands.setdefault(s, set()).update(mine)
            hi = max(hi, max(lands) - 1)
        self.qspans.setdefault(s, []).append((t, end))
        self.items.append((s, t, insns, end, sub, busy, tuple(lands), tag))
        if t < self.lo:
            self.lo = t
        if hi > self.hi:
            self.hi = hi

    def need(self, s, sub, a, b, queue_end=None):
        """Fail now (with the skip) unless sub-unit `sub` of `s` is free in [a, b] and, with
        queue_end, the queue of `s` is free in [a, queue_end - 1]: a cheap test before building the
        rest of an operation (its reservations are made and checked again by ``add``)."""
        sch = self.sch
        if queue_end is not None and not sch.queue_free(s, a, queue_end):
            self.fail(f"queue {s} busy at {a}", sch.qiv[s].next_free(max(a + 1, 0), queue_end - a) - a)
        if sub is not None and not sch.sub_free(s, sub, a, b):
            self.fail(f"{s}.{sub} busy in {(a, b)}", sch.sub_shift(s, sub, a, b))
        return self.ok

    def reserve(self, s, sub, a, b):
        """Occupy sub-unit `sub` of slice `s` for cycles a..b (e.g. one repetition of a REPEAT)."""
        if not self.sch.sub_free(s, sub, a, b):
            self.fail(f"{s}.{sub} busy in {(a, b)}", self.sch.sub_shift(s, sub, a, b))
        elif any(not (b < x or a > y) for x, y in self.subspans.get((s, sub), [])):
            self.fail(f"{s}.{sub} busy in {(a, b)}")
        self.subspans.setdefault((s, sub), []).append((a, b))
        self.extra.append((s, sub, a, b))
        self.hi = max(self.hi, b)

    def path(self, s, p_from, land, p_to, n, reps=0, d=0):
        """Element k lands at p_from in cycle land + k (+ r*d) and is sampled at p_to."""
        sch = self.sch
        step = -1 if s.west else 1
        dist = abs(p_to - p_from)
        M, NS = sch.cell_cycle, sch.cell_pos
        a0 = sch.cell(s, p_from, 0)
        B = M + step * NS                 # one slice on, one cycle later
        if n == 1 and not reps:           # (the common case: one element)
            c0 = a0 + land * M
            lands = {c0}
            cells = {c0 + i * B for i in range(dist + 1)}
        else:
            cells, lands = set(), set()
            for r in range(reps + 1):
                c0 = a0 + (land + r * d) * M
                lands.update(range(c0, c0 + n * M, M))
                for i in range(dist + 1):
                    b = c0 + i * B
                    cells.update(range(b, b + n * M, M))
        if not (lands.isdisjoint(sch.cells) and lands.isdisjoint(self.cells) and cells.isdisjoint(sch.landings)
                and cells.isdisjoint(self.plands)):
            self.fail(f"stream {s} path collision")
        self.cells |= cells
        self.plands |= lands
        if cells:
            self.hi = max(self.hi, land + reps * d + n - 1 + dist)

    def acc_write(self, mxm, addr, w, n=1):
        """Accumulator entries addr + k written (MM sample) at cycles w + k, k < n: no read of an entry
        may fall in (write, write + mxm_mm)."""
        self._acc("w", mxm, addr, w, n)

    def acc_read(self, mxm, addr, r, n=1):
        """Accumulator entries addr + k read (MM acc=1, EMIT) at cycles r + k, k < n: no write of an entry
        may fall in (read - mxm_mm, read)."""
        self._acc("r", mxm, addr, r, n)

    def _acc(self, kind, mxm, addr, t, n):
        # Entry addr + k at cycle t + k: every such run lies on the diagonal t - addr, and a write and a
        # read of one entry clash iff their diagonals differ by 1 .. mxm_mm - 1 and their entries meet.
        L = self.sch.L["mxm_mm"]
        diag, hi = t - addr, addr + n - 1
        if self.ok:
            other = "r" if kind == "w" else "w"
            ds = range(diag + 1, diag + L) if kind == "w" else range(diag - L + 1, diag)
            if any(a0 <= hi and addr <= a1 for table in (self.sch.acc[other], self.acc_runs[other])
                   for d in ds for a0, a1 in table.get((mxm, d), ())):
                self.fail(f"accumulator hazard on {(mxm, addr)}..{(mxm, hi)}")
        self.acc.append((kind, (mxm, diag), (addr, hi)))
        self.acc_runs[kind].setdefault((mxm, diag), []).append((addr, hi))

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
        for kind, key, run in self.acc:
            sch.acc[kind].setdefault(key, []).append(run)


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
