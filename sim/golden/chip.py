"""The golden model: bit-exact and cycle-exact, at the level of slices and stream registers.

Timing contract (what the RTL must reproduce, see docs/microarchitecture.md):

* Every queue starts issuing at cycle 0; an ordinary instruction occupies its queue for one cycle,
  ``NOP n`` for n cycles, ``REPEAT n, d`` for n*d cycles, ``SYNC`` until a NOTIFY fires.
* A unit instruction issued at cycle t processes element k (0 <= k < n) at cycle t + k on its
  sub-unit (MEM: read port, write port; MXM: install, multiply, emit; VXM: ALU; SXM: shifter).
  Issuing to a busy sub-unit is a program error: the schedule is static, there are no stalls.
* Element k reads its stream operands from the stream registers at the slice's own position during
  cycle t + k.  Its result becomes visible in the stream register at the slice's position during
  cycle t + k + L (L from the config's latency table), and moves one slice per cycle east (e*) or
  west (w*) from there, replacing whatever was travelling in that register.
* A slice drives at most one result onto its stream port per cycle (an int32 result occupies four
  consecutive streams).  Two results landing on one cycle is a program error.
* MEM: a read at cycle c sees every write whose commit cycle (issue + mem_write) is <= c.
* MXM: an LW element installs install_rows rows (from as many streams), so an LW of n rows runs
  ceil(n / install_rows) elements; the rows of an element at cycle c are used by MM elements at
  cycles >= c + mxm_install; an accumulator entry written
  by an MM element at cycle c is committed at c + mxm_mm, and may not be read (MM with acc=1,
  EMIT) before then.
* VXM/SXM register loads (LDM, LDLUT, LDPERM) at cycle c are used by elements at cycles >= c + 1.
* The program ends at cycle H + 1, H the cycle of the last HALT; nothing may be in flight then.
"""

import sys
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tinylpu.arith import int32_to_planes, planes_to_int32, requantize, rshift_round, sat8
from tinylpu.config import load_config
from tinylpu.firmware.check import check_program
from tinylpu.firmware.program import Program
from tinylpu.isa import BINARY_OPS, INT32_PLANES, OPS, Insn, Opcode, StreamRef, element_count, latency_key

__all__ = ["Golden", "ProgramError", "RunResult"]

EAST, WEST = 0, 1
_I8 = np.dtype(np.int8)


class ProgramError(RuntimeError):
    """A program did something the chip does not allow; names cycle, slice and instruction."""

    def __init__(self, cycle, slice_name, index, insn, message):
        self.cycle, self.slice, self.index, self.insn, self.message = cycle, slice_name, index, insn, message
        where = f"cycle {cycle}, slice {slice_name}"
        if index is not None:
            where += f", instruction #{index} `{insn}`"
        super().__init__(f"{where}: {message}")


@dataclass
class RunResult:
    cycles: int
    activity: dict            # slice -> {"issued": n, "<subunit>_busy": cycles, ...}
    halted: dict              # slice -> halt cycle


@dataclass
class _Active:
    sub: str
    insn: Insn
    index: int
    start: int
    n: int          # elements
    busy_until: int  # last cycle (inclusive) the sub-unit is occupied
    stride: int = 1  # cycles between elements (C2C: one vector per flit)


@dataclass
class _Queue:
    name: str
    insns: list
    pc: int = 0
    next_issue: int = 0
    state: str = "run"        # run | sync | deskew | halt
    sync_since: int = 0
    rep_left: int = 0
    rep_d: int = 0
    rep_insn: Insn = None
    rep_index: int = 0
    issued: int = 0


_POOL = {}                    # bank arrays of dead models, for reuse: {(depth, lanes): [array]}
_POOL_MAX = 64                # arrays kept per shape (an 8-chip tray's banks)


_SCRATCH = [np.empty((0, 0), np.int8)]


def _image_scratch(rows, lanes):
    """A (rows, lanes) int8 work array for ``write_image``, reused (fresh memory faults per page)."""
    buf = _SCRATCH[0]
    if buf.shape[1] != lanes or buf.shape[0] < rows:
        buf = _SCRATCH[0] = np.empty((max(rows, 2 * buf.shape[0] if buf.shape[1] == lanes else 0), lanes), np.int8)
    return buf[:rows]


