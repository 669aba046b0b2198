"""The ``amaranth`` engine's simulator set-up (sim/rtl/pysim.py ``netlist_clocks``).

A clock domain whose clock is a combinational copy of another's (``cd.clk.eq(ClockSignal("sync"))``,
as each slice domain of a tapped chip, hdl/chip.py ``_slice_domain``) is one net in the netlist, but
one delta cycle late in Amaranth's simulator, so a register copying a ``sync`` register took the
value of the same edge.  ``netlist_clocks`` clocks such a domain by the source clock itself.
"""

from amaranth.hdl import ClockDomain, ClockSignal, Module, Signal
from amaranth.sim import Simulator

from tinylpu.sim.rtl.pysim import ReusedSimulator, netlist_clocks


def _design():
    m = Module()
    m.domains.copy = cd = ClockDomain("copy", local=True)
    m.d.comb += cd.clk.eq(ClockSignal("sync"))
    a, b, c = Signal(8), Signal(8), Signal(8)
    m.d.sync += a.eq(a + 1)          # a register of `sync` ...
    m.d.copy += b.eq(a)              # ... copied straight into a register of `copy`
    m.d.sync += c.eq(a)              # and into one of `sync`: the reference
    return m, cd, a, b, c


def _trace(top, sigs, n=6):
    sim = Simulator(top)
    sim.add_clock(1e-8)
    got = []

    async def bench(ctx):
        for _ in range(n):
            await ctx.tick()
            got.append(tuple(ctx.get(s) for s in sigs))

    sim.add_testbench(bench)
    sim.run()
    return got


def test_copied_clock_domain_keeps_register_timing():
    m, cd, a, b, c = _design()
    top = netlist_clocks(m)
    assert cd.clk is top.domains["sync"].clk       # the copy's domain is clocked by `sync`'s clock
    rows = _trace(top, (a, b, c))
    assert [r[0] for r in rows] == list(range(1, 7))
    assert all(r[1] == r[2] == r[0] - 1 for r in rows), rows


def test_reused_simulator_uses_netlist_clocks():
    m, _cd, a, b, c = _design()
    rs = ReusedSimulator(m)
    got = []

    async def bench(ctx):
        for _ in range(5):
            await ctx.tick()
            got.append((ctx.get(a), ctx.get(b), ctx.get(c)))

    for _ in range(2):               # the same timing after Simulator.reset()
        got.clear()
        rs.run(bench)
        assert got == [(i, i - 1, i - 1) for i in range(1, 6)], got


def test_designs_without_copied_clocks_are_unchanged():
    m = Module()
    m.domains.other = ClockDomain("other")
    x = Signal(4)
    m.d.other += x.eq(x + 1)
    top = netlist_clocks(m)
    assert set(top.domains) == {"other"}     # nothing added: `sync` is not used
