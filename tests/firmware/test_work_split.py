"""Layers whose one-block program exceeds queue_depth run cut by work: runs of d_ff tiles of H, then
runs of output tiles of Y, on one resident image (H left in MEM between them).  Exact on the golden
model, every run's cycles predicted, for FFNs, SwiGLU, the tiles arithmetic and MoE token lists."""

import numpy as np
import pytest

from tests.harness import ffn_layer, variant
from tinylpu.config import load_config
from tinylpu.firmware.compiler import CompileError, Programs, compile_ffn, compile_moe
from tinylpu.firmware.quant import FFNWeights, quantize_ffn
from tinylpu.sim.host.api import Chip, drive, run_compiled
from tinylpu.sim.host.engine import GoldenEngine

TINY = load_config("tiny")


def with_depth(base, depth):
    """A shipped config with another queue_depth, through the loader."""
    return variant(base, f"{base}-q{depth}", queue_depth=depth)


layer = ffn_layer


def check_cut(c, cfg):
    """Every queue within queue_depth; per chunk of tokens the runs cover units 0 .. FT + MT - 1 in
    order; X only for runs with H tiles, Y only for the output tiles a run computes."""
    L = cfg.lanes
    ft, mt = -(-c.q.d_ff // L), -(-c.q.d_model // L)
    assert all(len(v) <= cfg.queue_depth for r in c.runs for v in r.program.queues.values())
    chunks = {}
    for r in c.runs:
        chunks.setdefault((r.token0, r.tokens), []).append(r)
    assert sum(n for _, n in chunks) == c.tokens
    for rs in chunks.values():
        if len(rs) == 1 and rs[0].work is None:
            continue
        assert [r.work[0] for r in rs] == [0] + [r.work[1] for r in rs[:-1]] and rs[-1].work[1] == ft + mt
        for r in rs:
            assert len(r.blocks) == 1
            assert bool(r.x_layout) == (r.work[0] < ft)
            assert sorted(r.y_layout) == list(range(max(r.work[0] - ft, 0), max(r.work[1] - ft, 0)))
    return chunks


def run_exact(c, q, xq, cfg, engine="golden"):
    out = run_compiled(c, xq, engine)                  # raises unless every run's cycles = predicted
    assert out.run_cycles == [r.predicted_cycles for r in c.runs] and out.cycles == c.predicted_cycles
    assert np.array_equal(out.y, q.run_int(xq))
    return out


@pytest.mark.parametrize("act,gated,dm,dff,T,depth", [
    ("gelu", False, 64, 128, 1, 96),           # biases, 1 token
    ("gelu", False, 48, 80, 40, 96),           # padded tiles, 40 tokens: two chunks, each cut by work
    ("swiglu", True, 64, 128, 1, 128),
    ("swiglu", True, 64, 128, 5, 128),
    ("relu", False, 32, 256, 3, 64),           # tiny units: several runs of only output tiles
])
def test_block_cut_by_work_is_exact(act, gated, dm, dff, T, depth):
    cfg = with_depth("tiny", depth)
    w = layer(dm, dff, act, gated, seed=dm + dff + T)
    x = np.random.default_rng(T).normal(size=(T, dm))
    q = quantize_ffn(w, x)
    c = compile_ffn(q, cfg, T)
    chunks = check_cut(c, cfg)
    assert any(len(rs) > 1 for rs in chunks.values())
    assert c.report["runs"] == len(c.runs) and sorted(c.y_layout) == list(range(-(-dm // cfg.lanes)))
    xq = q.quantize_input(x)
    out = run_exact(c, q, xq, cfg)
    # the unsplit schedule (tiny's own queue_depth): the same numbers; the cut costs each run's fill and drain
    whole = compile_ffn(q, TINY, T)
    assert np.array_equal(run_compiled(whole, xq).y, out.y)
    extra = len(c.runs) - len(whole.runs)
    assert c.predicted_cycles <= whole.predicted_cycles + 60 * extra + 200    # (40 tokens: even chunks win)
    if T == 1:                                         # the per-cycle reference model agrees
        ref = run_compiled(c, xq, GoldenEngine(cfg, reference=True))
        assert ref.run_cycles == out.run_cycles and np.array_equal(ref.y, out.y)


def test_cut_host_side_and_listing():
    """A chunk cut by work: runs without H tiles take no X; Y assembles from the runs that write its
    tiles; the listing names each run's tiles; the trace has every run."""
    import json
    cfg = with_depth("tiny", 128)
    x = np.random.default_rng(3).normal(size=(2, 64))
    q = quantize_ffn(layer(64, 128, "swiglu", True, seed=3), x)
    c = compile_ffn(q, cfg, 2)
    xq = q.quantize_input(x)
    assert len(c.runs) >= 3
    for i, r in enumerate(c.runs):
        assert (c.pack_input(xq, run=i) == {}) == (not r.x_layout)
        assert len(c.output_reads(i)) == len(r.y_layout)
    assert not c.runs[-1].x_layout and c.runs[0].y_layout == {}
    text = c.listing_text()
    assert "H d_ff tiles 0.." in text and "Y output tiles" in text and text.count("=====") == 2 * len(c.runs)
    trace = json.loads(c.trace_json())
    assert {e["args"]["run"] for e in trace["traceEvents"] if e["ph"] == "X"} == set(range(len(c.runs)))
    with pytest.raises(ValueError, match="pass run="):
        c.unpack_output(lambda *a: None)
    from tinylpu.sim.host.engine import EngineError
    chip = Chip(cfg, "golden")
    chip.engine = "amaranth"            # (a fresh MEM per run: refused before anything runs)
    drive(chip.load(c))
    with pytest.raises(EngineError, match="cut by work"):
        drive(chip.run(xq))


@pytest.mark.parametrize("gated,hilo,T,depth", [(True, 4, 1, 128), (True, 4, 3, 128), (True, 0, 2, 128),
                                               (False, 0, 1, 48)])
def test_tiles_arithmetic_cut_by_work(gated, hilo, T, depth):
    """Per-tile SiLU tables (a run of H tiles first loads its first tile's table), hi/lo products
    (W2's combination chained or through MEM): exact when cut by work."""
    from dataclasses import replace
    cfg = with_depth("tiny", depth)
    L = cfg.lanes
    x = np.random.default_rng(T).normal(size=(T, 32))
    q = quantize_ffn(layer(32, 128, "swiglu" if gated else "gelu", gated, bias=False, seed=7), x)
    rng = np.random.default_rng(5)
    ft = -(-q.d_ff // L)
    luts = rng.integers(-128, 128, size=(ft, 256)).astype(np.int8)
    sh = np.repeat(rng.integers(hilo, hilo + 7, size=ft), L)[:q.d_ff] if gated else q.mul_sh
    q = replace(q, tile_luts=luts, lut_block=L, mul_sh=sh, hilo=hilo)
    c = compile_ffn(q, cfg, T)
    chunks = check_cut(c, cfg)
    assert any(len(rs) > 1 for rs in chunks.values())
    assert any(r.work[0] not in (0, ft) and r.work[0] < ft for r in c.runs)   # a run starting mid-H
    run_exact(c, q, q.quantize_input(x), cfg)


def test_moe_token_lists_cut_by_work():
    """compile_moe with a list of token counts on a small queue: every program of every expert cut
    by work on the one image; Chip picks and runs them exactly."""
    cfg = with_depth("tiny", 128)
    xs = np.random.default_rng(9).normal(size=(6, 32))
    experts = [quantize_ffn(layer(32, 128, "swiglu", gated=True, seed=e), xs) for e in range(2)]
    progs = compile_moe(experts, cfg, [1, 2, 5])
    assert all(isinstance(p, Programs) for p in progs)
    for p in progs:
        for c in p.programs:
            assert c.mem_image is progs[0].mem_image and len(c.runs) > 1
            check_cut(c, cfg)
    rng = np.random.default_rng(4)
    chip = Chip(cfg, "golden")
    drive(chip.load(progs))
    for e, n in [(1, 1), (0, 2), (1, 4), (0, 5), (0, 1)]:
        xq = rng.integers(-128, 128, size=(n, 32)).astype(np.int8)
        out = drive(chip.run(xq, expert=e))
        c = progs[e].pick(n)
        assert out.run_cycles == [r.predicted_cycles for r in c.runs]
        assert np.array_equal(out.y, experts[e].run_int(xq))
    one = compile_moe(experts, cfg, 3)
    for e in range(2):
        xq = rng.integers(-128, 128, size=(3, 32)).astype(np.int8)
        run_exact(one[e], experts[e], xq, cfg)


def test_unit_too_long_names_sizes():
    """One d_ff tile of H (or one output tile of Y) is the smallest run: longer than the queue, an
    error naming it; weights beyond the SRAM still name the sizes."""
    x = np.random.default_rng(0).normal(size=(1, 64))
    q = quantize_ffn(layer(64, 128, "swiglu", True), x)
    with pytest.raises(CompileError, match=r"smallest unit of work, d_ff tile 0 of H \(4 weight tiles of W1 and "
                                           r"of W3\), needs \d+ instructions in queue mxm0; config tiny-q24 has "
                                           r"queue_depth 24"):
        compile_ffn(q, with_depth("tiny", 24), 1)
    q = quantize_ffn(layer(16, 512, "gelu"), x[:, :16])
    with pytest.raises(CompileError, match=r"output tile 0 of Y \(32 weight tiles of W2: d_ff 512 in tiles of 16\)"):
        compile_ffn(q, with_depth("tiny", 64), 1)
    q = quantize_ffn(layer(128, 512, "swiglu", True), np.random.default_rng(0).normal(size=(1, 128)))
    with pytest.raises(CompileError, match=r"needs \d+ bytes of SRAM \(\d+ of int8 weights"):
        compile_ffn(q, with_depth("tiny", 128), 1)


@pytest.mark.slow
def test_lpu_1024x4096_swiglu_decode():
    """The 1024 x 4096 SwiGLU (12.6 MB of int8 weights) at 1 token on lpu: one block's MXM queue
    needs about 9,600 words (queue_depth 4096), so it runs cut by work; exact, cycles predicted, and
    within 1 % of the unsplit schedule's cycles."""
    rng = np.random.default_rng(0)
    D, F = 1024, 4096
    w = FFNWeights(rng.normal(0, .03, (D, F)), rng.normal(0, .03, (F, D)), rng.normal(0, .03, (D, F)),
                   None, None, None, "silu")
    q = quantize_ffn(w, rng.normal(0, 1, (16, D)))
    cfg = load_config("lpu")
    c = compile_ffn(q, cfg, 1)
    assert len(c.runs) >= 3 and c.report["compile_s"] < 60
    check_cut(c, cfg)
    xq = q.quantize_input(rng.normal(0, 1, (1, D)))
    run_exact(c, q, xq, cfg)
    whole = compile_ffn(q, with_depth("lpu", 65536), 1)            # the unsplit schedule
    assert len(whole.runs) == 1 and max(len(v) for v in whole.program.queues.values()) > cfg.queue_depth
    assert whole.predicted_cycles <= c.predicted_cycles <= 1.01 * whole.predicted_cycles
