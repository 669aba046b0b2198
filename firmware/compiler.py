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

The "tiles" arithmetic (``QuantFFN.tile_luts`` / ``mul_sh`` per channel / ``hilo``, sim/serving/quant8.py;
``check_single_chip`` says what is emitted) changes three steps::

    LDLUT table[n] (right after the previous tile's LUT)                    LDLUT
    MUL A[n], U[n] >> sh[n] -> H[n] hi; >> (sh[n] - k) -> F                 MUL, MUL
    MUL hi, #2^k -> G; SUB F, G -> H[n] lo  (QuantFFN.gated_product)        MUL, SUB
    W2: MM [hi; lo] rows of every token -> 2 x tokens accumulator rows
    EMIT -> ADD32 (hi + hi) x k -> ADD32 (+ lo) -> REQL -> Y[m]  (QuantFFN.combine_acc)

For blocks of at most vxm_alu tokens (decode) the hi x 2^k -> SUB chain and the W2 combination run on
the streams, each VXM op sampling the previous result as it lands at the VXM (no MEM round trip;
the EMIT of the lo rows timed to land with the last doubling); larger blocks go through MEM.  The
blocks hold acc_depth / 4 tokens (``plan_blocks`` pieces), the tables sit resident, one per tile.

Every operation is placed as early as its data, its unit and the stream registers allow, on the
reservation table of firmware/sched.py; weight installs into one buffer overlap the multiplies
that use the other.  The program's cycle count is a property of that schedule
(``Compiled.predicted_cycles``) and the golden model and the RTL reproduce it exactly.

Tokens: the weights, requantization parameters and LUT are placed once (the resident MEM image);
X and Y hold a run's tokens, the intermediates (Z1, U, A, H) one block's and are reused by every
block.  When every token does not fit beside the weights (or one program would exceed
queue_depth), the tokens run in chunks: ``Compiled.runs``, several runs of a program on the one
image, the host writing X before and reading Y after each (``_plan`` picks the sizes).

Work: when even one block's program exceeds queue_depth (the MXM queue takes about 3 words per
weight tile, which REPEAT cannot shorten), each chunk of tokens (one block) runs as several runs
that cut the block's work in order: its units are the d_ff tiles of H (W1 [and W3] with the
activation, H[n] written to its own region) and then the output tiles of Y (W2 over every H
tile).  H stays in MEM between the runs of a chunk; a run writes the Y tiles of its units
(``Run.work``; the host reads them after that run).  ``_split_work`` picks the cuts.

Weight rows: with ``mxm.install_rows`` R > 1 each tile's rows are spread over a group of banks
(row i in bank i mod G) and one LW takes G rows per cycle from G streams, one READ per bank
(``lw``, ``_rows`` picks G: R, or fewer when R would take the banks the activations need).

