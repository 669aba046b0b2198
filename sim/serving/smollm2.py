"""SmolLM2-135M-Instruct (Llama architecture) in numpy, split the AFD way: embeddings, RMSNorm,
attention with RoPE and GQA, the KV cache, the LM head and sampling are the GPU model's; every FFN
(SwiGLU 576 -> 1536 -> 576) can run as the chip's int8 arithmetic (``QuantFFN.run_int``).

The weights are the shipped GGUF (Q4_1 matrices, Q8_0 embeddings) dequantized to float32: the
"float model" below is that, in numpy.  ``cut(n)`` keeps the first n layers (the fast tests' model
and the speculative draft).

Row kernels (one token) serve the decode loop, the monolithic reference and the prefill, so every
path computes bit-identical floats for a token whatever the batching (as in ``model.py``);
``forward_seq`` is the batched teacher-forced pass for perplexity and calibration.

int8 FFN boundary, the scheme (see ``quantize``): the FFN input ``x = rmsnorm(h) * g`` leaves the
GPU as int8 with one calibrated scale per layer; the chip computes the layer exactly as
``QuantFFN.run_int`` (int8 weights per output channel, int32 accumulators, per-channel
requantization, the SiLU table, the gated product) and returns int8 ``y``; the GPU dequantizes
and adds it to the residual.
"""

import hashlib
import json
import math
import os
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path

import numpy as np

from tinylpu.firmware.quant import FFNWeights
from tinylpu.sim.serving.gguf_model import GGUFModel, LlamaConfig, load_gguf
from tinylpu.sim.serving.model import Routed
from tinylpu.sim.serving.quant8 import ChannelQuant, quantize_swiglu
from tinylpu.sim.serving.tokenizer import Tokenizer

__all__ = ["SmolConfig", "LlamaKV", "LlamaModel", "load_smollm2", "single_thread_blas", "data_text", "prompts",
           "MODEL_NAMES"]

MODEL_NAMES = ("smollm2-135m",)


def data_text(name):
    """A text shipped with the package (sim/serving/data/)."""
    return resources.files("tinylpu.sim.serving").joinpath("data", name).read_text()


def prompts():
    return [ln for ln in data_text("prompts.txt").splitlines() if ln.strip()]


@dataclass(frozen=True)
class SmolConfig(LlamaConfig):
    """The serving model's view of a Llama GGUF: the GGUF's shape (``LlamaConfig``) plus the serving
    fields (attribute names shared with ``ModelConfig``: a dense model is an MoE of one expert, top-1,
    gate 1)."""
    name: str = "smollm2-135m"
    max_seq: int = 512
    experts: int = 1
    top_k: int = 1

    @property
    def d_head(self):
        return self.d_model // self.heads

    @property
    def kv_dim(self):
        return self.kv_heads * self.d_head


class LlamaKV:
    """Per request: post-RoPE K and V per layer, (max_seq, kv_heads, d_head) float32, and the length."""

    def __init__(self, cfg: SmolConfig):
        self.k = np.zeros((cfg.layers, cfg.max_seq, cfg.kv_heads, cfg.d_head), np.float32)
        self.v = np.zeros((cfg.layers, cfg.max_seq, cfg.kv_heads, cfg.d_head), np.float32)
        self.n = 0


def _rms(x, g, eps):
    x = np.asarray(x, np.float32)
    r = np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps))
    return (x / r) * g


