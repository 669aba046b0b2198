"""Golden model vs FastGolden: simulated chip cycles per wall-clock second, in one run.

    .venv/bin/python -m tinylpu.sim.perf.golden_speed [config] [repeat]

Workloads: the steady-state program of ``sim/perf/bench.py`` (MXM, VXM and five MEM ports busy
every cycle) and the random valid programs of ``firmware/randprog.py``.  Two figures per engine:
``run()`` alone (the model), and the whole job as ``bench golden`` times it (construct the model,
``load_program`` with its static check, ``write_mem``, ``run()``); each the median over `repeat`
runs.  Both engines' results are compared (cycles, MEM).
"""

import statistics
import sys
import time

import numpy as np

from tinylpu.config import load_config
from tinylpu.firmware.randprog import random_program
from tinylpu.sim.golden.chip import Golden
from tinylpu.sim.golden.fast import FastGolden
from tinylpu.sim.perf.bench import _steady_program

__all__ = ["bench_fast_golden"]


def _workloads(cfg, n_random):
    prog = _steady_program(cfg)
    rng = np.random.default_rng(0)
    image = {f"mem{b}": rng.integers(-128, 128, (4, cfg.lanes), dtype=np.int8) for b in range(4)}
    steady = [(prog, {b: (0, v) for b, v in image.items()})]
    cases = [random_program(cfg, s) for s in range(n_random)]
    return [("steady state", steady), (f"{n_random} random programs", [(c.program, c.mem) for c in cases])]


def _run_all(cls, cfg, jobs):
    """Run every job on a fresh engine; returns (cycles, seconds in run(), seconds in all, MEM images)."""
    total, t_run, mems = 0, 0.0, []
    t0 = time.perf_counter()
    for prog, image in jobs:
        g = cls(cfg)
        g.load_program(prog)
        for bank, (addr, img) in image.items():
            g.write_mem(bank, addr, img)
        t = time.perf_counter()
        total += g.run().cycles
        t_run += time.perf_counter() - t
        mems.append(g.mem)
    return total, t_run, time.perf_counter() - t0, mems


def bench_fast_golden(cfg="tiny", repeat=5, n_random=30):
    """Rows {workload, cycles, golden_run, fast_run, golden_all, fast_all, speedup_run, speedup_all}:
    median chip cycles/s of `repeat` runs, timing ``run()`` alone and the whole job (construct, load
    program, write MEM, run); prints a table."""
    cfg = load_config(cfg)
    rows = []
    for name, jobs in _workloads(cfg, n_random):
        row = {"workload": name}
        ref = None
        for cls, tag in ((Golden, "golden"), (FastGolden, "fast")):
            r_run, r_all = [], []
            for _ in range(repeat):
                cycles, t_run, t_all, mems = _run_all(cls, cfg, jobs)
                r_run.append(cycles / t_run)
                r_all.append(cycles / t_all)
            if ref is None:
                ref = (cycles, mems)
            elif cycles != ref[0] or any(not np.array_equal(a[b], m[b]) for a, m in zip(ref[1], mems) for b in a):
                raise AssertionError(f"{name}: FastGolden differs from Golden")
            row.update({"cycles": cycles, f"{tag}_run": statistics.median(r_run),
                        f"{tag}_all": statistics.median(r_all)})
        row["speedup_run"] = row["fast_run"] / row["golden_run"]
        row["speedup_all"] = row["fast_all"] / row["golden_all"]
        rows.append(row)
    print(f"Golden vs FastGolden, config {cfg.name}: chip cycles/s, median of {repeat} runs")
    print("  run = run() only; all = construct + load_program + write_mem + run()")
    print(f"{'workload':<20} {'cycles':>7} {'Golden run':>11} {'Fast run':>11} {'x run':>7} "
          f"{'Golden all':>11} {'Fast all':>11} {'x all':>7}")
    for r in rows:
        print(f"{r['workload']:<20} {r['cycles']:>7} {r['golden_run']:>11,.0f} {r['fast_run']:>11,.0f} "
              f"{r['speedup_run']:>6.1f}x {r['golden_all']:>11,.0f} {r['fast_all']:>11,.0f} {r['speedup_all']:>6.1f}x")
    return rows


if __name__ == "__main__":
    bench_fast_golden(sys.argv[1] if len(sys.argv) > 1 else "tiny", int(sys.argv[2]) if len(sys.argv) > 2 else 5)
