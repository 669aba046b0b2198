"""The FFN compiler on the golden model: exact integers, exact cycles, float accuracy, errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.harness import ffn_layer
from tinylpu.config import load_config
from tinylpu.firmware.compiler import CompileError, compile_ffn
from tinylpu.firmware.quant import FFNWeights, WeightsError, float_ffn, load_weights, quantize_ffn
from tinylpu.sim.host.api import run_compiled
from tinylpu.sim.host.engine import GoldenEngine

CFG = load_config("tiny")


layer = ffn_layer


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


# --- tokens beyond the SRAM: one resident image, runs of token chunks ---------------------------

def tiny_with(**fields):
    """tiny with top-level fields changed (queue_depth), through the loader."""
    import copy

    import yaml

    from tinylpu.config import parse_config
    raw = copy.deepcopy(CFG.raw)
    raw.update(fields, name="tiny-" + "-".join(f"{k}{v}" for k, v in fields.items()))
    return parse_config(yaml.safe_dump(raw), f"<{raw['name']}>")


def test_tokens_stream_through_runs():
    """64 x 256 SwiGLU, 64 tokens: 48 KiB of weight tiles leave too little of the 64 KiB for every
    token's X, Y and intermediates, so the tokens run in chunks (Compiled.runs) on one resident MEM
    image; every run's cycles are predicted exactly and the result is the integer reference."""
    w = layer(64, 256, "swiglu", gated=True, seed=11)
    x = np.random.default_rng(12).normal(size=(64, 64))
    q, c, out, xq = run(w, x)
    runs = c.runs
    assert len(runs) > 1 and [r.token0 for r in runs] == [sum(r.tokens for r in runs[:i]) for i in range(len(runs))]
    assert sum(r.tokens for r in runs) == 64 and max(r.tokens for r in runs) - min(r.tokens for r in runs) <= 1
    assert out.run_cycles == [r.predicted_cycles for r in runs] and out.cycles == c.predicted_cycles
    assert np.array_equal(out.y, q.run_int(xq))
    weights, xy = 64 * 256 * 2 + 256 * 64, 64 * (4 + 4) * CFG.lanes
    one_block = 32 * 16 * 4 * CFG.lanes                     # Z1, U, A, H of 16 d_ff tiles, 32 tokens
    assert weights + xy + one_block > CFG.sram_bytes >= c.report["sram_bytes_used"]
    assert c.report["runs"] == len(runs) and c.report["mxm_utilization"] >= 0.9
    with pytest.raises(ValueError, match=f"runs in {len(runs)} chunks"):
        c.pack_input(xq)
    assert len(c.pack_input(xq, run=1)) >= 1 and "runs 0" in c.listing_text()


def test_token_blocks_share_intermediates():
    """The accumulator blocks of one program reuse one set of intermediate buffers: tokens past the
    first block cost only their X and Y."""
    w = layer(64, 64, "gelu", seed=3)
    used = {}
    for T in (32, 40, 64):
        x = np.random.default_rng(T).normal(size=(T, 64))
        used[T] = compile_ffn(quantize_ffn(w, x), CFG, T).report["sram_bytes_used"]
    xy = (4 + 4) * CFG.lanes                                # X and Y bytes per token
    assert used[40] - used[32] == 8 * xy and used[64] - used[32] == 32 * xy


def test_queue_depth_splits_runs():
    """A program longer than queue_depth runs as several shorter programs (chunks of tokens; one block
    too long, cut by work)."""
    w = layer(64, 64, "gelu", seed=5)
    x = np.random.default_rng(6).normal(size=(64, 64))
    q = quantize_ffn(w, x)
    one = compile_ffn(q, CFG, 64)
    assert len(one.runs) == 1 and max(len(v) for v in one.program.queues.values()) > 200
    cfg = tiny_with(queue_depth=200)
    c = compile_ffn(q, cfg, 64)
    assert len(c.runs) == 2 and all(len(v) <= 200 for r in c.runs for v in r.program.queues.values())
    xq = q.quantize_input(x)
    for engine in ("golden", GoldenEngine(cfg, reference=True)):        # FastGolden and the per-cycle Golden
        out = run_compiled(c, xq, engine)
        assert np.array_equal(out.y, q.run_int(xq)) and out.run_cycles == [r.predicted_cycles for r in c.runs]
    # one block too long for the queue: each chunk of tokens runs cut by work (tests/firmware/test_work_split.py)
    cfg = tiny_with(queue_depth=64)
    c = compile_ffn(q, cfg, 64)
    assert any(r.work is not None for r in c.runs) and all(len(v) <= 64 for r in c.runs
                                                           for v in r.program.queues.values())
    out = run_compiled(c, xq)
    assert np.array_equal(out.y, q.run_int(xq)) and out.run_cycles == [r.predicted_cycles for r in c.runs]


