"""FastGolden's first run of a small program: one pass, no analysis, no dataflow.

A program new to the model (its plan not cached) with few elements per instruction runs here
(``FastGolden._fast_run``); a later run of it builds the plan (``fast.py``).  Every rule of the
reference is checked on the way (busy sub-unit, port conflict, empty stream slot, address out of
range, accumulator hazard, deadlock, queue past its end, work in flight at the end, ``max_cycles``).

1. **Issue.**  Each queue runs ahead on its own up to its next SYNC or HALT (busy sub-units are per
   queue, a NOTIFY only adds a fire cycle); then the parked queues are released in cycle order, each
   at the first fire after its SYNC.  READ and WRITE instructions (most of a program's elements) are
   done right there, all their elements at once: their addresses are static, and their data is taken
   when first needed (below).
2. **Elements.**  The other instructions (MXM, VXM, SXM, GATHER, SCATTER) run element by element, in
   cycle order, only in cycles where one of them has an element; a TRANS takes its rows all at once
   in its last element's cycle (what an element reads landed before its cycle: known by then).

What makes it cheap:

* the streams are not shifted every cycle: a result landing at position p in cycle c on an eastward
  stream travels along the diagonal c - p (westward: c + p), so a reader at position q in cycle c'
  sees the landing nearest upstream of q on its diagonal (one dict lookup);
* vectors are ``bytes`` (a copy is a reference); only computing elements go through numpy (the VXM
  / SXM register loads through the reference's own element code, ``Golden._vxm`` / ``_sxm``, on a shim),
  and on vectors of few lanes not even they: numpy's per-call cost is most of a 16-lane op, so
  lane-local ops are byte tables of their own numpy arithmetic (``_vx_insn``, ``_vx_small``);
* MEM is versioned: every write is logged per address with its commit cycle; a READ element's
  landing holds (bank, address, cycle) and a WRITE element's log entry its stream slot, resolved when
  a reader first needs them (by then everything they depend on is known: it happened in earlier
  cycles), and every WRITE slot at the end (an empty one is an error);
* nothing is written to the model until the run ended cleanly: MEM writes stay in the log, weights
  and the VXM / SXM registers are copies, accumulator writes are logged like MEM, all written back
  at the end.  On any error ``Bail`` is raised with the model untouched, and ``FastGolden`` redoes
  the run on ``Golden.run``, which reports the error itself.

Programs with C2C instructions (SEND, RECV, DESKEW), of more than ``budget`` elements, or of many
elements per instruction are not walked (``walk`` returns None): the plan's leveled dataflow takes an
instruction's elements at once and is faster there.
"""

import bisect
import heapq
import struct
from operator import getitem as _getitem
from operator import itemgetter

import numpy as np

from tinylpu.arith import requantize, rshift_round
from tinylpu.isa import BINARY_OPS, OPS, Opcode
from tinylpu.sim.golden.chip import _SUBUNIT, Golden, ProgramError, RunResult, _Active, _advance

__all__ = ["Bail", "TooLong", "walk"]


class Bail(Exception):
    """The program is in error: the run must be redone by ``Golden.run`` (nothing was written)."""


class TooLong(Bail):
    """The program does not halt within ``max_cycles``."""


class _NotWalked(Exception):
    """The program is not for the walk (C2C instructions, too many elements): plan it."""


# queue entry codes (>= 0: a unit instruction, its element code)
_NOP, _REP, _SYNC, _NOTIFY, _HALT = -1, -2, -3, -4, -5
# element codes
_READ, _WRITE, _GATHER, _SCATTER, _LW, _MM, _EMIT, _TRANS, _VX, _OTHER = range(10)
_CODES = {Opcode.READ: _READ, Opcode.WRITE: _WRITE, Opcode.GATHER: _GATHER, Opcode.SCATTER: _SCATTER,
          Opcode.LW: _LW, Opcode.MM: _MM, Opcode.EMIT: _EMIT, Opcode.TRANS: _TRANS}
_CTL = {Opcode.NOP: _NOP, Opcode.REPEAT: _REP, Opcode.SYNC: _SYNC, Opcode.NOTIFY: _NOTIFY, Opcode.HALT: _HALT}
# VXM and SXM ops computed here (the others, which use unit registers, run the reference's code)
_VX_OPS = frozenset((Opcode.MOV, Opcode.ADD, Opcode.SUB, Opcode.MUL, Opcode.MIN, Opcode.MAX, Opcode.RELU, Opcode.SHL,
                     Opcode.SHR, Opcode.AND, Opcode.OR, Opcode.XOR, Opcode.SEL, Opcode.REQ, Opcode.ADD32,
                     Opcode.SHIFT, Opcode.ROT, Opcode.DIST, Opcode.PERM, Opcode.LUT, Opcode.REQL))
# (of those, the ones that read unit registers: the shim's working copies, loaded by the shim's effects)
_REGS = frozenset(id(op) for op in (Opcode.PERM, Opcode.LUT, Opcode.REQL))
# (by id: an enum member's hash runs Python code)
_DEC = {}
for _op, _info in OPS.items():
    if _op in _CTL:
        _DEC[id(_op)] = (_CTL[_op], None, None)
    elif _info.unit in ("mem", "mxm", "vxm", "sxm"):
        _sub = _SUBUNIT.get(_op) or ("alu" if _info.unit == "vxm" else "sxm")
        _DEC[id(_op)] = (_CODES.get(_op, _VX if _op in _VX_OPS else _OTHER), _sub, _sub + "_busy")
    # (C2C: SEND, RECV, DESKEW are not walked)
_I8, _I64 = np.int8, np.int64
_DUE = itemgetter(0)
_LE32 = np.dtype("<i4")        # (byte plane b of an int32 is its byte b from the least significant)


