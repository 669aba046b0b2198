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
from pathlib import Path

import numpy as np
import yaml

from tinylpu.sim.perf.project.inputs import (
    ProjectError,
    find_deployment,
    load_chip,
    load_fleet,
    load_gpu,
    load_model,
    pareto_config,
)
from tinylpu.sim.perf.project.vector import layer_vector_cycles

__all__ = [
    "CAL_SHAPES",
    "LAT_PATH",
    "Calibration",
    "calibrate",
    "deployment",
    "fleet",
    "frontier",
    "gpu_step",
    "model_bytes",
    "pareto",
    "project",
    "weight_bytes_per_cycle",
]


# ------------------------------------------------------------------------------------------
# calibration on the compiler's cycle-exact schedules
# ------------------------------------------------------------------------------------------

CAL_SHAPES = [  # (d_model, d_ff, gated, tokens)
    (64, 128, True, 1), (128, 128, False, 1), (64, 128, True, 4), (128, 256, True, 1),
]
LAT_PATH = ("mem_read", "mxm_install", "mxm_mm", "mxm_emit", "vxm_req", "mem_write")


#: the calibration's base chips: ``tiny`` and the FPGA chip's unit pipelines with 8 streams (the
#: shipped ``fpga`` is cut to 4 streams for the ECP5, docs/fpga.md; a scaled LPU has many streams)
_BASES = {"tiny": "tiny",
          "fpga": Path(__file__).resolve().parents[3] / "configs" / "synth" / "fpga-8s.yaml"}


def _variant(base, lanes, banks):
    from tinylpu.config import load_config, parse_config
    raw = copy.deepcopy(load_config(_BASES[base]).raw)
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
    """Bytes of weights the chip can stream into its MXMs per cycle: the published install rate
    (or planes x rows/cycle x lanes), capped by the SRAM read bandwidth."""
    sram = chip["sram_bandwidth"] / (chip["clock_mhz"] * 1e6)
    if chip.get("weight_install_bytes_per_cycle"):
        return min(sram, chip["weight_install_bytes_per_cycle"])
    if chip.get("weight_rows_per_cycle"):
        return min(sram, chip["mxm_planes"] * chip["weight_rows_per_cycle"] * chip["lanes"])
    return sram


def _hz(chip):
    return chip["clock_mhz"] * 1e6


def _stream_s(chip, cal, nbytes, par=1.0, tokens=1, bpw=1.0):
    """Seconds for `par` chips (at least one) to stream `nbytes` of weights at `bpw` bytes each through
    their MXMs at once for `tokens` tokens: the calibrated install rate, or the MAC rate when the
    batch makes it compute-bound (16-bit weights run at half the int8 MAC rate)."""
    if nbytes <= 0:
        return 0.0
    per = nbytes / max(1.0, par)
    L = chip["lanes"]
    stream = cal.a * per / weight_bytes_per_cycle(chip)
    compute = tokens * (per / bpw) / (chip["mxm_planes"] * L * L / max(1.0, bpw))
    return (max(stream, compute) + cal.c_tok * (min(tokens, L) - 1)) / _hz(chip)


def _fill_s(chip, cal):
    """The calibrated fill/drain of one matrix product whose input waits for the previous one."""
    return cal.fill(chip["pipeline_latency_cycles"], chip["mxm_to_vxm_slices"]) / _hz(chip)


def _peer_Bps(chip):
    """Payload bytes/s to one peer: raw link rate x line coding x framing x links per peer."""
    c = chip["c2c"]
    return c["link_gbps"] * 1e9 / 8 * c["encoding_efficiency"] * c["framing_efficiency"] * c["links_per_peer"]


def _hops(chip, g):
    c = chip["c2c"]
    return c["hops_within_node"] if g <= chip["chips_per_node"] else c["hops_across_nodes"]


def _allreduce_s(chip, model, g, tokens=1):
    """Reduce the partial sums of `g` chips and give every chip the result (reduce-scatter +
    all-gather, each chip exchanging 1/g of the vector with each peer at once)."""
    g = math.ceil(g - 1e-9)
    if g <= 1:
        return 0.0
    c = chip["c2c"]
    lat = 2 * _hops(chip, g) * c["hop_latency_ns"] * 1e-9
    ser = 2 * model["d_model"] * tokens * c["partial_bytes"] / g / _peer_Bps(chip)
    return lat + ser


