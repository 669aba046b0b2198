"""cocotb testbench for the C2C link pair (hdl/c2c.py ``C2CLinkPair``) with two free-running clocks.

Run by ``run_c2c_cocotb`` below (tests/test_rtl_c2c.py, slow tier), not by pytest directly.
Environment: ``TINYLPU_INPUT`` = a JSON file ``{"lanes", "send_interval", "tx_ps", "rx_ps", "n"}``; the
clock periods are integers in picoseconds, so 10000 vs 10050 ps is a 4975 ppm difference.
"""

import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

TOP = "c2c_link_pair"


def _u(sig):
    v = sig.value
    return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)


@cocotb.test()
async def link_two_clocks(dut):
    with open(os.environ["TINYLPU_INPUT"]) as f:
        p = json.load(f)
    Clock(dut.tx_clk, p["tx_ps"], unit="ps").start()
    Clock(dut.rx_clk, p["rx_ps"], unit="ps").start()
    for s in (dut.send_valid, dut.send_data, dut.flip, dut.train_done):
        s.value = 0
    dut.tx_rst.value = 1
    dut.rx_rst.value = 1
    await ClockCycles(dut.tx_clk, 4)
    dut.tx_rst.value = 0
    dut.rx_rst.value = 0

    received = []

    async def monitor():
        while True:
            await RisingEdge(dut.rx_clk)
            if _u(dut.recv_valid):
                received.append(_u(dut.recv_data))

    cocotb.start_soon(monitor())
    for _ in range(400):
        await RisingEdge(dut.tx_clk)
        if _u(dut.trained):
            break
    assert _u(dut.trained), "link did not train"
    rng = random.Random(1)
    sent = [rng.getrandbits(8 * p["lanes"]) for _ in range(p["n"])]
    for v in sent:
        dut.send_valid.value = 1
        dut.send_data.value = v
        await RisingEdge(dut.tx_clk)
        dut.send_valid.value = 0
        await ClockCycles(dut.tx_clk, p["send_interval"] - 1)
    await ClockCycles(dut.rx_clk, 80)
    assert received == sent, f"{len(received)} of {len(sent)} received, or out of order"
    for name in ("crc_errors", "frame_errors", "seq_errors", "alarm", "overrun"):
        assert _u(getattr(dut, name)) == 0, name
    removed, inserted = _u(dut.skips_removed), _u(dut.skips_inserted)
    dut._log.info("tx %d ps, rx %d ps: %d vectors, SKIPs removed %d inserted %d, fill %d..%d",
                  p["tx_ps"], p["rx_ps"], len(sent), removed, inserted,
                  _u(dut.fill_min), _u(dut.fill_max))
    if p["tx_ps"] < p["rx_ps"]:
        assert removed > 0 and inserted == 0
    elif p["tx_ps"] > p["rx_ps"]:
        assert inserted > 0 and removed == 0


def run_c2c_cocotb(cfg, build_dir, *, tx_ps, rx_ps, n=150, sim="icarus"):
    """Convert ``C2CLinkPair(cfg)`` to Verilog and run ``link_two_clocks`` on it (``sim.rtl.launch``);
    returns the path of cocotb's results XML (the assertions run inside the simulation)."""
    from amaranth.back import verilog

    from tinylpu.hdl.c2c import C2CLinkPair
    from tinylpu.link import LinkParams
    from tinylpu.sim.rtl.launch import launch

    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    vfile = build_dir / f"{TOP}.v"
    vfile.write_text(verilog.convert(C2CLinkPair(cfg), name=TOP))
    params = LinkParams.from_cfg(cfg)
    payload = {"lanes": cfg.lanes, "send_interval": params.send_interval, "tx_ps": tx_ps, "rx_ps": rx_ps, "n": n}
    try:
        run = launch(vfile, TOP, "tinylpu.sim.rtl.cocotb_c2c", payload=payload, sim=sim, build_dir=build_dir / sim,
                     what="C2C link simulation")
    except RuntimeError as e:   # a failed assertion inside: the XML says which
        xml = sorted((build_dir / sim).glob("results-*.xml"))
        if xml:
            return xml[-1]
        raise e
    return run.results_xml
