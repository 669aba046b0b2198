"""Golden model vs FastGolden, and the golden tray fast vs lockstep: simulated cycles per wall-clock
second, in one run.

    .venv/bin/python -m tinylpu.sim.perf.golden_speed [tiny|lpu|tray|all] [repeat] [--output docs/benchmarks.md]

* ``tiny``: the steady-state program of ``sim/perf/bench.py`` (MXM, VXM and five MEM ports busy every
  cycle) and the random valid programs of ``firmware/randprog.py``, Golden against FastGolden on a
  first run (a program object new to the model: static check and walk or plan timed) and with the
  program's plan cached; ``run()`` alone and the whole job (construct the model, ``load_program``
  with its static check, ``write_mem``, ``run()``).  The engines' results are compared (cycles, MEM).
* ``lpu``: compiled 384 x 1536 GELU layers with biases on the LPU-class ``lpu`` chip (1, 17 and 256
  tokens), FastGolden, the whole job with the image written by ``write_image``: on a first run
  (a program object new to the model: static check, schedule and dataflow built) and on a program
  run before (its plan cached, as for the next token of a decode layer); the 1-token job also by
  part (construct, write the image, run).
* ``tray``: the same layer with 17 tokens tensor-parallel on the 8-chip ``lpu-tray``
  (``firmware/tray.py`` ``compile_tp``), the whole tray job (construct, load the programs, write the
  images, run): the lockstep reference tray (every chip's per-cycle model stepped together), the
  fast tray on a first run and with the programs' plans cached.  Tray cycles/s counts the tray's
  cycles (its slowest chip); chip cycles/s the cycles of all chips.  The fast tray's results are
  compared with the lockstep tray's (cycles, link counts, every chip's MEM).

Each figure is the median over `repeat` runs; ``--output`` writes each table as a section of that
markdown file (replacing the section of the same title).
"""

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from tinylpu.config import load_config
from tinylpu.firmware.asm import assemble
from tinylpu.firmware.program import Program
from tinylpu.firmware.randprog import random_program
from tinylpu.sim.golden.chip import Golden
from tinylpu.sim.golden.fast import FastGolden
from tinylpu.sim.perf.bench import _steady_program

__all__ = ["LPU_SHAPES", "TRAY_SHAPE", "bench_fast_golden", "bench_lpu_jobs", "bench_tray"]

#: the ``lpu`` workloads (d_model, d_ff, tokens): GELU with biases
LPU_SHAPES = [(384, 1536, 1), (384, 1536, 17), (384, 1536, 256)]
#: the ``lpu-tray`` workload
TRAY_SHAPE = (384, 1536, 17)


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
    """Rows {workload, engine, cycles, run, all, speedup_run, speedup_all}: median chip cycles/s of
    `repeat` runs of every job, timing ``run()`` alone and the whole job (construct, load program,
    write MEM, run), for the reference (``Golden``) and FastGolden twice: on a first run (each
    program a new object, copied before the clock starts: its static check, walk or plan are all
    timed) and with the program's plan cached (two untimed runs first: walked, then planned).  The
    engines take turns repeat by repeat (a burst of load on a shared machine hits them alike), and
    their results are compared (cycles, MEM).  Prints a table."""
    cfg = load_config(cfg)
    engines = (("reference (Golden)", Golden, False), ("fast, first run", FastGolden, True),
               ("fast, program cached", FastGolden, False))
    rows = []
    for name, jobs in _workloads(cfg, n_random):
        for _ in range(2):
            _run_all(FastGolden, cfg, jobs)          # (the plans of the cached engine: walked, then built)
        timed = {label: [] for label, _, _ in engines}
        ref = None
        for _ in range(repeat):
            for label, cls, fresh in engines:
                run = [(Program(p.queues), image) for p, image in jobs] if fresh else jobs
                cycles, t_run, t_all, mems = _run_all(cls, cfg, run)
                timed[label].append((cycles / t_run, cycles / t_all))
                if ref is None:
                    ref = (cycles, mems)
                elif cycles != ref[0] or any(not np.array_equal(a[b], m[b]) for a, m in zip(ref[1], mems) for b in a):
                    raise AssertionError(f"{name}: FastGolden ({label}) differs from Golden")
        for label, _, _ in engines:
            row = {"workload": name, "engine": label, "cycles": ref[0],
                   "run": statistics.median(r for r, _ in timed[label]),
                   "all": statistics.median(a for _, a in timed[label])}
            rows.append(row)
        base = rows[-3]
        for row in rows[-3:]:
            row["speedup_run"], row["speedup_all"] = row["run"] / base["run"], row["all"] / base["all"]
    lines = [f"Golden vs FastGolden, config {cfg.name}: chip cycles/s, median of {repeat} runs",
             "  run = run() only; all = construct + load_program + write_mem + run()",
             (f"{'workload':<20} {'engine':<22} {'cycles':>7} {'run':>11} {'x run':>7} {'all':>11} {'x all':>7}")]
    for r in rows:
        lines.append(f"{r['workload']:<20} {r['engine']:<22} {r['cycles']:>7} {r['run']:>11,.0f} "
                     f"{r['speedup_run']:>6.1f}x {r['all']:>11,.0f} {r['speedup_all']:>6.1f}x")
    print("\n".join(lines))
    return rows


