"""Multi-chip FFN programs for a tray: tensor-parallel (d_ff split) and expert-parallel (MoE).

Tensor parallel, two splits (``compile_tp(..., split=)``); both compute the bits of one chip.

* "gather" (faster in all but one case measured, docs/tray-performance.md): chip c owns a
  range of d_ff tiles and computes the int8 gated product H = act(X W1[:, own]) [* X W3[:, own]],
  exactly as one chip does, and SENDs it to every "W2 chip". The W2 chips are the first
  min(chips, d_model tiles) chips (chip 0 among them); W2 chip w owns a range of output (d_model)
  tiles and computes Y[:, own] = requant(H W2[:, own]) over all of d_ff, its own H first and the
  received H in the order it arrives, then SENDs its int8 Y to chip 0. Only int8 crosses the links,
  and a chip SENDs each H tile to up to F peers at once (one READ with stride 0 feeds SENDs on
  several ports). The d_ff tiles are dealt so that the chips install about as many weight tiles,
  then moved to the W2 chips while that makes the tray faster (their tails are longer).
* "partial": chip c owns a contiguous range of d_ff tiles, computes its int32 partial X W2[own,:];
  the workers SEND their partials (four byte planes per vector) to chip 0, which RECEIVES them into
  MEM as they arrive, adds them with ADD32 in int32 — the exact sum a single chip accumulates — and
  only then requantizes.

The default (split None) compiles both and keeps the faster program.

Expert parallel: one expert per chip, each chip an ordinary single-chip program; the host routes
each token to its expert's chip.

Token chunks: when one program of all the tokens does not fit (SRAM, a queue, the RX buffers), the
tokens run in chunks (``TrayCompiled.runs``, ``_chunked``): every chip keeps one resident MEM image
and runs one program per chunk size; a layer that fits one program compiles exactly as before.

DESKEW: the chips' clocks drift apart by up to 2 x ppm_budget; a RECV scheduled at SEND +
link_latency tolerates `link_slack` cycles of it. Between realignments a program may therefore
run D = epoch x max(1, floor(link_slack / (2 x ppm_budget x 1e-6 x epoch))) cycles, and the
compiler puts a DESKEW barrier at every multiple of D that the program crosses: no operation spans
a barrier, every queue parks in DESKEW just before it (docs/c2c.md).
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np

from tinylpu.firmware.compiler import (
    Compiled,
    CompileError,
    Region,
    Run,
    _ceil,
    _compile_layers,
    _even,
    _FFNScheduler,
    _report,
    _rows,
    _sub,
    check_emittable,
    plan_blocks,
)
from tinylpu.firmware.quant import QuantFFN, ReqParams
from tinylpu.firmware.sched import read_to, write_from
from tinylpu.isa import Insn, Opcode, StreamRef
from tinylpu.link import arrival_cycles

__all__ = ["TrayCompiled", "compile_ep", "compile_tp", "deskew_interval", "gather_plan", "slice_ffn"]


def deskew_interval(cfg):
    """Cycles a program may run between DESKEWs (a multiple of the epoch)."""
    E = cfg.link["epoch"]
    drift_per_epoch = 2 * cfg.link["ppm_budget"] * 1e-6 * E
    return E * max(1, int(cfg.link["link_slack"] // drift_per_epoch)) if drift_per_epoch > 0 else E * 1024


def _req_slice(r: ReqParams, cols):
    return ReqParams(r.m[cols], r.sh[cols], r.z[cols])


def slice_ffn(q: QuantFFN, cols) -> QuantFFN:
    """The part of the layer that owns the d_ff channels `cols` (W2's output scale is unchanged)."""
    check_emittable(q)
    return QuantFFN(q.d_model, len(cols), q.activation, q.gated, q.s_x, q.w1[:, cols], q.w2[cols, :],
                    q.w3[:, cols] if q.gated else None, _req_slice(q.req1, cols), q.req2,
                    _req_slice(q.req3, cols) if q.gated else None, q.lut, q.mul_sh, q.s_y, q.scales)


@dataclass
class TrayRun:
    """One run of a tray program: every chip starts its program together (run i of a chip is
    ``chips[c].runs[i]``, a ``compiler.Run``: its program, token offset, X and Y regions), and the
    next run starts once every chip has halted."""
    chips: list                       # per chip: compiler.Run, or None (the chip idles: a lone HALT)
    predicted_cycles: list            # per chip (1 for an idle chip)

    @property
    def cycles(self):
        """The run's length on the tray: its slowest chip."""
        return max(self.predicted_cycles)


@dataclass
class TrayCompiled:
    cfg: object
    mode: str                         # "tp" or "ep"
    chips: list                       # per chip: Compiled (its runs: ``Compiled.runs``) or None (idle)
    predicted_cycles: list            # per chip, all runs together (1 per run for an idle chip)
    root: int = 0
    y_layout: dict = field(default_factory=dict)     # the root's, the first run's
    report: dict = field(default_factory=dict)
    runs: list = None                 # [TrayRun], run one after the other on the chips' resident images:
                                      # several when the tokens do not fit one program (``_chunked``)

    def __post_init__(self):
        if self.runs is None:
            n = max((len(c.runs) for c in self.chips if c is not None), default=1)
            runs = []
            for i in range(n):
                per = [c.runs[i] if c is not None and i < len(c.runs) else None for c in self.chips]
                runs.append(TrayRun(per, [r.predicted_cycles if r is not None else 1 for r in per]))
            self.runs = runs
            if n > 1:
                self.predicted_cycles = [sum(r.predicted_cycles[c] for r in runs) for c in range(len(self.chips))]

    @property
    def cycles(self):
        """The tray's cycles: every run's slowest chip, the runs one after the other."""
        return sum(r.cycles for r in self.runs)


def _port_to(cfg, a, b):
    for p in range(cfg.c2c_ports):
        if cfg.peer(a, p)[0] == b:
            return p
    raise CompileError(f"config {cfg.name}: no C2C link from chip {a} to chip {b} (topology {cfg.topology})")


def _frames(cfg, n):
    """How the link carries n vectors: ``[(offset, count), ...]``, one SEND per piece.  Flits: one
    SEND of all n.  Burst framing: a SEND is one frame of at most ``c2c.burst_vectors``; the frame
    length is the one at which the last vector is RECEIVED soonest (a frame arrives whole after its
    last element, so a long frame delays its first vector: k frames of b vectors finish at
    (k-1)(bF + gap) + (b-1)F + link_latency + (b-1)F of RECV; the largest such b on a tie)."""
    p = cfg.link_params
    if not p.burst or n <= 1:
        return [(0, n)]
    F, G = p.send_interval, p.frame_gap

    def done(b):
        k = -(-n // b)
        return (k - 1) * (b * F + G) + 2 * (b - 1) * F
    b = min(range(1, min(n, p.burst_vectors) + 1), key=lambda b: (done(b), -b))
    return [(o, min(b, n - o)) for o in range(0, n, b)]


def _arrival(cfg, t_send, n):
    """The earliest cycle of the first RECV element of a SEND of n vectors whose first element is at
    t_send (``tinylpu.link.arrival_cycles``: with burst framing every vector of it arrives together)."""
    return arrival_cycles(cfg.link_params, cfg.link_latency, t_send, n)[0]


def _send(s, region, n, port, tag, t_min=0):
    """``_FFNScheduler.send_region`` for one frame (n <= burst_vectors with burst framing), leaving the
    link's frame gap before the port's next SEND."""
    t = s.send_region(region, n, port, tag, t_min=t_min)
    s.next_tx[port] += s.cfg.link_params.frame_gap
    return t


def _barriers(sch, cfg, horizon):
    D = deskew_interval(cfg)
    sch.barriers = list(range(D, horizon, D))


def _rx_error(cfg, schedules, what, data="gathered activations"):
    return CompileError(f"config {cfg.name}: the chips cannot RECV the {data} within the "
                        f"{cfg.link['rx_vectors']}-vector RX buffer after {schedules} schedule"
                        f"{'s' if schedules > 1 else ''} ({what})")


def _attempts(most, tokens):
    """How many times a tray of `tokens` tokens is scheduled again for its RX buffers: `most` up to
    32 tokens, fewer for more (each schedule costs about tokens x tiles, so a compile that fails
    costs about as much as one of 32 tokens that settles), at least 1: a program that does not
    settle by then runs in shorter chunks of tokens (``_chunked``)."""
    return max(1, min(most, most * 32 // max(tokens, 1)))


def compile_tp(q: QuantFFN, cfg, tokens, chips=None, split=None):
    """Tensor-parallel FFN over `chips` chips of the tray (default: all).

    split: "gather" (the int8 gated product is all-gathered, W2 split by output columns, int8 Y
    gathered to chip 0), "partial" (W2 split by d_ff rows, int32 partial sums reduced on chip 0), or
    None (the default): both, and the faster program (gather on a tie or when partial does not fit).

    When one program of all the tokens does not fit (SRAM, a queue, the RX buffers), the tokens run
    in chunks (``TrayCompiled.runs``, ``_chunked``) on the one resident image of every chip."""
    check_emittable(q)
    n = chips or cfg.chips
    if n < 2 or n > cfg.chips:
        raise CompileError(f"tensor parallel needs 2..{cfg.chips} chips on config {cfg.name}, got {n}")
    if not cfg.slices_of("c2c"):
        raise CompileError(f"config {cfg.name} has no c2c slice in its floorplan")
    if split not in (None, "gather", "partial"):
        raise CompileError(f"unknown tensor-parallel split {split!r} (gather or partial)")
    if tokens < 1:
        raise CompileError(f"tokens must be >= 1, got {tokens}")
    t0 = time.perf_counter()

    done = {}

    def partial(T, alloc=None, probe=False, first=False):
        # (a probe is the compile itself; alloc, even T itself, places for chunks: ``_compile_tp_partial``)
        if (T, alloc) not in done:
            try:
                done[(T, alloc)] = _compile_tp_partial(q, cfg, T, n, alloc)
            except CompileError as e:
                done[(T, alloc)] = e
        r = done[(T, alloc)]
        if isinstance(r, CompileError):
            raise r
        return r

    if split == "partial":
        return _timed(_chunked(partial, cfg, q, tokens), t0)
    shifts, tried = {}, {}

    def gather(T, alloc=None, probe=False, first=False):
        # a run placed for a longer one (alloc) takes that one's plan (``gather_plan``'s shift); the
        # chunks (not first) push late SENDs further (``_gather_schedule``)
        alloc = None if alloc == T else alloc
        tc = _compile_tp_gather(q, cfg, T, n, shifts[alloc] if alloc else None, alloc,
                                tried.setdefault((T, alloc, first), {}), search=not probe, push=not first)
        if alloc is None and not probe:
            shifts[T] = tc.report["shift"]
        return tc

    def placed(T):
        try:
            _compile_tp_gather(q, cfg, T, n, place_only=True)
            return True
        except CompileError:
            return False
    tc = _chunked(gather, cfg, q, tokens, placed)
    if split is None:
        # partial's workers each SEND chip 0 four int32 planes of every output tile of every token, one
        # vector per send_interval cycles on their port: a run of T tokens takes at least that long
        L = cfg.lanes
        if min(n, _ceil(q.d_ff, L)) > 1:
            floor = 4 * _ceil(q.d_model, L) * cfg.link_params.send_interval
            if sum(floor * r.chips[tc.root].tokens for r in tc.runs) >= tc.cycles:
                return _timed(tc, t0)
        try:
            if len(tc.runs) == 1:
                other = partial(tokens)
            else:       # the same chunks of tokens, if partial fits them
                sizes = sorted({r.chips[tc.root].tokens for r in tc.runs}, reverse=True)
                parts = {m: partial(m, sizes[0]) for m in sizes}
                other = _merge(cfg, q, parts, [(r.chips[tc.root].token0, r.chips[tc.root].tokens) for r in tc.runs],
                               tokens)
        except CompileError:
            return _timed(tc, t0)
        if other.cycles < tc.cycles:
            return _timed(other, t0)
    return _timed(tc, t0)


def _timed(tc, t0):
    tc.report["compile_s"] = time.perf_counter() - t0
    return tc


def _chunked(one, cfg, q, T, placed=None):
    """The layer's T tokens as one tray program ``one(T)`` if that compiles; else in runs (chunks of
    tokens) on one resident image per chip.  ``one(n, alloc=None, probe=False, first=False)``: the
    TrayCompiled of one run of n tokens whose regions are sized for `alloc` tokens (a shorter run's
    addresses are the longer's); ``probe``: a quicker compile that only has to tell whether n tokens
    fit and how fast; ``first``: the layer's one program (as before there were chunks).
    ``placed(n)``: a cheap test whether n tokens fit the SRAM (no schedule), or None.

    The chunk size: at most the largest that fits the SRAM (bisection on ``placed``; a layer whose
    weights do not fit fails at one token, naming the sizes); from T / 16 tokens (halved while that
    does not compile) doubling while the chunk compiles and its cycles per token fall by 3 % or more
    (past that, bigger chunks cost compile time and gain little; a chunk that fails a queue or the
    RX buffers ends the doubling, after one step of bisection).  Then the chunks either split the
    tokens evenly, or are whole accumulator blocks and a rest (two run sizes at most, each compiled
    once, the smaller on the larger's addresses), or are all that size (one program; the last run
    starts early enough to end at the last token, recomputing a few tokens): the fewer predicted
    tray cycles win."""
    try:
        return one(T, None, False, True)
    except CompileError as err:
        if T == 1:
            raise
        first = err
    tried = {}

    def trial(n, alloc=None, probe=False):
        key = (n, alloc, probe)
        if key not in tried:
            try:
                tried[key] = one(n, alloc, probe)
            except CompileError as e:
                tried[key] = e
        return tried[key]

    def fits(n):
        return isinstance(trial(n, probe=True), TrayCompiled)

    def fail_one():
        err = trial(1)
        return CompileError(f"{err} (not even one token of the {T} at a time fits; {T} tokens at once: {first})")
    top = T - 1                         # the largest run size that may compile
    if placed is not None:
        if not placed(1):
            raise fail_one()
        lo, hi = 1, T
        while hi - lo > 1:              # the largest that fits the SRAM
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if placed(mid) else (lo, mid)
        top = lo
    # from about T / 16 tokens up, doubling while the chunk compiles and its cycles per token fall
    # by 3 % or more (a bigger chunk also costs more to compile, a failing one most); the sizes are
    # multiples or power-of-two fractions of an accumulator block (a chunk of 36 tokens is a block of
    # 32 and one of 4, slower per token than either 32 or 64)
    tb = plan_blocks(cfg, T)[1]

    def aligned(n):                     # the largest such size <= n
        if n >= tb:
            return n // tb * tb
        m = tb
        while m > n:
            m //= 2
        return max(1, m)
    top = aligned(top)
    c, lo, per = aligned(max(1, min(top, T // 16))), 0, None
    while True:
        if not fits(c):
            if lo == 0:
                if c == 1:
                    raise fail_one()
                c = max(1, c // 2)
                continue
            if c - lo > lo // 4:        # one step of bisection
                mid = (lo + c) // 2
                if fits(mid):
                    lo = mid
            break
        cyc = trial(c, probe=True).cycles / c
        if per is not None and cyc > 0.97 * per:
            lo = lo if per <= cyc else c
            break
        lo, per = c, cyc
        if c >= top:
            break
        c = min(2 * c, top)
    k = -(-T // lo)

    def candidate(chunks):
        sizes = sorted({m for _, m in chunks}, reverse=True)
        parts = {}
        for m in sizes:                 # (two sizes: each placed for the larger, the larger too)
            r = trial(m, sizes[0] if len(sizes) > 1 else None)
            if not isinstance(r, TrayCompiled):
                return r
            parts[m] = r
        try:
            return _merge(cfg, q, parts, chunks, T)
        except CompileError as e:
            return e
    # the tokens split evenly; in whole blocks and a rest; all in chunks of lo, the last one ending
    # at the last token (recomputing a few)
    a, options = aligned(lo), [_even(T, k)]
    options.append([(i * a, min(a, T - i * a)) for i in range(-(-T // a))])
    options.append([(min(i * lo, T - lo), lo) for i in range(k)])
    cands = []
    for chunks in options:
        if chunks not in options[:options.index(chunks)]:
            cands.append(candidate(chunks))
    ok = [c for c in cands if isinstance(c, TrayCompiled)]
    if not ok:
        raise cands[-1]
    return min(ok, key=lambda tc: tc.cycles)


def _same_image(a, b):
    if sorted(a) != sorted(b):
        return False
    for bank in a:
        if len(a[bank]) != len(b[bank]):
            return False
        for (x, u), (y, v) in zip(a[bank], b[bank]):
            if x != y or not np.array_equal(u, v):
                return False
    return True


def _merge(cfg, q, parts, chunks, T):
    """One TrayCompiled of several runs: ``parts`` {run tokens: TrayCompiled of one run of that many,
    all placed for the largest}, ``chunks`` [(first token, tokens)] in order (runs of equal size
    share the program; only the token offset differs)."""
    big = parts[max(parts)]
    for m, p in parts.items():
        for c, (a, b) in enumerate(zip(big.chips, p.chips)):
            if (a is None) != (b is None) or (a is not None and not _same_image(a.mem_image, b.mem_image)):
                raise CompileError(f"internal: the {m}-token run of chip {c} does not share the resident image "
                                   f"of the {max(parts)}-token run")
    chips = []
    for c, comp in enumerate(big.chips):
        if comp is None:
            chips.append(None)
            continue
        runs = []
        for t0, m in chunks:
            p = parts[m].chips[c]
            runs.append(Run(p.program, p.listing, p.schedule, t0, m, p.x_layout, p.y_layout, p.predicted_cycles,
                            tuple(plan_blocks(cfg, m)[0])))
        r0 = runs[0]
        chips.append(Compiled(cfg, r0.program, comp.mem_image, r0.x_layout, r0.y_layout, T,
                              sum(r.predicted_cycles for r in runs), r0.listing, r0.schedule, comp.q, runs=runs))
    tc = TrayCompiled(cfg, big.mode, chips, None, big.root, dict(chips[big.root].y_layout))
    counts = {m: sum(1 for _, n in chunks if n == m) for m in parts}
    rep = dict(big.report)
    mats = 3 if q.gated else 2
    total = tc.cycles
    rep.update({
        "predicted_cycles": total, "per_chip_predicted_cycles": list(tc.predicted_cycles),
        "useful_macs": T * q.d_model * q.d_ff * mats,
        "mxm_utilization": T * q.d_model * q.d_ff * mats / (cfg.macs_per_cycle * rep["chips_used"] * total),
        "runs": len(tc.runs), "run_tokens": [m for _, m in chunks], "run_token0": [t0 for t0, _ in chunks],
        "run_cycles": [r.cycles for r in tc.runs],
        "per_run_chip_predicted_cycles": [list(r.predicted_cycles) for r in tc.runs],
    })
    for key in ("link_vectors_to_root", "link_vectors", "deskews"):
        if key in rep:
            rep[key] = sum(counts[m] * parts[m].report[key] for m in parts)
    tc.report = rep
    return tc


def _compile_tp_partial(q, cfg, tokens, n, alloc=None):
    """W2 split by d_ff rows: chip 0 reduces the workers' int32 partial sums (ADD32) and requantizes."""
    L = cfg.lanes
    FT = _ceil(q.d_ff, L)
    n = min(n, FT)                                   # at least one d_ff tile per chip
    bounds = [(c * FT) // n for c in range(n + 1)]
    # alloc: the tokens to size X, Y and the intermediates for (``_chunked``: every run size of a
    # layer on one image; chip 0 then places W2's params before its schedule, not after, as the
    # partial-sum buffers it allocates while scheduling depend on the run's tokens), by default
    # this run's
    alloc = None if alloc is None else (alloc, plan_blocks(cfg, alloc)[1])
    cols = [list(range(bounds[c] * L, min(bounds[c + 1] * L, q.d_ff))) for c in range(n)]
    horizon = 1 << 22
    # A port holds rx_vectors vectors between SEND and RECV (in flight or arrived): a RECV that starts
    # more than this many cycles after its SEND would overflow it.  Workers are scheduled first (their
    # SEND cycles fix when the root can RECV); a RECV that the root can only start later than that
    # delays its SEND, and the tray is scheduled again (delays only grow, so this ends).
    cap = (cfg.link["rx_vectors"] - 1) * cfg.vector_interval - math.ceil(cfg.link["link_slack"]) - 1
    floor = {}                                        # (chip, block, m, plane) -> earliest SEND cycle
    most = _attempts(16, alloc[0] if alloc else tokens)
    for _attempt in range(most):
        sends, scheds, late = {}, {}, {}              # sends: (chip, block, m, plane, offset) -> (first SEND, n)
        total = {}                                    # (chip, block, m, plane) -> vectors
        for c in range(1, n):
            s = _FFNScheduler(cfg, slice_ffn(q, cols[c]), tokens, w2_mode="partial")
            _barriers(s.sch, cfg, horizon)
            s.layouts = s.build(alloc)
            port = _port_to(cfg, c, 0)
            for (b0, m), grp in sorted(s.partials.items()):
                for p, r in enumerate(grp):
                    for off, cnt in _frames(cfg, r.n):
                        key = (c, b0, m, p, off)
                        sends[key] = (_send(s, _sub(r, cnt, off), cnt, port,
                                            f"SEND partial Y{m} plane {p} block {b0}" + (f" from {off}" if off else ""),
                                            t_min=floor.get(key, 0)), cnt)
                    total[(c, b0, m, p)] = r.n
            scheds[c] = s
        root = _FFNScheduler(cfg, slice_ffn(q, cols[0]), tokens, w2_mode="partial")
        _barriers(root.sch, cfg, horizon)
        early = {}

        def place_p2(root=root):
            early["p2"] = root.params(q.req2, _ceil(q.d_model, L), "w2 (tray)", [root.abanks[1 % len(root.abanks)]] +
                                      root.wbanks + root.abanks)
        xl, yl = root.build(alloc, place_p2 if alloc is not None else None)
        far = root.group_banks("far")
        recv = {}
        bufs = {}
        for key, (t_send, cnt) in sorted(sends.items(), key=lambda kv: kv[1][0]):
            c, b0, m, p, off = key
            if (c, b0, m, p) not in bufs:
                bank = far[(p + c) % 4]          # spread the workers' planes over the banks' write ports
                # strictly that bank: the four planes of a group must be read in one cycle from four banks
                bufs[(c, b0, m, p)] = root.alloc.take([bank], total[(c, b0, m, p)],
                                                      f"chip 0's buffer for partial Y{m} plane {p} (block {b0}) "
                                                      f"from chip {c}")
            r = bufs[(c, b0, m, p)]
            t_recv = root.recv_region(_port_to(cfg, 0, c), _sub(r, cnt, off), cnt, _arrival(cfg, t_send, cnt),
                                      f"RECV partial Y{m} plane {p} block {b0} from chip {c}"
                                      + (f" from {off}" if off else ""))
            if t_recv - t_send > cap:
                late[key] = t_send + (t_recv - t_send - cap)
                if _attempt == most - 1:        # the last schedule allowed: fail now
                    raise _rx_error(cfg, most, f"chip 0 RECEIVES partial Y{m} plane {p} from chip {c} "
                                               f"{t_recv - t_send - cap} cycles too late", "partial sums")
            recv.setdefault((b0, m, c), [None] * 4)[p] = r
        if not late:
            break
        for key, t in late.items():
            floor[key] = max(floor.get(key, 0), t)
    else:
        raise CompileError(f"config {cfg.name}: the root chip cannot RECV the partial sums within the "
                           f"{cfg.link['rx_vectors']}-vector RX buffer ({len(late)} SENDs still too early)")
    p2 = early["p2"] if early else root.params(q.req2, _ceil(q.d_model, L), "w2 (tray)",
                                               [root.abanks[1 % len(root.abanks)]] + root.wbanks + root.abanks)
    for (b0, m), own in sorted(root.partials.items()):
        for c in range(1, n):
            root.group_op(Opcode.ADD32, [own, recv[(b0, m, c)]], own, own[0].n, f"ADD32 partial Y{m} += chip {c}")
        ysub = Region(yl[m].bank, yl[m].addr + b0, own[0].n, yl[m].what)
        root.group_op(Opcode.REQL, [own], ysub, own[0].n, f"REQL Y{m} block {b0}", pregion=p2, tile=m)
    chips_out, cycles = [], []
    for c in range(cfg.chips):
        s = root if c == 0 else scheds.get(c)
        if s is None:
            chips_out.append(None)
            cycles.append(1)          # an idle chip runs a lone HALT
            continue
        program, H, listing = s.sch.finish()
        comp = Compiled(cfg, program, s.image, xl if c == 0 else s.layouts[0], yl if c == 0 else {}, tokens,
                        H + 1, listing, s.sch, q)
        chips_out.append(comp)
        cycles.append(H + 1)
        _check_queues(cfg, program, c)
    tc = TrayCompiled(cfg, "tp", chips_out, cycles, 0, yl)
    mats = 3 if q.gated else 2
    worst = max(cycles)
    tc.report = {
        "mode": "tensor-parallel", "split": "partial", "chips_used": n, "d_ff_columns_per_chip": [len(x) for x in cols],
        "predicted_cycles": worst, "per_chip_predicted_cycles": cycles,
        "useful_macs": tokens * q.d_model * q.d_ff * mats,
        "mxm_utilization": tokens * q.d_model * q.d_ff * mats / (cfg.macs_per_cycle * n * worst),
        "link_vectors_to_root": sum(cnt for _, cnt in sends.values()),
        "link_vectors": sum(cnt for _, cnt in sends.values()),
        "vector_interval_cycles": cfg.vector_interval, "link_latency": cfg.link_latency,
        "deskew_interval": deskew_interval(cfg),
        "deskews": len([b for b in root.sch.barriers if b < worst]),
    }
    return tc


def _check_queues(cfg, program, chip):
    worst = max(program.queues, key=lambda k: len(program.queues[k]))
    if len(program.queues[worst]) > cfg.queue_depth:
        raise CompileError(f"chip {chip}: the program needs {len(program.queues[worst])} instructions in queue "
                           f"{worst}; config {cfg.name} has queue_depth {cfg.queue_depth}")


def compile_ep(experts, cfg, tokens_per_expert):
    """Expert parallel: expert e on chip e with its own token count (0 tokens: the chip idles).

    An expert whose tokens do not fit one program (SRAM, a queue) is compiled as the single-chip
    compiler does (``compiler._compile_layers``: runs of tokens on its resident image, with this
    tray's DESKEW barriers); the tray's run i runs every chip's run i (a chip with fewer runs idles)."""
    if len(experts) > cfg.chips:
        raise CompileError(f"{len(experts)} experts for a tray of {cfg.chips} chips (one expert per chip)")
    if len(tokens_per_expert) != len(experts):
        raise CompileError("one token count per expert is needed")
    chips, cycles = [], []
    for e in range(cfg.chips):
        if e >= len(experts) or tokens_per_expert[e] == 0:
            chips.append(None)
            cycles.append(1)          # an idle chip runs a lone HALT
            continue
        try:
            s = _FFNScheduler(cfg, experts[e], tokens_per_expert[e])
            _barriers(s.sch, cfg, 1 << 22)
            xl, yl = s.build()
            program, H, listing = s.sch.finish()
            _check_queues(cfg, program, e)
            comp = Compiled(cfg, program, s.image, xl, yl, tokens_per_expert[e], H + 1, listing, s.sch, experts[e])
            comp.report = _report(comp, s)
        except CompileError:
            # in runs of tokens (or an error naming the sizes when not even one token fits)
            try:
                comp = _compile_layers([experts[e]], cfg, [tokens_per_expert[e]],
                                       prepare=lambda s: _barriers(s.sch, cfg, 1 << 22))[0][0]
            except CompileError as err:
                raise CompileError(f"expert {e} (chip {e}, {tokens_per_expert[e]} tokens): {err}") from None
            for r in comp.runs:
                _check_queues(cfg, r.program, e)
        chips.append(comp)
        cycles.append(comp.predicted_cycles)
    tc = TrayCompiled(cfg, "ep", chips, cycles)
    tc.report = {"mode": "expert-parallel", "experts": len(experts), "tokens_per_expert": list(tokens_per_expert),
                 "predicted_cycles": max(cycles), "per_chip_predicted_cycles": cycles}
    if len(tc.runs) > 1:
        tc.report.update({"predicted_cycles": tc.cycles, "per_chip_predicted_cycles": list(tc.predicted_cycles),
                          "runs": len(tc.runs), "run_cycles": [r.cycles for r in tc.runs],
                          "per_chip_runs": [len(c.runs) if c is not None else 0 for c in chips]})
    return tc


# ------------------------------------------------------------------------------------------------
# Tensor parallel, "gather" split: int8 activations cross the links, never int32 partial sums
# ------------------------------------------------------------------------------------------------

@dataclass
class _Job:
    """One accumulation: MM over `tiles` [(weight key, activation Region, token offset)], then EMIT
    -> REQL (params `pr`, tile `tile_no`) into `dst`, then the VXM ops `after`, then `post()`."""
    tiles: list
    bn: int
    pr: Region
    tile_no: int
    dst: Region
    what: str
    after: list = field(default_factory=list)
    post: object = None


class _Exec:
    """The MXM job loop of ``_FFNScheduler.schedule`` (installs one tile ahead of the multiply, the
    accumulator halves alternating per job) on a job list that may grow while it runs."""

    def __init__(self, s, wt):
        self.s, self.wt = s, wt
        self.jobs, self.flat, self.installed = [], [], {}
        self.half = self.idx = 0
        self.ahead = s.rows == s.cfg.install_rows

    def add(self, job):
        self.flat += [(len(self.jobs), i) for i in range(len(job.tiles))]
        self.jobs.append(job)

    def _install(self, idx):
        if idx < len(self.flat) and idx not in self.installed:
            j, i = self.flat[idx]
            key = self.jobs[j].tiles[i][0]
            self.installed[idx] = self.s.lw(self.wt[key], f"LW {key[0]}[{key[1]},{key[2]}]")

    def run(self):
        s = self.s
        while self.idx < len(self.flat):
            idx = self.idx
            j, i = self.flat[idx]
            job = self.jobs[j]
            self._install(idx)
            if self.ahead:
                self._install(idx + 1)
            key, xr, xoff = job.tiles[i]
            b, last = self.installed.pop(idx)
            commit = s.mm(b, last, xr, xoff, job.bn, self.half, i > 0, f"MM {key[0]}[{key[1]},{key[2]}] {job.what}")
            if not self.ahead:
                self._install(idx + 1)
            if i == len(job.tiles) - 1:
                s.ldm(job.pr, job.tile_no, f"LDM params {job.what}")
                s.emit_req(commit, job.bn, self.half, job.dst, f"REQL {job.what}")
                self.half ^= 1
                for op, srcs, d, kw in job.after:
                    s.vxm_op(op, srcs, d, job.bn, f"{op.name} {job.what}", **kw)
                if job.post is not None:
                    job.post()
            self.idx += 1


def gather_plan(q: QuantFFN, cfg, n, shift=0):
    """(d_ff tiles, d_model tiles) per chip for the gather split on n chips.

    The d_model (output) tiles go to the first min(n, tiles) chips, the "W2 chips", chip 0 among
    them; the d_ff tiles (their W1 / W3 columns and the gated product H) are dealt so that every chip
    installs about as many weight tiles: a W2 chip installs all d_ff rows of W2 for its columns, so
    it takes fewer d_ff tiles. ``shift`` moves that many more d_ff tiles from the W2 chips to the
    others (their tails are longer: they wait for the last H and send Y to chip 0)."""
    L = cfg.lanes
    KT, FT, MT = _ceil(q.d_model, L), _ceil(q.d_ff, L), _ceil(q.d_model, L)
    W = min(n, MT)
    mb = [(i * MT) // W for i in range(W + 1)]
    mt = [list(range(mb[i], mb[i + 1])) for i in range(W)] + [[] for _ in range(n - W)]
    per_d = KT * (2 if q.gated else 1)
    load = [FT * len(m) for m in mt]
    cnt = [0] * n
    for _ in range(FT):
        c = min(range(n), key=lambda c: (load[c] + per_d, c < W, c))
        cnt[c] += 1
        load[c] += per_d
    for _ in range(abs(shift)):
        give, get = (range(W), range(W, n)) if shift > 0 else (range(W, n), range(W))
        src = [c for c in give if cnt[c] > (0 if shift > 0 else 1)]     # a chip without W2 keeps a d_ff tile
        if not src or not get:
            break
        a = max(src, key=lambda c: (load[c], c))
        b = min(get, key=lambda c: (load[c], c))
        cnt[a] -= 1
        cnt[b] += 1
        load[a] -= per_d
        load[b] += per_d
    starts = [sum(cnt[:c]) for c in range(n + 1)]
    return [list(range(starts[c], starts[c + 1])) for c in range(n)], mt


def _bcast(s, region, n, ports, tag, t_min=0):
    """SEND region[0:n] on every C2C port of `ports` (at most F of them): the SEND on ports[j] issues
    at t + j and samples its stream at t + j + kF, where one READ of vector k with stride 0 puts it
    on the stream len(ports) cycles in a row. One READ per vector, whatever the number of ports.
    Returns t."""
    cfg = s.cfg
    F, P = cfg.vector_interval, len(ports)
    assert 1 <= P <= F
    c2c = cfg.slices_of("c2c")[0].name
    pc, pb = s.pos[c2c], s.pos[region.bank]
    t_min = max([t_min, s.ready(region, 0, c2c, n, F)] + [s.next_tx.get(p, 0) - j for j, p in enumerate(ports)])
    west = pc < pb

    def build(tx, t):
        for j, p in enumerate(ports):
            if not tx.need(c2c, f"tx{p}", t + j, t + j + n * F - 1, t + j + 1):
                return t
        idx = None
        for cand in range(cfg.streams):
            probe = s.sch.txn()
            for k in range(n):
                probe.path(StreamRef(cand, west), pb, t + k * F - abs(pc - pb), pc, P)
            if probe.ok and not (probe.cells & tx.plands or probe.plands & tx.cells):
                idx = cand
                break
        if idx is None:
            tx.fail("no stream free for every element")
            return t
        for k in range(n):
            read_to(tx, region.bank, region.addr + k, P, pc, t + k * F, idx, stride=0, tag=f"{tag} row {k}")
            if not tx.ok:
                return t
        for j, p in enumerate(ports):
            tx.add(c2c, t + j, [Insn.make(Opcode.SEND, port=p, s=StreamRef(idx, west), count=n)], t + j + 1,
                   f"tx{p}", (t + j, t + j + n * F - 1), tag=f"{tag} port {p}")
        return t
    t = s._asap(t_min, build, tag)
    for j, p in enumerate(ports):
        s.next_tx[p] = t + j + n * F + cfg.link_params.frame_gap
    s.note_read(region, 0, t + P - 1 - s.Lat["mem_read"] - abs(pc - pb), n, F)
    return t


def _recv(s, port, region, n, arrival, tag):
    """``_FFNScheduler.recv_region`` (RECV n vectors from `port` into region[0:n], the first arriving at
    `arrival`, one single WRITE per vector) that tests every WRITE slot and stream before building."""
    cfg, sch = s.cfg, s.sch
    F, Lr = cfg.vector_interval, s.Lat["c2c_recv"]
    c2c = cfg.slices_of("c2c")[0].name
    pc, pb = s.pos[c2c], s.pos[region.bank]
    dist, west = abs(pb - pc), pb < pc
    t_min = max(arrival, s.next_rx.get(port, 0), s._war(region, 0, n, F) - Lr - dist)

    def build(tx, t):
        if not tx.need(c2c, f"rx{port}", t, t + n * F - 1, t + 1):
            return t
        land = t + Lr
        d = sch.port_shift(c2c, [land + k * F for k in range(n)])
        if d:
            tx.fail(f"{c2c} stream port busy", d)
            return t
        for k in range(n):
            x = land + k * F + dist
            if not sch.queue_free(region.bank, x, x + 1):
                # (this element's WRITE fails the same way until it moves past the busy queue)
                tx.fail(f"{region.bank} write slot busy at {x}", sch.qiv[region.bank].next_free(x, 1) - x)
                return t
            if not sch.sub_free(region.bank, "wr", x, x):
                tx.fail(f"{region.bank} write slot busy at {x}", sch.sub_shift(region.bank, "wr", x, x))
                return t
        idx = None
        for cand in [4, 5, 6, 7] + [i for i in range(cfg.streams) if i not in (4, 5, 6, 7)]:
            if cand >= cfg.streams:
                continue
            probe = sch.txn()
            for k in range(n):
                probe.path(StreamRef(cand, west), pc, land + k * F, pb, 1)
                if not probe.ok:
                    break
            if probe.ok:
                idx = cand
                break
        if idx is None:
            tx.fail("no stream free for every element")
            return t
        st = StreamRef(idx, west)
        tx.add(c2c, t, [Insn.make(Opcode.RECV, s=st, port=port, count=n)], t + 1, f"rx{port}",
               (t, t + n * F - 1), [land + k * F for k in range(n)], tag=tag)
        for k in range(n):
            write_from(tx, region.bank, st, region.addr + k, 1, land + k * F + dist, src_pos=pc, tag=f"{tag} store")
        return t
    t = s._asap(t_min, build, tag)
    s.next_rx[port] = t + n * F
    s.note_write(region, 0, t + Lr + dist, n, F)
    return t


class _GatherChip:
    """One chip of the gather split: its MEM image, its scheduler and its jobs."""

    def __init__(self, cfg, q, T, c, dt, mt, consumers, blocks, tb, root, horizon, alloc=None):
        self.cfg, self.q, self.T, self.c, self.dt, self.mt = cfg, q, T, c, dt, mt
        # the regions are sized for alloc = (tokens, block tokens, blocks) (``_chunked``: every run
        # size of a layer places everything at the addresses of the largest), by default this run's
        aT, atb, anb = alloc if alloc is not None else (T, tb, len(blocks))
        self.consumers = [w for w in consumers if w != c]      # chips that need this chip's H
        self.blocks, self.root = blocks, root
        s = self.s = _FFNScheduler(cfg, q, T)
        _barriers(s.sch, cfg, horizon)
        s.rows = _rows(cfg, atb)
        L = cfg.lanes
        KT, FT, MT = s.KT, s.FT, s.MT
        allb = s.wbanks + [b for b in s.abanks if b not in s.wbanks]
        ab = s.abanks + [b for b in allb if b not in s.abanks]
        tiles = {"w1": s.tiles(q.w1), "w2": s.tiles(q.w2)}
        if q.gated:
            tiles["w3"] = s.tiles(q.w3)
        w13 = [("w1", k, d) for d in dt for k in range(KT)] + ([("w3", k, d) for d in dt for k in range(KT)]
                                                               if q.gated else [])
        w2 = [("w2", k, m) for m in mt for k in range(FT)]

        def take(pref, n, what):
            return s.alloc.take(pref + [b for b in allb if b not in pref], n, what)

        def rr(banks, i):
            return banks[i % len(banks):] + banks[:i % len(banks)] if banks else []
        # Banks. ab[0]: X and the local copy of this chip's H (read only by MM, in bursts). ab[1]: Z1,
        # U, the params and the LUT, ab[2]: A (read by the in-order VXM one operation at a time; MUL
        # reads A and U together, so two banks). ab[3]: what is SENT (this chip's H, a W2 chip's Y),
        # read by single READs every F cycles, which no burst reader may share. The weight banks:
        # W2's tiles in one half, the H received from other chips in the other (an MM reading H never
        # waits for the LW of the next W2 tile; the RECVs have the write ports to themselves), W1 and
        # W3 (whose MMs read X) wherever there is room.
        pb = [ab[1]] + allb
        self.p1 = s.params(q.req1, FT, "w1", pb) if dt else None
        self.p3 = s.params(q.req3, FT, "w3", pb) if dt and q.gated else None
        self.p2 = s.params(q.req2, MT, "w2", pb) if mt else None
        self.lut = s.place([ab[1]] + allb, q.lut.reshape(256 // L, L), "activation LUT") if dt else None
        self.xr = {k: take([ab[0]], aT, f"input X tile {k}") for k in range(KT)} if dt else {}
        ring = 2
        self.z1 = [take([ab[1]], atb, f"Z1 {i}") for i in range(ring)] if dt else []
        self.uu = [take([ab[1]], atb, f"U {i}") for i in range(ring)] if dt and q.gated else []
        self.aa = [take([b for b in [ab[2]] + allb if b != r.bank], atb, f"A {i}") for i, r in enumerate(self.uu)]
        # H to send: a ring of three blocks (a MUL waits for the SENDs of the block it overwrites)
        nb = min(anb * len(dt), 3)
        ring_h = [take([ab[3]], atb, f"H to send {i}") for i in range(nb)] if self.consumers else []
        self.hs = {}
        for bi, (bstart, bn) in enumerate(blocks):
            for i, d in enumerate(dt):
                if ring_h:
                    self.hs[(d, bstart)] = ring_h[(bi * len(dt) + i) % nb]
        self.yr = {m: take([ab[3]], aT, f"output Y tile {m}") for m in mt}
        self.wt = {}
        groups = s.weight_groups() if cfg.install_rows > 1 else None
        half = len(s.wbanks) // 2
        w2b, hb = (s.wbanks[:half], s.wbanks[half:]) if groups is None and half else (s.wbanks, s.wbanks)
        for i, key in enumerate(w2):
            self.wt[key] = self._place_w(groups, i, tiles, key, rr(w2b, i) + rr(hb, i))
        east = s.pos[ab[3]] > s.pos[s.vxm]
        same = [b for b in allb if (s.pos[b] > s.pos[s.vxm]) == east and b not in (ab[3], ab[0])]
        self.hh = {d: take([ab[0]] + same, aT, f"H tile {d}") for d in dt} if mt else {}
        if mt:
            for i, d in enumerate(d for d in range(FT) if d not in dt):
                cand = list(dict.fromkeys(hb + [ab[2], ab[0]]))
                self.hh[d] = take(sorted(cand, key=lambda b: -s.alloc.free(b)) + w2b, aT, f"H tile {d} (received)")
        for i, key in enumerate(w13):
            self._place_w(groups, len(w2) + i, tiles, key, sorted(s.wbanks, key=lambda b: -s.alloc.free(b)))
        if c == root:
            for i, m in enumerate(m for m in range(MT) if m not in mt):
                self.yr[m] = take(rr(hb, i) + w2b, aT, f"output Y tile {m} (received)")
        self.ex = _Exec(s, self.wt)
        self.rx_done = {}            # (d, block start) -> cycle the received H is in MEM

    def _place_w(self, groups, i, tiles, key, pref):
        s = self.s
        what = f"weight tile {key[0]}[{key[1]},{key[2]}]"
        tile = tiles[key[0]][key[1:]]
        if groups is not None:
            r = s.place_tile(groups, i, tile, what)
        else:
            allb = s.wbanks + [b for b in s.abanks if b not in s.wbanks]
            r = s.place(pref + [b for b in allb if b not in pref], tile, what, s.lanes)
        self.wt[key] = r
        return r

    def phase1(self, sends, floor):
        """W1 (and W3) for this chip's d_ff tiles, every block; each H SENT to every W2 chip."""
        s, q, KT = self.s, self.q, self.s.KT
        if not self.dt:
            return
        s.ldlut(self.lut)
        i = 0
        for bstart, bn in self.blocks:
            tok = f"tokens {bstart}..{bstart + bn - 1}"
            xl = {k: r for k, r in self.xr.items()}
            for d in self.dt:
                z1 = _sub(self.z1[i % 2], bn)
                hs = ([_sub(self.hs[(d, bstart)], bn)] if self.hs else []) + ([_sub(self.hh[d], bn, bstart)] if self.mt else [])
                w1 = [(("w1", k, d), xl[k], bstart) for k in range(KT)]
                post = self._sender(sends, floor, d, bstart, bn)
                if q.gated:
                    u, a = _sub(self.uu[i % 2], bn), _sub(self.aa[i % 2], bn)
                    self.ex.add(_Job(w1, bn, self.p1, d, z1, f"w1 tile {d} {tok}"))
                    w3 = [(("w3", k, d), xl[k], bstart) for k in range(KT)]
                    after = [(Opcode.LUT, [z1], a, {}), (Opcode.MUL, [a, u], hs, {"sh": q.mul_sh})]
                    self.ex.add(_Job(w3, bn, self.p3, d, u, f"w3 tile {d} {tok}", after, post))
                else:
                    self.ex.add(_Job(w1, bn, self.p1, d, z1, f"w1 tile {d} {tok}", [(Opcode.LUT, [z1], hs, {})], post))
                i += 1
        self.ex.run()

    def _sender(self, sends, floor, d, bstart, bn):
        def post():
            if not self.consumers:
                return
            h = _sub(self.hs[(d, bstart)], bn)
            F = self.cfg.vector_interval
            cons = self.consumers
            for g in range(0, len(cons), F):
                grp = cons[g:g + F]
                ports = [_port_to(self.cfg, self.c, w) for w in grp]
                for off, cnt in _frames(self.cfg, bn):
                    keys = [("h", self.c, d, bstart, off, w) for w in grp]
                    tag = (f"SEND H tile {d} block {bstart}" + (f" from {off}" if off else "") +
                           f" to chip{'s' if len(grp) > 1 else ''} {', '.join(map(str, grp))}")
                    t_min = max(floor.get(key, 0) - j for j, key in enumerate(keys))
                    hc = _sub(h, cnt, off)
                    if len(grp) == 1:       # a READ with REPEAT: it holds the queue of the bank of what is sent
                        t = _send(self.s, hc, cnt, ports[0], tag, t_min=t_min)
                    else:
                        t = _bcast(self.s, hc, cnt, ports, tag, t_min=t_min)
                    for j, key in enumerate(keys):
                        sends[key] = (t + j, cnt)
        return post

    def receive(self, sends, kind, late, cap, last=None):
        """RECV every vector SENT to this chip of `kind` ("h" or "y"), in the order they were sent.
        ``last``: the schedules so far when this one is the last allowed: a RECV too late fails the
        compile at once."""
        mine = sorted(((t, key, cnt) for key, (t, cnt) in sends.items() if key[0] == kind and key[-1] == self.c),
                      key=lambda x: (x[0], x[1]))
        for t_send, key, cnt in mine:
            src, idx, bstart, off = key[1], key[2], key[3], key[4]
            region = self.hh[idx] if kind == "h" else self.yr[idx]
            r = _sub(region, cnt, bstart + off)
            t = _recv(self.s, _port_to(self.cfg, self.c, src), r, cnt, _arrival(self.cfg, t_send, cnt),
                      f"RECV {'H' if kind == 'h' else 'Y'} tile {idx} block {bstart}" + (f" from {off}" if off else "")
                      + f" from chip {src}")
            if t - t_send > cap:
                late[key] = t_send + (t - t_send - cap)
                if last is not None:
                    raise _rx_error(self.cfg, last, f"chip {self.c} RECEIVES {'H' if kind == 'h' else 'Y'} tile "
                                    f"{idx} from chip {src} {t - t_send - cap} cycles too late")
            if kind == "h":
                done = t + (cnt - 1) * self.cfg.vector_interval
                self.rx_done[(idx, bstart)] = max(self.rx_done.get((idx, bstart), done), done)

    def phase2(self, sends, floor):
        """W2 for this chip's output tiles, every block: its own H first, then the received H in the
        order it arrives; each Y tile that is not chip 0's SENT to chip 0."""
        FT = self.s.FT
        for bstart, bn in self.blocks:
            tok = f"tokens {bstart}..{bstart + bn - 1}"
            order = list(self.dt) + sorted((d for d in range(FT) if d not in self.dt),
                                           key=lambda d: (self.rx_done[(d, bstart)], d))
            for m in self.mt:
                tiles = [(("w2", k, m), self.hh[k], bstart) for k in order]
                y = _sub(self.yr[m], bn, bstart)
                post = None if self.c == self.root else self._ysender(sends, floor, m, bstart, bn, y)
                self.ex.add(_Job(tiles, bn, self.p2, m, y, f"w2 tile {m} {tok}", post=post))
        self.ex.run()

    def _ysender(self, sends, floor, m, bstart, bn, y):
        def post():
            port = _port_to(self.cfg, self.c, self.root)
            for off, cnt in _frames(self.cfg, bn):
                key = ("y", self.c, m, bstart, off, self.root)
                tag = f"SEND Y tile {m} block {bstart}" + (f" from {off}" if off else "") + f" to chip {self.root}"
                sends[key] = (_send(self.s, _sub(y, cnt, off), cnt, port, tag, t_min=floor.get(key, 0)), cnt)
        return post


def _gather_schedule(q, cfg, tokens, dts, mts, active, w2chips, blocks, tb, root, horizon, alloc=None, push=False):
    """Schedule every chip: the H producers first (their SEND cycles fix when the W2 chips RECV),
    then the W2 chips, then chip 0's RECVs of Y. A RECV later than the RX buffer allows delays its
    SEND by as much as it was late (``push``, for a layer's chunks: from the second schedule on, by
    twice that, which settles in fewer schedules), and the tray is scheduled again (delays only
    grow, so this ends)."""
    cap = (cfg.link["rx_vectors"] - 1) * cfg.vector_interval - math.ceil(cfg.link["link_slack"]) - 1
    floor = {}
    most = _attempts(24, alloc[0] if alloc else tokens)
    for _attempt in range(most):
        sends, late = {}, {}
        last = most if _attempt == most - 1 else None
        chips = {c: _GatherChip(cfg, q, tokens, c, dts[c], mts[c], w2chips, blocks, tb, root, horizon, alloc)
                 for c in active}
        for c in active:
            chips[c].phase1(sends, floor)
        for c in w2chips:
            chips[c].receive(sends, "h", late, cap, last)
            chips[c].phase2(sends, floor)
        chips[root].receive(sends, "y", late, cap, last)
        if not late:
            return chips, sends
        for key, t in late.items():
            p = 2 if push and _attempt else 1
            floor[key] = max(floor.get(key, 0), sends[key][0] + p * (t - sends[key][0]))
    raise CompileError(f"config {cfg.name}: the chips cannot RECV the gathered activations within the "
                       f"{cfg.link['rx_vectors']}-vector RX buffer ({len(late)} SENDs still too early)")


def _compile_tp_gather(q, cfg, tokens, n, shift=None, alloc=None, tried=None, search=True, place_only=False,
                       push=False):
    """Tensor parallel with int8 on the links: chip c computes H = act(X W1[:, own]) * (X W3[:, own])
    for its d_ff tiles and SENDs it to every W2 chip; W2 chip w computes Y[:, its columns] = requant(H
    W2[:, its columns]) over all of d_ff, exactly as one chip does, and SENDs it to chip 0.

    ``tried``: the plans compiled so far for these tokens and alloc ({plan: TrayCompiled or
    CompileError}, kept by the caller); ``search`` False: shift 0 only (``_chunked``'s probes);
    ``place_only``: place every chip's MEM (raising CompileError if it does not fit), no schedule;
    ``push``: ``_gather_schedule``'s."""
    if shift is None and place_only:
        shift = 0
    if shift is None:
        # the balance between the W2 chips and the others: from the even count of weight tiles, move
        # d_ff tiles to the W2 chips (their tails are longer) while the tray gets faster
        tried = {} if tried is None else tried

        def attempt(sh):
            key = tuple(map(tuple, gather_plan(q, cfg, n, sh)[0]))
            if key not in tried:
                try:
                    tried[key] = _compile_tp_gather(q, cfg, tokens, n, sh, alloc, push=push)
                except CompileError as e:
                    tried[key] = e
            r = tried[key]
            return (max(r.predicted_cycles) if isinstance(r, TrayCompiled) else math.inf), r
        best = 0
        for step in (-1, 1) if search else ():
            while attempt(best + step)[0] < attempt(best)[0]:
                best += step
            if best != 0:
                break
        r = attempt(best)[1]
        if not isinstance(r, TrayCompiled):
            raise r
        return r
    L = cfg.lanes
    MT = _ceil(q.d_model, L)
    dts, mts = gather_plan(q, cfg, n, shift)
    active = [c for c in range(n) if dts[c] or mts[c]]
    w2chips = [c for c in range(n) if mts[c]]
    blocks, tb = plan_blocks(cfg, tokens)
    if alloc is not None:
        ablocks, atb = plan_blocks(cfg, alloc)
        alloc = (alloc, atb, len(ablocks))
    root = 0
    if place_only:
        for c in active:
            _GatherChip(cfg, q, tokens, c, dts[c], mts[c], w2chips, blocks, tb, root, 1 << 16, alloc)
        return None
    # DESKEW barriers up to a horizon (a long list slows every placement down); a program that
    # reaches it is scheduled again with a far one
    for horizon in (1 << 16, 1 << 22):
        chips, sends = _gather_schedule(q, cfg, tokens, dts, mts, active, w2chips, blocks, tb, root, horizon, alloc,
                                        push)
        if max(g.s.sch.end_cycle for g in chips.values()) < horizon - 1:
            break
    chips_out, cycles = [], []
    rc = chips[root]
    yl = {m: _sub(rc.yr[m], tokens) for m in range(MT)}
    for c in range(cfg.chips):
        g = chips.get(c)
        if g is None:
            chips_out.append(None)
            cycles.append(1)          # an idle chip runs a lone HALT
            continue
        program, H, listing = g.s.sch.finish()
        xl = {k: _sub(r, tokens) for k, r in g.xr.items()}
        comp = Compiled(cfg, program, g.s.image, xl, yl if c == root else {}, tokens, H + 1, listing, g.s.sch, q)
        chips_out.append(comp)
        cycles.append(H + 1)
        _check_queues(cfg, program, c)
    tc = TrayCompiled(cfg, "tp", chips_out, cycles, root, yl)
    mats = 3 if q.gated else 2
    worst = max(cycles)
    tc.report = {
        "mode": "tensor-parallel", "split": "gather", "chips_used": len(active), "shift": shift,
        "d_ff_columns_per_chip": [min(len(d) * L, max(0, q.d_ff - d[0] * L)) if d else 0 for d in dts],
        "d_model_columns_per_chip": [min(len(m) * L, max(0, q.d_model - m[0] * L)) if m else 0 for m in mts],
        "predicted_cycles": worst, "per_chip_predicted_cycles": cycles,
        "useful_macs": tokens * q.d_model * q.d_ff * mats,
        "mxm_utilization": tokens * q.d_model * q.d_ff * mats / (cfg.macs_per_cycle * len(active) * worst),
        "link_vectors_to_root": sum(cnt for key, (_, cnt) in sends.items() if key[-1] == root),
        "link_vectors": sum(cnt for _, cnt in sends.values()),
        "vector_interval_cycles": cfg.vector_interval, "link_latency": cfg.link_latency,
        "deskew_interval": deskew_interval(cfg),
        "deskews": len([b for b in rc.s.sch.barriers if b < worst]),
    }
    return tc