def _hop_s(chip, model, across=False, tokens=1):
    """The activation vector of `tokens` tokens to the next chip (pipelined hops)."""
    c = chip["c2c"]
    hops = c["hops_across_nodes"] if across else c["hops_within_node"]
    return hops * c["hop_latency_ns"] * 1e-9 + model["d_model"] * tokens * c["activation_bytes"] / _peer_Bps(chip)


def deployment(chip, model, context=None):
    """The deployment of `model` on `chip` (configs/project/deployments.yaml), or the model's own
    defaults (its precision, the fewest chips that hold it, capacity-split layers)."""
    d = find_deployment(chip["name"], model["name"])
    if d is None:
        bw = model["bytes_per_weight"]
        d = {"chip": chip["name"], "model": model["name"], "chips": None, "context": model["context"],
             "precision": {"attention": bw, "ffn": bw, "kv": model["kv_bytes"], "embedding": bw},
             "tensor_parallel": None, "expert_parallel": None, "sources": {},
             "source": f"{model['source']} (no deployment: the model's precision, the fewest chips)"}
    d = dict(d)
    if context is not None:
        d["context"] = context
    return d


def model_bytes(model, context=None, precision=None):
    """Per-layer and total byte counts at the precision of each kind of tensor."""
    m = model
    ctx = m["context"] if context is None else context
    bw = m["bytes_per_weight"]
    pr = precision or {"attention": bw, "ffn": bw, "kv": m["kv_bytes"], "embedding": bw}
    d, E = m["d_model"], m["experts"]
    kv_dim = d // m["heads"] * m["kv_heads"]
    attn_p = d * (d + 2 * kv_dim) + d * d                         # QKV + O
    expert_p = (3 if m["gated"] else 2) * d * m["d_ff"]
    router_p = d * E if E > 1 else 0
    table_p = m["vocab"] * d
    out = dict(attn=attn_p * pr["attention"], kv=2 * ctx * kv_dim * pr["kv"], expert=expert_p * pr["ffn"],
               router=router_p * pr["ffn"], table=table_p * pr["embedding"], kv_dim=kv_dim, context=ctx,
               params=m["layers"] * (attn_p + expert_p * E + router_p) + 2 * table_p,
               active_params=m["layers"] * (attn_p + expert_p * m["top_k"] + router_p) + table_p)
    out["ffn_res"] = out["expert"] * E + out["router"]
    out["ffn_act"] = out["expert"] * m["top_k"] + out["router"]
    out["weight_bytes"] = m["layers"] * (out["attn"] + out["ffn_res"]) + 2 * out["table"]
    return out


def _placement(chip, model, b, dep):
    """Chips and parallel degrees: whole layers per chip when they fit, else a layer's matrices split
    over the chips it occupies (tensor parallel, all streaming at once), experts over chips of
    their own (expert parallel); consecutive layer groups form a pipeline."""
    L, E = model["layers"], model["experts"]
    usable = chip["sram_usable"] * chip["sram_bytes"]
    layer_res = b["attn"] + b["kv"] + b["ffn_res"]
    table_chips = math.ceil(b["table"] / usable)
    if dep["chips"]:
        layer_chips = dep["chips"] - 2 * table_chips
        if layer_chips <= 0 or layer_chips * chip["sram_bytes"] < L * layer_res:
            raise ProjectError(f"{dep['source']}: field 'chips': {dep['chips']} chips of {chip['sram_bytes']:,.0f} B "
                               f"cannot hold {L * layer_res + 2 * b['table']:,.0f} B of weights and KV")
        chips = dep["chips"]
    else:
        layer_chips = math.ceil(L * layer_res / usable)
        chips = layer_chips + 2 * table_chips
    g = layer_chips / L
    g_attn = g * (b["attn"] + b["kv"]) / layer_res
    g_ffn = g - g_attn
    tp = dep["tensor_parallel"]
    groups = min(E, dep["expert_parallel"] or E)
    out = {"chips": chips, "layer_chips": layer_chips, "table_chips": table_chips, "g": g,
           "n_attn": dep.get("n_attn") or tp or max(1.0, g_attn), "groups": groups}
    if E == 1:
        out["n_ffn"] = dep.get("n_ffn") or tp or max(1.0, g_ffn)
    else:
        out["n_ffn"] = tp or max(1.0, g_ffn / groups)          # chips streaming one expert at once
    out["stages"] = layer_chips if g < 1 else L
    return out