@dataclass
class LlamaModel:
    cfg: SmolConfig
    emb: np.ndarray                  # vocab x d (tied LM head)
    g_attn: list
    g_ffn: list
    wqkv: list                       # d x (d + 2 kv_dim), x @ wqkv
    wo: list                         # d x d
    ffn: list                        # [layer] FFNWeights (w1 gate, w3 up, w2 down; x @ w)
    g_out: np.ndarray
    tokenizer: Tokenizer = None
    cq: list = field(default_factory=list)         # [layer] ChannelQuant (set by quantize)
    q: list = field(default_factory=list)          # [layer][group] QuantFFN: what the chip runs
    quant_info: dict = field(default_factory=dict)
    source: str = ""
    draft_layers: int = 8            # speculative decoding: the draft is the first this many layers

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, g: GGUFModel, layers=None, max_seq=512):
        c = g.config
        n = c.layers if layers is None else int(layers)
        if not 1 <= n <= c.layers:
            raise ValueError(f"layers must be in 1..{c.layers}, got {layers}")
        shape = {f.name: getattr(c, f.name) for f in fields(LlamaConfig)}
        cfg = SmolConfig(**{**shape, "layers": n, "name": "smollm2-135m"}, max_seq=max_seq)
        t = g.tensor
        blk = [f"blk.{i}." for i in range(n)]
        m = cls(cfg,
                emb=t("token_embd.weight"),
                g_attn=[t(b + "attn_norm.weight") for b in blk],
                g_ffn=[t(b + "ffn_norm.weight") for b in blk],
                wqkv=[np.ascontiguousarray(np.concatenate(
                    [t(b + "attn_q.weight"), t(b + "attn_k.weight"), t(b + "attn_v.weight")]).T) for b in blk],
                wo=[np.ascontiguousarray(t(b + "attn_output.weight").T) for b in blk],
                ffn=[FFNWeights(t(b + "ffn_gate.weight").T.astype(np.float64),
                                t(b + "ffn_down.weight").T.astype(np.float64),
                                t(b + "ffn_up.weight").T.astype(np.float64), activation="swiglu") for b in blk],
                g_out=t("output_norm.weight"),
                tokenizer=Tokenizer.from_gguf(g),
                source=g.path)
        m._ffn32 = [(np.ascontiguousarray(w.w1, np.float32), np.ascontiguousarray(w.w3, np.float32),
                     np.ascontiguousarray(w.w2, np.float32)) for w in m.ffn]
        m._rope_tables()
        return m

    def cut(self, layers):
        """The first `layers` layers (same embeddings, head and tokenizer): a new model."""
        if not 1 <= layers <= self.cfg.layers:
            raise ValueError(f"layers must be in 1..{self.cfg.layers}, got {layers}")
        m = replace(self, cfg=replace(self.cfg, layers=layers), g_attn=self.g_attn[:layers],
                    g_ffn=self.g_ffn[:layers], wqkv=self.wqkv[:layers], wo=self.wo[:layers],
                    ffn=self.ffn[:layers], cq=self.cq[:layers], q=self.q[:layers], quant_info=dict(self.quant_info))
        m._ffn32 = self._ffn32[:layers]
        m._cos, m._sin = self._cos, self._sin
        return m

    def _rope_tables(self):
        c = self.cfg
        inv = c.rope_base ** (-np.arange(0, c.d_head, 2, dtype=np.float64) / c.d_head)
        ang = np.arange(c.max_seq, dtype=np.float64)[:, None] * inv[None, :]
        self._cos, self._sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)

    def _rope(self, x, pos):
        """x: (..., heads, d_head) at positions pos (scalar or (n,)); rotates adjacent pairs."""
        cos, sin = self._cos[pos], self._sin[pos]
        if np.ndim(pos):
            cos, sin = cos[:, None, :], sin[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def new_kv(self):
        return LlamaKV(self.cfg)

    # --- row kernels (one token) -----------------------------------------------------------------
    def embed(self, tok, p=None):
        return self.emb[int(tok)].copy()

    def attn_row(self, layer, h, kv: LlamaKV, p):
        """Attention for the token at position p: writes its K/V at p, attends to positions 0..p."""
        c = self.cfg
        dh, kvh, grp = c.d_head, c.kv_heads, c.heads // c.kv_heads
        a = _rms(h, self.g_attn[layer], c.eps)
        qkv = a @ self.wqkv[layer]
        q = self._rope(qkv[:c.d_model].reshape(c.heads, dh), p)
        kv.k[layer, p] = self._rope(qkv[c.d_model:c.d_model + c.kv_dim].reshape(kvh, dh), p)
        kv.v[layer, p] = qkv[c.d_model + c.kv_dim:].reshape(kvh, dh)
        K, V = kv.k[layer, :p + 1], kv.v[layer, :p + 1]
        s = np.einsum("kgd,nkd->kgn", q.reshape(kvh, grp, dh), K) / np.float32(math.sqrt(dh))
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        w = s / s.sum(axis=-1, keepdims=True)
        o = np.einsum("kgn,nkd->kgd", w, V).reshape(c.d_model)
        return h + o @ self.wo[layer]

    def ffn_in(self, layer, h):
        return _rms(h, self.g_ffn[layer], self.cfg.eps)

    def ffn_float(self, layer, f):
        w1, w3, w2 = self._ffn32[layer]
        z = f @ w1
        return ((z / (1 + np.exp(-z))) * (f @ w3)) @ w2

    def boundary(self, layer, f) -> Routed:
        """The int8 FFN input of one token: every channel group of the layer is an "expert" that
        every token uses (gate 1)."""
        g = len(self.q[layer])
        return Routed(list(range(g)), np.ones(g), self.cq[layer].quantize_input(f))

    def combine(self, layer, routed: Routed, yq_per_expert):
        return self.cq[layer].dequantize_output(yq_per_expert).astype(np.float32)

    def logits(self, h):
        return _rms(h, self.g_out, self.cfg.eps) @ self.emb.T

    def head(self, h):
        return int(np.argmax(self.logits(h)))

    # --- the serving loop's hooks ----------------------------------------------------------------
    dense = True                     # the FFN is one SwiGLU per layer (its channel groups all run)
    draft_attention = True           # the draft is the first draft_layers layers: it attends (GPU)
    draft_head = "gpu"               # ... and uses the LM head on the GPU

    @property
    def stop_ids(self):
        """Tokens that end a generation: <|endoftext|> and <|im_end|>."""
        return {self.tokenizer.eos_id, 0} if self.tokenizer else set()

    def draft_in(self, tok, p):
        return self.embed(tok, p)

    def draft_logits(self, h):
        return self.logits(h)

    def prefill_row(self, tok, p, kv, counts):
        """One prompt token on the GPU model: attention and the float FFN (the prefill never goes
        to the chip).  counts[layer][group] += 1: the FFN work, for the GPU roofline."""
        h = self.embed(tok, p)
        for layer in range(self.cfg.layers):
            h = self.attn_row(layer, h, kv, p)
            h = h + self.ffn_float(layer, self.ffn_in(layer, h))
            for g in range(len(self.q[layer]) or 1):
                counts[layer][g] = counts[layer].get(g, 0) + 1
        kv.n = p + 1
        return h

    def placement(self, chips):
        """(layer, group) -> (chip, index in that chip's resident list).  Program i = layer x groups +
        group goes to chip i mod chips: with one group, layer l on chip l mod chips (30 layers on
        8 chips: 4, 4, 4, 4, 4, 4, 3, 3, about 10.6 MB of int8 weights on the fullest 16 MiB
        chip); with several groups a layer's groups land on different chips and run side by side."""
        where, per_chip = {}, [[] for _ in range(chips)]
        i = 0
        for layer in range(self.cfg.layers):
            for g in range(len(self.q[layer])):
                c = i % chips
                where[(layer, g)] = (c, len(per_chip[c]))
                per_chip[c].append((layer, g))
                i += 1
        return where, per_chip

    def generate_reference(self, prompt, max_tokens, pick, key=0):
        """The monolithic numpy model: prefill in float, then every decode step's FFN through
        QuantFFN.run_int, one token at a time.  pick(logits, key, position) chooses the token."""
        kv = self.new_kv()
        counts = [dict() for _ in range(self.cfg.layers)]
        h = None
        for p, t in enumerate(prompt):
            h = self.prefill_row(t, p, kv, counts)
        out = []
        p = len(prompt)
        while True:
            tok = pick(self.logits(h), key, p)
            out.append(tok)
            if len(out) >= max_tokens or tok in self.stop_ids:
                return out
            h = self.step(tok, p, kv, "int")
            p += 1

    # --- one token through the whole model -------------------------------------------------------
    def step(self, tok, p, kv, ffn="int"):
        """Embed, every layer (FFN: 'int' = run_int on the int8 boundary, 'float'), final hidden."""
        h = self.embed(tok, p)
        for layer in range(self.cfg.layers):
            h = self.attn_row(layer, h, kv, p)
            f = self.ffn_in(layer, h)
            if ffn == "float":
                h = h + self.ffn_float(layer, f)
            else:
                r = self.boundary(layer, f)
                h = h + self.combine(layer, r, [q.run_int(r.xq[None])[0] for q in self.q[layer]])
        kv.n = p + 1
        return h

    # --- batched teacher-forced pass ---------------------------------------------------------------
    def forward_seq(self, tokens, ffn="float", collect=None, int_from=1, logits=True):
        """Logits (n, vocab) for every position of `tokens` (causal).  ffn: 'float' or 'int' (the
        chip's arithmetic, run_int_f64, for positions >= int_from: the earlier ones are a prompt
        prefilled on the GPU model in float).  collect: a list per layer for the FFN inputs."""
        c = self.cfg
        toks = np.asarray(tokens)
        n, dh, kvh, grp = len(toks), c.d_head, c.kv_heads, c.heads // c.kv_heads
        pos = np.arange(n)
        h = self.emb[toks].astype(np.float32)
        mask = np.triu(np.full((n, n), -np.inf, np.float32), 1)
        for layer in range(c.layers):
            a = _rms(h, self.g_attn[layer], c.eps)
            qkv = a @ self.wqkv[layer]
            q = self._rope(qkv[:, :c.d_model].reshape(n, c.heads, dh), pos)
            k = self._rope(qkv[:, c.d_model:c.d_model + c.kv_dim].reshape(n, kvh, dh), pos)
            v = qkv[:, c.d_model + c.kv_dim:].reshape(n, kvh, dh)
            s = np.einsum("ikgd,jkd->kgij", q.reshape(n, kvh, grp, dh), k) / np.float32(math.sqrt(dh)) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            w = s / s.sum(axis=-1, keepdims=True)
            o = np.einsum("kgij,jkd->ikgd", w, v).reshape(n, c.d_model)
            h = h + o @ self.wo[layer]
            f = _rms(h, self.g_ffn[layer], c.eps)
            if collect is not None:
                collect[layer].append(np.asarray(f, np.float64))
            if ffn == "float":
                h = h + self.ffn_float(layer, f)
            else:
                y = self.ffn_float(layer, f[:int_from])
                h = h + np.concatenate([y, self.cq[layer](f[int_from:]).astype(np.float32)])
        return self.logits(h) if logits else h

    # --- int8 FFN: calibration -------------------------------------------------------------------
    def quantize(self, calib_tokens, **opts):
        """Calibrate every layer's int8 boundary (quant8.quantize_swiglu) on the float model's FFN
        inputs over `calib_tokens` (token sequences; their first position, which prefill keeps on
        the GPU, is left out)."""
        rows = [[] for _ in range(self.cfg.layers)]
        for seq in calib_tokens:
            self.forward_seq(seq, "float", collect=rows, logits=False)
        self.cq = [quantize_swiglu(self.ffn[layer], np.concatenate([r[1:] for r in rows[layer]]), **opts)
                   for layer in range(self.cfg.layers)]
        self.q = [cq.qs for cq in self.cq]
        self.quant_info = {"calibration_tokens": int(sum(len(s) - 1 for s in calib_tokens)), **opts}
        return self

    # --- parameter counts for the GPU roofline ---------------------------------------------------
    @property
    def attn_params(self):
        c = self.cfg
        return c.d_model * (c.d_model + 2 * c.kv_dim) + c.d_model * c.d_model

    @property
    def expert_params(self):
        return 3 * self.cfg.d_model * self.cfg.d_ff


def single_thread_blas():
    """One BLAS thread for this process: the row kernels are matrix-vector products of a few
    hundred microseconds, and OpenBLAS's threads make them 10-30x slower on a loaded 2-core
    machine (measured), so the model's loader sets it."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(1, "blas")


# The calibration corpus: the hand-written text plus the float model's own sampled continuations
# of twelve openings (generate_calibration_texts; shipped so calibration needs no generation).
CALIBRATION_SEEDS = ["The history of science", "Dear Sarah,\n\nThank you for your letter.", "def fibonacci(n):",
                     "Ingredients:\n-", "In 1969, the first", "Q: Why is the sky blue?\nA:", "The football match",
                     "Chapter 1\n\nThe train", "<chat>Explain how a refrigerator works.",
                     "<chat>Write a short poem about autumn.", "Photosynthesis is",
                     "The city council announced on Monday"]


def generate_calibration_texts(model, tokens=200, seed=2026, temperature=0.8, top_k=40):
    """The float model's sampled continuations of CALIBRATION_SEEDS (what
    data/calibration_generated.jsonl holds; ``python -m tinylpu.sim.serving.quality
    --write-calibration`` rewrites it)."""
    from tinylpu.sim.serving.tokenizer import chat_prompt
    tk = model.tokenizer
    rng = np.random.default_rng(seed)
    out = []
    for s in CALIBRATION_SEEDS:
        ids = tk.encode(chat_prompt(s[6:]) if s.startswith("<chat>") else s)
        kv = model.new_kv()
        for p, t in enumerate(ids):
            h = model.step(t, p, kv, "float")
        gen = []
        for i in range(tokens):
            lg = model.logits(h).astype(np.float64) / temperature
            top = np.argpartition(-lg, top_k)[:top_k]
            pr = np.exp(lg[top] - lg[top].max())
            nxt = int(top[rng.choice(top_k, p=pr / pr.sum())])
            gen.append(nxt)
            if nxt in model.stop_ids:
                break
            h = model.step(nxt, len(ids) + i, kv, "float")
        out.append(tk.decode(ids + gen))
    return out


def calibration_texts():
    texts = [data_text("calibration.txt")]
    texts += [json.loads(ln)["text"] for ln in data_text("calibration_generated.jsonl").splitlines() if ln.strip()]
    return texts


def _cache_dir():
    d = os.environ.get("TINYLPU_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tinylpu")
    return Path(d)


def _cache_key(g, layers, opts):
    st = os.stat(g.path)
    h = hashlib.sha1()
    for part in (g.path, st.st_size, int(st.st_mtime), layers, sorted(opts.items()), calibration_texts(),
                 resources.files("tinylpu.sim.serving").joinpath("quant8.py").read_text()):
        h.update(repr(part).encode())
    return h.hexdigest()[:16]


def load_smollm2(layers=None, max_seq=512, quantized=True, groups=1, draft_layers=8, cache=True, scheme="tiles"):
    """The shipped SmolLM2-135M-Instruct, optionally cut to its first `layers`, with its int8 FFNs
    calibrated on the calibration corpus (quant8.quantize_swiglu, `groups` channel groups per layer,
    `scheme` "tiles" (served by default: per-tile SiLU tables and shifts, the hi/lo gated product,
    for the lpu chip's 64 lanes) or "channel").  The calibration is cached on disk ($TINYLPU_CACHE, default
    ~/.cache/tinylpu: a derived file, rebuilt when the model file, the corpus, the options or
    quant8.py change).  Sets BLAS to one thread (single_thread_blas)."""
    single_thread_blas()
    g = load_gguf()
    m = LlamaModel.from_gguf(g, layers, max_seq)
    m.draft_layers = max(1, min(int(draft_layers), m.cfg.layers))
    if not quantized:
        return m
    opts = {"groups": int(groups)}
    if scheme != "channel":      # ("channel" keeps the cache key it had before schemes existed)
        opts["scheme"] = str(scheme)
    path = _cache_dir() / f"smollm2-{_cache_key(g, m.cfg.layers, opts)}.npz"
    if cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                m.cq = [ChannelQuant.from_arrays(z, f"l{i}.") for i in range(m.cfg.layers)]
                m.quant_info = json.loads(str(z["info"]))
            m.q = [cq.qs for cq in m.cq]
            m.quant_info.update(scheme=str(scheme), cache=str(path))
            return m
        except (OSError, KeyError, ValueError):
            pass                                     # unreadable: calibrate again
    m.quantize([m.tokenizer.encode(t) for t in calibration_texts()], **opts)
    m.quant_info["scheme"] = str(scheme)
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            arrays = {}
            for i, cq in enumerate(m.cq):
                arrays.update(cq.to_arrays(f"l{i}."))
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, info=np.asarray(json.dumps(m.quant_info)), **arrays)
            os.replace(tmp, path)
            m.quant_info["cache"] = str(path)
        except OSError:
            pass
    return m