# --- the LPU-class chip: compiled layers, whole jobs with bulk image writes -----------------------

def _layer(dm, dff, tokens):
    from tinylpu.firmware.quant import FFNWeights, quantize_ffn
    rng = np.random.default_rng(dm + dff + tokens)
    w = FFNWeights(rng.normal(size=(dm, dff)) / 20, rng.normal(size=(dff, dm)) / 40, None,
                   rng.normal(size=dff) * 0.1, rng.normal(size=dm) * 0.1, None, "gelu")
    x = rng.normal(size=(tokens, dm))
    q = quantize_ffn(w, x)
    return q, q.quantize_input(x)


def _image(c, xq, run=0):
    image = {b: list(v) for b, v in c.mem_image.items()}
    for b, v in c.pack_input(xq, run=run).items():
        image.setdefault(b, []).extend(v)
    return image


def _median_time(fn, repeat):
    """(median, fastest) seconds of `repeat` calls (the fastest: what a job costs when no other
    process takes the core from it in between, on a shared machine)."""
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out), min(out)


def bench_lpu_jobs(repeat=5, shapes=LPU_SHAPES):
    """Rows {workload, engine, cycles, seconds, cycles_per_s} for compiled layers on ``lpu``; the whole
    job (construct FastGolden, load_program, write_image, run), first run and program cached; and
    the 1-token job by part."""
    from tinylpu.firmware.compiler import compile_ffn
    cfg = load_config("lpu")
    rows = []
    for dm, dff, tokens in shapes:
        q, xq = _layer(dm, dff, tokens)
        c = compile_ffn(q, cfg, tokens)
        jobs = [(r.program, _image(c, xq, i)) for i, r in enumerate(c.runs)]
        name = f"compiled {dm} x {dff} GELU, {tokens} token{'s' if tokens > 1 else ''}"

        def job(fresh, jobs=jobs):
            return run_jobs(FastGolden, cfg, jobs, fresh)

        cycles = job(False)                      # (plans cached from here on)
        timed = []
        # (the cached runs first: as in a process serving one layer; first runs build large plans)
        for label, fresh in (("fast, program cached", False), ("fast, first run", True)):
            s, best = _median_time(lambda fresh=fresh: job(fresh), repeat)
            timed.insert(0, {"workload": name, "engine": label, "cycles": cycles, "seconds": s,
                             "cycles_per_s": cycles / s, "best_cycles_per_s": cycles / best})
        rows += timed
        if tokens == 1:
            program, image = jobs[0]
            g = FastGolden(cfg)
            g.load_program(program)
            g.write_image(image)
            parts = {"construct FastGolden": lambda: FastGolden(cfg),
                     "load_program (cached)": lambda g=g, program=program: g.load_program(program),
                     "write_image": lambda g=g, image=image: g.write_image(image), "run": g.run}
            for part, fn in parts.items():
                s = _median_time(fn, max(repeat, 20))[0]
                rows.append({"workload": name, "engine": f"  part: {part}", "cycles": None, "seconds": s,
                             "cycles_per_s": None})
    _print_rows(f"FastGolden on config lpu: whole jobs (construct, load_program, write_image, run), median of {repeat}",
                rows)
    return rows


