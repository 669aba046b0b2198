"""A small MoE transformer with deterministic synthetic weights, and its monolithic reference.

Every per-token computation is a row kernel (one token's vector against a weight matrix, one
query row against its own KV prefix), and every mode of the serving model — batched decode,
micro-batches, disaggregated prefill, speculative verification — calls the same row kernels with
the same shapes, so the float numbers are bit-identical whatever the batching.  The FFN experts
run in int8 (``QuantFFN.run_int``, the exact computation the chip performs): the layer input is
quantized at the boundary with a calibrated per-layer scale, the int8 expert outputs are
dequantized and combined with the router gates.
"""

from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import yaml

from tinylpu.firmware.quant import FFNWeights, quantize_ffn

__all__ = ["ModelConfig", "MoEModel", "KVCache", "load_serving_config", "reference_generate"]


def load_serving_config(path=None):
    if path is None:
        text = resources.files("tinylpu.configs").joinpath("serving/serving.yaml").read_text()
    else:
        with open(path) as f:
            text = f.read()
    return yaml.safe_load(text)


@dataclass
class ModelConfig:
    vocab: int = 256
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    experts: int = 8
    top_k: int = 2
    d_ff: int = 64
    max_seq: int = 256
    seed: int = 1234
    attn_gain: float = 0.6
    calib_sequences: int = 16
    calib_len: int = 24

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _rms(x, g):
    return x / np.sqrt(np.dot(x, x) / len(x) + 1e-6) * g


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


class KVCache:
    """Per request: K and V per layer, (max_seq, heads, d_head) float64, and the length."""

    def __init__(self, cfg: ModelConfig):
        dh = cfg.d_model // cfg.heads
        self.k = np.zeros((cfg.layers, cfg.max_seq, cfg.heads, dh))
        self.v = np.zeros((cfg.layers, cfg.max_seq, cfg.heads, dh))
        self.n = 0                   # positions whose K/V are complete in every layer


@dataclass
class Routed:
    """One token's MoE input at the int8 boundary: experts, gates, the int8 row."""
    experts: list
    gates: np.ndarray
    xq: np.ndarray                   # int8 (d_model,)