def _new_bank(depth, lanes):
    """An uninitialized (depth, lanes) int8 bank: a dead model's, or fresh.  (Fresh memory costs a
    page fault per 4 KiB page on first touch, as much as a small run.)"""
    free = _POOL.get((depth, lanes))
    return free.pop() if free else np.empty((depth, lanes), np.int8)


class _Banks(Mapping):
    """The MEM banks, ``{name: (depth, lanes) int8 array}``, zeroed lazily when they are large: an
    LPU-class chip's 16 MiB of banks cost a memset of 16 MiB per model, more than a one-token
    layer's run (banks of up to ``_EAGER`` bytes are zeroed up front).  Each bank is allocated
    uninitialized and zeroed up to a watermark (rows below it hold what was written, or zeros);
    ``bank[name]`` (every outside reader, the reference stepper) zeroes the rest first, so it
    always sees a plain array in which unwritten memory reads as zeros.  The fast paths ask only for
    the rows below some address (``rows(name, hi)``), zeroing at most a chunk past it; ``valid``
    holds each allocated bank's valid rows as a view (``FastGolden.write_mem``'s fast path)."""
    _CHUNK = 1024
    _EAGER = 1 << 18          # banks of at most this many bytes are simply zeroed up front (cheaper)

    def __init__(self, names, depth, lanes):
        self.depth, self.lanes = depth, lanes
        self.lazy = depth * lanes > self._EAGER
        if self.lazy:
            self._arr = {n: None for n in names}
            self._mark = dict.fromkeys(names, 0)   # rows [0, mark) are valid
            self.valid = {}                        # name -> its valid rows (a view), once allocated
        else:
            # (one allocation for all the banks, each a view of it: a small model is built for every
            # short program a test runs)
            self._arr = dict(zip(names, np.zeros((len(names), depth, lanes), np.int8)))
            self._mark = dict.fromkeys(names, depth)
            self.valid = dict(self._arr)

    def rows(self, name, hi):
        """The array of bank `name`, valid (written or zero) in rows 0..hi-1 at least; KeyError
        for an unknown bank."""
        a = self._arr[name]
        if a is not None and hi <= self._mark[name]:
            return a
        if a is None:
            a = self._arr[name] = _new_bank(self.depth, self.lanes)
        m = self._mark[name]
        top = max(m, min(self.depth, -(-hi // self._CHUNK) * self._CHUNK))
        a[m:top] = 0
        self._mark[name] = top
        self.valid[name] = a[:top]
        return a

    def __getitem__(self, name):
        return self.rows(name, self.depth)

    def __del__(self):
        # give the banks that nothing else holds (no array, no view of one) to the next model
        try:
            if not self.lazy:
                return
            self.valid.clear()
            free = _POOL.setdefault((self.depth, self.lanes), [])
            for name in list(self._arr):
                a = self._arr.pop(name)
                if a is not None and len(free) < _POOL_MAX and sys.getrefcount(a) <= 2:
                    free.append(a)
        except (AttributeError, NameError, TypeError):     # (interpreter shutdown: module state gone)
            pass

    def __iter__(self):
        return iter(self._arr)

    def __len__(self):
        return len(self._arr)

    def __contains__(self, name):
        return name in self._arr


_SUBUNIT = {
    Opcode.READ: "rd", Opcode.GATHER: "rd", Opcode.WRITE: "wr", Opcode.SCATTER: "wr",
    Opcode.LW: "install", Opcode.MM: "mm", Opcode.EMIT: "emit",
}


_LAYOUTS = {}                  # id(config) -> (config, its slices' positions, kinds, names by kind)


def _layout(cfg):
    """{slice: position}, {slice: kind} and the mem, mxm, vxm, sxm slice names of a configuration
    (cached: a model of a small chip is built in microseconds, and these were a third of it)."""
    e = _LAYOUTS.get(id(cfg))
    if e is None or e[0] is not cfg:
        kind = {s.name: s.kind for s in cfg.slices}
        e = _LAYOUTS[id(cfg)] = (cfg, {s.name: s.position for s in cfg.slices}, kind,
                                 tuple([n for n, k in kind.items() if k == x] for x in ("mem", "mxm", "vxm", "sxm")))
        if len(_LAYOUTS) > 64:
            _LAYOUTS.pop(next(iter(_LAYOUTS)))
    return e[1:]


class Golden:
    """Cycle-exact numpy model of one chip.

    >>> g = Golden("tiny"); g.load_program(prog); g.write_mem("mem0", 0, data); r = g.run()
    """

    def __init__(self, config="tiny"):
        self.cfg = cfg = load_config(config)
        self.L = cfg.latency
        self.lanes, self.S, self.P = cfg.lanes, cfg.streams, cfg.positions
        pos, kind, (mem, mxm, vxm, sxm) = _layout(cfg)
        self.pos, self.kind = dict(pos), dict(kind)
        lanes = cfg.lanes
        self.mem = _Banks(mem, cfg.mem_depth, lanes)
        self.weights = {n: np.zeros((2, lanes, lanes), np.int8) for n in mxm}
        self.acc = {n: np.zeros((cfg.acc_depth, lanes), np.int32) for n in mxm}
        self.lut = {n: np.zeros(256, np.int8) for n in vxm}
        self.req_m = {n: np.zeros(lanes, np.int16) for n in vxm}
        self.req_sh = {n: np.zeros(lanes, np.int64) for n in vxm}
        self.req_z = {n: np.zeros(lanes, np.int8) for n in vxm}
        self.perm = {n: np.arange(lanes) for n in sxm}
        self.tx_hook = None          # set by a tray: (port, cycle, vector) for every SEND element
        self.rx = {p: [] for p in range(cfg.c2c_ports)}
        self.program = Program({})

    # --- host-side access -------------------------------------------------------------------
    def _bank(self, bank):
        """The bank's name (``mem3`` or 3), checked."""
        if isinstance(bank, int):
            bank = f"mem{bank}"
        if bank not in self.mem:
            raise ValueError(f"no MEM bank {bank!r} in config {self.cfg.name} (banks: {', '.join(self.mem)})")
        return bank

    def write_mem(self, bank, addr, vectors):
        bank = self._bank(bank)
        depth = self.mem.depth
        v = np.asarray(vectors)
        if v.ndim == 1:
            v = v.reshape(1, -1)
        if v.ndim != 2 or v.shape[1] != self.lanes:
            raise ValueError(f"MEM data must be (n, {self.lanes}) int8 vectors, got shape {v.shape}")
        if v.dtype != np.int8:
            if v.dtype.kind not in "iu" or v.min(initial=0) < -128 or v.max(initial=0) > 127:
                raise ValueError(f"MEM data must be int8 values in [-128, 127] (dtype {v.dtype})")
            v = v.astype(np.int8)
        if not 0 <= addr or addr + len(v) > depth:
            raise ValueError(f"MEM write {bank}[{addr}:{addr + len(v)}] is outside the bank "
                             f"(depth {depth})")
        self.mem.rows(bank, addr + len(v))[addr:addr + len(v)] = v

    def write_image(self, image):
        """Write a MEM image ``{bank: [(addr, vectors), ...]}`` (a compiled layer's weights and inputs):
        the same result and errors as ``write_mem`` on every piece in order, but each bank's pieces
        in one numpy copy.  The common case (bank names, int addresses, (n, lanes) int8 arrays, no
        two pieces of a bank overlapping) takes the bulk path; anything else (another dtype, a 1-D
        vector, overlapping pieces, a piece out of range, an unknown bank) goes piece by piece
        through ``write_mem``, which raises its error at the first bad piece."""
        lanes, depth = self.lanes, self.mem.depth
        for bank, pieces in image.items():
            if type(bank) is not str or bank not in self.mem or type(pieces) is not list or len(pieces) < 4:
                self._write_pieces(bank, pieces)        # (a few pieces: cheaper one by one)
                continue
            try:
                addrs, arrs = zip(*pieces)
                a0 = np.array(addrs)
                lens = np.fromiter(map(len, arrs), np.int64, len(arrs))
                data = _image_scratch(int(lens.sum()), lanes)
                # (int8 (n, lanes) arrays only: anything else fails the shape or the casting rule)
                np.concatenate(arrs, out=data, casting="no")
            except (TypeError, ValueError):
                self._write_pieces(bank, pieces)
                continue
            if a0.ndim != 1 or a0.dtype.kind not in "iu":
                self._write_pieces(bank, pieces)
                continue
            a0 = a0.astype(np.int64)
            a1 = a0 + lens
            top = int(a1.max())
            if a0.min() < 0 or top > depth:
                self._write_pieces(bank, pieces)
                continue
            if (a0[1:] == a1[:-1]).all():                   # one contiguous run, in order
                self.mem.rows(bank, top)[a0[0]:top] = data
                continue
            order = np.argsort(a0, kind="stable")
            if (a0[order][1:] < a1[order][:-1]).any():     # overlapping pieces: the later one wins
                self._write_pieces(bank, pieces)
                continue
            rows = np.arange(len(data), dtype=np.int64) + np.repeat(a0 - (np.cumsum(lens) - lens), lens)
            self.mem.rows(bank, top)[rows] = data

    def _write_pieces(self, bank, pieces):
        for addr, v in pieces:
            self.write_mem(bank, addr, v)

    def read_mem(self, bank, addr=0, n=None):
        bank = self._bank(bank)
        depth = self.mem.depth
        n = depth - addr if n is None else n
        if addr < 0 or addr + n > depth:
            raise ValueError(f"MEM read {bank}[{addr}:{addr + n}] is outside the bank (depth {depth})")
        return self.mem.rows(bank, addr + n)[addr:addr + n].copy()

    def load_program(self, program: Program):
        check_program(program, self.cfg)
        self.program = program

    # --- the run ------------------------------------------------------------------------------
    def run(self, max_cycles=1_000_000) -> RunResult:
        self.start()
        while not self.step():
            if self.c >= max_cycles:
                raise ProgramError(self.c, "-", None, None, f"did not halt within {max_cycles} cycles")
        return self.result()

    def start(self):
        """Reset the run state (streams, queues); unit state and MEM persist, as on the chip."""
        cfg, lanes, S, P = self.cfg, self.lanes, self.S, self.P
        self.sdata = np.zeros((2, S, P, lanes), np.int8)
        self.svalid = np.zeros((2, S, P), bool)
        self.effects = {}            # due cycle -> list of callables / stream writes
        self.port_busy = {}          # (slice, due cycle) -> description of the result using the port
        self.acc_pending = {n: {} for n in self.acc}
        self.queues = [_Queue(n, list(v)) for n, v in self.program.queues.items()]
        for n in self.pos:
            if n not in self.program.queues:
                self.queues.append(_Queue(n, [], state="halt"))
        self.active = {}             # (slice, sub) -> _Active
        self._last_dispatched, self._last_issue = {}, {}
        self.activity = {n: {"issued": 0} for n in self.pos}
        self.notify_fire = []        # cycles at which NOTIFYs fire
        self.halted = {q.name: -1 for q in self.queues if q.state == "halt"}
        self.last_halt = -1
        self.rx = {p: [] for p in range(cfg.c2c_ports)}   # port -> [(arrival cycle, vector)]
        self.c = 0
        self.done = len(self.halted) == len(self.queues)

    def step(self):
        """Simulate one cycle; True when the program has ended."""
        if self.done:
            return True
        c, queues = self.c, self.queues
        # 1. issue
        fired = c in self.notify_fire
        deskew = [q for q in queues if q.state == "deskew" and q.next_issue == c]
        if deskew:
            self._deskew_check(c)
        for q in queues:
            if q.state == "sync" and fired:
                q.state, q.next_issue = "run", c
            if q.state == "deskew" and q.next_issue == c:
                q.state = "run"
            if q.state != "run" or q.next_issue != c:
                continue
            self._issue(q, c, self.notify_fire, self.halted)
            if q.state == "halt":
                self.last_halt = c
        # 2. process the elements of active sub-units
        for key in list(self.active):
            a = self.active[key]
            d = c - a.start
            if d % a.stride == 0 and 0 <= d // a.stride < a.n:
                self._element(key[0], a, d // a.stride, c)
            if c >= a.busy_until:
                del self.active[key]
        # 3. commit what becomes visible at c + 1
        self._commit(c + 1)
        self.c = c = c + 1
        if len(self.halted) == len(queues):
            self.done = True
            return True
        if all(q.state in ("halt", "sync") for q in queues) and not any(f >= c for f in self.notify_fire):
            parked = [q.name for q in queues if q.state == "sync"]
            raise ProgramError(c, ",".join(parked), None, None,
                               "deadlock: queues wait in SYNC and no NOTIFY is coming")
        return False

    def result(self) -> RunResult:
        cycles = self.last_halt + 1
        late = [d for d in self.effects if d > cycles]
        if self.active or late:
            what = [f"{s}.{sub} ({a.insn.op.name} #{a.index})" for (s, sub), a in self.active.items()]
            if late:
                what.append(f"results due at cycle {min(late)}")
            raise ProgramError(self.last_halt, "-", None, None,
                               "work still in flight when the last queue halted: " + ", ".join(what))
        return RunResult(cycles, self.activity, self.halted)

    def _deskew_check(self, c):
        """At an epoch boundary where queues leave DESKEW the chip must be quiet: every live queue
        parked in DESKEW, no sub-unit running, nothing in flight (the stall length varies with drift)."""
        for q in self.queues:
            if q.state not in ("deskew", "halt") or (q.state == "deskew" and q.next_issue != c):
                raise ProgramError(c, q.name, None, None,
                                   f"DESKEW at the epoch boundary (cycle {c}) needs every live queue parked in "
                                   f"DESKEW; queue {q.name} is not")
        busy = [f"{s}.{sub}" for (s, sub), a in self.active.items() if a.busy_until >= c]
        if busy or any(d > c for d in self.effects):
            raise ProgramError(c, "-", None, None, f"DESKEW at cycle {c}: the chip is not quiet "
                               f"({', '.join(busy) or 'results still in flight'}): nothing may cross a deskew")

    # --- issue ------------------------------------------------------------------------------------
    def _issue(self, q: _Queue, c, notify_fire, halted):
        if q.rep_left:
            q.rep_insn = _advance(q.rep_insn, self.lanes)
            self._dispatch(q.name, q.rep_insn, q.rep_index, c)
            q.rep_left -= 1
            q.next_issue = c + q.rep_d
            return
        if q.pc >= len(q.insns):
            raise ProgramError(c, q.name, None, None, "queue ran past its last instruction without HALT")
        insn, idx = q.insns[q.pc], q.pc
        q.pc += 1
        self.activity[q.name]["issued"] += 1
        op = insn.op
        if op == Opcode.NOP:
            q.next_issue = c + insn.n
        elif op == Opcode.REPEAT:
            # REPEAT takes no issue slot of its own: repetition r issues r*d cycles after the
            # repeated instruction, and the next instruction d cycles after the last repetition.
            q.rep_insn, q.rep_index, q.rep_left, q.rep_d = (
                self._last_dispatched[q.name], idx - 1, insn.n, insn.d)
            q.next_issue = self._last_issue[q.name] + insn.d
            if q.next_issue == c:
                self._issue(q, c, notify_fire, halted)
        elif op == Opcode.SYNC:
            q.state, q.sync_since = "sync", c
        elif op == Opcode.NOTIFY:
            notify_fire.append(c + self.L["notify"])
            q.next_issue = c + 1
        elif op == Opcode.HALT:
            q.state = "halt"
            halted[q.name] = c
        elif op == Opcode.DESKEW:
            E = self.cfg.link["epoch"]
            q.state, q.next_issue = "deskew", (c // E + 1) * E
        else:
            self._dispatch(q.name, insn, idx, c)
            q.next_issue = c + 1

    def _dispatch(self, sname, insn, idx, c):
        op = insn.op
        self._last_dispatched[sname] = insn
        self._last_issue[sname] = c
        kind = self.kind[sname]
        sub = _SUBUNIT.get(op, {"vxm": "alu", "sxm": "sxm"}.get(kind))
        n = element_count(op, insn.count, self.cfg.install_rows)
        busy, stride = n, 1
        if op == Opcode.TRANS:
            n, busy = self.lanes, 2 * self.lanes
        if op in (Opcode.SEND, Opcode.RECV):
            sub = f"{'tx' if op == Opcode.SEND else 'rx'}{insn.port}"
            stride = self.cfg.vector_interval
            busy = n * stride
        key = (sname, sub)
        if key in self.active and self.active[key].busy_until >= c:
            a = self.active[key]
            raise ProgramError(c, sname, idx, insn,
                               f"{sub} {'port' if kind == 'mem' else 'unit'} is busy until cycle "
                               f"{a.busy_until} with {a.insn.op.name} (#{a.index}) issued at cycle {a.start}")
        self.active[key] = _Active(sub, insn, idx, c, n, c + busy - 1, stride)
        act = self.activity[sname]
        act[f"{sub}_busy"] = act.get(f"{sub}_busy", 0) + busy

    # --- streams -----------------------------------------------------------------------------------
    def _read_stream(self, sname, a, s: StreamRef, c):
        d = WEST if s.west else EAST
        p = self.pos[sname]
        if not self.svalid[d, s.index, p]:
            raise ProgramError(c, sname, a.index, a.insn,
                               f"stream {s} at slice {sname} (position {p}) holds no data in cycle {c}")
        return self.sdata[d, s.index, p].copy()

    def _read_group(self, sname, a, s: StreamRef, c):
        return planes_to_int32([self._read_stream(sname, a, StreamRef(s.index + b, s.west), c)
                                for b in range(INT32_PLANES)])

    def _emit(self, sname, a, s: StreamRef, vecs, due, c):
        """Schedule vectors onto streams s, s+1, ... at the slice's position, visible at cycle `due`."""
        key = (sname, due)
        if key in self.port_busy:
            raise ProgramError(c, sname, a.index, a.insn,
                               f"stream port conflict: a result of {self.port_busy[key]} also lands in cycle {due}")
        self.port_busy[key] = f"{a.insn.op.name} #{a.index}"
        d = WEST if s.west else EAST
        p = self.pos[sname]
        for b, v in enumerate(vecs):
            self.effects.setdefault(due, []).append(("s", d, s.index + b, p, v))

    def _later(self, due, fn):
        self.effects.setdefault(due, []).append(("f", fn))

    def _commit(self, cyc):
        # streams move one slice per clock
        sd, sv = self.sdata, self.svalid
        if sv.any():
            sd[EAST, :, 1:] = sd[EAST, :, :-1]
            sv[EAST, :, 1:] = sv[EAST, :, :-1]
            sv[EAST, :, 0] = False
            sd[WEST, :, :-1] = sd[WEST, :, 1:]
            sv[WEST, :, :-1] = sv[WEST, :, 1:]
            sv[WEST, :, -1] = False
        for e in self.effects.pop(cyc, ()):
            if e[0] == "s":
                _, d, s, p, v = e
                sd[d, s, p] = v
                sv[d, s, p] = True
            else:
                e[1]()
        for key in [k for k in self.port_busy if k[1] <= cyc]:
            del self.port_busy[key]

    # --- elements ---------------------------------------------------------------------------------
    def _element(self, sname, a: _Active, k, c):
        i, op, L = a.insn, a.insn.op, self.L
        if op in (Opcode.READ, Opcode.GATHER):
            mem = self.mem[sname]
            if op == Opcode.READ:
                addr = i.addr + k * i.stride
            else:
                idx = self._read_stream(sname, a, i.a, c).view(np.uint8)
                addr = i.addr + int(idx[0]) + 256 * int(idx[1])
            self._check_addr(sname, a, c, addr, len(mem), "bank")
            self._emit(sname, a, i.s, [mem[addr].copy()], c + L["mem_read"], c)
        elif op in (Opcode.WRITE, Opcode.SCATTER):
            mem = self.mem[sname]
            v = self._read_stream(sname, a, i.s, c)
            if op == Opcode.WRITE:
                addr = i.addr + k * i.stride
            else:
                idx = self._read_stream(sname, a, i.a, c).view(np.uint8)
                addr = i.addr + int(idx[0]) + 256 * int(idx[1])
            self._check_addr(sname, a, c, addr, len(mem), "bank")
            self._later(c + L["mem_write"], lambda mem=mem, addr=addr, v=v: mem.__setitem__(addr, v))
        elif op == Opcode.LW:
            self._install(sname, a, k, c)
        elif op == Opcode.MM:
            x = self._read_stream(sname, a, i.s, c).astype(np.int64)
            addr = i.addr + k
            acc = self.acc[sname]
            self._check_addr(sname, a, c, addr, len(acc), "accumulator")
            y = x @ self.weights[sname][i.buf].astype(np.int64)
            if i.acc:
                self._check_acc(sname, a, c, addr)
                y = y + acc[addr]
            y = (y & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
            due = c + L["mxm_mm"]
            self.acc_pending[sname].setdefault(addr, []).append((c, due))
            self._later(due, lambda acc=acc, addr=addr, y=y: acc.__setitem__(addr, y))
        elif op == Opcode.EMIT:
            addr = i.addr + k
            acc = self.acc[sname]
            self._check_addr(sname, a, c, addr, len(acc), "accumulator")
            self._check_acc(sname, a, c, addr)
            self._emit(sname, a, i.s, int32_to_planes(acc[addr]), c + L["mxm_emit"], c)
        elif op == Opcode.SEND:
            v = self._read_stream(sname, a, i.s, c)
            if self.tx_hook is None:
                raise ProgramError(c, sname, a.index, i, f"SEND on port {i.port}: this chip is not in a tray")
            self.tx_hook(i.port, c, v)
        elif op == Opcode.RECV:
            q = self.rx[i.port]
            if not q or q[0][0] > c:
                nxt = f"; the next arrives at cycle {q[0][0]}" if q else ""
                raise ProgramError(c, sname, a.index, i, f"RECV on port {i.port}: no vector has arrived{nxt}")
            _, v = q.pop(0)
            self._emit(sname, a, i.s, [v], c + L["c2c_recv"], c)
        elif OPS[op].unit == "vxm":
            self._vxm(sname, a, k, c)
        elif OPS[op].unit == "sxm":
            self._sxm(sname, a, k, c)
        else:  # pragma: no cover - check_program rejects every other opcode
            raise ProgramError(c, sname, a.index, i, f"{op.name} cannot run on this chip")

    def _install(self, sname, a, k, c):
        """LW element k: rows addr + k*R + j <- stream s+j (j < R, k*R + j < count), R = install_rows.
        Errors in the order the RTL flags them: streams past the last one, an empty stream, a row out
        of range; an element with an error installs nothing."""
        i, R = a.insn, self.cfg.install_rows
        if R > 1 and i.s.index + R > self.S:
            last = StreamRef(i.s.index + R - 1, i.s.west)
            raise ProgramError(c, sname, a.index, i,
                               f"LW installs {R} rows per cycle from streams {i.s}..{last}: stream index out of "
                               f"range (the chip has {self.S} streams per direction)")
        rows = range(k * R, min(k * R + R, i.count))
        vs = [self._read_stream(sname, a, StreamRef(i.s.index + r - k * R, i.s.west), c) for r in rows]
        for r in rows:
            self._check_addr(sname, a, c, i.addr + r, self.lanes, "weight row")
        w = self.weights[sname]
        for r, v in zip(rows, vs):
            self._later(c + self.L["mxm_install"], lambda w=w, b=i.buf, r=i.addr + r, v=v: w[b].__setitem__(r, v))

    def _check_addr(self, sname, a, c, addr, depth, what):
        if not 0 <= addr < depth:
            raise ProgramError(c, sname, a.index, a.insn, f"{what} address {addr} out of range 0..{depth - 1}")

    def _check_acc(self, sname, a, c, addr):
        """An accumulator read at cycle c must not overlap a write sampled earlier and committing later."""
        pend = self.acc_pending[sname].get(addr)
        if not pend:
            return
        pend[:] = [(w, due) for w, due in pend if due > c]
        for w, due in pend:
            if w < c:
                raise ProgramError(c, sname, a.index, a.insn,
                                   f"accumulator hazard: acc[{addr}] is read before the MM write to it from "
                                   f"cycle {w} commits (cycle {due}; keep {self.L['mxm_mm']} cycles between them)")

    def _vxm(self, sname, a, k, c):
        i, op, L = a.insn, a.insn.op, self.L
        rd = lambda s: self._read_stream(sname, a, s, c).astype(np.int64)  # noqa: E731
        if op == Opcode.LDM:
            v = self._read_stream(sname, a, i.a, c)
            u = v.view(np.uint8)
            s_ = sname
            if k == 0:
                fn = lambda: self.req_m[s_].__setitem__(  # noqa: E731
                    slice(None), ((self.req_m[s_].view(np.uint16) & 0xFF00) | u).view(np.int16))
            elif k == 1:
                fn = lambda: self.req_m[s_].__setitem__(  # noqa: E731
                    slice(None), ((self.req_m[s_].view(np.uint16) & 0x00FF) | (u.astype(np.uint16) << 8)).view(np.int16))
            elif k == 2:
                fn = lambda: self.req_sh[s_].__setitem__(slice(None), u.astype(np.int64) & 63)  # noqa: E731
            else:
                fn = lambda: self.req_z[s_].__setitem__(slice(None), v)  # noqa: E731
            self._later(c + 1, fn)
            return
        if op == Opcode.LDLUT:
            v = self._read_stream(sname, a, i.a, c)
            r = i.imm + k
            self._check_addr(sname, a, c, r, 256 // self.lanes, "LUT row")
            t = self.lut[sname]
            self._later(c + 1, lambda t=t, r=r, v=v: t.__setitem__(slice(r * self.lanes, (r + 1) * self.lanes), v))
            return
        lat = L[latency_key(op)]
        dst = [i.d]
        if op == Opcode.ADD32:
            r = (self._read_group(sname, a, i.a, c).astype(np.int64) + self._read_group(sname, a, i.b, c))
            out = int32_to_planes((r & 0xFFFFFFFF).astype(np.uint32).view(np.int32))
        elif op in (Opcode.REQ, Opcode.REQL):
            acc = self._read_group(sname, a, i.a, c)
            if op == Opcode.REQ:
                out = [requantize(acc, i.imm, i.sh)]
            else:
                out = [requantize(acc, self.req_m[sname], self.req_sh[sname], self.req_z[sname])]
        elif op == Opcode.LUT:
            x = self._read_stream(sname, a, i.a, c)
            out = [self.lut[sname][x.view(np.uint8)]]
        else:
            x = rd(i.a)
            if op in BINARY_OPS:
                y = np.full(self.lanes, i.imm, np.int64) if i.use_imm else rd(i.b)
            if op == Opcode.MOV:
                r = x
            elif op == Opcode.ADD:
                r = sat8(x + y)
            elif op == Opcode.SUB:
                r = sat8(x - y)
            elif op == Opcode.MUL:
                r = sat8(rshift_round(x * y, i.sh))
            elif op == Opcode.MIN:
                r = np.minimum(x, y)
            elif op == Opcode.MAX:
                r = np.maximum(x, y)
            elif op == Opcode.RELU:
                r = np.maximum(x, 0)
            elif op == Opcode.SHL:
                r = ((x << i.sh) & 0xFF).astype(np.uint8).view(np.int8)
            elif op == Opcode.SHR:
                r = x >> i.sh
            elif op == Opcode.AND:
                r = x & y
            elif op == Opcode.OR:
                r = x | y
            elif op == Opcode.XOR:
                r = x ^ y
            elif op == Opcode.SEL:
                r = np.where(rd(i.c) != 0, x, rd(i.b))
            else:  # pragma: no cover
                raise AssertionError(op)
            out = [np.asarray(r).astype(np.int8)]
        self._emit(sname, a, dst[0], out, c + lat, c)

    def _sxm(self, sname, a, k, c):
        i, op, lanes = a.insn, a.insn.op, self.lanes
        L = self.L["sxm"]
        if op == Opcode.LDPERM:
            v = self._read_stream(sname, a, i.a, c).view(np.uint8).astype(np.int64) % lanes
            self._later(c + 1, lambda s=sname, v=v: self.perm[s].__setitem__(slice(None), v))
            return
        x = self._read_stream(sname, a, i.a, c)
        j = np.arange(lanes)
        if op == Opcode.SHIFT:
            src = j - i.imm
            r = np.where((src >= 0) & (src < lanes), x[np.clip(src, 0, lanes - 1)], 0).astype(np.int8)
        elif op == Opcode.ROT:
            r = x[(j - i.imm) % lanes]
        elif op == Opcode.PERM:
            r = x[self.perm[sname]]
        elif op == Opcode.DIST:
            r = np.full(lanes, x[i.imm], np.int8)
        elif op == Opcode.TRANS:
            if k == 0:
                a.buf = np.zeros((lanes, lanes), np.int8)
            a.buf[k] = x
            if k == lanes - 1:
                for row in range(lanes):
                    self._emit(sname, a, i.d, [a.buf[:, row].copy()], c + L + row, c)
            return
        else:  # pragma: no cover
            raise AssertionError(op)
        self._emit(sname, a, i.d, [r], c + L, c)


def _advance(insn: Insn, lanes):
    """The next repetition of `insn` under REPEAT: its address continues where this one ended."""
    op = insn.op
    if op in (Opcode.READ, Opcode.WRITE):
        return insn.replace(addr=insn.addr + insn.count * insn.stride)
    if op in (Opcode.LW, Opcode.MM, Opcode.EMIT):
        return insn.replace(addr=insn.addr + insn.count)
    if op == Opcode.LDLUT:
        return insn.replace(imm=insn.imm + insn.count)
    return insn
