"""Multi-chip FFN programs for a tray: tensor-parallel (d_ff split) and expert-parallel (MoE).

Tensor parallel: chip c owns a contiguous range of d_ff tiles. Every chip gets the whole input,
computes act(X W1[:, own]) [* X W3[:, own]] and its int32 partial X W2[own, :]; the workers SEND
their partials (four byte planes per vector) to chip 0, which RECEIVES them into MEM as they
arrive, adds them with ADD32 in int32 — the exact sum a single chip accumulates — and only then
requantizes. The tray therefore computes the same bits as one chip.

Expert parallel: one expert per chip, each chip an ordinary single-chip program; the host routes
each token to its expert's chip.

DESKEW: the chips' clocks drift apart by up to 2 x ppm_budget; a RECV scheduled at SEND +
link_latency tolerates `link_slack` cycles of it. Between realignments a program may therefore
run D = epoch x max(1, floor(link_slack / (2 x ppm_budget x 1e-6 x epoch))) cycles, and the
compiler puts a DESKEW barrier at every multiple of D that the program crosses: no operation spans
a barrier, every queue parks in DESKEW just before it (docs/c2c.md).
"""

import math
from dataclasses import dataclass, field

from tinylpu.firmware.compiler import Compiled, CompileError, Region, _ceil, _FFNScheduler, _report
from tinylpu.firmware.quant import QuantFFN, ReqParams
from tinylpu.isa import Opcode

__all__ = ["TrayCompiled", "compile_ep", "compile_tp", "deskew_interval", "slice_ffn"]


