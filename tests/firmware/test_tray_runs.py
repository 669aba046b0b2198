"""Tray programs in token chunks (``TrayCompiled.runs``): a layer whose tokens do not fit one tray
program (SRAM, a queue, the RX buffers) runs as several runs on the chips' resident images."""

import time

import numpy as np
import pytest

from tests.firmware.test_tray_compiler import layer
from tinylpu.config import load_config
from tinylpu.firmware.compiler import CompileError
from tinylpu.firmware.quant import FFNWeights, quantize_ffn
from tinylpu.firmware.tray import _compile_tp_gather, compile_ep, compile_tp
from tinylpu.sim.golden.tray import run_tray_golden

CFG = load_config("tray")


def _check_runs(tc, res, cfg):
    """Measured = predicted per chip per run; runs of one size share one program per chip; every
    chip keeps one resident image; every program fits the queues."""
    assert res.run_cycles == [r.predicted_cycles for r in tc.runs]
    assert res.cycles == tc.predicted_cycles
    assert tc.report["predicted_cycles"] == sum(max(rc) for rc in res.run_cycles)
    for c in tc.chips:
        if c is None:
            continue
        by_size = {}
        for r in c.runs:
            assert by_size.setdefault(r.tokens, r.program) is r.program
            assert max(len(q) for q in r.program.queues.values()) <= cfg.queue_depth
    return tc


