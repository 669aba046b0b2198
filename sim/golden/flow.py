"""FastGolden's phase 3: a program's dataflow, built once, then evaluated level by level in numpy.

What every element of a unit instruction reads is decided by the program alone, down to which row
of which instruction: which producer element a stream operand sees (phase 2's segments), which MEM
write a READ element sees (static addresses and commit cycles), which LW rows an MM element
multiplies with, which MM result an accumulator read sees, which LDLUT / LDM / LDPERM loaded the
tables a LUT, REQL or PERM element uses.  Only GATHER and SCATTER addresses come from data.  So
``Flow.build`` walks the instructions once, in chunks (``_Walk``: each instruction runs as far as
its inputs are ready, in the order of its next element's cycle), with *row ids* in place of data:

* every int8 vector of the run is a row of one array ``B`` (the initial MEM / weight / LUT rows the
  run reads, and the results of computing instructions), every int32 accumulator vector a row of ``A``;
* data moves are only ids: a READ returns the id of the row that the last visible WRITE stored (or
  of the bank's initial row), WRITE and LW log ids in versioned stores (``_Store``), MOV forwards its
  input ids, so no data is copied for them when the flow runs; READs that can only see the bank's
  initial rows (no WRITE to their addresses commits by then, as for a layer's weights) get their
  ids before the walk, a bank at a time;
* computing instructions (MM, EMIT, the VXM and SXM ops) become *nodes*: input ids, parameters,
  output ids.  A node's level is 1 + the highest level of its inputs (initial rows: 0);
* an accumulation chain (MM with acc=1 onto an MM result that nothing else reads, as in a K-loop
  over weight tiles) is one sum: its K products side by side in one matmul (``_chain_step``);
* the banks that GATHER or SCATTER touch are *dynamic*: their READs, WRITEs, GATHERs and SCATTERs
  become nodes that log writes and look them up when the flow runs (a read after every logged write
  of its bank, by level); an index out of the bank raises ``FlowError``.

``Flow.run`` copies the initial rows in, evaluates the nodes level by level, all nodes of one level
and kind as one numpy operation (e.g. the 144 MMs of a one-token 384 x 1536 up-projection as one
batched matmul), and writes the final MEM, weight, accumulator, LUT, LDM and PERM state back, in
place, at the end (so a ``FlowError`` leaves the state untouched).  The flow depends on the program
and the configuration only: FastGolden keeps it with the program's cached plan, and a program run
again (the next token of a decode layer, a benchmark repeat) costs only ``Flow.run``.
"""

import heapq
import itertools

import numpy as np

from tinylpu.arith import rshift_round
from tinylpu.isa import INT32_PLANES, Opcode

__all__ = ["KEY", "Flow", "FlowError"]

INF = 1 << 62
KEY = 1 << 32                  # > any cycle: composite keys addr * KEY + cycle
_INIT = 1 << 40                # Store entries >= _INIT: a row's initial content (_INIT + source * _SPAN + row)
_SPAN = 1 << 30


class FlowError(Exception):
    """A data-dependent program error (a GATHER or SCATTER index out of the bank): the run must be
    redone by ``Golden.run``, which reports it.  Raised before any state is written."""


class _Store:
    """A versioned array of ids: ``base`` holds every write committed up to the materialized time,
    the log (appended in commit order by the single writer) the later ones.  LW chunks of several
    streams are only queued (``append_rows``) and logged together when the log is next looked at
    (thousands of small numpy operations saved on a layer's first run)."""
    __slots__ = ("A", "D", "T", "_cat", "_last", "_rows", "base")

    def __init__(self, base):
        self.base = base
        self.T, self.A, self.D = [], [], []
        self._cat = None
        self._rows = []
        self._last = None            # (materialize's work array)

    def append(self, times, addrs, data):
        if self._rows:
            self._flush()
        self.T.append(times)
        self.A.append(addrs)
        self.D.append(data)
        self._cat = None

    def append_rows(self, t0, r0, R, X):
        """An LW chunk: element k of stream j (X[j][k], every stream the same length m) installs
        row r0 + k * R + j, committed at t0 + k."""
        self._rows.append((t0, r0, R, X))
        self._cat = None

    def _flush(self):
        """Log the queued LW chunks, in order: one numpy operation per run of chunks of one shape."""
        q, self._rows = self._rows, []
        if len(q) == 1:                             # (the common case: one chunk, as few operations as can be)
            t0, r0, R, X = q[0]
            nx, m = len(X), len(X[0])
            k = np.arange(m, dtype=np.int64)
            self.T.append(np.repeat(k + t0, nx))
            self.A.append(((k * R + r0)[:, None] + np.arange(nx)).ravel())
            self.D.append(np.array(X).T.ravel())
            return
        i = 0
        while i < len(q):
            _, _, R, X = q[i]
            shape = (R, len(X), len(X[0]))
            j = i + 1
            while j < len(q) and (q[j][2], len(q[j][3]), len(q[j][3][0])) == shape:
                j += 1
            _, nx, m = shape
            grp = q[i:j]
            k = np.arange(m, dtype=np.int64)
            t = np.fromiter((e[0] for e in grp), np.int64, len(grp))
            r = np.fromiter((e[1] for e in grp), np.int64, len(grp))
            data = np.array([e[3] for e in grp], np.int64)            # (chunks, streams, elements)
            self.T.append(np.repeat((t[:, None] + k[None, :]).ravel(), nx))
            self.A.append((r[:, None, None] + (k[:, None] * R + np.arange(nx))[None]).ravel())
            self.D.append(data.transpose(0, 2, 1).ravel())
            i = j

    def _log(self):
        if self._rows:
            self._flush()
        if self._cat is None:
            if len(self.T) == 1:
                self._cat = (self.T[0], self.A[0], self.D[0])
            else:
                self._cat = (np.concatenate(self.T), np.concatenate(self.A), np.concatenate(self.D))
                self.T, self.A, self.D = [self._cat[0]], [self._cat[1]], [self._cat[2]]
        return self._cat

    def materialize(self, upto):
        """Apply every logged write committed at or before `upto` to the base."""
        if self._rows and not self.T and all(c[0] + len(c[3][0]) <= upto + 1 for c in self._rows):
            # only queued LW chunks, all committed by then: straight into the base, in order (the
            # rows of one chunk are distinct)
            base = self.base
            for t0, r0, R, X in self._rows:
                # (stream j, element k) -> row r0 + k * R + j
                rows = np.arange(len(X), dtype=np.int64)[:, None] + (np.arange(len(X[0]), dtype=np.int64) * R + r0)
                base[rows] = np.array(X)
            self._rows = []
            return
        if self._rows:
            self._flush()
        if not self.T:
            return
        T, A, D = self._log()
        i = int(np.searchsorted(T, upto, "right"))
        if i == 0:
            return
        a, d = A[:i], D[:i]
        if i > 1:
            # the last write to each address wins: mark each address with its last write's index
            # (``ufunc.at`` is unbuffered and in order; a plain fancy assignment of repeated indices
            # has no defined order)
            last = self._last
            if last is None:
                last = self._last = np.full(len(self.base), -1, np.int64)
            k = np.arange(i, dtype=np.int64)
            np.maximum.at(last, a, k)
            keep = last[a] == k
            last[a] = -1
            if not keep.all():
                a, d = a[keep], d[keep]
        self.base[a] = d
        if i == len(T):
            self.T, self.A, self.D, self._cat = [], [], [], None
        else:
            self.T, self.A, self.D = [T[i:]], [A[i:]], [D[i:]]
            self._cat = None

    def read(self, addrs, times):
        """Values at `addrs` as seen in cycles `times` (the base must be materialized up to min(times))."""
        v = self.base[addrs]
        if self._rows:
            self._flush()
        if self.T:
            T, A, D = self._log()
            if T[0] <= times[-1]:
                order = np.lexsort((T, A))
                As = A[order]
                key = As * KEY + T[order]
                q = addrs * KEY + times
                pos = np.searchsorted(key, q, "right") - 1
                ok = pos >= 0
                pos0 = np.where(ok, pos, 0)
                ok &= As[pos0] == addrs
                if ok.any():
                    v[ok] = D[order[pos0[ok]]]
        return v

    def split_times(self, lo, hi):
        """Commit times of logged writes in (lo, hi] (each logged piece is in commit order; queued LW
        chunks commit on consecutive cycles from their first)."""
        out = []
        for T in self.T:
            if T[0] <= hi and T[-1] > lo:
                out += T[(T > lo) & (T <= hi)].tolist()
        for t0, _, _, X in self._rows:
            a, b = max(t0, lo + 1), min(t0 + len(X[0]) - 1, hi)
            if a <= b:
                out += range(a, b + 1)
        return sorted(set(out)) if out else out


