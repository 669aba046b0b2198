"""The `uart` transport (sim/host/uart.py): the host-port protocol as bytes, against the FPGA top's
gateware (hdl/fpga_top.py in Amaranth's simulator, bits on its rx/tx pins), compared with golden.

The config is ``ice40`` (the smallest chip) at 4 clocks per UART bit.
"""

import numpy as np
import pytest

from tinylpu.config import load_config
from tinylpu.firmware.asm import assemble
from tinylpu.sim.golden.chip import Golden
from tinylpu.sim.host.api import Chip, EngineError, RtlPort, drive
from tinylpu.sim.host.uart import SimulatedBoard, UartError, UartHost

CFG = load_config("ice40")


def copy_program(cfg):
    """mem0 rows 0..3 -> stream e0 -> mem1 rows 10..13 (reversed by stride -1)."""
    d = cfg.slice("mem1").position - cfg.slice("mem0").position
    src = f"""
    .queue mem0
        READ e0, 3, n=4, stride=-1
        HALT
    .queue mem1
        NOP {cfg.latency['mem_read'] + d}
        WRITE e0, 10, n=4
        NOP {cfg.latency['mem_write'] + 4}
        HALT
    """
    return assemble(src, cfg)


def test_uart_host_runs_a_program_on_the_fpga_top_like_golden():
    rng = np.random.default_rng(5)
    data = rng.integers(-128, 128, size=(4, CFG.lanes)).astype(np.int8)
    data[0, 0], data[1, 0] = -128, 127                      # edge bytes through the UART
    prog = copy_program(CFG)
    g = Golden(CFG)
    g.write_mem("mem0", 0, data)
    g.load_program(prog)
    gr = g.run()

    async def host_job(h):
        b0, b1 = CFG.slice("mem0").index, CFG.slice("mem1").index
        await h.write_mem(b0, 0, data.tolist())
        back = await h.read_mem(b0, 0, 4)
        await h.load_program(prog)
        await h.start()
        st = await h.wait_done(10_000, poll=4, max_poll=16)
        out = await h.read_mem(b1, 10, 4)
        return back, st, out

    with SimulatedBoard(CFG, divisor=4, timeout_s=0.5) as board:
        h = UartHost(CFG, board, timeout_s=60)
        back, st, out = drive(host_job(h))
    assert np.array_equal(np.asarray(back, np.int8), data)
    assert not st["errors"] and not st["timeout"] and st["done"]
    assert st["cycles"] == gr.cycles
    assert np.array_equal(np.asarray(out, np.int8), g.read_mem("mem1", 10, 4))
    assert np.array_equal(np.asarray(out, np.int8), data[::-1])
    status_bytes = h.bytes_in - 2 * 4 * h.wpv * 8          # everything else: 2-word STATUS answers
    assert status_bytes >= 16 and status_bytes % 16 == 0


def test_uart_errors_name_the_problem():
    class Silent:                               # a board that never answers
        def write(self, data):
            pass

        def read(self, n):
            return b""

    h = UartHost(CFG, Silent(), timeout_s=0.05)
    with pytest.raises(UartError, match=r"answered 0 of 16 bytes.*baud rate"):
        drive(h.status())
    with pytest.raises(EngineError, match="engine uart needs device"):
        Chip(CFG, engine="uart")
    port = RtlPort(None, CFG, host=h)
    assert port.dut is None
