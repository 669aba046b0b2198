"""The projection's inputs: chip and model configs (``configs/project/chips/``, ``models/``), the
fleet mix, the Pareto settings and the published figures, each read through ``tinylpu.schema``:
every field typed and range-checked, unknown keys refused, errors naming file, line and field."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tinylpu.schema import OMIT, Bool, Int, List, Map, Num, SchemaError, Str, parse_yaml

__all__ = ["ProjectError", "CHIP_SCHEMA", "MODEL_SCHEMA", "FLEET_SCHEMA", "PARETO_SCHEMA", "PUBLISHED_SCHEMA",
           "shipped", "load_chip", "load_model", "load_fleet", "pareto_config", "published"]


class ProjectError(SchemaError):
    """A projection input is wrong: the message names the file, the field and its line
    (``FILE: field 'a.b' (line N): ...``: tests/sim/perf/test_project.py matches ``FILE: field``)."""

    line_after_field = True


_NAME = dict(pattern=r"[A-Za-z0-9_.-]+", what="a word of letters, digits, '_', '-', '.'")

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
    "mxm_to_vxm_slices": Int(0, 100_000),
    "pipeline_latency_cycles": Int(0, 100_000),
    "sram_usable": Num(0.01, 1.0),
    "chips_per_node": Int(1, 1_000_000),
    "nodes_per_rack": Int(1, 1_000_000, nullable=True, default=None),
    "c2c": Map({
        "links": Int(1, 10_000),
        "link_gbps": Num(0.001, 1e6),
        "links_per_peer": Int(1, 10_000),
        "hop_latency_ns": Num(0, 1e9),
        "hops_within_node": Int(0, 100),
        "hops_across_nodes": Int(0, 100),
        "partial_bytes": Int(1, 16),
        "activation_bytes": Int(1, 16),
    }),
    "power_w": Num(0, 1e7, nullable=True, default=None),
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
    "batches": List(Int(1, 1 << 20), 1, 64),
    "hbm_usable": Num(0, 1, open_lo=True),
    "allreduce_s": Num(0, 1),
    "net_hop_s": Num(0, 1),
    "net_bandwidth": Num(0, 1e15, open_lo=True),
    "max_gpus": Int(1, 1_000_000),
    "max_attention_groups": Int(1, 1_000_000),
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


def load_chip(name_or_path):
    if isinstance(name_or_path, dict):
        return name_or_path
    doc = _doc(*_read("chips", name_or_path))
    out = doc.read(CHIP_SCHEMA)
    _check_chip(doc, out)
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
    """configs/project/pareto.yaml: batches, HBM share, collective and network costs, GPU limits."""
    return _aux("pareto.yaml", path).read(PARETO_SCHEMA)


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
