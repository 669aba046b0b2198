"""The vector work of one decoder layer on the critical path, compiled on the chip model.

Between dependent matrix products a layer runs vector code that the weight stream cannot hide:
RMSNorm (square, sum, reciprocal square root, scale, requantize), RoPE on the query and key
shards (pair swap on the SXM, two multiplies, an add), the softmax of the attention scores (max,
subtract, exp, sum, reciprocal, scale, requantize), the residual adds, and for a mixture of experts
the router's softmax and top-k selection. Each is a barrier: a norm needs the whole sum before it
can scale, the softmax the whole max before it can exponentiate.

``layer_vector_cycles`` writes that op sequence with the element counts of one chip's shard of a
layer (vectors of the projected chip's ``lanes``) and schedules it with the FFN compiler's own
scheduler (``firmware/compiler.py``: ``vxm_op`` on the reservation table of ``firmware/sched.py``,
the same stream, port and queue rules the golden model and the RTL follow) on a floorplan with the
projected chip's MXM-to-VXM distance and unit latencies. The result is the cycle count of that
program: nothing here is a constant per op.

A reduction across the lanes of a vector is log2(lanes) steps of an SXM rotate by 2^k followed by
a VXM add (or max): after the last step every lane holds the total, so no broadcast is needed.
The FFN's own vector work (requantization at the MXM output, the activation LUT, the gate
multiply) is not here: the compiled FFN overlaps it with the weight stream (``calibrate()``).
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache
from types import SimpleNamespace

import yaml

from tinylpu.isa import Insn, Opcode, latency_key

__all__ = ["LATENCY_KEYS", "compile_ops", "layer_ops", "layer_vector_cycles", "vector_config"]

LATENCY_KEYS = ("mem_read", "mem_write", "mxm_install", "mxm_mm", "mxm_emit", "vxm_alu", "vxm_mul", "vxm_req",
                "vxm_lut", "sxm")
_MAX_BANKS = 64            # the tinylpu config loader's limit


def vector_config(mxm_to_vxm_slices, latency, streams=16):
    """A tinylpu chip config with the projected chip's floorplan span and unit latencies: MXM, SXM,
    the MEM slices between them and the VXM, then MEM slices east of the VXM. Lanes stay small (16):
    the scheduler's cycle counts depend on vector counts, distances and latencies, not on lanes."""
    from tinylpu.config import load_config, parse_config
    west = max(4, mxm_to_vxm_slices - 2)
    west = min(west, _MAX_BANKS - 4)
    east = _MAX_BANKS - west
    raw = copy.deepcopy(load_config("tiny").raw)
    raw.update(name=f"vec-d{mxm_to_vxm_slices}", lanes=16, streams=streams, queue_depth=65536)
    raw["floorplan"] = (["mxm0", "sxm0"] + [f"mem{i}" for i in range(west)] + ["vxm0"]
                        + [f"mem{i}" for i in range(west, west + east)])
    raw["mem"] = dict(raw["mem"], depth=4096)
    raw["latency"] = dict(raw["latency"], **{k: int(v) for k, v in latency.items()})
    return parse_config(yaml.safe_dump(raw), f"<vector config {raw['name']}>")


def _lanes_reduce(lanes):
    return max(0, math.ceil(math.log2(lanes)))


