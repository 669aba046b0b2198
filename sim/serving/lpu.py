"""The FFN side of the decode loop: MoE experts on the LPU tray (or on the GPU model, for comparison).

``TrayFFN``: expert e of every layer is resident on tray chip e % chips (``compile_moe`` per
chip, loaded once).  Each expert is compiled for the token counts ``lpu.batch_tokens`` (default
[``tokens_per_call``]), one program per count on the chip's one MEM image; an expert's tokens of a
step go in jobs of at most ``tokens_per_call`` tokens, each run by the smallest program that holds
it (``Chip.run``: a decode batch of 5 runs the 8-token program once with [1, 2, 4, 8]).  A layer's
MoE for a batch of tokens is one tray step: the int8 rows cross
the GPU -> tray network hop, the ingress chip (chip 0) forwards each expert's rows over C2C,
every chip runs its experts' programs (chips in parallel, one chip's programs back to back), the
int8 results come back over C2C and the network.  Latency = exact chip cycles / clock + link
hops (C2C: ``link_latency`` + vectors x ``vector_interval`` cycles of the tray config; network:
``net_hop_s`` + bytes / ``net_bandwidth``).

``lpu.chip_config`` names the chips.  A tray config (``tray``: 8 chips, ``duo``: 2) is the tray
itself: ``lpu.chips`` must then be null or equal its ``chips``, its own link parameters are used,
and the RTL engine runs the tray's Verilog (every chip on its own clock and host port, the chips
of a step computing at the same time).  A single-chip config (``tiny``) with ``lpu.chips`` N models
N such chips (on the RTL engine one simulated chip stands in for all of them, time-shared).

``GpuFFN``: the same integer numbers (``QuantFFN.run_int``), timed by the GPU roofline.
"""

import functools
import math

import numpy as np

from tinylpu.config import load_config
from tinylpu.firmware.compiler import compile_moe
from tinylpu.sim.host.api import Tray

__all__ = ["TrayFFN", "GpuFFN", "placement"]


def placement(cfg_model, chips):
    """(layer, expert) -> (chip, index in that chip's resident list)."""
    where, per_chip = {}, [[] for _ in range(chips)]
    for layer in range(cfg_model.layers):
        for e in range(cfg_model.experts):
            c = e % chips
            where[(layer, e)] = (c, len(per_chip[c]))
            per_chip[c].append((layer, e))
    return where, per_chip


def _group(model, layer, routed):
    """expert -> [(token index, slot)] for one layer's routed tokens."""
    by = {}
    for i, r in enumerate(routed):
        for slot, e in enumerate(r.experts):
            by.setdefault(e, []).append((i, slot))
    return by


