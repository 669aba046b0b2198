"""scripts/synth.py's report helpers: the per-unit area breakdown (``--units``), an unfinished
nextpnr run's progress, the docs row, and ``--floorplan``."""

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("synth", Path(__file__).resolve().parents[2] / "scripts" / "synth.py")
synth = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(synth)

STAT = """
=== tinylpu ===
       20 wires
        3 cells
        1   SB_GB_IO
=== tinylpu.top.chip ===
      662 cells
      100   SB_LUT4
       59   SB_CARRY
        7   SB_DFFSR
=== tinylpu.top.chip.icu_mem0 ===
     1669 cells
     1217   SB_LUT4
        4   SB_RAM40_4K
        1   SB_MAC16
       30   SB_DFFE
=== tinylpu.top.chip.vxm0 ===
     5182 cells
     5000   SB_LUT4
       12   SB_MAC16
=== tinylpu.top.chip.vxm0.lut_mem0 ===
       10 cells
        2   SB_RAM40_4K
        6   SB_LUT4
=== tinylpu.top.uart_rx ===
       82 cells
       64   SB_LUT4
=== design hierarchy ===
    23601 tinylpu
     5182   tinylpu.top.chip.vxm0
"""


def test_unit_group():
    assert synth.unit_group("tinylpu.top.chip.vxm0") == "vxm0"
    assert synth.unit_group("tinylpu.top.chip.vxm0.lut_mem3") == "vxm0"
    assert synth.unit_group("tinylpu.top.chip.icu_mem0") == "icu_mem0"
    assert synth.unit_group("tinylpu.top.chip") == "chip (run control)"
    assert synth.unit_group("tinylpu.top.uart_rx") == "board top (UART, clocks)"


def test_parse_units_sums_submodules_and_skips_the_hierarchy_listing():
    units = synth.parse_units(STAT, synth.HIER["ice40"][1])
    assert units["vxm0"] == {"luts": 5006, "dsps": 12, "brams": 2}
    assert units["icu_mem0"] == {"luts": 1217, "brams": 4, "dsps": 1, "ffs": 30}
    assert units["chip (run control)"] == {"luts": 100, "ffs": 7}
    assert units["board top (UART, clocks)"] == {"luts": 64}
    ecp5 = synth.parse_units("=== tinylpu.top.chip.mxm0 ===\n  5 LUT4\n  3 CCU2C\n  2 MULT18X18D\n",
                             synth.HIER["ecp5"][1])
    assert ecp5 == {"mxm0": {"luts": 11, "dsps": 2}}


def test_unfinished_route_is_reported_with_its_progress(tmp_path):
    log = tmp_path / "tinylpu.tim"
    log.write_text("Info: Max frequency for clock '$glbnet$clk': 34.88 MHz (FAIL at 100.00 MHz)\n"
                   "Info:     iter=1 wires=600000 overused=30000 overuse=31000 archfail=NA\n"
                   "Info:     iter=19 wires=1037068 overused=5143 overuse=5166 archfail=NA\n")
    p = synth.nextpnr_progress(log)
    assert p == {"placement_estimate_mhz": 34.88, "router2_iterations": 19, "router2_overused_wires": 5143}
    cell = synth.unfinished({"nextpnr_progress": p, "times": {"pnr_s": 2400.0}})
    assert "5,143 overused wires at router2 iteration 19" in cell and "34.88 MHz" in cell
    assert synth.nextpnr_progress(tmp_path / "missing.tim") is None
    assert synth.unfinished({}) == "not measured (did not place)"


def test_docs_row_names_the_constraint_and_the_config_target():
    row = synth.docs_table([{"board": "ulx3s-85f", "device": "LFE5U-85F", "config": "fpga", "stage": "bitstream",
                             "fmax_mhz": 41.84, "clock_mhz": 25.0, "config_clock_mhz": 100.0, "luts": 1000,
                             "ffs": 10, "dsps": 1, "brams": 1, "times": {"yosys_s": 1, "pnr_s": 2},
                             "commit": "abc1234"}])
    assert "**41.84 MHz** (25.0 MHz; the config's target is 100 MHz)" in row
    assert "(RTL abc1234)" in row


def test_floorplan_option_builds_a_smaller_chip_of_the_same_config():
    from tinylpu.config import ConfigError, load_config
    cfg = synth.config_with_floorplan("fpga", "mxm0, mem0,vxm0,mem1")
    full = load_config("fpga")
    assert cfg.name == "fpga-4s"
    assert [s.name for s in cfg.slices] == ["mxm0", "mem0", "vxm0", "mem1"]
    assert (cfg.lanes, cfg.streams, cfg.mem_depth, cfg.latency) == (full.lanes, full.streams, full.mem_depth,
                                                                     full.latency)
    with pytest.raises(ConfigError, match="floorplan"):
        synth.config_with_floorplan("fpga", "mxm0,bogus7")
