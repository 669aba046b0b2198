"""Calibrating a real model's SwiGLU FFN onto the chip's int8 arithmetic.

``firmware.quant.quantize_ffn`` takes one scale per tensor from the calibration maximum.  On
SmolLM2 that costs a factor of 8 in perplexity: a few channels of the residual stream (channel
507 above all) carry outputs 10-100x the others, and the first position of a sequence carries
"massive activations" (FFN outputs up to ~2e4 in layers 11 and 28).  This module builds the
same ``QuantFFN`` (so the same compiled program and the same ``run_int``) with scales chosen for
that, using only what the chip already does per channel:

* input smoothing (SmoothQuant, alpha 0.5): x / c per input channel on the GPU side (folded
  into the RMSNorm gain, free), c into the rows of W1 and W3; one int8 scale s_x per layer;
* W1, W3, W2 int8 per output channel (as ``quantize_ffn``);
* z = x W1: one scale (the SiLU table is shared by all channels): 0.9 x the calibration's
  max |z|;
* u = x W3: one scale per d_ff channel (req3's per-channel multiplier); the per-channel scale of
  the gated product h folds into the rows of W2 before W2 is quantized;
* the shift of the gated product a * u chosen for the smallest output error on (a sample of)
  the calibration rows;
* y: one scale per output channel (req2's per-channel multiplier); the GPU dequantizes with
  that vector.

The first position of a request never reaches the chip (prefill runs on the GPU model), so the
calibration rows exclude it.  Cost on the chip: none (the same instructions and parameter
vectors); on the GPU: one multiply by a d_model vector before quantizing (folded into the norm
gain) and one after dequantizing.  ``groups`` > 1 splits d_ff into channel groups (each its own
QuantFFN, table scale and shift, outputs summed on the GPU): one program per group per layer.

Measured (python -m tinylpu.sim.serving.quality, docs/smollm2.md): scheme "channel" perplexity +14 %
over float instead of +710 % for per-tensor scales.  Scheme "tiles" (``_group_tiles``: per-block SiLU
tables and product shifts over d_ff channels sorted by range, u with headroom, the gated product in
hi/lo int8 pieces) reaches +2.8 % and 91.7 % top-1 agreement; the compiler emits its program
(``compile_ffn`` / ``compile_moe``: an LDLUT per d_ff tile, per-tile MUL shifts, the hi/lo pieces
through W2, ADD32 doublings before REQL) and it is what SmolLM2 serves by default.
"""

import json
from dataclasses import dataclass

import numpy as np

from tinylpu.arith import rshift_round, sat8
from tinylpu.firmware.quant import ACTIVATIONS, FFNWeights, QuantFFN, ReqParams, _mult_shift

__all__ = ["ChannelQuant", "quantize_swiglu", "run_int_f64"]


def _wq(w):
    s = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
    return np.clip(np.round(w / s), -127, 127).astype(np.int8), s


def _req(f, z=None):
    m, sh = _mult_shift(f)
    return ReqParams(m, sh, np.zeros(len(m), np.int8) if z is None else z)


def run_int_f64(q: QuantFFN, xq, weights=None):
    """``QuantFFN.run_int`` with the three int8 matmuls in float64 BLAS: every product and partial
    sum is an integer below 2^53 (|sum| <= d * 127 * 128), so the accumulators are exactly the
    chip's int32 values and the result is bit-identical (tested).  For batched quality runs; the
    serving path and its reference call ``run_int`` itself.  weights: (w1, w2, w3) as float64."""
    w1, w2, w3 = weights or (q.w1.astype(np.float64), q.w2.astype(np.float64),
                             None if q.w3 is None else q.w3.astype(np.float64))
    xf = np.asarray(xq, dtype=np.float64)
    z = q.req1.apply(np.rint(xf @ w1).astype(np.int64))
    a = q.activation_codes(z)
    hs = q.gated_product(a, q.req3.apply(np.rint(xf @ w3).astype(np.int64))) if q.gated else [a]
    return q.req2.apply(q.combine_acc([np.rint(h.astype(np.float64) @ w2).astype(np.int64) for h in hs]))


