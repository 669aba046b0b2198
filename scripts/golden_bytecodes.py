#!/usr/bin/env python3
"""Where a golden-model job spends its Python: the bytecodes each function executes (a
``sys.settrace`` opcode count, deterministic, unlike a timing) for the first run of each of the
random ``tiny`` programs that ``tinylpu bench golden`` times, per program.

    .venv/bin/python scripts/golden_bytecodes.py [--programs 30] [--engine fast|reference] [--top 25] [--lines]

A first run of a program is its job on a new model: construct, ``load_program`` (its static check),
``write_image``, ``run``.  ``--lines`` adds the busiest source lines.  docs/architecture.md quotes
the totals ("Golden model speed").
"""

import argparse
import collections
import sys
from pathlib import Path


def count(engine="fast", programs=30):
    """({(file, function, line): bytecodes}, programs) over one first run of each program."""
    from tinylpu.config import load_config
    from tinylpu.firmware.program import Program
    from tinylpu.sim.golden.chip import Golden
    from tinylpu.sim.golden.fast import FastGolden
    from tinylpu.sim.perf.bench import _random_jobs
    cfg = load_config("tiny")
    jobs = _random_jobs(cfg, programs)
    cls = FastGolden if engine == "fast" else Golden

    def job(p, image):
        g = cls(cfg)
        g.load_program(Program(p.queues))
        g.write_image(image)
        g.run()

    for p, image in jobs:                 # (warm: the per-word memos a first run may reuse, as in the bench)
        job(p, image)
    got = collections.Counter()

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        if event == "opcode":
            co = frame.f_code
            got[(Path(co.co_filename).name, co.co_name, frame.f_lineno)] += 1
        return tracer

    sys.settrace(tracer)
    try:
        for p, image in jobs:
            job(p, image)
    finally:
        sys.settrace(None)
    return got, len(jobs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--programs", type=int, default=30)
    ap.add_argument("--engine", choices=("fast", "reference"), default="fast")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--lines", action="store_true")
    a = ap.parse_args(argv)
    got, n = count(a.engine, a.programs)
    total = sum(got.values()) / n
    by_fn = collections.Counter()
    for (f, fn, _), v in got.items():
        by_fn[(f, fn)] += v
    print(f"{a.engine} engine, first run of {n} random tiny programs: {total:,.0f} bytecodes per program")
    for (f, fn), v in by_fn.most_common(a.top):
        print(f"  {v / n:9,.0f}  {v / n / total:6.1%}  {f}:{fn}")
    if a.lines:
        print("busiest lines:")
        for (f, fn, line), v in got.most_common(a.top):
            print(f"  {v / n:9,.0f}  {v / n / total:6.1%}  {f}:{line} ({fn})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
