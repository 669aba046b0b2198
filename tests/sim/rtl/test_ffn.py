"""Compiled FFN layers on the RTL: the same int8 outputs and the same cycle count as the golden model."""

import numpy as np
import pytest

from tinylpu.config import load_config
from tinylpu.firmware.asm import assemble
from tinylpu.firmware.check import ProgramCheckError
from tinylpu.firmware.compiler import compile_ffn
from tinylpu.firmware.quant import FFNWeights, quantize_ffn
from tinylpu.sim.host.api import run_compiled
from tinylpu.sim.rtl.pysim import run_case_pysim
from tinylpu.sim.rtl.runner import run_cases_rtl

CFG = load_config("tiny")


def _layer(dm, dff, T, seed, act="gelu"):
    rng = np.random.default_rng(seed)
    gated = act == "swiglu"
    w = FFNWeights(rng.normal(size=(dm, dff)) / 6, rng.normal(size=(dff, dm)) / 7,
                   rng.normal(size=(dm, dff)) / 6 if gated else None, rng.normal(size=dff) * 0.1,
                   rng.normal(size=dm) * 0.1, rng.normal(size=dff) * 0.1 if gated else None, act)
    x = rng.normal(size=(T, dm))
    q = quantize_ffn(w, x)
    return q, q.quantize_input(x)


#: one host API over every engine; Amaranth's simulator takes about half of the three engines' time
#: here, and the fast tier runs it on a compiled tile (test_amaranth_simulator_engine_tile) and on the
#: tapped ``fpga`` chip (tests/hdl/test_taps.py), so this layer runs on it in the slow tier
ENGINES = [pytest.param(("golden", "rtl"), id="icarus"),
           pytest.param(("golden", "rtl", "amaranth"), id="icarus-amaranth", marks=pytest.mark.slow)]


@pytest.mark.parametrize("engines", ENGINES)
def test_swiglu_on_rtl_equals_golden(engines):
    q, xq = _layer(32, 48, 3, 7, "swiglu")
    c = compile_ffn(q, CFG, 3)
    outs = {}
    for engine in engines:
        outs[engine] = run_compiled(c, xq, engine)
        assert outs[engine].engine == engine
    for engine in engines:
        assert outs[engine].cycles == c.predicted_cycles
        assert np.array_equal(outs[engine].y, outs["golden"].y)
    assert np.array_equal(outs["rtl"].y, q.run_int(xq))


def test_tiles_layer_on_rtl_equals_golden():
    """A "tiles" SwiGLU (a SiLU table and product shift per d_ff tile, the gated product as hi/lo
    pieces: tests/firmware/test_compiler.py::tiles_variant) with 17 tokens: blocks of 16 and 1, so
    one program has the hi/lo pieces and their W2 combination through MEM and, for the last token,
    chained on the streams (ADD32 doublings sampling each other's results).  On the Verilog under
    Icarus: the compiler's cycles and run_int's numbers.  (~16 s: one launch.)"""
    from tests.firmware.test_compiler import layer, tiles_variant
    x = np.random.default_rng(17).normal(size=(17, 16))
    q = tiles_variant(quantize_ffn(layer(16, 32, "swiglu", gated=True, seed=7), x), CFG.lanes, 4, seed=17)
    c = compile_ffn(q, CFG, 17)
    assert c.runs[0].blocks == ((0, 16), (16, 1))
    xq = q.quantize_input(x)
    out = run_compiled(c, xq, "rtl")
    assert out.cycles == c.predicted_cycles and np.array_equal(out.y, q.run_int(xq))
    assert np.array_equal(out.y, run_compiled(c, xq, "golden").y)


