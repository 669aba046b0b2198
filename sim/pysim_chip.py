"""The whole chip under Amaranth's own simulator, driven through its host port.

The same host-port protocol as the cocotb driver (sim/cocotb_chip.py), written as an Amaranth
async testbench. Slow (pure Python), but needs no Verilog tools: used for the simulator-speed
comparison and as a third, independent engine in the tests.
"""

import time

from amaranth.sim import Simulator

from ..config import load_config
from ..firmware.isa import encode
from ..hdl.chip import Chip
from ..hdl.common import ERROR_BITS
from ..hdl.hostport import Cmd, command
from .cocotb_chip import vector_words, words_vector

__all__ = ["run_case_pysim"]


class _Host:
    def __init__(self, ctx, dut, cfg):
        self.ctx, self.dut, self.cfg = ctx, dut, cfg
        self.wpv = -(-cfg.lanes // 8)

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

    async def status(self):
        await self.send([command(Cmd.STATUS)])
        w0, w1 = await self.recv(2)
        errs = (w0 >> 8) & 0xFFFF
        return {"running": bool(w0 & 1), "done": bool(w0 >> 1 & 1), "cycles": w1 & 0xFFFFFFFF, "stall": w1 >> 32,
                "errors": [n for i, n in enumerate(ERROR_BITS) if errs >> i & 1]}


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
        for s in cfg.slices:
            words = [encode(i) for i in program.queues.get(s.name, [])]
            await h.send([command(Cmd.LOAD_QUEUE, s.position, 0, len(words))] + words)
        for bank, lst in mem.items():
            for addr, vecs in lst:
                words = [command(Cmd.WRITE_MEM, banks[bank], addr, len(vecs))]
                for v in vecs:
                    words += vector_words(v, cfg.lanes)
                await h.send(words)
        t0 = time.perf_counter()
        await h.send([command(Cmd.START)])
        poll = 16
        while True:
            await ctx.tick().repeat(poll)
            st = await h.status()
            if not st["running"] or st["cycles"] > max_cycles:
                break
            poll = min(2 * poll, 256)
        st["run_wall_s"] = time.perf_counter() - t0
        st["reads"] = []
        for bank, addr, n in reads:
            await h.send([command(Cmd.READ_MEM, banks[bank], addr, n)])
            words = await h.recv(n * h.wpv)
            st["reads"].append([words_vector(words[i * h.wpv:(i + 1) * h.wpv], cfg.lanes) for i in range(n)])
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