# --- the tray ----------------------------------------------------------------------------------------

def bench_tray(repeat=3, config="lpu-tray", shape=TRAY_SHAPE):
    """Rows {workload, engine, cycles (tray), chip_cycles, seconds, cycles_per_s, chip_cycles_per_s}:
    the whole tray job (construct GoldenTray, load_programs, write_image per chip, run) on the
    lockstep reference tray (timed once), the fast tray on a first run and with plans cached."""
    from tinylpu.firmware.tray import compile_tp
    from tinylpu.sim.golden.tray import GoldenTray
    cfg = load_config(config)
    dm, dff, tokens = shape
    q, xq = _layer(dm, dff, tokens)
    t0 = time.perf_counter()
    tc = compile_tp(q, cfg, tokens)
    compile_s = time.perf_counter() - t0
    if len(tc.runs) > 1:
        raise ValueError(f"{dm} x {dff}, {tokens} tokens: the tray program runs in {len(tc.runs)} chunks; this "
                         f"benchmark times one run")
    empty = assemble(".queue mem0\n HALT\n", cfg)
    programs = [c.program if c is not None else empty for c in tc.chips]
    images = [_image(c, xq) if c is not None else {} for c in tc.chips]
    want = q.run_int(xq)

    def job(lockstep=False, fresh=False):
        t = GoldenTray(cfg)
        t.load_programs([Program(p.queues) if fresh else p for p in programs])
        for g, image in zip(t.chips, images):
            g.write_image(image)
        r = t.run(lockstep=lockstep)
        if not lockstep and t.fallbacks:
            raise AssertionError("the fast tray fell back to lockstep")
        return t, r

    ref_t, ref = job(lockstep=True)
    fast_t, fast = job()
    if (fast.cycles != ref.cycles or fast.link_vectors != ref.link_vectors
            or any(not np.array_equal(a.mem[b], r.mem[b]) for a, r in zip(fast_t.chips, ref_t.chips) for b in a.mem)):
        raise AssertionError("the fast tray differs from the lockstep tray")
    if not np.array_equal(tc.chips[0].unpack_output(fast_t.chips[0].read_mem), want):
        raise AssertionError("the tray's output differs from the integer reference")
    cycles, chip_cycles = max(fast.cycles), sum(fast.cycles)
    name = f"compiled {dm} x {dff} GELU, {tokens} tokens, tensor parallel on {cfg.chips} chips"
    rows = []
    for label, kw, n in (("lockstep (per-cycle reference)", {"lockstep": True}, 1),
                         ("fast, first run", {"fresh": True}, repeat), ("fast, programs cached", {}, repeat)):
        s, best = _median_time(lambda kw=kw: job(**kw), n)
        rows.append({"workload": name, "engine": label, "cycles": cycles, "chip_cycles": chip_cycles, "seconds": s,
                     "best_cycles_per_s": cycles / best,
                     "cycles_per_s": cycles / s, "chip_cycles_per_s": chip_cycles / s})
    rows[-1].update(fast_t.stats)
    print(f"compile_tp: {compile_s:.2f} s; fast tray: one flow over {fast_t.stats['linked_chips']} chips, "
          f"{fast_t.stats['flow_steps']} steps")
    _print_rows(f"Golden tray on config {cfg.name}: whole tray jobs (construct, load, write images, run)", rows)
    return rows, compile_s


def _print_rows(title, rows):
    print(title)
    for r in rows:
        extra = f"  ({r['chip_cycles_per_s']:,.0f} chip cycles/s)" if "chip_cycles_per_s" in r else ""
        cps = f"{r['cycles_per_s']:>12,.0f} cycles/s" if r["cycles_per_s"] else ""
        if r.get("best_cycles_per_s"):
            cps += f" (fastest run {r['best_cycles_per_s']:,.0f})"
        print(f"  {r['workload']:<48} {r['engine']:<34} {r['seconds'] * 1e3:>9.2f} ms {cps}{extra}")


# --- docs ---------------------------------------------------------------------------------------------

def _platform():
    """The machine, and how busy it was: on a shared machine the median carries other processes'
    time slices, the fastest run (also given) does not."""
    return (f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
            f"numpy {np.__version__}, {os.cpu_count()} cores at load average {os.getloadavg()[0]:.1f}")


