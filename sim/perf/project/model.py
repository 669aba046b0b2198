"""The projection arithmetic: how many chips a model needs, how many tokens/s one user gets at
batch 1, what a token costs in energy; the GPU-only vs GPU + LPU Pareto points, the fleet mix and
the comparison with published figures.  The method (docs/projection.md):

1. **Calibration.** FFN layers are compiled by ``firmware/compiler.py`` for variants of the
   ``tiny`` chip (lanes 16 and 32, 8/16/32 MEM banks, the ``tiny`` and ``fpga`` latencies, 1 and 4
   tokens). A least-squares fit of the cycle-exact schedules gives
   ``cycles = a * weight_rows / rows_per_cycle + c0 + c_lat * latency_path + c_dist * mxm_to_vxm
   + c_tok * (tokens - 1)`` (a weight row is ``lanes`` bytes).
2. **Placement.** Weights (and the KV cache of one user at the model's context) are partitioned
   over chips by SRAM capacity: whole layers per chip when a layer fits, otherwise a layer split
   over ``g`` chips (tensor parallel for dense matrices, expert parallel for MoE experts).
3. **Time per token.** Every layer is two segments (attention, FFN); a segment streams its
   weights through the MXMs at the chip's weight rate and pays the calibrated fill once; split
   layers add an all-reduce over C2C, consecutive pipeline stages a C2C hop.

Attention at batch 1 is matrix-vector work too: q K^T installs the cached K rows as MXM weights
and the scores multiply the installed V rows, so the KV cache is streamed like weights and
counted in SRAM capacity.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import yaml

from tinylpu.sim.perf.project.inputs import ProjectError, load_chip, load_fleet, load_model, pareto_config, published

__all__ = ["CAL_SHAPES", "LAT_PATH", "Calibration", "calibrate", "weight_bytes_per_cycle", "model_bytes", "project",
           "frontier", "pareto", "fleet", "compare"]


# ------------------------------------------------------------------------------------------
# calibration on the compiler's cycle-exact schedules
# ------------------------------------------------------------------------------------------

CAL_SHAPES = [  # (d_model, d_ff, gated, tokens)
    (64, 128, True, 1), (128, 128, False, 1), (64, 128, True, 4), (128, 256, True, 1),
]
LAT_PATH = ("mem_read", "mxm_install", "mxm_mm", "mxm_emit", "vxm_req", "mem_write")


def _variant(base, lanes, banks):
    from tinylpu.config import load_config, parse_config
    raw = copy.deepcopy(load_config(base).raw)
    raw.update(name=f"cal-{base}-l{lanes}-b{banks}", lanes=lanes, queue_depth=4096)
    raw["floorplan"] = (["mxm0", "sxm0"] + [f"mem{i}" for i in range(banks // 2)] + ["vxm0"]
                        + [f"mem{i}" for i in range(banks // 2, banks)])
    raw["mem"] = dict(raw["mem"], depth=2048)
    return parse_config(yaml.safe_dump(raw), f"<calibration variant {raw['name']}>")


@dataclass(frozen=True)
class Calibration:
    a: float          # cycles per weight row (lanes bytes) per MXM
    c0: float         # fill/drain: constant
    c_lat: float      # ... per cycle of the MEM->MXM->VXM->MEM latency path
    c_dist: float     # ... per slice between the MXM and the VXM
    c_tok: float      # cycles per extra token (tokens <= lanes)
    points: tuple     # (config, lanes, d_model, d_ff, gated, tokens, rows, latency path, distance, cycles)
    max_residual: float

    def fill(self, latency_path, distance):
        return self.c0 + self.c_lat * latency_path + self.c_dist * distance

    def as_dict(self):
        return {k: getattr(self, k) for k in ("a", "c0", "c_lat", "c_dist", "c_tok", "max_residual")} | {
            "points": len(self.points)}


@lru_cache(maxsize=2)
def calibrate(quick=False):
    """Compile FFN layers on tinylpu variants and fit the cycle model (a few seconds)."""
    from tinylpu.firmware.compiler import compile_ffn
    from tinylpu.firmware.quant import FFNWeights, quantize_ffn
    variants = [(b, L, n) for b in ("tiny", "fpga") for L in (16, 32) for n in ((8, 32) if quick else (8, 16, 32))]
    pts = []
    for base, L, banks in variants:
        cfg = _variant(base, L, banks)
        pos = {s.name: s.position for s in cfg.slices}
        dist = abs(pos["vxm0"] - pos["mxm0"])
        lat = sum(cfg.latency[k] for k in LAT_PATH)
        for dm, dff, gated, T in CAL_SHAPES:
            if quick and (dm, dff) == (128, 256):
                continue
            if L == 16 and (dm, dff, T) == (128, 256, 1) and base == "fpga":
                continue
            rng = np.random.default_rng(1)
            w = FFNWeights(rng.normal(size=(dm, dff)) / 8, rng.normal(size=(dff, dm)) / 8,
                           rng.normal(size=(dm, dff)) / 8 if gated else None, activation="swiglu" if gated else "gelu")
            x = rng.normal(size=(T, dm))
            c = compile_ffn(quantize_ffn(w, x), cfg, T)
            rows = -(-dm // L) * -(-dff // L) * (3 if gated else 2) * L
            pts.append((cfg.name, L, dm, dff, gated, T, rows, lat, dist, c.predicted_cycles))
    A = np.array([[p[6], 1.0, p[7], p[8], p[5] - 1] for p in pts], dtype=float)
    y = np.array([p[9] for p in pts], dtype=float)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    res = float(np.max(np.abs(A @ coef - y)))
    return Calibration(*(float(round(v, 4)) for v in coef), points=tuple(pts), max_residual=round(res, 3))




# ------------------------------------------------------------------------------------------
# the projection
# ------------------------------------------------------------------------------------------

def weight_bytes_per_cycle(chip):
    """Bytes of weights the chip can stream into its MXMs per cycle: the MXM install path
    (planes x rows/cycle x lanes) or the SRAM read bandwidth, whichever is lower."""
    sram = chip["sram_bandwidth"] / (chip["clock_mhz"] * 1e6)
    if chip.get("weight_rows_per_cycle"):
        return min(sram, chip["mxm_planes"] * chip["weight_rows_per_cycle"] * chip["lanes"])
    return sram


def _segment_s(chip, cal, nbytes, tokens=1):
    """Seconds for one chip to stream `nbytes` of weights through its MXMs for `tokens` tokens."""
    if nbytes <= 0:
        return 0.0
    L = chip["lanes"]
    rows_per_cycle = weight_bytes_per_cycle(chip) / L       # rows of `lanes` bytes the MXMs take per cycle
    stream = cal.a * (nbytes / L) / rows_per_cycle
    compute = tokens * nbytes / (chip["mxm_planes"] * L * L)  # MACs / MACs per cycle (int8: 1 B per weight)
    cyc = max(stream, compute) + cal.fill(chip["pipeline_latency_cycles"], chip["mxm_to_vxm_slices"]) \
        + cal.c_tok * (min(tokens, L) - 1)
    return cyc / (chip["clock_mhz"] * 1e6)


def _peer_Bps(chip):
    c = chip["c2c"]
    return c["link_gbps"] * 1e9 / 8 * c["links_per_peer"]


def _hops(chip, g):
    c = chip["c2c"]
    return c["hops_within_node"] if g <= chip["chips_per_node"] else c["hops_across_nodes"]


def _allreduce_s(chip, model, g, tokens=1):
    """Reduce the int32 partials of `g` chips and broadcast the result (reduce-scatter + all-gather:
    each chip exchanges 1/g of the vector with each peer)."""
    if g <= 1:
        return 0.0
    c = chip["c2c"]
    lat = 2 * _hops(chip, g) * c["hop_latency_ns"] * 1e-9
    ser = 2 * model["d_model"] * tokens * c["partial_bytes"] / g / _peer_Bps(chip)
    return lat + ser


def _stage_hop_s(chip, model, across=False, tokens=1):
    c = chip["c2c"]
    hops = c["hops_across_nodes"] if across else c["hops_within_node"]
    return hops * c["hop_latency_ns"] * 1e-9 + model["d_model"] * tokens * c["activation_bytes"] / _peer_Bps(chip)


def model_bytes(model, context=None):
    """Per-layer and total byte counts (weights at bytes_per_weight, KV at kv_bytes)."""
    m = model
    ctx = m["context"] if context is None else context
    d, bw = m["d_model"], m["bytes_per_weight"]
    kv_dim = d // m["heads"] * m["kv_heads"]
    attn = d * (d + 2 * kv_dim) * bw + d * d * bw                 # QKV + O
    kv = 2 * ctx * kv_dim * m["kv_bytes"]                          # K and V of one user, one layer
    expert = (3 if m["gated"] else 2) * d * m["d_ff"] * bw
    router = d * m["experts"] * bw if m["experts"] > 1 else 0
    ffn_res = expert * m["experts"] + router
    ffn_act = expert * m["top_k"] + router
    table = m["vocab"] * d * bw
    params = (m["layers"] * (attn + ffn_res) + 2 * table) / bw
    active = (m["layers"] * (attn + ffn_act) + table) / bw
    return dict(attn=attn, kv=kv, expert=expert, router=router, ffn_res=ffn_res, ffn_act=ffn_act, table=table,
                kv_dim=kv_dim, context=ctx, params=params, active_params=active)


def _layout(chip, nbytes_layer, layers):
    """(chips per layer g, layers per chip, chips for the layers, pipeline stages)."""
    usable = chip["sram_usable"] * chip["sram_bytes"]
    if nbytes_layer <= usable:
        lpc = max(1, int(usable // nbytes_layer))
        n = math.ceil(layers / lpc)
        return 1, lpc, n, n
    g = math.ceil(nbytes_layer / usable)
    return g, 1, g * layers, layers


def _ffn_chip_bytes(model, b, g, tokens=1):
    """Weight bytes the busiest chip of a layer group streams for the FFN segment."""
    E, k = model["experts"], model["top_k"]
    if E == 1:
        return b["ffn_act"] / g
    active = E * (1 - (1 - k / E) ** tokens)                    # distinct experts the batch touches
    if g >= E:
        return b["router"] / g + b["expert"] / (g // E)       # each expert split over g // E chips
    per_chip = math.ceil(E / g)
    busiest = min(per_chip, math.ceil(active / g))
    return b["router"] / g + busiest * b["expert"]


def project(chip, model, context=None, cal=None, tokens=1):
    """Tokens/s per user at batch `tokens` (default 1), chips, energy: a dict (see module doc)."""
    chip, model = load_chip(chip), load_model(model)
    cal = cal or calibrate()
    b = model_bytes(model, context)
    L = model["layers"]
    usable = chip["sram_usable"] * chip["sram_bytes"]
    layer_res = b["attn"] + b["kv"] + b["ffn_res"]
    g, lpc, layer_chips, stages = _layout(chip, layer_res, L)
    table_chips = math.ceil(b["table"] / usable)
    chips = layer_chips + 2 * table_chips                       # embedding table, layers, LM head
    # time per token
    t_attn_stream = L * _segment_s(chip, cal, (b["attn"] + b["kv"]) / g, tokens)
    t_ffn_stream = L * _segment_s(chip, cal, _ffn_chip_bytes(model, b, g, tokens), tokens)
    t_coll = L * 2 * _allreduce_s(chip, model, g, tokens)
    n_hops = stages + 1                                          # embedding -> layers ... -> LM head
    per_node = chip["chips_per_node"]
    # stage boundaries that leave a node: all of them once a stage spans a node, else one per node
    across = n_hops if g >= per_node else min(n_hops, n_hops * g // per_node)
    t_hops = ((n_hops - across) * _stage_hop_s(chip, model, False, tokens)
              + across * _stage_hop_s(chip, model, True, tokens))
    t_embed = _segment_s(chip, cal, model["d_model"] * model["bytes_per_weight"], tokens)
    t_head = _segment_s(chip, cal, b["table"] / table_chips, tokens) + (
        2 * _hops(chip, table_chips) * chip["c2c"]["hop_latency_ns"] * 1e-9 if table_chips > 1 else 0.0)
    t = t_attn_stream + t_ffn_stream + t_coll + t_hops + t_embed + t_head
    fill_s = cal.fill(chip["pipeline_latency_cycles"], chip["mxm_to_vxm_slices"]) / (chip["clock_mhz"] * 1e6)
    nodes = math.ceil(chips / per_node)
    out = {
        "chip": chip["name"], "model": model["name"], "context": b["context"], "tokens": tokens,
        "params": b["params"], "active_params": b["active_params"],
        "weight_bytes": b["params"] * model["bytes_per_weight"], "kv_bytes_per_user": b["kv"] * L,
        "chips": chips, "chips_per_layer": g, "layers_per_chip": lpc, "pipeline_stages": stages,
        "nodes": nodes, "chips_deployed": nodes * per_node,
        "weight_bytes_per_cycle": weight_bytes_per_cycle(chip),
        "time_per_token_s": t, "tokens_per_s_per_user": 1 / t,
        "breakdown_s": {"attention (weights + KV streamed)": t_attn_stream, "FFN / experts streamed": t_ffn_stream,
                        "all-reduce over C2C": t_coll, "pipeline hops over C2C": t_hops,
                        "embedding + LM head": t_embed + t_head},
        "fill_s_per_segment": fill_s, "segments": 2 * L + 2,
    }
    out["aggregate_tokens_per_s"] = tokens / t
    pw = chip.get("power_w")
    if pw:
        power = out["chips_deployed"] * pw
        out["power_w"] = power
        out["energy_per_token_j"] = power * t / tokens
        out["tokens_per_s_per_mw"] = tokens / t / (power / 1e6)
    return out


# ------------------------------------------------------------------------------------------
# Pareto: GPU only vs GPU + LPU (attention-FFN disaggregation), from sim/serving/gpu.py
# ------------------------------------------------------------------------------------------

class _Cfg:
    """The attributes sim/serving/gpu.py reads from a model (``m.cfg.<name>``)."""

    def __init__(self, model):
        for k in ("layers", "d_model", "d_ff", "experts", "top_k", "vocab"):
            setattr(self, k, model[k])


class _M:
    def __init__(self, model):
        self.cfg = _Cfg(model)


def _gpu_group(gpu, n):
    """n GPUs in tensor parallel, seen by the roofline as one GPU with n x the flops and bandwidth
    (the launch overhead stays per kernel); collectives are added by the caller."""
    from tinylpu.sim.serving.gpu import GpuModel
    p = dict(gpu.p)
    p["peak_flops"] = {k: v * n for k, v in p["peak_flops"].items()}
    p["hbm_bandwidth"] = p["hbm_bandwidth"] * n
    return GpuModel(p)


def _gpu_min(gpu, pc, model, b, B, ctx, with_ffn):
    """Fewest GPUs whose usable HBM holds the weights and B users' KV."""
    kv_user = 2 * model["layers"] * ctx * b["kv_dim"] * gpu.p["kv_dtype_bytes"]
    wbytes = model["layers"] * (b["attn"] * gpu.p["attn_weight_bytes"] / model["bytes_per_weight"]
                                + (b["ffn_res"] if with_ffn else 0)) + 2 * b["table"]
    return math.ceil((wbytes + B * kv_user) / (pc["hbm_usable"] * gpu.p["hbm_capacity"]))


