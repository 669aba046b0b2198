"""The 8-chip RTL tray (configs/tray.yaml: eight tiny chips, all-to-all C2C, every chip on its own
clock) runs a compiled tensor-parallel FFN equal to the golden tray and to one chip (issue 19).

Slow tier: the tray's Verilog is the chip converted once and instantiated eight times (about a
minute to build), and Icarus simulates eight chips and 56 links.
"""

import numpy as np
import pytest

from tinylpu.config import load_config
from tinylpu.firmware.quant import FFNWeights, quantize_ffn
from tinylpu.firmware.tray import compile_tp
from tinylpu.sim.golden.tray import run_tray_golden
from tinylpu.sim.rtl.tray import run_tray_compiled_rtl

TRAY = load_config("tray")


@pytest.mark.slow
def test_eight_chip_tensor_parallel_swiglu_equals_golden():
    """64 x 256 SwiGLU, 1 token, the 'gather' split (int8 H all-gathered to the W2 chips, int8 Y to
    chip 0): cycles on every chip equal the compiler's and the golden tray's, outputs bit-identical."""
    rng = np.random.default_rng(19)
    dm, dff = 64, 256
    w = FFNWeights(rng.normal(size=(dm, dff)) / 8, rng.normal(size=(dff, dm)) / 16, rng.normal(size=(dm, dff)) / 8,
                   activation="swiglu")
    x = rng.normal(size=(1, dm))
    q = quantize_ffn(w, x)
    tc = compile_tp(q, TRAY, 1, 8, split="gather")
    xq = q.quantize_input(x)
    tray, gres = run_tray_golden(tc, [xq] * TRAY.chips)
    assert list(gres.cycles) == list(tc.predicted_cycles)
    y_gold = tc.chips[0].unpack_output(tray.chips[0].read_mem)
    ppm = np.random.default_rng(7).uniform(-300, 300, TRAY.chips).round(1).tolist()
    y, res = run_tray_compiled_rtl(tc, [xq] * TRAY.chips, ppm=ppm)
    assert [c["errors"] for c in res["chips"]] == [[]] * TRAY.chips
    assert [c["cycles"] for c in res["chips"]] == list(gres.cycles)
    assert np.array_equal(y, y_gold)
    assert np.array_equal(y, q.run_int(xq))