class _Walk:
    """The chunks of the walk: iterating yields (unit, k0, k1), elements k0..k1-1 of `unit` whose
    inputs are ready (producer elements done, MEM writes, weight installs and accumulator writes that
    they may see); the consumer sets ``unit.out`` (ids) before asking for the next chunk.  Units go in
    the order of their next element's cycle (a heap); since every dependency has a latency >= 1, the
    earliest pending element can always run.  ``frontier(group)`` is the cycle of the group's first
    unfinished element (MEM writes of a slice, LW of a weight buffer, MM, EMIT)."""

    def __init__(self, units, L):
        self.units, self.L = units, L
        groups = {}
        WRITE, SCATTER, LW, MM, EMIT = Opcode.WRITE, Opcode.SCATTER, Opcode.LW, Opcode.MM, Opcode.EMIT
        for u in units:
            op = u.op
            if op is WRITE or op is SCATTER:
                g = ("wr", u.sl)
            elif op is LW:
                g = ("lw", u.sl, u.buf)
            elif op is MM:
                g = ("mm", u.sl)
            elif op is EMIT:
                g = ("emit", u.sl)
            else:
                continue
            e = groups.get(g)
            if e is None:
                groups[g] = [[u], 0]
            else:
                e[0].append(u)
        self.groups = groups
        for u in units:
            u.done = u.ready = 0
            u.out = u.tbuf = None

    def frontier(self, g):
        e = self.groups.get(g)
        if e is None:
            return INF
        lst, i = e
        while i < len(lst) and lst[i].done == lst[i].n:
            i += 1
        e[1] = i
        if i == len(lst):
            return INF
        return lst[i].t + lst[i].done

    def __iter__(self):
        units, L = self.units, self.L
        Lw, Linst, Lmm = L["mem_write"], L["mxm_install"], L["mxm_mm"]
        groups, frontier = self.groups, self.frontier
        heap = [(u.t, u.uid) for u in units if u.done < u.n]      # (some READs are done before the walk)
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            uid = pop(heap)[1]
            u = units[uid]
            k0, n, t, op, sl = u.done, u.n, u.t, u.op, u.sl
            # how far the inputs are ready
            lim = n
            for segs in u.srcs:
                for ka, kb, pid, pl, pka in segs:
                    if kb <= k0:
                        continue
                    if ka >= lim:
                        break
                    e = ka + units[pid].ready - pka
                    if e < kb:
                        e = max(e, ka)
                        lim = min(lim, e)
                        break
            if op is Opcode.READ or op is Opcode.GATHER:
                if ("wr", sl) in groups:
                    lim = min(lim, frontier(("wr", sl)) + Lw - t)
            elif op is Opcode.MM:
                lim = min(lim, frontier(("lw", sl, u.buf)) + Linst - t)
            elif op is Opcode.EMIT:
                lim = min(lim, frontier(("mm", sl)) + Lmm - t)
            if lim <= k0:          # pragma: no cover - cannot happen: every latency is >= 1
                raise RuntimeError("the walk made no progress")
            yield u, k0, lim
            u.done = lim
            if op is Opcode.TRANS:
                u.ready = n if lim == n else 0
            else:
                u.ready = lim
            if lim < n:
                push(heap, (t + lim, uid))


def _operands(units, u, k0, k1, empty):
    """The stream operands of elements k0..k1-1 of `u`: one id array per source (field, plane),
    sliced from the producers' ``out``."""
    X = []
    for segs in u.srcs:
        if len(segs) == 1:
            ka, kb, pid, pl, pka = segs[0]
            s = pka + k0 - ka
            X.append(units[pid].out[s:s + min(k1, kb) - k0, pl])    # (LW: a stream may feed fewer elements)
            continue
        pieces = []
        for ka, kb, pid, pl, pka in segs:
            if kb <= k0:
                continue
            if ka >= k1:
                break
            a = max(k0, ka)
            b = min(k1, kb)
            s = pka + a - ka
            pieces.append(units[pid].out[s:s + b - a, pl])
        X.append(pieces[0] if len(pieces) == 1 else np.concatenate(pieces) if pieces else empty)
    return X


class _Rows:
    """Ids of one row space (``B``: int8 vectors, ``A``: int32 accumulators).  The initial rows a
    run reads get ids on first use (``initial``); ``layout`` renumbers them, per source and in row
    order, to the front, so that a run copies each source's rows in with one ``np.take``."""

    def __init__(self):
        self.n = 0
        self.sources = []           # (kind, key) per initial source
        self.slots = []             # per source: row -> id (-1: not read)
        self._src = {}

    def new(self, count):
        a = self.n
        self.n += count
        return np.arange(a, self.n, dtype=np.int64)

    def source(self, kind, key, depth):
        s = self._src.get((kind, key))
        if s is None:
            s = self._src[(kind, key)] = len(self.sources)
            self.sources.append((kind, key))
            self.slots.append(np.full(depth, -1, np.int64))
        return s

    def initial(self, s, rows):
        """Ids of rows `rows` of initial source `s`."""
        slot = self.slots[s]
        ids = slot[rows]
        new = ids < 0
        if new.any():
            r = rows[new]
            slot[r] = self.new(r.size)             # (a row named twice wastes one id: never read)
            ids = slot[rows]
        return ids

    def resolve(self, ids):
        """Store entries -> ids: entries >= _INIT name initial rows (_INIT + source * _SPAN + row)."""
        init = ids >= _INIT
        if init.any():
            ids = ids.copy()
            v = ids[init] - _INIT
            src, rows = v // _SPAN, v % _SPAN
            s0 = src[0]
            if (src == s0).all():
                ids[init] = self.initial(int(s0), rows)
            else:
                out = np.empty_like(v)
                for s in np.unique(src).tolist():
                    m = src == s
                    out[m] = self.initial(s, rows[m])
                ids[init] = out
        return ids

    def layout(self, used=None):
        """(new id of every id, [(kind, key, rows, first, last + 1)] per initial source, row count):
        initial rows first, then the computed rows (only the `used` ones, if given: the others get
        an id past the end, which no step may index)."""
        new = np.full(self.n, -1, np.int64)
        gathers, pos = [], 0
        for (kind, key), slot in zip(self.sources, self.slots):
            rows = np.flatnonzero(slot >= 0)
            if rows.size:
                new[slot[rows]] = np.arange(pos, pos + rows.size)
                gathers.append((kind, key, rows, pos, pos + rows.size))
                pos += rows.size
        rest = new < 0
        if used is not None:
            keep = rest & used
            new[rest & ~used] = 1 << 40
            rest = keep
        rest = np.flatnonzero(rest)
        new[rest] = np.arange(pos, pos + rest.size)
        return new, gathers, pos + rest.size


_SCRATCH = [np.empty((0, 0), np.int8), np.empty((0, 0), np.int64), np.empty((0, 0), np.int8),
            np.empty((0, 0), np.float32)]


def _scratch(i, rows, lanes, dtype):
    """A (rows, lanes) work array, reused from run to run: fresh memory costs a page fault per page
    on first touch, as much as the rest of a small run.  (``Flow.run`` is not reentrant, and copies
    everything it leaves behind out of these arrays.)"""
    buf = _SCRATCH[i]
    if buf.shape[1] != lanes or buf.shape[0] < rows or buf.dtype != dtype:
        buf = _SCRATCH[i] = np.empty((max(rows, 2 * buf.shape[0] if buf.shape[1] == lanes else 0), lanes), dtype)
    return buf[:rows]


def _take(rows, ids):
    """``rows[ids]`` for an integer id array: ``np.take`` gathers whole rows several times faster
    than fancy indexing (measured: 35 vs 160 us for 9,216 64-byte rows)."""
    return rows.take(ids, axis=0)


def _int32(planes):
    """(m, 4, lanes) int8 planes, least significant first -> (m, lanes) int32."""
    u = planes[:, 3, :].astype(np.int32)             # (the top byte, sign-extended)
    for b in (2, 1, 0):
        u <<= 8
        u |= planes[:, b, :].view(np.uint8)
    return u


def _requantize(acc, m, sh, z=0):
    """``tinylpu.arith.requantize`` (sat8(rshift_round(acc * m, min(sh, 62)) + z)) in place on one
    int64 array; m, sh, z broadcast against acc (per row or per lane)."""
    sh = np.minimum(np.asarray(sh, np.int64), 62)
    bias = np.where(sh > 0, np.left_shift(np.int64(1), np.maximum(sh - 1, 0)), 0)
    p = acc.astype(np.int64)
    p *= m
    p += bias
    p >>= sh
    p += z
    return _sat8(p)