# id(config) -> (config, {id(op): (code, sub-unit, "<sub>_busy", latency)},
#                {id(insn): (insn, position, first and last address, stride, stream key offset, signed
#                 position)} of the READ / WRITE instructions walked)
_TABLES = {}
_RW_MAX = 1 << 14
# a program of more than _PLAN_ELEMS elements and more than _PLAN_PER_UNIT per unit instruction is
# planned, not walked (see the test after the issue)
_PLAN_ELEMS, _PLAN_PER_UNIT = 300, 12


def _table(cfg):
    """Per opcode (by id): its code, sub-unit, activity key and the latency of its last effect after
    its last element (-1: kept by the shim); cached per configuration."""
    e = _TABLES.get(id(cfg))
    if e is not None and e[0] is cfg:
        return e[1]
    L, lanes = cfg.latency, cfg.lanes
    lat = {_READ: L["mem_read"], _GATHER: L["mem_read"], _WRITE: L["mem_write"], _SCATTER: L["mem_write"],
           _LW: L["mxm_install"], _MM: L["mxm_mm"], _EMIT: L["mxm_emit"], _TRANS: lanes - 1 + L["sxm"]}
    out = {}
    for op, info in OPS.items():
        code, sub, subbusy = t = _DEC.get(id(op), (None, None, None))
        if code is None:
            continue
        if code == _VX:
            t += (L[info.latency],)
        elif code >= 0:
            t += (lat.get(code, -1),)
        out[id(op)] = t
    _TABLES[id(cfg)] = (cfg, out, {})
    if len(_TABLES) > 64:
        _TABLES.pop(next(iter(_TABLES)))
    return out


def _i64(v):
    return np.frombuffer(v, _I8).astype(_I64)


def _int32(planes):
    """int32 lanes from their four byte planes (``arith.planes_to_int32``)."""
    b = bytearray(4 * len(planes[0]))
    b[0::4], b[1::4], b[2::4], b[3::4] = planes
    return np.frombuffer(b, _LE32).astype(np.int32, copy=False)


def _planes(v):
    """The four byte planes of int32 lanes (``arith.int32_to_planes``)."""
    b = v.astype(_LE32, copy=False).tobytes()
    return [b[0::4], b[1::4], b[2::4], b[3::4]]


_IN_A, _IN_AB = [("a", 1)], [("a", 1), ("b", 1)]
_BITWISE = {Opcode.AND: int.__and__, Opcode.OR: int.__or__, Opcode.XOR: int.__xor__}
# (``arith.sat8`` is a clip to [-128, 127]: np.minimum / np.maximum are the same, and cheaper)
_mn, _mx = np.minimum, np.maximum
_ARITH = {Opcode.ADD: lambda x, y, sh: _mx(_mn(x + y, 127), -128),
          Opcode.SUB: lambda x, y, sh: _mx(_mn(x - y, 127), -128),
          Opcode.MUL: lambda x, y, sh: _mx(_mn(rshift_round(x * y, sh), 127), -128),
          Opcode.MIN: lambda x, y, sh: _mn(x, y), Opcode.MAX: lambda x, y, sh: _mx(x, y)}


def _vx(op, f, lanes, shim, sname):
    """A VXM / SXM op as (stream operands [(field, planes)], function of their byte vectors -> result
    planes), the arithmetic of ``Golden._vxm`` / ``_sxm`` (unit registers: the shim's working copies,
    changed in place by its loads)."""
    imm, sh = f.get("imm"), f.get("sh")
    if op in BINARY_OPS:
        use_imm = f["use_imm"]
        ins = _IN_A if use_imm else _IN_AB
        fn = _BITWISE.get(op)
        if fn is not None:
            # (bitwise: byte by byte, on the vectors as integers)
            if use_imm:
                y = int.from_bytes(bytes([imm & 0xFF]) * lanes, "little")
                return ins, lambda v: [fn(int.from_bytes(v[0], "little"), y).to_bytes(lanes, "little")]
            return ins, lambda v: [fn(int.from_bytes(v[0], "little"),
                                      int.from_bytes(v[1], "little")).to_bytes(lanes, "little")]
        fn = _ARITH[op]
        if use_imm:
            yi = np.full(lanes, imm, _I64)
            return ins, lambda v: [fn(_i64(v[0]), yi, sh).astype(_I8).tobytes()]
        return ins, lambda v: [fn(_i64(v[0]), _i64(v[1]), sh).astype(_I8).tobytes()]
    if op is Opcode.MOV:
        return [("a", 1)], lambda v: [v[0]]
    if op is Opcode.RELU:
        return [("a", 1)], lambda v: [np.maximum(_i64(v[0]), 0).astype(_I8).tobytes()]
    if op is Opcode.SHL:
        return [("a", 1)], lambda v: [((_i64(v[0]) << sh) & 0xFF).astype(np.uint8).tobytes()]
    if op is Opcode.SHR:
        return [("a", 1)], lambda v: [(_i64(v[0]) >> sh).astype(_I8).tobytes()]
    if op is Opcode.SEL:
        return [("a", 1), ("b", 1), ("c", 1)], lambda v: [
            np.where(np.frombuffer(v[2], _I8) != 0, np.frombuffer(v[0], _I8), np.frombuffer(v[1], _I8)).tobytes()]
    if op is Opcode.REQ:
        return [("a", 4)], lambda v: [requantize(_int32(v), imm, sh).tobytes()]
    if op is Opcode.ADD32:
        return [("a", 4), ("b", 4)], lambda v: _planes(_int32(v[:4]) + _int32(v[4:]))
    if op is Opcode.SHIFT:
        if imm >= 0:
            return [("a", 1)], lambda v: [bytes(imm) + v[0][:lanes - imm]]
        return [("a", 1)], lambda v: [v[0][-imm:] + bytes(-imm)]
    if op is Opcode.ROT:
        m = imm % lanes
        return [("a", 1)], lambda v: [v[0][lanes - m:] + v[0][:lanes - m]]
    if op is Opcode.DIST:
        return [("a", 1)], lambda v: [v[0][imm:imm + 1] * lanes]
    if op is Opcode.PERM:
        perm = shim.perm[sname]
        return [("a", 1)], lambda v: [np.frombuffer(v[0], _I8)[perm].tobytes()]
    if op is Opcode.LUT:
        lut = shim.lut[sname]
        return [("a", 1)], lambda v: [lut[np.frombuffer(v[0], np.uint8)].tobytes()]
    if op is Opcode.REQL:
        m, shr, z = shim.req_m[sname], shim.req_sh[sname], shim.req_z[sname]
        return [("a", 4)], lambda v: [requantize(_int32(v), m, shr, z).tobytes()]
    raise AssertionError(op)     # pragma: no cover


