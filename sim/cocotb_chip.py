"""cocotb testbench for the tinylpu chip: a host driver for the host port, and a case runner.

Run through ``sim.rtl_runner.run_cases_rtl`` (not by pytest directly).  Environment:

* ``TINYLPU_CONFIG``: config name or YAML path the Verilog was built from;
* ``TINYLPU_CASES``: JSON file ``{"cases": [...], "scrub": {...} | null}``; the cases are
  normalized (see ``rtl_runner.normalize_case``), the scrub is ``rtl_runner.scrub_program``'s
  program (hex), host writes ("mem") and "restore" writes, run before every case::

      {"name": str, "program": hex of Program.to_bytes(),
       "mem": [[bank_number, addr, [[int8 x lanes], ...]], ...],
       "read": [[bank_number, addr, n], ...], "max_cycles": int}

* ``TINYLPU_RESULTS``: JSON file the results are written to, one per case::

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
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from ..config import load_config
from ..firmware.isa import encode
from ..firmware.program import Program
from ..hdl.common import ERROR_BITS
from ..hdl.hostport import Cmd, command

MASK64 = (1 << 64) - 1


def _u(sig):
    v = sig.value
    return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)


def vector_words(vec, lanes):
    """int8 lanes -> host words (lane 0 in bits 0-7 of the first word)."""
    v = 0
    for j, x in enumerate(vec):
        v |= (int(x) & 0xFF) << (8 * j)
    return [(v >> (64 * k)) & MASK64 for k in range(-(-lanes // 8))]


def words_vector(words, lanes):
    v = 0
    for k, w in enumerate(words):
        v |= w << (64 * k)
    out = []
    for j in range(lanes):
        b = (v >> (8 * j)) & 0xFF
        out.append(b - 256 if b >= 128 else b)
    return out


class Host:
    """Speaks the host-port protocol; every method starts and ends just after a falling edge."""

    def __init__(self, dut, cfg):
        self.dut, self.cfg = dut, cfg
        self.wpv = -(-cfg.lanes // 8)
        self.clk = dut.clk

    async def edge(self):
        await FallingEdge(self.clk)

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

    async def write_mem(self, bank, addr, vectors):
        words = [command(Cmd.WRITE_MEM, bank, addr, len(vectors))]
        for v in vectors:
            words += vector_words(v, self.cfg.lanes)
        await self.send(words)

    async def read_mem(self, bank, addr, n):
        out = []
        while n:                      # at most 0xFFFF vectors per command
            k = min(n, 0xFFFF)
            await self.send([command(Cmd.READ_MEM, bank, addr, k)])
            words = await self.recv(k * self.wpv)
            out += [words_vector(words[i * self.wpv:(i + 1) * self.wpv], self.cfg.lanes) for i in range(k)]
            addr, n = addr + k, n - k
        return out

    async def load_queue(self, position, words):
        await self.send([command(Cmd.LOAD_QUEUE, position, 0, len(words))] + list(words))

    async def start(self):
        await self.send([command(Cmd.START)])

    async def status(self):
        await self.send([command(Cmd.STATUS)])
        w0, w1 = await self.recv(2)
        errs = (w0 >> 8) & 0xFFFF
        return {"running": bool(w0 & 1), "done": bool(w0 >> 1 & 1), "error_bits": errs,
                "errors": [n for i, n in enumerate(ERROR_BITS) if errs >> i & 1], "cycles": w1 & 0xFFFFFFFF,
                "stall": w1 >> 32}

    async def load_program(self, prog):
        """Load every slice's queue (empty ones with length 0, so they are halted from cycle 0)."""
        for s in self.cfg.slices:
            await self.load_queue(s.position, [encode(i) for i in prog.queues.get(s.name, [])])

    async def wait_done(self, max_cycles, poll=32, max_poll=256):
        """Poll STATUS, less often as the run goes on (the cycle count is exact anyway), until the chip
        stops or passes max_cycles; the last status, with "timeout" set if it was still running."""
        while True:
            await ClockCycles(self.clk, poll, rising=False)
            st = await self.status()
            if not st["running"] or st["cycles"] > max_cycles:
                break
            poll = min(2 * poll, max_poll)
        st["timeout"] = bool(st["running"])
        return st

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.clk, 2, rising=False)
        self.dut.rst.value = 0
        await self.edge()


async def run_program(host, cfg, case):
    """Load the queues and the MEM image, START, poll STATUS until the run ends; the last status."""
    await host.load_program(Program.from_bytes(bytes.fromhex(case["program"])))
    for bank, addr, vectors in case["mem"]:
        await host.write_mem(bank, addr, vectors)
    t_run = time.perf_counter()
    await host.start()
    st = await host.wait_done(case.get("max_cycles", 200_000))
    st["run_wall_s"] = time.perf_counter() - t_run      # START to done, for cycles/s measurements
    return st


async def run_case(host, cfg, case, scrub):
    t0 = time.perf_counter()
    await host.reset()
    if scrub:
        st = await run_program(host, cfg, scrub)
        if st["errors"] or st["timeout"]:
            raise RuntimeError(f"the scrub program failed on the chip: {st}")
        for bank, addr, vectors in scrub["restore"]:
            await host.write_mem(bank, addr, vectors)
    st = await run_program(host, cfg, case)
    st["reads"] = [await host.read_mem(bank, addr, n) for bank, addr, n in case["read"]]
    st["name"] = case.get("name", "")
    st["wall_s"] = time.perf_counter() - t0
    return st


@cocotb.test()
async def run_cases(dut):
    cfg = load_config(os.environ["TINYLPU_CONFIG"])
    with open(os.environ["TINYLPU_CASES"]) as f:
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
        with open(os.environ["TINYLPU_RESULTS"], "w") as f:     # partial results survive a crash
            json.dump(results, f)