def _planes(v):
    """int32-valued (m, lanes) -> (m, 4, lanes) int8 planes, least significant first."""
    m, lanes = v.shape
    return v.astype("<i4").view(np.int8).reshape(m, lanes, INT32_PLANES).transpose(0, 2, 1)


class _Builder:
    """``Flow.build``'s working state: the row spaces, the versioned stores of ids, the register
    state, and the nodes in creation order (a topological order: inputs exist before their readers)."""

    def __init__(self, g, units, link=None):
        cfg = g.cfg
        self.g, self.units, self.cfg, self.L, self.lanes, self.R = g, units, cfg, g.L, g.lanes, cfg.install_rows
        self.lut_rows = 256 // self.lanes
        self.B, self.A = _Rows(), _Rows()
        # nodes: (kind, payload, B inputs, A inputs, B outputs, A outputs)
        self.nodes = []
        self.mm = []                                 # MM nodes: (xs, W, ai, o)
        self.mems, self.wts, self.accs = {}, {}, {}  # versioned stores of ids (entries >= _INIT: initial rows)
        self.luts, self.regs, self.perms = {}, {}, {}  # slice -> LUT row ids / LDM row ids (-1: initial) / LDPERM id
        # banks with GATHER or SCATTER: their accesses are resolved at run time, in a log per bank
        GATHER, SCATTER = Opcode.GATHER, Opcode.SCATTER
        self.dyn = {u.sl for u in units if u.op is GATHER or u.op is SCATTER}
        # C2C (a tray's flow: slices are (chip, name)): RECV element j of a port gets the vector
        # that SEND element j of its peer port sampled, by id; link: (chip, port) -> peer (chip, port)
        self.link = link
        self.sent = {}                               # (chip, port) -> {SEND element index: id}

    def node(self, kind, payload, bins, bout=None, ains=(), aout=None):
        self.nodes.append((kind, payload, bins, ains, bout, aout))

    def walk(self):
        B, A, cfg, L, lanes, R, units = self.B, self.A, self.cfg, self.L, self.lanes, self.R, self.units
        Lw, Linst, Lmm = L["mem_write"], L["mxm_install"], L["mxm_mm"]
        walker = _Walk(units, L)
        frontier = walker.frontier
        mems, wts, accs = self.mems, self.wts, self.accs
        for grp in walker.groups:
            if grp[0] == "wr" and grp[1] not in self.dyn:
                s = B.source("mem", grp[1], cfg.mem_depth)
                mems[grp[1]] = _Store(np.arange(cfg.mem_depth, dtype=np.int64) + (_INIT + s * _SPAN))
            elif grp[0] == "lw":
                s = B.source("w", (grp[1], grp[2]), lanes)
                wts[(grp[1], grp[2])] = _Store(np.arange(lanes, dtype=np.int64) + (_INIT + s * _SPAN))
            elif grp[0] == "mm":
                s = A.source("acc", grp[1], cfg.acc_depth)
                accs[grp[1]] = _Store(np.arange(cfg.acc_depth, dtype=np.int64) + (_INIT + s * _SPAN))
        ar = np.arange(max([u.n for u in units] + [R], default=1) + 1, dtype=np.int64)
        empty = np.empty(0, np.int64)
        dyn = self.dyn
        static = {sl: B.source("mem", sl, cfg.mem_depth) for sl in {u.sl for u in units if u.op is Opcode.READ}
                  if sl not in mems and sl not in dyn}     # banks only read: initial rows
        self.initial_reads(Lw)
        for u, k0, k1 in walker:
            op, t, n, sl, f = u.op, u.t, u.n, u.sl, u.f
            m = k1 - k0
            res = None                               # output ids (m, planes) or (m,)
            X = _operands(units, u, k0, k1, empty) if u.srcs else ()
            if op is Opcode.READ and sl in static:
                res = B.initial(static[sl], ar[k0:k1] * f["stride"] + f["addr"])
            elif sl in dyn and (op is Opcode.READ or op is Opcode.GATHER):
                res = B.new(m)
                if op is Opcode.READ:
                    addr, ix = ar[k0:k1] * f["stride"] + f["addr"], None
                else:
                    addr, ix = None, X[0]
                self.node(("dread", sl), (ar[k0:k1] + t, addr, ix, f["addr"], res),
                          (ix,) if ix is not None else (), res)
            elif sl in dyn:                         # WRITE, SCATTER
                if op is Opcode.WRITE:
                    addr, ix = ar[k0:k1] * f["stride"] + f["addr"], None
                else:
                    addr, ix = None, X[1]
                data = X[0]
                self.node(("dwrite", sl), (ar[k0:k1] + (t + Lw), addr, ix, f["addr"], data),
                          (data,) if ix is None else (data, ix))
            elif op is Opcode.READ:                  # a bank with WRITEs: the last one committed
                st = mems[sl]
                st.materialize(t + k0)
                res = B.resolve(st.read(ar[k0:k1] * f["stride"] + f["addr"], ar[k0:k1] + t))
            elif op is Opcode.WRITE:
                mems[sl].append(ar[k0:k1] + (t + Lw), ar[k0:k1] * f["stride"] + f["addr"], X[0].copy())
            elif op is Opcode.LW:
                R = u.rpe                            # (rows per element: install_rows, or fewer, fast.py)
                st = wts[(sl, u.buf)]
                if len(X) == 1:
                    st.append(ar[k0:k1] + (t + Linst), ar[k0:k1] * R + f["addr"], X[0].copy())
                elif m == 1 and (k0 + 1) * R <= f["count"]:   # one element, every stream: rows k0*R + j
                    st.append(np.full(R, t + k0 + Linst), ar[:R] + (k0 * R + f["addr"]), np.concatenate(X))
                else:
                    # rows k*R + j in (element, stream) order: commit times stay sorted
                    nx = len(X)
                    if all(len(x) == m for x in X):
                        st.append_rows(t + k0 + Linst, k0 * R + f["addr"], R, X)
                    else:
                        rows = ar[k0:k1, None] * R + np.arange(nx)[None, :]
                        times = np.repeat(ar[k0:k1] + (t + Linst), nx)
                        ok = rows < f["count"]
                        data = np.full((m, len(X)), -1, np.int64)
                        for j, x in enumerate(X):
                            data[:len(x), j] = x
                        st.append(times[ok.ravel()], rows[ok] + f["addr"], data[ok])
            elif op is Opcode.MM:
                st = wts.get((sl, u.buf))
                x = X[0]
                if st is None:
                    cuts = [k1]
                else:
                    cuts = [c - t for c in st.split_times(t + k0, t + k1 - 1)] + [k1]
                addr = ar[k0:k1] + f["addr"]
                C = ar[k0:k1] + t
                acc = accs[sl]
                ain = None
                if f["acc"]:
                    acc.materialize(min(t + k0, frontier(("emit", sl))))
                    ain = A.resolve(acc.read(addr, C))
                out = A.new(m)
                a = k0
                for b in cuts:
                    if b <= a:
                        continue
                    if st is None:
                        W = B.initial(B.source("w", (sl, u.buf), lanes), ar[:lanes])
                    else:
                        st.materialize(t + a)
                        W = B.resolve(st.base.copy())
                    self.mm.append((x[a - k0:b - k0], W, None if ain is None else ain[a - k0:b - k0],
                                    out[a - k0:b - k0]))
                    self.nodes.append(("mm", len(self.mm) - 1))
                    a = b
                acc.append(C + Lmm, addr, out)
            elif op is Opcode.EMIT:
                addr = ar[k0:k1] + f["addr"]
                acc = accs.get(sl)
                if acc is None:
                    ids = A.initial(A.source("acc", sl, cfg.acc_depth), addr)
                else:
                    acc.materialize(min(t + k0, frontier(("mm", sl))))
                    ids = A.resolve(acc.read(addr, ar[k0:k1] + t))
                res = B.new(m * INT32_PLANES).reshape(m, INT32_PLANES)
                self.node(("emit",), (ids, res), (), res, (ids,))
            elif op is Opcode.SEND:
                self.sent.setdefault((sl[0], u.port[0]), {})[u.port[1]] = int(X[0][0])
            elif op is Opcode.RECV:                  # (the SEND, at an earlier cycle, is walked already)
                res = np.array([self.sent[self.link[(sl[0], u.port[0])]][u.port[1]]], np.int64)
            elif u.sub == "alu":
                res = self.vxm(u, f, op, X, m, k0)
            else:
                res = self.sxm(u, f, op, X, m, k0, k1)
            if res is not None:
                if res.ndim == 1:
                    res = res[:, None]
                if op is Opcode.TRANS or (k0 == 0 and k1 == n):
                    u.out = res
                else:
                    if u.out is None:
                        u.out = np.full((n, u.planes), -1, np.int64)
                    u.out[k0:k1] = res

    def initial_reads(self, Lw):
        """The READs (of banks without GATHER / SCATTER) whose every element sees only the bank's
        initial rows (no WRITE to its address commits by its cycle), done before the walk: their ids,
        all of a bank at once (a layer's weight reads: thousands of walk chunks saved)."""
        B, depth = self.B, self.cfg.mem_depth
        reads, writes = {}, {}
        for u in self.units:
            if u.op is Opcode.READ and u.sl not in self.dyn:
                reads.setdefault(u.sl, []).append(u)
            elif u.op is Opcode.WRITE and u.sl not in self.dyn:
                writes.setdefault(u.sl, []).append(u)
        for sl, us in reads.items():
            if len(us) < 8:
                continue                            # (a few: cheaper in the walk)
            sizes = np.fromiter((u.n for u in us), np.int64, len(us))
            start = np.cumsum(sizes) - sizes
            k = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(start, sizes)      # element index
            a0 = np.fromiter((u.f["addr"] for u in us), np.int64, len(us))
            st = np.fromiter((u.f["stride"] for u in us), np.int64, len(us))
            addr = np.repeat(a0, sizes) + k * np.repeat(st, sizes)
            ws = writes.get(sl)
            if ws:
                # the first commit to each address; an element at cycle c sees the initial row iff it is > c
                wsz = np.fromiter((u.n for u in ws), np.int64, len(ws))
                wk = np.arange(int(wsz.sum()), dtype=np.int64) - np.repeat(np.cumsum(wsz) - wsz, wsz)
                wa = (np.repeat(np.fromiter((u.f["addr"] for u in ws), np.int64, len(ws)), wsz)
                      + wk * np.repeat(np.fromiter((u.f["stride"] for u in ws), np.int64, len(ws)), wsz))
                wc = np.repeat(np.fromiter((u.t for u in ws), np.int64, len(ws)), wsz) + wk + Lw
                first = np.full(depth, INF, np.int64)
                np.minimum.at(first, wa, wc)
                cyc = np.repeat(np.fromiter((u.t for u in us), np.int64, len(us)), sizes) + k
                ok = np.logical_and.reduceat(first[addr] > cyc, start)
                if not ok.any():
                    continue
                sel = np.repeat(ok, sizes)
                addr, sizes, us = addr[sel], sizes[ok], [u for u, o in zip(us, ok.tolist()) if o]
            ids = B.initial(B.source("mem", sl, depth), addr)[:, None]
            a = 0
            for u, b in zip(us, np.cumsum(sizes).tolist()):
                u.out = ids[a:b]
                u.done = u.ready = u.n
                a = b

    def vxm(self, u, f, op, X, m, k0):
        B, sl = self.B, u.sl
        if op is Opcode.LDM:
            r = self.regs.get(sl)
            if r is None:
                r = self.regs[sl] = [-1, -1, -1, -1]
            for j in range(m):
                r[min(k0 + j, 3)] = int(X[0][j])
            return None
        if op is Opcode.LDLUT:
            t = self.luts.get(sl)
            if t is None:
                t = self.luts[sl] = B.initial(B.source("lut", sl, self.lut_rows), np.arange(self.lut_rows))
            t[f["imm"] + k0:f["imm"] + k0 + m] = X[0]
            return None
        if op is Opcode.MOV:
            return X[0]
        if op is Opcode.ADD32:
            a, b = np.stack(X[0:INT32_PLANES], axis=1), np.stack(X[INT32_PLANES:], axis=1)
            out = B.new(m * INT32_PLANES).reshape(m, INT32_PLANES)
            self.node(("add32",), (a, b, out), (a, b), out)
            return out
        if op is Opcode.REQ:
            a = np.stack(X[0:INT32_PLANES], axis=1)
            out = B.new(m)
            self.node(("req",), (a, f["imm"], f["sh"], out), (a,), out)
            return out
        if op is Opcode.REQL:
            a = np.stack(X[0:INT32_PLANES], axis=1)
            r = tuple(self.regs.get(sl, (-1, -1, -1, -1)))
            out = B.new(m)
            self.node(("reql",), (a, sl, r, out), (a, np.array([i for i in r if i >= 0], np.int64)), out)
            return out
        if op is Opcode.LUT:
            t = self.luts.get(sl)
            tab = B.initial(B.source("lut", sl, self.lut_rows), np.arange(self.lut_rows)) if t is None else t.copy()
            out = B.new(m)
            self.node(("lut",), (X[0], tab, out), (X[0], tab), out)
            return out
        # element-wise int8 ops: a [, b | immediate [, c]]
        a = X[0]
        b = X[1] if len(X) > 1 else None
        c = X[2] if len(X) > 2 else None
        imm = f["imm"] if f.get("use_imm") else None
        out = B.new(m)
        self.node(("ew", op, imm is not None), (a, b, c, imm, f.get("sh", 0), out), X, out)
        return out

    def sxm(self, u, f, op, X, m, k0, k1):
        B, lanes = self.B, self.lanes
        x = X[0]
        if op is Opcode.LDPERM:
            self.perms[u.sl] = int(x[-1])
            return None
        if op is Opcode.TRANS:
            if u.tbuf is None:
                u.tbuf = np.full(lanes, -1, np.int64)
            u.tbuf[k0:k1] = x
            if k1 < u.n:
                return None
            out = B.new(lanes)
            self.node(("trans",), (u.tbuf, out), (u.tbuf,), out)
            return out
        out = B.new(m)
        if op is Opcode.PERM:
            p = self.perms.get(u.sl, -1)
            self.node(("perm",), (x, u.sl, p, out), (x, np.array([p] if p >= 0 else [], np.int64)), out)
            return out
        j = np.arange(lanes)
        imm = f["imm"]
        if op is Opcode.SHIFT:
            src = j - imm
            ok = (src >= 0) & (src < lanes)
            src = np.clip(src, 0, lanes - 1)
        elif op is Opcode.ROT:
            src, ok = (j - imm) % lanes, None
        elif op is Opcode.DIST:
            src, ok = np.full(lanes, imm), None
        else:                                        # pragma: no cover - every SXM op is handled
            raise AssertionError(op)
        self.node(("lanes",), (x, src, ok, out), (x,), out)
        return out

    def finals(self):
        """What the run leaves in MEM, weights, accumulators, LUTs, LDM and PERM registers."""
        out = []
        for kind, stores in (("mem", self.mems), ("w", self.wts), ("acc", self.accs)):
            for key, st in stores.items():
                st.materialize(INF)
                rows = np.flatnonzero(st.base < _INIT)
                if rows.size:
                    out.append((kind, key, rows, st.base[rows]))
        for name in self.dyn:
            out.append(("dmem", name, None, None))
        for name, ids in self.luts.items():
            out.append(("lut", name, None, ids))
        for name, r in self.regs.items():
            out.append(("ldm", name, None, r))
        for name, i in self.perms.items():
            out.append(("perm", name, None, i))
        return out

    def fuse(self, finals):
        """Accumulation chains -> one sum: an accumulator row that only the next MM of a chain reads
        (not EMIT, not left in the final state) is never formed; the chain's last row is the sum of
        every element's x @ W plus the chain's first accumulator input (int32 wraps are additive).
        Returns per MM element (in node order) its chain's root element, the root's base (accumulator
        id or -1) and the elements' first index per MM node."""
        mm, na = self.mm, self.A.n
        if not mm:
            return None
        sizes = np.array([len(p[0]) for p in mm])
        first = np.concatenate([[0], np.cumsum(sizes)])
        E = int(first[-1])
        e_out = np.concatenate([p[3] for p in mm])
        e_ain = np.concatenate([p[2] if p[2] is not None else np.full(len(p[0]), -1, np.int64) for p in mm])
        reads = [e_ain[e_ain >= 0]]
        reads += [p[0] for kind, p, *_ in self.nodes if kind[0] == "emit"]
        reads += [ids for kind, _, _, ids in finals if kind == "acc"]
        count = np.bincount(np.concatenate(reads), minlength=na) if reads else np.zeros(na, np.int64)
        prod = np.full(na, -1, np.int64)
        prod[e_out] = np.arange(E)
        has = e_ain >= 0
        src = np.where(has, e_ain, 0)
        private = has & (count[src] == 1) & (prod[src] >= 0)
        nxt = np.full(E, -1, np.int64)
        nxt[prod[e_ain[private]]] = np.flatnonzero(private)
        root = np.where(nxt >= 0, nxt, np.arange(E))   # follow the chains to their last element,
        while True:                                     # doubling the jump each round
            far = root[root]
            if (far == root).all():
                break
            root = far
        base = np.full(E, -1, np.int64)
        heads = ~private
        base[root[heads]] = e_ain[heads]
        return root, base, first, e_out

    def _mm_levels(self, ids, levA, levB, chain, fused):
        """``levels`` for the MM nodes `ids` (consecutive in node order) together, as the loop would one by
        one; False (nothing done) when a chain base among them is a chain root of another of them."""
        root, base, first, _ = fused
        mm = self.mm
        e0, e1 = int(first[ids[0]]), int(first[ids[-1] + 1])
        r = root[e0:e1]
        isroot = r == np.arange(e0, e1)
        o = np.concatenate([mm[i][3] for i in ids])
        b = base[e0:e1]
        hasb = b >= 0
        if hasb.any() and isroot.any() and np.isin(b[hasb], o[isroot]).any():
            return False
        sizes = first[np.array(ids) + 1] - first[np.array(ids)]
        lt = levB[np.concatenate([mm[i][0] for i in ids])] + 1
        wl = levB[np.stack([mm[i][1] for i in ids])].max(axis=1) + 1
        np.maximum(lt, np.repeat(wl, sizes), out=lt)
        if hasb.any():
            np.maximum(lt, np.where(hasb, levA[np.maximum(b, 0)] + 1, 0), out=lt)
        np.maximum.at(chain, r, lt)
        if isroot.any():
            levA[o[isroot]] = chain[r[isroot]]
        return True

    def levels(self, fused):
        """Level of every node (1 + its inputs' highest; initial rows: 0) -> {(level, kind): [payload]}.
        MM elements join their chain root's level."""
        levB = np.zeros(self.B.n, np.int32)
        levA = np.zeros(self.A.n, np.int32)
        groups = {}
        banklev = {}                                 # dynamic bank -> highest level of its logged writes so far
        if fused is not None:
            root, base, first, _ = fused
            chain = np.zeros(len(root), np.int32)
            tlev = []
        nodes = self.nodes
        batch_end = single_end = -1
        for ni, nd in enumerate(nodes):
            kind = nd[0]
            if kind == "mm":
                if ni <= batch_end:
                    continue
                if ni > single_end:
                    # a run of MM nodes at once, unless one of them adds to a chain root of another
                    j = ni
                    while j + 1 < len(nodes) and nodes[j + 1][0] == "mm":
                        j += 1
                    run = [nodes[x][1] for x in range(ni, j + 1)]
                    if len(run) >= 3 and self._mm_levels(run, levA, levB, chain, fused):
                        tlev += run
                        batch_end = j
                        continue
                    single_end = j
            if kind == "mm":
                i = nd[1]
                xs, W, _, o = self.mm[i]
                e0, e1 = first[i], first[i + 1]
                lt = levB[xs] + 1
                np.maximum(lt, levB[W].max() + 1, out=lt)
                b = base[e0:e1]
                if (b >= 0).any():
                    np.maximum(lt, np.where(b >= 0, levA[np.maximum(b, 0)] + 1, 0), out=lt)
                r = root[e0:e1]
                np.maximum.at(chain, r, lt)
                isroot = r == np.arange(e0, e1)
                if isroot.any():
                    levA[o[isroot]] = chain[r[isroot]]
                tlev.append(i)
                continue
            _, payload, bins, ains, bout, aout = nd
            lev = 1
            for x in bins:
                if x is not None and x.size:
                    lev = max(lev, int(levB[x].max()) + 1)
            for x in ains:
                if x.size:
                    lev = max(lev, int(levA[x].max()) + 1)
            if kind[0] == "dread":                   # after every logged write of its bank
                lev = max(lev, banklev.get(kind[1], 0) + 1)
            elif kind[0] == "dwrite":
                banklev[kind[1]] = max(banklev.get(kind[1], 0), lev)
            if bout is not None:
                levB[bout] = lev
            if aout is not None:
                levA[aout] = lev
            lst = groups.get((lev, kind))
            if lst is None:
                groups[(lev, kind)] = [payload]
            else:
                lst.append(payload)
        if fused is not None:
            # each MM element is computed at its chain's level (its root's, which is >= its own)
            for i in tlev:
                xs, W, _, _ = self.mm[i]
                e0, e1 = first[i], first[i + 1]
                r = root[e0:e1]
                lr = chain[r]
                for lev in ([int(lr[0])] if lr.min() == lr.max() else np.unique(lr).tolist()):
                    sel = np.flatnonzero(lr == lev)
                    if len(sel) == len(r):
                        part = (xs, W, r)
                    else:
                        part = (xs[sel], W, r[sel])
                    lst = groups.get((lev, ("mm",)))
                    if lst is None:
                        groups[(lev, ("mm",))] = [part]
                    else:
                        lst.append(part)
        return groups