Four streams per direction (configs/fpga.yaml): an EMIT's int32 group then takes every
stream toward the VXM, so while a block of more than vxm_req tokens passes, the REQL's int8 result
can only go back toward the MXM.  Its destinations (Z1, U, Y) are placed between the MXM and the
VXM (``req_near``), or, where they lie beyond the VXM, the EMIT and REQL go in pieces of vxm_req
tokens (``emit_req``); the compiler keeps the faster of the two programs (``_compile_layers``).
An ADD32 chain sends its results the other way (``_group_path``), and a hi/lo W2 combination
through MEM (int32 groups from both sides) is refused, so its blocks stay small enough to chain.
"""

import json
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from tinylpu.firmware.compress import compress_program
from tinylpu.firmware.quant import QuantFFN
from tinylpu.firmware.sched import Schedule, read_to, write_from
from tinylpu.isa import INT32_PLANES, Insn, Opcode, StreamRef, latency_key

__all__ = ["CompileError", "Compiled", "Programs", "check_emittable", "check_single_chip", "compile_ffn",
           "compile_moe", "plan_blocks"]


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

    def clone(self):
        """A copy to try a placement on (``_plan``) without touching this one."""
        a = _Alloc(self.cfg)
        a.next, a.regions = dict(self.next), list(self.regions)
        return a


def _sub(region, n, off=0):
    """The first n vectors of a region from `off` (the region itself when that is all of it)."""
    return region if (off, n) == (0, region.n) else Region(region.bank, region.addr + off, n, region.what)


@dataclass
class Run:
    """One run of a program on the resident MEM image: tokens token0 .. token0 + tokens - 1.

    The host writes those tokens' X into `x_layout` (k tile -> Region of `tokens` vectors), starts
    `program`, and reads their Y from `y_layout` after `predicted_cycles` cycles. Runs of equal
    size share one program object."""
    program: object
    listing: dict
    schedule: object
    token0: int
    tokens: int
    x_layout: dict
    y_layout: dict
    predicted_cycles: int
    blocks: tuple = ()              # (first token within the run, tokens) per accumulator block
    work: tuple = None              # (first, end) unit of a block cut into several runs (``_split_work``):
                                    # units 0 .. FT - 1 the d_ff tiles of H, FT .. FT + MT - 1 the output
                                    # tiles of Y; None: the whole layer. x_layout is empty when the run
                                    # computes no H tile, y_layout holds only the output tiles it writes

    def describe(self, ft):
        """What the run computes, for listings: its tokens and, cut by work, its tiles."""
        what = f"tokens {self.token0}..{self.token0 + self.tokens - 1}"
        if self.work is None:
            return what
        u0, u1 = self.work
        parts = []
        if u0 < ft:
            parts.append(f"H d_ff tiles {u0}..{min(u1, ft) - 1}")
        if u1 > ft:
            parts.append(f"Y output tiles {max(u0, ft) - ft}..{u1 - ft - 1}")
        return f"{what}, {' and '.join(parts)}"


@dataclass
class Compiled:
    cfg: object
    program: object                 # the first run's program (the only one for a single-run layer)
    mem_image: dict                 # bank -> list of (addr, int8 array (n, lanes)): resident for every run
    x_layout: dict                  # the first run's: k tile -> Region (tokens contiguous)
    y_layout: dict                  # the first chunk's (its runs' together): m tile -> Region
    tokens: int                     # all runs together
    predicted_cycles: int           # all runs together
    listing: dict
    schedule: object
    q: QuantFFN
    report: dict = field(default_factory=dict)
    runs: list = None               # [Run]: the token chunks (each one run, or several cut by work), run one
                                    # after the other on one MEM image

    def __post_init__(self):
        if self.runs is None:
            self.runs = [Run(self.program, self.listing, self.schedule, 0, self.tokens, self.x_layout,
                             self.y_layout, self.predicted_cycles)]

    def run_of(self, run=None) -> Run:
        """Run `run`; None means the only one (a layer compiled into several runs needs an index)."""
        if run is None:
            if len(self.runs) != 1:
                raise ValueError(f"this layer runs in {len(self.runs)} chunks of tokens (Compiled.runs): "
                                 f"pass run=0..{len(self.runs) - 1}")
            return self.runs[0]
        return self.runs[run]

    # --- host-side packing ------------------------------------------------------------------
    def pack_input(self, xq, run=None):
        """int8 tokens x d_model (all tokens of the layer) -> {bank: [(addr, vectors)]} for the X
        regions of run `run` (its tokens only)."""
        lanes = self.cfg.lanes
        xq = np.asarray(xq, dtype=np.int8)
        if xq.shape != (self.tokens, self.q.d_model):
            raise ValueError(f"input has shape {xq.shape}; this program was compiled for "
                             f"({self.tokens}, {self.q.d_model})")
        r = self.run_of(run)
        rows = xq[r.token0:r.token0 + r.tokens]
        out = {}
        for k, reg in r.x_layout.items():
            blk = np.zeros((r.tokens, lanes), np.int8)
            cols = rows[:, k * lanes:(k + 1) * lanes]
            blk[:, :cols.shape[1]] = cols
            out.setdefault(reg.bank, []).append((reg.addr, blk))
        return out

    def output_reads(self, run=None):
        """[(bank, addr, n)]: what the host reads after run `run` (its Y regions; none for a run of a
        block cut by work that writes no output tile)."""
        r = self.run_of(run)
        return [(reg.bank, reg.addr, r.tokens) for reg in r.y_layout.values()]

    def unpack_output(self, read, run=None):
        """read(bank, addr, n) -> int8 vectors; returns int8 tokens x d_model (run `run`'s tokens; the
        columns of output tiles the run does not write, ``Run.work``, are 0)."""
        lanes = self.cfg.lanes
        r = self.run_of(run)
        y = np.zeros((r.tokens, _ceil(self.q.d_model, lanes) * lanes), np.int8)
        for m, reg in r.y_layout.items():
            y[:, m * lanes:(m + 1) * lanes] = read(reg.bank, reg.addr, r.tokens)
        return y[:, :self.q.d_model]

    def assemble_output(self, reads):
        """reads[i](bank, addr, n) -> int8 vectors read after run i (``output_reads(i)``); returns the
        layer's int8 tokens x d_model: each run's output tiles at its tokens (chunks of tokens one
        after the other, a chunk cut by work from the runs that write its tiles)."""
        if len(reads) != len(self.runs):
            raise ValueError(f"{len(reads)} reads for {len(self.runs)} runs")
        lanes = self.cfg.lanes
        y = np.zeros((self.tokens, _ceil(self.q.d_model, lanes) * lanes), np.int8)
        for r, read in zip(self.runs, reads):
            for m, reg in r.y_layout.items():
                y[r.token0:r.token0 + r.tokens, m * lanes:(m + 1) * lanes] = read(reg.bank, reg.addr, r.tokens)
        return y[:, :self.q.d_model]

    def listing_text(self):
        """The disassembly with issue cycles; a layer in several runs lists each distinct program once."""
        from tinylpu.firmware.asm import disassemble
        if len(self.runs) == 1:
            return disassemble(self.program, self.listing)
        out, seen = [], {}
        for i, r in enumerate(self.runs):
            seen.setdefault(id(r.program), []).append(i)
        for i, r in enumerate(self.runs):
            if seen.get(id(r.program), [None])[0] != i:
                continue
            which = seen.pop(id(r.program))
            work = ""
            if r.work is not None:
                work = ": " + r.describe(_ceil(self.q.d_ff, self.cfg.lanes)).split(", ", 1)[1]
            out.append(f"; ===== runs {', '.join(map(str, which))} ({r.tokens} tokens each{work}, "
                       f"{r.predicted_cycles} cycles) =====\n")
            out.append(disassemble(r.program, r.listing))
        return "".join(out)

    def trace_json(self):
        """Chrome / Perfetto trace: one track per slice, one slice per scheduled operation; the runs
        one after the other."""
        if any(r.schedule is None for r in self.runs):
            raise ValueError("this program carries no schedule (the serving cache drops it: "
                             "sim/serving/lpu.py); compile the layer with compile_ffn to trace it")
        events = []
        mhz = self.cfg.clock_mhz
        for tid, s in enumerate(self.cfg.slices):
            events.append({"ph": "M", "name": "thread_name", "pid": 0, "tid": tid,
                           "args": {"name": f"{s.position:02d} {s.name}"}})
        t0 = 0
        for ri, r in enumerate(self.runs):
            for tid, s in enumerate(self.cfg.slices):
                for e in r.schedule.q[s.name]:
                    for insn in e.insns:
                        if insn.op in (Opcode.REPEAT, Opcode.NOP):
                            continue
                        n = insn.fields.get("count", 1) or self.cfg.lanes
                        args = {"insn": str(insn), "cycle": e.start, "what": e.tag}
                        if len(self.runs) > 1:
                            args["run"] = ri
                        events.append({"ph": "X", "pid": 0, "tid": tid, "name": insn.op.name,
                                       "ts": (t0 + e.start) / mhz, "dur": max(n, 1) / mhz, "args": args})
            t0 += r.predicted_cycles
        return json.dumps({"traceEvents": events, "displayTimeUnit": "ns",
                           "otherData": {"config": self.cfg.name, "cycles": self.predicted_cycles,
                                         "clock_mhz": mhz}})


@dataclass
class Programs:
    """One layer's (expert's) programs for several token counts on ONE resident MEM image
    (``compile_moe(experts, cfg, tokens=[1, 2, 4, 8])``): every program reads the same weight,
    requantization-parameter and LUT addresses and the same X / Y / intermediate regions, sized for
    the largest count. The host runs the smallest that holds a call's tokens (``pick``), padding only
    up to its count."""
    programs: tuple                 # Compiled per token count, ascending

    def __post_init__(self):
        self.programs = tuple(sorted(self.programs, key=lambda c: c.tokens))
        if len({id(c.mem_image) for c in self.programs}) != 1:
            raise ValueError("the programs of one layer must share one MEM image (one compile_moe call)")

    @property
    def cfg(self):
        return self.programs[0].cfg

    @property
    def q(self):
        return self.programs[0].q

    @property
    def mem_image(self):
        return self.programs[0].mem_image

    @property
    def tokens(self):
        """The largest token count (the most a call may pass)."""
        return self.programs[-1].tokens

    @property
    def token_counts(self):
        return tuple(c.tokens for c in self.programs)

    def pick(self, n) -> "Compiled":
        """The program with the fewest tokens >= n."""
        for c in self.programs:
            if c.tokens >= n:
                return c
        raise ValueError(f"{n} tokens: the largest program is for {self.tokens} (token counts {self.token_counts})")


def plan_blocks(cfg, tokens, pieces=1):
    """Token blocks: the accumulators hold two blocks (double-buffered between tiles). ``pieces``:
    accumulator rows per token of a block (2 for a hi/lo gated product: its W2 pass multiplies both
    pieces of each token into one half)."""
    tb = min(tokens, cfg.acc_depth // (2 * pieces))
    if tb < 1:
        raise CompileError(f"acc_depth {cfg.acc_depth} is too small to double-buffer one token"
                           + (f" in {pieces} pieces" if pieces > 1 else ""))
    return [(s, min(tb, tokens - s)) for s in range(0, tokens, tb)], tb


_NEVER = -(1 << 40)      # "no access yet" in the per-address cycle tables


class _FFNScheduler:
    """Places one layer in MEM and schedules one program of it for `tokens` tokens.

    ``placed``: another scheduler of the same layer (another chunk size) whose MEM regions this
    one reuses; ``shared``: MoE, the activation regions every expert uses."""

    def __init__(self, cfg, q: QuantFFN, tokens, alloc=None, image=None, shared=None, w2_mode="requant",
                 placed=None):
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
        self.placed = placed
        self.rows = 1                 # weight rows installed per cycle (``_rows``); set before placing
        self.near = True              # ``req_near`` may place the REQL destinations near (``_Plan.near``)
        # bank -> int64 per address: the last cycle a WRITE samples into it (RAW) and the last cycle
        # a READ reads it (WAR: intermediate buffers are reused by every token block)
        self.wr_t, self.rd_t = {}, {}
        # in-order cursors per unit
        self.next_lw = self.next_mm = self.next_emit = self.next_vxm = 0
        self.buf = 0
        self.buf_last_mm_end = [0, 0]      # last MM element cycle using each weight buffer
        self.acc_free_at = [0, 0]          # first cycle an MM may overwrite each accumulator half
        self.next_tx, self.next_rx = {}, {}
        self.tile_no = 0
        # the "tiles" arithmetic (QuantFFN.tile_luts / mul_sh per channel / hilo; check_single_chip):
        # a SiLU table per d_ff tile, a MUL shift per d_ff tile, h as hi/lo pieces through W2
        self.tl = getattr(q, "tile_luts", None) is not None      # (the projection's shape-only layers
        self.hilo = int(getattr(q, "hilo", 0))                   # carry neither field)
        self.pieces = 2 if self.hilo else 1
        self.lut_rows = 256 // L

    @property
    def chain_tokens(self):
        """Largest block whose hi x 2^k and lo chain on the streams (``hilo_streamed``)."""
        return min(self.Lat[latency_key(Opcode.MUL)], self.Lat[latency_key(Opcode.SUB)])

    @property
    def combine_tokens(self):
        """Largest block whose W2 combination chains on the streams (``combine_streamed``)."""
        return self.Lat[latency_key(Opcode.ADD32)]

    @property
    def group_tokens(self):
        """Tokens of the largest accumulator block a plan for this scheduler's T tokens can use."""
        return plan_blocks(self.cfg, self.T, self.pieces)[1]

    def mul_shift(self, n):
        """The product shift of d_ff tile n (one per tile: ``check_single_chip``)."""
        return int(np.asarray(self.q.mul_sh).reshape(-1)[min(n * self.lanes, np.size(self.q.mul_sh) - 1)])

    # --- MEM image ---------------------------------------------------------------------------
    def place(self, banks, vecs, what, n=None):
        """Allocate and fill a region; with vecs None (a trial placement) allocate n vectors only."""
        if vecs is None:
            return self.alloc.take(banks, n, what)
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

    def params(self, req, n_tiles, what, banks, dry=False):
        """Per-tile LDM vectors: 4 consecutive vectors (M low bytes, M high bytes, SH, Z) per tile."""
        if dry:
            return self.place(banks, None, f"{what} requant params", 4 * n_tiles)
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
        """Build the operation at the first cycle >= t_min where all its reservations hold (a busy
        queue or sub-unit lets it skip ahead: ``Txn.skip``)."""
        t = max(t_min, 0)
        limit = t + 100_000
        while t < limit:
            tx = self.sch.txn()
            res = build(tx, t)
            if tx.ok and not self.sch.crosses(tx):
                tx.commit()
                return res
            t += tx.skip
        raise CompileError(f"could not schedule {what} (internal scheduler limit)")

    def _stream(self, tx, src_pos, dst_pos, land, n, prefer):
        """Pick a stream index toward dst whose path is free."""
        S = self.cfg.streams
        cands = [i for i in prefer if i < S] + [i for i in range(S) if i not in prefer]
        for idx in cands:
            s = StreamRef(idx, dst_pos < src_pos)
            probe = self.sch.txn()
            probe.path(s, src_pos, land, dst_pos, n)
            if probe.ok and not (probe.cells & tx.plands or probe.plands & tx.cells):
                return idx
        return cands[0]

    def _free(self, tx, region, n, dst, arrive):
        """A cheap test first: the bank queue and read port of a READ (n elements) that reaches `dst`
        at `arrive` (``Txn.need``)."""
        tr = arrive - self.Lat["mem_read"] - abs(self.pos[dst] - self.pos[region.bank])
        return tx.need(region.bank, "rd", tr, tr + n - 1, tr + 1)

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

    def _times(self, table, bank):
        a = table.get(bank)
        if a is None:
            a = table[bank] = np.full(self.cfg.mem_depth, _NEVER, np.int64)
        return a

    def ready(self, region, off, consumer, n=1, stride=1):
        """First cycle `consumer` can sample element 0 of region[off:off+n] read from MEM, element k
        sampled k x stride cycles later, after everything this program wrote there has committed."""
        w = self.wr_t.get(region.bank)
        if w is None:
            return 0
        extra = self.Lat["mem_write"] + self.Lat["mem_read"] + abs(self.pos[consumer] - self.pos[region.bank])
        a = region.addr + off
        last = int((w[a:a + n] - np.arange(n) * stride).max())
        return max(0, last + extra) if last > _NEVER // 2 else 0

    def note_write(self, region, off, sample, n=1, stride=1):
        a = region.addr + off
        self._times(self.wr_t, region.bank)[a:a + n] = sample + np.arange(n) * stride

    def note_read(self, region, off, first, n, stride=1):
        """READ element k of region[off:off+n] reads the bank at cycle first + k x stride."""
        a = region.addr + off
        r = self._times(self.rd_t, region.bank)
        r[a:a + n] = np.maximum(r[a:a + n], first + np.arange(n) * stride)

    def _war(self, region, off=0, n=None, stride=1):
        """First cycle a WRITE may sample element 0 of region[off:off+n] (element k k x stride later)
        without overwriting data a READ of this program has not read yet."""
        r = self.rd_t.get(region.bank)
        if r is None:
            return 0
        n = region.n - off if n is None else n
        a = region.addr + off
        return max(0, int((r[a:a + n] + 1 - np.arange(n) * stride).max()))

    def lw(self, tile, tag):
        """Install a weight tile into the next buffer; returns (buffer, cycle of the last row).

        `tile`: one Region of L rows (rows = 1), or `rows` Regions of L / rows vectors, row i of the
        tile in region i % rows (``place_tile``).  Element k of the install takes row k x rows + j
        from stream s + j, read from region j so that it reaches the MXM in cycle t + k.  With rows
        = install_rows that is one LW of L rows; with fewer rows per cycle (a bank left free for the
        activations) an LW of `rows` rows, repeated every cycle."""
        L, Li, G, R = self.lanes, self.Lat["mxm_install"], self.rows, self.cfg.install_rows
        E = L // G                        # elements (cycles) of the install
        b = self.buf
        self.buf ^= 1
        t_min = max(self.next_lw, self.buf_last_mm_end[b] + 1 - Li)

        def build(tx, t):
            if not (tx.need(self.mxm, "install", t, t + E - 1, t + 1 if G == R else t + E) and
                    all(self._free(tx, r, E, self.mxm, t) for r in ((tile,) if R == 1 else tile))):
                return t
            if R == 1:
                s = self._read_to(tx, tile, 0, L, self.mxm, t, [0, 1], f"{tag} rows")
                insns, end = [Insn.make(Opcode.LW, s=s, buf=b, addr=0, count=L)], t + 1
            else:
                pm = self.pos[self.mxm]
                west = pm < self.pos[tile[0].bank]
                base = self._streams(tx, [(self.pos[r.bank], t - abs(pm - self.pos[r.bank])) for r in tile], pm, E,
                                     west, self.cfg.streams - R)
                for j, r in enumerate(tile):
                    read_to(tx, r.bank, r.addr, E, pm, t, base + j, tag=f"{tag} rows {j}::{G}")
                s = StreamRef(base, west)
                if G == R:
                    insns, end = [Insn.make(Opcode.LW, s=s, buf=b, addr=0, count=L)], t + 1
                else:
                    insns = [Insn.make(Opcode.LW, s=s, buf=b, addr=0, count=G)]
                    if E > 1:
                        insns.append(Insn.make(Opcode.REPEAT, n=E - 1, d=1))
                    end = t + E
            tx.add(self.mxm, t, insns, end, "install", (t, t + E - 1), tag=tag)
            tx.expect(t + E - 1 + Li)        # the last row lands in the weight buffer
            return t
        t = self._asap(t_min, build, tag)
        self.next_lw = t + E
        return b, t + E - 1

    def _streams(self, tx, sources, dst_pos, n, west, last_base):
        """The first base index s <= last_base such that streams s, s+1, ... (one per source: (position,
        landing cycle)) carry n elements each to dst_pos on free paths."""
        for base in range(last_base + 1):
            probe = self.sch.txn()
            for j, (p, land) in enumerate(sources):
                probe.path(StreamRef(base + j, west), p, land, dst_pos, n)
            if probe.ok and not (probe.cells & tx.plands or probe.plands & tx.cells):
                return base
        return 0

    @property
    def mm_streams(self):
        """Preferred streams for the activations of MM: clear of the installs' (0 .. rows - 1)."""
        G, S = self.rows, self.cfg.streams
        return [1, 0, 2] if self.cfg.install_rows == 1 else list(dict.fromkeys(i % S for i in (G, G + 1, G + 2)))

    def mm(self, b, lw_last, x_region, x_off, n, half, accumulate, tag, after=0):
        Li, Lm = self.Lat["mxm_install"], self.Lat["mxm_mm"]
        base = half * (self.cfg.acc_depth // 2)
        t_min = max(self.next_mm, lw_last + Li, self.ready(x_region, x_off, self.mxm, n), after)
        if not accumulate:
            t_min = max(t_min, self.acc_free_at[half])

        def build(tx, t):
            if not (tx.need(self.mxm, "mm", t, t + n - 1, t + 1) and
                    self._free(tx, _sub(x_region, n, x_off), n, self.mxm, t)):
                return t
            s = self._read_to(tx, x_region, x_off, n, self.mxm, t, self.mm_streams, f"{tag} activations")
            tx.add(self.mxm, t, [Insn.make(Opcode.MM, s=s, buf=b, addr=base, count=n, acc=int(accumulate))],
                   t + 1, "mm", (t, t + n - 1), tag=tag)
            tx.acc_write(self.mxm, base, t, n)
            if accumulate:
                tx.acc_read(self.mxm, base, t, n)
            tx.expect(t + n - 1 + Lm)        # the last accumulator entry commits
            return t
        t = self._asap(t_min, build, tag)
        self.next_mm = t + n
        self.buf_last_mm_end[b] = t + n - 1
        self.note_read(x_region, x_off, t - self.Lat["mem_read"] - abs(self.pos[self.mxm] - self.pos[x_region.bank]), n)
        return t + Lm          # the first entry commits here; entry k at t + Lm + k

    def ldm(self, pregion, tile, tag):
        def build(tx, t):
            if not (tx.need(self.vxm, "alu", t, t + 3, t + 1) and self._free(tx, pregion, 4, self.vxm, t)):
                return t
            src = self._read_to(tx, pregion, 4 * tile, 4, self.vxm, t, [2, 3], tag)
            tx.add(self.vxm, t, [Insn.make(Opcode.LDM, a=src)], t + 1, "alu", (t, t + 3), tag=tag)
            tx.expect(t + 4)
            return t
        t = self._asap(self.next_vxm, build, tag)
        self.next_vxm = t + 4
        return t

    def emit_req(self, commit, n, half, dst, tag):
        """EMIT an accumulator half, requantize it on the VXM (REQL), write it to region dst.

        When the EMIT's int32 group fills every stream of its direction (streams = 4) and dst lies
        beyond the VXM in that direction, the REQL's result needs a stream of that direction at the
        VXM, free only once the group has passed: more than vxm_req tokens then go in pieces of
        vxm_req, each EMIT timed after the previous piece's results.  (``req_near`` places the
        destinations between the MXM and the VXM instead, where the banks there have room and that
        program is the faster: ``_compile_layers``.)"""
        pv, pm = self.pos[self.vxm], self.pos[self.mxm]
        Lq = self.Lat["vxm_req"]
        beyond = (self.pos[dst.bank] - pv) * (pv - pm) > 0
        step = Lq if beyond and self.cfg.streams <= INT32_PLANES else n
        free_at = None
        for off in range(0, n, step):
            m = min(step, n - off)
            te, tr = self._emit_req(commit, off, m, half, dst, tag if m == n else f"{tag} rows {off}..{off + m - 1}")
            free_at = te - off if free_at is None else max(free_at, te - off)
        self.acc_free_at[half] = free_at
        return tr

    def _emit_req(self, commit, off, n, half, dst, tag):
        """EMIT accumulator entries off .. off + n - 1 of a half -> REQL -> dst[off:off + n]."""
        Le, Lq = self.Lat["mxm_emit"], self.Lat["vxm_req"]
        base = half * (self.cfg.acc_depth // 2) + off
        d_mv = abs(self.pos[self.vxm] - self.pos[self.mxm])
        d_out = abs(self.pos[dst.bank] - self.pos[self.vxm])
        t_min = max(commit + off, self.next_emit, self.next_vxm - Le - d_mv,
                    self._war(dst, off, n) - Le - d_mv - Lq - d_out)

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
            tx.acc_read(self.mxm, base, te, n)
            tr = land + d_mv
            out = self._write_from(tx, self.vxm, tr + Lq, dst, off, n, [4, 5, 6, 7], f"{tag} store")
            tx.add(self.vxm, tr, [Insn.make(Opcode.REQL, d=out, a=StreamRef(g, west), count=n)], tr + 1, "alu",
                   (tr, tr + n - 1), [tr + Lq + k for k in range(n)], tag=tag)
            return te, tr
        te, tr = self._asap(t_min, build, tag)
        self.next_emit = te + n
        self.next_vxm = tr + n
        self.note_write(dst, off, tr + Lq + d_out, n)
        return te, tr

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
            tx.acc_read(self.mxm, base, te, n)
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
        self.note_read(region, 0, t - self.Lat["mem_read"] - abs(pc - self.pos[region.bank]), n, F)
        return t

    def recv_region(self, port, region, n, arrival, tag):
        """RECV n vectors from `port` (the first arrives at cycle `arrival`) into region[0:n]."""
        F, Lr = self.cfg.vector_interval, self.Lat["c2c_recv"]
        c2c = self.cfg.slices_of("c2c")[0].name
        pc, pb = self.pos[c2c], self.pos[region.bank]
        t_min = max(arrival, self.next_rx.get(port, 0), self._war(region, 0, n, F) - Lr - abs(pb - pc))

        def build(tx, t):
            land = t + Lr
            d = self.sch.port_shift(c2c, [land + k * F for k in range(n)])
            if d:
                tx.fail(f"{c2c} stream port busy", d)
                return t
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
        """ADD32 (two int32 groups -> a group; one group: its double, the group read once onto streams
        that are both operands) or REQL (a group -> int8 region) on the VXM, from MEM."""
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
                insn = Insn.make(Opcode.ADD32, d=StreamRef(ob, west), a=bases[0], b=bases[-1], count=n)
            else:
                out = self._write_from(tx, self.vxm, t + lat, outs[0], 0, n, [4, 5, 6, 7], f"{tag} store")
                insn = Insn.make(Opcode.REQL, d=out, a=bases[0], count=n)
            tx.add(self.vxm, t, [insn], t + 1, "alu", (t, t + n - 1), [t + lat + k for k in range(n)], tag=tag)
            return t
        t = self._asap(t_min, build, tag)
        self.next_vxm = t + n
        for g in srcs:
            for r in g:
                self.note_read(r, 0, t - self.Lat["mem_read"] - abs(pv - self.pos[r.bank]), n)
        for r in outs:
            self.note_write(r, 0, t + lat + abs(self.pos[r.bank] - pv), n)
        return t

    def vxm_op(self, op, srcs, dst, n, tag, **kw):
        """dst = op(srcs...) on the VXM, operands read from MEM regions, result written to MEM.  `dst`
        may be a list of two regions (the tray's gather split): the second WRITE samples the same
        stream on its way to the first, so both banks must be on one side of the VXM."""
        lat = self.Lat[latency_key(op)]
        pv = self.pos[self.vxm]
        dsts = sorted(dst if isinstance(dst, list) else [dst], key=lambda r: -abs(self.pos[r.bank] - pv))
        if len(dsts) == 2 and ((self.pos[dsts[0].bank] < pv) != (self.pos[dsts[1].bank] < pv)
                               or dsts[0].bank == dsts[1].bank):
            raise CompileError(f"{tag}: two results need two banks on one side of {self.vxm}")
        t_min = max([self.next_vxm] + [self._war(d, 0, n) - lat - abs(self.pos[d.bank] - pv) for d in dsts] +
                    [self.ready(r, 0, self.vxm, n) for r in srcs])

        def build(tx, t):
            ss = [self._read_to(tx, r, 0, n, self.vxm, t, [2 + i, 4 + i], f"{tag} operand")
                  for i, r in enumerate(srcs)]
            out = self._write_from(tx, self.vxm, t + lat, dsts[0], 0, n, [4, 5, 6, 7], f"{tag} store")
            for d in dsts[1:]:
                write_from(tx, d.bank, out, d.addr, n, t + lat + abs(self.pos[d.bank] - pv),
                           tag=f"{tag} store (copy)")
            fields = dict(d=out, a=ss[0], count=n, **kw)
            if len(ss) > 1:
                fields["b"] = ss[1]
            tx.add(self.vxm, t, [Insn.make(op, **fields)], t + 1, "alu", (t, t + n - 1),
                   [t + lat + k for k in range(n)], tag=tag)
            return t
        t = self._asap(t_min, build, tag)
        self.next_vxm = t + n
        for r in srcs:
            self.note_read(r, 0, t - self.Lat["mem_read"] - abs(pv - self.pos[r.bank]), n)
        for d in dsts:
            self.note_write(d, 0, t + lat + abs(self.pos[d.bank] - pv), n)
        return t

    def hilo_streamed(self, aa, uu, ff, hi, lo, n, sh, tag):
        """The hi and lo pieces of a gated product for n <= vxm_mul, vxm_alu tokens (the chained results
        land one per cycle on the VXM's port), from A, U and the fine
        product F (MEM): hi = MUL(a, u) >> sh, written to `hi` and sampled by MUL(hi, #2^k) as it lands
        at the VXM; that product is sampled as it lands by SUB(F, it) -> `lo`."""
        Lm, La, Lr = self.Lat["vxm_mul"], self.Lat[latency_key(Opcode.SUB)], self.Lat["mem_read"]
        pv = self.pos[self.vxm]
        dh, dl = abs(self.pos[hi.bank] - pv), abs(self.pos[lo.bank] - pv)
        t_min = max(self.next_vxm, self.ready(aa, 0, self.vxm, n), self.ready(uu, 0, self.vxm, n),
                    self.ready(ff, 0, self.vxm, n) - 2 * Lm, self._war(hi, 0, n) - Lm - dh,
                    self._war(lo, 0, n) - 2 * Lm - La - dl)

        def build(tx, t):
            tg, ts = t + Lm, t + 2 * Lm
            if not tx.need(self.vxm, "alu", t, ts + n - 1, t + 1):
                return t
            sa = self._read_to(tx, aa, 0, n, self.vxm, t, [2, 4], f"{tag} hi operand")
            su = self._read_to(tx, uu, 0, n, self.vxm, t, [3, 5], f"{tag} hi operand")
            out = self._write_from(tx, self.vxm, tg, hi, 0, n, [4, 5, 6, 7], f"{tag} hi store")
            tx.add(self.vxm, t, [Insn.make(Opcode.MUL, d=out, a=sa, b=su, sh=sh, count=n)], t + 1, "alu",
                   (t, t + n - 1), [tg + k for k in range(n)], tag=f"{tag} hi")
            g = StreamRef(self._stream(tx, pv, pv, ts, n, [6, 7]), False)
            tx.path(g, pv, ts, pv, n)
            tx.add(self.vxm, tg, [Insn.make(Opcode.MUL, d=g, a=out, use_imm=1, imm=1 << self.hilo, sh=0, count=n)],
                   tg + 1, "alu", (tg, tg + n - 1), [ts + k for k in range(n)], tag=f"{tag} hi x 2^k")
            sf = self._read_to(tx, ff, 0, n, self.vxm, ts, [2, 3, 4], f"{tag} lo operand")
            lo_s = self._write_from(tx, self.vxm, ts + La, lo, 0, n, [4, 5, 6, 7], f"{tag} lo store")
            tx.add(self.vxm, ts, [Insn.make(Opcode.SUB, d=lo_s, a=sf, b=g, count=n)], ts + 1, "alu",
                   (ts, ts + n - 1), [ts + La + k for k in range(n)], tag=f"{tag} lo")
            return t
        t = self._asap(t_min, build, tag)
        ts = t + 2 * Lm
        self.next_vxm = ts + n
        for r in (aa, uu):
            self.note_read(r, 0, t - Lr - abs(pv - self.pos[r.bank]), n)
        self.note_read(ff, 0, ts - Lr - abs(pv - self.pos[ff.bank]), n)
        self.note_write(hi, 0, t + Lm + dh, n)
        self.note_write(lo, 0, ts + La + dl, n)

    def ldlut(self, region, what="activation LUT"):
        rows = 256 // self.lanes

        def build(tx, t):
            s = self._read_to(tx, region, 0, rows, self.vxm, t, [2, 3], f"{what} rows")
            tx.add(self.vxm, t, [Insn.make(Opcode.LDLUT, a=s, imm=0, count=rows)], t + 1, "alu", (t, t + rows - 1),
                   tag=f"load {what}")
            tx.expect(t + rows)
            return t
        t = self._asap(self.next_vxm, build, "LDLUT")
        self.next_vxm = t + rows

    def _group_path(self, tx, p_from, land, p_to, n, west):
        """The first int32 group (4 consecutive streams toward p_to) free for n elements landing at
        p_from from cycle `land`; its paths are reserved in tx.  A group sampled where it lands
        (p_from = p_to) may use either direction: the other one when none of `west`'s is free (on a
        4-stream chip an EMIT's group takes every stream of its direction)."""
        base = None
        for d in ((west, not west) if p_from == p_to else (west,)):
            for gi in range(self.cfg.streams - INT32_PLANES + 1):
                probe = self.sch.txn()
                for p in range(INT32_PLANES):
                    probe.path(StreamRef(gi + p, d), p_from, land, p_to, n)
                if probe.ok and not (probe.cells & tx.plands or probe.plands & tx.cells):
                    base, west = gi, d
                    break
            if base is not None:
                break
        if base is None:
            base = 0
        for p in range(INT32_PLANES):
            tx.path(StreamRef(base + p, west), p_from, land, p_to, n)
        return StreamRef(base, west)

    def combine_hilo(self, commit, bn, half, p2, m, ysub, what):
        """W2 tile m of a hi/lo gated product: the accumulator half holds acc(hi) (rows 0..bn-1) and
        acc(lo) (rows bn..2bn-1); Y = REQL(2^k acc(hi) + acc(lo)), the sum made by k ADD32 doublings
        and one ADD32 (wrapping, as ``QuantFFN.combine_acc``).  Blocks of at most vxm_alu tokens chain
        on the streams (``combine_streamed``), larger ones go through MEM."""
        if bn <= self.combine_tokens:
            return self.combine_streamed(commit, bn, half, p2, m, ysub, what)
        return self.combine_mem(commit, bn, half, p2, m, ysub, what)

    def combine_streamed(self, commit, bn, half, p2, m, ysub, what):
        """The combination without MEM: EMIT acc(hi) straight into the VXM, each ADD32 doubling
        sampling the previous one's result as it lands at the VXM (vxm_alu cycles apart, so at most
        that many tokens), EMIT acc(lo) timed to land with the k-th doubling, the last ADD32's result
        sampled by REQL, whose int8 Y goes to MEM."""
        Le, La, Lq = self.Lat["mxm_emit"], self.Lat[latency_key(Opcode.ADD32)], self.Lat["vxm_req"]
        k = self.hilo
        base = half * (self.cfg.acc_depth // 2)
        pm, pv = self.pos[self.mxm], self.pos[self.vxm]
        d_mv, d_out = abs(pv - pm), abs(self.pos[ysub.bank] - pv)
        west_in = pv < pm
        span = (k + 1) * La                 # first ADD32 -> REQL
        self.ldm(p2, m, f"LDM params {what}")
        t_min = max(commit, self.next_emit, self.next_vxm - Le - d_mv,
                    self._war(ysub, 0, bn) - Le - d_mv - span - Lq - d_out)

        def build(tx, te):
            te2 = te + k * La                # the lo rows' EMIT
            t0 = te + Le + d_mv              # acc(hi) at the VXM
            if not (tx.need(self.mxm, "emit", te, te + bn - 1, te + 1) and
                    tx.need(self.vxm, "alu", t0, t0 + span + bn - 1)):
                return te
            for t_e, addr, tag in ((te, base, "hi"), (te2, base + bn, "lo")):
                g = self._group_path(tx, pm, t_e + Le, pv, bn, west_in)
                tx.add(self.mxm, t_e, [Insn.make(Opcode.EMIT, s=g, addr=addr, count=bn)], t_e + 1, "emit",
                       (t_e, t_e + bn - 1), [t_e + Le + j for j in range(bn)], tag=f"EMIT {what} ({tag})")
                tx.acc_read(self.mxm, addr, t_e, bn)
                if tag == "hi":
                    src = g
                else:
                    lo = g
            for j in range(k + 1):
                t = t0 + j * La
                o = self._group_path(tx, pv, t + La, pv, bn, False)
                b, name = (src, f"2^{j + 1} x hi") if j < k else (lo, "+ lo")
                tx.add(self.vxm, t, [Insn.make(Opcode.ADD32, d=o, a=src, b=b, count=bn)], t + 1, "alu",
                       (t, t + bn - 1), [t + La + i for i in range(bn)], tag=f"ADD32 {what} {name}")
                src = o
            tr = t0 + span
            out = self._write_from(tx, self.vxm, tr + Lq, ysub, 0, bn, [4, 5, 6, 7], f"REQL {what} store")
            tx.add(self.vxm, tr, [Insn.make(Opcode.REQL, d=out, a=src, count=bn)], tr + 1, "alu",
                   (tr, tr + bn - 1), [tr + Lq + i for i in range(bn)], tag=f"REQL {what}")
            return te
        te = self._asap(t_min, build, f"combine {what}")
        tr = te + Le + d_mv + span
        self.next_emit = te + k * La + bn
        self.next_vxm = tr + bn
        self.acc_free_at[half] = te + k * La
        self.note_write(ysub, 0, tr + Lq + d_out, bn)
        return tr

    def combine_mem(self, commit, bn, half, p2, m, ysub, what):
        """The combination through MEM: EMIT both pieces' accumulators as int32 planes, ADD32 from
        and to MEM, REQL from MEM."""
        pg = [_sub(r, 2 * bn) for r in self.pg]
        dg = [_sub(r, bn) for r in self.dg]
        self.emit_planes(commit, 2 * bn, half, pg, f"EMIT {what} (hi, lo)")
        self.group_op(Opcode.ADD32, [[_sub(r, bn) for r in pg]], dg, bn, f"ADD32 {what} 2 x hi")
        for d in range(1, self.hilo):
            self.group_op(Opcode.ADD32, [dg], dg, bn, f"ADD32 {what} 2^{d + 1} x hi")
        self.group_op(Opcode.ADD32, [dg, [_sub(r, bn, bn) for r in pg]], dg, bn, f"ADD32 {what} + lo")
        self.group_op(Opcode.REQL, [dg], ysub, bn, f"REQL {what}", pregion=p2, tile=m)

    # --- the layer -----------------------------------------------------------------------------
    def sizes(self, T, tb, with_act=None, ring=False):
        """(weight, activation, other) vectors of the layer: X and Y for T tokens, the intermediates
        (Z1, H; gated also U, A) for a block of tb tokens (``ring``: one Z1, U, A for all tiles),
        the requant params and the LUT. Activations count unless ``with_act`` is False (default:
        unless an earlier MoE expert allocated the shared ones)."""
        q, L = self.q, self.lanes
        KT, FT, MT = self.KT, self.FT, self.MT
        weights = L * (KT * FT * (2 if q.gated else 1) + FT * MT)
        with_act = not self.shared if with_act is None else with_act
        inter = (FT + (3 if q.gated else 1)) if ring else FT * (4 if q.gated else 2)
        if self.hilo:       # H's lo piece per tile, the fine product [and hi x 2^k, unless chained]
            inter += FT + 1 + (tb > self.chain_tokens)
        # the int32 groups of a hi/lo product's W2 combination through MEM (``place_resident``)
        tg = self.group_tokens
        groups = 4 * (self.pieces + 1) * tg if self.hilo and tg > self.combine_tokens else 0
        act = T * (KT + MT) + tb * inter + groups if with_act else 0
        other = 4 * (FT * (2 if q.gated else 1) + MT) + (FT if self.tl else 1) * self.lut_rows
        return weights, act, other

    def size_error(self, T, tb, how="", with_act=None, ring=False):
        """The CompileError naming the sizes if the layer cannot fit the SRAM left, else None."""
        q, L, cfg = self.q, self.lanes, self.cfg
        w, a, o = self.sizes(T, tb, with_act, ring)
        total = (w + a + o) * L
        if total <= cfg.sram_bytes - self.alloc.used_bytes:
            return None
        used = f", {self.alloc.used_bytes} already used by earlier experts" if self.alloc.used_bytes else ""
        return CompileError(
            f"FFN {q.d_model}x{q.d_ff}{' gated' if q.gated else ''} for {T} tokens needs {total} bytes of SRAM "
            f"({w * L} of int8 weights in {L}x{L} tiles, {a * L} of activations{how}, "
            f"the rest requant params and the LUT{'s' if self.tl else ''}); config {cfg.name} has {cfg.sram_bytes} "
            f"({cfg.banks} banks x {cfg.mem_depth} vectors x {L} B{used})")

    def place_resident(self, dry=False):
        """Weights (tiles round-robin over the weight banks, then any bank), requant params, LUT.
        ``dry``: allocate only (a trial placement)."""
        if self.placed is not None:
            p = self.placed
            self.wt, self.p1, self.p3, self.p2, self.lut, self.ab = p.wt, p.p1, p.p3, p.p2, p.lut, p.ab
            self.luts, self.pg, self.dg = p.luts, p.pg, p.dg
            return
        q, L, FT, MT = self.q, self.lanes, self.FT, self.MT
        allb = self.wbanks + [b for b in self.abanks if b not in self.wbanks]
        self.pg = self.dg = None
        if self.hilo and self.group_tokens > self.combine_tokens:
            # int32 groups (4 byte planes in 4 banks, placed before the weights fill those banks) for
            # the largest accumulator block: W2's accumulators as EMITted (hi rows, then lo) on the
            # MXM's side of the VXM, and the combination 2^k acc(hi) + acc(lo) on the other (blocks
            # of at most combine_tokens chain on the streams and need none)
            tb = self.group_tokens
            if self.cfg.streams <= INT32_PLANES:
                # an ADD32 needs a stream of some direction for its result while its operand groups
                # pass the VXM: with 4 streams, a group from each side (+ lo) leaves none
                raise CompileError(f"config {self.cfg.name}: the W2 combination of a hi/lo product for blocks of "
                                   f"more than {self.combine_tokens} tokens goes through MEM as int32 groups, "
                                   f"which needs more than {INT32_PLANES} streams per direction (the chip has "
                                   f"{self.cfg.streams}); blocks of at most {self.combine_tokens} chain on the streams")
            self.pg = self.group_region("near", self.pieces * tb, "W2 accumulators")
            self.dg = self.group_region("far", tb, "W2 combined")
        self.wt = {}
        order = [("w1", q.w1), ("w3", q.w3), ("w2", q.w2)] if q.gated else [("w1", q.w1), ("w2", q.w2)]
        groups = self.weight_groups() if self.cfg.install_rows > 1 else None
        i = 0
        for name, w in order:
            tiles = ({(k, n): None for k in range(_ceil(w.shape[0], L)) for n in range(_ceil(w.shape[1], L))}
                     if dry else self.tiles(w))
            for key, tile in tiles.items():
                what = f"weight tile {name}[{key[0]},{key[1]}]"
                if groups is not None:
                    self.wt[(name,) + key] = self.place_tile(groups, i, tile, what)
                    i += 1
                    continue
                pref = self.wbanks[i % len(self.wbanks):] + self.wbanks[:i % len(self.wbanks)]
                spill = [b for b in allb if b not in pref]           # all weight banks full: spread evenly
                spill = spill[i % len(spill):] + spill[:i % len(spill)] if spill else []
                self.wt[(name,) + key] = self.place(pref + spill, tile, what, L)
                i += 1
        pb = [self.abanks[1 % len(self.abanks)]] + allb
        self.p1 = self.params(q.req1, FT, "w1", pb, dry)
        self.p3 = self.params(q.req3, FT, "w3", pb, dry) if q.gated else None
        self.p2 = self.params(q.req2, MT, "w2", pb, dry)
        self.luts = None
        if self.tl:         # one table per d_ff tile (lut_block = lanes), loaded before the tile's LUT
            self.luts = {n: self.place(self.abanks[::-1] + allb, None if dry else q.tile_luts[n].reshape(256 // L, L),
                                       f"activation LUT tile {n}", 256 // L) for n in range(FT)}
            self.lut = self.luts[0]
        else:
            self.lut = self.place(self.abanks[::-1] + allb, None if dry else q.lut.reshape(256 // L, L),
                                  "activation LUT", 256 // L)
        self.ab = self.abanks + [b for b in allb if b not in self.abanks]

    def weight_groups(self):
        """Bank groups for tiles whose rows go over `rows` banks: groups of the weight banks, then of
        the others (or the `rows` banks nearest the MXM when the weight banks are fewer)."""
        G, pm = self.rows, self.pos[self.mxm]
        near = self.wbanks + [b for b in self.abanks if b not in self.wbanks]      # nearest the MXM first
        if G > len(near):
            raise CompileError(f"config {self.cfg.name}: installing {G} weight rows per cycle needs {G} MEM banks, "
                               f"the chip has {len(near)}")
        if G > len(self.wbanks):
            groups, spill = [near[:G]], []
        else:
            groups = [self.wbanks[g:g + G] for g in range(0, len(self.wbanks) - G + 1, G)]
            rest = [b for b in near if b not in self.wbanks]
            spill = [rest[g:g + G] for g in range(0, len(rest) - G + 1, G)]
        for g in groups + spill:
            if len({self.pos[b] < pm for b in g}) > 1:
                raise CompileError(f"config {self.cfg.name}: the banks {', '.join(g)} lie on both sides of "
                                   f"{self.mxm}; an LW takes its rows from streams of one direction")
        return groups, spill

    def place_tile(self, groups, i, tile, what):
        """Tile i over one bank group (round-robin over the weight groups, then the spill groups when
        all are full): row r in bank group[r % rows], consecutive addresses per bank. Returns the
        per-bank Regions in row order."""
        G, L = self.rows, self.lanes
        E = L // G
        groups, spill = groups
        order = groups[i % len(groups):] + groups[:i % len(groups)]
        if spill:
            order += spill[i % len(spill):] + spill[:i % len(spill)]
        for g in order:
            if all(self.alloc.free(b) >= E for b in g):
                return tuple(self.place([b], None if tile is None else tile[j::G], f"{what} rows {j}::{G}", E)
                             for j, b in enumerate(g))
        need = L * L
        raise CompileError(f"{what} needs {E} vectors in each of {G} banks of a group ({need} bytes), but no "
                           f"group has room left: {self.cfg.banks} banks x {self.cfg.mem_depth} vectors x {L} B = "
                           f"{self.cfg.sram_bytes} bytes of SRAM, {self.alloc.used_bytes} already allocated")

    def req_near(self, tb):
        """True when the destinations of the REQLs after an EMIT (Z1, U, Y) go between the MXM and the
        VXM (``act_region``'s ``near``) for blocks of tb tokens: an EMIT's int32 group fills every
        stream of its direction (streams = 4), so while it passes the VXM (a block of more than
        vxm_req tokens) a REQL can send its result at full rate only back toward the MXM; to a bank
        beyond the VXM it goes in pieces (``emit_req``).  ``near`` False (``_Plan.near``): where 8
        streams have them (``_compile_layers`` keeps the faster program)."""
        return self.near and self.cfg.streams <= INT32_PLANES and tb > self.Lat["vxm_req"]

    def act_region(self, k, n, what, avoid=(), near=False):
        """An activation region, preferably in bank ab[k], never in a bank of `avoid`.  ``near``:
        preferably in a bank between the MXM and the VXM, the k-th of them other than the MM's bank
        ab[0] (the VXM reads Z1 and U while the MXM reads X), else as above."""
        if self.shared is not None and what in self.shared:
            return self.shared[what]
        ab = self.ab
        if near:
            pv, pm = self.pos[self.vxm], self.pos[self.mxm]
            side = [b for b in ab[1:] if (self.pos[b] < pv) == (pm < pv)]
            if side:
                i = k % len(side)
                side = side[i:] + side[:i]
                ab, k = side + [b for b in ab if b not in side], 0
        pref = [b for b in ab[k % len(ab):] + ab[:k % len(ab)] if b not in avoid]
        r = self.alloc.take(pref, n, what)
        if self.shared is not None:
            self.shared[what] = r
        return r

    def group_region(self, side, n, what):
        """An int32 group of n vectors: one region in each of 4 banks on one side of the VXM."""
        if self.shared is not None and what in self.shared:
            return self.shared[what]
        g = [self.alloc.take([b], n, f"{what} plane {p}") for p, b in enumerate(self.group_banks(side))]
        if self.shared is not None:
            self.shared[what] = g
        return g

    def place_activations(self, T, tb, ring=False):
        """X and Y for T tokens (tokens contiguous), and the intermediates of one block of tb tokens,
        reused by every block. X and H on ab[0] (read by MM), Z1 on ab[1], U on ab[2], A and Y on
        ab[3]: the two operands of MUL (A, U) sit in different banks and every VXM result has a free
        write port. ``ring``: one Z1, U and A region serves every d_ff tile (each is dead once the
        tile's H is written, and the VXM runs in order), only H keeps a region per tile."""
        if self.placed is not None:
            p = self.placed
            self.xr, self.yr, self.z1, self.hh, self.uu, self.aa = p.xr, p.yr, p.z1, p.hh, p.uu, p.aa
            self.ff, self.gg = p.ff, p.gg
            return
        KT, FT, MT = self.KT, self.FT, self.MT
        near = self.req_near(tb)
        self.xr = {k: self.act_region(0, T, f"input X tile {k}") for k in range(KT)}
        self.yr = {m: self.act_region(3, T, f"output Y tile {m}", near=near and not self.hilo) for m in range(MT)}
        tiles = [0] * FT if ring else range(FT)          # the region of each d_ff tile
        z1 = {n: self.act_region(1, tb, f"Z1 tile {n}", near=near) for n in sorted(set(tiles))}
        self.z1 = {n: z1[i] for n, i in enumerate(tiles)}
        # hilo: tile n's hi pieces then its lo pieces, one region (one MM of 2 x tokens rows into W2)
        self.hh = {n: self.act_region(0, self.pieces * tb, f"H tile {n}") for n in range(FT)}
        self.uu = self.aa = None
        self.ff = self.gg = None
        if self.hilo:
            # the fine product and sat8(hi x 2^k) (ring: dead once the tile's lo piece is written);
            # SUB reads both at once, so two banks
            self.ff = self.act_region(1, tb, "H fine product")
            if tb > self.chain_tokens:
                self.gg = self.act_region(2, tb, "H hi x 2^k", avoid=(self.ff.bank,))
        if self.q.gated:
            uu = {n: self.act_region(2, tb, f"U tile {n}", near=near) for n in sorted(set(tiles))}
            # MUL reads A and U in the same cycles: one read port per bank, so two banks
            aa = {n: self.act_region(3, tb, f"A tile {n}", avoid=(uu[n].bank,)) for n in sorted(set(tiles))}
            self.uu = {n: uu[i] for n, i in enumerate(tiles)}
            self.aa = {n: aa[i] for n, i in enumerate(tiles)}

    def build(self, alloc=None, placed=None):
        """Place and schedule the whole layer as one program (the tray compiler's entry). ``alloc``
        (tokens, block tokens): size X, Y and the intermediates (and choose the weight rows per
        cycle) for that many tokens instead of this program's own, so that a shorter run of the layer
        places everything at the same addresses as the longer one (the tray's token chunks).
        ``placed()``: called once everything is placed, before the schedule."""
        blocks, tb = plan_blocks(self.cfg, self.T, self.pieces)
        aT, atb = alloc if alloc is not None else (self.T, tb)
        err = self.size_error(aT, atb)
        if err is not None:
            raise err
        self.rows = _rows(self.cfg, atb)
        self.place_resident()
        self.place_activations(aT, atb)
        if placed is not None:
            placed()
        return self.schedule(self.T, blocks)

    def schedule(self, T, blocks, work=None):
        """The program for T tokens (X and Y regions from their start) in accumulator blocks
        [(first token, tokens)]; returns the run's (x_layout, y_layout).  ``work`` (first, end): one
        block's units first .. end - 1 only (``Run.work``: the d_ff tiles of H, then the output
        tiles of Y; the H tiles an earlier run wrote are in MEM)."""
        q = self.q
        KT, FT, MT = self.KT, self.FT, self.MT
        wt, p1, p3, p2 = self.wt, self.p1, self.p3, self.p2
        if work is None:
            h_tiles, y_tiles = range(FT), range(MT)
        else:
            if len(blocks) != 1 or not 0 <= work[0] < work[1] <= FT + MT:
                raise ValueError(f"work {work}: a range of the {FT + MT} units of one block")
            h_tiles = range(min(work[0], FT), min(work[1], FT))
            y_tiles = range(max(work[0] - FT, 0), max(work[1] - FT, 0))
        x_layout = {k: _sub(r, T) for k, r in self.xr.items()} if h_tiles else {}
        y_layout = {m: _sub(self.yr[m], T) for m in y_tiles}
        P = self.pieces
        if h_tiles:
            n0 = h_tiles[0]
            self.ldlut(self.luts[n0] if self.tl else self.lut,
                       f"activation LUT tile {n0}" if self.tl else "activation LUT")
        # the matmul jobs, in order: each a list of (weight tile, activation region, offset), the
        # accumulator half, and what happens to the result
        jobs = []
        for bstart, bn in blocks:
            z1 = {n: _sub(r, bn) for n, r in self.z1.items()}
            hh = {n: _sub(r, P * bn) for n, r in self.hh.items()}
            if q.gated:
                uu = {n: _sub(r, bn) for n, r in self.uu.items()}
                aa = {n: _sub(r, bn) for n, r in self.aa.items()}
            tokens = f"tokens {bstart}..{bstart + bn - 1}"
            for n in h_tiles:
                # tiles: the next tile's table is loaded right after this tile's LUT (the VXM waits for
                # the MUL's operands then); the last block's last tile reloads tile 0 for the next block
                # (a run of some tiles, ``work``: the next tile's only while the run has one)
                if work is None:
                    nxt = (n + 1) % FT
                    more = FT > 1 and (nxt or bstart != blocks[-1][0])
                else:
                    nxt = n + 1
                    more = nxt < h_tiles.stop
                reload = ([(Opcode.LDLUT, self.luts[nxt], f"activation LUT tile {nxt}", {})]
                          if self.tl and more else [])
                tiles = [(("w1", k, n), x_layout[k], bstart) for k in range(KT)]
                jobs.append((tiles, bn, p1, n, z1[n], f"w1 tile {n} {tokens}", None))
                if q.gated:
                    tiles = [(("w3", k, n), x_layout[k], bstart) for k in range(KT)]
                    after = [(Opcode.LUT, [z1[n]], aa[n], {})] + reload
                    hi, sh = _sub(hh[n], bn), self.mul_shift(n)
                    if not self.hilo:
                        after.append((Opcode.MUL, [aa[n], uu[n]], hi, {"sh": sh}))
                    elif bn <= self.chain_tokens:
                        # fine = MUL(a, u) >> (sh - k) to MEM, then hi, sat8(hi x 2^k) and lo chained on
                        # the streams (``hilo_streamed``)
                        ff = _sub(self.ff, bn)
                        after += [(Opcode.MUL, [aa[n], uu[n]], ff, {"sh": sh - self.hilo}),
                                  ("hilo", [aa[n], uu[n], ff], [hi, _sub(hh[n], bn, bn)], {"sh": sh})]
                    else:
                        # lo = sat8(sat8(a*u >> (sh - k)) - sat8(hi * 2^k)): QuantFFN.gated_product
                        ff, gg = _sub(self.ff, bn), _sub(self.gg, bn)
                        after += [(Opcode.MUL, [aa[n], uu[n]], hi, {"sh": sh}),
                                  (Opcode.MUL, [aa[n], uu[n]], ff, {"sh": sh - self.hilo}),
                                  (Opcode.MUL, [hi], gg, {"use_imm": 1, "imm": 1 << self.hilo, "sh": 0}),
                                  (Opcode.SUB, [ff, gg], _sub(hh[n], bn, bn), {})]
                    jobs.append((tiles, bn, p3, n, uu[n], f"w3 tile {n} {tokens}", after))
                else:
                    jobs[-1] = jobs[-1][:6] + ([(Opcode.LUT, [z1[n]], hh[n], {})] + reload,)
            for m in y_tiles:
                tiles = [(("w2", k, m), hh[k], 0) for k in range(FT)]
                if self.w2_mode == "partial":
                    grp = [self.alloc.take([b], bn, f"partial Y tile {m} plane {p} block {bstart}")
                           for p, b in enumerate(self.group_banks("near"))]
                    self.partials[(bstart, m)] = grp
                    jobs.append((tiles, bn, None, m, grp, f"w2 tile {m} {tokens} (partial)", None))
                    continue
                ysub = _sub(y_layout[m], bn, bstart)
                if self.hilo:   # both pieces of every token: 2 x bn accumulator rows, combined before REQL
                    jobs.append((tiles, P * bn, ("hilo", p2), m, ysub, f"w2 tile {m} {tokens}", None))
                    continue
                jobs.append((tiles, bn, p2, m, ysub, f"w2 tile {m} {tokens}", None))
        flat = [(j, i) for j, job in enumerate(jobs) for i in range(len(job[0]))]

        def install(idx):
            j, i = flat[idx]
            key = jobs[j][0][i][0]
            return self.lw(wt[key], f"LW {key[0]}[{key[1]},{key[2]}]")
        installed = {0: install(0)}
        half = 0
        # The next install goes ahead of this multiply (installs back to back), except when it is a
        # repeated LW: that holds the MXM queue for its whole length, so it follows the MM's issue.
        ahead = self.rows == self.cfg.install_rows
        for idx, (j, i) in enumerate(flat):
            tiles, bn, pr, tile_no, dst, what, after = jobs[j]
            if idx + 1 < len(flat) and ahead:
                installed[idx + 1] = install(idx + 1)
            key, xr, xoff = tiles[i]
            b, last = installed.pop(idx)
            commit = self.mm(b, last, xr, xoff, bn, half, i > 0, f"MM {key[0]}[{key[1]},{key[2]}] {what}")
            if idx + 1 < len(flat) and not ahead:
                installed[idx + 1] = install(idx + 1)
            if i == len(tiles) - 1:
                if pr is None:
                    self.emit_planes(commit, bn, half, dst, f"EMIT {what}")
                elif isinstance(pr, tuple):
                    self.combine_hilo(commit, bn // P, half, pr[1], tile_no, dst, what)
                else:
                    self.ldm(pr, tile_no, f"LDM params {what}")
                    self.emit_req(commit, bn, half, dst, f"REQL {what}")
                half ^= 1
                for op, srcs, d, kw in after or ():
                    if op == Opcode.LDLUT:
                        self.ldlut(srcs, d)
                    elif op == "hilo":
                        self.hilo_streamed(*srcs, *d, bn, kw["sh"], f"MUL {what}")
                    else:
                        self.vxm_op(op, srcs, d, bn, f"{op.name} {what}", **kw)
        return x_layout, y_layout


# ------------------------------------------------------------------------------------------------
# Plans: how the tokens are cut into runs (chunks) and accumulator blocks
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Plan:
    chunk: int            # tokens of the largest run (X and Y are allocated for it)
    tb: int               # tokens of the largest accumulator block (the intermediates' size)
    even: bool            # split runs and blocks evenly; False: one run, blocks of tb + a rest (the default)
    ring: bool = False    # one Z1 / U / A region for every d_ff tile (see place_activations)
    rows: int = 1         # weight rows installed per cycle (``_rows``)
    pieces: int = 1       # accumulator rows per token in W2 (2: a hi/lo gated product, ``plan_blocks``)
    near: bool = True     # 4 streams: the REQL destinations between the MXM and the VXM (``req_near``)

    def runs(self, T):
        """[(first token, tokens)] per run: ceil(T / chunk) runs whose sizes differ by at most one."""
        return _even(T, _ceil(T, self.chunk))

    def blocks(self, cfg, n):
        """[(first token within the run, tokens)] per accumulator block of a run of n tokens."""
        return _even(n, _ceil(n, self.tb)) if self.even else plan_blocks(cfg, n, self.pieces)[0]


def _even(total, parts):
    """`total` cut into `parts` consecutive pieces whose sizes differ by at most one, larger first."""
    base, rem = divmod(total, parts)
    out, start = [], 0
    for i in range(parts):
        n = base + (i < rem)
        out.append((start, n))
        start += n
    return out


def _rows(cfg, tb):
    """Weight rows to install per cycle for blocks of tb tokens. install_rows when the weight banks
    (the half of the banks nearest the MXM) can feed it. When they cannot, full speed takes every
    bank, so no install can overlap a multiply (its activations come from a bank too): installing
    from the weight banks alone (fewer rows per cycle, banks of their own) wins once a block's
    multiply is long enough to hide that slower install."""
    R, L = cfg.install_rows, cfg.lanes
    nw = min(cfg.banks, max(4, cfg.banks // 2))
    if R <= nw:
        return R
    G = 1 << (nw.bit_length() - 1)
    return G if max(tb, L // G) + 1 < tb + L // R + 2 else R


class _QueueFull(Exception):
    def __init__(self, queue, n):
        super().__init__(queue, n)
        self.queue, self.n = queue, n


def _trial(cfg, qs, plan):
    """Place every expert with `plan` on a fresh allocator without filling it: None if it fits, else
    (expert, the allocator before that expert's weights, the CompileError)."""
    alloc, shared = _Alloc(cfg), {}
    for e, q in enumerate(qs):
        before = alloc.clone()
        s = _FFNScheduler(cfg, q, plan.chunk, alloc, image=None, shared=shared)
        s.rows, s.near = plan.rows, plan.near
        try:
            s.place_resident(dry=True)
            s.place_activations(plan.chunk, plan.tb, plan.ring)
        except CompileError as err:
            return e, before, err
    return None


def _plan(cfg, qs, T):
    """The token plan. The default (one run, accumulator blocks of acc_depth / 2, the intermediates
    of every d_ff tile apart) when it fits the SRAM; otherwise one Z1 / U / A region for all tiles
    and the cheapest fitting (run size, block size) by the cycle estimate below. Raises CompileError
    (naming the sizes) when not even one token at a time fits."""
    pieces = 2 if any(q.hilo for q in qs) else 1
    tb0 = plan_blocks(cfg, T, pieces)[1]
    default = _Plan(T, tb0, False, rows=_rows(cfg, tb0), pieces=pieces)
    if _trial(cfg, qs, default) is None:
        return default
    q, L = qs[0], cfg.lanes
    KT, FT, MT = _ceil(q.d_model, L), _ceil(q.d_ff, L), _ceil(q.d_model, L)
    tiles = KT * FT * (2 if q.gated else 1) + FT * MT
    probe = _FFNScheduler(cfg, q, 1)
    w, act1, o = probe.sizes(1, 1, ring=True)
    inter = act1 - (KT + MT)                                   # intermediate vectors per block token
    free = cfg.banks * cfg.mem_depth - len(qs) * (w + o)
    # the MXM queue holds about LW, MM, NOP per weight tile and EMIT, NOP per output tile, per block
    per_block = 3 * tiles + 2 * (FT * (2 if q.gated else 1) + MT)
    max_blocks = max(1, (cfg.queue_depth - 8) // per_block)

    def plan(chunk, tb):
        return _Plan(chunk, tb, True, True, _rows(cfg, tb), pieces)

    def cost(chunk, tb):
        # every block installs every weight tile and streams its tokens through it (one after the
        # other when the install needs every bank, else overlapped); every run adds a pipeline fill
        # and drain
        p = plan(chunk, tb)
        install, overlap = L // p.rows, p.rows <= min(cfg.banks, max(4, cfg.banks // 2))
        total = 0
        for n, count in Counter(n for _, n in p.runs(T)).items():
            blocks = p.blocks(cfg, n)
            b = blocks[0][1]
            per_tile = max(b, install) + 1 if overlap else b + install + 2
            total += count * (len(blocks) * tiles * per_tile + 2 * L + 64)
        return total

    def fits(chunk, tb):
        return _trial(cfg, qs, plan(chunk, tb)) is None

    cands = []
    for tb in range(tb0, 0, -1):
        chunk = min(T, max_blocks * tb, (free - tb * inter) // (KT + MT))   # an upper bound
        if chunk >= tb:
            cands.append((cost(chunk, tb), -chunk, tb, chunk))
    cands.sort()
    best = None
    for est, _, tb, hi in cands:
        if best is not None and est >= best[0]:
            break                       # the estimate is a lower bound on that candidate's cost
        if not fits(tb, tb):
            continue
        lo = tb                         # the largest run that fits, by bisection
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid, tb) else (lo, mid - 1)
        c = cost(lo, tb)
        if best is None or c < best[0]:
            best = (c, plan(lo, tb))
    if best is None:
        e, before, err = _trial(cfg, qs, plan(1, 1))
        size = _FFNScheduler(cfg, qs[e], 1, before).size_error(T, 1, " for one token at a time", with_act=e == 0,
                                                                ring=True)
        raise _expert(size if size is not None else err, e, len(qs))
    return best[1]


def _expert(err, e, n):
    """A CompileError about expert e of an MoE layer of n experts names it."""
    return CompileError(f"expert {e} of {n}: {err}") if n > 1 else err


def _unit_words(q, cfg, rows):
    """Estimated MXM queue words of each unit of one block (``Run.work``): the d_ff tiles of H (W1
    [and W3] tiles of KT weight tiles each, an EMIT each), then the output tiles of Y (FT weight
    tiles, an EMIT [two for a hi/lo product]). A weight tile takes LW, NOP, MM (an LW of fewer rows
    than install_rows one word more: its REPEAT)."""
    L = cfg.lanes
    KT, FT, MT = _ceil(q.d_model, L), _ceil(q.d_ff, L), _ceil(q.d_model, L)
    g = 2 if q.gated else 1
    tile = 3 if rows == cfg.install_rows else 4
    return [g * (tile * KT + 2)] * FT + [tile * FT + (4 if q.hilo else 2)] * MT


def _cut(u0, u1, k, est):
    """Units u0 .. u1 - 1 cut into k (at most u1 - u0) consecutive ranges of about equal estimated words."""
    k = max(1, min(k, u1 - u0))
    cum = np.cumsum([0] + list(est[u0:u1]))
    bounds = [u0]
    for i in range(1, k):
        j = int(np.searchsorted(cum, i * cum[-1] / k))
        j = min(max(j, bounds[-1] - u0 + 1), (u1 - u0) - (k - i))
        bounds.append(u0 + j)
    bounds.append(u1)
    return list(zip(bounds[:-1], bounds[1:]))


#: the share of queue_depth a cut by work aims its runs' longest queue at (the rest: the estimate's error)
_WORK_FILL = 0.92


def _split_work(cfg, q, piece, est, measured=None):
    """One block's work cut into runs whose queues fit queue_depth: `piece((first, end))` schedules
    units first .. end - 1 (``_FFNScheduler.schedule``'s ``work``) and returns (run, longest queue,
    its words). The first cut takes the estimate `est` (words per unit; scaled by ``measured`` =
    (queue, words) of the whole block when that was scheduled); a run that still overflows is cut
    again in proportion. Returns the runs in order."""
    depth, U = cfg.queue_depth, len(est)
    scale = measured[1] / sum(est) if measured else 1.0
    budget = _WORK_FILL * depth
    todo = _cut(0, U, max(2, _ceil(int(sum(est) * scale), int(budget))), est)
    done = []
    while todo:
        work = todo.pop(0)
        run, queue, n = piece(work)
        if n <= depth:
            done.append(run)
            continue
        if work[1] - work[0] == 1:
            L, FT = cfg.lanes, _ceil(q.d_ff, cfg.lanes)
            u = work[0]
            what = (f"d_ff tile {u} of H ({_ceil(q.d_model, L)} weight tiles of W1{' and of W3' if q.gated else ''})"
                    if u < FT else f"output tile {u - FT} of Y ({FT} weight tiles of W2: d_ff {q.d_ff} in "
                                   f"tiles of {L})")
            raise CompileError(
                f"one run of the layer's smallest unit of work, {what}, needs {n} instructions in queue {queue}; "
                f"config {cfg.name} has queue_depth {depth} (the MXM queue takes about 3 instructions per weight "
                f"tile: a bigger queue_depth or a smaller layer is needed)")
        todo[0:0] = _cut(*work, max(2, _ceil(n, int(budget))), est)
    return done


def _compile(qs, cfg, Ts, plan, prepare=None):
    """Every expert of `qs` with `plan`: one MEM image; per expert, per token count of `Ts`, a Compiled
    with its runs. Every run size (over all the counts) is scheduled once per expert, on the regions
    placed for the largest (``placed``), so all the programs of an expert share its addresses.  A run
    size of one block whose program exceeds queue_depth is cut by work (``_split_work``); a run of
    several blocks that does raises ``_QueueFull`` (the caller makes runs of fewer blocks)."""
    alloc, image, shared = _Alloc(cfg), {}, {}
    chunks = {T: plan.runs(T) for T in Ts}
    sizes = sorted({n for ch in chunks.values() for _, n in ch}, reverse=True)
    tb = max(b for n in sizes for _, b in plan.blocks(cfg, n))
    depth = cfg.queue_depth
    out = []
    for e, q in enumerate(qs):
        first = _FFNScheduler(cfg, q, sizes[0], alloc, image, shared)
        first.rows, first.near = plan.rows, plan.near
        try:
            first.place_resident()
            first.place_activations(sizes[0], tb, plan.ring)
        except CompileError as err:
            raise _expert(err, e, len(qs)) from None
        est = _unit_words(q, cfg, plan.rows)
        per_size = {}
        for size in sizes:
            blocks = tuple(plan.blocks(cfg, size))

            def piece(work, size=size, blocks=blocks):
                s = _FFNScheduler(cfg, q, size, alloc, image, shared, placed=first)
                s.rows, s.near = plan.rows, plan.near
                if prepare is not None:
                    prepare(s)
                s.place_resident()
                s.place_activations(sizes[0], tb, plan.ring)
                try:
                    xl, yl = s.schedule(size, list(blocks), work)
                except CompileError as err:
                    raise _expert(err, e, len(qs)) from None
                program, H, listing = s.sch.finish()
                program, listing, _ = compress_program(program, listing)   # REPEAT runs (firmware/compress.py)
                worst = max(program.queues, key=lambda k: len(program.queues[k]))
                return (s, program, H + 1, listing, xl, yl, blocks, work), worst, len(program.queues[worst])

            guess = sum(est) * len(blocks)
            if guess > 1.05 * depth and len(blocks) > 1:
                raise _QueueFull("mxm (estimated)", guess)
            if guess > 1.05 * depth:        # surely too long: cut by work without scheduling it whole
                per_size[size] = _split_work(cfg, q, piece, est)
                continue
            run, worst, n = piece(None)
            if n <= depth:
                per_size[size] = [run]
            elif len(blocks) > 1:
                raise _QueueFull(worst, n)
            else:
                per_size[size] = _split_work(cfg, q, piece, est, (worst, n))
        per_T = []
        for T in Ts:
            runs = []
            for t0, n in chunks[T]:
                for s, program, cyc, listing, xl, yl, blocks, work in per_size[n]:
                    runs.append(Run(program, listing, s.sch, t0, n, xl, yl, cyc, blocks, work))
            r0 = runs[0]
            y0 = {m: reg for r in runs if r.token0 == 0 for m, reg in r.y_layout.items()}
            c = Compiled(cfg, r0.program, image, r0.x_layout, y0, T, sum(r.predicted_cycles for r in runs),
                         r0.listing, r0.schedule, q, runs=runs)
            c.report = _report(c, first, plan)
            per_T.append(c)
        out.append(per_T)
    for per_T in out:
        for c in per_T:
            c.report["sram_bytes_used"] = alloc.used_bytes
    return out


def check_emittable(q):
    """The tensor-parallel tray compiler's check (firmware/tray.py): refuse a ``QuantFFN`` whose
    arithmetic it cannot emit (a clear error, never a program that computes something else).  The
    single-chip compiler (``compile_ffn``, ``compile_moe``) checks with ``check_single_chip``."""
    if q.tile_luts is not None or q.hilo or np.ndim(q.mul_sh):
        raise CompileError("this QuantFFN asks for per-block SiLU tables, per-channel product shifts or a "
                           "hi/lo gated product (sim/serving/quant8.py scheme 'tiles'); the tensor-parallel "
                           "tray compiler does not emit that program (the single-chip compile_ffn and "
                           "compile_moe do)")


def check_single_chip(q, cfg):
    """What the single-chip program can emit of a ``QuantFFN``'s optional arithmetic: per-block SiLU
    tables whose block is the chip's lanes (one table per d_ff tile), product shifts constant over
    each d_ff tile (one MUL per tile), and a hi/lo gated product whose shifts fit MUL's."""
    L = cfg.lanes
    FT = _ceil(q.d_ff, L)
    if q.tile_luts is not None:
        if q.lut_block != L:
            raise CompileError(f"the QuantFFN's SiLU tables are per block of {q.lut_block} d_ff channels; config "
                               f"{cfg.name} has {L} lanes and loads one table per d_ff tile of {L} channels "
                               f"(calibrate with block={L})")
        if np.shape(q.tile_luts) != (FT, 256):
            raise CompileError(f"tile_luts has shape {np.shape(q.tile_luts)}; d_ff {q.d_ff} in tiles of {L} "
                               f"needs ({FT}, 256)")
    sh = np.asarray(q.mul_sh, dtype=np.int64)
    if sh.ndim:
        if not q.gated:
            raise CompileError("per-channel product shifts (mul_sh an array) need a gated FFN")
        if sh.shape != (q.d_ff,):
            raise CompileError(f"mul_sh has shape {sh.shape}; expected one shift per d_ff channel ({q.d_ff},)")
        for n in range(FT):
            part = sh[n * L:(n + 1) * L]
            if len(set(part.tolist())) > 1:
                raise CompileError(f"mul_sh differs inside d_ff tile {n} (channels {n * L}..{n * L + len(part) - 1}: "
                                   f"{sorted(set(part.tolist()))}); one MUL per tile takes one shift")
    if q.hilo:
        if not q.gated:
            raise CompileError(f"hilo {q.hilo}: a hi/lo product needs a gated FFN")
        if not 1 <= q.hilo <= 14:
            raise CompileError(f"hilo {q.hilo} is out of range: lo needs hi x 2^k as MUL's 16-bit immediate "
                               f"(1 <= k <= 14)")
    lo, hi = int(sh.min()), int(sh.max())
    if lo - q.hilo < 0 or hi > 63:
        raise CompileError(f"mul_sh {lo}..{hi} with hilo {q.hilo}: MUL shifts are 0..63 and the fine piece "
                           f"shifts by mul_sh - hilo >= 0")


def _shared_rows(cfg, Ts, pieces):
    """The weight rows installed per cycle for programs of several token counts on one image: the
    placement of the weight tiles depends on it, so they share one value. ``_rows`` of each count's
    block size are the candidates; the one with the least summed estimate (per weight tile and block,
    as ``_plan``'s cost) wins, ties to more rows. On ``lpu`` (8 install rows, 8 banks) 8 tokens alone
    would install 4 rows per cycle from the weight banks; 8 rows keeps the 1-token program fast."""
    L, nw = cfg.lanes, min(cfg.banks, max(4, cfg.banks // 2))

    def est(rows):
        install, total = L // rows, 0
        for T in Ts:
            for _, b in plan_blocks(cfg, T, pieces)[0]:
                total += max(b, install) + 1 if rows <= nw else b + install + 2
        return total
    cands = {_rows(cfg, plan_blocks(cfg, T, pieces)[1]) for T in Ts}
    return min(cands, key=lambda r: (est(r), -r))


def _token_counts(tokens):
    """`tokens` (an int, or a list of token counts) -> sorted distinct counts; CompileError if any < 1."""
    Ts = [tokens] if isinstance(tokens, (int, np.integer)) else list(tokens)
    if not Ts:
        raise CompileError("tokens: an empty list of token counts")
    for T in Ts:
        if not isinstance(T, (int, np.integer)) or isinstance(T, bool) or T < 1:
            raise CompileError(f"tokens must be integers >= 1, got {T!r}")
    if len(set(Ts)) != len(Ts):
        raise CompileError(f"tokens lists a token count twice: {list(Ts)}")
    return sorted(int(T) for T in Ts)


def _compile_fitting(qs, cfg, Ts, plan, prepare=None):
    """``_compile`` with `plan`; a program longer than queue_depth is split into runs of fewer blocks."""
    while True:
        try:
            return _compile(qs, cfg, Ts, plan, prepare)
        except _QueueFull as full:      # (only runs of several blocks: one block is cut by work)
            nb = len(plan.blocks(cfg, plan.chunk))
            if nb == 1:
                raise CompileError(f"internal: a run of one block overflowed queue {full.queue} ({full.n} words; "
                                   f"queue_depth {cfg.queue_depth}) without being cut by work") from None
            nb = max(1, min(nb - 1, nb * cfg.queue_depth // full.n))
            tb = max(b for _, b in plan.blocks(cfg, plan.chunk))
            plan = replace(plan, chunk=min(plan.chunk, nb * tb), tb=tb, even=True)


def _compile_layers(qs, cfg, Ts, prepare=None):
    """Plan (for the largest of the token counts `Ts`), then compile every count on one image; a
    program longer than queue_depth is split into runs of fewer blocks. Returns per layer a list of
    Compiled, one per count (ascending). ``prepare(scheduler)``: called on every scheduler before it
    schedules (the tray's expert-parallel programs add their DESKEW barriers)."""
    for q in qs:
        check_single_chip(q, cfg)
    t0 = time.perf_counter()
    plan = _plan(cfg, qs, Ts[-1])
    if len(Ts) > 1:
        rows = _shared_rows(cfg, Ts, plan.pieces)
        if rows != plan.rows:
            alt = replace(plan, rows=rows)
            if _trial(cfg, qs, alt) is None:
                plan = alt
    out = _compile_fitting(qs, cfg, Ts, plan, prepare)
    if cfg.streams <= INT32_PLANES and plan.tb > cfg.latency["vxm_req"]:
        # 4 streams: the REQL destinations near the MXM (the default) or where 8 streams have them,
        # a REQL of more than vxm_req tokens to a bank beyond the VXM going in pieces (``emit_req``):
        # the faster program wins
        def total(o):
            return sum(c.predicted_cycles for per_T in o for c in per_T)
        try:
            far = _compile_fitting(qs, cfg, Ts, replace(plan, near=False), prepare)
        except CompileError:
            far = None
        if far is not None and total(far) < total(out):
            out = far
    dt = time.perf_counter() - t0
    for per_T in out:
        for c in per_T:
            c.report["compile_s"] = dt
    return out


def compile_ffn(q: QuantFFN, cfg, tokens) -> Compiled:
    """Compile one FFN layer for `tokens` tokens. When X, Y and the intermediates of all tokens do not
    fit beside the weights (or the program would exceed queue_depth) the tokens run in several runs
    (``Compiled.runs``) on one resident MEM image; when one block of tokens alone exceeds queue_depth,
    each chunk runs as several runs cut by work (``Run.work``: H tiles, then output tiles)."""
    if tokens < 1:
        raise CompileError("tokens must be >= 1")
    return _compile_layers([q], cfg, [tokens])[0][0]


def compile_moe(experts, cfg, tokens):
    """Several experts resident in one chip: one MEM image, one program (or run list) per expert.

    The experts share the input, output and intermediate regions (one expert runs at a time), and
    each keeps its weights, requantization parameters and LUT. The host picks an expert at run time
    by loading its program; nothing is copied. Raises CompileError when the experts do not fit.

    `tokens` an int: a list of ``Compiled``, one per expert. `tokens` a list of token counts (e.g.
    [1, 2, 4, 8]): a list of ``Programs``, one per expert, each holding a program per count, all on
    the one image (the weights resident once; X, Y and the intermediates sized for the largest count).
    """
    if not experts:
        raise CompileError("an MoE layer needs at least one expert")
    shapes = {(q.d_model, q.d_ff, q.gated) for q in experts}
    if len(shapes) != 1:
        raise CompileError(f"experts must share one shape to share activation buffers, got {sorted(shapes)}")
    if len({int(q.hilo) for q in experts}) != 1:
        raise CompileError(f"experts must share one hilo (their H buffers are shared), got "
                           f"{sorted({int(q.hilo) for q in experts})}")
    Ts = _token_counts(tokens)
    out = _compile_layers(list(experts), cfg, Ts)
    for per_T in out:
        for c in per_T:
            c.report["experts_resident"] = len(out)
            c.report["token_counts"] = Ts
    if isinstance(tokens, (int, np.integer)):
        return [per_T[0] for per_T in out]
    return [Programs(tuple(per_T)) for per_T in out]


def _report(c: Compiled, s: _FFNScheduler, plan=None):
    cfg, q = c.cfg, c.q
    mats = 3 if q.gated else 2
    useful = c.tokens * q.d_model * q.d_ff * mats
    wbytes = q.d_model * q.d_ff * mats
    cyc = c.predicted_cycles
    mm_busy = 0
    for r in c.runs:
        iv = r.schedule.sub[(s.mxm, "mm")]
        mm_busy += sum(b - a + 1 for a, b in zip(iv.starts, iv.ends))
    programs = {id(r.program): r.program for r in c.runs}
    roofline = wbytes / cfg.sram_read_bytes_per_cycle
    rep = {
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
        "sram_roofline_cycles": roofline,
        "sram_bw_utilization": roofline / cyc,
        "sram_bytes_used": s.alloc.used_bytes,
        "sram_bytes": cfg.sram_bytes,
        "instructions": sum(len(p) for p in programs.values()),
        "runs": len(c.runs),
        "run_tokens": [r.tokens for r in c.runs],
        "run_cycles": [r.predicted_cycles for r in c.runs],
        "run_work": [r.work for r in c.runs],          # (first, end) unit per run cut by work, else None
        "scales": {k: [float(x) for x in v] if isinstance(v, (list, tuple)) else float(v)
                   for k, v in q.scales.items()},
    }
    if plan is not None:
        rep["block_tokens"] = max(n for r in c.runs for _, n in r.blocks)
    return rep
