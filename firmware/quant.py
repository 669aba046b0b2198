"""Quantization of a float FFN layer into what the chip computes, and its exact integer reference.

Scheme (docs/compiler.md):

* activations: per-tensor symmetric int8, scale s = max|calibration| / 127;
* weights: per-output-channel symmetric int8, s_w[j] = max_i |W[i, j]| / 127;
* matmul: int8 x int8 -> int32 accumulators (exact);
* requantize (VXM REQL): for output channel j the real factor f_j = s_in * s_w[j] / s_out becomes
  M_j * 2^-SH_j with M_j an int16 (14-15 significant bits) — relative error <= 2^-14 — and the bias
  b_j is added at the output scale as the int8 offset Z_j = round(b_j / s_out);
* activation (VXM LUT): a 256-entry table T[q] = round(act(q * s_z) / s_a);
* gated FFNs (SwiGLU, GeGLU): h = sat8(rshift_round(a * u, sh)) with sh picked on the calibration
  data so h uses the int8 range; its scale s_a * s_u * 2^sh flows into the second requantization.

Every int8 rounding adds at most half a step of its tensor's scale; the float error of the layer
is bounded by propagating those half steps (see docs/compiler.md), and measured in the tests.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from tinylpu.arith import requantize, rshift_round, sat8

__all__ = ["ACTIVATIONS", "FFNWeights", "QuantFFN", "quantize_ffn", "float_ffn", "load_weights", "WeightsError"]

_SQRT2 = math.sqrt(2.0)


def _erf(x):
    # numpy has no erf; math.erf per element over at most 256 table entries or a calibration set
    return np.vectorize(math.erf, otypes=[np.float64])(x)


ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / _SQRT2)),
    "gelu_tanh": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}
ACTIVATIONS["swiglu"] = ACTIVATIONS["silu"]   # silu on the gate, times the w3 projection
ACTIVATIONS["geglu"] = ACTIVATIONS["gelu"]


class WeightsError(ValueError):
    """A weights file is unusable; names the file, the key and what is wrong."""


@dataclass
class FFNWeights:
    w1: np.ndarray
    w2: np.ndarray
    w3: np.ndarray | None = None
    b1: np.ndarray | None = None
    b2: np.ndarray | None = None
    b3: np.ndarray | None = None
    activation: str = "relu"

    @property
    def gated(self):
        return self.w3 is not None

    @property
    def d_model(self):
        return self.w1.shape[0]

    @property
    def d_ff(self):
        return self.w1.shape[1]


def load_weights(path_or_dict, source=None) -> FFNWeights:
    """Read and check W.npz (keys w1, w2, optional w3, b1, b2, b3, activation)."""
    src = source or str(path_or_dict)
    if isinstance(path_or_dict, dict):
        d = dict(path_or_dict)
    else:
        try:
            with np.load(path_or_dict, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise WeightsError(f"{src}: file not found") from None
        except (ValueError, OSError) as e:
            raise WeightsError(f"{src}: not a readable .npz file ({e})") from None
    known = {"w1", "w2", "w3", "b1", "b2", "b3", "activation"}
    for k in d:
        if k not in known:
            raise WeightsError(f"{src}: unknown key '{k}'; expected w1, w2 and optionally w3, b1, b2, b3, activation")
    for k in ("w1", "w2"):
        if k not in d:
            raise WeightsError(f"{src}: missing key '{k}' (an FFN needs w1: d_model x d_ff and w2: d_ff x d_model)")
    arr = {}
    for k in ("w1", "w2", "w3", "b1", "b2", "b3"):
        if k not in d:
            continue
        a = np.asarray(d[k])
        if a.dtype.kind not in "fiu":
            raise WeightsError(f"{src}: key '{k}' has dtype {a.dtype}; expected a float array")
        want = 2 if k.startswith("w") else 1
        if a.ndim != want:
            raise WeightsError(f"{src}: key '{k}' has shape {a.shape}; expected {want} dimension{'s' * (want > 1)}")
        if not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise WeightsError(f"{src}: key '{k}' contains {bad} NaN or infinite value{'s' * (bad > 1)}")
        arr[k] = a.astype(np.float64)
    dm, dff = arr["w1"].shape
    expect = {"w2": (dff, dm), "w3": (dm, dff), "b1": (dff,), "b2": (dm,), "b3": (dff,)}
    for k, shp in expect.items():
        if k in arr and arr[k].shape != shp:
            raise WeightsError(f"{src}: key '{k}' has shape {arr[k].shape}; expected {shp} "
                               f"(w1 is {dm} x {dff})")
    if "b3" in arr and "w3" not in arr:
        raise WeightsError(f"{src}: key 'b3' given without 'w3'")
    act = d.get("activation", None)
    if act is None:
        act = "swiglu" if "w3" in arr else "relu"
    act = str(np.asarray(act)) if not isinstance(act, str) else act
    if act not in ACTIVATIONS:
        raise WeightsError(f"{src}: activation '{act}' is not one of {', '.join(sorted(ACTIVATIONS))}")
    if act in ("swiglu", "geglu") and "w3" not in arr:
        raise WeightsError(f"{src}: activation '{act}' needs key 'w3' (the second up-projection)")
    return FFNWeights(arr["w1"], arr["w2"], arr.get("w3"), arr.get("b1"), arr.get("b2"), arr.get("b3"), act)


def float_ffn(w: FFNWeights, x):
    """The float reference: act(x W1 + b1) [* (x W3 + b3)] W2 + b2."""
    x = np.asarray(x, dtype=np.float64)
    z = x @ w.w1 + (w.b1 if w.b1 is not None else 0)
    h = ACTIVATIONS[w.activation](z)
    if w.gated:
        h = h * (x @ w.w3 + (w.b3 if w.b3 is not None else 0))
    return h @ w.w2 + (w.b2 if w.b2 is not None else 0)


def _scale(maxabs):
    return max(float(maxabs), 1e-8) / 127.0


def _quant_weights(w):
    s = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
    q = np.clip(np.round(w / s), -127, 127).astype(np.int8)
    return q, s


def _mult_shift(f):
    """f > 0 as M * 2^-SH, M an int16 as large as possible, SH in [0, 62]."""
    f = np.asarray(f, dtype=np.float64)
    sh = np.clip(np.floor(np.log2(32767.0 / np.maximum(f, 1e-300))), 0, 62).astype(np.int64)
    m = np.round(f * np.exp2(sh)).astype(np.int64)
    over = m > 32767
    sh = np.where(over, sh - 1, sh)
    m = np.where(over, np.round(f * np.exp2(sh)).astype(np.int64), m)
    return np.clip(m, 0, 32767).astype(np.int16), sh


def _wrap32(x):
    """int64 values as int32 arithmetic wraps them (MM and ADD32)."""
    return (np.asarray(x, dtype=np.int64) + (1 << 31)) % (1 << 32) - (1 << 31)


@dataclass
class ReqParams:
    m: np.ndarray    # int16 per channel
    sh: np.ndarray   # per channel
    z: np.ndarray    # int8 per channel

    def apply(self, acc):
        return requantize(acc, self.m.astype(np.int64), self.sh, self.z)


@dataclass
class QuantFFN:
    d_model: int
    d_ff: int
    activation: str
    gated: bool
    s_x: float
    w1: np.ndarray            # int8 d_model x d_ff
    w2: np.ndarray            # int8 d_ff x d_model
    w3: np.ndarray | None
    req1: ReqParams
    req2: ReqParams
    req3: ReqParams | None
    lut: np.ndarray           # int8[256], indexed by the code's bit pattern
    mul_sh: int               # gated: h = rshift_round(a * u, mul_sh); or an int array per d_ff channel
    s_y: float
    scales: dict = field(default_factory=dict)
    # Options a compiled program follows only when set (the defaults keep today's programs):
    # tile_luts (d_ff / lut_block, 256) int8: d_ff channel c looks up tile_luts[c // lut_block]
    # (the compiler reloads the table before each block's LUT; lut_block must be the chip's lanes).
    tile_luts: np.ndarray | None = None
    lut_block: int = 0
    # hilo = k > 0 (gated): h leaves the VXM as two int8 vectors, hi = sat8(rshift_round(a*u, sh)) and
    # lo = sat8(sat8(rshift_round(a*u, sh - k)) - sat8(hi * 2^k)); both go through W2 and the int32
    # accumulators combine as 2^k * acc(hi) + acc(lo) (k ADD32 doublings and one ADD32) before REQL.
    hilo: int = 0

    def activation_codes(self, z):
        """The LUT stage: int8 codes z (tokens x d_ff) -> int8 a."""
        if self.tile_luts is None:
            return self.lut[z.view(np.uint8)]
        blk = np.arange(self.d_ff) // self.lut_block
        return self.tile_luts[blk, z.view(np.uint8)]

    def gated_product(self, a, u):
        """The MUL stage: int8 a, u -> [h] or, with hilo, [hi, lo] (int64 arrays of int8 values)."""
        p = a.astype(np.int64) * u.astype(np.int64)
        sh = np.asarray(self.mul_sh, dtype=np.int64)
        hi = sat8(rshift_round(p, sh)).astype(np.int64)
        if not self.hilo:
            return [hi]
        fine = sat8(rshift_round(p, sh - self.hilo)).astype(np.int64)
        return [hi, sat8(fine - sat8(hi * (1 << self.hilo))).astype(np.int64)]

    def combine_acc(self, accs):
        """int32 W2 accumulators of the h pieces -> the one REQL sees (ADD32 wraps at 32 bits)."""
        if len(accs) == 1:
            return accs[0]
        acc = _wrap32(accs[0])
        for _ in range(self.hilo):
            acc = _wrap32(acc + acc)
        return _wrap32(acc + _wrap32(accs[1]))

    def quantize_input(self, x):
        return sat8(np.round(np.asarray(x, dtype=np.float64) / self.s_x))

    def dequantize_output(self, yq):
        return np.asarray(yq, dtype=np.float64) * self.s_y

    def run_int(self, xq):
        """The exact integer computation the chip performs (int8 in, int8 out)."""
        xq = np.asarray(xq, dtype=np.int64)
        z = self.req1.apply(xq @ self.w1.astype(np.int64))
        a = self.activation_codes(z)
        if self.gated:
            u = self.req3.apply(xq @ self.w3.astype(np.int64))
            hs = self.gated_product(a, u)
        else:
            hs = [a.astype(np.int64)]
        w2 = self.w2.astype(np.int64)
        return self.req2.apply(self.combine_acc([h @ w2 for h in hs]))


def quantize_ffn(w: FFNWeights, calib_x) -> QuantFFN:
    """Quantize with scales calibrated on `calib_x` (tokens x d_model floats)."""
    x = np.asarray(calib_x, dtype=np.float64)
    act = ACTIVATIONS[w.activation]
    s_x = _scale(np.abs(x).max())
    w1q, s_w1 = _quant_weights(w.w1)
    w2q, s_w2 = _quant_weights(w.w2)
    b1 = w.b1 if w.b1 is not None else np.zeros(w.d_ff)
    b2 = w.b2 if w.b2 is not None else np.zeros(w.d_model)
    z_f = x @ w.w1 + b1
    s_z = _scale(np.abs(z_f).max())
    m1, sh1 = _mult_shift(s_x * s_w1 / s_z)
    req1 = ReqParams(m1, sh1, sat8(np.round(b1 / s_z)))
    codes = np.arange(256).astype(np.uint8).view(np.int8).astype(np.float64)   # T[i] for bit pattern i
    vals = act(codes * s_z)
    if w.activation == "relu":
        s_a = s_z
    else:
        s_a = _scale(np.abs(vals).max())
    lut = sat8(np.round(vals / s_a))
    xq = sat8(np.round(x / s_x)).astype(np.int64)
    zq = req1.apply(xq @ w1q.astype(np.int64))
    aq = lut[zq.view(np.uint8)].astype(np.int64)
    req3, w3q, mul_sh, s_h = None, None, 0, s_a
    scales = {"x": s_x, "z": s_z, "a": s_a}
    if w.gated:
        w3q, s_w3 = _quant_weights(w.w3)
        b3 = w.b3 if w.b3 is not None else np.zeros(w.d_ff)
        u_f = x @ w.w3 + b3
        s_u = _scale(np.abs(u_f).max())
        m3, sh3 = _mult_shift(s_x * s_w3 / s_u)
        req3 = ReqParams(m3, sh3, sat8(np.round(b3 / s_u)))
        uq = req3.apply(xq @ w3q.astype(np.int64)).astype(np.int64)
        peak = max(int(np.abs(aq * uq).max()), 1)
        mul_sh = max(0, math.ceil(math.log2(peak / 127.0))) if peak > 127 else 0
        s_h = s_a * s_u * 2.0 ** mul_sh
        scales.update(u=s_u, h=s_h)
        hq = sat8(rshift_round(aq * uq, mul_sh)).astype(np.int64)
    else:
        hq = aq
    # output scale from the float reference on the calibration set
    y_f = float_ffn(w, x)
    s_y = _scale(np.abs(y_f).max())
    m2, sh2 = _mult_shift(s_h * s_w2 / s_y)
    req2 = ReqParams(m2, sh2, sat8(np.round(b2 / s_y)))
    del hq
    scales["y"] = s_y
    return QuantFFN(w.d_model, w.d_ff, w.activation, w.gated, s_x, w1q, w2q, w3q, req1, req2, req3, lut,
                    mul_sh, s_y, scales)