class Flow:
    """A program's dataflow (see the module docstring): ``build`` once, ``run`` per run."""

    def __init__(self, nb, na, gathers_b, gathers_a, steps, finals):
        self.nb, self.na = nb, na
        self.gathers_b, self.gathers_a = gathers_b, gathers_a
        # (each B gather with its first and last row + 1, taken once here)
        self.gathers_b_span = [(kind, key, rows, a, b, int(rows[0]), int(rows[-1]) + 1)
                               for kind, key, rows, a, b in gathers_b]
        self.steps, self.finals = steps, finals
        # a matmul of more than a few rows at once: worth running with one BLAS thread (fast.py)
        self.blas = any(_mm_rows(st) > 8 for st in steps if st[0] in ("mm", "mmc"))
        # per final state entry of MEM, weights or accumulators, how a committing run writes it: its
        # rows and ids as slices where they are contiguous, and the bank rows it needs (a small run's
        # final state is a few rows: a fancy index and a max per entry cost as much as its data)
        self.direct = [(_sel(rows), _sel(ids), int(rows[-1]) + 1) if kind in ("mem", "w", "acc") else None
                       for kind, _, rows, ids in finals]

    # --- build ------------------------------------------------------------------------------------
    @classmethod
    def build(cls, g, units, link=None):
        """The flow of `units` (phase 2 done) on model `g`'s configuration; ``link`` for a tray's units
        (see ``_Builder``)."""
        bld = _Builder(g, units, link)
        bld.walk()
        finals = bld.finals()
        fused = bld.fuse(finals)
        groups = bld.levels(fused)
        newB, gathers_b, nb = bld.B.layout()
        # accumulator rows that exist: chain roots and what EMIT, chain bases and the final state read
        used = np.zeros(bld.A.n, bool)
        if fused is not None:
            root, base = fused[0], fused[1]
            used[fused[3][root]] = True                # (repeats: the same True)
            used[base[base >= 0]] = True
        for nd in bld.nodes:
            if nd[0][0] == "emit":
                used[nd[1][0]] = True
        for kind, _, _, ids in finals:
            if kind == "acc":
                used[ids] = True
        newA, gathers_a, na = bld.A.layout(used)
        steps = [_step(kind, lst, g.lanes, newB, newA, fused)
                 for (lev, kind), lst in sorted(groups.items(), key=lambda kv: kv[0][0])]
        remapped = []
        for kind, key, rows, ids in finals:
            if kind == "ldm":
                ids = tuple(int(newB[i]) if i >= 0 else -1 for i in ids)
            elif kind == "perm":
                ids = int(newB[ids])
            elif kind == "acc":
                ids = newA[ids]
            elif kind != "dmem":
                ids = newB[ids]
            remapped.append((kind, key, rows, ids))
        return cls(nb, na, gathers_b, gathers_a, steps, remapped)

    # --- run --------------------------------------------------------------------------------------
    def run(self, g, commit=True):
        """Evaluate the flow on model `g`'s state (read first, written last: the final state, unless
        ``commit`` is false).  ``g``: a model, or for a tray's flow a view of its chips' state
        keyed by (chip, name) (``sim/golden/fasttray.py``).  Returns the final state for ``commit``."""
        lanes = g.lanes
        B = _scratch(0, self.nb, lanes, np.int8)
        A = _scratch(1, self.na, lanes, np.int64)
        for kind, key, rows, a, b, lo, hi in self.gathers_b_span:
            if kind == "mem":
                src = g.mem.rows(key, hi)
            elif kind == "w":
                src = g.weights[key[0]][key[1]]
            else:
                src = g.lut[key].reshape(-1, lanes)
            if hi - lo == b - a:                     # (rows sorted, distinct: a contiguous run)
                B[a:b] = src[lo:hi]
            else:
                np.take(src, rows, axis=0, out=B[a:b])
        for kind, key, rows, a, b in self.gathers_a:
            A[a:b] = g.acc[key][rows]
        logs = {}                                    # dynamic bank -> [(commit times, addresses, data ids)]
        depth = g.cfg.mem_depth
        for st in self.steps:
            k = st[0]
            if k == "dwrite" or k == "dread":
                _, bank, T, addr, dyn, ids = st
                if dyn is not None:                      # GATHER / SCATTER: index bytes 0, 1 + base
                    mask, ix, base = dyn
                    if len(ix) <= _SMALL_DYN:            # (a few: the arithmetic on Python ints)
                        a = [hi * 256 + lo + b for (lo, hi), b in zip(B[ix, :2].view(np.uint8).tolist(),
                                                                     base.tolist())]
                        if max(a) >= depth:
                            raise FlowError
                    else:
                        v = B[ix].view(np.uint8)
                        a = v[:, 1].astype(np.int64) * 256 + v[:, 0] + base
                        if a.max() >= depth:
                            raise FlowError
                    addr = addr.copy()
                    addr[mask] = a
                if k == "dwrite":
                    logs.setdefault(bank, []).append((T, addr, ids))
                else:
                    _dread(g, B, logs.get(bank), bank, T, addr, ids)
            elif k == "mm":
                _, x, W, pad, reduce, out, base_pos, base_ids = st
                ft = _mm_float(lanes)
                X = _take(B, x).astype(ft)                     # (|x @ W| <= lanes * 2^14: exact, see _mm_float)
                Wf = _weights(B, W, lanes)
                if len(W) == 1:
                    P = X @ Wf[0]
                elif pad is None:
                    P = np.matmul(X[:, None, :], Wf)[:, 0, :]
                elif pad == "even":
                    P = np.matmul(X.reshape(len(W), -1, lanes), Wf).reshape(-1, lanes)
                else:
                    gi, pi, M = pad
                    Xp = np.zeros((len(W), M, lanes), ft)
                    Xp[gi, pi] = X
                    P = np.matmul(Xp, Wf)[gi, pi]
                if reduce is None:
                    y = P.astype(np.int64)
                elif reduce[0] == "even":                 # every root has the same number of products
                    y = P[reduce[1]].astype(np.int64).reshape(-1, reduce[2], lanes).sum(axis=1)
                else:
                    _, order, ends = reduce
                    c = np.cumsum(P[order].astype(np.int64), axis=0)[ends]
                    c[1:] -= c[:-1].copy()
                    y = c
                if base_pos is not None:
                    y[base_pos] += _take(A, base_ids)
                A[out] = y.astype(np.int32)
            elif k == "mmc":
                y = _chain_mm(B, st, lanes)
                if st[5] is not None:
                    y[st[5]] += A[st[6]]
                A[st[4]] = y.astype(np.int32)
            elif k == "emit":
                B[st[2]] = _planes(_take(A, st[1]))
            elif k == "ew":
                B[st[7]] = _ew(st, B)
            elif k == "req":
                B[st[4]] = _requantize(_int32(_take(B, st[1])), st[2], st[3])
            elif k == "reql":
                _, a, parts, out = st
                if parts[0] is None:                    # one register state: (lanes,) vectors
                    ms, shs, zs = _ldm_state(g, B, parts[1], parts[2])
                elif parts[0] == "rows":                # (m, sh, z) per part from its LDM rows
                    _, lo, hi, sh, z, sizes = parts
                    ms = (B[lo].view(np.uint8).astype(np.uint16) | (B[hi].view(np.uint8).astype(np.uint16) << 8))
                    ms, shs, zs = ms.view(np.int16), B[sh].view(np.uint8).astype(np.int64) & 63, B[z]
                    if sizes is not None:
                        ms, shs, zs = (np.repeat(v, sizes, axis=0) for v in (ms, shs, zs))
                else:
                    ms, shs, zs = [], [], []
                    for size, sl, r in parts:
                        mm, sh, z = _ldm_state(g, B, sl, r)
                        ms.append(np.broadcast_to(mm, (size, lanes)))
                        shs.append(np.broadcast_to(sh, (size, lanes)))
                        zs.append(np.broadcast_to(z, (size, lanes)))
                    ms, shs, zs = np.concatenate(ms), np.concatenate(shs), np.concatenate(zs)
                B[out] = _requantize(_int32(_take(B, a)), ms, shs, zs)
            elif k == "lut":
                _, a, tabs, gi, out = st
                T = B[tabs].reshape(len(tabs), -1)
                xa = _take(B, a).view(np.uint8)
                B[out] = T[0][xa] if gi is None else T[gi[:, None], xa]
            elif k == "add32":
                _, a, b, out = st
                s = _int32(_take(B, a)).astype(np.int64) + _int32(_take(B, b))
                B[out] = _planes((s & 0xFFFFFFFF).astype(np.uint32).view(np.int32))
            elif k == "lanes":
                _, x, rows, src, ok, out = st
                r = _take(B, x)[rows, src]
                B[out] = r if ok is None else np.where(ok, r, 0)
            elif k == "perm":
                _, x, parts, out = st
                p = np.concatenate([np.broadcast_to(_perm(g, B, sl, i), (size, lanes)) for size, sl, i in parts])
                B[out] = _take(B, x)[np.arange(len(x))[:, None], p]
            else:                                      # trans
                B[st[2]] = _take(B, st[1]).transpose(0, 2, 1)
        # the final state (copied out of the scratch rows: written now, or by ``commit``); a
        # committing run writes MEM, weights and accumulators at once (nothing after this reads them)
        writes, regs = [], []
        for (kind, key, rows, ids), direct in zip(self.finals, self.direct):
            if direct is not None:
                if commit:
                    rsel, isel, hi = direct
                    if kind == "mem":
                        dst, src = g.mem.rows(key, hi), B
                    elif kind == "w":
                        dst, src = g.weights[key[0]][key[1]], B
                    else:
                        dst, src = g.acc[key], A
                    dst[rsel] = src[isel] if isel.__class__ is slice else src.take(isel, axis=0)
                else:
                    writes.append((kind, key, rows, _take(A if kind == "acc" else B, ids)))
            elif kind == "ldm":
                regs.append((kind, key, _ldm_state(g, B, key, ids)))
            elif kind == "perm":
                regs.append((kind, key, _perm(g, B, key, ids)))
            elif kind == "lut":
                regs.append((kind, key, _take(B, ids).reshape(-1)))
            else:                                      # dmem
                log = logs.get(key)
                if log:
                    writes.append(("mem", key, *_last_writes(log, B)))
        pending = (writes, regs)
        if commit:
            Flow.commit(g, pending)
        return pending

    @staticmethod
    def commit(g, pending):
        """Write a run's final state (``run(..., commit=False)``'s second result) into model `g`, in
        place (callers may hold the arrays)."""
        writes, regs = pending
        for kind, key, rows, v in writes:
            if kind == "mem":
                g.mem.rows(key, int(rows.max()) + 1)[rows] = v
            elif kind == "w":
                g.weights[key[0]][key[1]][rows] = v
            else:
                g.acc[key][rows] = v
        for kind, key, v in regs:
            if kind == "ldm":
                g.req_m[key][...], g.req_sh[key][...], g.req_z[key][...] = v
            elif kind == "perm":
                g.perm[key][...] = v
            else:
                g.lut[key][...] = v


