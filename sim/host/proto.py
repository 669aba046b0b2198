"""The host-port protocol (docs/rtl.md), independent of how words reach the chip.

``HostProtocol`` builds every command out of two primitives a transport supplies:

* ``await send(words)``: 64-bit command words to the chip's ``cmd`` stream, in order;
* ``await recv(n)``: n 64-bit words from the chip's ``resp`` stream;
* ``await pause(cycles)``: let about that many chip cycles pass (STATUS polling).

Transports: ``sim.rtl.cocotb_chip.Host`` (the chip's pins under cocotb), ``sim.rtl.pysim`` (Amaranth's
simulator), ``sim.host.uart.UartHost`` (the FPGA top's UART: a real board through pyserial, or any
byte stream).
"""

import time
from abc import ABC, abstractmethod

from tinylpu.firmware.program import Program
from tinylpu.isa import encode
from tinylpu.wire import MASK64, Cmd, command, parse_status, vector_words, words_vector

__all__ = ["HostProtocol", "ScrubError", "run_program", "run_scrub", "vector_words", "words_vector", "parse_status", "MASK64"]


class HostProtocol(ABC):
    """Commands of the host port over a transport's ``send`` / ``recv`` / ``pause``."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.wpv = -(-cfg.lanes // 8)          # host words per vector

    async def edge(self):
        """Align to the transport's clock before a command sequence (pin-level transports)."""
        return None

    @abstractmethod
    async def send(self, words):
        """Words to the chip's ``cmd`` stream, in order."""

    @abstractmethod
    async def recv(self, n):
        """n words from the chip's ``resp`` stream."""

    @abstractmethod
    async def pause(self, cycles):
        """Let about `cycles` chip cycles pass."""

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
        return parse_status(w0, w1)

    async def load_program(self, prog):
        """Load every slice's queue (empty ones with length 0, so they are halted from cycle 0)."""
        for s in self.cfg.slices:
            await self.load_queue(s.position, [encode(i) for i in prog.queues.get(s.name, [])])

    async def wait_done(self, max_cycles, poll=32, max_poll=256):
        """Poll STATUS, less often as the run goes on (the cycle count is exact anyway), until the chip
        stops or passes max_cycles; the last status, with "timeout" set if it was still running."""
        while True:
            await self.pause(poll)
            st = await self.status()
            if not st["running"] or st["cycles"] > max_cycles:
                break
            poll = min(2 * poll, max_poll)
        st["timeout"] = bool(st["running"])
        return st


async def run_program(host, cfg, case):
    """Load the queues and the MEM image, START, poll STATUS until the run ends; the last status.
    case: {"program": hex of Program.to_bytes(), "mem": [[bank, addr, vectors]], "max_cycles"}."""
    await host.load_program(Program.from_bytes(bytes.fromhex(case["program"])))
    for bank, addr, vectors in case["mem"]:
        await host.write_mem(bank, addr, vectors)
    t_run = time.perf_counter()
    await host.start()
    st = await host.wait_done(case.get("max_cycles", 200_000))
    st["run_wall_s"] = time.perf_counter() - t_run      # START to done, for cycles/s measurements
    return st


class ScrubError(RuntimeError):
    pass


async def run_scrub(host, cfg, scrub):
    """Run ``rtl.runner.scrub_program``'s program (unit state back to the golden model's power-on
    values) and restore the MEM rows it used.  scrub: {"program": hex, "mem": [...], "restore": [...]}."""
    st = await run_program(host, cfg, scrub)
    if st["errors"] or st["timeout"]:
        raise ScrubError(f"the scrub program failed on the chip: {st}")
    for bank, addr, vectors in scrub["restore"]:
        await host.write_mem(bank, addr, vectors)
    return st
