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


# --- the ECP5 seed flow (``--seeds``): place, route alone, next seed ---------------------------------

LINE = ('"$NEXTPNR_ECP5" --quiet --timing-allow-fail --report nextpnr_report.json --router router2 '
        '--log tinylpu.tim --85k --package CABGA381 --speed 6 --json tinylpu.json --lpf tinylpu.lpf '
        '--textcfg tinylpu.config')


def test_seed_commands_place_then_route_the_placement():
    place, route = synth.seed_commands(LINE, "tinylpu", 3, tmdriv=False)
    assert place.startswith('"$NEXTPNR_ECP5" --quiet --timing-allow-fail --report place_s3.json --router router2')
    assert "--log tinylpu_s3_place.tim" in place and "--json tinylpu.json" in place
    assert "--textcfg" not in place and place.endswith("--seed 3 --no-route --write placed_s3.json")
    assert "--json placed_s3.json" in route and "--log tinylpu_s3.tim" in route
    assert "--report route_s3.json" in route and "--textcfg tinylpu.config" in route and "--lpf tinylpu.lpf" in route
    assert route.endswith("--seed 3 --no-pack --no-place --router2-heatmap heat_s3/iter --no-tmdriv")
    assert "--tmg-ripup" not in place + route
    _, timed = synth.seed_commands(LINE + " --seed 9", "tinylpu", 4, tmdriv=True)
    assert "--seed 9" not in timed and "--no-tmdriv" not in timed and "--seed 4" in timed
    assert "--freq" not in place + route + timed
    # the route step skips packing, where the PLL output's constraint is derived: it gets --freq
    place, route = synth.seed_commands(LINE, "tinylpu", 5, freq=100.0)
    assert route.endswith("--freq 100") and "--freq" not in place


def test_router_history_and_stall():
    log = "".join(f"Info:     iter={i} wires=1000 overused={o} overuse={o} archfail=NA\n"
                  for i, o in enumerate([900, 500, 300, 200, 250, 220, 210, 205], 1))
    hist = synth.router_history(log)
    assert hist[0] == (1, 900) and hist[-1] == (8, 205) and len(hist) == 8
    assert not synth.route_stalled(hist, 0)
    assert not synth.route_stalled(hist, 5)          # not yet 2 x 5 iterations
    assert synth.route_stalled(hist, 4)              # 200 at iteration 4, nothing lower in the last 4
    assert not synth.route_stalled(hist + [(9, 199)], 4)
    # a few overused wires left: no stall, the time limit decides
    few = [(i, max(2, 60 - 10 * i)) for i in range(1, 30)]
    assert not synth.route_stalled(few, 8) and synth.route_stalled(few, 8, floor=1)


def test_try_seeds_stops_at_the_first_routed_seed_and_at_the_time_limit():
    now = [0.0]
    tried = []

    def attempt(seed, deadline):
        tried.append(seed)
        now[0] += 1000
        if seed == 3:
            return {"seed": seed, "stage": "routed", "fmax_mhz": 80.0}
        return {"seed": seed, "stage": "route stopped (stalled)", "overused_wires": 100 * seed}

    routed, recs = synth.try_seeds([1, 2, 3, 4], attempt, deadline=5000, clock=lambda: now[0])
    assert routed == 3 and tried == [1, 2, 3] and [r["seed"] for r in recs] == [1, 2, 3]
    now[0], tried[:] = 0.0, []
    routed, recs = synth.try_seeds([1, 2, 4, 5], attempt, deadline=2500, clock=lambda: now[0])
    assert routed is None and tried == [1, 2, 4]
    assert recs[-1] == {"seed": 5, "stage": "not tried (time limit)"}


PIN_SPEC = importlib.util.spec_from_file_location("pin_blocks", Path(__file__).resolve().parents[2] / "scripts" /
                                                  "pin_blocks.py")
pin_blocks = importlib.util.module_from_spec(PIN_SPEC)
PIN_SPEC.loader.exec_module(pin_blocks)
FLOORPLAN = ["mxm0", "sxm0", "mem0", "mem1", "vxm0", "mem2", "mem3"]


