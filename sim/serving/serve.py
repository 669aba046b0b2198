"""The Dynamo-like serving layer: disaggregated prefill, KV-aware routing, the decode AFD loop with
attention/FFN micro-batch ping-pong, per-class latency targets, speculative decoding.

Time is modelled, numbers are computed: every token comes out of the transformer's row kernels
(``model.py``) with the MoE experts computed by the FFN backend (the LPU tray through the host
API, or the GPU model); durations come from the GPU roofline and the chips' exact cycle counts.

``serve(requests, ...)`` is a coroutine: it awaits only the host API, so the same code runs under
``host.api.drive`` (golden) and inside the cocotb simulation (RTL, ``serve_in_sim``).
"""

import json
import math
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from tinylpu.sim.serving.gpu import load_gpu
from tinylpu.sim.serving.lpu import GpuFFN, TrayFFN
from tinylpu.sim.serving.model import ModelConfig, MoEModel, load_serving_config

__all__ = ["Request", "RequestError", "load_requests", "synthetic_requests", "build_system", "build_model", "serve",
           "serve_in_sim", "run_serving", "pingpong_schedule", "PrefillRouter", "DecodeRouter", "Sampler",
           "model_config"]


class RequestError(ValueError):
    pass


@dataclass
class Request:
    id: str
    prompt: list
    max_tokens: int
    cls: str = "interactive"
    arrival_s: float = 0.0
    # filled by the run
    tokens: list = field(default_factory=list)
    times: list = field(default_factory=list)
    ttft_s: float = 0.0
    ready_s: float = 0.0
    worker: int = -1
    decode_worker: int = -1
    overlap_blocks: int = 0
    kv: object = None
    spec_proposed: int = 0
    spec_accepted: int = 0
    done: bool = False               # a stop token (end of text) was generated

    def to_json(self):
        return {"id": self.id, "prompt": self.prompt, "max_tokens": self.max_tokens, "class": self.cls,
                "arrival_s": self.arrival_s}


# ------------------------------------------------------------------------------------------------
# Workloads
# ------------------------------------------------------------------------------------------------

def _check_request(d, where, mcfg, classes, tokenizer=None):
    if not isinstance(d, dict):
        raise RequestError(f"{where}: expected a JSON object, got {type(d).__name__}")
    unknown = set(d) - {"id", "prompt", "max_tokens", "class", "arrival_s"}
    if unknown:
        raise RequestError(f"{where}: unknown field '{sorted(unknown)[0]}' (fields: id, prompt, max_tokens, "
                           f"class, arrival_s)")
    if "prompt" not in d:
        raise RequestError(f"{where}: field 'prompt' is missing (a list of token ids)")
    p = d["prompt"]
    if isinstance(p, str) and tokenizer is not None:
        p = tokenizer.encode(p)
        if not p:
            raise RequestError(f"{where}: field 'prompt': the text encodes to no tokens")
    if not isinstance(p, list) or not p:
        raise RequestError(f"{where}: field 'prompt': expected a non-empty list of token ids"
                           + (" or a text" if tokenizer is not None else ""))
    for i, t in enumerate(p):
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < mcfg.vocab:
            raise RequestError(f"{where}: field 'prompt'[{i}]: {t!r} is not a token id in [0, {mcfg.vocab})")
    mt = d.get("max_tokens", 16)
    if isinstance(mt, bool) or not isinstance(mt, int) or mt < 1:
        raise RequestError(f"{where}: field 'max_tokens': {mt!r} is not an integer >= 1")
    if len(p) + mt > mcfg.max_seq:
        raise RequestError(f"{where}: field 'max_tokens': prompt ({len(p)}) + max_tokens ({mt}) exceeds the "
                           f"model's max_seq {mcfg.max_seq}")
    cls = d.get("class", "interactive")
    if cls not in classes:
        raise RequestError(f"{where}: field 'class': {cls!r} is not one of {', '.join(sorted(classes))}")
    arr = d.get("arrival_s", 0.0)
    if isinstance(arr, bool) or not isinstance(arr, (int, float)) or not math.isfinite(arr) or arr < 0:
        raise RequestError(f"{where}: field 'arrival_s': {arr!r} is not a number >= 0")
    rid = d.get("id")
    if rid is not None and not isinstance(rid, (str, int)):
        raise RequestError(f"{where}: field 'id': expected a string or an integer")
    return Request(str(rid) if rid is not None else "", list(p), mt, cls, float(arr))


