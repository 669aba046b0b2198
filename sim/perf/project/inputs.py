"""The projection's inputs: chip and model configs (``configs/project/chips/``, ``models/``), the
fleet mix, the Pareto settings and the published figures, each read through ``tinylpu.schema``:
every field typed and range-checked, unknown keys refused, errors naming file, line and field."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tinylpu.config import MIN_LATENCY
from tinylpu.schema import OMIT, Bool, Dict, Int, List, Map, Num, SchemaError, Str, parse_yaml

__all__ = [
    "CHIP_SCHEMA",
    "DEPLOYMENT_SCHEMA",
    "FLEET_SCHEMA",
    "GPU_SCHEMA",
    "MODEL_SCHEMA",
    "PARETO_SCHEMA",
    "PUBLISHED_SCHEMA",
    "ProjectError",
    "find_deployment",
    "load_chip",
    "load_deployments",
    "load_fleet",
    "load_gpu",
    "load_model",
    "pareto_config",
    "published",
    "shipped",
    "source_of",
]


class ProjectError(SchemaError):
    """A projection input is wrong: the message names the file, the field and its line
    (``FILE: field 'a.b' (line N): ...``: tests/sim/perf/test_project.py matches ``FILE: field``)."""

    line_after_field = True


_NAME = dict(pattern=r"[A-Za-z0-9_.-]+", what="a word of letters, digits, '_', '-', '.'")

#: Every number an input file sets has a source: ``sources: {field: "..."}`` names the publication
#: (paper and section or page, article and date) or says "assumption" (or "derived: ..." with the
#: arithmetic). A field without an entry falls back to its parent's entry, then to ``default``.
SOURCE = Str(r"(?is).*\b(assumption|derived|(19|20)\d\d)\b.*",
             "a source: the publication with its year (and section or page), 'derived: ...' or 'assumption: ...'")
SOURCES = Dict(SOURCE, default={})
_LATENCY = Map({k: Int(MIN_LATENCY[k], 64) for k in ("mem_read", "mem_write", "mxm_install", "mxm_mm", "mxm_emit",
                                                    "vxm_alu", "vxm_mul", "vxm_req", "vxm_lut", "sxm")})

CHIP_SCHEMA = Map({
    "name": Str(**_NAME),
    "description": Str(default=""),
    "lanes": Int(1, 65536),
    "mxm_planes": Int(1, 1024),
    "clock_mhz": Num(1, 1e5),
    "sram_bytes": Num(1, 1e15),
    "mem_slices": Int(1, 1_000_000, nullable=True, default=None),
    "sram_bandwidth": Num(1, 1e18, nullable=True, default=None),       # bytes/s; null: mem_slices x lanes x clock
    "weight_rows_per_cycle": Int(1, 65536, nullable=True, default=None),
    "weight_install_bytes_per_cycle": Num(1, 1e9, nullable=True, default=None),   # null: planes x rows x lanes
    "mxm_to_vxm_slices": Int(0, 100_000),
    "pipeline_latency_cycles": Int(0, 100_000),
    "latency": _LATENCY,
    "vxm_chain": Int(1, 64, default=1),
    "sram_usable": Num(0.01, 1.0),
    "chips_per_node": Int(1, 1_000_000),
    "nodes_per_rack": Int(1, 1_000_000, nullable=True, default=None),
    "c2c": Map({
        "links": Int(1, 10_000),
        "link_gbps": Num(0.001, 1e6),
        "links_per_peer": Int(1, 10_000),
        "encoding_efficiency": Num(0.01, 1, default=1.0),
        "framing_efficiency": Num(0.01, 1, default=1.0),
        "hop_latency_ns": Num(0, 1e9),
        "hops_within_node": Int(0, 100),
        "hops_across_nodes": Int(0, 100),
        "partial_bytes": Int(1, 16),
        "activation_bytes": Int(1, 16),
    }),
    "power_w": Num(0, 1e7, nullable=True, default=None),
    "host_overhead_us": List(Num(0, 1e6), 2, 2),
    "sources": SOURCES,
})

MODEL_SCHEMA = Map({
    "name": Str(**_NAME),
    "description": Str(default=""),
    "layers": Int(1, 100_000),
    "d_model": Int(1, 10_000_000),
    "d_ff": Int(1, 100_000_000),
    "heads": Int(1, 100_000),
    "kv_heads": Int(1, 100_000),
    "vocab": Int(1, 100_000_000),
    "experts": Int(1, 1_000_000, default=1),
    "top_k": Int(1, 1_000_000, default=1),
    "bytes_per_weight": Num(0.125, 8, default=1),
    "kv_bytes": Num(0.125, 8, default=1),
    "context": Int(0, 1_000_000_000, default=2048),
    "gated": Bool(default=True),
    "sources": SOURCES,
})

_BYTES = Num(0.125, 8)
DEPLOYMENT_SCHEMA = List(Map({
    "chip": Str(**_NAME),
    "model": Str(**_NAME),
    "chips": Int(1, 10_000_000, nullable=True, default=None),        # null: the fewest that hold the model
    "context": Int(0, 1_000_000_000),
    "precision": Map({"attention": _BYTES, "ffn": _BYTES, "kv": _BYTES, "embedding": _BYTES}),
    "tensor_parallel": Int(1, 1_000_000, nullable=True, default=None),  # null: the chips a layer occupies
    "expert_parallel": Int(1, 1_000_000, nullable=True, default=None),  # null: every expert on its own chips
    "sources": SOURCES,
}), 1, 1000)

GPU_SCHEMA = Map({
    "name": Str(**_NAME),
    "description": Str(default=""),
    "gpus_per_rack": Int(1, 100_000),
    "hbm_bytes": Num(1, 1e15),
    "hbm_bandwidth": Num(1, 1e16),
    "flops": Num(1, 1e20),                  # dense, at the weight precision below
    "weight_bytes": Num(0.125, 8),
    "kv_bytes": Num(0.125, 8),
    "nvlink_bandwidth": Num(1, 1e16),       # bytes/s per GPU, one direction
    "rack_power_w": Num(1, 1e8),
    "hbm_efficiency": Num(0.01, 1),
    "flops_efficiency": Num(0.01, 1),
    "hbm_usable": Num(0.01, 1),
    "collective_latency_s": Num(0, 1),
    "kernel_overhead_s": Num(0, 1),
    "kernels_per_layer": Int(0, 1000),
    "sources": SOURCES,
})

FLEET_SCHEMA = Map({
    "model": Str(r"\S+", "a model name or a .yaml path", default="moe-2t"),
    "chip": Str(r"\S+", "a chip name or a .yaml path", default="lp30"),
    "power_mw": Num(0, 1e6, open_lo=True),
    "context": Int(0, 1_000_000_000, nullable=True, default=OMIT),
    "classes": List(Map({
        "name": Str(**_NAME),
        "share": Num(0, 1),
        "tokens_per_s_per_user": Num(0, 1e9, open_lo=True),
    }), 1, 64),
})

PARETO_SCHEMA = Map({
    "model": Str(r"\S+", "a model name or a .yaml path", default="moe-2t"),
    "context": Int(0, 1_000_000_000),
    "chip": Str(r"\S+", "a chip name or a .yaml path", default="lp30"),
    "gpu_only": List(Str(**_NAME), 1, 8),
    "afd_gpu": Str(**_NAME),
    "batches": List(Int(1, 1 << 20), 1, 64),
    "net_hop_s": Num(0, 1),
    "net_bandwidth": Num(0, 1e15, open_lo=True),
    "max_gpus": Int(1, 1_000_000),
    "max_attention_groups": Int(1, 1_000_000),
    "lpx_rack_power_w": Num(0, 1e9, open_lo=True),
    "sources": SOURCES,
})

PUBLISHED_SCHEMA = List(Map({
    "chip": Str(r"\S+", "a chip name"),
    "model": Str(r"\S+", "a model name"),
    "tokens_per_s_per_user": Num(0, 1e9, open_lo=True),
    "source": Str(),
    "at_least": Bool(default=OMIT),
}), 1, 1000)


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


def _doc(src, text):
    return parse_yaml(text, src, ProjectError)


def _check_chip(doc, d):
    if d["sram_bandwidth"] is None and d["mem_slices"] is None:
        raise doc.err("sram_bandwidth", "give it, or 'mem_slices' to derive it")
    c = d["c2c"]
    if c["links_per_peer"] > c["links"]:
        raise doc.err("c2c.links_per_peer", f"{c['links_per_peer']} is more than the chip's {c['links']} links")
    lo, hi = d["host_overhead_us"]
    if lo > hi:
        raise doc.err("host_overhead_us", f"[{lo:g}, {hi:g}]: the low end is above the high end")


def _leaves(d, prefix=()):
    for k, v in d.items():
        if k == "sources":
            continue
        if isinstance(v, dict):
            yield from _leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def source_of(sources, path):
    """The source of field `path` (a tuple or dotted string): its own entry, its parent's, or 'default'."""
    p = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
    while p:
        if ".".join(p) in sources:
            return sources[".".join(p)]
        p = p[:-1]
    return sources.get("default")