def _step(kind, lst, lanes, rb, ra, fused):
    """One numpy operation's worth of nodes (one level, one kind): concatenated ids (renumbered by
    `rb` / `ra`) and parameters."""
    k = kind[0]
    if k == "mm":
        # parts (x ids, W ids, chain root element per x): the products, summed per root
        _, base, _, e_out = fused
        x = rb[np.concatenate([p[0] for p in lst])]
        W = rb[np.stack([p[1] for p in lst])]
        sizes = np.array([len(p[0]) for p in lst])
        tgt = np.concatenate([p[2] for p in lst])
        # (np.unique(tgt, return_inverse=True) by counting: the roots are element indices, no sort)
        per = np.bincount(tgt)
        has = per > 0
        roots = np.flatnonzero(has)
        inv = (np.cumsum(has) - 1)[tgt]
        reduce = None
        if len(roots) < len(tgt):
            order = np.argsort(inv, kind="stable")
            counts = np.bincount(inv)
            if (counts == counts[0]).all():
                return _chain_step(x, W, np.repeat(np.arange(len(lst)), sizes), order, int(counts[0]), roots, lanes,
                                   ra, fused)
            reduce = ("sums", order, np.cumsum(counts) - 1)
        else:
            roots = tgt                              # (one product per root: in product order)
        out = ra[e_out[roots]]
        b = base[roots]
        has = b >= 0
        base_pos = np.flatnonzero(has) if has.any() else None
        base_ids = ra[b[has]] if has.any() else None
        pad = None
        if len(lst) > 1 and (sizes == sizes[0]).all():
            pad = None if sizes[0] == 1 else "even"
        elif len(lst) > 1:
            gi = np.repeat(np.arange(len(lst)), sizes)
            pi = np.arange(len(x)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
            pad = (gi, pi, int(sizes.max()))
        return ("mm", x, W, pad, reduce, out, base_pos, base_ids)
    if k in ("dread", "dwrite"):
        # (times, static addresses | None, index ids | None, base, read result / written data ids)
        T = np.concatenate([p[0] for p in lst])
        addr = np.concatenate([p[1] if p[1] is not None else np.full(len(p[0]), -1, np.int64) for p in lst])
        ix = np.concatenate([rb[p[2]] if p[2] is not None else np.full(len(p[0]), -1, np.int64) for p in lst])
        base = np.concatenate([np.full(len(p[0]), p[3], np.int64) for p in lst])
        dyn = ix >= 0
        dyn = (dyn, ix[dyn], base[dyn]) if dyn.any() else None
        return (k, kind[1], T, addr, dyn, rb[np.concatenate([p[4] for p in lst])])
    if k == "emit":
        return ("emit", ra[np.concatenate([p[0] for p in lst])], rb[np.concatenate([p[1] for p in lst])])
    if k == "add32":
        return ("add32", rb[np.concatenate([p[0] for p in lst])], rb[np.concatenate([p[1] for p in lst])],
                rb[np.concatenate([p[2] for p in lst])])
    if k == "req":
        a = rb[np.concatenate([p[0] for p in lst])]
        sizes = [len(p[0]) for p in lst]
        imm = np.repeat(np.array([p[1] for p in lst], np.int64), sizes)[:, None]
        sh = np.repeat(np.array([p[2] for p in lst], np.int64), sizes)[:, None]
        return ("req", a, imm, sh, rb[np.concatenate([p[3] for p in lst])])
    if k == "reql":
        parts = [(len(p[0]), p[1], tuple(int(rb[i]) if i >= 0 else -1 for i in p[2])) for p in lst]
        if len({p[1:] for p in parts}) == 1:
            parts = (None,) + parts[0][1:]
        elif all(i >= 0 for p in parts for i in p[2]):  # every state fully LDM-loaded: rows per part
            ids = np.array([p[2] for p in parts], np.int64)
            sizes = np.array([p[0] for p in parts])
            parts = ("rows", ids[:, 0], ids[:, 1], ids[:, 2], ids[:, 3], None if (sizes == 1).all() else sizes)
        return ("reql", rb[np.concatenate([p[0] for p in lst])], parts, rb[np.concatenate([p[3] for p in lst])])
    if k == "lut":
        sizes = [len(p[0]) for p in lst]
        gi = None if len(lst) == 1 else np.repeat(np.arange(len(lst)), sizes)
        return ("lut", rb[np.concatenate([p[0] for p in lst])], rb[np.stack([p[1] for p in lst])], gi,
                rb[np.concatenate([p[2] for p in lst])])
    if k == "ew":
        op, use_imm = kind[1], kind[2]
        sizes = [len(p[0]) for p in lst]
        a = rb[np.concatenate([p[0] for p in lst])]
        b = None if use_imm or lst[0][1] is None else rb[np.concatenate([p[1] for p in lst])]
        c = None if lst[0][2] is None else rb[np.concatenate([p[2] for p in lst])]
        imm = np.repeat(np.array([p[3] for p in lst], np.int16), sizes)[:, None] if use_imm else None
        sh = np.repeat(np.array([p[4] for p in lst], np.int64), sizes)[:, None]
        return ("ew", op, a, b, c, imm, sh, rb[np.concatenate([p[5] for p in lst])])
    if k == "lanes":
        sizes = [len(p[0]) for p in lst]
        src = np.repeat(np.stack([p[1] for p in lst]), sizes, axis=0)
        ok = None
        if any(p[2] is not None for p in lst):
            ok = np.repeat(np.stack([np.ones(lanes, bool) if p[2] is None else p[2] for p in lst]), sizes, axis=0)
        x = rb[np.concatenate([p[0] for p in lst])]
        return ("lanes", x, np.arange(len(x))[:, None], src, ok, rb[np.concatenate([p[3] for p in lst])])
    if k == "perm":
        parts = [(len(p[0]), p[1], int(rb[p[2]]) if p[2] >= 0 else -1) for p in lst]
        return ("perm", rb[np.concatenate([p[0] for p in lst])], parts, rb[np.concatenate([p[3] for p in lst])])
    if k == "trans":
        return ("trans", rb[np.stack([p[0] for p in lst])], rb[np.stack([p[1] for p in lst])])
    raise AssertionError(kind)                      # pragma: no cover


def _mm_rows(st):
    """The most x rows one matmul call of an MM step multiplies."""
    if st[0] == "mm":
        _, x, W, pad = st[:4]
        if pad is None:
            return len(x) if len(W) == 1 else 1
        return len(x) // len(W) if pad == "even" else pad[2]
    groups = st[3]
    if groups[0] == "batch":
        return 1
    if groups[0] == "gbatch":
        return groups[1].shape[1]
    return max(len(g[2]) for g in groups)


def _mm_float(lanes):
    """The float type MM products are exact in: an int8 dot product of `lanes` terms is at most
    lanes * 2^14 in magnitude, and so is every partial sum: float32 (integers up to 2^24) for
    up to 1024 lanes, else float64."""
    return np.float32 if lanes <= 1024 else np.float64


def _chain_step(x, W, blk, order, K, roots, lanes, ra, fused):
    """An MM step where every chain root sums K products: the K x rows of a root side by side times
    the K weight blocks stacked, one matmul per set of roots with the same weight blocks (all of
    them batched when each set is a single root, as in a one-token layer).  Float32 is exact for
    up to 2^10 / lanes products of 64-lane int8 dot products (|sum| <= 2^24), so longer chains are
    multiplied in slices of that many blocks, summed in int64."""
    _, base, _, e_out = fused
    xo = x[order].reshape(-1, K)                     # (roots, K) x ids, roots in `roots` order
    bo = blk[order].reshape(-1, K)                   # (roots, K) weight blocks
    seqs, ginv = _unique_rows(bo)
    span = max(1, (1 << 10) // lanes) * lanes if _mm_float(lanes) is np.float32 else K * lanes  # exact slices
    cuts = list(range(0, K * lanes, span)) + [K * lanes]
    if len(seqs) == len(xo):                         # one root per weight sequence: one batched matmul
        pos = np.argsort(ginv)
        Wseq = W[seqs].reshape(len(seqs), K * lanes)
        groups = ("batch", xo[pos], Wseq, pos)
    else:
        pos = np.argsort(ginv, kind="stable")            # roots by weight sequence
        per = np.bincount(ginv, minlength=len(seqs))
        if (per == per[0]).all() and per[0] <= 64:      # as many (few) roots per sequence: one batched matmul
            # (measured: faster up to tens of roots, a few % slower than one matmul per sequence at 256)
            groups = ("gbatch", xo[pos].reshape(len(seqs), int(per[0]), K), W[seqs].reshape(len(seqs), K * lanes),
                      pos)
        else:
            groups = []
            for gi in range(len(seqs)):
                pos = np.flatnonzero(ginv == gi)
                groups.append((xo[pos], W[seqs[gi]].reshape(K * lanes), pos))
    out = ra[e_out[roots]]
    b = base[roots]
    has = b >= 0
    base_pos = np.flatnonzero(has) if has.any() else None
    base_ids = ra[b[has]] if has.any() else None
    return ("mmc", K, cuts, groups, out, base_pos, base_ids)


def _unique_rows(a):
    """``np.unique(a, axis=0, return_inverse=True)`` for a 2-D int array (sorted rows, and each row's
    index among them), by one lexsort (unique on axis 0 sorts a structured view: several times slower)."""
    if len(a) == 0:
        return a, np.zeros(0, np.int64)
    order = np.lexsort(a.T[::-1])
    s = a[order]
    new = np.ones(len(s), bool)
    new[1:] = (s[1:] != s[:-1]).any(axis=1)
    inv = np.empty(len(a), np.int64)
    inv[order] = np.cumsum(new) - 1
    return s[new], inv


def _weights(B, ids, lanes):
    """Rows ``ids`` of B (any shape of ids) as MM floats, in reused work arrays (a layer's weights
    are megabytes: fresh arrays fault on every page)."""
    n = ids.size
    if n * lanes <= 1 << 14:                 # (small: fresh arrays are cheaper than the scratch's calls)
        return B.take(ids.reshape(-1), axis=0).astype(_mm_float(lanes)).reshape(ids.shape + (lanes,))
    w8 = _scratch(2, n, lanes, np.int8)
    B.take(ids.reshape(-1), axis=0, out=w8)
    wf = _scratch(3, n, lanes, _mm_float(lanes))
    np.copyto(wf, w8)
    return wf.reshape(ids.shape + (lanes,))


def _chain_mm(B, st, lanes):
    """Evaluate a ``_chain_step``: the int64 sums, one row per root."""
    _, K, cuts, groups, out, _, _ = st
    y = np.zeros((len(out), lanes), np.int64)
    if groups[0] == "batch":
        _, xo, Wseq, pos = groups
        X = _take(B, xo).reshape(len(xo), 1, K * lanes).astype(_mm_float(lanes))
        Wf = _weights(B, Wseq, lanes)
        part = y[pos]
        for a, b in itertools.pairwise(cuts):
            part += np.matmul(X[:, :, a:b], Wf[:, a:b, :])[:, 0, :].astype(np.int64)
        y[pos] = part
    elif groups[0] == "gbatch":                         # (sequences, roots each, K) x ids, (sequences, K * lanes) W
        _, xo, Wseq, pos = groups
        G, P = xo.shape[:2]
        X = _take(B, xo.reshape(-1)).reshape(G, P, K * lanes).astype(_mm_float(lanes))
        Wf = _weights(B, Wseq, lanes)
        part = np.zeros((G, P, lanes), np.int64)
        for a, b in itertools.pairwise(cuts):
            part += np.matmul(X[:, :, a:b], Wf[:, a:b, :]).astype(np.int64)
        y[pos] = part.reshape(G * P, lanes)
    else:
        for xo, Wseq, pos in groups:
            X = _take(B, xo).reshape(len(xo), K * lanes).astype(_mm_float(lanes))
            Wf = _weights(B, Wseq, lanes)
            part = y[pos]
            for a, b in itertools.pairwise(cuts):
                part += (X[:, a:b] @ Wf[a:b]).astype(np.int64)
            y[pos] = part
    return y


def _sel(ids):
    """A sorted-or-not id array as a slice if it is a contiguous ascending run, else itself."""
    lo = int(ids[0])
    if int(ids[-1]) - lo + 1 == len(ids) and (len(ids) < 3 or (np.diff(ids) == 1).all()):
        return slice(lo, lo + len(ids))
    return ids


_SMALL_LOG = 64                # dynamic-bank logs of at most this many entries are looked up in Python
_SMALL_DYN = 16                # GATHER / SCATTER index rows of a step up to this many: addresses in Python


def _log_entries(log):
    """A dynamic bank's log as (commit cycle, address, data id) Python ints, in log order."""
    out = []
    for T, a, d in log:
        out += zip(T.tolist(), a.tolist(), d.tolist())
    return out


def _last_writes(log, B):
    """(addresses, rows) of the last logged write to each address of a dynamic bank (the latest
    commit cycle; among equal ones the later entry)."""
    if sum(len(x[1]) for x in log) <= _SMALL_LOG:
        last = {}
        for t, ai, di in _log_entries(log):
            e = last.get(ai)
            if e is None or e[0] <= t:
                last[ai] = (t, di)
        return np.array(list(last), np.int64), B.take([e[1] for e in last.values()], axis=0)
    T, a, d = (np.concatenate(x) for x in zip(*log))
    order = np.lexsort((T, a))
    a_s = a[order]
    last = order[np.append(a_s[1:] != a_s[:-1], True)]
    return a[last], B[d[last]]


def _dread(g, B, log, bank, T, addr, out):
    """Reads of a dynamic bank at cycles T: the last logged write to each address committed by
    then, else the bank as the run found it."""
    if log and len(addr) * sum(len(x[1]) for x in log) <= _SMALL_LOG * 4:
        # (a few reads of a few writes: looked up in Python, two numpy copies)
        by = {}
        for t, ai, di in _log_entries(log):
            by.setdefault(ai, []).append((t, di))
        o_log, i_log, o_mem, a_mem = [], [], [], []
        for t, ai, o in zip(T.tolist(), addr.tolist(), out.tolist()):
            best = None
            for tw, di in by.get(ai, ()):
                if tw <= t and (best is None or tw >= best[0]):
                    best = (tw, di)
            if best is None:
                o_mem.append(o)
                a_mem.append(ai)
            else:
                o_log.append(o)
                i_log.append(best[1])
        if o_log:
            B[o_log] = B.take(i_log, axis=0)
        if o_mem:
            B[o_mem] = g.mem[bank].take(a_mem, axis=0)
        return
    if log:
        Tw, a, d = (np.concatenate(x) for x in zip(*log)) if len(log) > 1 else log[0]
        order = np.lexsort((Tw, a))
        a_s = a[order]
        pos = np.searchsorted(a_s * KEY + Tw[order], addr * KEY + T, "right") - 1
        ok = pos >= 0
        pos0 = np.where(ok, pos, 0)
        ok &= a_s[pos0] == addr
        if ok.any():
            B[out[ok]] = B[d[order[pos0[ok]]]]
            rest = ~ok
            B[out[rest]] = g.mem[bank][addr[rest]]
            return
    B[out] = g.mem[bank][addr]


def _ldm_state(g, B, sl, r):
    """(m, sh, z) of slice `sl`'s REQL registers after LDM rows r = (m low byte, m high byte, sh, z)
    ids (-1: the register part as the run found it)."""
    lo, hi, sh_id, z_id = r
    m = g.req_m[sl]
    if lo >= 0 or hi >= 0:
        u = m.view(np.uint16)
        if lo >= 0:
            u = (u & 0xFF00) | B[lo].view(np.uint8)
        if hi >= 0:
            u = (u & 0x00FF) | (B[hi].view(np.uint8).astype(np.uint16) << 8)
        m = u.view(np.int16)
    sh = g.req_sh[sl] if sh_id < 0 else B[sh_id].view(np.uint8).astype(np.int64) & 63
    z = g.req_z[sl] if z_id < 0 else B[z_id].copy()
    return m, sh, z


def _perm(g, B, sl, i):
    return g.perm[sl] if i < 0 else B[i].view(np.uint8).astype(np.int64) % g.lanes


def _sat8(x):
    """``arith.sat8`` on a fresh integer array (clipped in place: ``np.clip`` costs several times
    more on a small array)."""
    np.minimum(x, 127, out=x)
    np.maximum(x, -128, out=x)
    return x.astype(np.int8)


def _ew(st, B):
    """An element-wise VXM op over a step's rows (the formulas of Golden._vxm, vectorized)."""
    _, op, a, b, c, imm, sh, _ = st
    x8 = _take(B, a)
    if op is Opcode.RELU:
        return np.maximum(x8, 0)
    if op is Opcode.SHR:
        return x8 >> sh
    if op is Opcode.SEL:
        return np.where(_take(B, c) != 0, x8, _take(B, b))
    x = x8.astype(np.int16)
    if op is Opcode.SHL:
        return ((x << sh) & 0xFF).astype(np.uint8).view(np.int8)
    y = imm if imm is not None else _take(B, b).astype(np.int16)
    if op is Opcode.ADD:
        return _sat8(x + y)
    if op is Opcode.SUB:
        return _sat8(x - y)
    if op is Opcode.MUL:
        return _sat8(rshift_round(x.astype(np.int64) * y, sh))
    if op is Opcode.MIN:
        return np.minimum(x, y).astype(np.int8)
    if op is Opcode.MAX:
        return np.maximum(x, y).astype(np.int8)
    if op is Opcode.AND:
        return (x & y).astype(np.int8)
    if op is Opcode.OR:
        return (x | y).astype(np.int8)
    if op is Opcode.XOR:
        return (x ^ y).astype(np.int8)
    raise AssertionError(op)                         # pragma: no cover - every VXM op is handled