def deskew_interval(cfg):
    """Cycles a program may run between DESKEWs (a multiple of the epoch)."""
    E = cfg.link["epoch"]
    drift_per_epoch = 2 * cfg.link["ppm_budget"] * 1e-6 * E
    return E * max(1, int(cfg.link["link_slack"] // drift_per_epoch)) if drift_per_epoch > 0 else E * 1024


def _req_slice(r: ReqParams, cols):
    return ReqParams(r.m[cols], r.sh[cols], r.z[cols])


def slice_ffn(q: QuantFFN, cols) -> QuantFFN:
    """The part of the layer that owns the d_ff channels `cols` (W2's output scale is unchanged)."""
    return QuantFFN(q.d_model, len(cols), q.activation, q.gated, q.s_x, q.w1[:, cols], q.w2[cols, :],
                    q.w3[:, cols] if q.gated else None, _req_slice(q.req1, cols), q.req2,
                    _req_slice(q.req3, cols) if q.gated else None, q.lut, q.mul_sh, q.s_y, q.scales)


@dataclass
class TrayCompiled:
    cfg: object
    mode: str                         # "tp" or "ep"
    chips: list                       # per chip: Compiled or None (idle)
    predicted_cycles: list            # per chip (0 for idle chips)
    root: int = 0
    y_layout: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)


def _port_to(cfg, a, b):
    for p in range(cfg.c2c_ports):
        if cfg.peer(a, p)[0] == b:
            return p
    raise CompileError(f"config {cfg.name}: no C2C link from chip {a} to chip {b} (topology {cfg.topology})")


def _barriers(sch, cfg, horizon):
    D = deskew_interval(cfg)
    sch.barriers = list(range(D, horizon, D))


def compile_tp(q: QuantFFN, cfg, tokens, chips=None):
    """Tensor-parallel FFN over `chips` chips of the tray (default: all)."""
    n = chips or cfg.chips
    if n < 2 or n > cfg.chips:
        raise CompileError(f"tensor parallel needs 2..{cfg.chips} chips on config {cfg.name}, got {n}")
    if not cfg.slices_of("c2c"):
        raise CompileError(f"config {cfg.name} has no c2c slice in its floorplan")
    L = cfg.lanes
    FT = _ceil(q.d_ff, L)
    n = min(n, FT)                                   # at least one d_ff tile per chip
    bounds = [(c * FT) // n for c in range(n + 1)]
    cols = [list(range(bounds[c] * L, min(bounds[c + 1] * L, q.d_ff))) for c in range(n)]
    horizon = 1 << 22
    # A port holds rx_vectors vectors between SEND and RECV (in flight or arrived): a RECV that starts
    # more than this many cycles after its SEND would overflow it.  Workers are scheduled first (their
    # SEND cycles fix when the root can RECV); a RECV that the root can only start later than that
    # delays its SEND, and the tray is scheduled again (delays only grow, so this ends).
    cap = (cfg.link["rx_vectors"] - 1) * cfg.vector_interval - math.ceil(cfg.link["link_slack"]) - 1
    floor = {}                                        # (chip, block, m, plane) -> earliest SEND cycle
    for _attempt in range(16):
        sends, scheds, late = {}, {}, {}              # sends: (chip, block, m, plane) -> (first SEND, n)
        for c in range(1, n):
            s = _FFNScheduler(cfg, slice_ffn(q, cols[c]), tokens, w2_mode="partial")
            _barriers(s.sch, cfg, horizon)
            s.layouts = s.build()
            port = _port_to(cfg, c, 0)
            for (b0, m), grp in sorted(s.partials.items()):
                for p, r in enumerate(grp):
                    key = (c, b0, m, p)
                    sends[key] = (s.send_region(r, r.n, port, f"SEND partial Y{m} plane {p} block {b0}",
                                                t_min=floor.get(key, 0)), r.n)
            scheds[c] = s
        root = _FFNScheduler(cfg, slice_ffn(q, cols[0]), tokens, w2_mode="partial")
        _barriers(root.sch, cfg, horizon)
        xl, yl = root.build()
        far = root.group_banks("far")
        recv = {}
        for key, (t_send, cnt) in sorted(sends.items(), key=lambda kv: kv[1][0]):
            c, b0, m, p = key
            bank = far[(p + c) % 4]          # spread the workers' planes over the banks' write ports
            # strictly that bank: the four planes of a group must be read in one cycle from four banks
            r = root.alloc.take([bank], cnt, f"chip 0's buffer for partial Y{m} plane {p} (block {b0}) from chip {c}")
            t_recv = root.recv_region(_port_to(cfg, 0, c), r, cnt, t_send + cfg.link_latency,
                                      f"RECV partial Y{m} plane {p} block {b0} from chip {c}")
            if t_recv - t_send > cap:
                late[key] = t_send + (t_recv - t_send - cap)
            recv.setdefault((b0, m, c), [None] * 4)[p] = r
        if not late:
            break
        for key, t in late.items():
            floor[key] = max(floor.get(key, 0), t)
    else:
        raise CompileError(f"config {cfg.name}: the root chip cannot RECV the partial sums within the "
                           f"{cfg.link['rx_vectors']}-vector RX buffer ({len(late)} SENDs still too early)")
    p2 = root.params(q.req2, _ceil(q.d_model, L), "w2 (tray)", [root.abanks[1 % len(root.abanks)]] +
                     root.wbanks + root.abanks)
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
        "mode": "tensor-parallel", "chips_used": n, "d_ff_columns_per_chip": [len(x) for x in cols],
        "predicted_cycles": worst, "per_chip_predicted_cycles": cycles,
        "useful_macs": tokens * q.d_model * q.d_ff * mats,
        "mxm_utilization": tokens * q.d_model * q.d_ff * mats / (cfg.macs_per_cycle * n * worst),
        "link_vectors_to_root": sum(cnt for _, cnt in sends.values()),
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
    """Expert parallel: expert e on chip e with its own token count (0 tokens: the chip idles)."""
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
        s = _FFNScheduler(cfg, experts[e], tokens_per_expert[e])
        _barriers(s.sch, cfg, 1 << 22)
        xl, yl = s.build()
        program, H, listing = s.sch.finish()
        _check_queues(cfg, program, e)
        comp = Compiled(cfg, program, s.image, xl, yl, tokens_per_expert[e], H + 1, listing, s.sch, experts[e])
        comp.report = _report(comp, s)
        chips.append(comp)
        cycles.append(H + 1)
    tc = TrayCompiled(cfg, "ep", chips, cycles)
    tc.report = {"mode": "expert-parallel", "experts": len(experts), "tokens_per_expert": list(tokens_per_expert),
                 "predicted_cycles": max(cycles), "per_chip_predicted_cycles": cycles}
    return tc
