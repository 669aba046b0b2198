"""cocotb testbench for the RTL tray (hdl/tray.py ``Tray``): one clock and one host driver per chip.

Run through ``sim.rtl.tray.run_tray_rtl`` (not by pytest directly).  Environment:

* ``TINYLPU_CONFIG``: the tray config (YAML path);
* ``TINYLPU_INPUT``: JSON ``{"cases": [normalized case per chip (rtl.runner.normalize_case)],
  "scrub": {...} | null, "period_ps": [int per chip], "max_cycles": int, "inject": [[chip, port,
  index, word, mask], ...]}`` (``inject``: at most ``INJECT_ENTRIES`` per (chip, port); written to
  the ``chip<a>_inject`` ports before reset is released);
* ``TINYLPU_RESULT``: JSON file for the result: ``{"chips": [status + "reads" + "links" per
  chip], "sim_ns": float}``.

Sequence: every chip in reset, its clock started (period ``period_ps[i]``, so the chips drift),
reset released; per chip in parallel (each through its own host port, in its own clock): the scrub
program (unit state to power-on values, started by a host START), then its queues and MEM image.
Once every link reports ``trained``, the ``start`` broadcast is held high for 8 cycles of chip 0;
every chip starts on its synchronized rising edge.  Then STATUS is polled on every chip until all
have stopped, the MEM ranges are read back, and the link status ports are sampled.
"""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Timer

from tinylpu.config import load_config
from tinylpu.firmware.program import Program
from tinylpu.hdl.chip import LINK_STATUS
from tinylpu.hdl.tray import INJECT_ENTRIES
from tinylpu.sim.rtl.cocotb_chip import Host, run_scrub


class Pins:
    """The signals of chip i's host port under the names ``Host`` uses (``cmd__valid``, ``clk``...)."""

    def __init__(self, dut, prefix):
        object.__setattr__(self, "_dut", dut)
        object.__setattr__(self, "_prefix", prefix)

    def __getattr__(self, name):
        return getattr(self._dut, self._prefix + name)


def _u(sig):
    v = sig.value
    return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)


def _s(sig, bits):
    v = _u(sig)
    return v - (1 << bits) if v >> (bits - 1) else v


async def load(host, cfg, case):
    await host.load_program(Program.from_bytes(bytes.fromhex(case["program"])))
    for bank, addr, vectors in case["mem"]:
        await host.write_mem(bank, addr, vectors)


@cocotb.test()
async def run_tray(dut):
    cfg = load_config(os.environ["TINYLPU_CONFIG"])
    with open(os.environ["TINYLPU_INPUT"]) as f:
        doc = json.load(f)
    N = cfg.chips
    pins = [Pins(dut, f"chip{i}_") for i in range(N)]
    dut.start.value = 0
    used = {}
    for a in range(N):
        for q in range(cfg.c2c_ports):
            for e in range(INJECT_ENTRIES):
                for name in ("en", "index", "word", "mask"):
                    getattr(dut, f"chip{a}_inject__{q}__{e}__{name}").value = 0
    for a, q, index, word, mask in doc.get("inject", []):
        e = used[(a, q)] = used.get((a, q), -1) + 1
        for name, v in (("index", index), ("word", word), ("mask", mask), ("en", 1)):
            getattr(dut, f"chip{a}_inject__{q}__{e}__{name}").value = v
    for p, period in zip(pins, doc["period_ps"]):
        p.cmd__valid.value = 0
        p.resp__ready.value = 0
        p.rst.value = 1
        Clock(p.clk, period, unit="ps", period_high=period // 2).start(start_high=False)
    hosts = [Host(p, cfg) for p in pins]
    await Timer(40, unit="ns")
    for p in pins:
        p.rst.value = 0
    scrub = doc.get("scrub")

    async def prepare(i):
        h = hosts[i]
        await h.edge()
        if scrub:
            try:
                await run_scrub(h, cfg, scrub)
            except RuntimeError as e:
                raise RuntimeError(f"chip {i}: {e}") from None
        await load(h, cfg, doc["cases"][i])

    tasks = [cocotb.start_soon(prepare(i)) for i in range(N)]
    for t in tasks:
        await t
    clk0 = pins[0].clk
    for _ in range(2000):
        if all(_u(getattr(dut, f"chip{i}_link__{p}__trained")) for i in range(N) for p in range(cfg.c2c_ports)):
            break
        await ClockCycles(clk0, 8, rising=False)
    else:
        raise RuntimeError("the links did not train")
    dut._log.info("chips loaded, links trained; START")
    # the START broadcast
    dut.start.value = 1
    await ClockCycles(clk0, 8, rising=False)
    dut.start.value = 0
    max_cycles = doc.get("max_cycles", 200_000)
    results = [None] * N

    async def finish(i):
        results[i] = await hosts[i].wait_done(max_cycles)
        dut._log.info("chip %d stopped: %s", i, results[i])

    tasks = [cocotb.start_soon(finish(i)) for i in range(N)]
    for t in tasks:
        await t
    # links after the run (every chip stopped)
    for i in range(N):
        links = []
        for p in range(cfg.c2c_ports):
            d = {}
            for name in LINK_STATUS + ["overrun"]:
                sig = getattr(dut, f"chip{i}_link__{p}__{name}")
                d[name] = _s(sig, 32) if name == "hac_offset" else _u(sig)
            links.append(d)
        results[i]["links"] = links

    async def readback(i):
        h = hosts[i]
        await h.edge()                  # Host methods start just after a falling edge of their clock
        results[i]["reads"] = [await h.read_mem(b, a, n) for b, a, n in doc["cases"][i]["read"]]

    tasks = [cocotb.start_soon(readback(i)) for i in range(N)]
    for t in tasks:
        await t
    from cocotb.utils import get_sim_time
    with open(os.environ["TINYLPU_RESULT"], "w") as f:
        json.dump({"chips": results, "sim_ns": get_sim_time("ns")}, f)