def layer_ops(model, lanes, shard, context, chain=1):
    """The op sequence of one layer on one chip, as (name, ops, unit, vectors, inputs) steps; `ops` is
    one opcode or a chain of element-wise opcodes the VXM runs in one pass (at most `chain` ALUs
    per lane in a row), `inputs` index earlier steps (-1: the layer input). `shard` = (q_dim,
    kv_dim, heads) on this chip. A vector holds `lanes` elements whatever their width (a wide
    element spans parallel streams)."""
    d = model["d_model"]
    q_dim, kv_dim, heads = shard
    nv = lambda n: max(1, math.ceil(n / lanes))
    steps = []

    def add(name, ops, unit, n, *inputs):
        ops = ops if isinstance(ops, tuple) else (ops,)
        prev = inputs
        for i in range(0, len(ops), max(1, chain)):
            steps.append((name, ops[i:i + max(1, chain)], unit, n, tuple(prev)))
            prev = (len(steps) - 1,)
        return len(steps) - 1

    def tree(name, op, src, n):
        while n > 1:
            n = math.ceil(n / 2)
            src = add(f"{name} tree", op, "vxm", n, src)
        return src

    def lane_sum(name, src, n):
        """Sum across lanes: one pass through the MXM against a resident all-ones tile (every output
        lane gets the total)."""
        return add(f"{name} (MXM x ones)", Opcode.MM, "mxm", n, src)

    def lane_max(name, src, n):
        for k in range(_lanes_reduce(lanes)):
            r = add(f"{name} rotate {1 << k}", Opcode.ROT, "sxm", n, src)
            src = add(f"{name} step {k}", Opcode.MAX, "vxm", n, src, r)
        return src

    def rmsnorm(name, x):
        n = nv(d)
        sq = add(f"{name}: x*x", Opcode.MUL, "vxm", n, x, x)
        s = lane_sum(f"{name}: sum", tree(f"{name}: sum", Opcode.ADD, sq, n), 1)
        r = add(f"{name}: rsqrt", Opcode.LUT, "vxm", 1, s)
        return add(f"{name}: x*r*gamma, requantize", (Opcode.MUL, Opcode.MUL, Opcode.REQ), "vxm", n, x, r)

    x = rmsnorm("attention norm", -1)
    nqk = nv(q_dim + kv_dim)
    sw = add("RoPE: swap pairs", Opcode.PERM, "sxm", nqk, x)
    rope = add("RoPE: x*cos + swap*sin", (Opcode.MUL, Opcode.MUL, Opcode.ADD), "vxm", nqk, x, sw)
    # softmax over the context of each head on this chip (the scores come from the MXM: q K^T)
    ns = heads * nv(context)
    m = lane_max("softmax: max", tree("softmax: max", Opcode.MAX, rope, ns), heads)
    e = add("softmax: exp(s - max)", (Opcode.SUB, Opcode.LUT), "vxm", ns, rope, m)
    s = lane_sum("softmax: sum", tree("softmax: sum", Opcode.ADD, e, ns), heads)
    inv = add("softmax: 1/sum", Opcode.LUT, "vxm", heads, s)
    p = add("softmax: e/sum, requantize", (Opcode.MUL, Opcode.REQ), "vxm", ns, e, inv)
    h = add("residual add (attention)", Opcode.ADD, "vxm", nv(d), -1, p)
    h = rmsnorm("FFN norm", h)
    if model["experts"] > 1:
        ne = nv(model["experts"])
        m = lane_max("router: max", h, ne)
        e = add("router: exp(s - max)", (Opcode.SUB, Opcode.LUT), "vxm", ne, h, m)
        s = lane_sum("router: sum", e, ne)
        pr = add("router: e/sum", Opcode.MUL, "vxm", ne, e, add("router: 1/sum", Opcode.LUT, "vxm", ne, s))
        for k in range(model["top_k"]):
            pr = add(f"router: top-{k + 1} select", Opcode.SEL, "vxm", ne,
                     lane_max(f"router: top-{k + 1} max", pr, ne), pr)
        h = add("router: weight and combine experts", (Opcode.MUL, Opcode.ADD), "vxm", nv(d), h, pr)
    add("residual add (FFN)", Opcode.ADD, "vxm", nv(d), h)
    return steps


def _scheduler(cfg):
    from tinylpu.firmware.compiler import _FFNScheduler

    class _VectorScheduler(_FFNScheduler):
        """The FFN compiler's scheduler with an SXM op beside its ``vxm_op``."""

        def __init__(self, cfg):
            super().__init__(cfg, SimpleNamespace(d_model=cfg.lanes, d_ff=cfg.lanes, gated=False), 1)
            self.sxm = cfg.slices_of("sxm")[0].name
            self.next_sxm = 0
            self.k = 0
            self.Lat = dict(cfg.latency)
            self.ones = None

        def mxm_sum(self, src, dst, n, tag):
            """MM the n vectors of `src` through a resident all-ones tile, EMIT and requantize."""
            if self.ones is None:
                ones = self.region(self.lanes, "all-ones tile")
                self.ones = self.lw(ones, "LW all-ones tile")
            b, last = self.ones
            commit = self.mm(b, last, src, 0, n, 0, False, tag)
            return self.emit_req(commit, n, 0, dst, f"{tag} emit")

        def fused(self, ops, srcs, dst, n, tag):
            """A chain of element-wise ops in one VXM pass: the chain's latencies add up."""
            key = latency_key(ops[0])
            base = self.Lat[key]
            self.Lat[key] = sum(self.cfg.latency[latency_key(o)] for o in ops)
            try:
                return self.vxm_op(ops[0], srcs, dst, n, tag)
            finally:
                self.Lat[key] = base

        def region(self, n, what):
            banks = self.abanks[self.k % len(self.abanks):] + self.abanks[:self.k % len(self.abanks)]
            self.k += 1
            return self.alloc.take(banks + self.wbanks, n, what)

        def sxm_op(self, op, src, dst, n, tag, **kw):
            lat = self.Lat[latency_key(op)]
            t_min = max(self.next_sxm, self.ready(src, 0, self.sxm, n))

            def build(tx, t):
                a = self._read_to(tx, src, 0, n, self.sxm, t, [2, 3], f"{tag} operand")
                out = self._write_from(tx, self.sxm, t + lat, dst, 0, n, [4, 5, 6, 7], f"{tag} store")
                tx.add(self.sxm, t, [Insn.make(op, d=out, a=a, count=n, **kw)], t + 1, "sxm", (t, t + n - 1),
                       [t + lat + k for k in range(n)], tag=tag)
                return t
            t = self._asap(t_min, build, tag)
            self.next_sxm = t + n
            self.note_write(dst, 0, t + lat + abs(self.pos[dst.bank] - self.pos[self.sxm]), n)
            return t

    return _VectorScheduler(cfg)


