"""The FPGA top (hdl/fpga_top.py) under the Amaranth simulator: host-port commands as UART bytes.

The config is ``ice40`` (4 lanes: one word per vector) and the UART runs at 4 clocks per bit, so the
whole exchange takes a few thousand cycles.
"""

import os

import pytest
from amaranth.sim import Simulator

from tinylpu.config import load_config
from tinylpu.hdl.fpga_top import FpgaTop, UartRx, UartTx
from tinylpu.wire import Cmd, command

os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")

DIV = 4


async def uart_send(ctx, pin, byte):
    for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
        ctx.set(pin, bit)
        await ctx.tick().repeat(DIV)


async def uart_recv(ctx, pin, timeout=20000):
    for _ in range(timeout):
        if not ctx.get(pin):
            break
        await ctx.tick()
    else:
        raise AssertionError("no start bit on tx")
    await ctx.tick().repeat(DIV + DIV // 2)   # middle of data bit 0
    byte = 0
    for i in range(8):
        byte |= ctx.get(pin) << i
        await ctx.tick().repeat(DIV)
    assert ctx.get(pin) == 1, "bad stop bit"
    return byte


async def send_words(ctx, pin, words):
    for w in words:
        for i in range(8):
            await uart_send(ctx, pin, (w >> (8 * i)) & 0xFF)


async def recv_words(ctx, pin, n):
    out = []
    for _ in range(n):
        w = 0
        for i in range(8):
            w |= await uart_recv(ctx, pin) << (8 * i)
        out.append(w)
    return out


def test_uart_loopback():
    """UartTx -> UartRx: every byte value pattern arrives intact."""
    from amaranth.hdl import Module
    m = Module()
    m.submodules.tx = tx = UartTx(DIV)
    m.submodules.rx = rx = UartRx(DIV)
    m.d.comb += [rx.rx.eq(tx.tx), rx.out.ready.eq(1)]
    sent = [0x00, 0xFF, 0xA5, 0x5A, 0x01, 0x80]
    got = []

    async def bench(ctx):
        for b in sent:
            ctx.set(tx.in_.payload, b)
            ctx.set(tx.in_.valid, 1)
            await ctx.tick().until(tx.in_.ready)
        ctx.set(tx.in_.valid, 0)
        await ctx.tick().repeat(12 * DIV)

    async def monitor(ctx):
        async for _, _, valid, payload in ctx.tick().sample(rx.out.valid, rx.out.payload):
            if valid:
                got.append(payload)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_process(monitor)
    sim.run()
    assert got == sent


@pytest.mark.slow
def test_fpga_top_host_commands():
    """Every host command on the FPGA top, bit by bit over its UART pins (~40 s in Amaranth's simulator).
    The fast tier runs the same commands end to end through the UART host in
    tests/sim/host/test_uart.py."""
    cfg = load_config("ice40")
    dut = FpgaTop(cfg, DIV)
    vecs = [0x8001_7F02, 0x0403_0201, 0xFFEE_DDCC]     # 4 int8 lanes each, lane 0 in bits 0-7
    results = {}

    async def bench(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(10)
        await send_words(ctx, dut.rx, [command(Cmd.WRITE_MEM, target=1, address=5, count=3), *vecs])
        await send_words(ctx, dut.rx, [command(Cmd.READ_MEM, target=1, address=5, count=3)])
        results["read"] = await recv_words(ctx, dut.tx, 3)
        await send_words(ctx, dut.rx, [command(Cmd.STATUS)])
        results["status0"] = await recv_words(ctx, dut.tx, 2)
        # every queue empty, then START: all queues halted from cycle 0, the run is done at once
        for p in range(len(cfg.slices)):
            await send_words(ctx, dut.rx, [command(Cmd.LOAD_QUEUE, target=p, address=0, count=0)])
        await send_words(ctx, dut.rx, [command(Cmd.START)])
        await send_words(ctx, dut.rx, [command(Cmd.STATUS)])
        results["status1"] = await recv_words(ctx, dut.tx, 2)
        # another bank, untouched by the first write
        await send_words(ctx, dut.rx, [command(Cmd.WRITE_MEM, target=0, address=0, count=1), 0x1122_3344])
        await send_words(ctx, dut.rx, [command(Cmd.READ_MEM, target=0, address=0, count=1)])
        results["read2"] = await recv_words(ctx, dut.tx, 1)
        assert not ctx.get(dut.overrun)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert results["read"] == vecs
    flags, cycles = results["status0"]
    assert flags == 0 and cycles == 0
    flags, cycles = results["status1"]
    assert flags & 0b11 == 0b10, hex(flags)            # done, not running
    assert (flags >> 8) & 0xFFFF == 0, hex(flags)      # no error flags
    assert results["read2"] == [0x1122_3344]
