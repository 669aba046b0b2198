"""The whole chip under Amaranth's own simulator, driven through its host port.

The same host-port protocol as the cocotb driver (sim/rtl/cocotb_chip.py), written as an Amaranth
async testbench. Slow (pure Python), but needs no Verilog tools: used for the simulator-speed
comparison and as a third, independent engine in the tests.
"""

import time
from types import SimpleNamespace

from amaranth.hdl import ClockDomain, ClockSignal, Fragment, Signal
from amaranth.sim import Simulator

from tinylpu.config import load_config
from tinylpu.hdl.chip import Chip
from tinylpu.sim.host.proto import HostProtocol

__all__ = ["ReusedSimulator", "netlist_clocks", "run_case_pysim", "run_tray_pysim"]


class _Host(HostProtocol):
    """The host-port protocol on the chip's ports in Amaranth's simulator."""

    def __init__(self, ctx, dut, cfg):
        super().__init__(cfg)
        self.ctx, self.dut = ctx, dut

    def _tick(self):
        return self.ctx.tick()

    async def pause(self, cycles):
        await self._tick().repeat(cycles)

    async def send(self, words):
        ctx, d = self.ctx, self.dut
        for w in words:
            ctx.set(d.cmd.payload, w)
            ctx.set(d.cmd.valid, 1)
            while True:
                ready = ctx.get(d.cmd.ready)
                await self._tick()
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
            await self._tick()
            if valid:
                out.append(payload)
        ctx.set(d.resp.ready, 0)
        return out


def netlist_clocks(dut):
    """`dut` elaborated, with every clock domain whose clock is a plain copy of another domain's clock
    clocked by that domain's clock signal itself, as in the netlist.

    A tapped chip (``fabric.tap_registers``) puts each slice in a clock domain ``slice_<s>`` whose
    clock is ``m.d.comb += cd.clk.eq(ClockSignal("sync"))`` (hdl/chip.py ``_slice_domain``).  In the
    netlist that is one net: the Verilog clocks the slice registers on ``clk`` itself.  Amaranth's
    simulator instead runs the copy as combinational logic, one delta cycle after ``clk`` rises, so
    the slice registers sample *after* the ``sync`` registers have taken their new values: a
    register-to-register path from ``sync`` into a slice (the host port's ``mem_we``/``mem_wdata``
    into the slice's ``host_<s>_we``/``host_<s>_wdata``, the streams into the taps ...) loses its
    cycle, while a path through combinational logic (``mem_addr``) keeps it.  Host MEM writes then
    land one address early and the first vector is lost.  This gives each such domain the source
    domain's clock signal (creating ``sync`` at the top as ``Fragment.prepare`` would), so every
    register of the chip fires on the same edge in the same delta cycle.  Designs without such
    copies come back unchanged.
    """
    top = Fragment.get(dut, None)
    defined = {}                      # non-local domains, wherever defined (they propagate to the top)

    def collect(frag):
        for cd in frag.domains.values():
            if not cd.local:
                defined.setdefault(cd.name, cd)
        for sub, _name, _loc in frag.subfragments:
            collect(Fragment.get(sub, None))

    def source(name, scope):
        if name in scope:
            return scope[name]
        if name not in defined:       # a missing domain: created at the top, as prepare() would
            defined[name] = ClockDomain(name)
            top.add_domains(defined[name])
        return defined[name]

    def alias(frag, scope):
        scope = {**scope, **frag.domains}
        clocks = {id(cd.clk): cd for cd in frag.domains.values()}
        for stmt in frag.statements.get("comb", ()):
            lhs, rhs = getattr(stmt, "lhs", None), getattr(stmt, "rhs", None)
            if isinstance(lhs, Signal) and isinstance(rhs, ClockSignal) and id(lhs) in clocks:
                cd = clocks[id(lhs)]
                src = source(rhs.domain, scope)
                if src is not cd:
                    cd.clk = src.clk
        for i, (sub, name, loc) in enumerate(frag.subfragments):
            sub = Fragment.get(sub, None)
            frag.subfragments[i] = (sub, name, loc)
            alias(sub, scope)

    collect(top)
    alias(top, {})
    return top


