"""cocotb testbench for the tinylpu chip: a host driver for the host port, and a case runner.

Run through ``sim.rtl.runner.run_cases_rtl`` (not by pytest directly).  Environment:

* ``TINYLPU_CONFIG``: config name or YAML path the Verilog was built from;
* ``TINYLPU_INPUT``: JSON file ``{"cases": [...], "scrub": {...} | null}``; the cases are
  normalized (see ``rtl.runner.normalize_case``), the scrub is ``rtl.runner.scrub_program``'s
  program (hex), host writes ("mem") and "restore" writes, run before every case::

      {"name": str, "program": hex of Program.to_bytes(),
       "mem": [[bank_number, addr, [[int8 x lanes], ...]], ...],
       "read": [[bank_number, addr, n], ...], "max_cycles": int}

* ``TINYLPU_RESULT``: JSON file the results are written to, one per case::

      {"name", "cycles", "running", "done", "timeout", "error_bits", "errors": [flag names],
       "reads": [[[int8 x lanes], ...] per entry of "read"], "sim_cycles": clocks the case took}

All cases run in one simulator invocation.  Per case: the chip is reset (``rst``), the scrub
program runs (unit state back to power-on values), every queue is loaded (absent queues with
length 0), the MEM image is written, START, STATUS is polled until the run ends, and the
requested MEM ranges are read back.

Host port signals are driven and sampled at the falling clock edge: the chip's ``cmd.ready`` and
``resp.valid/payload`` depend on registers only, so a value seen there holds until the next rising
edge, where the transfer happens when valid and ready are both high.
"""

import json
import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from tinylpu.config import load_config
from tinylpu.sim.host.proto import HostProtocol, run_program, run_scrub
from tinylpu.wire import vector_words, words_vector  # noqa: F401  (re-exported)


def _u(sig):
    v = sig.value
    return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)


class Host(HostProtocol):
    """The host-port protocol on the chip's pins; every method starts and ends just after a falling
    edge."""

    def __init__(self, dut, cfg):
        super().__init__(cfg)
        self.dut = dut
        self.clk = dut.clk

    async def edge(self):
        await FallingEdge(self.clk)

    async def pause(self, cycles):
        await ClockCycles(self.clk, cycles, rising=False)

    async def send(self, words):
        d = self.dut
        for w in words:
            d.cmd__payload.value = w
            d.cmd__valid.value = 1
            while True:
                ready = _u(d.cmd__ready)
                await self.edge()
                if ready:
                    break
        d.cmd__valid.value = 0

    async def recv(self, n):
        d = self.dut
        out = []
        d.resp__ready.value = 1
        while len(out) < n:
            valid = _u(d.resp__valid)
            payload = _u(d.resp__payload) if valid else None
            await self.edge()
            if valid:
                out.append(payload)
        d.resp__ready.value = 0
        return out

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.clk, 2, rising=False)
        self.dut.rst.value = 0
        await self.edge()


def backdoor_banks(dut, cfg):
    """The chip's MEM bank arrays as simulator handles, ``{bank name: handle}``, or None when `dut`
    is not a chip top whose banks the simulator exposes (a tray top's pins, a board)."""
    try:
        return {s.name: getattr(dut, s.name).bank for s in cfg.slices_of("mem")}
    except AttributeError:
        return None


def backdoor_queues(dut, cfg):
    """Every slice's instruction-queue array (``icu_<slice>.queue``) as a simulator handle,
    ``{slice name: handle}``, or None when `dut` does not expose them (see ``backdoor_banks``)."""
    try:
        return {s.name: getattr(dut, f"icu_{s.name}").queue for s in cfg.slices}
    except AttributeError:
        return None


def sim_clocks(dut, period_ps):
    """The simulated time so far in clock periods of `period_ps`."""
    from cocotb.utils import get_sim_time
    return int(get_sim_time("ps")) // period_ps


def backdoor_write(handle, addr, vectors):
    """Write int8 vectors into a bank array directly (lane 0 in bits 0-7, as the host port writes
    them): the test bench's fast path for megabyte images, applied at the simulator's next write
    phase.  ``RtlPort`` reads samples back through the host port before it trusts it."""
    for k, v in enumerate(np.asarray(vectors, np.int8).reshape(len(vectors), -1)):
        handle[int(addr) + k].value = int.from_bytes(v.tobytes(), "little")


async def run_case(host, cfg, case, scrub):
    t0 = time.perf_counter()
    await host.reset()
    if scrub:
        await run_scrub(host, cfg, scrub)
    st = await run_program(host, cfg, case)
    st["reads"] = [await host.read_mem(bank, addr, n) for bank, addr, n in case["read"]]
    st["name"] = case.get("name", "")
    st["wall_s"] = time.perf_counter() - t0
    return st


@cocotb.test()
async def run_cases(dut):
    cfg = load_config(os.environ["TINYLPU_CONFIG"])
    with open(os.environ["TINYLPU_INPUT"]) as f:
        doc = json.load(f)
    cases, scrub = doc["cases"], doc.get("scrub")
    dut.cmd__valid.value = 0
    dut.resp__ready.value = 0
    dut.rst.value = 1
    Clock(dut.clk, 10, unit="ns").start(start_high=False)
    host = Host(dut, cfg)
    await host.edge()
    results = []
    for case in cases:
        results.append(await run_case(host, cfg, case, scrub))
        with open(os.environ["TINYLPU_RESULT"], "w") as f:     # partial results survive a crash
            json.dump(results, f)