class TrayFFN:
    kind = "lpu"

    def __init__(self, model, lpu_cfg, engine="golden", dut=None):
        self.model, self.p = model, lpu_cfg
        self.chip_cfg = load_config(lpu_cfg.get("chip_config", "tiny"))
        chips = lpu_cfg.get("chips")
        if self.chip_cfg.chips > 1:
            if chips not in (None, self.chip_cfg.chips):
                raise ValueError(f"serving config: lpu.chips is {chips} but lpu.chip_config "
                                 f"{self.chip_cfg.name!r} is a tray of {self.chip_cfg.chips} chips "
                                 f"(set lpu.chips to null or {self.chip_cfg.chips})")
            chips, link = self.chip_cfg.chips, self.chip_cfg
        else:
            chips = 8 if chips is None else int(chips)
            link = load_config(lpu_cfg.get("link_config", "tray"))
        if chips < 1:
            raise ValueError(f"serving config: lpu.chips must be >= 1, got {chips}")
        self.link_latency, self.vector_interval = link.link_latency, link.vector_interval
        self.clock_hz = 1e6 * (lpu_cfg.get("clock_mhz") or self.chip_cfg.clock_mhz)
        self.tokens = int(lpu_cfg.get("tokens_per_call", 8))
        # the token counts each layer is compiled for (one program each, all on one MEM image); the
        # largest is tokens_per_call (the serving schema checks it)
        self.batch_tokens = sorted(lpu_cfg.get("batch_tokens") or [self.tokens])
        if self.batch_tokens[-1] != self.tokens:
            raise ValueError(f"serving config: lpu.batch_tokens {self.batch_tokens} must end with "
                             f"lpu.tokens_per_call {self.tokens} (the largest program)")
        self.where, per_chip = model.placement(chips) if hasattr(model, "placement") else placement(model.cfg, chips)
        self.per_chip = per_chip
        self.tray = Tray(chips, self.chip_cfg, engine, dut=dut)
        self.engine = engine
        self.cycles = 0
        self.calls = 0
        self.split = {"network_s": 0.0, "c2c_s": 0.0, "lpu_s": 0.0}    # summed over calls (``moe``)

    async def load(self):
        counts = self.tokens if len(self.batch_tokens) == 1 else self.batch_tokens
        comp = [_compiled(self.model, lst, self.chip_cfg, counts) for lst in self.per_chip]
        await self.tray.load(comp)

    def _vectors(self, n_tokens):
        return n_tokens * math.ceil(self.model.cfg.d_model / self.chip_cfg.lanes)

    async def moe(self, layer, routed):
        """routed: [Routed]; returns (ys: per token [int8 row per chosen expert], seconds, detail)."""
        ys = [[None] * len(r.experts) for r in routed]
        if not routed:
            return ys, 0.0, {}
        by = _group(self.model, layer, routed)
        jobs, where = [], []
        for e in sorted(by):
            chip, idx = self.where[(layer, e)]
            items = by[e]
            for k in range(0, len(items), self.tokens):
                part = items[k:k + self.tokens]
                jobs.append((chip, idx, np.stack([routed[i].xq for i, _ in part]).astype(np.int8)))
                where.append(part)
        step = await self.tray.run_parallel(jobs)          # one tray step: the chips run side by side
        chip_cycles, chip_vecs = dict(step.per_chip_cycles), {}
        for (chip, _, _), part, out in zip(jobs, where, step.outputs):
            for (i, slot), row in zip(part, out.y):
                ys[i][slot] = row
            chip_vecs[chip] = chip_vecs.get(chip, 0) + self._vectors(len(part))
            self.calls += 1
        # links: one hop of the int8 rows each way, C2C from / to the ingress chip 0
        n = len(routed)
        d = self.model.cfg.d_model
        net = 2 * self.p["net_hop_s"] + (n * d + n * 8 + n * len(routed[0].experts) * d) / self.p["net_bandwidth"]
        worst, worst_hops = 0, 0
        for chip, cyc in chip_cycles.items():
            hop = 0 if chip == 0 else self.link_latency + chip_vecs[chip] * self.vector_interval
            if 2 * hop + cyc > worst:
                worst, worst_hops = 2 * hop + cyc, 2 * hop
        self.cycles += sum(chip_cycles.values())
        t = net + worst / self.clock_hz
        self.split["network_s"] += net
        self.split["c2c_s"] += worst_hops / self.clock_hz
        self.split["lpu_s"] += (worst - worst_hops) / self.clock_hz
        return ys, t, {"chip_cycles": chip_cycles, "tray_cycles": worst, "net_s": net}

    def draft_head_s(self, n_tokens):
        """The draft model's LM head on the LPU: an ESTIMATE (not compiled): its weights stream into
        the MXM at `head_weight_bytes_per_cycle`, once per block of up to `tokens` tokens."""
        c = self.model.cfg
        rate = self.p.get("head_weight_bytes_per_cycle", self.chip_cfg.weight_bytes_per_cycle)
        blocks = math.ceil(max(n_tokens, 1) / self.tokens)
        return blocks * (c.d_model * c.vocab / rate) / self.clock_hz

    @property
    def stats(self):
        s = dict(self.tray.stats)
        s.update(engine=self.engine, clock_mhz=self.clock_hz / 1e6, chips=len(self.tray))
        return s


