"""Every C2C link width the config loader accepts, end to end: a tensor-parallel FFN on the 2-chip
RTL tray (``duo`` with ``c2c.width_bits`` changed) gives the golden tray's bits and cycle counts,
and the golden tray gives the one-chip bits.

What a width changes is the flit (``tinylpu.link.LinkParams``): the SEND/RECV element spacing
``vector_interval`` (golden model, compiler, ``C2CSlice``, ``LinkTX`` all read it from there) and
the link's latency, which ``c2c.link_latency`` must cover: the loader refuses less
(``link_problems``), so each variant here raises ``link_latency`` to the smallest value the loader
accepts at its width (burst framing, the shipped duo's, at widths 32 and 64; flit framing at 8 and 16).  The loader's refusals themselves are tested in
tests/hdl/test_c2c.py (``test_loader_link_rules``).
"""

import numpy as np
import pytest

from tests import harness
from tests.firmware.test_tray_compiler import layer
from tinylpu.config import load_config
from tinylpu.firmware.compiler import compile_ffn
from tinylpu.firmware.quant import quantize_ffn
from tinylpu.firmware.tray import compile_tp
from tinylpu.link import min_link_latency
from tinylpu.sim.golden.tray import run_tray_golden
from tinylpu.sim.host.api import run_compiled
from tinylpu.sim.perf.c2c import burst_variant
from tinylpu.sim.rtl.tray import compiled_tray_inputs, compiled_tray_output, run_tray_rtl

#: (width_bits, per-chip clock offsets in ppm): both directions of drift across the widths.  Each
#: simulation takes ~5 s; each width is its own RTL tray build, about a minute of Verilog conversion
#: and Icarus compilation whenever hdl/ changed (duo's own width shares test_tray.py's build).
#: Every width runs in the slow tier (`make test-all`), duo's own width on the build it shares with
#: tests/sim/rtl/test_tray.py, the others on one Verilog build each.  The link itself is tested at every width in the
#: fast tier by tests/hdl/test_c2c.py (Amaranth's simulator, no Verilog build).
CASES = [pytest.param(8, (300, -300), id="w8", marks=pytest.mark.slow),
         pytest.param(16, (-300, 300), id="w16", marks=pytest.mark.slow),
         pytest.param(32, (300, -300), id="w32", marks=pytest.mark.slow),
         pytest.param(64, (-300, 300), id="w64", marks=pytest.mark.slow)]
DM, DFF, TOKENS = 16, 32, 2             # one d_ff tile per chip, 8 partial vectors to chip 0


def duo_at(width):
    """``duo`` with ``width_bits`` = width (``duo`` itself at its own width: the RTL tray build is then
    shared with test_tray.py).  Burst framing (the shipped duo's) needs width_bits >= 32: the narrower
    links run on flit framing; every variant has the smallest ``link_latency`` the loader accepts
    (plus duo's margin)."""
    duo = load_config("duo")
    if width == duo.link["width_bits"]:
        return duo
    if duo.link_params.burst and width >= 32:
        return burst_variant("duo", duo.link["burst_vectors"], width_bits=width)
    base = harness.flit("duo")
    latency = max(base.link_latency, min_link_latency(base.lanes, dict(base.link, width_bits=width)))
    return harness.variant(base, f"duo-w{width}", c2c={"width_bits": width, "link_latency": latency})


@pytest.fixture(scope="module")
def ffn():
    w = layer(DM, DFF, 7, True)
    x = np.random.default_rng(5).normal(size=(TOKENS, DM))
    q = quantize_ffn(w, x)
    xq = q.quantize_input(x)
    one_chip = run_compiled(compile_ffn(q, load_config("tiny"), TOKENS), xq).y
    assert np.array_equal(one_chip, q.run_int(xq))
    return q, xq, one_chip


@pytest.mark.parametrize("width,ppm", CASES)
def test_tensor_parallel_at_link_width(ffn, width, ppm):
    q, xq, one_chip = ffn
    cfg = duo_at(width)
    p = cfg.link_params
    assert cfg.vector_interval == p.send_interval == (p.payload_words if p.burst else p.flit_words + 1)
    tc = compile_tp(q, cfg, TOKENS, 2)
    tray, gres = run_tray_golden(tc, [xq] * cfg.chips)
    y_gold = tc.chips[0].unpack_output(tray.chips[0].read_mem)
    assert gres.cycles == tc.predicted_cycles
    assert np.array_equal(y_gold, one_chip)
    # A fresh simulation starts from reset, the golden model's power-on state for everything the
    # compiled layer reads (it loads its weights, LUT and parameters itself): no scrub program,
    # which would cost about a minute of Icarus time per width.
    programs, mems, reads = compiled_tray_inputs(tc, [xq] * cfg.chips)
    res = run_tray_rtl(cfg, programs, mems, reads, ppm=list(ppm), scrub=False)
    chips = res["chips"]
    y = compiled_tray_output(tc, chips[tc.root]["mem"])
    assert [c["errors"] for c in chips] == [[], []]
    assert [c["cycles"] for c in chips] == gres.cycles
    assert np.array_equal(y, y_gold)
    sent = sum(gres.link_vectors.values())
    link = chips[0]["links"][0]                     # chip 0 receives the partials from chip 1
    assert 0 < link["flits_ok"] <= sent if p.burst else link["flits_ok"] == sent > 0    # frames / flits
    assert link["crc_errors"] == link["frame_errors"] == link["seq_errors"] == link["alarm"] == 0
    assert chips[1]["links"][0]["overrun"] == 0
