"""The FFN compiler: a quantized FFN layer -> per-queue programs, a MEM image, and a cycle count.

Dataflow for one block of tokens (the accumulators hold two blocks, so blocks alternate halves)::

    for each d_ff tile n:                                  (MXM)            (VXM)
        LW W1[k, n] into buffer b; MM X[k] -> acc           per k
        EMIT acc -> REQL (per-channel M, SH, Z) -> Z1[n]                    LDM, REQL
        [gated: the same with W3 -> U[n]]
        LUT Z1[n] -> A[n]   (the activation)                                LUT
        [gated: MUL A[n], U[n] >> sh -> H[n]]                               MUL
    for each d_model tile m:
        LW W2[k, m]; MM H[k] -> acc                          per k
        EMIT acc -> REQL -> Y[m]

Every operation is placed as early as its data, its unit and the stream registers allow, on the
reservation table of firmware/sched.py; weight installs into one buffer overlap the multiplies
that use the other.  The program's cycle count is a property of that schedule
(``Compiled.predicted_cycles``) and the golden model and the RTL reproduce it exactly.
"""

import json
from dataclasses import dataclass, field

import numpy as np

from tinylpu.firmware.quant import QuantFFN
from tinylpu.firmware.sched import Schedule, read_to, write_from
from tinylpu.isa import INT32_PLANES, Insn, Opcode, StreamRef, latency_key

__all__ = ["CompileError", "Compiled", "compile_ffn", "compile_moe", "plan_blocks"]


class CompileError(ValueError):
    """The layer cannot be compiled for this chip (e.g. it does not fit SRAM); names sizes and limits."""