def _fpga_like_cells():
    """Yosys-JSON-shaped cells of the fpga chip's hard blocks, with logic cells as weights."""
    cells = {}
    for i in range(8):
        for j in range(8):
            cells[f"top.chip.mxm0.unit.mm_dsp_i{i}_j{j}"] = {"type": "MULT18X18D"}
    for k in range(16):
        cells[f"top.chip.mxm0.unit.acc.0.{k}"] = {"type": "DP16KD"}
    for s, n_logic in zip(FLOORPLAN, (10781, 5185, 4191, 3903, 17841, 4180, 4214)):
        for k in range(n_logic // 100):
            cells[f"top.chip.{s}.unit.l{k}"] = {"type": "LUT4"}
        for k in range(3):
            cells[f"top.chip.icu_{s}.queue.0.{k}"] = {"type": "DP16KD"}
        if s.startswith("mem"):
            cells.update({f"top.chip.{s}.unit.bank.0.{k}": {"type": "DP16KD"} for k in range(16)})
            cells[f"top.chip.icu_{s}.head_step_MULT18X18D_P9"] = {"type": "MULT18X18D"}
    cells.update({f"top.chip.vxm0.unit.mul_dsp{j}": {"type": "MULT18X18D"} for j in range(24)})
    cells["top.chip.streams.e0_p0"] = {"type": "TRELLIS_FF"}
    cells["top.host.x"] = {"type": "DP16KD"}          # outside the floorplan: not pinned
    return cells


def test_pin_blocks_follow_the_floorplan():
    cells = _fpga_like_cells()
    pins, summary = pin_blocks.plan(cells, FLOORPLAN)
    hard = [n for n, c in cells.items() if c["type"] in pin_blocks.HARD and pin_blocks.slice_of(n, FLOORPLAN)]
    assert set(pins) == set(hard) and "top.host.x" not in pins
    assert len(set(pins.values())) == len(pins)                       # one cell per site
    valid = {b for kind in pin_blocks.HARD for _, _, b in pin_blocks.sites(kind)}
    assert set(pins.values()) <= valid
    x = {n: int(b.split("/")[0][1:]) for n, b in pins.items()}
    # west to east: each MEM bank's block RAMs lie east of the previous slice's
    mean = {s: sum(v for n, v in x.items() if f".{s}." in n) / sum(1 for n in x if f".{s}." in n)
            for s in ("mxm0", "mem0", "mem1", "mem2", "mem3")}
    assert mean["mxm0"] < mean["mem0"] < mean["mem1"] < mean["mem2"] < mean["mem3"]
    # one output lane's eight products share a DSP row, next to each other
    for j in range(8):
        rows = {pins[f"top.chip.mxm0.unit.mm_dsp_i{i}_j{j}"].split("/")[1] for i in range(8)}
        xs = [x[f"top.chip.mxm0.unit.mm_dsp_i{i}_j{j}"] for i in range(8)]
        assert len(rows) <= 2 and max(xs) - min(xs) <= 18      # 8 sites: at most 3 groups of 4
    assert summary["mxm0"]["MULT18X18D"] == 64 and summary["vxm0"]["MULT18X18D"] == 24


def test_pin_blocks_refuses_more_cells_than_sites():
    cells = {f"top.chip.mxm0.unit.mm_dsp_{k}": {"type": "MULT18X18D"} for k in range(157)}
    with pytest.raises(ValueError, match="157 MULT18X18D cells, the LFE5U-85F has 156 sites"):
        pin_blocks.plan(cells, FLOORPLAN)


def test_route_settings_override_the_placements(tmp_path):
    """nextpnr loads a placement's saved settings over the command line: the route step rewrites them."""
    import json
    placed = tmp_path / "placed_s1.json"
    placed.write_text(json.dumps({"modules": {"tinylpu": {"settings": {
        "router": "router2", "timing_driven": "00000000000000000000000000000001", "seed": "1"}, "cells": {}}}}))
    changed = synth.set_route_settings(placed, "router1", tmdriv=False)
    assert changed == {"router": ("router2", "router1"),
                       "timing_driven": ("00000000000000000000000000000001", "00000000000000000000000000000000")}
    s = json.loads(placed.read_text())["modules"]["tinylpu"]["settings"]
    assert s == {"router": "router1", "timing_driven": "00000000000000000000000000000000", "seed": "1"}
    assert synth.set_route_settings(placed, "router1", tmdriv=False) == {}
    assert synth.set_route_settings(placed, "router1", tmdriv=False, freq=100) == {
        "target_freq": (None, "100000000.000000")}