# lane-local ops of one byte operand: each result byte a function of its input byte alone
_BYTEWISE = frozenset(id(op) for op in (Opcode.RELU, Opcode.SHL, Opcode.SHR))
_BYTEWISE_IMM = frozenset(id(op) for op in BINARY_OPS)          # (with an immediate operand)
_IDENTITY = bytes(range(256))
_VX_MEMO = {}                 # id(insn) -> (insn, lanes, its _vx), for the ops without unit registers
_VX_MEMO_MAX = 1 << 12


_SMALL_LANES = 64             # up to this many lanes, ``_vx_small``'s plain Python beats numpy's per-call cost
_TABLES2 = {}                 # (id(op), sh) -> (op, the 256 rows of a two-operand byte op's table)
_TABLES2_MAX = 64
_NONZERO = bytes([0]) + bytes([0xFF]) * 255      # (translation: a byte's select mask)
_REQ_INT32 = {}               # lanes -> struct format of the int32 lanes of four interleaved planes


def _table2(op, sh):
    """The byte op `op` (shift `sh`) of two int8 operands as a table of 256 rows of 256 bytes, row x
    entry y its result on the bytes x, y: the op's own arithmetic (``_vx``) on all 65536 pairs at
    once.  Kept per (op, shift), rows and all: a first run meets new instruction words, not new ops."""
    e = _TABLES2.get((id(op), sh))
    if e is not None and e[0] is op:
        return e[1]
    x = np.repeat(np.arange(256, dtype=np.uint8), 256).view(_I8).tobytes()
    y = np.tile(np.arange(256, dtype=np.uint8), 256).view(_I8).tobytes()
    _, fn = _vx(op, {"use_imm": 0, "sh": sh}, 65536, None, None)
    t = fn([x, y])[0]
    if len(t) != 65536:                           # pragma: no cover - every such op maps bytes to bytes
        raise AssertionError(op)
    rows = [t[r << 8:(r + 1) << 8] for r in range(256)]
    if len(_TABLES2) >= _TABLES2_MAX:
        _TABLES2.clear()
    _TABLES2[(id(op), sh)] = (op, rows)
    return rows


def _vx_small(op, f, lanes):
    """A few ops of ``_vx`` on vectors of few lanes in plain Python (numpy's per-call cost is most
    of a small vector's time): the two-operand byte ops (ADD, SUB, MUL, MIN, MAX) by a table of
    their own arithmetic, SEL by masks on the vectors as integers, REQ lane by lane; None for the
    other ops."""
    if op in _ARITH and not f["use_imm"]:
        # (row x of the table: the results on x, y)
        getrow = _table2(op, f["sh"] if op is Opcode.MUL else 0).__getitem__
        return _IN_AB, lambda v: [bytes(map(_getitem, map(getrow, v[0]), v[1]))]
    if op is Opcode.SEL:
        full = (1 << (8 * lanes)) - 1

        def sel(v):
            m = int.from_bytes(v[2].translate(_NONZERO), "little")
            a, b = int.from_bytes(v[0], "little"), int.from_bytes(v[1], "little")
            return [((a & m) | (b & (full ^ m))).to_bytes(lanes, "little")]
        return [("a", 1), ("b", 1), ("c", 1)], sel
    if op is Opcode.REQ:
        # requantize(acc, imm, sh): sat8(rshift_round(acc * imm, min(sh, 62))), exact in Python ints
        m, sh = f["imm"], min(f["sh"], 62)
        bias = 1 << (sh - 1) if sh > 0 else 0
        fmt = _REQ_INT32.get(lanes) or _REQ_INT32.setdefault(lanes, struct.Struct(f"<{lanes}i"))

        def req(v):
            b = bytearray(4 * lanes)
            b[0::4], b[1::4], b[2::4], b[3::4] = v
            out = bytearray(lanes)
            for i, x in enumerate(fmt.unpack(b)):
                x = (x * m + bias) >> sh
                out[i] = x & 0xFF if -128 <= x <= 127 else (0x7F if x > 0 else 0x80)
            return [bytes(out)]
        return [("a", 4)], req
    return None


