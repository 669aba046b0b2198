#!/usr/bin/env python3
"""Pin the chip's hard blocks (MULT18X18D, DP16KD) on the ECP5-85F in the config's floorplan order.

nextpnr's HeAP placer puts the DSP and block-RAM cells wherever its analytic solution lands them;
on the `fpga` chip that mixed the MXM's 64 multipliers over all three DSP rows and every MEM
bank's 16 block RAMs over all four EBR rows, so each unit's logic was pulled in several directions
at once (docs/fpga.md, "What limits Fmax").  This script gives every floorplan slice a band of
columns, west to east in floorplan order and as wide as its share of the logic, and pins the slice's
hard blocks (with its ICU's) to the free sites nearest the band's centre, by setting each cell's
``BEL`` attribute in Yosys' JSON before nextpnr reads it.  Only the hard blocks are pinned: the
placer still places all the logic, but each unit's logic now has one place to gather.

Inside a slice, cells are matched to sites in a fixed order: the sites row by row, serpentine
(west to east, then east to west); the cells by the numbers in their names, last number first, so that the MXM's eight products of
one output lane (``mm_dsp_i<i>_j<j>``, summed over i) sit next to each other in one DSP row.

    python scripts/pin_blocks.py build/synth/ulx3s-85f/tinylpu.json --floorplan mxm0,sxm0,mem0,mem1,vxm0,mem2,mem3
    python scripts/pin_blocks.py build/synth/ulx3s-85f/tinylpu.json --floorplan ... --dry-run

The sites are those of the LFE5U-85F (read from nextpnr's placements, ``NEXTPNR_BEL``): DSP
columns of 4 MULT18X18D (``MULT18_0/1/4/5`` at x, x+1, x+4, x+5) and EBR columns of 4 DP16KD
(``EBR0..3`` at x, x+2, x+4, x+6) at the same 13 column bases, in 3 DSP rows and 4 EBR rows.
"""

import argparse
import collections
import json
import re
import sys
from pathlib import Path

#: LFE5U-85F: the x of each 9-column DSP/EBR group, and the rows (nextpnr's placements)
GROUP_X = (4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114)
ROWS = {"MULT18X18D": (10, 34, 58), "DP16KD": (22, 46, 70, 82)}
OFFSETS = {"MULT18X18D": ((0, "MULT18_0"), (1, "MULT18_1"), (4, "MULT18_4"), (5, "MULT18_5")),
           "DP16KD": ((0, "EBR0"), (2, "EBR1"), (4, "EBR2"), (6, "EBR3"))}
WIDTH = 126
HARD = tuple(ROWS)
LOGIC = ("LUT4", "CCU2C", "TRELLIS_FF", "TRELLIS_DPR16X4", "PFUMX", "L6MUX21")


def sites(kind):
    """Every site of a hard-block kind on the 85F: [(x, y, bel name)]."""
    return [(x + dx, y, f"X{x + dx}/Y{y}/{z}") for y in ROWS[kind] for x in GROUP_X for dx, z in OFFSETS[kind]]


def slice_of(cell_name, floorplan):
    """The floorplan slice a cell belongs to: ``top.chip.mxm0.unit...`` and ``top.chip.icu_mxm0...``
    are mxm0's; anything else (host port, stream fabric, run control, board top) is None."""
    parts = cell_name.split(".")
    if "chip" not in parts[:-1]:
        return None
    unit = parts[parts.index("chip") + 1]
    unit = unit[4:] if unit.startswith("icu_") else unit
    return unit if unit in floorplan else None


def bands(weights, floorplan, width=WIDTH):
    """Each slice's column band [x0, x1), west to east in floorplan order, as wide as its weight's
    share of the total (every slice at least 1 column)."""
    total = sum(max(1, weights.get(s, 0)) for s in floorplan)
    out, x = {}, 0.0
    for s in floorplan:
        w = width * max(1, weights.get(s, 0)) / total
        out[s] = (x, x + w)
        x += w
    return out


def _order(name):
    nums = [int(n) for n in re.findall(r"\d+", name.rsplit(".", 1)[-1] if "." in name else name)]
    return (tuple(reversed(nums)), name)


def plan(cells, floorplan):
    """{cell name: BEL} for the hard blocks of `cells` (Yosys JSON cells: {name: {"type": ...}}),
    and a summary {slice: {kind: count, "band": (x0, x1)}}.  Raises ValueError when a kind has more
    cells than the device has sites."""
    weights = collections.Counter()
    hard = collections.defaultdict(list)           # (slice, kind) -> [cell]
    for name, c in cells.items():
        s = slice_of(name, floorplan)
        if s is None:
            continue
        if c["type"] in LOGIC:
            weights[s] += 1
        elif c["type"] in HARD:
            hard[(s, c["type"])].append(name)
    b = bands(weights, floorplan)
    pins, summary = {}, {s: {"band": tuple(round(v, 1) for v in b[s]), "logic_cells": weights[s]}
                         for s in floorplan}
    for kind in HARD:
        free = sites(kind)
        need = sum(len(v) for (s, k), v in hard.items() if k == kind)
        if need > len(free):
            raise ValueError(f"{need} {kind} cells, the LFE5U-85F has {len(free)} sites")
        # the slices with the most cells per column of band choose first
        order = sorted((s for s in floorplan if hard.get((s, kind))),
                       key=lambda s: -len(hard[(s, kind)]) / max(1e-9, b[s][1] - b[s][0]))
        for s in order:
            centre = (b[s][0] + b[s][1]) / 2
            # the columns nearest the centre, every row (measured against taking the multipliers
            # nearest the centre on the die's middle row: 60.98 MHz routed against 53.95 MHz, seed 1)
            free.sort(key=lambda t: (abs(t[0] - centre), t[1], t[0]))
            take, free = free[:len(hard[(s, kind)])], free[len(hard[(s, kind)]):]
            # row by row, serpentine: a run of cells that wraps into the next row continues at the
            # same end of the band instead of jumping back across it
            rows = sorted({t[1] for t in take})
            take.sort(key=lambda t: (t[1], t[0] if rows.index(t[1]) % 2 == 0 else -t[0]))
            for cell, site in zip(sorted(hard[(s, kind)], key=_order), take):
                pins[cell] = site[2]
            summary[s][kind] = len(take)
            summary[s][f"{kind}_x"] = (min(t[0] for t in take), max(t[0] for t in take))
    return pins, summary


def pin_json(path, floorplan, dry_run=False):
    """Set the ``BEL`` attribute of every hard block of Yosys' JSON netlist at `path` (in place);
    returns the summary of ``plan``."""
    path = Path(path)
    netlist = json.loads(path.read_text())
    tops = [m for m in netlist["modules"].values() if m.get("attributes", {}).get("top")]
    module = tops[0] if tops else max(netlist["modules"].values(), key=lambda m: len(m.get("cells", {})))
    pins, summary = plan(module["cells"], floorplan)
    if not dry_run:
        for cell, bel in pins.items():
            module["cells"][cell].setdefault("attributes", {})["BEL"] = bel
        path.write_text(json.dumps(netlist))
    summary["pinned"] = len(pins)
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("netlist", help="Yosys JSON netlist (edited in place)")
    ap.add_argument("--floorplan", required=True, help="slices west to east, e.g. mxm0,sxm0,mem0,mem1,vxm0")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, do not write")
    args = ap.parse_args(argv)
    summary = pin_json(args.netlist, [s for s in args.floorplan.split(",") if s], args.dry_run)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
