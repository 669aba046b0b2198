"""The FFN compiler on the golden model: exact integers, exact cycles, float accuracy, errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tinylpu.config import load_config
from tinylpu.firmware.compiler import CompileError, compile_ffn
from tinylpu.firmware.quant import FFNWeights, WeightsError, float_ffn, load_weights, quantize_ffn
from tinylpu.sim.host.api import run_compiled

CFG = load_config("tiny")


def layer(dm, dff, act, gated=False, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    return FFNWeights(rng.normal(size=(dm, dff)) / np.sqrt(dm), rng.normal(size=(dff, dm)) / np.sqrt(dff),
                      rng.normal(size=(dm, dff)) / np.sqrt(dm) if gated else None,
                      rng.normal(size=dff) * 0.1 if bias else None, rng.normal(size=dm) * 0.1 if bias else None,
                      rng.normal(size=dff) * 0.1 if (bias and gated) else None, act)


def run(w, x, cfg=CFG):
    q = quantize_ffn(w, x)
    c = compile_ffn(q, cfg, len(x))
    xq = q.quantize_input(x)
    out = run_compiled(c, xq)
    return q, c, out, xq


def cosine(a, b):
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("act,gated", [("relu", False), ("gelu", False), ("gelu_tanh", False), ("silu", False),
                                       ("swiglu", True), ("geglu", True)])
def test_activations_exact_and_accurate(act, gated):
    w = layer(32, 48, act, gated)
    x = np.random.default_rng(1).normal(size=(8, 32))
    q, c, out, xq = run(w, x)
    assert out.cycles == c.predicted_cycles
    assert np.array_equal(out.y, q.run_int(xq))
    assert cosine(q.dequantize_output(out.y), float_ffn(w, x)) >= 0.99


@pytest.mark.parametrize("dm,dff,T", [(16, 16, 1), (20, 36, 3), (64, 64, 40), (48, 16, 70)])
def test_shapes_padding_and_token_blocks(dm, dff, T):
    """Dimensions that are not lane multiples are padded; more tokens than acc_depth/2 run in blocks."""
    w = layer(dm, dff, "gelu", seed=dm + dff)
    x = np.random.default_rng(T).normal(size=(T, dm))
    q, c, out, xq = run(w, x)
    assert out.cycles == c.predicted_cycles
    assert np.array_equal(out.y, q.run_int(xq))
    assert out.y.shape == (T, dm)


def test_report_fields_and_regimes():
    w = layer(64, 64, "relu", bias=False)
    x = np.random.default_rng(2).normal(size=(64, 64))
    q, c, out, _ = run(w, x)
    r = c.report
    for key in ("lanes", "predicted_cycles", "mxm_utilization", "weight_bw_utilization", "sram_bytes_used"):
        assert key in r
    assert r["mxm_utilization"] >= 0.95          # many tokens: 64 tokens, 64 x 64
    w = layer(64, 128, "swiglu", gated=True)
    x = np.random.default_rng(3).normal(size=(1, 64))
    q, c, out, _ = run(w, x)
    assert c.report["weight_bw_utilization"] >= 1 / 1.1   # decode: within 10 % of the weight roofline


def test_trace_and_listing():
    w = layer(16, 32, "relu")
    x = np.random.default_rng(4).normal(size=(4, 16))
    q, c, out, _ = run(w, x)
    tr = json.loads(c.trace_json())
    names = {e["name"] for e in tr["traceEvents"] if e["ph"] == "X"}
    assert {"LW", "MM", "EMIT", "REQL", "LUT", "READ", "WRITE", "LDM"} <= names
    text = c.listing_text()
    assert "; cycle" in text and "HALT" in text


def test_does_not_fit_sram():
    w = layer(256, 512, "relu", bias=False)
    q = quantize_ffn(w, np.ones((4, 256)))
    with pytest.raises(CompileError, match=r"FFN 256x512 for 4 tokens needs \d+ bytes of SRAM .* config tiny has "
                                           r"65536 \(8 banks x 512 vectors x 16 B\)"):
        compile_ffn(q, CFG, 4)


def test_weights_file_errors(tmp_path):
    rng = np.random.default_rng(0)
    good = {"w1": rng.normal(size=(16, 32)), "w2": rng.normal(size=(32, 16))}
    cases = [
        ({"w1": good["w1"]}, "missing key 'w2'"),
        ({**good, "w2": rng.normal(size=(16, 16))}, "key 'w2' has shape (16, 16); expected (32, 16)"),
        ({**good, "b1": np.full(32, np.nan)}, "key 'b1' contains 32 NaN or infinite values"),
        ({**good, "w1": np.array([["a"] * 32] * 16)}, "key 'w1' has dtype <U1; expected a float array"),
        ({**good, "activation": np.array("swish")}, "activation 'swish' is not one of"),
        ({**good, "activation": np.array("swiglu")}, "activation 'swiglu' needs key 'w3'"),
        ({**good, "w9": good["w1"]}, "unknown key 'w9'"),
    ]
    for i, (d, msg) in enumerate(cases):
        p = tmp_path / f"w{i}.npz"
        np.savez(p, **d)
        with pytest.raises(WeightsError) as ei:
            load_weights(str(p))
        assert str(p) in str(ei.value) and msg in str(ei.value), str(ei.value)
    with pytest.raises(WeightsError, match="file not found"):
        load_weights(str(tmp_path / "none.npz"))


def test_cli_ffn_golden(tmp_path):
    w = layer(32, 64, "swiglu", gated=True)
    np.savez(tmp_path / "W.npz", w1=w.w1, w2=w.w2, w3=w.w3, b1=w.b1, b2=w.b2, b3=w.b3, activation="swiglu")
    x = np.random.default_rng(5).normal(size=(4, 32)).astype(np.float32)
    np.save(tmp_path / "X.npy", x)
    cmd = [sys.executable, "-m", "tinylpu.cli", "ffn", "--weights", str(tmp_path / "W.npz"), "--input",
           str(tmp_path / "X.npy"), "--output", str(tmp_path / "Y.npy"), "--report", str(tmp_path / "R.json"),
           "--artifacts", str(tmp_path / "art")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "R.json").read_text())
    assert rep["engine"] == "golden" and rep["measured_cycles"] == rep["predicted_cycles"]
    y = np.load(tmp_path / "Y.npy")
    assert y.dtype == np.float32 and y.shape == (4, 32)
    assert cosine(y.astype(np.float64), float_ffn(w, x)) >= 0.99
    for f in ("program.bin", "listing.s", "trace.json", "mem_image.npz", "report.json"):
        assert (tmp_path / "art" / f).exists()
    # bad input: wrong width
    np.save(tmp_path / "X2.npy", x[:, :16])
    cmd[7] = str(tmp_path / "X2.npy")
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "shape (4, 16); expected (tokens, 32)" in r.stderr and "Traceback" not in r.stderr
    np.save(tmp_path / "X3.npy", x.astype(np.int32))
    cmd[7] = str(tmp_path / "X3.npy")
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "expected float32 activations" in r.stderr


def test_moe_experts_resident_in_one_chip():
    """Four small experts share one SRAM; the host picks one per run by loading its program."""
    from tinylpu.firmware.compiler import compile_moe
    rng = np.random.default_rng(9)
    x = rng.normal(size=(4, 16))
    experts = [quantize_ffn(layer(16, 32, "swiglu", gated=True, seed=e), x) for e in range(4)]
    compiled = compile_moe(experts, CFG, 4)
    image = compiled[0].mem_image
    assert all(c.mem_image is image for c in compiled)
    assert len({id(c.x_layout[0]) for c in compiled}) == 1 or all(
        (c.x_layout[0].bank, c.x_layout[0].addr) == (compiled[0].x_layout[0].bank, compiled[0].x_layout[0].addr)
        for c in compiled)
    for e in (2, 0, 3):
        xq = experts[e].quantize_input(x)
        out = run_compiled(compiled[e], xq)
        assert np.array_equal(out.y, experts[e].run_int(xq))
        assert out.cycles == compiled[e].predicted_cycles
    too_many = [quantize_ffn(layer(64, 128, "swiglu", gated=True, seed=e), rng.normal(size=(4, 64))) for e in range(3)]
    with pytest.raises(CompileError, match=r"expert 2 of 3: .* already used by earlier experts"):
        compile_moe(too_many, CFG, 4)