def compile_ops(steps, cfg):
    """Schedule `steps` (``layer_ops``) on `cfg`; returns the cycle the last result is in MEM.
    The layer input is in MEM at cycle 0."""
    s = _scheduler(cfg)
    size = [n for *_, n, _ in steps]          # a region as long as its longest reader: a per-head scalar
    for *_, n, inputs in steps:               # is read once per vector of its head (a broadcast read)
        for i in inputs:
            if i >= 0:
                size[i] = max(size[i], n)
    x = s.region(max(size + [1]), "layer input")
    out = []
    for k, (name, ops, unit, n, inputs) in enumerate(steps):
        srcs = []
        for j, i in enumerate(inputs):
            r = x if i < 0 else out[i]
            if i in inputs[:j] or (srcs and r.bank == srcs[0].bank):
                # x * x, or two operands in one bank: the second is the copy written to another bank
                srcs.append(s.region(n, f"{name} operand copy"))
                continue
            srcs.append(type(r)(r.bank, r.addr, n, r.what))
        dst = s.region(size[k], name)
        op = ops[0]
        if unit == "sxm":
            s.sxm_op(op, srcs[0], dst, n, name, **({"k": 1} if op in (Opcode.ROT, Opcode.SHIFT) else {}))
        elif unit == "mxm":
            s.mxm_sum(srcs[0], dst, n, name)
        else:
            if len(srcs) == 1 and op in (Opcode.ADD, Opcode.MUL, Opcode.SUB, Opcode.MAX, Opcode.SEL):
                srcs.append(s.region(n, f"{name} operand"))          # a constant (gamma, cos, ...) in MEM
            s.fused(ops, srcs[:2], dst, n, name)
        out.append(dst)
    return s.sch.end_cycle + 1


@lru_cache(maxsize=256)
def _cycles(model_key, lanes, shard, context, dist, lat_items, chain):
    model = dict(model_key)
    cfg = vector_config(dist, dict(lat_items))
    return compile_ops(layer_ops(model, lanes, shard, context, chain), cfg)


#: Softmax vectors (heads x context / lanes) compiled at most; a longer context is extrapolated
#: linearly from two compiled programs (at CAP and CAP / 2 vectors): element-wise passes are linear
#: in the vector count once the pipeline is full.
CAP = 2048


def layer_vector_cycles(chip, model, shard, context):
    """Cycles of one layer's critical-path vector program on `chip` for this chip's `shard`
    (q_dim, kv_dim, heads) at `context` KV tokens."""
    mk = tuple(sorted((k, model[k]) for k in ("d_model", "experts", "top_k")))
    lat = tuple(sorted(chip["latency"].items()))
    shard = tuple(int(v) for v in shard)
    lanes, heads = chip["lanes"], max(1, shard[2])

    def run(ctx):
        return _cycles(mk, lanes, shard, int(ctx), chip["mxm_to_vxm_slices"], lat, chip.get("vxm_chain", 1))
    ns = heads * math.ceil(context / lanes)
    if ns <= CAP:
        return run(context)
    c1 = (CAP // heads) * lanes
    c2 = c1 // 2
    n1, n2 = heads * math.ceil(c1 / lanes), heads * math.ceil(c2 / lanes)
    y1, y2 = run(c1), run(c2)
    return round(y1 + (ns - n1) * (y1 - y2) / max(1, n1 - n2))
