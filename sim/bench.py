"""Benchmarks that print numbers and write them under docs/ (`make bench`, `tinylpu bench ...`).

Golden model speed: simulated chip cycles per wall-clock second, median of N runs, on
  * a steady-state program that keeps the MXM, the VXM and five MEM ports busy every cycle, and
  * the random valid programs of firmware/randprog.py (short, mixed, mostly idle slices).
"""

import platform
import statistics
import time
from pathlib import Path

import numpy as np

from ..config import load_config
from ..firmware.asm import assemble
from ..firmware.randprog import random_program
from .golden import Golden


def steady_state_source(cfg, cycles=4000):
    """Assembly for a program where every cycle the MXM multiplies, installs weights and the VXM adds."""
    if cfg.lanes != 16 or cfg.banks < 5:
        raise ValueError("the steady-state benchmark program is written for 16-lane configs with >= 5 banks")
    pos = {s.name: s.position for s in cfg.slices}
    Lr, Lv = cfg.latency["mem_read"], cfg.latency["vxm_alu"]
    dv0 = pos["vxm0"] - pos["mem0"]
    dv1 = pos["vxm0"] - pos["mem1"]
    t_v = max(Lr + dv0, Lr + dv1)
    d4 = pos["mem4"] - pos["vxm0"]
    t_w = t_v + Lv + d4
    d2 = pos["mem2"] - pos["mxm0"]
    d3 = pos["mem3"] - pos["mxm0"]
    t_m = Lr + d2
    def nop(k):
        return f"        NOP {k}\n" if k > 0 else ""
    tiles = (cycles - 64) // 64
    n = tiles * 64
    # one MM of 64 vectors every 64 cycles, with a 16-row weight install into the other buffer beside it
    mxm = "\n".join("        MM w0, 0, 0, n=64\n        LW w1, 1, 0, n=16\n        NOP 62" for _ in range(tiles))
    return f"""
.queue mem0
{nop(t_v - Lr - dv0)}        READ e0, 0, n={n}, stride=0
{nop(n)}        HALT
.queue mem1
{nop(t_v - Lr - dv1)}        READ e1, 1, n={n}, stride=0
{nop(n)}        HALT
.queue vxm0
{nop(t_v)}        ADD e2, e0, e1, n={n}
{nop(n)}        HALT
.queue mem4
{nop(t_w)}        WRITE e2, 0, n={n}, stride=0
{nop(n)}        HALT
.queue mem2
        READ w0, 2, n={n + 16}, stride=0
{nop(n + 24)}        HALT
.queue mem3
        READ w1, 3, n={n + 16}, stride=0
{nop(n + 24)}        HALT
.queue mxm0
{nop(max(t_m, Lr + d3))}{mxm}
        NOP 8
        HALT
"""


def _steady_program(cfg):
    return assemble(steady_state_source(cfg), cfg, "<steady-state>")


def _time(fn, repeat):
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        cycles = fn()
        out.append((cycles, time.perf_counter() - t))
    return out


def bench_golden(cfg, repeat=5):
    cfg = load_config(cfg)
    prog = _steady_program(cfg)
    rng = np.random.default_rng(0)

    def steady():
        g = Golden(cfg)
        g.load_program(prog)
        for b in range(4):
            g.write_mem(f"mem{b}", 0, rng.integers(-128, 128, (4, cfg.lanes), dtype=np.int8))
        return g.run().cycles

    cases = [random_program(cfg, s) for s in range(30)]

    def randoms():
        total = 0
        for c in cases:
            g = Golden(cfg)
            g.load_program(c.program)
            for bank, (addr, img) in c.mem.items():
                g.write_mem(bank, addr, img)
            total += g.run().cycles
        return total

    rows = []
    for name, fn in (("steady state (MXM multiply + install, VXM, 5 MEM ports busy)", steady), ("30 random programs", randoms)):
        runs = _time(fn, repeat)
        rates = [c / t for c, t in runs]
        rows.append({"workload": name, "cycles": runs[0][0], "median_s": statistics.median(t for _, t in runs),
                     "median_cycles_per_s": statistics.median(rates)})
    return rows


def main(args):
    cfg = load_config(args.config)
    rows = bench_golden(cfg, args.repeat)
    cmd = f"tinylpu bench golden --config {cfg.name} --repeat {args.repeat}"
    lines = [f"### Golden model speed (config `{cfg.name}`)", "",
             f"Measured with `{cmd}` (median of {args.repeat} runs) on {platform.processor() or platform.machine()}, "
             f"Python {platform.python_version()}, numpy {np.__version__}.", "",
             "| workload | simulated cycles | median wall time (s) | median cycles/s |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['cycles']} | {r['median_s']:.3f} | {r['median_cycles_per_s']:,.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        p = Path(args.output)
        p.parent.mkdir(parents=True, exist_ok=True)
        old = p.read_text() if p.exists() else "# Benchmarks\n\nEvery figure here is written by the command quoted with it.\n\n"
        marker = f"### Golden model speed (config `{cfg.name}`)"
        if marker in old:
            head, _, rest = old.partition(marker)
            nxt = rest.find("\n### ")
            old = head + (rest[nxt + 1:] if nxt >= 0 else "")
        p.write_text(old.rstrip() + "\n\n" + text)
        print(f"wrote {p}")
    return 0