def _ffn_bytes(model, b, groups, tokens=1):
    """Expert bytes the busiest expert group streams for `tokens` tokens (dense: the FFN)."""
    E, k = model["experts"], model["top_k"]
    if E == 1:
        return b["ffn_act"] - b["router"]
    active = E * (1 - (1 - k / E) ** tokens)                    # distinct experts the batch touches
    busiest = min(math.ceil(E / groups), math.ceil(active / groups - 1e-9))
    return max(1, busiest) * b["expert"]


def project(chip, model, context=None, cal=None, tokens=1, vector=True, deploy=None):
    """Tokens/s per user at batch `tokens` (default 1), chips, energy: a dict (see module doc).
    `deploy` overrides fields of the deployment (chips, precision, tensor_parallel, ...)."""
    chip, model = load_chip(chip), load_model(model)
    cal = cal or calibrate()
    dep = deployment(chip, model, context)
    if deploy:
        dep.update(deploy)
    pr = dep["precision"]
    b = model_bytes(model, dep["context"], pr)
    L, E = model["layers"], model["experts"]
    pl = _placement(chip, model, b, dep)
    na, nf = pl["n_attn"], pl["n_ffn"]
    per_node = chip["chips_per_node"]
    # streaming, per layer
    t_attn = L * _stream_s(chip, cal, b["attn"] + b["kv"], na, tokens, max(pr["attention"], pr["kv"]))
    t_ffn = L * (_stream_s(chip, cal, _ffn_bytes(model, b, pl["groups"], tokens), nf, tokens, pr["ffn"])
                 + _stream_s(chip, cal, b["router"], 1, tokens, pr["ffn"]))
    stages = 6 + (1 if E > 1 else 0)          # QKV, q K^T, P V, O, W1/W3, W2 (+ router): each waits
    t_fill = L * stages * _fill_s(chip, cal)
    # vector work between them, compiled for this chip's shard of the layer
    nah = max(1, math.ceil(na - 1e-9))
    shard = (model["d_model"] / nah, b["kv_dim"] / nah, math.ceil(model["heads"] / nah))
    vec_cycles = layer_vector_cycles(chip, model, shard, dep["context"]) if vector else 0
    t_vec = L * tokens * vec_cycles / _hz(chip)
    # C2C: all-reduces inside a layer, MoE dispatch and combine, pipeline hops between layers
    t_coll = L * (_allreduce_s(chip, model, na, tokens) + (_allreduce_s(chip, model, nf, tokens) if E == 1 else 0))
    if E > 1:
        t_coll += L * (_hop_s(chip, model, pl["g"] > per_node, tokens)
                       + _allreduce_s(chip, model, model["top_k"] * nf, tokens))
    n_hops = pl["stages"] + 1                                    # embedding -> layers ... -> LM head
    nodes_layers = math.ceil(pl["layer_chips"] / per_node)
    across = n_hops if pl["g"] >= per_node else min(n_hops, nodes_layers)
    t_hops = (n_hops - across) * _hop_s(chip, model, False, tokens) + across * _hop_s(chip, model, True, tokens)
    t_embed = _stream_s(chip, cal, model["d_model"] * pr["embedding"], 1, tokens, pr["embedding"])
    t_head = _stream_s(chip, cal, b["table"], pl["table_chips"], tokens, pr["embedding"]) + _fill_s(chip, cal)
    t = t_attn + t_ffn + t_fill + t_vec + t_coll + t_hops + t_embed + t_head
    host = [x * 1e-6 for x in chip["host_overhead_us"]]
    nodes = math.ceil(pl["chips"] / per_node)
    g = pl["g"]
    out = {
        "chip": chip["name"], "model": model["name"], "context": b["context"], "tokens": tokens,
        "params": b["params"], "active_params": b["active_params"],
        "weight_bytes": b["weight_bytes"], "kv_bytes_per_user": b["kv"] * L,
        "precision": dict(pr), "deployment": dep["source"],
        "chips": pl["chips"], "chips_per_layer": round(g, 3), "layers_per_chip": round(1 / g, 3) if g < 1 else 1,
        "pipeline_stages": pl["stages"],
        "parallel": {"pipeline_stages": pl["stages"], "tensor_parallel_attention": round(na, 3),
                     "tensor_parallel_ffn": round(nf, 3), "expert_parallel": pl["groups"] if E > 1 else 1},
        "nodes": nodes, "chips_deployed": nodes * per_node,
        "weight_bytes_per_cycle": weight_bytes_per_cycle(chip),
        "vector_cycles_per_layer": vec_cycles,
        "time_per_token_s": t, "tokens_per_s_per_user": 1 / t,
        "breakdown_s": {"attention (weights + KV streamed)": t_attn, "FFN / experts streamed": t_ffn,
                        "matmul fill/drain": t_fill, "vector work (compiled)": t_vec,
                        "all-reduce over C2C": t_coll, "pipeline hops over C2C": t_hops,
                        "embedding + LM head": t_embed + t_head},
        "host_overhead_s": host,
        "tokens_per_s_per_user_with_host": [1 / (t + host[1]), 1 / (t + host[0])],
        "fill_s_per_segment": _fill_s(chip, cal), "segments": L * stages + 2,
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
# Pareto: GPU-only racks vs Vera Rubin NVL72 + LPX (attention-FFN disaggregation)
# ------------------------------------------------------------------------------------------

def _gpu_layer_s(g, model, b, B, ctx, n, with_ffn):
    """One decoder layer of B users on n GPUs (tensor / expert parallel in one NVLink domain):
    roofline over HBM bytes and flops, per-kernel overhead, NVLink collectives."""
    d, E, k = model["d_model"], model["experts"], model["top_k"]
    attn_p = b["attn"] / max(1e-9, _attn_bpw(b, model))
    nbytes = attn_p * g["weight_bytes"] + B * 2 * ctx * b["kv_dim"] * g["kv_bytes"]
    flops = 2 * B * attn_p + 4 * B * ctx * d
    ncoll = 1
    if with_ffn:
        expert_p = (3 if model["gated"] else 2) * d * model["d_ff"]
        active = E * (1 - (1 - k / E) ** B) if E > 1 else 1
        nbytes += max(1.0, active) * expert_p * g["weight_bytes"]
        flops += 2 * B * k * expert_p
        ncoll = 2
    t = max(nbytes / (n * g["hbm_bandwidth"] * g["hbm_efficiency"]), flops / (n * g["flops"] * g["flops_efficiency"]))
    t += g["kernels_per_layer"] * g["kernel_overhead_s"]
    if n > 1:
        t += ncoll * (g["collective_latency_s"] + B * d * 2 / g["nvlink_bandwidth"])
    return t


def _attn_bpw(b, model):
    d = model["d_model"]
    return b["attn"] / (d * (d + 2 * b["kv_dim"]) + d * d)


def _gpu_head_s(g, model, B, n):
    p = model["vocab"] * model["d_model"]
    return max(p * g["weight_bytes"] / (n * g["hbm_bandwidth"] * g["hbm_efficiency"]),
               2 * B * p / (n * g["flops"] * g["flops_efficiency"])) + g["kernel_overhead_s"]


def gpu_step(g, model, b, B, ctx, n, with_ffn=True):
    """Seconds for one decode step of B users on n GPUs of rack `g`."""
    return model["layers"] * _gpu_layer_s(g, model, b, B, ctx, n, with_ffn) + _gpu_head_s(g, model, B, n)


def _gpu_min(g, model, b, B, ctx, with_ffn):
    """Fewest GPUs whose usable HBM holds the weights and B users' KV."""
    L, d = model["layers"], model["d_model"]
    attn_p = b["attn"] / max(1e-9, _attn_bpw(b, model))
    w = L * attn_p + 2 * model["vocab"] * d
    if with_ffn:
        w += L * ((3 if model["gated"] else 2) * d * model["d_ff"] * model["experts"] + d * model["experts"])
    kv = B * L * 2 * ctx * b["kv_dim"] * g["kv_bytes"]
    return math.ceil((w * g["weight_bytes"] + kv) / (g["hbm_usable"] * g["hbm_bytes"]))


def _gpu_counts(n_min, n_max):
    out, n = [], n_min
    while n <= n_max:
        out.append(n)
        n *= 2
    if out and out[-1] != n_max and n_min <= n_max:
        out.append(n_max)
    return out


def frontier(points):
    """The Pareto-efficient points: none faster per user and more efficient per MW."""
    best, out = -1.0, []
    for p in sorted(points, key=lambda p: (-p["tps_user"], -p["tps_per_mw"])):
        if p["tps_per_mw"] > best:
            out.append(p)
            best = p["tps_per_mw"]
    return sorted(out, key=lambda p: p["tps_user"])


def pareto(model=None, chip=None, context=None, cal=None, config=None):
    """Points (tokens/s per user, tokens/s per MW) by batch: each GPU-only rack of
    configs/project/pareto.yaml, and Rubin + LPX (GPU attention, LP30 FFN / experts)."""
    pc = config or pareto_config()
    model, chip = load_model(model or pc["model"]), load_chip(chip or pc["chip"])
    cal = cal or calibrate()
    ctx = pc["context"] if context is None else context
    b = model_bytes(model, ctx, {"attention": 1, "ffn": 1, "kv": 1, "embedding": 1})
    L = model["layers"]
    out = {"model": model["name"], "chip": chip["name"], "context": ctx, "gpu_only": {}, "afd": []}
    for name in pc["gpu_only"]:
        g = load_gpu(name)
        w_gpu = g["rack_power_w"] / g["gpus_per_rack"]
        pts = []
        for B in pc["batches"]:
            n_min = _gpu_min(g, model, b, B, ctx, True)
            for n in _gpu_counts(n_min, min(pc["max_gpus"], g["gpus_per_rack"])):
                t = gpu_step(g, model, b, B, ctx, n, True)
                pts.append({"batch": B, "gpus": n, "step_s": t, "tps_user": 1 / t,
                            "tps_per_mw": B / t / (n * w_gpu / 1e6)})
        out["gpu_only"][name] = pts
    # Rubin + LPX: the LPX pool holds the FFN / experts (attention and KV stay on the GPUs)
    g = load_gpu(pc["afd_gpu"])
    w_gpu = g["rack_power_w"] / g["gpus_per_rack"]
    usable = chip["sram_usable"] * chip["sram_bytes"]
    lchips = math.ceil(L * b["ffn_res"] / usable)
    lpu = math.ceil(lchips / chip["chips_per_node"]) * chip["chips_per_node"]
    w_lpu = pc["lpx_rack_power_w"] / (chip["chips_per_node"] * (chip.get("nodes_per_rack") or 1))
    gl = lchips / L
    E = model["experts"]
    groups = E
    nf = max(1.0, gl / groups) if E > 1 else max(1.0, gl)
    out["lpu_chips"] = lpu
    for B in pc["batches"]:
        t_ffn_layer = (_stream_s(chip, cal, _ffn_bytes(model, b, groups, B), nf, B, 1)
                       + _stream_s(chip, cal, b["router"], 1, B, 1) + 2 * _fill_s(chip, cal)
                       + _allreduce_s(chip, model, model["top_k"] * nf if E > 1 else nf, B))
        t_net = 2 * (pc["net_hop_s"] + B * model["d_model"] * 2 / pc["net_bandwidth"])
        for na in _gpu_counts(_gpu_min(g, model, b, B, ctx, False), min(pc["max_gpus"], g["gpus_per_rack"])):
            t = L * (_gpu_layer_s(g, model, b, B, ctx, na, False) + t_ffn_layer + t_net) + _gpu_head_s(g, model, B, na)
            # the LPX pool is busy t_ffn_layer per layer: M attention groups (each its own batch)
            # share it, staggered by a layer, as long as it keeps up
            M = max(1, min(pc["max_attention_groups"], int(t // (L * t_ffn_layer))))
            power = M * na * w_gpu + lpu * w_lpu
            out["afd"].append({"batch": B, "gpus": na, "groups": M, "lpu_chips": lpu, "step_s": t,
                               "tps_user": 1 / t, "tps_per_mw": M * B / t / (power / 1e6),
                               "lpu_power_share": lpu * w_lpu / power})
    out["gpu"] = out["gpu_only"][pc["afd_gpu"]] if pc["afd_gpu"] in out["gpu_only"] else \
        out["gpu_only"][pc["gpu_only"][-1]]
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