def _check_sources(doc, d, base=()):
    """Every number set in `d` has a source; every source names a field."""
    src = d.get("sources", {})
    fields = {".".join(p) for p, _ in _leaves(d)}
    for k in src:
        if k != "default" and k not in fields and not any(f.startswith(k + ".") for f in fields):
            raise doc.err(base + ("sources", k), "names no field of this file")
    for p, v in _leaves(d):
        numeric = isinstance(v, (int, float)) or (isinstance(v, list) and any(isinstance(x, (int, float)) for x in v))
        if numeric and not isinstance(v, bool) and source_of(src, p) is None:
            raise doc.err(base + p, "has no source: add it to 'sources' (publication and section, "
                                    "'derived: ...' or 'assumption: ...')")


def load_chip(name_or_path):
    if isinstance(name_or_path, dict):
        return name_or_path
    doc = _doc(*_read("chips", name_or_path))
    out = doc.read(CHIP_SCHEMA)
    _check_chip(doc, out)
    _check_sources(doc, out)
    out["source"] = doc.source
    if out["sram_bandwidth"] is None:
        out["sram_bandwidth"] = out["mem_slices"] * out["lanes"] * out["clock_mhz"] * 1e6
    return out


def _check_model(doc, m):
    if m["top_k"] > m["experts"]:
        raise doc.err("top_k", f"{m['top_k']} is more than the {m['experts']} experts")
    if m["heads"] % m["kv_heads"]:
        raise doc.err("kv_heads", f"{m['kv_heads']} does not divide heads {m['heads']}")
    if m["d_model"] % m["heads"]:
        raise doc.err("heads", f"{m['heads']} does not divide d_model {m['d_model']}")


