"""A real model's FFN on the LPU-class chip and tray, on the golden model (issue 16's yardstick):
384 x 1536 GELU with biases (all-MiniLM-L6-v2's FFN shape), 17 tokens."""

import math
import time

import numpy as np
import pytest

from tinylpu.config import load_config
from tinylpu.firmware.asm import assemble
from tinylpu.firmware.compiler import compile_ffn
from tinylpu.firmware.quant import FFNWeights, quantize_ffn
from tinylpu.firmware.tray import compile_tp
from tinylpu.sim.golden.tray import GoldenTray, run_tray_golden
from tinylpu.sim.host.api import run_compiled

DM, DFF, T = 384, 1536, 17


@pytest.fixture(scope="module")
def layer():
    rng = np.random.default_rng(1)
    w = FFNWeights(rng.normal(size=(DM, DFF)) / 20, rng.normal(size=(DFF, DM)) / 40, None,
                   rng.normal(size=DFF) * 0.1, rng.normal(size=DM) * 0.1, None, "gelu")
    x = rng.normal(size=(T, DM))
    h = x @ w.w1 + w.b1
    h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
    q = quantize_ffn(w, x)
    return q, q.quantize_input(x), h @ w.w2 + w.b2


def _cos(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_real_ffn_on_one_lpu_chip(layer):
    q, xq, y_float = layer
    t = time.perf_counter()
    c = compile_ffn(q, load_config("lpu"), T)
    out = run_compiled(c, xq, "golden")           # raises unless measured = predicted
    seconds = time.perf_counter() - t
    assert np.array_equal(out.y, q.run_int(xq))
    assert _cos(q.dequantize_output(out.y), y_float) >= 0.99
    assert c.report["mxm_utilization"] > 0.95
    print(f"lpu: {out.cycles} cycles, compile + golden {seconds:.2f} s")


@pytest.mark.slow
def test_real_ffn_on_the_lpu_tray(layer):
    """Tensor parallel over the 8 chips of lpu-tray (C2C, per-chip clocks): every chip's cycles are the
    compiler's, the output is the single chip's bits, on the fast tray (no fallback to lockstep), whose
    results equal the lockstep tray's.  Compile + fast tray in well under 30 s (~10 s here, most of it
    compile_tp); the lockstep check doubles that."""
    q, xq, y_float = layer
    cfg = load_config("lpu-tray")
    t = time.perf_counter()
    tc = compile_tp(q, cfg, T)
    tray, res = run_tray_golden(tc, [xq] * cfg.chips)
    seconds = time.perf_counter() - t
    assert tray.fallbacks == 0
    assert res.cycles == tc.predicted_cycles
    y = tc.chips[0].unpack_output(tray.chips[0].read_mem)
    assert np.array_equal(y, q.run_int(xq))
    assert _cos(q.dequantize_output(y), y_float) >= 0.99
    assert seconds < 30
    ref = GoldenTray(cfg)
    empty = assemble(".queue mem0\n HALT\n", cfg)
    ref.load_programs([c.program if c is not None else empty for c in tc.chips])
    for chip, c in enumerate(tc.chips):
        if c is not None:
            image = {b: list(v) for b, v in c.mem_image.items()}
            for b, v in c.pack_input(xq).items():
                image.setdefault(b, []).extend(v)
            ref.chips[chip].write_image(image)
    r = ref.run(lockstep=True)
    assert r.cycles == res.cycles and r.link_vectors == res.link_vectors
    for a, b in zip(tray.chips, ref.chips):
        for bank in a.mem:
            assert np.array_equal(a.mem[bank], b.mem[bank]), bank
    print(f"lpu-tray: {max(res.cycles)} cycles, compile + fast golden tray {seconds:.2f} s")
