"""Rank the register-to-register paths of a Yosys ECP5 netlist by estimated delay, in seconds.

    python scripts/logic_depth.py build/synth/ulx3s-85f/tinylpu.json [--top 30] [-o depth.txt]

nextpnr needs 20-40 minutes to place and route the full `fpga` chip on 2 cores; this reads the
netlist that Yosys wrote (`synth_ecp5`, about 2 minutes) and gives a first ranking of where the
long paths are.  It is an *estimate*, not a timing report:

* every cell has a fixed delay (LUT4 1.2 ns, PFUMX/L6MUX21 0.4 ns, a CCU2C carry step 0.25 ns
  or 1.0 ns into its data inputs, MULT18X18D 5 ns, LUT RAM read address to data 1.5 ns; a
  flip-flop starts a path at 0.6 ns, a DP16KD output at 4.5 ns), with local routing folded in;
* a MULT18X18D's registers are read from its parameters (an unregistered input adds the
  multiplier's 5 ns in front of the output register);
* fan-out, placement and long routes are not modelled.  On the `fpga` chip nextpnr's
  post-placement estimates were 1.6-2.8 times the worst number here, and the routed critical
  path (32.6 ns) was a 3 ns-logic path with one 20.8 ns route, which this cannot see
  (docs/fpga.md, "Finding the long paths").

Endpoints are flip-flop, block RAM, LUT RAM write and multiplier inputs.  They are grouped by the name of the
register or memory they feed, and each group's worst path is printed with the nets it runs
through (Yosys' names, shortened).
"""

import argparse
import collections
import json
import re
import sys

DELAY = {"LUT4": 1.2, "PFUMX": 0.4, "L6MUX21": 0.4, "CCU2C": 0.25, "MULT18X18D": 5.0, "TRELLIS_DPR16X4": 1.5}
START = {"TRELLIS_FF": 0.6, "DP16KD": 4.5}
CARRY_DATA = 1.0                # a CCU2C's A/B/C/D inputs to its outputs (a LUT), vs 0.25 along the chain
ENDPOINTS = ("TRELLIS_FF", "DP16KD", "MULT18X18D", "TRELLIS_DPR16X4")
CLOCKS = ("CLK", "CLKA", "CLKB", "WCK")
COMB_INPUTS = {"TRELLIS_DPR16X4": "RAD"}    # LUT RAM: only the read address reaches DO
DSP_CLK_TO_OUT = 1.0             # a MULT18X18D with its output register starts a path here


def _dsp_reg(cell, which):
    """MULT18X18D register parameters: which in "A", "B", "OUTPUT"."""
    key = f"REG_INPUT{which}_CLK" if which in "AB" else "REG_OUTPUT_CLK"
    return str(cell.get("parameters", {}).get(key, "NONE")).strip() not in ("NONE", "")


def _short(name):
    return re.sub(r"_(LUT4|PFUMX|L6MUX21|CCU2C|TRELLIS_FF)_[A-Z0-9_]*", "", name)


def analyse(netlist, top=None):
    """[(estimated ns, endpoint group, [net names along the worst path])], worst first."""
    mods = netlist["modules"]
    if top is None:
        top = next(n for n, mod in mods.items() if mod.get("attributes", {}).get("top"))
    mod = mods[top]
    names = {}
    for n, v in mod["netnames"].items():
        for i, b in enumerate(v["bits"]):
            if isinstance(b, int) and (b not in names or not v.get("hide_name")):
                names[b] = f"{n}[{i}]"
    cells = mod["cells"]
    driver = {}
    for cn, c in cells.items():
        for p, d in c.get("port_directions", {}).items():
            if d == "output":
                for b in c["connections"][p]:
                    if isinstance(b, int):
                        driver[b] = cn

    arrival = {}                 # bit -> (ns, predecessor bit)

    def arr(bit):
        # iterative depth-first evaluation (netlists are too deep for recursion)
        stack = [bit]
        while stack:
            b = stack[-1]
            if not isinstance(b, int) or b in arrival:
                stack.pop()
                continue
            cn = driver.get(b)
            if cn is None:
                arrival[b] = (0.0, None)
                stack.pop()
                continue
            c = cells[cn]
            t = c["type"]
            if t in START or (t == "MULT18X18D" and _dsp_reg(c, "OUTPUT")):
                arrival[b] = (START.get(t, DSP_CLK_TO_OUT), None)
                stack.pop()
                continue
            ins = [(p, x) for p, d in c["port_directions"].items()
                   if d == "input" and p.startswith(COMB_INPUTS.get(t, ""))
                   for x in c["connections"][p] if isinstance(x, int)]
            todo = [x for _, x in ins if x not in arrival]
            if todo:
                arrival.setdefault("_visiting", set())
                if b in arrival["_visiting"]:           # a combinational loop: cut it here
                    arrival[b] = (0.0, None)
                    stack.pop()
                    continue
                arrival["_visiting"].add(b)
                stack.extend(todo)
                continue
            w = DELAY.get(t, 0.5)
            best = (0.0, None)
            for p, x in ins:
                a = arrival[x][0] + w
                if t == "CCU2C" and p != "CIN":
                    a = arrival[x][0] + CARRY_DATA
                if a > best[0]:
                    best = (a, x)
            arrival[b] = best
            stack.pop()
        return arrival[bit] if isinstance(bit, int) else (0.0, None)

    groups = collections.OrderedDict()
    ends = []
    for cn, c in cells.items():
        if c["type"] in ENDPOINTS:
            for p, d in c["port_directions"].items():
                if d == "input" and p not in CLOCKS and not (c["type"] in COMB_INPUTS
                                                             and p.startswith(COMB_INPUTS[c["type"]])):
                    extra = 0.0
                    if c["type"] == "MULT18X18D":       # a registered output: input -> multiplier -> reg
                        if not _dsp_reg(c, "OUTPUT"):
                            continue                    # (a combinational DSP is not an endpoint)
                        if p[:1] in "AB" and p[1:].isdigit() and not _dsp_reg(c, p[0]):
                            extra = DELAY["MULT18X18D"]
                    for b in c["connections"][p]:
                        if isinstance(b, int):
                            ends.append((arr(b)[0] + extra, b))
    ends.sort(key=lambda e: -e[0])
    for ns, b in ends:
        key = re.sub(r"\d+$", "#", re.sub(r"\[\d+\]", "", _short(names.get(b, str(b)))))
        if key in groups:
            continue
        chain, x = [], b
        while isinstance(x, int):
            n = re.sub(r"\[\d+\]", "", _short(names.get(x, str(x))))
            if not chain or chain[-1] != n:
                chain.append(n)
            x = arrival.get(x, (0, None))[1]
        groups[key] = (ns, list(reversed(chain)))
    return [(ns, key, chain) for key, (ns, chain) in groups.items()]


def report(rows, top=30):
    out = []
    for ns, key, chain in rows[:top]:
        out.append(f"{ns:6.1f} ns  {key}")
        out.append("           " + " > ".join(chain[:16]))
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("netlist", help="Yosys JSON netlist (synth_ecp5 output)")
    ap.add_argument("--top", type=int, default=30, help="how many endpoint groups to print")
    ap.add_argument("--module", help="top module (default: the one marked top)")
    ap.add_argument("-o", "--output", help="also write the report here")
    args = ap.parse_args(argv)
    with open(args.netlist) as f:
        rows = analyse(json.load(f), args.module)
    text = report(rows, args.top)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