def test_tp_256_tokens_runs_in_chunks_on_the_golden_tray():
    """Issue 16: the 64 x 256 SwiGLU of 256 tokens does not fit one program on `tray` (the H tiles of
    all tokens do not fit a chip's SRAM); it runs in chunks, bit-identical to one chip, every chip
    of every run at its predicted cycle."""
    w = layer(64, 256, 320)
    x = np.random.default_rng(256).normal(size=(256, 64))
    q = quantize_ffn(w, x)
    with pytest.raises(CompileError, match=r"needs \d+ vectors \(\d+ bytes\) in bank .*no room left"):
        _compile_tp_gather(q, CFG, 256, CFG.chips)                 # one program of all 256 tokens
    tc = compile_tp(q, CFG, 256)
    assert len(tc.runs) > 1 and tc.report["runs"] == len(tc.runs)
    assert sum(tc.report["run_tokens"]) == 256 and tc.report["run_token0"][0] == 0
    xq = q.quantize_input(x)
    tray, res = run_tray_golden(tc, [xq] * CFG.chips)
    assert tray.fallbacks == 0
    _check_runs(tc, res, CFG)
    assert np.array_equal(res.y[tc.root], q.run_int(xq))
    # chunks cost per token no more than the largest chunk alone would
    big = max(tc.report["run_tokens"])
    assert tc.cycles <= -(-256 // big) * max(tc.report["run_cycles"])
    assert sum(res.link_vectors.values()) == tc.report["link_vectors"]


def test_tp_partial_split_in_chunks():
    """The partial split of a layer whose root cannot hold every worker's partial sums of 19 tokens
    (the buffers of chip 0) compiles in chunks too (two run sizes on one image per chip),
    bit-identical, cycles as predicted."""
    w = layer(64, 128, 0)
    x = np.random.default_rng(16).normal(size=(19, 64))
    q = quantize_ffn(w, x)
    tc = compile_tp(q, CFG, 19, 8, split="partial")
    assert tc.report["split"] == "partial" and len(tc.runs) > 1 and len(set(tc.report["run_tokens"])) == 2
    xq = q.quantize_input(x)
    tray, res = run_tray_golden(tc, [xq] * CFG.chips)
    _check_runs(tc, res, CFG)
    assert np.array_equal(res.y[0], q.run_int(xq))


def test_one_run_is_todays_program():
    """A layer that fits keeps one run, and compile_tp's programs and images are the one-program
    compiler's, byte for byte."""
    w = layer(64, 256, 320)
    x = np.random.default_rng(16).normal(size=(16, 64))
    q = quantize_ffn(w, x)
    tc = compile_tp(q, CFG, 16, 8, split="gather")
    ref = _compile_tp_gather(q, CFG, 16, 8)
    assert len(tc.runs) == 1 and "runs" not in tc.report
    assert tc.predicted_cycles == ref.predicted_cycles == tc.runs[0].predicted_cycles
    for c, r, run in zip(tc.chips, ref.chips, tc.runs[0].chips):
        assert (c is None) == (r is None) == (run is None)
        if c is not None:
            assert c.program.to_bytes() == r.program.to_bytes() and run.program is c.program
            assert {b: [(a, v.tobytes()) for a, v in lst] for b, lst in c.mem_image.items()} == \
                   {b: [(a, v.tobytes()) for a, v in lst] for b, lst in r.mem_image.items()}


def test_ep_expert_in_runs():
    """Expert parallel: an expert whose 300 tokens do not fit one program runs in several runs on
    its chip while another expert's fits one (the chip idles in the later runs)."""
    rng = np.random.default_rng(3)
    experts = [quantize_ffn(layer(64, 256, 20 + e), rng.normal(size=(8, 64))) for e in range(3)]
    tokens = [300, 5, 0]
    tc = compile_ep(experts, CFG, tokens)
    assert len(tc.chips[0].runs) > 1 and len(tc.chips[1].runs) == 1 and tc.chips[2] is None
    assert len(tc.runs) == len(tc.chips[0].runs) and tc.runs[1].chips[1] is None
    xq = [experts[e].quantize_input(rng.normal(size=(tokens[e], 64))) if tokens[e] else None for e in range(3)]
    tray, res = run_tray_golden(tc, xq + [None] * (CFG.chips - 3))
    _check_runs(tc, res, CFG)
    for e in range(2):
        assert np.array_equal(res.y[e], experts[e].run_int(xq[e]))
    assert res.link_vectors == {}


def test_weights_that_do_not_fit_name_the_sizes():
    """Chunks do not help weights that do not fit: the errors name the sizes and the SRAM."""
    big = quantize_ffn(layer(256, 1024, 0), np.ones((4, 256)))
    t = time.perf_counter()
    with pytest.raises(CompileError, match=r"weight tile w\d\[\d+,\d+\] needs 16 vectors \(256 bytes\).*no room left: "
                                           r"8 banks x 512 vectors x 16 B = 65536 bytes of SRAM.*not even one token of "
                                           r"the 4 at a time fits"):
        compile_tp(big, CFG, 4)
    with pytest.raises(CompileError, match=r"expert 0 \(chip 0, 4 tokens\): FFN 256x1024 gated for 4 tokens needs "
                                           r"\d+ bytes of SRAM \(786432 of int8 weights .*config tray has 65536"):
        compile_ep([big], CFG, [4])
    assert time.perf_counter() - t < 10


@pytest.mark.slow
def test_lpu_tray_576x1536_512_tokens():
    """The LPU-class tray: 576 x 1536 SwiGLU, 512 tokens (one program does not settle its RX
    buffers): chunks, bit-identical, every chip of every run at its predicted cycle."""
    cfg = load_config("lpu-tray")
    rng = np.random.default_rng(0)
    dm, dff = 576, 1536
    w = FFNWeights(rng.normal(size=(dm, dff)) * 0.05, rng.normal(size=(dff, dm)) * 0.05,
                   rng.normal(size=(dm, dff)) * 0.05, activation="silu")
    x = rng.normal(size=(512, dm))
    q = quantize_ffn(w, x[:32])
    tc = compile_tp(q, cfg, 512)
    assert len(tc.runs) > 1
    xq = q.quantize_input(x)
    tray, res = run_tray_golden(tc, [xq] * cfg.chips)
    _check_runs(tc, res, cfg)
    assert np.array_equal(res.y[tc.root], q.run_int(xq))


def _small_sram(tmp_path, base="tray", depth=64):
    """A tray config whose chips have `depth` vectors per MEM bank: a few dozen tokens need chunks."""
    from importlib import resources
    src = resources.files("tinylpu.configs").joinpath(f"{base}.yaml").read_text()
    assert "  depth: 512\n" in src
    p = tmp_path / f"{base}_small.yaml"
    p.write_text(src.replace("  depth: 512\n", f"  depth: {depth}\n").replace(f"name: {base}\n", f"name: {base}_small\n"))
    return p


def test_cli_ffn_chips_runs_every_chunk(tmp_path):
    """`tinylpu ffn --chips 2` on a layer whose 61 tokens need several tray runs (of two sizes):
    every run on the golden tray, the output of all the tokens, cycles as predicted per chip and per
    run."""
    import json
    import subprocess
    import sys
    cfg = _small_sram(tmp_path)
    w = layer(32, 64, 3)
    np.savez(tmp_path / "W.npz", w1=w.w1, w2=w.w2, w3=w.w3, b1=w.b1, b2=w.b2, b3=w.b3)
    x = np.random.default_rng(4).normal(size=(61, 32)).astype(np.float32)
    np.save(tmp_path / "X.npy", x)
    r = subprocess.run([sys.executable, "-m", "tinylpu.cli", "ffn", "--weights", str(tmp_path / "W.npz"), "--input",
                        str(tmp_path / "X.npy"), "--output", str(tmp_path / "Y.npy"), "--report",
                        str(tmp_path / "R.json"), "--chips", "2", "--config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "R.json").read_text())
    assert rep["runs"] > 1 and sum(rep["run_tokens"]) >= 61 and len(set(rep["run_tokens"])) == 2
    assert rep["cycles_match"] and rep["identical_to_single_chip"] and rep["bit_exact_vs_integer_reference"]
    assert len(rep["per_run_measured_cycles"]) == rep["runs"]
    assert rep["measured_cycles"] == rep["predicted_cycles"] == sum(rep["run_cycles"])
    assert np.load(tmp_path / "Y.npy").shape == (61, 32)


@pytest.mark.slow      # two Icarus launches of a duo with its own (small-SRAM) Verilog build
def test_rtl_tray_runs_every_chunk(tmp_path):
    """The RTL tray runs every run of a chunked tray program (each in its own launch on the resident
    images): the root's output of all tokens is the single chip's, every chip's cycles per run as
    predicted."""
    from tinylpu.sim.rtl.tray import run_tray_compiled_rtl
    cfg = load_config(str(_small_sram(tmp_path, "duo")))
    w = layer(32, 64, 5)
    x = np.random.default_rng(6).normal(size=(40, 32))
    q = quantize_ffn(w, x)
    tc = compile_tp(q, cfg, 40, 2)
    assert len(tc.runs) > 1
    xq = q.quantize_input(x)
    y, res = run_tray_compiled_rtl(tc, [xq] * cfg.chips, ppm=[150.0, -150.0])
    assert np.array_equal(y, q.run_int(xq))
    assert res["run_cycles"] == [r.predicted_cycles for r in tc.runs]
    assert [c["cycles"] for c in res["chips"]] == tc.predicted_cycles


def test_runs_on_the_lockstep_tray_equal_the_fast_tray(tmp_path):
    """Every run of a chunked tray program on the per-cycle lockstep tray: the same cycles per chip
    per run, link counts, outputs and final MEM as on the fast tray."""
    cfg = load_config(str(_small_sram(tmp_path)))
    w = layer(32, 64, 7)
    x = np.random.default_rng(8).normal(size=(45, 32))
    q = quantize_ffn(w, x)
    tc = compile_tp(q, cfg, 45, 2)
    assert len(tc.runs) > 1
    xq = q.quantize_input(x)
    fast_tray, fast = run_tray_golden(tc, [xq] * cfg.chips)
    ref_tray, ref = run_tray_golden(tc, [xq] * cfg.chips, lockstep=True)
    assert fast_tray.fallbacks == 0
    assert ref.run_cycles == fast.run_cycles == [r.predicted_cycles for r in tc.runs]
    assert ref.link_vectors == fast.link_vectors
    assert np.array_equal(ref.y[0], fast.y[0]) and np.array_equal(ref.y[0], q.run_int(xq))
    for a, b in zip(fast_tray.chips, ref_tray.chips):
        assert len(list(a.mem)) == cfg.banks
        for bank in a.mem:
            assert np.array_equal(a.mem[bank], b.mem[bank])
