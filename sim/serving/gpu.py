"""Roofline latency model of a Rubin-class GPU (parameters in configs/serving/gpu_rubin.yaml).

A kernel costs ``launch_overhead_s + max(flops / (peak * eff_f), bytes / (bw * eff_b))``; each
operation of the transformer is a short list of kernels with their flops and bytes.
"""

from dataclasses import dataclass
from importlib import resources

from tinylpu.schema import OMIT, Map, Num, Str, load_yaml, parse_yaml

__all__ = ["GpuModel", "load_gpu", "GPU_SCHEMA"]

_BYTES = Num(0.125, 16)          # bytes per element of a dtype

GPU_SCHEMA = Map({
    "name": Str(r"[A-Za-z0-9_.-]+", "a word of letters, digits, '_', '-', '.'"),
    "description": Str(default=""),
    "peak_flops": Map({                  # flop/s per dtype; the kernels use bf16 and int8
        "nvfp4": Num(0, 1e20, open_lo=True, default=OMIT),
        "fp8": Num(0, 1e20, open_lo=True, default=OMIT),
        "bf16": Num(0, 1e20, open_lo=True),
        "int8": Num(0, 1e20, open_lo=True),
    }),
    "hbm_bandwidth": Num(0, 1e16, open_lo=True),     # bytes/s
    "hbm_capacity": Num(0, 1e15, open_lo=True),      # bytes
    "flops_efficiency": Num(0, 1, open_lo=True),
    "bandwidth_efficiency": Num(0, 1, open_lo=True),
    "launch_overhead_s": Num(0, 1),
    "power_w": Num(0, 1e6, open_lo=True, nullable=True, default=None),
    "kv_dtype_bytes": _BYTES,
    "act_dtype_bytes": _BYTES,
    "attn_weight_bytes": _BYTES,
})


def load_gpu(path=None):
    """Read and check a GPU config (default configs/serving/gpu_rubin.yaml); raises SchemaError
    naming file, line and field."""
    if path is None:
        text = resources.files("tinylpu.configs").joinpath("serving/gpu_rubin.yaml").read_text()
        doc = parse_yaml(text, "configs/serving/gpu_rubin.yaml")
    else:
        doc = load_yaml(path)
    return GpuModel(doc.read(GPU_SCHEMA))


@dataclass
class GpuModel:
    p: dict

    def kernel(self, flops, nbytes, dtype="bf16"):
        p = self.p
        t_c = flops / (p["peak_flops"][dtype] * p["flops_efficiency"])
        t_m = nbytes / (p["hbm_bandwidth"] * p["bandwidth_efficiency"])
        return p["launch_overhead_s"] + max(t_c, t_m)

    # --- the transformer's GPU-side operations -------------------------------------------------
    def attention(self, m, contexts):
        """One layer's attention block for a batch of tokens with these KV lengths (decode, verify
        or prefill rows): rmsnorm, QKV, attention, O-proj + residual, rmsnorm, router."""
        c, p = m.cfg, self.p
        n, d = len(contexts), c.d_model
        if n == 0:
            return 0.0
        wb, ab, kb = p["attn_weight_bytes"], p["act_dtype_bytes"], p["kv_dtype_bytes"]
        ctx = sum(contexts)
        kvd = getattr(c, "kv_dim", d)                   # GQA: K and V are kv_heads x d_head wide
        qkv = d + 2 * kvd
        t = self.kernel(4 * n * d, 2 * n * d * ab)                                     # rmsnorm
        t += self.kernel(2 * n * d * qkv, d * qkv * wb + (d + qkv) * n * ab + 2 * n * kvd * kb)  # QKV, RoPE, KV write
        t += self.kernel(2 * ctx * (d + kvd), 2 * ctx * kvd * kb + 2 * n * d * ab)     # attention
        t += self.kernel(2 * n * d * d, d * d * wb + 3 * n * d * ab)                   # O-proj + residual
        t += self.kernel(4 * n * d, 2 * n * d * ab)                                    # rmsnorm
        if not getattr(m, "dense", False):
            t += self.kernel(2 * n * d * c.experts, d * c.experts * wb + n * d * ab)   # router + top-k
        return t

    def moe_ffn(self, m, expert_tokens):
        """The MoE FFN of one layer on the GPU: permute, grouped up-GEMM (W1|W3), SwiGLU,
        grouped down-GEMM, un-permute + combine; int8 weights (the numbers the chip uses)."""
        c, p = m.cfg, self.p
        active = [e for e, k in expert_tokens.items() if k]
        if not active:
            return 0.0
        d, F, ab = c.d_model, c.d_ff, p["act_dtype_bytes"]
        if getattr(m, "dense", False):
            # a dense SwiGLU (its channel groups together): up-GEMM (W1|W3), act * gate, down-GEMM
            n = max(expert_tokens.values())
            t = self.kernel(2 * n * d * 2 * F, 2 * d * F + n * (d + 2 * F) * ab, "int8")
            t += self.kernel(4 * n * F, 3 * n * F * ab)
            return t + self.kernel(2 * n * F * d, F * d + n * (F + 2 * d) * ab, "int8")     # (+ residual)
        n = sum(expert_tokens.values())
        t = self.kernel(n * d, 2 * n * d * ab)                                              # permute
        t += self.kernel(2 * n * d * 2 * F, len(active) * 2 * d * F + n * (d + 2 * F) * ab, "int8")
        t += self.kernel(4 * n * F, 3 * n * F * ab)                                         # act * gate
        t += self.kernel(2 * n * F * d, len(active) * F * d + n * (F + d) * ab, "int8")
        t += self.kernel(2 * n * d, 3 * n * d * ab)                                         # combine
        return t

    def lm_head(self, m, n):
        c, p = m.cfg, self.p
        if n == 0:
            return 0.0
        return (self.kernel(2 * n * c.d_model * c.vocab, c.d_model * c.vocab * p["attn_weight_bytes"])
                + self.kernel(n * c.vocab, n * c.vocab * 4))                               # argmax

    def prefill(self, m, new_tokens, context):
        """Prefill of `new_tokens` positions after `context - new_tokens` cached ones, FFN on GPU."""
        if new_tokens <= 0:
            return self.lm_head(m, 1)
        first = context - new_tokens
        ctxs = [first + i + 1 for i in range(new_tokens)]
        per_expert = {e: new_tokens * m.cfg.top_k // m.cfg.experts + 1 for e in range(m.cfg.experts)}
        t = 0.0
        for _ in range(m.cfg.layers):
            t += self.attention(m, ctxs) + self.moe_ffn(m, per_expert)
        return t + self.lm_head(m, 1)

    def kv_bytes(self, m, tokens):
        return 2 * m.cfg.layers * tokens * getattr(m.cfg, "kv_dim", m.cfg.d_model) * self.p["kv_dtype_bytes"]