def load_model(name_or_path):
    if isinstance(name_or_path, dict):
        return name_or_path
    doc = _doc(*_read("models", name_or_path))
    out = doc.read(MODEL_SCHEMA)
    _check_model(doc, out)
    _check_sources(doc, out)
    out["source"] = doc.source
    return out


def _aux(name, path=None):
    """A shipped configs/project/NAME, or the file at `path`."""
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ProjectError(f"{path}: file not found")
        return _doc(str(p), p.read_text())
    f = _root().joinpath(name)
    return _doc(f"configs/project/{name}", f.read_text())


def _loads(doc, field, loader):
    """A chip or model named in a fleet file must load."""
    try:
        loader(doc.get(field))
    except ProjectError as e:
        raise doc.err(field, f"cannot load it: {e}") from None


def load_fleet(path=None):
    """The workload mix (default configs/project/fleet.yaml)."""
    doc = _aux("fleet.yaml", path)
    d = doc.read(FLEET_SCHEMA)
    names = [c["name"] for c in d["classes"]]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise doc.err(("classes", i, "name"), f"class {n!r} appears twice")
    tot = sum(c["share"] for c in d["classes"])
    if abs(tot - 1) > 1e-6:
        raise doc.err("classes", f"shares sum to {tot:g}, not 1")
    if doc.has("model"):
        _loads(doc, "model", load_model)
    if doc.has("chip"):
        _loads(doc, "chip", load_chip)
    d["source"] = doc.source
    return d


def pareto_config(path=None):
    """configs/project/pareto.yaml: workload, GPU racks, batches, GPU <-> LPU network, LPX power."""
    doc = _aux("pareto.yaml", path)
    d = doc.read(PARETO_SCHEMA)
    _check_sources(doc, d)
    _loads(doc, "model", load_model)
    _loads(doc, "chip", load_chip)
    for i, g in enumerate(d["gpu_only"] + [d["afd_gpu"]]):
        try:
            load_gpu(g)
        except ProjectError as e:
            field = ("gpu_only", i) if i < len(d["gpu_only"]) else "afd_gpu"
            raise doc.err(field, f"cannot load it: {e}") from None
    return d


def published(path=None):
    """configs/project/published.yaml: the published tokens/s per user the projection is checked against."""
    doc = _aux("published.yaml", path)
    rows = doc.read(PUBLISHED_SCHEMA)
    for i, r in enumerate(rows):
        for field, loader in (("chip", load_chip), ("model", load_model)):
            try:
                loader(r[field])
            except ProjectError as e:
                raise doc.err((i, field), f"cannot load it: {e}") from None
    return rows


def load_deployments(path=None):
    """configs/project/deployments.yaml: how a model was (or is assumed to be) deployed on a chip:
    chip count, precision per tensor, context, parallel degrees, each with its source."""
    doc = _aux("deployments.yaml", path)
    rows = doc.read(DEPLOYMENT_SCHEMA)
    seen = set()
    for i, r in enumerate(rows):
        key = (r["chip"], r["model"])
        if key in seen:
            raise doc.err((i, "model"), f"a second deployment of {r['model']} on {r['chip']}")
        seen.add(key)
        for field, loader in (("chip", load_chip), ("model", load_model)):
            try:
                loader(r[field])
            except ProjectError as e:
                raise doc.err((i, field), f"cannot load it: {e}") from None
        _check_sources(doc, r, (i,))
        r["source"] = f"{doc.source}[{i}]"
    return rows


def find_deployment(chip, model, path=None):
    """The deployment of `model` on `chip` (names), or None."""
    for r in load_deployments(path):
        if r["chip"] == chip and r["model"] == model:
            return r
    return None


def load_gpu(name_or_path):
    """A GPU rack for the Pareto study (configs/project/gpus/NAME.yaml): the roofline's public figures."""
    if isinstance(name_or_path, dict):
        return name_or_path
    doc = _doc(*_read("gpus", name_or_path))
    out = doc.read(GPU_SCHEMA)
    _check_sources(doc, out)
    out["source"] = doc.source
    return out