@dataclass
class ChannelQuant:
    """One layer on the chip plus its GPU-side vectors.  The layer's d_ff channels may be split in
    groups, each its own ``QuantFFN`` (its own SiLU-table scale and product shift) over the same
    int8 input; their int8 outputs are dequantized per channel and summed on the GPU.
    x -> int8 is round(x * in_mul) saturated; group g's int8 y -> float is y * out_scales[g]."""
    qs: list                  # QuantFFN per channel group
    cols: list                # the d_ff columns of each group
    in_mul: np.ndarray        # d_model: 1 / (c * s_x)
    out_scales: list          # per group, d_model: s_y per output channel
    w64: list = None          # float64 copies of the int8 weights (run_int_f64)

    def quantize_input(self, x):
        return sat8(np.round(np.asarray(x, np.float64) * self.in_mul))

    def dequantize_output(self, yqs):
        return sum(np.asarray(y, np.float64) * s for y, s in zip(yqs, self.out_scales))

    def run_f64(self, xq):
        if self.w64 is None:
            self.w64 = [(q.w1.astype(np.float64), q.w2.astype(np.float64), q.w3.astype(np.float64)) for q in self.qs]
        return [run_int_f64(q, xq, w) for q, w in zip(self.qs, self.w64)]

    def run_int(self, xq):
        """The chip's arithmetic, group by group (``QuantFFN.run_int``)."""
        return [q.run_int(xq) for q in self.qs]

    def __call__(self, x):
        """The layer as the served model computes it: float in, float out, int8 on the chip."""
        return self.dequantize_output(self.run_f64(self.quantize_input(x)))

    # --- a flat dict of arrays (np.savez) and back ----------------------------------------------
    _Q = ("w1", "w2", "w3", "lut")
    _R = ("req1", "req2", "req3")

    def to_arrays(self, pre):
        d = {pre + "in_mul": self.in_mul, pre + "groups": np.asarray(len(self.qs))}
        for g, (q, cols, s_y) in enumerate(zip(self.qs, self.cols, self.out_scales)):
            p = f"{pre}g{g}."
            d.update({p + "cols": np.asarray(cols), p + "s_y": s_y, p + "mul_sh": np.asarray(q.mul_sh),
                      p + "s_x": np.asarray(q.s_x), p + "scales": np.asarray(json.dumps(q.scales))})
            for k in self._Q:
                d[p + k] = getattr(q, k)
            if q.tile_luts is not None:
                d.update({p + "tile_luts": q.tile_luts, p + "lut_block": np.asarray(q.lut_block)})
            d[p + "hilo"] = np.asarray(q.hilo)
            for k in self._R:
                r = getattr(q, k)
                d.update({p + k + ".m": r.m, p + k + ".sh": r.sh, p + k + ".z": r.z})
        return d

    @classmethod
    def from_arrays(cls, z, pre):
        qs, cols, sys_ = [], [], []
        for g in range(int(z[pre + "groups"])):
            p = f"{pre}g{g}."
            w = {k: z[p + k] for k in cls._Q}
            r = {k: ReqParams(z[p + k + ".m"], z[p + k + ".sh"], z[p + k + ".z"]) for k in cls._R}
            sy = z[p + "s_y"]
            sh = z[p + "mul_sh"]
            tl = z.get(p + "tile_luts", None)
            qs.append(QuantFFN(w["w1"].shape[0], w["w1"].shape[1], "swiglu", True, float(z[p + "s_x"]), w["w1"],
                               w["w2"], w["w3"], r["req1"], r["req2"], r["req3"], w["lut"],
                               int(sh) if sh.ndim == 0 else sh.astype(np.int64), float(sy.max()),
                               json.loads(str(z[p + "scales"])), tl,
                               int(z[p + "lut_block"]) if tl is not None else 0,
                               int(z[p + "hilo"]) if p + "hilo" in z else 0))
            cols.append(z[p + "cols"])
            sys_.append(sy)
        return cls(qs, cols, z[pre + "in_mul"], sys_)


def _lut(s_z, off, act):
    """The SiLU table for codes c = round(z / s_z) + off: T[c] = round(silu((c - off) s_z) / s_a)."""
    codes = np.arange(256).astype(np.uint8).view(np.int8).astype(np.float64)
    vals = act((codes - off) * s_z)
    s_a = max(float(np.abs(vals).max()), 1e-8) / 127.0
    return sat8(np.round(vals / s_a)), s_a


def _gate_up(xq, s_x, w1, w3, headroom):
    """What both schemes share: W1, W3 int8 per output channel, the z accumulators, and u = x W3 with
    one scale per d_ff channel (`headroom` x the calibration's max |u|) and its int8 values.
    Returns (w1q, s_w1, w3q, acc1, s_u, req3, uq)."""
    w1q, s_w1 = _wq(w1)
    w3q, s_w3 = _wq(w3)
    acc1 = xq @ w1q.astype(np.float64)
    acc3 = xq @ w3q.astype(np.float64)
    s_u = np.maximum(np.abs(acc3 * (s_x * s_w3)).max(axis=0), 1e-8) * headroom / 127.0
    req3 = _req(s_x * s_w3 / s_u)
    uq = req3.apply(np.rint(acc3).astype(np.int64)).astype(np.int64)
    return w1q, s_w1, w3q, acc1, s_u, req3, uq