@dataclass
class MoEModel:
    cfg: ModelConfig
    emb: np.ndarray
    pos: np.ndarray
    wq: list
    wk: list
    wv: list
    wo: list
    g_attn: list
    g_ffn: list
    router: list
    experts: list                    # [layer][expert] FFNWeights
    g_out: np.ndarray
    w_out: np.ndarray                # d_model x vocab (untied LM head)
    q: list = field(default_factory=list)   # [layer][expert] QuantFFN

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, cfg: ModelConfig):
        rng = np.random.default_rng(cfg.seed)
        d, L, E, F = cfg.d_model, cfg.layers, cfg.experts, cfg.d_ff
        if d % cfg.heads:
            raise ValueError(f"d_model {d} is not a multiple of heads {cfg.heads}")
        n = lambda *s: rng.normal(size=s)           # noqa: E731
        m = cls(cfg,
                emb=n(cfg.vocab, d),
                pos=n(cfg.max_seq, d) * 0.3,
                wq=[n(d, d) / np.sqrt(d) for _ in range(L)],
                wk=[n(d, d) / np.sqrt(d) for _ in range(L)],
                wv=[n(d, d) / np.sqrt(d) for _ in range(L)],
                wo=[n(d, d) / np.sqrt(d) * cfg.attn_gain for _ in range(L)],
                g_attn=[1 + 0.1 * n(d) for _ in range(L)],
                g_ffn=[1 + 0.1 * n(d) for _ in range(L)],
                router=[n(d, E) / np.sqrt(d) * 2 for _ in range(L)],
                experts=[[FFNWeights(n(d, F) / np.sqrt(d), n(F, d) / np.sqrt(F), n(d, F) / np.sqrt(d),
                                     0.1 * n(F), 0.05 * n(d), 0.1 * n(F), "swiglu") for _ in range(E)]
                         for _ in range(L)],
                g_out=1 + 0.1 * n(d),
                w_out=n(d, cfg.vocab) / np.sqrt(d))
        m._calibrate(rng)
        return m

    def _calibrate(self, rng):
        """Float forward over synthetic sequences; every expert of a layer gets the layer's FFN
        inputs as its calibration set (one shared input scale per layer at the int8 boundary)."""
        c = self.cfg
        rows = [[] for _ in range(c.layers)]
        for _ in range(c.calib_sequences):
            toks = rng.integers(0, c.vocab, size=c.calib_len)
            kv = KVCache(c)
            for p, t in enumerate(toks):
                h = self.embed(int(t), p)
                for layer in range(c.layers):
                    h = self.attn_row(layer, h, kv, p)
                    f = _rms(h, self.g_ffn[layer])
                    rows[layer].append(f)
                    e, g = self.route(layer, f)
                    from tinylpu.firmware.quant import float_ffn
                    h = h + sum(gi * float_ffn(self.experts[layer][ei], f[None])[0] for ei, gi in zip(e, g))
                kv.n = p + 1
        self.q = [[quantize_ffn(w, np.asarray(rows[layer])) for w in self.experts[layer]]
                  for layer in range(c.layers)]

    # --- row kernels (one token) -----------------------------------------------------------------
    def embed(self, tok, p):
        return self.emb[tok] + self.pos[p]

    def attn_row(self, layer, h, kv: KVCache, p):
        """Attention for the token at position p: writes its K/V at p, attends to positions 0..p."""
        c = self.cfg
        dh = c.d_model // c.heads
        a = _rms(h, self.g_attn[layer])
        q = (a @ self.wq[layer]).reshape(c.heads, dh)
        kv.k[layer, p] = (a @ self.wk[layer]).reshape(c.heads, dh)
        kv.v[layer, p] = (a @ self.wv[layer]).reshape(c.heads, dh)
        K, V = kv.k[layer, :p + 1], kv.v[layer, :p + 1]
        s = np.einsum("hd,nhd->hn", q, K) / np.sqrt(dh)
        s = np.exp(s - s.max(axis=1, keepdims=True))
        w = s / s.sum(axis=1, keepdims=True)
        o = np.einsum("hn,nhd->hd", w, V).reshape(c.d_model)
        return h + o @ self.wo[layer]

    def ffn_in(self, layer, h):
        return _rms(h, self.g_ffn[layer])

    def route(self, layer, f):
        r = f @ self.router[layer]
        top = np.argsort(-r, kind="stable")[:self.cfg.top_k]
        return [int(e) for e in top], _softmax(r[top])

    def boundary(self, layer, f) -> Routed:
        """Route and quantize one token's FFN input (the experts of a layer share s_x)."""
        e, g = self.route(layer, f)
        return Routed(e, g, self.q[layer][0].quantize_input(f[None])[0])

    def combine(self, layer, routed: Routed, yq_per_expert):
        """Dequantize the experts' int8 outputs and add them with the gates."""
        y = np.zeros(self.cfg.d_model)
        for e, g, yq in zip(routed.experts, routed.gates, yq_per_expert):
            y = y + g * self.q[layer][e].dequantize_output(yq)
        return y

    def head(self, h):
        return int(np.argmax(_rms(h, self.g_out) @ self.w_out))

    # --- draft model (attention-free: embeddings, the same experts, the head) --------------------
    def draft_in(self, tok, p):
        return self.embed(tok, p)

    # --- parameter counts for the latency models -------------------------------------------------
    @property
    def attn_params(self):
        return 4 * self.cfg.d_model ** 2 + self.cfg.d_model * self.cfg.experts

    @property
    def expert_params(self):
        return 3 * self.cfg.d_model * self.cfg.d_ff


def reference_generate(model: MoEModel, prompt, max_tokens):
    """The monolithic reference: one request, token by token, FFNs by QuantFFN.run_int."""
    c = model.cfg
    kv = KVCache(c)
    out = []
    toks = list(prompt)
    p = 0
    while True:
        tok = toks[p]
        h = model.embed(tok, p)
        for layer in range(c.layers):
            h = model.attn_row(layer, h, kv, p)
            r = model.boundary(layer, model.ffn_in(layer, h))
            ys = [model.q[layer][e].run_int(r.xq[None])[0] for e in r.experts]
            h = h + model.combine(layer, r, ys)
        kv.n = p + 1
        if p >= len(prompt) - 1:
            nxt = model.head(h)
            out.append(nxt)
            toks.append(nxt)
            if len(out) >= max_tokens:
                return out
        p += 1
