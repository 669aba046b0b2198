"""The whole chip under Amaranth's own simulator, driven through its host port.

The same host-port protocol as the cocotb driver (sim/cocotb_chip.py), written as an Amaranth
async testbench. Slow (pure Python), but needs no Verilog tools: used for the simulator-speed
comparison and as a third, independent engine in the tests.
"""

import time

from amaranth.sim import Simulator

from ..config import load_config
from ..hdl.chip import Chip
from .hostproto import HostProtocol

__all__ = ["run_case_pysim"]


class _Host(HostProtocol):
    """The host-port protocol on the chip's ports in Amaranth's simulator."""

    def __init__(self, ctx, dut, cfg):
        super().__init__(cfg)
        self.ctx, self.dut = ctx, dut

    async def pause(self, cycles):
        await self.ctx.tick().repeat(cycles)

    async def send(self, words):
        ctx, d = self.ctx, self.dut
        for w in words:
            ctx.set(d.cmd.payload, w)
            ctx.set(d.cmd.valid, 1)
            while True:
                ready = ctx.get(d.cmd.ready)
                await ctx.tick()
                if ready:
                    break
        ctx.set(d.cmd.valid, 0)

    async def recv(self, n):
        ctx, d = self.ctx, self.dut
        out = []
        ctx.set(d.resp.ready, 1)
        while len(out) < n:
            valid = ctx.get(d.resp.valid)
            payload = ctx.get(d.resp.payload)
            await ctx.tick()
            if valid:
                out.append(payload)
        ctx.set(d.resp.ready, 0)
        return out


def run_case_pysim(cfg, program, mem, reads=(), max_cycles=100_000, vcd=None):
    """Run one program on the chip under Amaranth's simulator.

    mem: {bank name: [(addr, int8 vectors)]}; reads: [(bank, addr, n)].
    Returns {"cycles", "errors", "reads", "run_wall_s"}.
    """
    cfg = load_config(cfg)
    dut = Chip(cfg)
    banks = {s.name: s.index for s in cfg.slices_of("mem")}
    result = {}

    async def bench(ctx):
        h = _Host(ctx, dut, cfg)
        await h.load_program(program)
        for bank, lst in mem.items():
            for addr, vecs in lst:
                await h.write_mem(banks[bank], addr, vecs)
        t0 = time.perf_counter()
        await h.start()
        st = await h.wait_done(max_cycles, poll=16, max_poll=256)
        st["run_wall_s"] = time.perf_counter() - t0
        st["reads"] = [await h.read_mem(banks[bank], addr, n) for bank, addr, n in reads]
        result.update(st)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return result