def _better(best, sh, hq, s_h, w2, s_y, y_ref):
    """One candidate product shift: W2 quantized for h's scale s_h, Y requantized, its squared error
    against y_ref; the better of it and ``best`` as (err, sh, w2q, req2)."""
    w2q, s_w2 = _wq(w2 * s_h[:, None])
    req2 = _req(s_w2 / s_y)
    yq = req2.apply(np.rint(hq.astype(np.float64) @ w2q.astype(np.float64)).astype(np.int64))
    err = float(np.sum((yq * s_y - y_ref) ** 2))
    return (err, sh, w2q, req2) if best is None or err < best[0] else best


def _group(act, xq, s_x, w1, w3, w2, y_ref, zc, headroom):
    """Calibrate one channel group: (QuantFFN, s_y per output channel, squared error)."""
    w1q, s_w1, w3q, acc1, s_u, req3, uq = _gate_up(xq, s_x, w1, w3, headroom)
    s_y = np.maximum(np.abs(y_ref).max(axis=0), 1e-8) * headroom / 127.0
    # z: one scale (the SiLU table is shared), symmetric: zc x the calibration's max |z|
    s_z = max(float(np.abs(acc1 * (s_x * s_w1)).max()), 1e-6) * zc / 127.0
    off = 0
    req1 = _req(s_x * s_w1 / s_z)
    lut, s_a = _lut(s_z, off, act)
    aq = lut[req1.apply(np.rint(acc1).astype(np.int64)).view(np.uint8)].astype(np.int64)
    prod = aq * uq
    pick = slice(None, None, max(1, len(prod) // 768))       # the shift search on <= ~768 rows
    prod, y_ref = prod[pick], y_ref[pick]
    best = None
    for sh in range(3, 9):
        hq = sat8(rshift_round(prod, sh))
        best = _better(best, sh, hq, s_a * s_u * 2.0 ** sh, w2, s_y, y_ref)
    err, sh, w2q, req2 = best
    scales = {"x": s_x, "z": s_z, "z_offset": off, "a": s_a, "u_max": float(s_u.max()), "u_min": float(s_u.min()),
              "y_max": float(s_y.max()), "y_min": float(s_y.min())}
    q = QuantFFN(w1.shape[0], w1.shape[1], "swiglu", True, s_x, w1q, w2q, w3q, req1, req2, req3, lut, sh,
                 float(s_y.max()), scales)
    return q, s_y, err


def _group_tiles(act, xq, s_x, w1, w3, w2, y_ref, block, hilo, zc, u_head):
    """Calibrate one channel group for the tile scheme (channels already in their tile order, sorted
    by the range of z): a SiLU table, z scale and product shift per block of `block` channels, u
    with headroom, h in hi/lo pieces (``hilo`` = k) or one int8 (k = 0).  (QuantFFN, s_y, error)."""
    n = w1.shape[1]
    w1q, s_w1, w3q, acc1, s_u, req3, uq = _gate_up(xq, s_x, w1, w3, u_head)
    s_y = np.maximum(np.abs(y_ref).max(axis=0), 1e-8) / 127.0
    blk = np.arange(n) // block
    zmax = np.abs(acc1 * (s_x * s_w1)).max(axis=0)
    s_zt = np.array([max(float(zmax[blk == b].max()), 1e-6) * zc / 127.0 for b in range(blk[-1] + 1)])
    tabs = [_lut(sz, 0, act) for sz in s_zt]
    tile_luts = np.stack([t for t, _ in tabs])
    s_at = np.array([sa for _, sa in tabs])
    req1 = _req(s_x * s_w1 / s_zt[blk])
    aq = tile_luts[blk, req1.apply(np.rint(acc1).astype(np.int64)).view(np.uint8)].astype(np.int64)
    pick = slice(None, None, max(1, len(aq) // 768))       # the shift search on <= ~768 rows
    prod, y_ref = aq[pick] * uq[pick], y_ref[pick]
    # one shift per block, equalizing the blocks' h scales (s_a * 2^sh) to a power of two, so that the
    # rows of W2 keep comparable magnitudes when h's scale folds into them; the common part by search
    eq = np.round(np.log2(s_at.max() / s_at)).astype(np.int64)
    best = None
    for sh0 in range(12):
        sh = np.clip(sh0 + eq, hilo, 14)[blk]
        hi = sat8(rshift_round(prod, sh)).astype(np.int64)
        if hilo:
            fine = sat8(rshift_round(prod, sh - hilo)).astype(np.int64)
            hq = hi * (1 << hilo) + sat8(fine - sat8(hi * (1 << hilo)))
        else:
            hq = hi
        best = _better(best, sh, hq, s_at[blk] * s_u * 2.0 ** (sh - hilo), w2, s_y, y_ref)
    err, sh, w2q, req2 = best
    scales = {"x": s_x, "z_max": float(s_zt.max()), "z_min": float(s_zt.min()), "a_max": float(s_at.max()),
              "a_min": float(s_at.min()), "u_max": float(s_u.max()), "u_min": float(s_u.min()),
              "y_max": float(s_y.max()), "y_min": float(s_y.min()), "mul_sh": sorted({int(v) for v in sh})}
    q = QuantFFN(w1.shape[0], n, "swiglu", True, s_x, w1q, w2q, w3q, req1, req2, req3, tile_luts[0], sh,
                 float(s_y.max()), scales, tile_luts, block, hilo)
    return q, s_y, err


def quantize_swiglu(w: FFNWeights, x, groups=1, alpha=0.5, zc=None, headroom=1.0, scheme="channel", block=64,
                    hilo=4, u_headroom=1.5) -> ChannelQuant:
    """Calibration of a bias-free SwiGLU FFN on calibration inputs x (tokens x d_model).
    groups: split d_ff into this many channel groups by their calibration range of z = x W1.
    scheme "channel" (this function's default): one table and shift per group, h one int8;
    "tiles" (what SmolLM2 serves by default): d_ff channels sorted by the range of z, a SiLU table and
    product shift per block of `block` channels (must equal the compiling chip's lanes), u with
    `u_headroom`, h in hi/lo pieces (hilo = k; 0: one int8).  Both compile (firmware/compiler.py,
    single-chip ``compile_ffn`` / ``compile_moe``); quality measurements use run_int_f64."""
    if scheme not in ("tiles", "channel"):
        raise ValueError(f"scheme must be 'tiles' or 'channel', got {scheme!r}")
    if zc is None:
        zc = 1.25 if scheme == "tiles" else 0.9
    if not w.gated or w.activation != "swiglu" or any(b is not None for b in (w.b1, w.b2, w.b3)):
        raise ValueError("quantize_swiglu handles bias-free SwiGLU FFNs")
    act = ACTIVATIONS["swiglu"]
    x = np.asarray(x, np.float64)
    z_ref, u_ref = x @ w.w1, x @ w.w3
    h_ref = act(z_ref) * u_ref
    # smoothing: migrate input-channel outliers into the weights' rows
    ax = np.maximum(np.abs(x).max(axis=0), 1e-5)
    aw = np.maximum(np.maximum(np.abs(w.w1).max(axis=1), np.abs(w.w3).max(axis=1)), 1e-5)
    c = ax ** alpha / aw ** (1 - alpha) if alpha else np.ones_like(ax)
    xs = x / c
    w1, w3 = w.w1 * c[:, None], w.w3 * c[:, None]
    s_x = max(float(np.abs(xs).max()), 1e-8) / 127.0
    xq = sat8(np.round(xs / s_x)).astype(np.float64)
    order = np.argsort(np.abs(z_ref).max(axis=0), kind="stable")
    if scheme == "tiles":    # the group's channels in tile order: ascending range of z
        cols = list(np.array_split(order, groups))
    else:
        cols = [np.sort(part) for part in np.array_split(order, groups)]
    qs, sys_ = [], []
    for cl in cols:
        if scheme == "tiles":
            q, s_y, _ = _group_tiles(act, xq, s_x, w1[:, cl], w3[:, cl], w.w2[cl], h_ref[:, cl] @ w.w2[cl], block,
                                     hilo, zc, u_headroom)
        else:
            q, s_y, _ = _group(act, xq, s_x, w1[:, cl], w3[:, cl], w.w2[cl], h_ref[:, cl] @ w.w2[cl], zc,
                               headroom)
        qs.append(q)
        sys_.append(s_y)
    cq = ChannelQuant(qs, cols, 1.0 / (c * s_x), sys_)
    y_ref = h_ref @ w.w2
    cq.rel_error = float(np.sqrt(np.mean((cq(x) - y_ref) ** 2) / max(float(np.mean(y_ref ** 2)), 1e-30)))
    return cq