def _vx_insn(insn, lanes, shim, sname):
    """``_vx`` of instruction `insn`, remembered per instruction (decoded once per instruction word:
    a function of its opcode and fields alone, unless it reads unit registers); a lane-local op of one
    byte operand becomes a 256-byte translation table (the op's own arithmetic on all 256 byte values
    at once), applied by ``bytes.translate``."""
    op = insn.op
    if id(op) in _REGS:
        return _vx(op, insn.fields, lanes, shim, sname)
    e = _VX_MEMO.get(id(insn))
    if e is not None and e[0] is insn and e[1] == lanes:
        return e[2]
    f = insn.fields
    if id(op) in _BYTEWISE or (id(op) in _BYTEWISE_IMM and f["use_imm"]):
        ins, fn = _vx(op, f, 256, None, sname)
        tbl = fn([_IDENTITY])[0]
        if len(tbl) != 256:                       # pragma: no cover - every such op maps bytes to bytes
            raise AssertionError(op)
        r = (ins, lambda v: [v[0].translate(tbl)])
    else:
        r = _vx_small(op, f, lanes) if lanes <= _SMALL_LANES else None
        if r is None:
            r = _vx(op, f, lanes, None, sname)
    if len(_VX_MEMO) >= _VX_MEMO_MAX:
        _VX_MEMO.clear()
    _VX_MEMO[id(insn)] = (insn, lanes, r)
    return r


def _pick(lst, q):
    """The landing nearest upstream of signed position q among several on one diagonal."""
    if lst.__class__ is tuple:
        raise Bail                           # (one landing, downstream of the reader)
    best = None
    for e in lst:
        if e[0] <= q and (best is None or e[0] > best[0]):
            best = e
    if best is None:
        raise Bail                           # an empty stream slot
    return best[1]


class _Shim:
    """What ``Golden._vxm`` / ``_sxm`` use of a model, on the walk's streams and working copies."""
    _read_group = Golden._read_group
    _vxm = Golden._vxm
    _sxm = Golden._sxm
    _check_addr = Golden._check_addr

    def __init__(self, g, rd, emit, later):
        self.lanes, self.L, self.cfg = g.lanes, g.L, g.cfg
        self.lut = {k: v.copy() for k, v in g.lut.items()}
        self.req_m = {k: v.copy() for k, v in g.req_m.items()}
        self.req_sh = {k: v.copy() for k, v in g.req_sh.items()}
        self.req_z = {k: v.copy() for k, v in g.req_z.items()}
        self.perm = {k: v.copy() for k, v in g.perm.items()}
        self.pos, self.P = g.pos, g.P
        self.ports = set()                   # due * positions + position of every VXM / SXM result
        self.maxdue = -1
        self._rd, self._put, self._later_fn = rd, emit, later

    def _read_stream(self, sname, a, s, c):
        return np.frombuffer(self._rd(1 if s.west else 0, s.index, self.pos[sname], c), _I8)

    def _emit(self, sname, a, s, vecs, due, c):
        # (the only results that can collide on a port: VXM ops of different latencies; MEM, MXM and
        # SXM results of one sub-unit land in distinct cycles)
        p = self.pos[sname]
        pk = due * self.P + p
        if pk in self.ports:
            raise Bail                       # a second result on the slice's port in that cycle
        self.ports.add(pk)
        if due > self.maxdue:
            self.maxdue = due
        d = 1 if s.west else 0
        for b, v in enumerate(vecs):
            self._put(p, d, s.index + b, v.tobytes(), due)

    def _later(self, due, fn):
        if due > self.maxdue:
            self.maxdue = due
        self._later_fn(due, fn)

    def commit(self, g):
        for attr in ("lut", "req_m", "req_sh", "req_z", "perm"):
            dst = getattr(g, attr)
            for k, v in getattr(self, attr).items():
                dst[k][...] = v


def walk(g, max_cycles, budget):
    """Run the loaded program on model `g` in one pass: its ``RunResult`` (the model's state written),
    ``Bail`` on a program error (nothing written), or None if the program is not for the walk."""
    held = []
    try:
        return _walk(g, max_cycles, budget, held)
    finally:
        # (the walk's nested functions refer to each other through their cells: a reference cycle
        # that would keep all they hold, the model too, alive until the next cyclic collection, and
        # make that collection cost ~10 % of a small run.  ``held``: the function that empties
        # those cells, then the walk's containers, emptied now)
        if held:
            held[0]()
            for x in held[1:]:
                x.clear()


