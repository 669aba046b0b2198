"""Full-scale projection: an analytical model of an LPU deployment, calibrated on the compiler.

``tinylpu project --chip NAME|FILE --model NAME|FILE [--json]`` answers: how many chips does the
model need, how many tokens/s does one user get at batch 1, and what does a token cost in energy.
The method (docs/projection.md):

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
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

__all__ = ["ProjectError", "load_chip", "load_model", "load_fleet", "shipped", "calibrate", "project",
           "pareto", "frontier", "fleet", "compare", "main"]


class ProjectError(ValueError):
    """A projection input is wrong: the message names the file and the field."""


# ------------------------------------------------------------------------------------------
# configuration files
# ------------------------------------------------------------------------------------------

_NUM = (int, float)
# field -> (types, required, lo, hi)
CHIP_FIELDS = {
    "name": (str, True, None, None), "description": (str, False, None, None),
    "lanes": (int, True, 1, 65536), "mxm_planes": (int, True, 1, 1024), "clock_mhz": (_NUM, True, 1, 1e5),
    "sram_bytes": (_NUM, True, 1, 1e15), "mem_slices": (int, False, 1, 1e6),
    "sram_bandwidth": (_NUM, False, 1, 1e18), "weight_rows_per_cycle": (int, False, 1, 65536),
    "mxm_to_vxm_slices": (int, True, 0, 1e5), "pipeline_latency_cycles": (int, True, 0, 1e5),
    "sram_usable": (_NUM, True, 0.01, 1.0), "chips_per_node": (int, True, 1, 1e6),
    "nodes_per_rack": (int, False, 1, 1e6), "c2c": (dict, True, None, None),
    "power_w": (_NUM, False, 0, 1e7),
}
C2C_FIELDS = {
    "links": (int, True, 1, 1e4), "link_gbps": (_NUM, True, 0.001, 1e6), "links_per_peer": (int, True, 1, 1e4),
    "hop_latency_ns": (_NUM, True, 0, 1e9), "hops_within_node": (int, True, 0, 100),
    "hops_across_nodes": (int, True, 0, 100), "partial_bytes": (int, True, 1, 16),
    "activation_bytes": (int, True, 1, 16),
}
MODEL_FIELDS = {
    "name": (str, True, None, None), "description": (str, False, None, None),
    "layers": (int, True, 1, 1e5), "d_model": (int, True, 1, 1e7), "d_ff": (int, True, 1, 1e8),
    "heads": (int, True, 1, 1e5), "kv_heads": (int, True, 1, 1e5), "vocab": (int, True, 1, 1e8),
    "experts": (int, False, 1, 1e6), "top_k": (int, False, 1, 1e6), "bytes_per_weight": (_NUM, False, 0.125, 8),
    "kv_bytes": (_NUM, False, 0.125, 8), "context": (int, False, 0, 1e9), "gated": (bool, False, None, None),
}
MODEL_DEFAULTS = {"experts": 1, "top_k": 1, "bytes_per_weight": 1, "kv_bytes": 1, "context": 2048, "gated": True,
                  "description": ""}
CHIP_DEFAULTS = {"mem_slices": None, "sram_bandwidth": None, "weight_rows_per_cycle": None, "power_w": None,
                 "nodes_per_rack": None, "description": ""}


def _root():
    return resources.files("tinylpu.configs").joinpath("project")


def shipped(kind):
    """Names of the shipped chip (kind "chips") or model ("models") configs."""
    d = _root().joinpath(kind)
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".yaml"))


def _read(kind, name_or_path):
    p = Path(str(name_or_path))
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ProjectError(f"{p}: file not found")
        return str(p), p.read_text()
    f = _root().joinpath(kind, f"{name_or_path}.yaml")
    if not f.is_file():
        what = kind[:-1]
        raise ProjectError(f"unknown {what} {name_or_path!r}; shipped {kind}: {', '.join(shipped(kind))} "
                           f"(or give a path to a .yaml file)")
    return f"configs/project/{kind}/{name_or_path}.yaml", f.read_text()


def _parse(src, text):
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ProjectError(f"{src}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(d, dict):
        raise ProjectError(f"{src}: the top level must be a mapping of fields")
    return d


def _check(src, d, fields, prefix=""):
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ProjectError(f"{src}: field '{prefix}{unknown[0]}': unknown; allowed fields are "
                           f"{', '.join(sorted(fields))}")
    for k, (types, req, lo, hi) in fields.items():
        if k not in d or d[k] is None:
            if req:
                raise ProjectError(f"{src}: field '{prefix}{k}': missing (required)")
            continue
        v = d[k]
        ok = isinstance(v, types) and not (isinstance(v, bool) and types is not bool)
        if not ok:
            tn = types.__name__ if isinstance(types, type) else "number"
            raise ProjectError(f"{src}: field '{prefix}{k}': must be a {tn}, got {v!r}")
        if lo is not None and not lo <= v <= hi:
            raise ProjectError(f"{src}: field '{prefix}{k}': must be in [{lo:g}, {hi:g}], got {v!r}")


def load_chip(name_or_path):
    if isinstance(name_or_path, dict):
        return name_or_path
    src, text = _read("chips", name_or_path)
    d = _parse(src, text)
    _check(src, d, CHIP_FIELDS)
    _check(src, d["c2c"], C2C_FIELDS, "c2c.")
    if d.get("sram_bandwidth") is None and d.get("mem_slices") is None:
        raise ProjectError(f"{src}: field 'sram_bandwidth': give it, or 'mem_slices' to derive it")
    out = {**CHIP_DEFAULTS, **d, "source": src}
    if out["sram_bandwidth"] is None:
        out["sram_bandwidth"] = out["mem_slices"] * out["lanes"] * out["clock_mhz"] * 1e6
    return out


def load_model(name_or_path):
    if isinstance(name_or_path, dict):
        return name_or_path
    src, text = _read("models", name_or_path)
    d = _parse(src, text)
    _check(src, d, MODEL_FIELDS)
    out = {**MODEL_DEFAULTS, **d, "source": src}
    if out["top_k"] > out["experts"]:
        raise ProjectError(f"{src}: field 'top_k': {out['top_k']} is more than the {out['experts']} experts")
    if out["heads"] % out["kv_heads"]:
        raise ProjectError(f"{src}: field 'kv_heads': {out['kv_heads']} does not divide heads {out['heads']}")
    if out["d_model"] % out["heads"]:
        raise ProjectError(f"{src}: field 'heads': {out['heads']} does not divide d_model {out['d_model']}")
    return out


def _aux(name):
    f = _root().joinpath(name)
    return f"configs/project/{name}", f.read_text()


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
# text output
# ------------------------------------------------------------------------------------------

def _fmt_bytes(n):
    for unit, s in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= s:
            return f"{n / s:.2f} {unit}"
    return f"{n:.0f} B"


def describe(r):
    lines = [f"{r['model']} on {r['chip']} (context {r['context']} tokens, batch 1)",
             f"  parameters        {r['params'] / 1e9:.1f} B ({r['active_params'] / 1e9:.1f} B active per token), "
             f"weights {_fmt_bytes(r['weight_bytes'])}, KV of one user {_fmt_bytes(r['kv_bytes_per_user'])}",
             f"  chips             {r['chips']} ({r['chips_per_layer']} per layer, {r['layers_per_chip']} layers per "
             f"chip, {r['pipeline_stages']} pipeline stages); {r['nodes']} nodes = {r['chips_deployed']} chips deployed",
             f"  weight rate       {r['weight_bytes_per_cycle']:,.0f} B/cycle per chip",
             f"  time per token    {r['time_per_token_s'] * 1e6:,.1f} us",
             f"  tokens/s per user {r['tokens_per_s_per_user']:,.0f}"]
    for k, v in r["breakdown_s"].items():
        lines.append(f"    {k:34s} {v * 1e6:10,.1f} us ({v / r['time_per_token_s']:5.1%})")
    if "energy_per_token_j" in r:
        lines.append(f"  power             {r['power_w'] / 1e3:,.1f} kW for the deployed chips; "
                     f"{r['energy_per_token_j']:.2f} J per token at batch 1")
    return "\n".join(lines)


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


def _pareto_cfg():
    src, text = _aux("pareto.yaml")
    d = _parse(src, text)
    for k in ("batches", "allreduce_s", "hbm_usable", "net_hop_s", "net_bandwidth", "max_gpus",
              "max_attention_groups"):
        if k not in d:
            raise ProjectError(f"{src}: field '{k}': missing (required)")
    return d


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
    pc = _pareto_cfg()
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


def plot_pareto(pp, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label, mk in (("gpu", "GPU only (Rubin roofline, sim/serving/gpu.py)", "o"),
                           ("afd", f"GPU attention + {pp['chip']} FFN/experts (AFD)", "s")):
        ax.scatter([p["tps_user"] for p in pp[key]], [p["tps_per_mw"] for p in pp[key]], s=6, alpha=0.3)
        pts = frontier(pp[key])
        ax.plot([p["tps_user"] for p in pts], [p["tps_per_mw"] for p in pts], marker=mk, label=label)
        for p in pts:
            ax.annotate(str(p["batch"]), (p["tps_user"], p["tps_per_mw"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens/s per user")
    ax.set_ylabel("tokens/s per MW")
    ax.set_title(f"{pp['model']}, context {pp['context']:,}: frontier, batch size at each point", fontsize=9)
    ax.axvline(400, color="grey", lw=0.6, ls=":")
    ax.axvline(1000, color="grey", lw=0.6, ls=":")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------
# fleet mix
# ------------------------------------------------------------------------------------------

def load_fleet(path=None):
    if path is None:
        src, text = _aux("fleet.yaml")
    else:
        p = Path(path)
        if not p.exists():
            raise ProjectError(f"{path}: file not found")
        src, text = str(p), p.read_text()
    d = _parse(src, text)
    for k in ("classes", "power_mw"):
        if k not in d:
            raise ProjectError(f"{src}: field '{k}': missing (required)")
    if not isinstance(d["power_mw"], _NUM) or d["power_mw"] <= 0:
        raise ProjectError(f"{src}: field 'power_mw': must be a positive number, got {d['power_mw']!r}")
    if not isinstance(d["classes"], list) or not d["classes"]:
        raise ProjectError(f"{src}: field 'classes': must be a non-empty list")
    for i, c in enumerate(d["classes"]):
        for k in ("name", "share", "tokens_per_s_per_user"):
            if not isinstance(c, dict) or k not in c:
                raise ProjectError(f"{src}: field 'classes[{i}].{k}': missing (required)")
        if not isinstance(c["share"], _NUM) or not 0 <= c["share"] <= 1:
            raise ProjectError(f"{src}: field 'classes[{i}].share': must be in [0, 1], got {c['share']!r}")
        if not isinstance(c["tokens_per_s_per_user"], _NUM) or c["tokens_per_s_per_user"] <= 0:
            raise ProjectError(f"{src}: field 'classes[{i}].tokens_per_s_per_user': must be a positive number")
    tot = sum(c["share"] for c in d["classes"])
    if abs(tot - 1) > 1e-6:
        raise ProjectError(f"{src}: field 'classes': shares sum to {tot:g}, not 1")
    d.setdefault("model", "moe-2t")
    d.setdefault("chip", "lp30")
    d["source"] = src
    return d


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


def plot_fleet(fr, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = [p["afd_power_share"] * 100 for p in fr["curve"]]
    ys = [p["tokens_per_s_per_mw"] for p in fr["curve"]]
    ax.plot(xs, ys, marker="o", ms=3)
    b = fr["best"]
    ax.plot([b["afd_power_share"] * 100], [b["tokens_per_s_per_mw"]], "r*", ms=12,
            label=f"best: {b['afd_power_share']:.0%} of the power to AFD pods "
                  f"({b['lpu_power_share']:.0%} to LPUs)")
    ax.axvline(25, color="grey", ls=":", lw=0.8, label="published commentary: ~25 % LPU")
    ax.set_xlabel("share of the power budget in GPU + LPU (AFD) pods (%)")
    ax.set_ylabel("tokens/s per MW (whole mix, every class at its target)")
    ax.set_title(f"Fleet mix: {fr['spec']['model']}, {fr['spec']['power_mw']} MW")
    ax.legend(fontsize=8)
    ax.grid(True, lw=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def describe_fleet(fr):
    s = fr["spec"]
    lines = [f"fleet {fr['source']}: {s['model']} on {s['chip']} + GPUs, {s['power_mw']} MW, context "
             f"{fr['pareto']['context']:,}",
             "  class        share  target tok/s/user   AFD: batch, tok/s/user, tok/s/MW     GPU only: batch, tok/s/user, tok/s/MW"]
    for c, o in zip(s["classes"], fr["operating_points"]):
        def f(x):
            return f"{x['batch']:5d} {x['tps_user']:9,.0f} {x['tps_per_mw']:12,.0f}" if x else "   cannot meet the target   "
        lines.append(f"  {c['name']:12s} {c['share']:5.2f} {c['tokens_per_s_per_user']:10,.0f}          "
                     f"{f(o['afd'])}       {f(o['gpu'])}")
    b = fr["best"]
    lines.append(f"  best split: {b['afd_power_share']:.0%} of the power in AFD pods ({b['lpu_power_share']:.1%} in "
                 f"LPU chips), {b['tokens_per_s_per_mw']:,.0f} tokens/s per MW for the whole mix")
    g0 = fr["curve"][0]
    lines.append(f"  GPU only: {g0['tokens_per_s_per_mw']:,.0f} tokens/s per MW"
                 + ("" if g0["meets_targets"] else " (cannot meet every class's target)"))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# comparison with published figures and docs/projection.md
# ------------------------------------------------------------------------------------------

def published():
    src, text = _aux("published.yaml")
    return yaml.safe_load(text)


def compare(cal=None):
    cal = cal or calibrate()
    rows = []
    for p in published():
        r = project(p["chip"], p["model"], cal=cal)
        err = r["tokens_per_s_per_user"] / p["tokens_per_s_per_user"] - 1
        rows.append({**p, "projected": r["tokens_per_s_per_user"], "error": err, "chips": r["chips"],
                     "result": r})
    return rows


def write_doc(path="docs/projection.md", cal=None):
    cal = cal or calibrate()
    docs = Path(path).parent
    rows = compare(cal)
    pp = pareto(cal=cal)
    plot_pareto(pp, docs / "projection_pareto.png")
    fr = fleet(cal=cal)
    plot_fleet(fr, docs / "fleet.png")
    text = render_doc(cal, rows, pp, fr)
    Path(path).write_text(text)
    return text


def render_doc(cal, rows, pp, fr):
    from tinylpu.sim.serving.gpu import load_gpu
    gpu = load_gpu()
    pc = _pareto_cfg()
    L = []
    w = L.append
    w("# Full-scale projection")
    w("")
    w("Written by `tinylpu project --compare -o docs/projection.md` (`sim/project.py`), which also draws "
      "`projection_pareto.png` and `fleet.png`. Chip configs: `configs/project/chips/`, model configs: "
      "`configs/project/models/`, published figures: `configs/project/published.yaml`, fleet mix: "
      "`configs/project/fleet.yaml`, Pareto settings: `configs/project/pareto.yaml`. One projection: "
      "`tinylpu project --chip tsp-v1 --model llama-2-70b [--json]`.")
    w("")
    w("## Calibration: the compiler's schedules of the scaled chip")
    w("")
    w(f"`calibrate()` compiles {len(cal.points)} FFN layers with `firmware/compiler.py` on variants of the "
      "`tiny` chip: lanes 16 and 32, 8/16/32 MEM banks (so the MXM-to-VXM distance is 6, 10 or 18 slices), the "
      "`tiny` and `fpga` latency sets, GELU and SwiGLU, 1 and 4 tokens. A least-squares fit of the predicted "
      "cycles (which equal the golden model's and the RTL's) gives")
    w("")
    w(f"    cycles = {cal.a:g} x weight_rows / rows_per_cycle + {cal.c0:g} + {cal.c_lat:g} x latency_path "
      f"+ {cal.c_dist:g} x mxm_to_vxm + {cal.c_tok:g} x (tokens - 1)")
    w("")
    w(f"with a largest residual of {cal.max_residual:g} cycles over all {len(cal.points)} layers. A weight row is "
      "`lanes` bytes; `latency_path` = mem_read + mxm_install + mxm_mm + mxm_emit + vxm_req + mem_write (the "
      "pipeline a vector crosses from the weight bank through the MXM and VXM back to MEM). What it says:")
    w("")
    w("- **Lanes.** Cycles depend on the layer only through its weight rows: a layer of R x C int8 weights is "
      "ceil(R/lanes) x ceil(C/lanes) tiles of `lanes` rows, so doubling the lanes halves the cycles of the same "
      "layer (lanes 32 runs the 128 x 256 SwiGLU in 3099 cycles, lanes 16 in 6171). Time per byte is fixed by "
      "the install rate, not by the MAC count: at batch 1 an L x L MXM does L^2 MACs per L-byte row, so its "
      "utilization is 1/L whatever L is.")
    w("- **MXM size and count.** The compiler drives one MXM installing one row per cycle (`LW`), so the fitted "
      "`a` is per MXM plane. A chip with P planes and r rows per cycle per plane streams P x r x lanes bytes per "
      "cycle when the layer's output tiles are spread over the planes — the same split the tray compiler makes "
      "over chips (docs/tray.md), measured there without the C2C cost. The projection divides the row count by "
      "P x r and caps the rate at the SRAM read bandwidth.")
    w("- **Fill and drain.** The constant, latency and distance terms are the pipeline fill/drain of one "
      "segment: the first weight row's trip to the MXM and the last result's trip through the VXM back to MEM. "
      "They scale with the unit latencies (1 cycle per cycle of the path) and with the floorplan (1 cycle per "
      "slice between MXM and VXM). At full scale they are tens of nanoseconds per segment.")
    w("- **Tokens.** Up to `lanes` tokens add about one cycle each: a batch rides along the weight stream.")
    w("")
    w("## The model")
    w("")
    w("- **Placement by capacity.** Per layer the resident bytes are the attention weights (Q, K, V, O), the FFN "
      "or all experts plus the router, and one user's KV cache at the model's `context`. A layer that fits "
      "`sram_usable` x SRAM shares a chip with its neighbours (whole layers per chip, a pipeline of stages); a "
      "larger layer is split over g chips (tensor parallel for dense matrices, expert parallel for experts). The "
      "embedding table and the LM head get chips of their own. `chips` is that count; `chips_deployed` rounds "
      "up to whole nodes (8 chips per GroqNode or LPX tray).")
    w("- **Attention is matrix-vector work.** At batch 1, q K^T installs the cached K rows as MXM weights and "
      "multiplies q through them; the probabilities multiply the installed V rows. The KV cache is therefore "
      "streamed like weights (2 x context x kv_dim bytes per layer per token) and occupies SRAM like weights. "
      "Grouped-query heads of one KV head ride along as extra 'tokens' of the same installed K/V (about one "
      "cycle each). Softmax and norms are VXM work inside the segment's pipeline.")
    w("- **Time per token.** Each layer is two segments (attention, FFN). A segment's busiest chip streams its "
      "bytes at `weight_bytes_per_cycle` = min(planes x rows/cycle x lanes, SRAM bytes/cycle), with the "
      "calibrated efficiency `a`, plus one calibrated fill. A split layer adds an all-reduce per segment: "
      "2 x hops x hop latency plus int32 partials (d_model x 4 B, 1/g to each peer) over the links to a peer. "
      "Consecutive pipeline stages add a hop plus the int8 activation vector over the links to the next chip. "
      "MoE at batch 1 streams only the top-k experts (on different chips of the layer's group, in parallel); "
      "routing imbalance is not modelled.")
    w("- **Energy.** Every deployed chip draws `power_w` (when the chip config gives it) for the whole token: "
      "energy per token at batch 1 = chips_deployed x power_w x time per token.")
    w("")
    w("### Knobs and why they have their values")
    w("")
    w("| knob | TSP v1 | LP30 | physical basis |")
    w("|---|---|---|---|")
    w("| SRAM bandwidth | 88 slices x 320 B x 900 MHz = 25.3 TB/s | 150 TB/s | TSP: tinylpu's bank rule (one "
      "vector read per MEM slice per cycle) on the published 88 slices; LP30: published |")
    w("| weight rows per cycle per plane | 16 | sized to SRAM | TSP: half of the 32 streams of one direction per "
      "plane (two planes per hemisphere); tinylpu's own MXM takes 1. LP30: no stream count is published; the "
      "install path is assumed to keep up with the published SRAM bandwidth |")
    w("| clock | 900 MHz | 1.465 GHz | TSP: published; LP30: 1.2 PFLOPS fp8 / (2 x 4 planes x 320 x 320) |")
    w("| fill path | 16 cycles, 46 slices | same | tinylpu `tiny` unit latencies; TSP v1 hemisphere (MXM, SXM, "
      "44 MEM slices, VXM) |")
    w("| SRAM usable | 0.9 | 0.9 | headroom for activations, requantization tables, programs |")
    w("| C2C hop latency | 250 ns | 250 ns | SerDes PHY, FEC and framing per hop (not published); tinylpu's own "
      "link layer adds 16-20 cycles (docs/c2c.md) |")
    w("| link bandwidth to a peer | 1 x 120 Gb/s | 6 x 112 Gb/s | TSP: 4 lanes x 30 Gb/s, one local link per "
      "peer; LP30: 96 links, half assumed in-tray over 7 peers |")
    w("| hops across nodes | 3 | 2 | TSP Dragonfly (local, global, local); LPX tray + spine |")
    w("| power | 300 W | 400 W | TSP: reported at launch; LP30: not published, assumed |")
    w("")
    w("None of these was tuned to the published tokens/s below.")
    w("")
    w("## Against published figures")
    w("")
    w("| chip | model | chips (deployed) | projected tok/s per user | published | error | time per token: "
      "largest share |")
    w("|---|---|---|---|---|---|---|")
    for r in rows:
        res = r["result"]
        big = max(res["breakdown_s"].items(), key=lambda kv: kv[1])
        pub = f"{'>= ' if r.get('at_least') else '~'}{r['tokens_per_s_per_user']:,}"
        err = (f"{r['error']:+.0%}" if not r.get("at_least") else
               ("meets it" if r["projected"] >= r["tokens_per_s_per_user"] else f"{r['error']:+.0%}"))
        w(f"| {r['chip']} | {r['model']} | {res['chips']} ({res['chips_deployed']}) | {r['projected']:,.0f} | {pub} | "
          f"{err} | {big[0]} {big[1] / res['time_per_token_s']:.0%} |")
    w("")
    w("Breakdown of one token (us):")
    w("")
    keys = list(rows[0]["result"]["breakdown_s"])
    w("| chip | model | " + " | ".join(keys) + " | total | energy per token (J) |")
    w("|---|---|" + "---|" * (len(keys) + 2))
    for r in rows:
        res = r["result"]
        e = f"{res['energy_per_token_j']:.2f}" if "energy_per_token_j" in res else "-"
        w(f"| {r['chip']} | {r['model']} | " + " | ".join(f"{res['breakdown_s'][k] * 1e6:,.1f}" for k in keys)
          + f" | {res['time_per_token_s'] * 1e6:,.1f} | {e} |")
    w("")
    w("Sensitivity (not used above; brackets, not fits): the same TSP v1 projections with tinylpu's own MXM "
      "install rate (1 row per cycle per plane) and with fp16 weights and KV (2 bytes):")
    w("")
    w("| model | published | as above (16 rows/cycle, int8) | 1 row/cycle, int8 | 16 rows/cycle, fp16 | "
      "1 row/cycle, fp16 |")
    w("|---|---|---|---|---|---|")
    for r in rows:
        if r["chip"] != "tsp-v1":
            continue
        ch = load_chip(r["chip"])
        mo = load_model(r["model"])
        vals = []
        for rows_pc, bpw in ((16, 1), (1, 1), (16, 2), (1, 2)):
            c2 = dict(ch, weight_rows_per_cycle=rows_pc)
            m2 = dict(mo, bytes_per_weight=bpw, kv_bytes=bpw)
            p2 = project(c2, m2, cal=cal)
            vals.append(f"{p2['tokens_per_s_per_user']:,.0f} ({p2['tokens_per_s_per_user'] / r['tokens_per_s_per_user'] - 1:+.0%}, "
                        f"{p2['chips']} chips)")
        w(f"| {r['model']} | ~{r['tokens_per_s_per_user']:,} | " + " | ".join(vals) + " |")
    w("")
    w("What the errors say:")
    w("")
    for line in _error_notes(rows):
        w(f"- {line}")
    w("")
    w("## Pareto: tokens/s per user against tokens/s per MW")
    w("")
    w("![pareto](projection_pareto.png)")
    w("")
    w(f"Model `{pp['model']}` at a {pp['context']:,}-token context (NVIDIA's premium-tier example). **GPU only**: "
      f"`sim/serving/gpu.py` with `configs/serving/gpu_rubin.yaml` ({gpu.p['power_w']} W per GPU), n GPUs in "
      "tensor parallel seen as one roofline with n x the flops and HBM bandwidth (per-kernel launch overhead "
      f"unchanged), n the fewest GPUs whose HBM ({pc['hbm_usable']:.0%} usable) holds the weights and the batch's "
      f"KV, plus {pc['allreduce_s'] * 1e6:g} us per NVLink all-reduce (two per layer). **AFD**: the same GPU "
      f"model runs attention only (one all-reduce per layer); the FFN / experts run on {pp['lpu_chips']} "
      f"{pp['chip']} chips (whole trays) with the calibrated segment cost at the batch's token count; each layer "
      f"crosses the GPU-LPU network twice ({pc['net_hop_s'] * 1e6:g} us per hop and "
      f"{pc['net_bandwidth'] / 1e9:g} GB/s, as `configs/serving/serving.yaml`). No overlap of attention and FFN "
      "(no ping-pong) is assumed. The roofline reads K/V of d_model per position, so the context is scaled by "
      "kv_dim / d_model to read grouped-query KV.")
    w("")
    w("| batch | GPU only: GPUs | tok/s per user | tok/s per MW | AFD: GPUs + LPUs | tok/s per user | tok/s per MW |")
    w("|---|---|---|---|---|---|---|")
    for g, a in zip(pp["gpu"], pp["afd"]):
        w(f"| {g['batch']} | {g['gpus']} | {g['tps_user']:,.0f} | {g['tps_per_mw']:,.0f} | {a['gpus']} + "
          f"{a['lpu_chips']} | {a['tps_user']:,.0f} | {a['tps_per_mw']:,.0f} |")
    w("")
    for tgt in (400, 1000):
        g, a = _best_at(pp["gpu"], tgt), _best_at(pp["afd"], tgt)
        if g and a:
            w(f"- At >= {tgt} tokens/s per user: GPU only reaches {g['tps_per_mw']:,.0f} tokens/s per MW (batch "
              f"{g['batch']}), AFD {a['tps_per_mw']:,.0f} (batch {a['batch']}): {a['tps_per_mw'] / g['tps_per_mw']:.1f}x.")
        elif a:
            w(f"- At >= {tgt} tokens/s per user: GPU only cannot get there at any batch (kernel launches and "
              f"all-reduces of {pp['model']}'s layers alone exceed the time budget); AFD reaches "
              f"{a['tps_per_mw']:,.0f} tokens/s per MW (batch {a['batch']}).")
        else:
            w(f"- At >= {tgt} tokens/s per user: neither configuration gets there in this model.")
    w("- NVIDIA's published figure is up to 35x tokens/s per MW at 400 tokens/s per user for Vera Rubin NVL72 + "
      "LPX against GB200 NVL72; the GB200 baseline is not modelled here, so the ratio above (against a Rubin "
      "GPU-only fleet) is not the same comparison.")
    w("")
    w("## Fleet mix")
    w("")
    w("![fleet](fleet.png)")
    w("")
    s = fr["spec"]
    w(f"`tinylpu project --fleet [FILE]` (default `configs/project/fleet.yaml`): {s['power_mw']} MW, model "
      f"`{s['model']}` at a {fr['pareto']['context']:,}-token context, classes:")
    w("")
    w("| class | share of tokens | target tok/s per user | AFD operating point (batch, tok/s/user, tok/s/MW) | "
      "GPU-only operating point |")
    w("|---|---|---|---|---|")
    for c, o in zip(s["classes"], fr["operating_points"]):
        def f(x):
            return f"{x['batch']}, {x['tps_user']:,.0f}, {x['tps_per_mw']:,.0f}" if x else "cannot meet the target"
        w(f"| {c['name']} | {c['share']:.2f} | {c['tokens_per_s_per_user']:,} | {f(o['afd'])} | {f(o['gpu'])} |")
    w("")
    b = fr["best"]
    w("For each split of the power budget between AFD pods (GPUs for attention + LPU trays) and GPU-only pods, "
      "every class runs at the most efficient point of either Pareto curve that meets its target, and the "
      "classes are assigned to pods in order of comparative advantage (the exact optimum for two resources "
      "and divisible work); the curve is the largest total rate that serves the mix in its shares.")
    w("")
    w(f"**Best split: {b['afd_power_share']:.0%} of the power in AFD pods, of which LPU chips draw "
      f"{b['lpu_power_share']:.1%} of the total budget; {b['tokens_per_s_per_mw']:,.0f} tokens/s per MW for the "
      f"whole mix.** GPU only: {fr['curve'][0]['tokens_per_s_per_mw']:,.0f} tokens/s per MW"
      + ("" if fr["curve"][0]["meets_targets"] else " — it cannot meet the fastest class's target at all") + ".")
    w("")
    w(f"Published commentary suggests giving about a quarter of the infrastructure to Groq-based systems for the "
      f"premium tier. Here the AFD share that maximizes the mix is {b['afd_power_share']:.0%} of the power "
      f"({b['lpu_power_share']:.0%} in the LPU chips themselves), for a mix whose premium classes are "
      f"{sum(c['share'] for c in s['classes'] if c['tokens_per_s_per_user'] >= 400):.0%} of the tokens; the "
      "split follows the premium share of the mix and the LPU power assumption, so it is a statement about "
      "this mix, not a universal ratio.")
    w("")
    w("## Limits")
    w("")
    w("- The published Groq figures come from deployments whose precision (the real systems mixed fp16 and "
      "int8), chip counts and software are not fully public; the projection uses int8 weights and KV and the "
      "capacity-minimal chip count.")
    w("- Host overheads, sampling, the token's trip back to the host and the KV write of the new token are not "
      "modelled; nor are routing imbalance in MoE layers or contention on the GPU-LPU network.")
    w("- The GPU side is a roofline with a per-kernel launch overhead; its efficiencies are the serving model's "
      "assumptions (configs/serving/gpu_rubin.yaml).")
    return "\n".join(L) + "\n"


def _error_notes(rows):
    out = []
    tsp = [r for r in rows if r["chip"] == "tsp-v1"]
    if tsp:
        errs = ", ".join(f"{r['model']} {r['error']:+.0%}" for r in tsp)
        out.append(f"TSP v1: {errs}. The projection has no per-token software overhead and assumes int8 weights "
                   "and a capacity-minimal placement; where it is faster than published, the gap is time the real "
                   "deployments spend outside weight streaming (precision, synchronisation, host). The sensitivity "
                   "table brackets the published figures between tinylpu's own install rate (1 row per cycle per "
                   "plane, 59-73 % too slow) and the stream-count bound (16 rows, 2-5x too fast): the MXM weight "
                   "install rate is the knob that matters most and the one the public figures pin down least.")
    for r in rows:
        if r["chip"] != "tsp-v1":
            res = r["result"]
            out.append(f"{r['chip']} / {r['model']}: {r['projected']:,.0f} tokens/s per user on {res['chips']} chips "
                       f"({res['chips_deployed'] // 256 if res['chips_deployed'] >= 256 else res['chips_deployed']}"
                       f"{' racks' if res['chips_deployed'] >= 256 else ' chips'}); the published regime is 1,000+.")
    return out


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------

def main(args):
    if args.compare:
        out = args.output or "docs/projection.md"
        text = write_doc(out)
        print(text)
        print(f"wrote {out}, {Path(out).parent / 'projection_pareto.png'}, {Path(out).parent / 'fleet.png'}")
        return 0
    if args.fleet is not None:
        fr = fleet(args.fleet or None)
        if args.output:
            plot_fleet(fr, args.output)
        if args.json:
            print(json.dumps({k: v for k, v in fr.items() if k != "pareto"}, indent=2))
        else:
            print(describe_fleet(fr))
            if args.output:
                print(f"wrote {args.output}")
        return 0
    if not args.chip or not args.model:
        raise ProjectError("give --chip and --model (or --compare, or --fleet)")
    r = project(args.chip, args.model, context=args.context)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(describe(r))
    return 0
