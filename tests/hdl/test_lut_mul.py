"""The MXM's LUT multiplier (hdl/common.lut_mul8, used on FPGA builds once the device's DSP blocks
are used up) against plain int8 x int8 products, in Amaranth's simulator: all 65,536 operand pairs."""

from amaranth.hdl import Module, Signal, signed
from amaranth.sim import Simulator

from tinylpu.hdl.common import lut_mul8


def test_lut_mul8_is_exact():
    m = Module()
    x, w = Signal(signed(8)), Signal(signed(8))
    p = lut_mul8(m, x, w, "p")
    pairs = [(a, b) for a in range(-128, 128) for b in range(-128, 128)]
    bad = []

    async def bench(ctx):
        for a, b in pairs:
            ctx.set(x, a)
            ctx.set(w, b)
            got = ctx.get(p)
            if got != a * b:
                bad.append((a, b, got))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert not bad, f"{len(bad)} wrong products, e.g. {bad[:5]}"