class ReusedSimulator:
    """An Amaranth simulator of one design, built once and reset for every run.

    Building a simulator (elaboration, then pysim's code generation) takes seconds for a VXM and tens
    of seconds for the ``tiny`` chip, longer than a short run.  ``run(bench)`` runs the async
    testbench ``bench(ctx)`` to its end; from the second run on it first calls ``Simulator.reset()``,
    which puts every signal and memory back to its initial value and restarts the clock and the
    testbench, so each run starts from the same power-on state as a fresh simulator.  (A reset before
    the first run would drop a never-started coroutine.)  Used here for the ``amaranth`` engine's
    chip and by the unit tests (tests/harness.py)."""

    def __init__(self, dut, period=1e-8):
        self.dut = dut
        self.sim = Simulator(netlist_clocks(dut))
        self.sim.add_clock(period)
        self._bench, self._used = None, False

        async def testbench(ctx):
            await self._bench(ctx)

        self.sim.add_testbench(testbench)

    def run(self, bench):
        self._bench = bench
        if self._used:
            self.sim.reset()
        self._used = True
        self.sim.run()


_CHIPS = {}          # repr(config) -> ReusedSimulator of Chip(config), for run_case_pysim


def run_case_pysim(cfg, program, mem, reads=(), max_cycles=100_000, vcd=None):
    """Run one program on the chip under Amaranth's simulator, from power-on state.

    mem: {bank name: [(addr, int8 vectors)]}; reads: [(bank, addr, n)].
    Returns {"cycles", "errors", "reads", "run_wall_s"}.  Without `vcd` the simulator is kept for
    the next run on the same config (``ReusedSimulator``); with it, a fresh one records the waveform.
    """
    cfg = load_config(cfg)
    chip = None
    if not vcd:
        chip = _CHIPS.get(repr(cfg)) or _CHIPS.setdefault(repr(cfg), ReusedSimulator(Chip(cfg)))
    dut = chip.dut if chip else Chip(cfg)
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

    if chip:
        chip.run(bench)
        return result
    sim = Simulator(netlist_clocks(dut))
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    with sim.write_vcd(vcd):
        sim.run()
    return result


class _TrayHost(_Host):
    """``_Host`` on chip i of the tray top: its host port and its own clock domain."""

    def __init__(self, ctx, tray, i, cfg):
        super().__init__(ctx, SimpleNamespace(cmd=getattr(tray, f"chip{i}_cmd"), resp=getattr(tray, f"chip{i}_resp")),
                         cfg)
        self.domain = f"chip{i}"

    def _tick(self):
        return self.ctx.tick(self.domain)


def run_tray_pysim(cfg, programs, mems, reads, ppm=None, max_cycles=200_000):
    """The RTL tray (hdl/tray.py, every chip on its own clock) under Amaranth's simulator.

    programs: one Program per chip; mems: per chip {bank: [(addr, int8 vectors)]}; reads: per chip
    [(bank, addr, n)].  The chips start from power-on state (a fresh simulation), are loaded through
    their host ports, START together by the broadcast once every link is trained.  Returns per chip
    {"cycles", "errors", "reads"} and "run_wall_s" (START to the last chip done)."""
    from tinylpu.hdl.tray import Tray
    from tinylpu.sim.rtl.tray import period_ps
    cfg = load_config(cfg)
    N = cfg.chips
    ppm = list(cfg.ppm if ppm is None else ppm)
    dut = Tray(cfg)
    banks = {s.name: s.index for s in cfg.slices_of("mem")}
    results = [None] * N
    loaded, started, t_start = [False] * N, [False], [0.0]
    t_end = [0.0]

    def chip_bench(i):
        async def bench(ctx):
            h = _TrayHost(ctx, dut, i, cfg)
            await h.load_program(programs[i])
            for bank, lst in (mems[i] or {}).items():
                for addr, vecs in lst:
                    await h.write_mem(banks[bank], addr, vecs)
            loaded[i] = True
            while not started[0]:
                await ctx.tick(f"chip{i}")
            await ctx.tick(f"chip{i}").repeat(16)
            st = await h.wait_done(max_cycles, poll=16, max_poll=256)
            t_end[0] = time.perf_counter()
            st["reads"] = [await h.read_mem(banks[b], a, n) for b, a, n in (reads[i] or [])]
            results[i] = st
        return bench

    async def starter(ctx):
        clk = "chip0"
        while not all(loaded) or not all(ctx.get(getattr(dut, f"chip{i}_link")[p].trained)
                                         for i in range(N) for p in range(cfg.c2c_ports)):
            await ctx.tick(clk)
        t_start[0] = time.perf_counter()
        ctx.set(dut.start, 1)
        await ctx.tick(clk).repeat(8)
        ctx.set(dut.start, 0)
        started[0] = True

    sim = Simulator(dut)
    for i in range(N):
        sim.add_clock(period_ps(ppm[i]) * 1e-12, domain=f"chip{i}")
        sim.add_testbench(chip_bench(i))
    sim.add_testbench(starter)
    sim.run()
    return {"chips": results, "run_wall_s": t_end[0] - t_start[0]}
