"""The host-port words: one set of lib.data Structs (tinylpu.wire) packs and parses them on the host
and is the layout the gateware decodes (hdl/hostport.py, run here in Amaranth's simulator)."""

import numpy as np
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from tinylpu.config import load_config
from tinylpu.hdl.hostport import HostPort
from tinylpu.wire import (
    ERROR_BITS,
    Cmd,
    CommandWord,
    command,
    parse_command,
    parse_status,
    status_words,
    vector_words,
    words_vector,
)

U16 = st.integers(0, 0xFFFF)


@given(st.sampled_from(list(Cmd)), st.integers(0, 255), U16, U16)
def test_command_round_trip(cmd, target, address, count):
    w = command(cmd, target, address, count)
    assert 0 <= w < 1 << 64
    assert parse_command(w) == {"cmd": cmd, "target": target, "address": address, "count": count}
    # the documented bit positions (docs/rtl.md): 0-7 command, 8-15 target, 16-31 address, 32-47 count
    assert w == cmd.value | target << 8 | address << 16 | count << 32


def test_command_fields_truncate_and_unknown_commands_parse():
    assert parse_command(command(Cmd.READ_MEM, 0x1FF, 0x12345, 0x10002))["target"] == 0xFF
    assert parse_command(0x77)["cmd"] == 0x77          # undefined: the chip drops it


@given(st.booleans(), st.booleans(), st.integers(0, (1 << len(ERROR_BITS)) - 1), st.integers(0, 2**32 - 1),
       st.integers(0, 2**32 - 1))
def test_status_round_trip(running, done, errors, cycles, stall):
    d = parse_status(*status_words(running, done, errors, cycles, stall))
    assert (d["running"], d["done"], d["error_bits"], d["cycles"], d["stall"]) == (running, done, errors, cycles,
                                                                                   stall)
    assert d["errors"] == [n for i, n in enumerate(ERROR_BITS) if errors >> i & 1]


@settings(max_examples=50)
@given(st.sampled_from([4, 8, 16, 24, 64]), st.data())
def test_vector_words_round_trip(lanes, data):
    v = data.draw(st.lists(st.integers(-128, 127), min_size=lanes, max_size=lanes))
    words = vector_words(v, lanes)
    assert len(words) == -(-lanes // 8) and words_vector(words, lanes) == v


def test_layout_sizes():
    assert CommandWord.as_shape().size == 64


def test_gateware_decodes_the_structs():
    """The host port decodes a WRITE_MEM built by ``command`` into the bank, address and data the
    Struct says, and answers STATUS with words ``parse_status`` reads back as its inputs."""
    cfg = load_config("tiny")
    dut = HostPort(cfg)
    rng = np.random.default_rng(1)
    vec = rng.integers(-128, 128, cfg.lanes).tolist()
    seen = {}

    async def bench(ctx):
        async def send(w):
            ctx.set(dut.cmd.payload, w)
            ctx.set(dut.cmd.valid, 1)
            while True:
                ready = ctx.get(dut.cmd.ready)
                await ctx.tick()
                if ready:
                    break
            ctx.set(dut.cmd.valid, 0)

        for w in [command(Cmd.WRITE_MEM, 3, 0x123, 1)] + vector_words(vec, cfg.lanes):
            await send(w)
        for _ in range(4):
            if ctx.get(dut.mem_we):
                seen["we"], seen["addr"] = ctx.get(dut.mem_we), ctx.get(dut.mem_addr)
                seen["data"] = ctx.get(dut.mem_wdata)
            await ctx.tick()
        ctx.set(dut.st_running, 1)
        ctx.set(dut.st_errors, 0b100000101)
        ctx.set(dut.st_cycles, 123456)
        ctx.set(dut.st_stall, 77)
        await send(command(Cmd.STATUS))
        ctx.set(dut.resp.ready, 1)
        words = []
        while len(words) < 2:
            if ctx.get(dut.resp.valid):
                words.append(ctx.get(dut.resp.payload))
            await ctx.tick()
        seen["status"] = parse_status(*words)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen["we"] == 1 << 3 and seen["addr"] == 0x123
    assert words_vector([seen["data"] >> (64 * k) & (2**64 - 1) for k in range(-(-cfg.lanes // 8))],
                        cfg.lanes) == vec
    st_ = seen["status"]
    assert st_["running"] and not st_["done"] and st_["cycles"] == 123456 and st_["stall"] == 77
    assert st_["errors"] == [ERROR_BITS[0], ERROR_BITS[2], ERROR_BITS[8]]
