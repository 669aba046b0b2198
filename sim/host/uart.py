"""The ``uart`` transport: the host-port protocol as bytes to the FPGA top (hdl/fpga_top.py).

Every 64-bit host-port word travels as 8 bytes, least significant first, both ways (8N1 on the
wire).  The FPGA's UART receiver has no flow control, so the protocol never has more than one
command with a response outstanding: ``HostProtocol`` sends READ_MEM / STATUS and reads the whole
answer before it sends anything else.

* ``UartHost(cfg, transport)``: ``HostProtocol`` over any object with ``write(bytes)`` and
  ``read(n) -> bytes`` (which may return fewer bytes when its timeout expires), e.g. a
  ``serial.Serial``.
* ``open_board(device, baud)``: a pyserial port for a real board (``pip install pyserial``);
  115200 baud is what ``make synth`` builds (``BoardTop``).
* ``SimulatedBoard(cfg, divisor)``: the same byte stream into ``FpgaTop`` running in Amaranth's
  simulator on a background thread (bits on its ``rx`` pin, bits sampled from its ``tx`` pin), so
  the transport is tested against the gateware itself.

``host.api.Chip(config, engine="uart", transport=...)`` (or ``device="/dev/ttyUSB1"``) runs the
host API over it.
"""

import queue
import threading
import time

from tinylpu.sim.host.proto import HostProtocol

__all__ = ["UartHost", "UartError", "open_board", "SimulatedBoard"]


class UartError(RuntimeError):
    pass


class UartHost(HostProtocol):
    def __init__(self, cfg, transport, clock_hz=None, timeout_s=5.0):
        super().__init__(cfg)
        self.t = transport
        self.clock_hz = clock_hz if clock_hz is not None else cfg.clock_mhz * 1e6
        self.timeout_s = timeout_s
        self.bytes_out = self.bytes_in = 0

    async def send(self, words):
        data = b"".join((w & (2**64 - 1)).to_bytes(8, "little") for w in words)
        self.t.write(data)
        if hasattr(self.t, "flush"):
            self.t.flush()
        self.bytes_out += len(data)

    async def recv(self, n):
        want = 8 * n
        buf = bytearray()
        deadline = time.monotonic() + self.timeout_s
        while len(buf) < want:
            chunk = self.t.read(want - len(buf))
            if chunk:
                buf += chunk
                deadline = time.monotonic() + self.timeout_s
            elif time.monotonic() > deadline:
                raise UartError(f"uart: the board answered {len(buf)} of {want} bytes, then nothing for "
                                f"{self.timeout_s} s (is the bitstream loaded, is the baud rate right?)")
        self.bytes_in += len(buf)
        return [int.from_bytes(buf[8 * i:8 * i + 8], "little") for i in range(n)]

    async def pause(self, cycles):
        if self.clock_hz:
            time.sleep(cycles / self.clock_hz)


def open_board(device, baud=115200, timeout_s=0.5):
    try:
        import serial
    except ImportError:
        raise UartError("uart: pyserial is not installed (pip install pyserial)") from None
    try:
        return serial.Serial(device, baud, timeout=timeout_s)
    except serial.SerialException as e:
        raise UartError(f"uart: cannot open {device}: {e}") from None


class SimulatedBoard:
    """``FpgaTop(cfg, divisor)`` in Amaranth's simulator, as a byte transport (thread-backed).

    Use as a context manager, or call ``close()``: the simulation thread ends then."""

    def __init__(self, cfg, divisor=4, timeout_s=0.2):
        import os
        os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
        from amaranth.sim import Simulator

        from tinylpu.config import load_config
        from tinylpu.hdl.fpga_top import FpgaTop
        self.cfg = load_config(cfg)
        self.div = divisor
        self.top = FpgaTop(self.cfg, divisor)
        self.to_board, self.from_board = queue.Queue(), queue.Queue()
        self.timeout_s = timeout_s
        self.stop = threading.Event()
        self.cycles = 0
        self.error = None
        sim = Simulator(self.top)
        sim.add_clock(1e-8)
        sim.add_testbench(self._drive)
        sim.add_testbench(self._sample, background=True)
        self._thread = threading.Thread(target=self._run, args=(sim,), daemon=True)
        self._thread.start()

    def _run(self, sim):
        try:
            sim.run()
        except Exception as e:          # surfaced by read()
            self.error = e

    async def _drive(self, ctx):
        pin = self.top.rx
        ctx.set(pin, 1)
        while not self.stop.is_set():
            try:
                byte = self.to_board.get_nowait()
            except queue.Empty:
                await ctx.tick().repeat(self.div)
                self.cycles += self.div
                continue
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                ctx.set(pin, bit)
                await ctx.tick().repeat(self.div)
                self.cycles += self.div

    async def _sample(self, ctx):
        pin, d = self.top.tx, self.div
        while True:
            while ctx.get(pin):
                await ctx.tick()
            await ctx.tick().repeat(d + d // 2)          # the middle of data bit 0
            byte = 0
            for i in range(8):
                byte |= ctx.get(pin) << i
                await ctx.tick().repeat(d)
            self.from_board.put(byte)                    # (now in the stop bit)

    def write(self, data):
        for b in data:
            self.to_board.put(b)

    def read(self, n):
        out = bytearray()
        deadline = time.monotonic() + self.timeout_s
        while len(out) < n and time.monotonic() < deadline:
            if self.error is not None:
                raise UartError(f"uart: the simulated board failed: {self.error}")
            try:
                out.append(self.from_board.get(timeout=0.01))
            except queue.Empty:
                pass
        return bytes(out)

    def close(self):
        self.stop.set()
        self._thread.join(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