def _walk(g, max_cycles, budget, held):
    cfg, L = g.cfg, g.L
    lanes, S, P = g.lanes, g.S, g.P
    R = cfg.install_rows
    program = g.program
    # Streams: a result landing at position p in cycle t on stream s travels along a diagonal, key
    # t * NDS + off(p, s) with off = -p * NDS + s eastward, p * NDS + S + s westward; a reader at
    # position p' in cycle t' looks up t' * NDS + off(p', s) and takes the landing nearest upstream:
    # with signed positions q = p eastward, -p westward, the largest q <= its own.
    NDS = 2 * S
    pos = g.pos
    mem_depth, acc_depth = cfg.mem_depth, cfg.acc_depth
    Lrd, Lwr, Linst, Lmm, Lemit, Lnot, Lsxm = (L["mem_read"], L["mem_write"], L["mxm_install"], L["mxm_mm"],
                                              L["mxm_emit"], L["notify"], L["sxm"])
    # diagonal key -> (signed position, value) or a list of them; a value: bytes, or a READ element's
    # (bank record, address, cycle)
    land = {}
    eff = {}                  # due cycle -> [effect] (VXM / SXM register loads)
    eheap = []
    # bank -> [{addr: [[commit cycle, bytes or None, WRITE's stream key, its signed position]]}, array,
    #          valid rows, name, the array's bytes]
    banks = {}
    # mxm -> [[weights (bytearray) per buffer, once installed into], [int32 weights per buffer], acc,
    #         {addr: [[cycle, commit cycle, int32 row (None: not computed yet), its MM unit's pending
    #         products, addr]]}, [(commit cycle, buffer, row, bytes)] installs,
    #         the model's weights, installs done]
    mxms = {}
    shim = None
    vports = set()            # due * P + position of every VXM / SXM result (the only ones that can collide)
    starts = {}               # first cycle -> [unit record] (the units of phase 2)

    def unlink():
        nonlocal offq, mem_at, get, rd, put, later, bank, mxm, install, acc_src, acc_row, products, acc_at, apply
        nonlocal run_ahead, dispatch, shim
        offq = mem_at = get = rd = put = later = bank = mxm = install = acc_src = acc_row = products = None
        acc_at = apply = None
        run_ahead = dispatch = shim = None

    held += [unlink, land, eff, banks, mxms, vports, starts]

    def offq(p, west, s):
        return (p * NDS + S + s, -p) if west else (s - p * NDS, p)

    def mem_at(bk, addr, cyc):
        """Row addr of bank record bk in cycle cyc (every write committed by then)."""
        lst = bk[0].get(addr)
        if lst is not None:
            for i in range(len(lst) - 1, -1, -1):
                ent = lst[i]
                if ent[0] <= cyc:
                    v = ent[1]
                    if v is None:
                        v = ent[1] = get(ent[2], ent[3])      # (a WRITE element's stream operand)
                    return v
        if addr >= bk[2]:                                     # (a lazily zeroed bank: zero up to addr)
            g.mem.rows(bk[3], addr + 1)
            bk[2] = g.mem._mark[bk[3]]
        return bk[4][addr * lanes:(addr + 1) * lanes].tobytes()

    def get(key, q):
        """The vector that a reader at signed position q sees on diagonal key (``Bail``: none)."""
        e = land.get(key)
        if e is None:
            raise Bail                        # an empty stream slot
        v = e[1] if e.__class__ is tuple and e[0] <= q else _pick(e, q)
        if v.__class__ is tuple:              # (a READ's row, read when first needed)
            bk, addr, cyc = v
            if addr < bk[2] and addr not in bk[0]:
                return bk[4][addr * lanes:(addr + 1) * lanes].tobytes()     # (never written)
            return mem_at(bk, addr, cyc)
        return v

    def rd(d, s, p, c):
        off, q = offq(p, d, s)
        return get(c * NDS + off, q)

    def put(p, d, s, v, due):
        off, q = offq(p, d, s)
        key = due * NDS + off
        e = land.get(key)
        if e is None:
            land[key] = (q, v)
        elif e.__class__ is tuple:
            land[key] = [e, (q, v)]
        else:
            e.append((q, v))

    def later(due, e):
        lst = eff.get(due)
        if lst is None:
            eff[due] = [e]
            heapq.heappush(eheap, due)
        else:
            lst.append(e)

    def bank(name):
        b = banks.get(name)
        if b is None:
            a = g.mem.rows(name, 0)
            b = banks[name] = [{}, a, g.mem._mark[name], name, memoryview(a).cast("B")]
        return b

    def mxm(name):
        m = mxms.get(name)
        if m is None:
            m = mxms[name] = [[None, None], [None, None], g.acc[name], {}, [], g.weights[name], 0]
        return m

    def install(m, upto):
        """Install the weight rows of MXM record m committed by cycle upto (in commit order)."""
        pend, i = m[4], m[6]
        while i < len(pend) and pend[i][0] <= upto:
            _, buf, row, v = pend[i]
            rows = m[0][buf]
            if rows is None:                  # (the buffer's bytes, from the model's weights)
                rows = m[0][buf] = bytearray(m[5][buf].tobytes())
            rows[row * lanes:(row + 1) * lanes] = v
            m[1][buf] = None
            i += 1
        m[6] = i

    def acc_src(m, addr, c):
        """The write that accumulator entry addr holds in cycle c (None: the model's row); Bail on a
        hazard (a write sampled before c and committed after it)."""
        lst = m[3].get(addr)
        if lst:
            for i in range(len(lst) - 1, -1, -1):
                e = lst[i]
                if e[1] <= c:
                    return e
                if e[0] < c:
                    raise Bail                # accumulator hazard
        return None

    def acc_row(m, addr, e):
        """The int32 row of accumulator write e (``acc_src``) at addr: its products computed now."""
        if e is None:
            return m[2][addr]
        if e[2] is None:
            products(m, e[3])
        return e[2]

    def products(m, batch):
        """Compute the pending MM elements of one MM unit [(write, vector, weights, accumulated
        write or False)]: one matmul per run of them on the same weights (a product is needed only
        when read: by an EMIT, an accumulating MM or the write-back)."""
        items = batch[:]
        batch.clear()
        i, n = 0, len(items)
        while i < n:
            w = items[i][2]
            j = i + 1
            while j < n and items[j][2] is w:
                j += 1
            # (int32 arithmetic: the products' sums fit, and the accumulation wraps as the
            # reference's int64 sum taken mod 2**32)
            y = np.frombuffer(b"".join([it[1] for it in items[i:j]]), _I8).reshape(j - i, lanes) @ w
            for k in range(i, j):
                e, _, _, src = items[k]
                r = y[k - i]
                e[2] = r if src is False else r + acc_row(m, e[4], src)
            i = j

    def acc_at(m, addr, c):
        """Accumulator entry addr in cycle c (int32 row); Bail on a hazard."""
        return acc_row(m, addr, acc_src(m, addr, c))

    def apply(upto):
        while eheap and eheap[0] <= upto:
            for e in eff.pop(heapq.heappop(eheap)):
                e[1]()

    # --- phase 1: the issue schedule.  Each queue runs ahead on its own up to its next SYNC or HALT
    # (busy sub-units are per queue; a NOTIFY only adds a fire cycle); then the parked queues are
    # released in cycle order, each at the first fire after its SYNC (every fire up to the earliest
    # release is known by then: a fire after it needs a release first).  READ and WRITE units are
    # done at once here; the others are collected by first cycle for phase 2.
    dec = _table(cfg)
    rwm = _TABLES[id(cfg)][2]
    queues = program.queues
    total = sum(map(len, queues.values()))
    if total > budget:
        return None
    # (a program of more elements than this is not walked whatever else it issues: it has at most
    # `total` unit instructions, see the test after the issue)
    many = max(_PLAN_ELEMS, _PLAN_PER_UNIT * total)
    REP, HALT, SYNC = _REP, _HALT, _SYNC
    NOP_OP = Opcode.NOP
    activity = {n: {"issued": 0} for n in pos}
    halted = {n: -1 for n in pos if n not in queues}
    fires = []                # NOTIFY fire cycles
    parked = []               # [sync cycle, name, pc, queue state]
    last_halt = maxbusy = maxdue = -1
    elems = units = 0

    def run_ahead(name, insns, pc, c, st):
        """Issue queue `name` from instruction pc in cycle c up to its next SYNC (parked) or HALT.
        ``st``: [{sub-unit: busy until}, last unit instruction (entry, insn, fields, index), its cycle]."""
        nonlocal last_halt, elems
        act = activity[name]
        busy_until = st[0]
        p = pos[name]
        ninsns = len(insns)
        while True:
            if c >= max_cycles:
                raise TooLong
            if pc >= ninsns:
                raise Bail                                # ran past its last instruction
            insn = insns[pc]
            op = insn.op
            if op is NOP_OP:                              # (most of a queue: decoded first)
                pc += 1
                c += insn.fields["n"]
                continue
            e = dec.get(id(op))
            if e is None:
                raise _NotWalked                          # (C2C)
            code = e[0]
            if code == REP:
                f = insn.fields
                last = st[1]
                if last is None:                          # pragma: no cover - check_program forbids it
                    raise _NotWalked
                reps, d = f["n"], f["d"]
                elems += reps * last[4]
                if elems > budget or elems > many:
                    raise _NotWalked                      # (see below)
                idx = last[3]
                pc += 1
                t0 = st[2]
                for r in range(1, reps + 1):
                    if t0 + r * d >= max_cycles:
                        raise TooLong
                    dispatch(name, p, act, busy_until, last[0], last[1], last[2], idx, t0 + r * d, r)
                c = t0 + (reps + 1) * d
                continue
            if code < 0:
                pc += 1
                if code == HALT:
                    halted[name] = c
                    if c > last_halt:
                        last_halt = c
                    act["issued"] = pc
                    return
                if code == SYNC:
                    parked.append([c, name, pc, st])
                    act["issued"] = pc
                    return
                fires.append(c + Lnot)                    # NOTIFY
                c += 1
                continue
            f = insn.fields
            n = dispatch(name, p, act, busy_until, e, insn, f, pc, c, 0)
            st[1] = (e, insn, f, pc, n)
            st[2] = c
            pc += 1
            c += 1

    def dispatch(name, p, act, busy_until, e, insn, f, idx, c, rep):
        """Dispatch unit instruction insn (repetition `rep` of it) at cycle c; its element count."""
        nonlocal maxbusy, maxdue, shim, elems, units
        code, sub = e[0], e[1]
        n = busy = f["count"]
        if code == _LW:
            n = busy = -(-n // R)
        elif code == _TRANS:
            n, busy = lanes, 2 * lanes
        if not rep:
            units += 1
            elems += n
            if elems > budget or elems > many:
                raise _NotWalked                          # (see below)
        if busy_until.get(sub, -1) >= c:
            raise Bail                                    # sub-unit busy
        b_end = c + busy - 1
        busy_until[sub] = b_end
        if b_end > maxbusy:
            maxbusy = b_end
        if e[3] >= 0 and c + n - 1 + e[3] > maxdue:
            maxdue = c + n - 1 + e[3]
        act[e[2]] = act.get(e[2], 0) + busy
        if code <= _WRITE:
            # READ, WRITE: all elements now (the addresses are static); a READ's rows are read when
            # first needed (``mem_at``: the bank as in the element's cycle), a WRITE's operands when
            # first needed or at the end (``get``)
            m = rwm.get(id(insn))
            if m is None or m[0] is not insn or m[1] != p:
                # (its first and last address, stride and stream key offset, decoded once per
                # instruction word and position)
                s = f["s"]
                a0, st = f["addr"], f["stride"]
                m = (insn, p, a0, a0 + (n - 1) * st, st) + offq(p, s.west, s.index)
                if len(rwm) >= _RW_MAX:
                    rwm.clear()
                rwm[id(insn)] = m
            _, _, a0, a1, st, off, sq = m
            if rep:
                a0 += rep * n * st
                a1 += rep * n * st
            if a0 < 0 or a1 < 0 or a0 >= mem_depth or a1 >= mem_depth:
                raise Bail                                # an address out of the bank
            bk = banks.get(name) or bank(name)
            if code == _READ:
                key = (c + Lrd) * NDS + off
                cyc = c
                for addr in range(a0, a1 + st, st) if st else [a0] * n:
                    v = (sq, (bk, addr, cyc))
                    e = land.get(key)
                    if e is None:
                        land[key] = v
                    elif e.__class__ is tuple:
                        land[key] = [e, v]
                    else:
                        e.append(v)
                    key += NDS
                    cyc += 1
            else:
                ov = bk[0]
                key = c * NDS + off
                due = c + Lwr
                for addr in range(a0, a1 + st, st) if st else [a0] * n:
                    ent = [due, None, key, sq]
                    lst = ov.get(addr)
                    if lst is None:
                        ov[addr] = [ent]
                    else:
                        lst.append(ent)
                    key += NDS
                    due += 1
            return n
        if code <= _SCATTER:                              # GATHER, SCATTER
            s, a = f["s"], f["a"]
            off, sq = offq(p, s.west, s.index)
            aoff, aq = offq(p, a.west, a.index)
            u = [code, c, n, bank(name), None, f["addr"], 0, off, sq, aoff, aq]
        elif code <= _EMIT:                               # LW, MM, EMIT
            s = f["s"]
            a0 = f["addr"]
            if rep:
                a0 += rep * f["count"]
            off, sq = offq(p, s.west, s.index)
            u = [code, c, n, mxm(name), None, a0, f["buf"], off, sq, f["acc"], f["count"], p, s.west, s.index, []]
        elif code == _VX:
            op = insn.op
            if shim is None and id(op) in _REGS:
                shim = _Shim(g, rd, put, lambda due, fn: later(due, (3, fn)))
                shim.ports = vports
            ins, run_ = _vx_insn(insn, lanes, shim, name)
            offs = []
            for fld, planes in ins:
                s = f[fld]
                for b in range(planes):
                    offs.append(offq(p, s.west, s.index + b))
            dd = f["d"]
            off, sq = offq(p, dd.west, dd.index)
            u = [code, c, n, run_, None, offs, off, sq, p, e[3]]
        elif code == _TRANS:
            a, dd = f["a"], f["d"]
            off, sq = offq(p, dd.west, dd.index)
            aoff, aq = offq(p, a.west, a.index)
            # (one step, in its last element's cycle: it reads its rows then, see phase 2)
            u = [code, c + n - 1, 1, None, None, c, 0, off, sq, aoff, aq]
            c += n - 1
        else:
            if shim is None:
                shim = _Shim(g, rd, put, lambda due, fn: later(due, (3, fn)))
                shim.ports = vports
            for _ in range(rep):
                insn = _advance(insn, lanes)
            u = [code, c, n, _Active(sub, insn, idx, c, n, b_end), name, shim._sxm if sub == "sxm" else shim._vxm]
        lst = starts.get(c)
        if lst is None:
            starts[c] = [u]
        else:
            lst.append(u)
        return n

    try:
        for name, insns in queues.items():
            run_ahead(name, insns, 0, 0, [{}, None, 0])
        while parked:
            # release the queue(s) with the earliest release: the first fire after each one's SYNC
            best = None
            for i, (s_c, *_rest) in enumerate(parked):
                f_c = min((x for x in fires if x > s_c), default=None)
                if f_c is not None and (best is None or f_c < best[0]):
                    best = (f_c, i)
            if best is None:
                raise Bail                                # deadlock: queues in SYNC, no NOTIFY coming
            _, name, pc, st = parked.pop(best[1])
            run_ahead(name, queues[name], pc, best[0], st)
        if elems > _PLAN_ELEMS and elems > _PLAN_PER_UNIT * units:
            # many elements per instruction (long counts, REPEAT bursts): the plan's leveled dataflow
            # takes an instruction's elements at once, and is faster there (measured on compiled layers).
            # (Decided on the program's totals, after the issue: a test of the totals so far would
            # depend on which queue comes first.  The issue stops early only where this test is sure
            # to fail: more than `budget` elements, or more than _PLAN_PER_UNIT per instruction of the
            # program.)
            return None
        # --- phase 2: the elements of the other units, cycle by cycle
        order = sorted(starts)
        no = len(order)
        i = 0
        active = []
        c = order[0] if no else 0
        while i < no or active:
            if i < no and order[i] == c:
                active += starts[order[i]]
                i += 1
            if eheap and eheap[0] <= c:
                apply(c)
            cN = c * NDS
            done = False
            for u in active:
                k = c - u[1]
                if k == u[2] - 1:
                    done = True
                code = u[0]
                if code == _VX:
                    vals = []
                    for off, q in u[5]:
                        e = land.get(cN + off)
                        if e is None:
                            raise Bail                # an empty stream slot
                        v = e[1] if e.__class__ is tuple and e[0] <= q else _pick(e, q)
                        vals.append(v if v.__class__ is bytes else mem_at(*v))
                    due = c + u[9]
                    pk = due * P + u[8]
                    if pk in vports:
                        raise Bail                    # a second result on the slice's port in that cycle
                    vports.add(pk)
                    key = due * NDS + u[6]
                    for v in u[3](vals):
                        e = land.get(key)
                        if e is None:
                            land[key] = (u[7], v)
                        elif e.__class__ is tuple:
                            land[key] = [e, (u[7], v)]
                        else:
                            e.append((u[7], v))
                        key += 1
                elif code == _TRANS:
                    # its rows (element k reads row k in cycle u[5] + k) all read now, in the last
                    # element's cycle: every landing a reader up to this cycle sees is known (one
                    # found later lands after it); then column r lands r cycles after column 0
                    key, q = u[5] * NDS + u[9], u[10]
                    m = b"".join([get(k, q) for k in range(key, key + lanes * NDS, NDS)])
                    key = cN + Lsxm * NDS + u[7]
                    for r in range(lanes):
                        e = land.get(key)
                        v = (u[8], m[r::lanes])               # (column r: byte r of every row)
                        if e is None:
                            land[key] = v
                        elif e.__class__ is tuple:
                            land[key] = [e, v]
                        else:
                            e.append(v)
                        key += NDS
                elif code == _LW:
                    if R == 1:
                        v = get(cN + u[7], u[8])
                        row = u[5] + k
                        if not 0 <= row < lanes:
                            raise Bail                # a weight row out of range
                        u[3][4].append((c + Linst, u[6], row, v))
                        continue
                    m, d, s0, cnt, p = u[3], u[12], u[13], u[10], u[11]
                    r0 = k * R
                    rows = range(r0, min(r0 + R, cnt))
                    vs = [rd(d, s0 + r - r0, p, c) for r in rows]
                    due = c + Linst
                    for r, v in zip(rows, vs):
                        row = u[5] + r
                        if not 0 <= row < lanes:
                            raise Bail
                        m[4].append((due, u[6], row, v))
                elif code == _MM:
                    m = u[3]
                    v = get(cN + u[7], u[8])
                    addr = u[5] + k
                    if not 0 <= addr < acc_depth:
                        raise Bail                    # an accumulator address out of range
                    buf = u[6]
                    if m[6] < len(m[4]) and m[4][m[6]][0] <= c:
                        install(m, c)
                    w = m[1][buf]
                    if w is None:
                        rows = m[0][buf]
                        w = m[1][buf] = (m[5][buf] if rows is None else
                                         np.frombuffer(rows, _I8).reshape(lanes, lanes)).astype(np.int32)
                    # (the product is computed when first read, with the unit's others: ``products``;
                    # a pending write it accumulates onto is computed now, so no chain of them builds up)
                    src = False
                    if u[9]:
                        src = acc_src(m, addr, c)
                        if src is not None and src[2] is None:
                            products(m, src[3])
                    ent = [c, c + Lmm, None, u[14], addr]
                    u[14].append((ent, v, w, src))
                    lst = m[3].get(addr)
                    if lst is None:
                        m[3][addr] = [ent]
                    else:
                        lst.append(ent)
                elif code == _EMIT:
                    addr = u[5] + k
                    if not 0 <= addr < acc_depth:
                        raise Bail
                    pl = acc_at(u[3], addr, c).astype(_LE32, copy=False).tobytes()
                    key = cN + Lemit * NDS + u[7]
                    for b in range(4):
                        e = land.get(key)
                        v = (u[8], pl[b::4])
                        if e is None:
                            land[key] = v
                        elif e.__class__ is tuple:
                            land[key] = [e, v]
                        else:
                            e.append(v)
                        key += 1
                elif code == _GATHER or code == _SCATTER:
                    if code == _SCATTER:
                        v = get(cN + u[7], u[8])
                    ix = get(cN + u[9], u[10])
                    addr = u[5] + ix[0] + 256 * ix[1]
                    if not 0 <= addr < mem_depth:
                        raise Bail                    # an index out of the bank
                    bk = u[3]
                    if code == _GATHER:
                        key = cN + Lrd * NDS + u[7]
                        v = (u[8], (bk, addr, c))
                        e = land.get(key)
                        if e is None:
                            land[key] = v
                        elif e.__class__ is tuple:
                            land[key] = [e, v]
                        else:
                            e.append(v)
                    else:
                        ent = [c + Lwr, v, None, None]
                        lst = bk[0].get(addr)
                        if lst is None:
                            bk[0][addr] = [ent]
                        elif lst[-1][0] < ent[0]:
                            lst.append(ent)
                        else:                             # (in commit order among the WRITEs of phase 1)
                            bisect.insort(lst, ent, key=_DUE)
                else:
                    u[5](u[4], u[3], k, c)             # a VXM / SXM element: the reference's code
            if done:
                active = [u for u in active if c - u[1] < u[2] - 1]
            if i < no and not active:
                c = order[i]
            else:
                c += 1
    except _NotWalked:
        return None
    except ProgramError:                                   # (from the reference's element code)
        raise Bail from None
    except RecursionError:                                 # pragma: no cover - a very long copy chain
        return None
    # --- the end: nothing may be running or in flight after the last HALT
    if shim is not None and shim.maxdue > maxdue:
        maxdue = shim.maxdue
    if maxbusy > last_halt or maxdue > last_halt + 1:
        raise Bail
    apply(last_halt + 1)
    # every WRITE element's operand (an empty stream slot raises Bail); ``get`` inlined for the
    # common case, a row that a READ took from a bank it found unwritten
    lget = land.get
    try:
        for bk in banks.values():
            for lst in bk[0].values():
                for ent in lst:
                    if ent[1] is None:
                        e = lget(ent[2])
                        if e is None:
                            raise Bail
                        v = e[1] if e.__class__ is tuple and e[0] <= ent[3] else _pick(e, ent[3])
                        if v.__class__ is tuple:
                            sb, sa, sc = v
                            if sa < sb[2] and sa not in sb[0]:
                                v = sb[4][sa * lanes:(sa + 1) * lanes].tobytes()
                            else:
                                v = mem_at(sb, sa, sc)
                        ent[1] = v
    except RecursionError:                                   # pragma: no cover - a very long copy chain
        return None
    # write the state back
    for name, (ov, _, mark, _, mv) in banks.items():
        if ov:
            addrs = sorted(ov)
            a0, top = addrs[0], addrs[-1] + 1
            if top > mark:
                g.mem.rows(name, top)
            if top - a0 == len(addrs):                     # (one run of addresses: one copy)
                mv[a0 * lanes:top * lanes] = b"".join([ov[addr][-1][1] for addr in addrs])
            else:
                for addr in addrs:
                    mv[addr * lanes:(addr + 1) * lanes] = ov[addr][-1][1]
    for m in mxms.values():
        install(m, last_halt + 1)
        for buf, rows in enumerate(m[0]):
            if rows is not None:
                m[5][buf] = np.frombuffer(rows, _I8).reshape(lanes, lanes)
        acc = m[2]
        for addr, lst in m[3].items():
            acc[addr] = acc_row(m, addr, lst[-1])
    if shim is not None:
        shim.commit(g)
    g.rx = {p: [] for p in range(cfg.c2c_ports)}
    g.activity, g.halted, g.last_halt = activity, halted, last_halt
    g.c, g.done = last_halt + 1, True
    return RunResult(last_halt + 1, activity, halted)