# --- several weight rows per install cycle (mxm.install_rows) ----------------------------------

@pytest.mark.parametrize("rows", [2, 4, 8])
@pytest.mark.parametrize("T", [1, 16, 40])
def test_install_rows(rows, T):
    """Tiles are spread over `rows` banks and installed `rows` rows per cycle: exact on the golden
    model, and a decode layer runs several times faster than with one row per cycle."""
    from tests.harness import variant
    cfg = variant("tiny", name=f"tiny-rows{rows}", install_rows=rows)
    w = layer(64, 128, "swiglu", gated=True, seed=rows)
    x = np.random.default_rng(T).normal(size=(T, 64))
    q, c, out, xq = run(w, x, cfg)
    assert np.array_equal(out.y, q.run_int(xq)) and out.cycles == c.predicted_cycles
    lws = [i for i in c.program.queues["mxm0"] if i.op.name in ("LW", "REPEAT")]
    if rows <= 4 or T == 1:                 # all rows of a tile in one LW, ceil(16 / rows) cycles
        assert {(i.op.name, i.count) for i in lws} == {("LW", 16)}
    else:                                   # 8 rows per cycle would take every bank: 4, repeated
        assert {(i.op.name, i.count) for i in lws if i.op.name == "LW"} == {("LW", 4)}
        assert all(i.n == 3 and i.d == 1 for i in lws if i.op.name == "REPEAT")
    if rows == 8:                           # the per-cycle reference model agrees
        assert run_compiled(c, xq, GoldenEngine(cfg, reference=True)).cycles == c.predicted_cycles
    if T == 1:
        one_row = compile_ffn(q, CFG, 1).predicted_cycles
        assert c.predicted_cycles < one_row * {2: 0.6, 4: 0.35, 8: 0.35}[rows]
    if T == 40:
        assert c.report["mxm_utilization"] >= 0.95


def test_lpu_regimes():
    """On lpu (64 lanes, 8 banks, 8 rows per install cycle): a 1-token layer within 2 x the SRAM
    roofline (every bank reading a weight vector every cycle), 64 tokens at >= 95 % MXM use."""
    cfg = load_config("lpu")
    w = layer(256, 1024, "swiglu", gated=True, seed=2)
    for T, key, floor in ((1, "sram_bw_utilization", 0.5), (64, "mxm_utilization", 0.95)):
        x = np.random.default_rng(T).normal(size=(T, 256))
        q, c, out, xq = run(w, x, cfg)
        assert np.array_equal(out.y, q.run_int(xq)) and out.cycles == c.predicted_cycles
        if T == 1:
            assert run_compiled(c, xq, GoldenEngine(cfg, reference=True)).cycles == c.predicted_cycles
        r = c.report
        assert r["sram_roofline_cycles"] == 3 * 256 * 1024 / cfg.sram_read_bytes_per_cycle
        assert r[key] >= floor, (T, key, r[key])
        assert r["compile_s"] < 10


# --- the "tiles" arithmetic: a SiLU table and a product shift per d_ff tile, hi/lo gated products ---