def _ceil(a, b):
    return -(-a // b)


@dataclass
class Region:
    bank: str
    addr: int
    n: int
    what: str


class _Alloc:
    def __init__(self, cfg):
        self.cfg = cfg
        self.next = {s.name: 0 for s in cfg.slices_of("mem")}
        self.regions = []

    def free(self, bank):
        return self.cfg.mem_depth - self.next[bank]

    def take(self, banks, n, what):
        for b in banks:
            if self.free(b) >= n:
                r = Region(b, self.next[b], n, what)
                self.next[b] += n
                self.regions.append(r)
                return r
        need = n * self.cfg.lanes
        raise CompileError(
            f"{what} needs {n} vectors ({need} bytes) in bank {' or '.join(banks[:1]) if len(banks) == 1 else 'one bank'}, "
            f"but it has no room left: "
            f"{self.cfg.banks} banks x {self.cfg.mem_depth} vectors x {self.cfg.lanes} B = "
            f"{self.cfg.sram_bytes} bytes of SRAM, {self.used_bytes} already allocated")

    @property
    def used_bytes(self):
        return sum(self.next.values()) * self.cfg.lanes


@dataclass
class Compiled:
    cfg: object
    program: object
    mem_image: dict                 # bank -> list of (addr, int8 array (n, lanes))
    x_layout: dict                  # k tile -> Region (tokens contiguous)
    y_layout: dict                  # m tile -> Region
    tokens: int
    predicted_cycles: int
    listing: dict
    schedule: object
    q: QuantFFN
    report: dict = field(default_factory=dict)

    # --- host-side packing ------------------------------------------------------------------
    def pack_input(self, xq):
        """int8 tokens x d_model -> {bank: [(addr, vectors)]} for the X regions."""
        lanes = self.cfg.lanes
        xq = np.asarray(xq, dtype=np.int8)
        if xq.shape != (self.tokens, self.q.d_model):
            raise ValueError(f"input has shape {xq.shape}; this program was compiled for "
                             f"({self.tokens}, {self.q.d_model})")
        out = {}
        for k, r in self.x_layout.items():
            blk = np.zeros((self.tokens, lanes), np.int8)
            cols = xq[:, k * lanes:(k + 1) * lanes]
            blk[:, :cols.shape[1]] = cols
            out.setdefault(r.bank, []).append((r.addr, blk))
        return out

    def unpack_output(self, read):
        """read(bank, addr, n) -> int8 vectors; returns int8 tokens x d_model."""
        lanes = self.cfg.lanes
        y = np.zeros((self.tokens, len(self.y_layout) * lanes), np.int8)
        for m, r in self.y_layout.items():
            y[:, m * lanes:(m + 1) * lanes] = read(r.bank, r.addr, self.tokens)
        return y[:, :self.q.d_model]

    def listing_text(self):
        from tinylpu.firmware.asm import disassemble
        return disassemble(self.program, self.listing)

    def trace_json(self):
        """Chrome / Perfetto trace: one track per slice, one slice per scheduled operation."""
        events = []
        mhz = self.cfg.clock_mhz
        for tid, s in enumerate(self.cfg.slices):
            events.append({"ph": "M", "name": "thread_name", "pid": 0, "tid": tid,
                           "args": {"name": f"{s.position:02d} {s.name}"}})
            for e in self.schedule.q[s.name]:
                for insn in e.insns:
                    if insn.op in (Opcode.REPEAT, Opcode.NOP):
                        continue
                    n = insn.fields.get("count", 1) or self.cfg.lanes
                    events.append({"ph": "X", "pid": 0, "tid": tid, "name": insn.op.name,
                                   "ts": e.start / mhz, "dur": max(n, 1) / mhz,
                                   "args": {"insn": str(insn), "cycle": e.start, "what": e.tag}})
        return json.dumps({"traceEvents": events, "displayTimeUnit": "ns",
                           "otherData": {"config": self.cfg.name, "cycles": self.predicted_cycles,
                                         "clock_mhz": mhz}})


def plan_blocks(cfg, tokens):
    """Token blocks: the accumulators hold two blocks (double-buffered between tiles)."""
    tb = min(tokens, cfg.acc_depth // 2)
    if tb < 1:
        raise CompileError(f"acc_depth {cfg.acc_depth} is too small to double-buffer one token")
    return [(s, min(tb, tokens - s)) for s in range(0, tokens, tb)], tb


class _FFNScheduler:
    def __init__(self, cfg, q: QuantFFN, tokens, alloc=None, image=None, shared=None, w2_mode="requant"):
        self.cfg, self.q, self.T = cfg, q, tokens
        if cfg.lanes < 4 or not cfg.slices_of("mxm") or not cfg.slices_of("vxm") or cfg.banks < 4:
            raise CompileError(f"config {cfg.name}: the FFN compiler needs an MXM, a VXM and at least 4 MEM banks")
        self.lanes = L = cfg.lanes
        self.KT, self.FT, self.MT = _ceil(q.d_model, L), _ceil(q.d_ff, L), _ceil(q.d_model, L)
        self.sch = Schedule(cfg)
        self.Lat = cfg.latency
        self.mxm = cfg.slices_of("mxm")[0].name
        self.vxm = cfg.slices_of("vxm")[0].name
        self.pos = self.sch.pos
        banks = sorted((s for s in cfg.slices_of("mem")), key=lambda s: abs(s.position - self.pos[self.mxm]))
        half = max(4, len(banks) // 2)
        self.wbanks = [b.name for b in banks[:half]]                  # weights, params, LUT
        self.abanks = [b.name for b in banks[half:]] or self.wbanks   # activations
        self.alloc = alloc or _Alloc(cfg)
        self.image = {} if image is None else image
        self.shared = shared          # MoE: activation regions shared by every expert
        self.w2_mode = w2_mode        # "requant": Y int8; "partial": int32 partial sums left in MEM (tray TP)
        self.partials = {}            # (block start, m) -> 4 plane regions (partial mode)
        self.reads = {}               # (bank, addr) -> last cycle a READ element samples it (WAR)
        # in-order cursors per unit
        self.next_lw = self.next_mm = self.next_emit = self.next_vxm = 0
        self.buf = 0
        self.buf_last_mm_end = [0, 0]      # last MM element cycle using each weight buffer
        self.acc_free_at = [0, 0]          # first cycle an MM may overwrite each accumulator half
        self.writes = {}                   # region id -> (first sample cycle) for RAW
        self.next_tx, self.next_rx = {}, {}
        self.tile_no = 0

    # --- MEM image ---------------------------------------------------------------------------
    def place(self, banks, vecs, what):
        vecs = np.asarray(vecs, dtype=np.int8)
        r = self.alloc.take(banks, len(vecs), what)
        self.image.setdefault(r.bank, []).append((r.addr, vecs))
        return r

    def tiles(self, w):
        """int8 matrix (K x N) -> dict (k, n) -> lanes x lanes tile (row i = input k*L+i)."""
        L = self.lanes
        K, N = w.shape
        pad = np.zeros((_ceil(K, L) * L, _ceil(N, L) * L), np.int8)
        pad[:K, :N] = w
        return {(k, n): pad[k * L:(k + 1) * L, n * L:(n + 1) * L] for k in range(_ceil(K, L))
                for n in range(_ceil(N, L))}

    def params(self, req, n_tiles, what, banks):
        """Per-tile LDM vectors: 4 consecutive vectors (M low bytes, M high bytes, SH, Z) per tile."""
        L = self.lanes
        N = n_tiles * L
        m = np.zeros(N, np.int16)
        sh = np.zeros(N, np.int64)
        z = np.zeros(N, np.int8)
        m[:len(req.m)], sh[:len(req.sh)], z[:len(req.z)] = req.m, req.sh, req.z
        mu = m.view(np.uint16)
        planes = [(mu & 0xFF).astype(np.uint8).view(np.int8), (mu >> 8).astype(np.uint8).view(np.int8),
                  sh.astype(np.uint8).view(np.int8), z]
        vecs = np.stack([p.reshape(n_tiles, L) for p in planes], axis=1).reshape(4 * n_tiles, L)
        return self.place(banks, vecs, f"{what} requant params")

    # --- operations -------------------------------------------------------------------------
    def _asap(self, t_min, build, what):
        for t in range(max(t_min, 0), max(t_min, 0) + 100_000):
            tx = self.sch.txn()
            res = build(tx, t)
            if tx.ok and not self.sch.crosses(tx):
                tx.commit()
                return res
        raise CompileError(f"could not schedule {what} (internal scheduler limit)")

    def _stream(self, tx, src_pos, dst_pos, land, n, prefer):
        """Pick a stream index toward dst whose path is free."""
        for idx in list(prefer) + [i for i in range(self.cfg.streams) if i not in prefer]:
            s = StreamRef(idx, dst_pos < src_pos)
            probe = self.sch.txn()
            probe.path(s, src_pos, land, dst_pos, n)
            if probe.ok and not (probe.cells & tx.plands or probe.plands & tx.cells):
                return idx
        return prefer[0]

    def _read_to(self, tx, region, off, n, dst, arrive, prefer, tag, stride=1):
        p = self.pos[region.bank]
        land = arrive - abs(self.pos[dst] - p)
        idx = self._stream(tx, p, self.pos[dst], land, n, prefer)
        return read_to(tx, region.bank, region.addr + off, n, self.pos[dst], arrive, idx, stride=stride, tag=tag)

    def _write_from(self, tx, src, land, region, off, n, prefer, tag):
        """A result landing at slice `src` from cycle `land` is written to region[off:off+n]."""
        ps, pb = self.pos[src], self.pos[region.bank]
        idx = self._stream(tx, ps, pb, land, n, prefer)
        s = StreamRef(idx, pb < ps)
        write_from(tx, region.bank, s, region.addr + off, n, land + abs(pb - ps), src_pos=ps, tag=tag)
        return s

    def ready(self, region, off, consumer, n=1, stride=1):
        """First cycle `consumer` can sample element 0 of region[off:off+n] read from MEM, element k
        sampled k x stride cycles later, after everything this program wrote there has committed."""
        t = 0
        extra = self.Lat["mem_write"] + self.Lat["mem_read"] + abs(self.pos[consumer] - self.pos[region.bank])
        for k in range(n):
            w = self.writes.get((region.bank, region.addr + off + k))
            if w is not None:
                t = max(t, w + extra - k * stride)
        return t

    def note_write(self, region, off, sample, n=1, stride=1):
        for k in range(n):
            self.writes[(region.bank, region.addr + off + k)] = sample + k * stride

    def lw(self, tile_region, tag):
        """Install a weight tile into the next buffer; returns (buffer, cycle of the last row)."""
        L, Li = self.lanes, self.Lat["mxm_install"]
        b = self.buf
        self.buf ^= 1
        t_min = max(self.next_lw, self.buf_last_mm_end[b] + 1 - Li)

        def build(tx, t):
            s = self._read_to(tx, tile_region, 0, L, self.mxm, t, [0, 1], f"{tag} rows")
            tx.add(self.mxm, t, [Insn.make(Opcode.LW, s=s, buf=b, addr=0, count=L)], t + 1, "install",
                   (t, t + L - 1), tag=tag)
            tx.expect(t + L - 1 + Li)        # the last row lands in the weight buffer
            return t
        t = self._asap(t_min, build, tag)
        self.next_lw = t + L
        return b, t + L - 1

    def mm(self, b, lw_last, x_region, x_off, n, half, accumulate, tag, after=0):
        Li, Lm = self.Lat["mxm_install"], self.Lat["mxm_mm"]
        base = half * (self.cfg.acc_depth // 2)
        t_min = max(self.next_mm, lw_last + Li, self.ready(x_region, x_off, self.mxm, n), after)
        if not accumulate:
            t_min = max(t_min, self.acc_free_at[half])

        def build(tx, t):
            s = self._read_to(tx, x_region, x_off, n, self.mxm, t, [1, 0, 2], f"{tag} activations")
            tx.add(self.mxm, t, [Insn.make(Opcode.MM, s=s, buf=b, addr=base, count=n, acc=int(accumulate))],
                   t + 1, "mm", (t, t + n - 1), tag=tag)
            for k in range(n):
                tx.acc_write(self.mxm, base + k, t + k)
                if accumulate:
                    tx.acc_read(self.mxm, base + k, t + k)
            tx.expect(t + n - 1 + Lm)        # the last accumulator entry commits
            return t
        t = self._asap(t_min, build, tag)
        self.next_mm = t + n
        self.buf_last_mm_end[b] = t + n - 1
        return t + Lm          # the first entry commits here; entry k at t + Lm + k

    def ldm(self, pregion, tile, tag):
        def build(tx, t):
            src = self._read_to(tx, pregion, 4 * tile, 4, self.vxm, t, [2, 3], tag)
            tx.add(self.vxm, t, [Insn.make(Opcode.LDM, a=src)], t + 1, "alu", (t, t + 3), tag=tag)
            tx.expect(t + 4)
            return t
        t = self._asap(self.next_vxm, build, tag)
        self.next_vxm = t + 4
        return t

    def emit_req(self, commit, n, half, dst, tag):
        """EMIT an accumulator half, requantize it on the VXM (REQL), write it to region dst."""
        Le, Lq = self.Lat["mxm_emit"], self.Lat["vxm_req"]
        base = half * (self.cfg.acc_depth // 2)
        d_mv = abs(self.pos[self.vxm] - self.pos[self.mxm])
        t_min = max(commit, self.next_emit, self.next_vxm - Le - d_mv)

        def build(tx, te):
            land = te + Le
            west = self.pos[self.vxm] < self.pos[self.mxm]
            g = None
            for gi in range(self.cfg.streams - INT32_PLANES + 1):
                probe = self.sch.txn()
                for p in range(INT32_PLANES):
                    probe.path(StreamRef(gi + p, west), self.pos[self.mxm], land, self.pos[self.vxm], n)
                if probe.ok:
                    g = gi
                    break
            g = 0 if g is None else g
            for p in range(INT32_PLANES):
                tx.path(StreamRef(g + p, west), self.pos[self.mxm], land, self.pos[self.vxm], n)
            tx.add(self.mxm, te, [Insn.make(Opcode.EMIT, s=StreamRef(g, west), addr=base, count=n)], te + 1,
                   "emit", (te, te + n - 1), [land + k for k in range(n)], tag=f"{tag} emit")
            for k in range(n):
                tx.acc_read(self.mxm, base + k, te + k)
            tr = land + d_mv
            out = self._write_from(tx, self.vxm, tr + Lq, dst, 0, n, [4, 5, 6, 7], f"{tag} store")
            tx.add(self.vxm, tr, [Insn.make(Opcode.REQL, d=out, a=StreamRef(g, west), count=n)], tr + 1, "alu",
                   (tr, tr + n - 1), [tr + Lq + k for k in range(n)], tag=tag)
            return te, tr
        te, tr = self._asap(t_min, build, tag)
        self.next_emit = te + n
        self.next_vxm = tr + n
        self.acc_free_at[half] = te
        self.note_write(dst, 0, tr + Lq + abs(self.pos[dst.bank] - self.pos[self.vxm]), n)
        return tr

    def group_banks(self, side):
        """Four banks on one side of the VXM, for an int32 group whose planes travel together.

        "near": the side of the MXM (EMIT planes reach them on their way east), "far": the other.
        """
        pv, pm = self.pos[self.vxm], self.pos[self.mxm]
        banks = [s.name for s in self.cfg.slices_of("mem")]
        west = [b for b in banks if self.pos[b] < pv]
        east = [b for b in banks if self.pos[b] > pv]
        near, far = (west, east) if pm < pv else (east, west)
        pick = near if side == "near" else far
        if len(pick) < 4:
            raise CompileError(f"config {self.cfg.name}: int32 partial sums need 4 MEM banks on each side of "
                               f"{self.vxm}, found {len(near)} and {len(far)}")
        return pick[:4]

    def _war(self, region, off=0):
        """First cycle a WRITE may sample into region[off...] without overwriting unread data."""
        r = self.reads.get((region.bank, region.addr + off))
        return 0 if r is None else r + 1

    def emit_planes(self, commit, n, half, group, tag):
        """EMIT an accumulator half as 4 int32 byte planes into the 4 regions of `group` (one per bank)."""
        Le = self.Lat["mxm_emit"]
        base = half * (self.cfg.acc_depth // 2)
        pm = self.pos[self.mxm]
        t_min = max([commit, self.next_emit] + [self._war(r) - Le - abs(self.pos[r.bank] - pm) for r in group])

        def build(tx, te):
            land = te + Le
            west = self.pos[group[0].bank] < pm
            g = None
            for gi in range(self.cfg.streams - INT32_PLANES + 1):
                probe = self.sch.txn()
                for p, r in enumerate(group):
                    probe.path(StreamRef(gi + p, west), pm, land, self.pos[r.bank], n)
                if probe.ok:
                    g = gi
                    break
            g = 0 if g is None else g
            tx.add(self.mxm, te, [Insn.make(Opcode.EMIT, s=StreamRef(g, west), addr=base, count=n)], te + 1,
                   "emit", (te, te + n - 1), [land + k for k in range(n)], tag=tag)
            for k in range(n):
                tx.acc_read(self.mxm, base + k, te + k)
            for p, r in enumerate(group):
                write_from(tx, r.bank, StreamRef(g + p, west), r.addr, n, land + abs(self.pos[r.bank] - pm),
                           src_pos=pm, tag=f"{tag} plane {p}")
            return te
        te = self._asap(t_min, build, tag)
        self.next_emit = te + n
        self.acc_free_at[half] = te
        for r in group:
            self.note_write(r, 0, te + Le + abs(self.pos[r.bank] - pm), n)
        return te

    def send_region(self, region, n, port, tag, t_min=0):
        """SEND region[0:n] on C2C `port`, one vector per flit; returns the cycle of the first SEND element."""
        F = self.cfg.vector_interval
        c2c = self.cfg.slices_of("c2c")[0].name
        pc = self.pos[c2c]
        t_min = max(t_min, self.ready(region, 0, c2c, n, F), self.next_tx.get(port, 0))

        def build(tx, t):
            pb = self.pos[region.bank]
            land = t - abs(pc - pb)
            idx = self._stream(tx, pb, pc, land, 1, [0, 1, 2, 3])
            s = StreamRef(idx, pc < pb)
            read_to(tx, region.bank, region.addr, 1, pc, t, idx, reps=n - 1, d=F, tag=f"{tag} rows")
            tx.add(c2c, t, [Insn.make(Opcode.SEND, port=port, s=s, count=n)], t + 1, f"tx{port}",
                   (t, t + n * F - 1), tag=tag)
            return t
        t = self._asap(t_min, build, tag)
        self.next_tx[port] = t + n * F
        for k in range(n):
            self.reads[(region.bank, region.addr + k)] = t + k * F - self.Lat["mem_read"] - abs(
                pc - self.pos[region.bank])
        return t

    def recv_region(self, port, region, n, arrival, tag):
        """RECV n vectors from `port` (the first arrives at cycle `arrival`) into region[0:n]."""
        F, Lr = self.cfg.vector_interval, self.Lat["c2c_recv"]
        c2c = self.cfg.slices_of("c2c")[0].name
        pc, pb = self.pos[c2c], self.pos[region.bank]
        t_min = max(arrival, self.next_rx.get(port, 0), self._war(region) - Lr - abs(pb - pc))

        def build(tx, t):
            land = t + Lr
            idx = self._stream(tx, pc, pb, land, 1, [4, 5, 6, 7])
            s = StreamRef(idx, pb < pc)
            tx.add(c2c, t, [Insn.make(Opcode.RECV, s=s, port=port, count=n)], t + 1, f"rx{port}",
                   (t, t + n * F - 1), [land + k * F for k in range(n)], tag=tag)
            for k in range(n):     # single WRITEs: a REPEAT would hold the bank's queue for n x F cycles
                write_from(tx, region.bank, s, region.addr + k, 1, land + k * F + abs(pb - pc), src_pos=pc,
                           tag=f"{tag} store")
            return t
        t = self._asap(t_min, build, tag)
        self.next_rx[port] = t + n * F
        self.note_write(region, 0, t + Lr + abs(pb - pc), n, F)
        return t

    def group_op(self, op, srcs, dst, n, tag, pregion=None, tile=0):
        """ADD32 (two int32 groups -> a group) or REQL (a group -> int8 region) on the VXM, from MEM."""
        lat = self.Lat[latency_key(op)]
        pv = self.pos[self.vxm]
        if pregion is not None:
            self.ldm(pregion, tile, f"LDM {tag}")
        outs = dst if isinstance(dst, list) else [dst]
        t_min = max([self.next_vxm] + [self.ready(r, 0, self.vxm, n) for g in srcs for r in g] +
                    [self._war(r) - lat - abs(self.pos[r.bank] - pv) for r in outs])

        def build(tx, t):
            bases = []
            for gi, g in enumerate(srcs):
                west = pv < self.pos[g[0].bank]
                base = None
                for cand in range(self.cfg.streams - INT32_PLANES + 1):
                    probe = self.sch.txn()
                    for p, r in enumerate(g):
                        pb = self.pos[r.bank]
                        probe.path(StreamRef(cand + p, west), pb, t - abs(pv - pb), pv, n)
                    if probe.ok and not (probe.cells & tx.plands or probe.plands & tx.cells):
                        base = cand
                        break
                base = 0 if base is None else base
                for p, r in enumerate(g):
                    read_to(tx, r.bank, r.addr, n, pv, t, base + p, tag=f"{tag} operand")
                bases.append(StreamRef(base, west))
            if op == Opcode.ADD32:
                west = self.pos[outs[0].bank] < pv
                ob = None
                for cand in range(self.cfg.streams - INT32_PLANES + 1):
                    probe = self.sch.txn()
                    for p, r in enumerate(outs):
                        probe.path(StreamRef(cand + p, west), pv, t + lat, self.pos[r.bank], n)
                    if probe.ok and not (probe.cells & tx.plands or probe.plands & tx.cells):
                        ob = cand
                        break
                ob = 0 if ob is None else ob
                for p, r in enumerate(outs):
                    write_from(tx, r.bank, StreamRef(ob + p, west), r.addr, n,
                               t + lat + abs(self.pos[r.bank] - pv), src_pos=pv, tag=f"{tag} store")
                insn = Insn.make(Opcode.ADD32, d=StreamRef(ob, west), a=bases[0], b=bases[1], count=n)
            else:
                out = self._write_from(tx, self.vxm, t + lat, outs[0], 0, n, [4, 5, 6, 7], f"{tag} store")
                insn = Insn.make(Opcode.REQL, d=out, a=bases[0], count=n)
            tx.add(self.vxm, t, [insn], t + 1, "alu", (t, t + n - 1), [t + lat + k for k in range(n)], tag=tag)
            return t
        t = self._asap(t_min, build, tag)
        self.next_vxm = t + n
        for g in srcs:
            for r in g:
                for k in range(n):
                    self.reads[(r.bank, r.addr + k)] = t + k - self.Lat["mem_read"] - abs(pv - self.pos[r.bank])
        for r in outs:
            self.note_write(r, 0, t + lat + abs(self.pos[r.bank] - pv), n)
        return t

    def vxm_op(self, op, srcs, dst, n, tag, **kw):
        """dst = op(srcs...) on the VXM, operands read from MEM regions, result written to MEM."""
        lat = self.Lat[latency_key(op)]
        t_min = max([self.next_vxm] + [self.ready(r, 0, self.vxm, n) for r in srcs])

        def build(tx, t):
            ss = [self._read_to(tx, r, 0, n, self.vxm, t, [2 + i, 4 + i], f"{tag} operand")
                  for i, r in enumerate(srcs)]
            out = self._write_from(tx, self.vxm, t + lat, dst, 0, n, [4, 5, 6, 7], f"{tag} store")
            fields = dict(d=out, a=ss[0], count=n, **kw)
            if len(ss) > 1:
                fields["b"] = ss[1]
            tx.add(self.vxm, t, [Insn.make(op, **fields)], t + 1, "alu", (t, t + n - 1),
                   [t + lat + k for k in range(n)], tag=tag)
            return t
        t = self._asap(t_min, build, tag)
        self.next_vxm = t + n
        self.note_write(dst, 0, t + lat + abs(self.pos[dst.bank] - self.pos[self.vxm]), n)
        return t

    def ldlut(self, region):
        rows = 256 // self.lanes

        def build(tx, t):
            s = self._read_to(tx, region, 0, rows, self.vxm, t, [2, 3], "LUT rows")
            tx.add(self.vxm, t, [Insn.make(Opcode.LDLUT, a=s, imm=0, count=rows)], t + 1, "alu", (t, t + rows - 1),
                   tag="load activation LUT")
            tx.expect(t + rows)
            return t
        t = self._asap(self.next_vxm, build, "LDLUT")
        self.next_vxm = t + rows

    # --- the layer -----------------------------------------------------------------------------
    def run(self):
        x_layout, y_layout = self.build()
        program, H, listing = self.sch.finish()
        return program, H + 1, listing, x_layout, y_layout

    def build(self):
        q, L, T = self.q, self.lanes, self.T
        KT, FT, MT = self.KT, self.FT, self.MT
        blocks, tb = plan_blocks(self.cfg, T)
        weight_vecs = L * (KT * FT * (3 if q.gated else 2) + FT * MT)
        act_vecs = T * (KT + MT) + tb * FT * (3 if q.gated else 2) * len(blocks)
        if self.shared:
            act_vecs = 0          # MoE: the first expert allocated the shared activation buffers
        total = (weight_vecs + act_vecs + 4 * (FT * (2 if q.gated else 1) + MT) + 256 // L) * L
        avail = self.cfg.sram_bytes - self.alloc.used_bytes
        if total > avail:
            used = f", {self.alloc.used_bytes} already used by earlier experts" if self.alloc.used_bytes else ""
            raise CompileError(
                f"FFN {q.d_model}x{q.d_ff}{' gated' if q.gated else ''} for {T} tokens needs {total} bytes of SRAM "
                f"({weight_vecs * L} of int8 weights in {L}x{L} tiles, {act_vecs * L} of activations, "
                f"the rest requant params and the LUT); config {self.cfg.name} has {self.cfg.sram_bytes} "
                f"({self.cfg.banks} banks x {self.cfg.mem_depth} vectors x {L} B{used})")
        # weights, spread round-robin over the weight banks (then any bank)
        allb = self.wbanks + [b for b in self.abanks if b not in self.wbanks]
        wt = {}
        order = [("w1", q.w1), ("w3", q.w3), ("w2", q.w2)] if q.gated else [("w1", q.w1), ("w2", q.w2)]
        i = 0
        for name, w in order:
            for key, tile in self.tiles(w).items():
                pref = self.wbanks[i % len(self.wbanks):] + self.wbanks[:i % len(self.wbanks)]
                wt[(name,) + key] = self.place(pref + [b for b in allb if b not in pref], tile,
                                               f"weight tile {name}[{key[0]},{key[1]}]")
                i += 1
        pb = [self.abanks[1 % len(self.abanks)]] + allb
        p1 = self.params(q.req1, FT, "w1", pb)
        p3 = self.params(q.req3, FT, "w3", pb) if q.gated else None
        p2 = self.params(q.req2, MT, "w2", pb)
        lut = self.place(self.abanks[::-1] + allb, q.lut.reshape(256 // L, L), "activation LUT")
        ab = self.abanks + [b for b in allb if b not in self.abanks]

        def act_region(k, n, what):
            if self.shared is not None and what in self.shared:
                return self.shared[what]
            pref = ab[k % len(ab):] + ab[:k % len(ab)]
            r = self.alloc.take(pref, n, what)
            if self.shared is not None:
                self.shared[what] = r
            return r
        # X and H on ab[0] (read by MM), Z1 on ab[1], U on ab[2], A and Y on ab[3]: the two operands
        # of MUL (A, U) sit in different banks and every VXM result has a free write port
        x_layout = {k: act_region(0, T, f"input X tile {k}") for k in range(KT)}
        y_layout = {m: act_region(3, T, f"output Y tile {m}") for m in range(MT)}
        self.ldlut(lut)
        # the matmul jobs, in order: each a list of (weight tile, activation region, offset), the
        # accumulator half, and what happens to the result
        jobs = []
        for bstart, bn in blocks:
            z1 = {n: act_region(1, bn, f"Z1 tile {n}") for n in range(FT)}
            hh = {n: act_region(0, bn, f"H tile {n}") for n in range(FT)}
            if q.gated:
                uu = {n: act_region(2, bn, f"U tile {n}") for n in range(FT)}
                aa = {n: act_region(3, bn, f"A tile {n}") for n in range(FT)}
            tokens = f"tokens {bstart}..{bstart + bn - 1}"
            for n in range(FT):
                tiles = [(("w1", k, n), x_layout[k], bstart) for k in range(KT)]
                jobs.append((tiles, bn, p1, n, z1[n], f"w1 tile {n} {tokens}", None))
                if q.gated:
                    tiles = [(("w3", k, n), x_layout[k], bstart) for k in range(KT)]
                    after = [(Opcode.LUT, [z1[n]], aa[n], {}), (Opcode.MUL, [aa[n], uu[n]], hh[n], {"sh": q.mul_sh})]
                    jobs.append((tiles, bn, p3, n, uu[n], f"w3 tile {n} {tokens}", after))
                else:
                    jobs[-1] = jobs[-1][:6] + ([(Opcode.LUT, [z1[n]], hh[n], {})],)
            for m in range(MT):
                tiles = [(("w2", k, m), hh[k], 0) for k in range(FT)]
                if self.w2_mode == "partial":
                    grp = [self.alloc.take([b], bn, f"partial Y tile {m} plane {p} block {bstart}")
                           for p, b in enumerate(self.group_banks("near"))]
                    self.partials[(bstart, m)] = grp
                    jobs.append((tiles, bn, None, m, grp, f"w2 tile {m} {tokens} (partial)", None))
                    continue
                ysub = Region(y_layout[m].bank, y_layout[m].addr + bstart, bn, y_layout[m].what)
                jobs.append((tiles, bn, p2, m, ysub, f"w2 tile {m} {tokens}", None))
        flat = [(j, i) for j, job in enumerate(jobs) for i in range(len(job[0]))]

        def install(idx):
            j, i = flat[idx]
            key = jobs[j][0][i][0]
            return self.lw(wt[key], f"LW {key[0]}[{key[1]},{key[2]}]")
        installed = {0: install(0)}
        half = 0
        for idx, (j, i) in enumerate(flat):
            tiles, bn, pr, tile_no, dst, what, after = jobs[j]
            if idx + 1 < len(flat):
                installed[idx + 1] = install(idx + 1)     # the next install goes ahead of this multiply
            key, xr, xoff = tiles[i]
            b, last = installed.pop(idx)
            commit = self.mm(b, last, xr, xoff, bn, half, i > 0, f"MM {key[0]}[{key[1]},{key[2]}] {what}")
            if i == len(tiles) - 1:
                if pr is None:
                    self.emit_planes(commit, bn, half, dst, f"EMIT {what}")
                else:
                    self.ldm(pr, tile_no, f"LDM params {what}")
                    self.emit_req(commit, bn, half, dst, f"REQL {what}")
                half ^= 1
                for op, srcs, d, kw in after or ():
                    self.vxm_op(op, srcs, d, bn, f"{op.name} {what}", **kw)
        return x_layout, y_layout


def compile_ffn(q: QuantFFN, cfg, tokens, _alloc=None, _image=None, _shared=None) -> Compiled:
    if tokens < 1:
        raise CompileError("tokens must be >= 1")
    s = _FFNScheduler(cfg, q, tokens, _alloc, _image, _shared)
    program, cycles, listing, xl, yl = s.run()
    if max(len(v) for v in program.queues.values()) > cfg.queue_depth:
        worst = max(program.queues, key=lambda k: len(program.queues[k]))
        raise CompileError(f"the program needs {len(program.queues[worst])} instructions in queue {worst}; "
                           f"config {cfg.name} has queue_depth {cfg.queue_depth} (use fewer tokens or a bigger "
                           f"queue_depth)")
    c = Compiled(cfg, program, s.image, xl, yl, tokens, cycles, listing, s.sch, q)
    c.report = _report(c, s)
    return c


def compile_moe(experts, cfg, tokens):
    """Several experts resident in one chip: one MEM image, one program per expert.

    The experts share the input, output and intermediate regions (one expert runs at a time), and
    each keeps its weights, requantization parameters and LUT. The host picks an expert at run time
    by loading its program; nothing is copied. Raises CompileError when the experts do not fit.
    """
    if not experts:
        raise CompileError("an MoE layer needs at least one expert")
    shapes = {(q.d_model, q.d_ff, q.gated) for q in experts}
    if len(shapes) != 1:
        raise CompileError(f"experts must share one shape to share activation buffers, got {sorted(shapes)}")
    alloc, image, shared = _Alloc(cfg), {}, {}
    out = []
    for e, q in enumerate(experts):
        try:
            out.append(compile_ffn(q, cfg, tokens, alloc, image, shared))
        except CompileError as err:
            raise CompileError(f"expert {e} of {len(experts)}: {err}") from None
    for c in out:
        c.report["sram_bytes_used"] = alloc.used_bytes
        c.report["experts_resident"] = len(out)
    return out


def _report(c: Compiled, s: _FFNScheduler):
    cfg, q = c.cfg, c.q
    mats = 3 if q.gated else 2
    useful = c.tokens * q.d_model * q.d_ff * mats
    wbytes = q.d_model * q.d_ff * mats
    cyc = c.predicted_cycles
    mm_busy = sum(b - a + 1 for a, b in zip(s.sch.sub[(s.mxm, "mm")].starts, s.sch.sub[(s.mxm, "mm")].ends))
    return {
        "config": cfg.name,
        "lanes": cfg.lanes,
        "d_model": q.d_model,
        "d_ff": q.d_ff,
        "gated": q.gated,
        "activation": q.activation,
        "tokens": c.tokens,
        "predicted_cycles": cyc,
        "predicted_time_us": cyc / cfg.clock_mhz,
        "useful_macs": useful,
        "peak_macs_per_cycle": cfg.macs_per_cycle,
        "mxm_utilization": useful / (cfg.macs_per_cycle * cyc),
        "mxm_busy_cycles": mm_busy,
        "weight_bytes": wbytes,
        "weight_bytes_per_cycle_peak": cfg.weight_bytes_per_cycle,
        "weight_bw_utilization": (wbytes / cfg.weight_bytes_per_cycle) / cyc,
        "sram_bytes_used": s.alloc.used_bytes,
        "sram_bytes": cfg.sram_bytes,
        "instructions": len(c.program),
        "scales": {k: float(v) for k, v in q.scales.items()},
    }