_COMPILED = {}


def _compiled(model, layers_experts, chip_cfg, tokens):
    """``compile_moe`` of one chip's (layer, expert) list for `tokens` (a count, or a list of counts:
    a program per count on one image), once per process: serve-compare serves the
    same model in several set-ups.  A real model's programs (SmolLM2: 30 layers of 576 x 1536, ~30 s
    to compile on 2 cores) are also kept on disk (``_disk_cached``)."""
    if not layers_experts:
        return None
    key = (id(model), tuple(layers_experts), repr(chip_cfg), repr(tokens))
    if key not in _COMPILED:
        qs = [model.q[layer][e] for layer, e in layers_experts]
        build = lambda: compile_moe(qs, chip_cfg, tokens)            # noqa: E731
        _COMPILED[key] = (model, _disk_cached(qs, chip_cfg, tokens, build) if hasattr(model, "cq") else build())
    return _COMPILED[key][1]


@functools.cache
def _source_text():
    """The compiler's inputs other than the layers: every module of the core and of firmware/."""
    from importlib import resources
    parts = []
    for pkg in ("tinylpu", "tinylpu.firmware"):
        for f in sorted(resources.files(pkg).iterdir(), key=lambda f: f.name):
            if f.name.endswith(".py"):
                parts.append(f.name + f.read_text())
    return "".join(parts)