def tiles_variant(q, lanes, hilo=4, seed=0):
    """q with random per-tile tables (lut_block = lanes), a random product shift per d_ff tile and a
    hi/lo product of k = hilo (0: one int8 h): random tables and shifts saturate h and lo often."""
    from dataclasses import replace
    rng = np.random.default_rng(seed)
    ft = -(-q.d_ff // lanes)
    luts = rng.integers(-128, 128, size=(ft, 256)).astype(np.int8)
    sh = np.repeat(rng.integers(hilo, hilo + 7, size=ft), lanes)[:q.d_ff] if q.gated else q.mul_sh
    return replace(q, tile_luts=luts, lut_block=lanes, mul_sh=sh, hilo=hilo)


@pytest.mark.parametrize("cfgname,dm,dff,T,act,hilo", [
    ("tiny", 32, 64, 3, "swiglu", 4),          # 3 tokens: hi, lo and the W2 combination through MEM
    ("tiny", 20, 36, 1, "swiglu", 4),          # padded tiles, one token: chained on the streams
    ("tiny", 32, 64, 2, "swiglu", 2),          # 2 tokens (= vxm_alu): still chained
    ("tiny", 48, 80, 40, "swiglu", 3),         # 40 tokens: blocks of acc_depth / 4 (hi and lo rows in W2)
    ("tiny", 32, 64, 5, "swiglu", 0),          # per-tile tables and shifts, h one int8
    ("tiny", 32, 48, 4, "gelu", 0),            # per-tile tables of an ungated FFN
    ("lpu", 128, 256, 1, "swiglu", 4),
    ("lpu", 96, 320, 5, "swiglu", 4),
])
def test_tiles_programs_exact(cfgname, dm, dff, T, act, hilo):
    """compile_ffn emits the tiles arithmetic (QuantFFN.run_int's activation_codes, gated_product and
    combine_acc): bit-exact, predicted cycles = the golden model's, an LDLUT per d_ff tile and
    block, one MUL shift per tile, and hilo ADD32 doublings + one ADD32 per W2 tile and block (for
    blocks of at most vxm_alu tokens chained on the streams: no ADD32 operand read from MEM)."""
    from tinylpu.firmware.compress import expand_program
    cfg = load_config(cfgname)
    w = layer(dm, dff, act, gated=act == "swiglu", seed=dm + dff)
    x = np.random.default_rng(T).normal(size=(T, dm))
    q = tiles_variant(quantize_ffn(w, x), cfg.lanes, hilo, seed=T)
    c = compile_ffn(q, cfg, T)
    xq = q.quantize_input(x)
    out = run_compiled(c, xq)
    assert out.cycles == c.predicted_cycles and np.array_equal(out.y, q.run_int(xq))
    ft, mt = -(-dff // cfg.lanes), -(-dm // cfg.lanes)
    blocks = len(c.runs[0].blocks)
    issued = expand_program(c.program)[0]          # one instruction per issue (REPEATs written out)
    vxm = issued.queues["vxm0"]
    assert sum(i.op.name == "LDLUT" for i in vxm) == ft * blocks
    assert sum(i.op.name == "ADD32" for i in vxm) == mt * blocks * (hilo + 1 if hilo else 0)
    if q.gated:
        shifts = {i.sh for i in vxm if i.op.name == "MUL" and not i.use_imm}
        assert shifts == set(np.unique(q.mul_sh).tolist()) | ({int(s) - hilo for s in np.unique(q.mul_sh)}
                                                              if hilo else set())
    if hilo:
        assert max(n for _, n in c.runs[0].blocks) <= cfg.acc_depth // 4
        streamed = max(n for _, n in c.runs[0].blocks) <= cfg.latency["vxm_alu"]
        emits = [i for i in issued.queues["mxm0"] if i.op.name == "EMIT"]
        assert len(emits) == blocks * (2 * ft + (2 if streamed else 1) * mt)     # hi, lo EMITted apart
        assert any(i.op.name == "ADD32" and i.a == i.b for i in vxm)            # the doublings
        assert {(i.imm, i.sh) for i in vxm if i.op.name == "MUL" and i.use_imm} == {(1 << hilo, 0)}
    if T <= 3:                                     # the per-cycle reference model agrees
        ref = run_compiled(c, xq, GoldenEngine(cfg, reference=True))
        assert ref.cycles == c.predicted_cycles and np.array_equal(ref.y, out.y)


def test_tiles_tokens_in_runs_and_moe():
    """Tiles layers whose tokens do not fit beside the weights run in chunks (one Z1 / U / A region
    for every tile), and several tiles experts share one chip (compile_moe): exact everywhere."""
    from tinylpu.firmware.compiler import compile_moe
    w = layer(64, 256, "swiglu", gated=True, bias=False, seed=11)
    x = np.random.default_rng(12).normal(size=(64, 64))
    q = tiles_variant(quantize_ffn(w, x), CFG.lanes, seed=1)
    c = compile_ffn(q, CFG, 64)
    xq = q.quantize_input(x)
    out = run_compiled(c, xq)
    assert len(c.runs) > 1 and out.run_cycles == [r.predicted_cycles for r in c.runs]
    assert np.array_equal(out.y, q.run_int(xq))
    xs = np.random.default_rng(9).normal(size=(4, 16))
    experts = [tiles_variant(quantize_ffn(layer(16, 32, "swiglu", gated=True, seed=e), xs), CFG.lanes, seed=e)
               for e in range(3)]
    compiled = compile_moe(experts, CFG, 4)
    for e in (2, 0, 1):
        xq = experts[e].quantize_input(xs)
        out = run_compiled(compiled[e], xq)
        assert np.array_equal(out.y, experts[e].run_int(xq)) and out.cycles == compiled[e].predicted_cycles
    plain = quantize_ffn(layer(16, 32, "swiglu", gated=True, seed=5), xs)
    with pytest.raises(CompileError, match=r"experts must share one hilo .* got \[0, 4\]"):
        compile_moe([experts[0], plain], CFG, 4)


@pytest.mark.parametrize("tiles", [False, True])
def test_moe_programs_for_several_token_counts_share_one_image(tiles):
    """compile_moe with a list of token counts: per expert a program per count, every one on the one
    MEM image (same weight and activation addresses); each program is exact with its predicted
    cycles, and the program for T tokens gives, row by row, the 1-token program's rows. The host
    Chip runs the smallest program that holds a call's tokens (padding up to its count only)."""
    from tinylpu.firmware.compiler import Programs, compile_moe
    from tinylpu.sim.host.api import Chip, drive
    from tinylpu.sim.host.engine import EngineError
    xs = np.random.default_rng(9).normal(size=(6, 16))
    experts = [quantize_ffn(layer(16, 32, "swiglu", gated=True, bias=not tiles, seed=e), xs) for e in range(2)]
    if tiles:         # streamed hi/lo for blocks of <= 2 tokens, through MEM for 3 and 5, on one image
        experts = [tiles_variant(q, CFG.lanes, seed=e) for e, q in enumerate(experts)]
    counts = [1, 2, 3, 5]
    progs = compile_moe(experts, CFG, [5, 1, 3, 2])
    assert all(isinstance(p, Programs) for p in progs) and [p.token_counts for p in progs] == [tuple(counts)] * 2
    image = progs[0].mem_image
    assert all(c.mem_image is image for p in progs for c in p.programs)
    for p in progs:
        first = p.programs[0]
        for c in p.programs:
            assert {k: (r.bank, r.addr) for k, r in c.x_layout.items()} == \
                {k: (r.bank, r.addr) for k, r in first.x_layout.items()}
            assert {m: (r.bank, r.addr) for m, r in c.y_layout.items()} == \
                {m: (r.bank, r.addr) for m, r in first.y_layout.items()}
    rng = np.random.default_rng(4)
    for e, p in enumerate(progs):
        xq = rng.integers(-128, 128, size=(5, 16)).astype(np.int8)
        want = experts[e].run_int(xq)
        one = np.concatenate([run_compiled(p.programs[0], xq[i:i + 1]).y for i in range(5)])
        assert np.array_equal(one, want)
        for c in p.programs:
            out = run_compiled(c, xq[:c.tokens])          # raises unless measured = predicted
            assert out.cycles == c.predicted_cycles and np.array_equal(out.y, one[:c.tokens])
        assert [c.predicted_cycles for c in p.programs] == sorted(c.predicted_cycles for c in p.programs)
    chip = Chip(CFG, "golden")
    drive(chip.load(progs))
    xq = rng.integers(-128, 128, size=(5, 16)).astype(np.int8)
    for n, picked in [(1, 1), (2, 2), (3, 3), (4, 5), (5, 5)]:
        before = dict(chip.programs_run)
        out = drive(chip.run(xq[:n], expert=1))
        c = progs[1].pick(n)
        assert c.tokens == picked and out.cycles == c.predicted_cycles
        assert np.array_equal(out.y, experts[1].run_int(xq[:n]))
        assert chip.programs_run[picked][0] == before.get(picked, (0, 0))[0] + 1
    with pytest.raises(EngineError, match=r"input shape \(6, 16\); expected \(1\.\.5, 16\)"):
        drive(chip.run(np.zeros((6, 16), np.int8), expert=0))
    assert [c.tokens for c in compile_moe(experts, CFG, 3)] == [3, 3]      # an int: a Compiled per expert
    for bad, msg in [([], "empty list"), ([2, 2], "token count twice"), ([0, 4], "integers >= 1, got 0"),
                     ([1.5], "integers >= 1")]:
        with pytest.raises(CompileError, match=msg):
            compile_moe(experts, CFG, bad)


def test_shared_weight_rows_favour_the_small_programs():
    """On lpu (8 install rows, 8 banks) 8 tokens alone would install 4 rows per cycle from the weight
    banks; programs of 1, 2, 4 and 8 tokens on one image share the 8-row placement, which keeps the
    small programs (the single-request case) at their own speed."""
    from tinylpu.firmware.compiler import _rows, _shared_rows, plan_blocks
    lpu = load_config("lpu")
    assert _rows(lpu, plan_blocks(lpu, 8, 2)[1]) == 4 and _rows(lpu, 1) == 8
    assert _shared_rows(lpu, [1, 2, 4, 8], 2) == 8 and _shared_rows(lpu, [8], 2) == 4


def test_tiles_errors():
    """What the single-chip program cannot emit is refused naming the problem; the tensor-parallel
    tray compiler's check (check_emittable) refuses every tiles QuantFFN."""
    from dataclasses import replace

    from tinylpu.firmware.compiler import check_emittable
    w = layer(32, 64, "swiglu", gated=True, seed=3)
    x = np.random.default_rng(3).normal(size=(4, 32))
    q = tiles_variant(quantize_ffn(w, x), CFG.lanes)
    with pytest.raises(CompileError, match=r"per block of 64 d_ff channels; config tiny has 16 lanes"):
        compile_ffn(tiles_variant(q, 64), CFG, 1)
    with pytest.raises(CompileError, match=r"SiLU tables are per block of 16 d_ff channels; config lpu has 64"):
        compile_ffn(q, load_config("lpu"), 1)
    sh = np.array(q.mul_sh)
    sh[17] += 1
    with pytest.raises(CompileError, match=r"mul_sh differs inside d_ff tile 1 \(channels 16..31: \[\d+, \d+\]\)"):
        compile_ffn(replace(q, mul_sh=sh), CFG, 1)
    with pytest.raises(CompileError, match=r"mul_sh 4..\d+ with hilo 5: .* mul_sh - hilo >= 0"):
        compile_ffn(replace(q, mul_sh=np.full(64, 4), hilo=5), CFG, 1)
    with pytest.raises(CompileError, match=r"hilo 15 is out of range"):
        compile_ffn(replace(q, mul_sh=np.full(64, 20), hilo=15), CFG, 1)
    with pytest.raises(CompileError, match="tensor-parallel tray compiler does not emit"):
        check_emittable(q)
    big = tiles_variant(quantize_ffn(layer(128, 512, "swiglu", gated=True), x[:, :1].repeat(128, 1)), 16)
    with pytest.raises(CompileError, match=r"needs \d+ bytes of SRAM \(\d+ of int8 weights .* the LUTs\); "
                                           r"config tiny has 65536"):
        compile_ffn(big, CFG, 1)


def test_four_stream_chip_uses_only_its_streams():
    """On a 4-stream chip (configs/fpga.yaml, the FPGA cut) the compiler's preferred
    result streams (4..7 on 8+-stream chips) do not exist; it picks among the chip's own.  A 1-token
    SwiGLU compiles, passes the program check and runs exact with its predicted cycles."""
    cfg = load_config("fpga")
    assert cfg.streams == 4
    rng = np.random.default_rng(1)
    w = FFNWeights(rng.normal(size=(32, 128)) / 8, rng.normal(size=(128, 32)) / 8, rng.normal(size=(32, 128)) / 8,
                   activation="swiglu")
    x = rng.normal(size=(1, 32))
    q = quantize_ffn(w, x)
    c = compile_ffn(q, cfg, 1)
    assert all(i.fields.get(f).index < 4 for insns in c.program.queues.values() for i in insns
               for f in ("s", "d", "a") if hasattr(i.fields.get(f), "index"))
    out = run_compiled(c, q.quantize_input(x))
    assert out.cycles == c.predicted_cycles and np.array_equal(out.y, q.run_int(q.quantize_input(x)))


def fpga_cut():
    """configs/fpga.yaml: the `fpga` chip with 4 streams per direction and tap registers."""
    return load_config("fpga")


def bench_layer(dm, dff, gated, T):
    """The layers of sim/perf/bench.py's bench_compiler (seed 1, no biases): (q, x)."""
    rng = np.random.default_rng(1)
    w = FFNWeights(rng.normal(size=(dm, dff)) / 8, rng.normal(size=(dff, dm)) / 8,
                   rng.normal(size=(dm, dff)) / 8 if gated else None, activation="swiglu" if gated else "gelu")
    x = rng.normal(size=(T, dm))
    return quantize_ffn(w, x), x


@pytest.mark.parametrize("dm,dff,gated,T", [(64, 64, True, 64), (64, 128, False, 64), (32, 128, True, 1),
                                            (64, 64, True, 8)])
def test_four_stream_cut_compiles_the_fpga_perf_layers(dm, dff, gated, T):
    """The `fpga` layers of `make perf` (sim/perf/bench.py) on the 4-stream cut: an EMIT's int32 group
    takes every stream of its direction, so a REQL of more than vxm_req tokens sends its result
    toward the MXM (its destination placed between the MXM and the VXM) or goes in pieces
    (``emit_req``).  Exact, predicted = measured cycles, at most 2 % slower than the 8-stream `fpga`
    (the taps' extra latency included)."""
    cfg = fpga_cut()
    q, x = bench_layer(dm, dff, gated, T)
    c = compile_ffn(q, cfg, T)
    assert all(i.fields.get(f).index < 4 for insns in c.program.queues.values() for i in insns
               for f in ("s", "d", "a") if hasattr(i.fields.get(f), "index"))
    xq = q.quantize_input(x)
    out = run_compiled(c, xq)
    assert out.cycles == c.predicted_cycles and np.array_equal(out.y, q.run_int(xq))
    assert c.predicted_cycles <= 1.02 * compile_ffn(q, load_config("fpga"), T).predicted_cycles


@pytest.mark.parametrize("chip,dm,dff,act,T", [
    ("cut", 40, 72, "swiglu", 17),      # padded tiles, a block of 17 > vxm_req tokens
    ("cut", 32, 64, "gelu", 3),
    ("cut", 32, 64, "gelu", 64),
    ("tiny4", 64, 64, "swiglu", 16),    # 4 banks on each side of the VXM
    ("tiny4", 128, 128, "gelu", 16),    # the banks between MXM and VXM full of weights: REQL in pieces
])
def test_four_stream_chips_compile_exact(chip, dm, dff, act, T):
    """More 4-stream layers (with biases): the cut, and `tiny` with 4 streams (the weight banks
    between the MXM and the VXM, so the REQL destinations there compete with the weights; when
    those banks are full every REQL of a block goes in pieces of at most vxm_req tokens)."""
    from tests.harness import variant
    cfg = fpga_cut() if chip == "cut" else variant("tiny", name="tiny-4s", streams=4)
    w = layer(dm, dff, act, gated=act == "swiglu", seed=dm + T)
    x = np.random.default_rng(T).normal(size=(T, dm))
    q, c, out, xq = run(w, x, cfg)
    assert out.cycles == c.predicted_cycles and np.array_equal(out.y, q.run_int(xq))
    reqls = [i.count for i in c.program.queues["vxm0"] if i.op.name == "REQL"]
    if (chip, dm) == ("tiny4", 128):
        assert max(reqls) <= cfg.latency["vxm_req"]


@pytest.mark.parametrize("chip,T,hilo", [("cut", 3, 4), ("cut", 17, 4), ("tiny4", 3, 4)])
def test_four_stream_chips_tiles_arithmetic(chip, T, hilo):
    """The "tiles" scheme on 4 streams: the W2 combination chained on the streams sends its ADD32
    results the other way when the EMITted groups fill one direction; the combination through MEM
    (int32 groups from both sides) cannot run, so blocks of more than vxm_alu tokens are refused
    there and the plan takes smaller ones."""
    from tests.harness import variant
    cfg = fpga_cut() if chip == "cut" else variant("tiny", name="tiny-4s", streams=4)
    w = layer(32, 64, "swiglu", gated=True, seed=T)
    x = np.random.default_rng(T).normal(size=(T, 32))
    q = tiles_variant(quantize_ffn(w, x), cfg.lanes, hilo, seed=T)
    c = compile_ffn(q, cfg, T)
    xq = q.quantize_input(x)
    out = run_compiled(c, xq)
    assert out.run_cycles == [r.predicted_cycles for r in c.runs] and np.array_equal(out.y, q.run_int(xq))
    assert max(n for r in c.runs for _, n in r.blocks) <= cfg.latency["vxm_alu"]