@pytest.mark.slow
def test_tokens_stream_through_runs_on_rtl():
    """64 x 256 SwiGLU with 64 tokens on tiny (tests/firmware/test_compiler.py::test_tokens_stream_through_runs):
    the weights leave room for about 21 tokens at a time, so the layer runs as three programs on one
    resident image, X written and Y read between them, all in one simulator launch.  Every run's
    cycle count is the compiler's; the outputs are the integer reference.  (~150 s of CPU: the
    image and the activations cross the host port vector by vector.)"""
    rng = np.random.default_rng(11)
    dm, dff, T = 64, 256, 64
    w = FFNWeights(rng.normal(size=(dm, dff)) / 8, rng.normal(size=(dff, dm)) / 16, rng.normal(size=(dm, dff)) / 8,
                   rng.normal(size=dff) * 0.1, rng.normal(size=dm) * 0.1, rng.normal(size=dff) * 0.1, "swiglu")
    x = rng.normal(size=(T, dm))
    q = quantize_ffn(w, x)
    c = compile_ffn(q, CFG, T)
    assert len(c.runs) == 3
    xq = q.quantize_input(x)
    out = run_compiled(c, xq, "rtl")          # raises unless every run takes its predicted cycles
    assert out.run_cycles == [r.predicted_cycles for r in c.runs]
    assert np.array_equal(out.y, q.run_int(xq))


def test_amaranth_simulator_engine_tile():
    """The whole chip under Amaranth's own simulator, through the host port: a third engine."""
    from importlib import resources

    from tinylpu.arith import requantize
    src = (resources.files("tinylpu.firmware") / "examples" / "tile_matmul.s").read_text()
    rng = np.random.default_rng(3)
    W = rng.integers(-128, 128, (16, 16), dtype=np.int8)
    X = rng.integers(-128, 128, (16, 16), dtype=np.int8)
    r = run_case_pysim(CFG, assemble(src, CFG), {"mem0": [(0, W)], "mem1": [(0, X)]}, [("mem4", 0, 16)])
    assert r["cycles"] == 55 and not r["errors"]
    assert np.array_equal(np.array(r["reads"][0], np.int8), requantize(X.astype(np.int64) @ W.astype(np.int64), 3, 9))


def test_host_refuses_a_program_that_does_not_fit_before_loading():
    from tinylpu.firmware.program import Program
    from tinylpu.isa import Insn, Opcode, StreamRef
    bad = Program({"mem0": [Insn.make(Opcode.READ, s=StreamRef(9, False), addr=0), Insn.make(Opcode.HALT)]})
    with pytest.raises(ProgramCheckError, match=r"queue mem0 #0 READ e9, 0: stream e9: the chip has 8 streams"):
        run_cases_rtl(CFG, [{"program": bad, "mem": {}, "read": []}])


@pytest.mark.slow
@pytest.mark.parametrize("engines", [("amaranth",), ("rtl",)], ids=["amaranth", "icarus"])
def test_install_rows_layer_on_rtl_equals_golden(engines):
    """A compiled SwiGLU on a tiny chip that installs 4 weight rows per cycle (LW from 4 banks at once):
    the RTL's outputs and cycles are golden's and the compiler's.  (Slow tier, ~30 s each: the fast tier
    checks several install rows on the MXM unit against golden, tests/hdl/test_mxm.py.)"""
    from tests.harness import variant
    cfg = variant("tiny", "tiny-rows4", install_rows=4)
    q, xq = _layer(32, 48, 3, 5, "swiglu")
    c = compile_ffn(q, cfg, 3)
    assert any(i.op.name == "LW" for i in c.runs[0].program.queues["mxm0"])
    gold = run_compiled(c, xq, "golden")
    assert gold.cycles == c.predicted_cycles and np.array_equal(gold.y, q.run_int(xq))
    for engine in engines:
        out = run_compiled(c, xq, engine)
        assert out.cycles == c.predicted_cycles, engine
        assert np.array_equal(out.y, gold.y), engine


@pytest.mark.slow
def test_lpu_mini_layer_on_rtl_equals_golden():
    """lpu cut down (configs/lpu-mini.yaml: 64 lanes, 8 install rows, 256-vector banks): one compiled
    GELU layer on its Verilog under Icarus equals golden in outputs and cycles.  (The Verilog is about
    29 MB; its conversion takes minutes and GBs of memory.)"""
    cfg = load_config("lpu-mini")
    q, xq = _layer(128, 128, 2, 9)
    c = compile_ffn(q, cfg, 2)
    gold = run_compiled(c, xq, "golden")
    out = run_compiled(c, xq, "rtl")
    assert out.cycles == gold.cycles == c.predicted_cycles
    assert np.array_equal(out.y, gold.y) and np.array_equal(out.y, q.run_int(xq))