def _disk_cached(qs, chip_cfg, tokens, build):
    """A compiled program from the derived-file cache ($TINYLPU_CACHE, default ~/.cache/tinylpu, as
    the calibration), keyed by everything the compiler reads: the source of the core and of
    firmware/, the chip config, the token count (or the list of counts) and every array and field of
    the layers.  A
    program compiled here is the same object the compiler returns (pickled), so the cycles and
    outputs are unchanged; an unreadable or stale entry is compiled again."""
    import hashlib
    import os
    import pickle

    from tinylpu.sim.serving.smollm2 import _cache_dir
    h = hashlib.sha1(_source_text().encode())
    h.update(repr(chip_cfg).encode())
    h.update(repr(("tokens", tokens if isinstance(tokens, int) else [int(t) for t in tokens])).encode())
    for q in qs:
        for k, v in sorted(vars(q).items()):
            h.update(k.encode())
            if isinstance(v, np.ndarray):
                h.update(repr((v.dtype.str, v.shape)).encode() + np.ascontiguousarray(v).tobytes())
            elif hasattr(v, "m") and hasattr(v, "sh"):                     # ReqParams
                for a in (v.m, v.sh, v.z):
                    h.update(np.ascontiguousarray(a).tobytes())
            else:
                h.update(repr(v).encode())
    path = _cache_dir() / f"compiled-{h.hexdigest()[:20]}.pkl"
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
        pass
    comp = _without_schedules(build())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            pickle.dump(comp, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError:
        pass
    return comp


def _without_schedules(comp):
    """`comp` (``compile_moe``'s list of ``Compiled`` or ``Programs``) with every compiler schedule
    dropped: serving runs programs, and the schedules (read only by ``Compiled.trace_json`` and at
    compile time by the report) are half of a pickled SmolLM2 layer (20.9 -> 9.8 MB, load 1.02 ->
    0.50 s; docs/smollm2.md).  Served programs, images, layouts and cycle counts are untouched."""
    import dataclasses
    for item in comp:
        for c in getattr(item, "programs", (item,)):
            c.schedule = None
            c.runs = [dataclasses.replace(r, schedule=None) for r in c.runs]
    return comp


class GpuFFN:
    kind = "gpu"

    def __init__(self, model, gpu):
        self.model, self.gpu = model, gpu
        self.calls = 0
        self.split = {"gpu_ffn_s": 0.0}

    async def load(self):
        return None

    async def moe(self, layer, routed):
        ys = [[None] * len(r.experts) for r in routed]
        if not routed:
            return ys, 0.0, {}
        by = _group(self.model, layer, routed)
        for e, items in sorted(by.items()):
            xq = np.stack([routed[i].xq for i, _ in items]).astype(np.int8)
            out = self.model.q[layer][e].run_int(xq)
            for (i, slot), row in zip(items, out):
                ys[i][slot] = row
            self.calls += 1
        t = self.gpu.moe_ffn(self.model, {e: len(v) for e, v in by.items()})
        self.split["gpu_ffn_s"] += t
        return ys, t, {}

    def draft_head_s(self, n_tokens):
        return self.gpu.lm_head(self.model, n_tokens)

    @property
    def stats(self):
        return {"engine": "gpu-roofline", "calls": self.calls}


def main(argv=None):
    """``python -m tinylpu.sim.serving.lpu [--serving-config NAME|FILE] [--tokens 1,2,4,8] [--layers N]``:
    compile (or load from the disk cache) every chip's layer programs for the token counts (default:
    the config's ``lpu.batch_tokens``), run every program once on the golden model with random int8
    rows, and print each count's cycles per layer; exit status 1 unless every measured cycle count
    equals the compiler's prediction and every output equals ``QuantFFN.run_int``."""
    import argparse
    import time

    from tinylpu.sim.host.api import Chip, drive
    from tinylpu.sim.serving.serve import build_model, default_config
    ap = argparse.ArgumentParser(prog="python -m tinylpu.sim.serving.lpu", description=main.__doc__.split("\n\n")[0])
    ap.add_argument("--serving-config", default="smollm2")
    ap.add_argument("--tokens", help="comma-separated token counts (default: the config's lpu.batch_tokens)")
    ap.add_argument("--layers", type=int, help="the model cut to its first N layers")
    a = ap.parse_args(argv)
    t0 = time.time()
    scfg = default_config(a.serving_config)
    if a.layers:
        scfg["model"]["layers"] = a.layers
        if scfg["model"].get("draft_layers"):
            scfg["model"]["draft_layers"] = min(scfg["model"]["draft_layers"], a.layers)
    lp = scfg["lpu"]
    counts = ([int(t) for t in a.tokens.split(",")] if a.tokens else (lp["batch_tokens"] or [lp["tokens_per_call"]]))
    model = build_model(scfg)
    cfg = load_config(lp["chip_config"])
    chips = cfg.chips if cfg.chips > 1 else (lp.get("chips") or 8)
    _, per_chip = model.placement(chips) if hasattr(model, "placement") else placement(model.cfg, chips)
    arg = counts[0] if len(counts) == 1 else counts
    rng = np.random.default_rng(0)
    cycles, ok = {}, True
    for lst in per_chip:
        comp = _compiled(model, lst, cfg, arg)
        if comp is None:
            continue
        chip = Chip(cfg, "golden")
        drive(chip.load(comp))
        for idx, (layer, e) in enumerate(lst):
            progs = getattr(comp[idx], "programs", (comp[idx],))
            for c in progs:
                x = rng.integers(-128, 128, size=(c.tokens, c.q.d_model)).astype(np.int8)
                out = drive(chip.run(x, idx))
                good = out.cycles == c.predicted_cycles and np.array_equal(out.y, model.q[layer][e].run_int(x))
                ok &= bool(good)
                cycles.setdefault(c.tokens, []).append(out.cycles)
    print(f"{model.cfg.layers} layers x {len(model.q[0])} program group(s) on {chips} {cfg.name} chips at "
          f"{cfg.clock_mhz:g} MHz, compiled for {counts} token(s) on one MEM image per chip:")
    print("tokens  cycles per layer (golden)   us at the clock")
    for t in sorted(cycles):
        lo, hi = min(cycles[t]), max(cycles[t])
        span = f"{lo:,}" if lo == hi else f"{lo:,}..{hi:,}"
        print(f"{t:6d}  {span:>26s}   {hi / cfg.clock_mhz:8.2f}")
    print(f"measured = predicted and outputs = QuantFFN.run_int for all {sum(map(len, cycles.values()))} "
          f"programs: {ok} ({time.time() - t0:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