def load_requests(path, mcfg, classes, tokenizer=None):
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise RequestError(f"{path}: cannot read: {e.strerror}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise RequestError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
        r = _check_request(d, f"{path}:{n}", mcfg, classes, tokenizer)
        r.id = r.id or f"r{len(out)}"
        out.append(r)
    if not out:
        raise RequestError(f"{path}: no requests (one JSON object per line)")
    return out


def synthetic_requests(n, mcfg, syn):
    """n requests over a few shared prefixes (system prompts), alternating classes, fixed spacing."""
    rng = np.random.default_rng(syn.get("seed", 7))
    prefixes = [rng.integers(0, mcfg.vocab, size=syn.get("prefix_len", 16)).tolist()
                for _ in range(syn.get("prefixes", 2))]
    lo, hi = syn.get("suffix_len", [4, 12])
    mlo, mhi = syn.get("max_tokens", [8, 16])
    out = []
    for i in range(n):
        suffix = rng.integers(0, mcfg.vocab, size=int(rng.integers(lo, hi + 1))).tolist()
        out.append(Request(f"s{i}", prefixes[i % len(prefixes)] + suffix, int(rng.integers(mlo, mhi + 1)),
                           "interactive" if i % 4 != 3 else "batch", i * syn.get("interarrival_s", 2e-5)))
    return out


# ------------------------------------------------------------------------------------------------
# Scheduling helpers
# ------------------------------------------------------------------------------------------------

def pingpong_schedule(chains, overlap=True, start=0.0, free=None):
    """chains: per micro-batch, a list of (resource, seconds) stages that must run in order.
    Without overlap the micro-batches run one after the other; with overlap each resource takes
    the ready stage that can start earliest (ties: the earlier micro-batch).  Stages start at
    `start` or later, and not before a resource's time in `free` (resources shared with other
    decode workers, e.g. the LPU tray; updated in place).  Returns the makespan from `start`."""
    free = {} if free is None else free
    if not overlap:
        t = start
        for ch in chains:
            for res, d in ch:
                t = max(t, free.get(res, 0.0)) + d
                free[res] = t
        return t - start
    ready, idx = [start] * len(chains), [0] * len(chains)
    end = start
    while True:
        best = None
        for m, ch in enumerate(chains):
            if idx[m] < len(ch):
                res, d = ch[idx[m]]
                t0 = max(ready[m], free.get(res, 0.0))
                if best is None or t0 < best[0]:
                    best = (t0, m, res, d)
        if best is None:
            return end - start
        t0, m, res, d = best
        free[res] = ready[m] = t0 + d
        idx[m] += 1
        end = max(end, t0 + d)


class PrefillRouter:
    """KV-aware routing over prefill workers: cost = overlap_weight x blocks to prefill + queued
    blocks on the worker (Dynamo's router cost, prefix overlap against load)."""

    def __init__(self, workers, block, weight):
        self.block, self.weight = block, weight
        self.cache = [set() for _ in range(workers)]
        self.free = [0.0] * workers
        self.queue = [[] for _ in range(workers)]      # (end time, blocks)

    def blocks(self, prompt):
        b = self.block
        return [tuple(prompt[:k + b]) for k in range(0, len(prompt) - len(prompt) % b, b)]

    def overlap(self, w, blocks):
        n = 0
        for blk in blocks:
            if blk not in self.cache[w]:
                break
            n += 1
        return n

    def choose(self, prompt, now):
        blocks = self.blocks(prompt)
        total = math.ceil(len(prompt) / self.block)
        best = None
        for w in range(len(self.cache)):
            load = sum(b for end, b in self.queue[w] if end > now)
            cost = self.weight * (total - self.overlap(w, blocks)) + load
            if best is None or cost < best[0]:
                best = (cost, w)
        return best[1], self.overlap(best[1], blocks)

    def commit(self, w, prompt, end):
        blocks = self.blocks(prompt)
        self.cache[w].update(blocks)
        self.queue[w].append((end, math.ceil(len(prompt) / self.block)))
        self.free[w] = end


class DecodeRouter:
    """KV-aware routing over decode workers: a request whose KV arrives goes to the worker holding
    the fewest KV blocks (its active batch plus its queue: what its attention reads every step
    and what its HBM holds), ties to the lowest index."""

    def __init__(self, workers, block):
        self.block = block
        self.n = workers

    def kv_blocks(self, r):
        return math.ceil((len(r.prompt) + len(r.tokens)) / self.block)

    def choose(self, r, workers):
        loads = [sum(self.kv_blocks(q) for q in w.active + w.queue) for w in workers]
        return min(range(self.n), key=lambda i: (loads[i], i)), loads


@dataclass
class DecodeWorker:
    """One decode GPU: its own clock, batch and queue; the LPU tray is shared by every worker."""
    index: int
    t: float = 0.0
    active: list = field(default_factory=list)
    queue: list = field(default_factory=list)
    steps: list = field(default_factory=list)     # (batch size, seconds, tokens emitted)


class Sampler:
    """The token choice: greedy (temperature 0, the default) or temperature / top-k sampling.  The
    random draw for a request's token at position p depends only on (seed, request key, p), so
    batching, micro-batches and speculation give the tokens of the one-at-a-time reference."""

    def __init__(self, temperature=0.0, top_k=0, seed=0):
        self.temperature, self.top_k, self.seed = float(temperature), int(top_k), int(seed)

    @property
    def greedy(self):
        return self.temperature <= 0

    def __call__(self, logits, key, pos):
        if self.greedy:
            return int(np.argmax(logits))
        lg = np.asarray(logits, np.float64) / self.temperature
        idx = np.argsort(-lg, kind="stable")[:self.top_k] if self.top_k > 0 else np.arange(len(lg))
        p = np.exp(lg[idx] - lg[idx].max())
        c = np.cumsum(p / p.sum())
        u = np.random.default_rng([self.seed, int(key), int(pos)]).random()
        return int(idx[min(int(np.searchsorted(c, u, side="right")), len(idx) - 1)])

    def describe(self):
        if self.greedy:
            return "greedy"
        return f"temperature {self.temperature:g}" + (f", top-k {self.top_k}" if self.top_k else "") + \
            f", seed {self.seed}"


def _key(r):
    return zlib.crc32(r.id.encode())


# ------------------------------------------------------------------------------------------------
# The system
# ------------------------------------------------------------------------------------------------

class System:
    def __init__(self, scfg, model, gpu, ffn, mode, sampler=None):
        self.scfg, self.model, self.gpu, self.ffn, self.mode = scfg, model, gpu, ffn, mode
        self.sampler = sampler or Sampler()
        dyn = scfg["dynamo"]
        # ping-pong needs two resources: with the FFN on the GPU there is one, so no split
        self.M = max(1, int(dyn.get("micro_batches", 1))) if ffn.kind == "lpu" else 1
        self.pingpong = bool(dyn.get("pingpong", True)) and self.M > 1
        self.K = int(dyn.get("speculate", 0))
        self.max_batch = int(dyn.get("max_batch", 16))
        self.W = int(dyn.get("decode_workers", 1))
        if self.W < 1:
            raise ValueError(f"serving config: dynamo.decode_workers must be >= 1, got {self.W}")
        self.classes = scfg["classes"]
        self.steps = []                      # (batch size, seconds, tokens emitted)
        self.gpu_decode_s = 0.0              # attention and LM head of the decode forwards (summed)

    # --- numerics: one forward over a set of rows (token, position, cache) ----------------------
    async def forward(self, rows, split=None):
        """rows: [(tok, pos, kv, key)], positions of one request consecutive and in order.  Runs
        every layer: attention per row on the GPU model, the MoE of all rows of a micro-batch as one
        FFN call.  Returns (next-token per row, chains of (resource, seconds) per micro-batch)."""
        m, c = self.model, self.model.cfg
        split = split or [list(range(len(rows)))]
        hs = [m.embed(r[0], r[1]) for r in rows]
        chains = [[] for _ in split]
        ffn_res = "lpu" if self.ffn.kind == "lpu" else "gpu"
        for layer in range(c.layers):
            for mb, idxs in enumerate(split):
                for i in idxs:
                    hs[i] = m.attn_row(layer, hs[i], rows[i][2], rows[i][1])
                chains[mb].append(("gpu", self.gpu.attention(m, [rows[i][1] + 1 for i in idxs])))
                self.gpu_decode_s += chains[mb][-1][1]
                routed = [m.boundary(layer, m.ffn_in(layer, hs[i])) for i in idxs]
                ys, secs, _ = await self.ffn.moe(layer, routed)
                for i, r, y in zip(idxs, routed, ys):
                    hs[i] = hs[i] + m.combine(layer, r, y)
                chains[mb].append((ffn_res, secs))
        for mb, idxs in enumerate(split):
            chains[mb].append(("gpu", self.gpu.lm_head(m, len(idxs))))
            self.gpu_decode_s += chains[mb][-1][1]
        return [self.sampler(m.logits(h), r[3], r[1] + 1) for h, r in zip(hs, rows)], chains

    def prefill_numbers(self, req):
        """Prefill on a GPU worker (the model's ``prefill_row``: the synthetic MoE runs the same
        integer experts there, SmolLM2 its float FFN); fills the KV cache, returns the first token
        and the per-layer expert token counts."""
        m, c = self.model, self.model.cfg
        kv = m.new_kv()
        counts = [dict() for _ in range(c.layers)]
        h = None
        for p, tok in enumerate(req.prompt):
            h = m.prefill_row(tok, p, kv, counts)
        req.kv = kv
        return self.sampler(m.logits(h), _key(req), len(req.prompt)), counts

    def prefill_seconds(self, req, counts):
        m = self.model
        new = len(req.prompt) - req.overlap_blocks * self.scfg["dynamo"]["block_size"]
        ctxs = list(range(len(req.prompt) - new + 1, len(req.prompt) + 1))
        t = 0.0
        for layer in range(m.cfg.layers):
            share = new / len(req.prompt)
            t += self.gpu.attention(m, ctxs) + self.gpu.moe_ffn(
                m, {e: max(1, round(k * share)) for e, k in counts[layer].items()})
        return t + self.gpu.lm_head(m, 1)

    # --- decode -----------------------------------------------------------------------------------
    def _split(self, batch):
        M = min(self.M, len(batch))
        return [list(range(len(batch)))[k::M] for k in range(M)]

    def _on(self, chains, w):
        """A worker's chains: its own GPU (``gpu<w>``); the LPU tray is one shared resource."""
        return [[(f"gpu{w}" if res == "gpu" else res, d) for res, d in ch] for ch in chains]

    async def decode_step(self, batch, w=0, start=0.0, free=None):
        """One token per request (non-speculative) on decode worker w from time `start`; returns
        seconds, tokens per request."""
        rows = [(r.tokens[-1], len(r.prompt) + len(r.tokens) - 1, r.kv, _key(r)) for r in batch]
        toks, chains = await self.forward(rows, self._split(batch))
        for r in batch:
            r.kv.n += 1
        return pingpong_schedule(self._on(chains, w), self.pingpong, start, free), [[t] for t in toks]

    async def spec_step(self, batch, w=0, start=0.0, free=None):
        """Speculative: K draft tokens per request from the draft model (the synthetic MoE: its
        attention-free draft, head on the tray; SmolLM2: its first ``draft_layers`` layers, attention
        and LM head on the GPU model, FFNs on the tray), then one verification forward of K+1
        positions per request (target model); accept the longest agreeing prefix plus the target's
        next token."""
        m = self.model
        K = [min(self.K, r.max_tokens - len(r.tokens) - 1) for r in batch]
        drafts = [[] for _ in batch]
        chain = []
        ffn_res = "lpu" if self.ffn.kind == "lpu" else "gpu"
        cur = [(r.tokens[-1], len(r.prompt) + len(r.tokens) - 1) for r in batch]
        for j in range(max(K)):
            live = [i for i in range(len(batch)) if j < K[i]]
            hs = {i: m.draft_in(*cur[i]) for i in live}
            for layer in range(m.draft_layers):
                if m.draft_attention:
                    for i in live:
                        hs[i] = m.attn_row(layer, hs[i], batch[i].kv, cur[i][1])
                    chain.append(("gpu", self.gpu.attention(m, [cur[i][1] + 1 for i in live])))
                routed = [m.boundary(layer, m.ffn_in(layer, hs[i])) for i in live]
                ys, secs, _ = await self.ffn.moe(layer, routed)
                for i, r, y in zip(live, routed, ys):
                    hs[i] = hs[i] + m.combine(layer, r, y)
                chain.append((ffn_res, secs))
            if m.draft_head == "gpu":
                chain.append(("gpu", self.gpu.lm_head(m, len(live))))
            else:
                chain.append((ffn_res, self.ffn.draft_head_s(len(live))))
            for i in live:
                d = self.sampler(m.draft_logits(hs[i]), _key(batch[i]), cur[i][1] + 1)
                drafts[i].append(d)
                cur[i] = (d, cur[i][1] + 1)
        rows, owner = [], []
        for i, r in enumerate(batch):
            p0 = len(r.prompt) + len(r.tokens) - 1
            for j, tok in enumerate([r.tokens[-1]] + drafts[i]):
                rows.append((tok, p0 + j, r.kv, _key(r)))
                owner.append(i)
        split = self._split(batch)
        split = [[k for k, o in enumerate(owner) if o in set(s)] for s in split]
        toks, chains = await self.forward(rows, split)
        free = {} if free is None else free
        t_drafted = start + pingpong_schedule(self._on([chain], w), False, start, free)
        t_verify = pingpong_schedule(self._on(chains, w), self.pingpong, t_drafted, free)
        out = []
        k = 0
        for i, r in enumerate(batch):
            target = toks[k:k + K[i] + 1]
            k += K[i] + 1
            acc = 0
            while acc < K[i] and drafts[i][acc] == target[acc]:
                acc += 1
            r.spec_proposed += K[i]
            r.spec_accepted += acc
            r.kv.n += acc + 1            # positions p0 .. p0 + acc now hold accepted tokens' K/V
            out.append(target[:acc + 1])
        return t_drafted - start + t_verify, out

    def estimate_ok(self, active, cand, steps=None):
        """Latency targets: admit `cand` only if the last measured step time at that batch size
        (on this decode worker) keeps every active request within its tokens-per-output-time target."""
        steps = self.steps if steps is None else steps
        targets = [self.classes[r.cls]["tpot_s"] for r in active + [cand]]
        n = len(active) + 1
        seen = [s for b, s, _ in steps if b >= n]
        est = min(seen) if seen else (steps[-1][1] if steps else 0.0)
        return est <= min(targets) or not active

    async def run(self, requests):
        dyn = self.scfg["dynamo"]
        router = PrefillRouter(int(dyn.get("prefill_workers", 1)), int(dyn["block_size"]),
                               float(dyn.get("overlap_weight", 1.0)))
        for r in sorted(requests, key=lambda r: (r.arrival_s, r.id)):
            w, ov = router.choose(r.prompt, r.arrival_s)
            r.worker, r.overlap_blocks = w, ov
            first, counts = self.prefill_numbers(r)
            start = max(r.arrival_s, router.free[w])
            end = start + self.prefill_seconds(r, counts)
            router.commit(w, r.prompt, end)
            r.tokens, r.times = [first], [end]
            r.done = first in self.model.stop_ids
            r.ttft_s = end - r.arrival_s
            r.ready_s = end + dyn["kv_transfer_latency_s"] + self.gpu.kv_bytes(self.model, len(r.prompt)) / \
                dyn["kv_transfer_bandwidth"]
        pending = sorted([r for r in requests if len(r.tokens) < r.max_tokens and not r.done],
                         key=lambda r: (r.ready_s, r.id))
        workers = [DecodeWorker(i) for i in range(self.W)]
        droute = DecodeRouter(self.W, int(dyn["block_size"]))
        free = {}                                   # shared resources (the LPU tray): busy until
        while pending or any(w.active or w.queue for w in workers):
            live = [w for w in workers if w.active or w.queue] or workers
            w = min(live, key=lambda x: (x.t, x.index))
            if not (w.active or w.queue):           # idle: wait for the next KV to arrive
                w.t = max(w.t, pending[0].ready_s)
            for r in [r for r in pending if r.ready_s <= w.t]:      # route arrived KV (KV-aware)
                k, _ = droute.choose(r, workers)
                r.decode_worker = k
                workers[k].queue.append(r)
                pending.remove(r)
            w.queue.sort(key=lambda r: (r.cls != "interactive", r.ready_s, r.id))
            for r in [r for r in w.queue if r.ready_s <= w.t]:
                if len(w.active) < self.max_batch and (r.cls == "interactive" or self.estimate_ok(w.active, r, w.steps)):
                    w.active.append(r)
                    w.queue.remove(r)
            if not w.active:
                if w.queue:
                    w.t = max(w.t, min(r.ready_s for r in w.queue))
                continue
            if self.K > 0:
                dt, new = await self.spec_step(w.active, w.index, w.t, free)
            else:
                dt, new = await self.decode_step(w.active, w.index, w.t, free)
            w.t += dt
            rec = (len(w.active), dt, sum(len(x) for x in new))
            w.steps.append(rec)
            self.steps.append(rec)
            for r, toks in zip(w.active, new):
                for tok in toks[:r.max_tokens - len(r.tokens)]:
                    r.tokens.append(tok)
                    r.times.append(w.t)
                    if tok in self.model.stop_ids:
                        r.done = True
                        break
            w.active = [r for r in w.active if len(r.tokens) < r.max_tokens and not r.done]
        return requests


# ------------------------------------------------------------------------------------------------
# Building, running, reporting
# ------------------------------------------------------------------------------------------------

def _pct(xs, q):
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if len(xs) else 0.0


def report(requests, system, wall_s):
    reqs, all_lat = [], []
    for r in requests:
        lat = [r.times[0] - r.arrival_s] + [b - a for a, b in zip(r.times, r.times[1:])]
        all_lat += lat
        dec = r.times[-1] - r.times[0]
        tps = (len(r.tokens) - 1) / dec if len(r.tokens) > 1 and dec > 0 else 1.0 / max(r.ttft_s, 1e-30)
        tgt = system.classes[r.cls]
        reqs.append({
            "id": r.id, "class": r.cls, "tokens": [int(t) for t in r.tokens], "ttft_s": float(r.ttft_s),
            "tokens_per_s": float(tps), "p50_token_latency_s": _pct(lat, 50), "p99_token_latency_s": _pct(lat, 99),
            "prefill_worker": r.worker, "decode_worker": r.decode_worker, "prefix_blocks_reused": r.overlap_blocks,
            "met_ttft": bool(r.ttft_s <= tgt["ttft_s"]),
            "met_tpot": bool((dec / max(len(r.tokens) - 1, 1)) <= tgt["tpot_s"]),
            "spec_proposed": r.spec_proposed, "spec_accepted": r.spec_accepted,
            "token_latencies_s": [float(x) for x in lat]})
        tk = getattr(system.model, "tokenizer", None)
        if tk is not None:
            reqs[-1]["text"] = tk.decode(r.tokens)
            reqs[-1]["prompt_tokens"] = len(r.prompt)
    t0 = min(r.arrival_s for r in requests)
    span = max(r.times[-1] for r in requests) - t0
    ntok = sum(len(r.tokens) for r in requests)
    classes = {}
    for q in reqs:
        c = classes.setdefault(q["class"], {"requests": 0, "met_ttft": 0, "met_tpot": 0})
        c["requests"] += 1
        c["met_ttft"] += q["met_ttft"]
        c["met_tpot"] += q["met_tpot"]
    prop = sum(r.spec_proposed for r in requests)
    totals = {
        "requests": len(reqs), "tokens": ntok, "makespan_s": span,
        "aggregate_tokens_per_s": ntok / span if span > 0 else 0.0,
        "mean_tokens_per_s_per_user": float(np.mean([q["tokens_per_s"] for q in reqs])),
        "p50_ttft_s": _pct([q["ttft_s"] for q in reqs], 50), "p99_ttft_s": _pct([q["ttft_s"] for q in reqs], 99),
        "p50_token_latency_s": _pct(all_lat, 50), "p99_token_latency_s": _pct(all_lat, 99),
        "decode_steps": len(system.steps),
        "mean_decode_batch": float(np.mean([b for b, _, _ in system.steps])) if system.steps else 0.0,
        "mean_step_s": float(np.mean([s for _, s, _ in system.steps])) if system.steps else 0.0,
        "prefix_blocks_reused": sum(q["prefix_blocks_reused"] for q in reqs),
        "slo": classes,
        "ffn": system.mode, "ffn_backend": system.ffn.stats,
        "micro_batches": system.M, "pingpong": system.pingpong, "speculate": system.K,
        "decode_workers": system.W,
        "spec_acceptance": (sum(r.spec_accepted for r in requests) / prop) if prop else None,
        # where the decode forwards' time goes, summed over every call (not the critical path):
        # GPU attention + LM head, and the FFN side (GPU roofline, or network / C2C hops / chip cycles)
        "time_split_s": {"gpu_attention_and_head_s": system.gpu_decode_s, **system.ffn.split},
        "wall_s": wall_s,
    }
    return {"requests": reqs, "totals": totals}


_MODELS = {}


def build_model(scfg):
    """The serving config's model: the synthetic MoE (model.name 'synthetic'), or SmolLM2-135M
    from its GGUF (model.name 'smollm2-135m', cut to model.layers, int8 FFNs calibrated).  Built
    once per process and config (the GGUF takes seconds to read, the calibration longer)."""
    m = scfg["model"]
    key = json.dumps(m, sort_keys=True)
    if key not in _MODELS:
        if m.get("name", "synthetic") == "synthetic":
            _MODELS[key] = MoEModel.build(ModelConfig.from_dict(m))
        else:
            from tinylpu.sim.serving.smollm2 import load_smollm2
            _MODELS[key] = load_smollm2(m["layers"], m["max_seq"], groups=m.get("quant_groups", 1),
                                        draft_layers=m.get("draft_layers", 8),
                                        **({"scheme": m["quant_scheme"]} if "quant_scheme" in m else {}))
    return _MODELS[key]


def model_config(scfg, model=None):
    """The config the request checks use: the synthetic model's, or the GGUF model's."""
    return (model or build_model(scfg)).cfg


def build_system(scfg, mode="lpu", engine="golden", dut=None, model=None, sampler=None):
    model = model or build_model(scfg)
    gpu = load_gpu(scfg.get("gpu_config"))
    ffn = TrayFFN(model, {**scfg["lpu"], **scfg.get("draft", {})}, engine, dut) if mode == "lpu" else GpuFFN(model, gpu)
    return System(scfg, model, gpu, ffn, mode, sampler)


async def serve(requests, scfg, mode="lpu", engine="golden", dut=None, reference=False, sampler=None):
    t0 = time.perf_counter()
    system = build_system(scfg, mode, engine, dut, sampler=sampler)
    t1 = time.perf_counter()
    await system.ffn.load()
    t_load = time.perf_counter() - t1
    await system.run(requests)
    rep = report(requests, system, time.perf_counter() - t0)
    rep["totals"]["load_s"] = t_load
    rep["totals"]["sampling"] = system.sampler.describe()
    rep["totals"]["engine"] = engine if mode == "lpu" else "gpu"
    if reference:
        ident = []
        for r in requests:
            ref = system.model.generate_reference(r.prompt, r.max_tokens, system.sampler, _key(r))
            ident.append(ref == [int(t) for t in r.tokens])
        rep["totals"]["reference_identical"] = all(ident)
        rep["totals"]["reference_identical_per_request"] = ident
    return rep


async def serve_in_sim(dut, requests, scfg, mode="lpu", reference=False):
    """The cocotb entry (``host.api.run_in_simulation``): the whole serving run against the RTL."""
    reqs = [Request(d["id"], d["prompt"], d["max_tokens"], d["class"], d["arrival_s"]) for d in requests]
    rep = await serve(reqs, scfg, mode, "rtl", dut, reference)
    return rep


def run_serving(requests, scfg, mode="lpu", engine="golden", reference=False, sim=None, sampler=None):
    """Run a workload to completion on an engine; returns the report dict."""
    from tinylpu.sim.host.api import drive, run_in_simulation
    if engine == "rtl" and mode == "lpu":
        t0 = time.perf_counter()
        rep = run_in_simulation("tinylpu.sim.serving.serve:serve_in_sim",
                                {"requests": [r.to_json() for r in requests], "scfg": scfg, "mode": mode,
                                 "reference": reference},
                                config=scfg["lpu"].get("chip_config", "tiny"), sim=sim)
        rep["totals"]["wall_s_with_launch"] = time.perf_counter() - t0
        return rep
    return drive(serve(requests, scfg, mode, engine, None, reference, sampler))


def default_config(path=None, **over):
    scfg = load_serving_config(path)
    for k, v in over.items():
        sec, key = k.split(".")
        scfg[sec][key] = v
    return scfg