def _gpu_step(gpu, pc, model, b, B, ctx, with_ffn, n):
    """One decode step of B users on a tensor-parallel group of n GPUs: seconds."""
    m = _M(model)
    grp = _gpu_group(gpu, n)
    # the roofline reads K/V of d_model per position (multi-head); GQA reads kv_dim: scale the context
    ctx_eff = max(1, round(ctx * b["kv_dim"] / model["d_model"]))
    t_att = grp.attention(m, [ctx_eff] * B)
    t_ffn = 0.0
    if with_ffn:
        E, k = model["experts"], model["top_k"]
        active = max(1, round(E * (1 - (1 - k / E) ** B))) if E > 1 else 1
        per = max(1, B * k // active)
        t_ffn = grp.moe_ffn(m, {e: per for e in range(active)})
    coll = pc["allreduce_s"] * (2 if with_ffn else 1) if n > 1 else 0.0
    return model["layers"] * (t_att + t_ffn + coll) + grp.lm_head(m, B)


def _gpu_counts(pc, n_min):
    """n_min, 2 n_min, 4 n_min, ... up to max_gpus (a bigger tensor-parallel group is faster per user)."""
    out, n = [], n_min
    while n <= max(n_min, pc["max_gpus"]):
        out.append(n)
        n *= 2
    return out


def frontier(points):
    """The Pareto-efficient points: none faster per user and more efficient per MW."""
    best, out = -1.0, []
    for p in sorted(points, key=lambda p: (-p["tps_user"], -p["tps_per_mw"])):
        if p["tps_per_mw"] > best:
            out.append(p)
            best = p["tps_per_mw"]
    return sorted(out, key=lambda p: p["tps_user"])


def pareto(model="moe-2t", chip="lp30", context=None, cal=None, gpu_path=None):
    """Points (tokens/s per user, tokens/s per MW) for GPU only and GPU + LPU AFD, by batch."""
    from tinylpu.sim.serving.gpu import load_gpu
    model, chip = load_model(model), load_chip(chip)
    cal = cal or calibrate()
    gpu = load_gpu(gpu_path)
    pc = pareto_config()
    ctx = model["context"] if context is None else context
    b = model_bytes(model, ctx)
    gpu_w = gpu.p.get("power_w")
    if not gpu_w or not chip.get("power_w"):
        raise ProjectError("the Pareto plot needs power_w in the GPU config and in the chip config")
    # the LPU side holds the FFN / experts only (attention and KV stay on the GPUs)
    g, lpc, lchips, stages = _layout(chip, b["ffn_res"], model["layers"])
    lpu_deployed = math.ceil(lchips / chip["chips_per_node"]) * chip["chips_per_node"]
    out = {"gpu": [], "afd": [], "model": model["name"], "chip": chip["name"], "context": ctx,
           "lpu_chips": lpu_deployed}
    for B in pc["batches"]:
        for n in _gpu_counts(pc, _gpu_min(gpu, pc, model, b, B, ctx, True)):
            t = _gpu_step(gpu, pc, model, b, B, ctx, True, n)
            out["gpu"].append({"batch": B, "gpus": n, "step_s": t, "tps_user": 1 / t,
                               "tps_per_mw": B / t / (n * gpu_w / 1e6)})
        t_ffn = model["layers"] * (_segment_s(chip, cal, _ffn_chip_bytes(model, b, g, B), B)
                                   + _allreduce_s(chip, model, g, B))
        t_net = model["layers"] * 2 * (pc["net_hop_s"] + B * model["d_model"] * 2 / pc["net_bandwidth"])
        t_hops = stages * _stage_hop_s(chip, model, False, B) if g == 1 else 0.0
        for na in _gpu_counts(pc, _gpu_min(gpu, pc, model, b, B, ctx, False)):
            t = _gpu_step(gpu, pc, model, b, B, ctx, False, na) + t_ffn + t_net + t_hops
            # a layer's LPU chips are busy t_ffn / layers per step: M attention groups (each its own
            # batch) share one LPU pool, staggered by a layer, as long as the pool keeps up
            M = max(1, min(pc["max_attention_groups"], int(t // (t_ffn / model["layers"]))))
            power = M * na * gpu_w + lpu_deployed * chip["power_w"]
            out["afd"].append({"batch": B, "gpus": na, "groups": M, "lpu_chips": lpu_deployed, "step_s": t,
                               "tps_user": 1 / t, "tps_per_mw": M * B / t / (power / 1e6),
                               "lpu_power_share": lpu_deployed * chip["power_w"] / power})
    return out


def _best_at(points, target):
    """Highest tokens/s per MW among points that give each user at least `target` tokens/s."""
    ok = [p for p in points if p["tps_user"] >= target]
    return max(ok, key=lambda p: p["tps_per_mw"]) if ok else None




# ------------------------------------------------------------------------------------------
# fleet mix
# ------------------------------------------------------------------------------------------

def _max_rate(classes, eff_a, eff_g, Pa, Pg):
    """Largest total token rate R (tokens/s) such that class c gets share_c * R, served on the AFD
    pods (power Pa, efficiency eff_a[c] tokens/s per W) or on GPU-only pods (Pg, eff_g[c]).
    Fractional assignment over two resources: fill the AFD pods in order of comparative advantage."""
    order = sorted(range(len(classes)), key=lambda i: -(eff_a[i] / eff_g[i] if eff_g[i] else math.inf))

    def feasible(R):
        left_a, need_g = Pa, 0.0
        for i in order:
            demand = classes[i]["share"] * R
            if demand == 0:
                continue
            if eff_a[i] > 0:
                x = min(demand, left_a * eff_a[i])
                left_a -= x / eff_a[i]
                demand -= x
            if demand > 1e-12:
                if eff_g[i] <= 0:
                    return False
                need_g += demand / eff_g[i]
        return need_g <= Pg * (1 + 1e-9)

    hi = (Pa + Pg) * max(max(eff_a), max(eff_g)) + 1
    if not feasible(1e-9):
        return 0.0
    lo = 0.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if feasible(mid) else (lo, mid)
    return lo


def fleet(spec=None, cal=None, steps=100):
    spec = spec if isinstance(spec, dict) else load_fleet(spec)
    pp = pareto(spec["model"], spec["chip"], spec.get("context"), cal)
    classes = spec["classes"]
    P = spec["power_mw"] * 1e6
    eff_a, eff_g, ops = [], [], []
    for c in classes:
        a, g = _best_at(pp["afd"], c["tokens_per_s_per_user"]), _best_at(pp["gpu"], c["tokens_per_s_per_user"])
        eff_a.append(a["tps_per_mw"] / 1e6 if a else 0.0)
        eff_g.append(g["tps_per_mw"] / 1e6 if g else 0.0)
        ops.append({"class": c["name"], "target": c["tokens_per_s_per_user"],
                    "afd": a and {"batch": a["batch"], "tps_user": a["tps_user"], "tps_per_mw": a["tps_per_mw"]},
                    "gpu": g and {"batch": g["batch"], "tps_user": g["tps_user"], "tps_per_mw": g["tps_per_mw"]}})
    curve = []
    for i in range(steps + 1):
        f = i / steps
        R = _max_rate(classes, eff_a, eff_g, f * P, (1 - f) * P)
        share = _best_at(pp["afd"], max(c["tokens_per_s_per_user"] for c in classes)) or pp["afd"][0]
        curve.append({"afd_power_share": f, "tokens_per_s": R, "tokens_per_s_per_mw": R / spec["power_mw"],
                      "lpu_power_share": f * share["lpu_power_share"], "meets_targets": R > 0})
    best = max(curve, key=lambda p: p["tokens_per_s"])
    return {"spec": {k: v for k, v in spec.items() if k != "source"}, "source": spec["source"],
            "operating_points": ops, "curve": curve, "best": best, "pareto": pp}


# ------------------------------------------------------------------------------------------
# comparison with published figures
# ------------------------------------------------------------------------------------------

def compare(cal=None):
    cal = cal or calibrate()
    rows = []
    for p in published():
        r = project(p["chip"], p["model"], cal=cal)
        err = r["tokens_per_s_per_user"] / p["tokens_per_s_per_user"] - 1
        rows.append({**p, "projected": r["tokens_per_s_per_user"], "error": err, "chips": r["chips"],
                     "result": r})
    return rows