def run_jobs(cls, cfg, jobs, fresh=False):
    """Each (program, image) on a new ``cls(cfg)`` model (``fresh``: a copy of the program, so the
    fast path plans it anew); the simulated cycles summed."""
    total = 0
    for program, image in jobs:
        g = cls(cfg)
        g.load_program(Program(program.queues) if fresh else program)
        g.write_image(image)
        total += g.run().cycles
    return total


def write_section(output, title, lines):
    """Replace (or append) the ``### title`` section of a benchmarks page with ``lines``."""
    text = "\n".join([f"### {title}", ""] + lines) + "\n"
    p = Path(output)
    p.parent.mkdir(parents=True, exist_ok=True)
    old = p.read_text() if p.exists() else "# Benchmarks\n\nEvery figure here is written by the command quoted with it.\n\n"
    marker = f"### {title}"
    if marker in old:
        head, _, rest = old.partition(marker)
        nxt = rest.find("\n### ")
        old = head + (rest[nxt + 1:] if nxt >= 0 else "")
    p.write_text(old.rstrip() + "\n\n" + text)
    print(f"wrote {p} ({title})")


def _lpu_section(rows, repeat):
    lines = [(f"Measured with `python -m tinylpu.sim.perf.golden_speed lpu {repeat} --output docs/benchmarks.md` "
              f"(median of {repeat} runs, parts of 20) on {_platform()}: the whole job as a host engine runs it "
              "(construct `FastGolden`, `load_program`, `write_image` (each bank's image in one copy), `run`)."),
             "", ("| workload | engine | simulated cycles | median wall time (ms) | median cycles/s | "
                  "fastest run, cycles/s |"), "|---|---|---|---|---|---|"]
    for r in rows:
        cps = f"{r['cycles_per_s']:,.0f}" if r["cycles_per_s"] else ""
        best = f"{r['best_cycles_per_s']:,.0f}" if r.get("best_cycles_per_s") else ""
        lines.append(f"| {r['workload']} | {r['engine'].strip()} | {r['cycles'] or ''} | {r['seconds'] * 1e3:.2f} | "
                     f"{cps} | {best} |")
    return lines


def _tray_section(rows, compile_s, repeat):
    lines = [(f"Measured with `python -m tinylpu.sim.perf.golden_speed tray {repeat} --output docs/benchmarks.md` "
              f"(median of {repeat} runs, the lockstep tray once) on {_platform()}: the whole tray job (construct "
              "`GoldenTray`, load the programs, write every chip's image, `run`); tray cycles are the slowest chip's, "
              "chip cycles the sum over the chips.  The fast tray (`sim/golden/fasttray.py`) equals the lockstep tray "
              f"(cycles, link counts, every MEM bank), checked in the same run; its dataflow spans "
              f"{rows[-1]['linked_chips']} chips ({rows[-1]['flow_steps']} numpy steps).  `compile_tp` took "
              f"{compile_s:.1f} s."),
             "", ("| workload | engine | tray cycles | median wall time (ms) | tray cycles/s | chip cycles/s | "
                  "fastest run, tray cycles/s |"), "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['engine']} | {r['cycles']} | {r['seconds'] * 1e3:.1f} | "
                     f"{r['cycles_per_s']:,.0f} | {r['chip_cycles_per_s']:,.0f} | {r['best_cycles_per_s']:,.0f} |")
    return lines


def main(argv):
    output = None
    if "--output" in argv:
        i = argv.index("--output")
        output = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    what = argv[0] if argv else "all"
    repeat = int(argv[1]) if len(argv) > 1 else 5
    if what in ("tiny", "all"):
        bench_fast_golden("tiny", repeat)
    if what in ("lpu", "all"):
        rows = bench_lpu_jobs(repeat)
        if output:
            write_section(output, "Golden model jobs with bulk image writes (config `lpu`)", _lpu_section(rows, repeat))
    if what in ("tray", "all"):
        rows, compile_s = bench_tray(min(repeat, 3))
        if output:
            write_section(output, "Golden tray speed (config `lpu-tray`)", _tray_section(rows, compile_s, min(repeat, 3)))


if __name__ == "__main__":
    main(sys.argv[1:])
