"""The `tinylpu` command line."""

import argparse
import json
import sys
from pathlib import Path

from tinylpu.config import DEFAULT_CONFIG, ConfigError, load_config, shipped_configs
from tinylpu.schema import SchemaError


class CliError(Exception):
    pass


def _config_show(args):
    cfg = load_config(args.config)
    d = cfg.derived()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    lat = ", ".join(f"{k}={v}" for k, v in cfg.latency.items())
    print(f"config {cfg.name}  ({cfg.source})")
    if cfg.description:
        print(f"  {cfg.description}")
    print(f"  floorplan (west -> east): {' '.join(cfg.slice_names)}")
    print(f"  lanes                     {cfg.lanes} int8 per vector")
    print(f"  streams                   {cfg.streams} eastward + {cfg.streams} westward")
    print(f"  MEM                       {cfg.banks} banks x {cfg.mem_depth} vectors x {cfg.lanes} B, 1R+1W per bank per cycle")
    print(f"  SRAM                      {d['sram_bytes']} bytes ({d['sram_kib']:.0f} KiB)")
    print(f"  peak int8 MACs/cycle      {d['macs_per_cycle']}")
    print(f"  stream bandwidth          {d['stream_bytes_per_cycle']} B/cycle per slice boundary = "
          f"{d['stream_bandwidth_gbps']:.1f} GB/s at {cfg.clock_mhz:g} MHz")
    print(f"  MEM read bandwidth        {d['mem_read_bytes_per_cycle']} B/cycle = {d['mem_read_bandwidth_gbps']:.1f} GB/s "
          f"(all banks: the SRAM roofline)")
    print(f"  weight install rate       {d['weight_install_bytes_per_cycle']} B/cycle into the MXMs "
          f"({cfg.install_rows} row{'s' if cfg.install_rows > 1 else ''} per cycle per MXM)")
    print(f"  SRAM per MAC              {d['sram_bytes_per_mac']:.0f} B per int8 MAC/cycle")
    print(f"  peak TOPS (int8)          {d['peak_tops_int8']:.4f} at {cfg.clock_mhz:g} MHz")
    print(f"  MXM accumulators          {cfg.acc_depth} x {cfg.lanes} int32")
    print(f"  queue depth               {cfg.queue_depth} instructions per slice")
    print(f"  latencies (cycles)        {lat}")
    ppm = ", ".join(f"{p:g}" for p in sorted(set(cfg.ppm)))
    print(f"  chips                     {cfg.chips} (clock offsets ppm: {ppm}); C2C ports {cfg.c2c_ports}, "
          f"link latency {cfg.link_latency} cycles")
    if cfg.chips > 1:
        print(f"  tray                      {cfg.chips} chips: {d['tray_sram_bytes'] / 2**20:g} MiB SRAM, "
              f"{d['tray_peak_tops_int8']:.2f} peak TOPS; vector every {cfg.vector_interval} cycles per link "
              f"({cfg.link['width_bits']}-bit words)")
    return 0


def _config_list(args):
    for n in shipped_configs():
        cfg = load_config(n)
        print(f"{n:8s} {cfg.description}")
    return 0


def _read_program(path, cfg):
    from tinylpu.firmware.asm import assemble
    from tinylpu.firmware.program import Program
    p = Path(path)
    if not p.exists():
        raise CliError(f"{path}: file not found")
    blob = p.read_bytes()
    if blob[:8] == b"TLPUPRG\0":
        return Program.from_bytes(blob, str(path))
    try:
        text = blob.decode()
    except UnicodeDecodeError:
        raise CliError(f"{path}: neither a tinylpu program binary nor UTF-8 assembly text") from None
    return assemble(text, cfg, str(path))


def _asm(args):
    from tinylpu.firmware.asm import assemble
    cfg = load_config(args.config)
    src = Path(args.source)
    if not src.exists():
        raise CliError(f"{args.source}: file not found")
    prog = assemble(src.read_text(), cfg, args.source)
    out = Path(args.output or src.with_suffix(".bin"))
    out.write_bytes(prog.to_bytes())
    print(f"{out}: {len(prog)} instructions in {len(prog.queues)} queues ({', '.join(prog.queues)})")
    return 0


def _disasm(args):
    from tinylpu.firmware.asm import disassemble
    from tinylpu.firmware.check import check_program
    from tinylpu.firmware.program import Program
    p = Path(args.binary)
    if not p.exists():
        raise CliError(f"{args.binary}: file not found")
    prog = Program.from_bytes(p.read_bytes(), args.binary)
    if args.config:
        check_program(prog, load_config(args.config))
    text = disassemble(prog)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _parse_bank_spec(spec, what):
    # BANK:ADDR=FILE  or  BANK:ADDR:N[=FILE]
    try:
        lhs, _, rhs = spec.partition("=")
        parts = lhs.split(":")
        bank = parts[0]
        addr = int(parts[1], 0) if len(parts) > 1 else 0
        n = int(parts[2], 0) if len(parts) > 2 else None
        return bank, addr, n, rhs or None
    except (ValueError, IndexError):
        raise CliError(f"{what} {spec!r}: expected BANK:ADDR=FILE.npy (load) or BANK:ADDR:N[=FILE.npy] (dump)") from None


def _run(args):
    import numpy as np

    from tinylpu.sim.golden.chip import Golden
    cfg = load_config(args.config)
    prog = _read_program(args.program, cfg)
    g = Golden(cfg)
    g.load_program(prog)
    for spec in args.load or []:
        bank, addr, _, f = _parse_bank_spec(spec, "--load")
        if f is None or not Path(f).exists():
            raise CliError(f"--load {spec}: file {f!r} not found")
        g.write_mem(bank, addr, np.load(f))
    r = g.run(max_cycles=args.max_cycles)
    result = {"cycles": r.cycles, "activity": r.activity}
    for spec in args.dump or []:
        bank, addr, n, f = _parse_bank_spec(spec, "--dump")
        data = g.read_mem(bank, addr, n if n is not None else 1)
        if f:
            np.save(f, data)
        else:
            result.setdefault("dump", {})[f"{bank}:{addr}"] = data.tolist()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"cycles: {r.cycles}")
        for s, act in r.activity.items():
            if act.get("issued"):
                print(f"  {s:6s} " + ", ".join(f"{k}={v}" for k, v in act.items()))
        for k, v in result.get("dump", {}).items():
            print(f"{k}: {v}")
    return 0


def _isa_doc(args):
    from tinylpu.firmware.isadoc import render_isa_doc
    cfg = load_config(args.config)
    text = render_isa_doc(cfg)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def _ffn(args):
    import numpy as np

    from tinylpu.sim.host.ffn import InputError, run_ffn
    if not Path(args.input).exists():
        raise CliError(f"{args.input}: file not found")
    try:
        x = np.load(args.input, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise CliError(f"{args.input}: not a readable .npy file ({e})") from None
    ppm = None
    if args.ppm and args.ppm_spread is not None:
        raise CliError("give either --ppm or --ppm-spread, not both")
    config = args.config or ("tray" if args.chips > 1 else DEFAULT_CONFIG)
    if args.ppm:
        try:
            ppm = [float(v) for v in args.ppm.split(",")]
        except ValueError:
            raise CliError(f"--ppm {args.ppm!r}: expected comma-separated numbers, one per chip") from None
        if len(ppm) != args.chips:
            raise CliError(f"--ppm has {len(ppm)} values for --chips {args.chips}")
    elif args.ppm_spread is not None:
        rng = np.random.default_rng(args.seed)
        ppm = list(rng.uniform(-args.ppm_spread, args.ppm_spread, args.chips))
    try:
        y, rep, c = run_ffn(args.weights, x, config, args.engine, args.sim, args.waves, args.artifacts,
                            chips=args.chips, ppm=ppm)
    except InputError as e:
        raise CliError(str(e)) from None
    np.save(args.output, y)
    if args.report:
        Path(args.report).write_text(json.dumps(rep, indent=2))
    print(f"{args.output}: {y.shape[0]} tokens x {y.shape[1]} (engine {rep['engine']}, config {rep['config']})")
    if rep.get("per_chip_measured_cycles"):
        print(f"tray      {rep['chips_used']} chips; per-chip cycles {rep['per_chip_measured_cycles']}; "
              f"{rep['link_vectors_to_root']} vectors over C2C to chip 0; identical to one chip: "
              f"{rep['identical_to_single_chip']}")
        if rep.get("runs", 1) > 1:
            print(f"runs      {rep['runs']} chunks of tokens {rep['run_tokens']}, cycles per run {rep['run_cycles']}")
    print(f"cycles    predicted {rep['predicted_cycles']}, measured {rep['measured_cycles']}"
          f" ({'equal' if rep['cycles_match'] else 'MISMATCH'})")
    print(f"MXM utilization {rep['mxm_utilization']:.3f}, weight-bandwidth utilization {rep['weight_bw_utilization']:.3f}")
    print(f"error     max |y - float| = {rep['max_abs_error_vs_float']:.4g} (max |y| {rep['max_abs_float_output']:.3g}), "
          f"cosine {rep['cosine_vs_float']:.5f}")
    return 0 if rep["cycles_match"] and rep["bit_exact_vs_integer_reference"] else 1


def _sim(args):
    """`make sim`: compile the default SwiGLU layer for the config and run it; check cycles and numbers."""
    import os

    from tinylpu.sim.host.ffn import default_swiglu, run_ffn
    cfg = load_config(args.config)
    w, x = default_swiglu(cfg, args.seed, args.tokens)
    out = Path(args.artifacts)
    waves = args.waves or os.environ.get("WAVES") == "1"
    y, rep, c = run_ffn(w, x, cfg, args.engine, args.sim, waves, out)
    print(f"layer     SwiGLU FFN d_model={w.d_model} d_ff={w.d_ff} with biases, {len(x)} tokens, int8 weights and "
          f"activations, config {cfg.name} ({cfg.lanes} lanes)")
    print(f"engine    {rep['engine']}" + (f" ({args.sim})" if args.engine == "rtl" else ""))
    print(f"cycles    predicted {rep['predicted_cycles']}  measured {rep['measured_cycles']}  "
          f"({'EQUAL' if rep['cycles_match'] else 'MISMATCH'})")
    print(f"MXM       utilization {rep['mxm_utilization']:.3f} of {cfg.macs_per_cycle} MACs/cycle; weight bandwidth "
          f"utilization {rep['weight_bw_utilization']:.3f}")
    print(f"numbers   bit-exact vs the integer reference: {rep['bit_exact_vs_integer_reference']}; max |error| vs "
          f"float {rep['max_abs_error_vs_float']:.4f} (outputs up to {rep['max_abs_float_output']:.2f}), cosine "
          f"{rep['cosine_vs_float']:.5f}")
    print(f"trace     {out / 'trace.json'} (open in ui.perfetto.dev)")
    print(f"listing   {out / 'listing.s'}; report {out / 'report.json'}")
    if rep.get("waves"):
        print(f"waves     {rep['waves']}")
    ok = rep["cycles_match"] and rep["bit_exact_vs_integer_reference"] and rep["cosine_vs_float"] >= 0.99
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def _verilog(args):
    import os
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    from amaranth.back import verilog

    from tinylpu.hdl.chip import Chip
    cfg = load_config(args.config)
    text = verilog.convert(Chip(cfg), name="tinylpu_chip")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"{out}: module tinylpu_chip for config {cfg.name} ({len(text.splitlines())} lines)")
    return 0


def _bench(args):
    from tinylpu.sim.perf.bench import main as bench_main
    return bench_main(args)


def _project(args):
    from tinylpu.sim.perf.project import ProjectError
    from tinylpu.sim.perf.project import main as project_main
    try:
        return project_main(args)
    except ProjectError as e:
        raise CliError(str(e)) from None


_TABLE_ROWS = [
    ("lanes", "lanes (int8 per vector)", "{}"),
    ("mem_banks", "MEM banks", "{}"),
    ("mem_depth_vectors", "vectors per bank", "{}"),
    ("sram_kib", "SRAM per chip (KiB)", "{:,.0f}"),
    ("macs_per_cycle", "int8 MACs/cycle", "{:,}"),
    ("mem_read_bytes_per_cycle", "SRAM read B/cycle (roofline)", "{:,}"),
    ("install_rows", "weight rows installed/cycle", "{}"),
    ("weight_install_bytes_per_cycle", "weight install B/cycle", "{:,}"),
    ("sram_bytes_per_mac", "SRAM bytes per MAC/cycle", "{:,.0f}"),
    ("clock_mhz", "clock (MHz)", "{:g}"),
    ("peak_tops_int8", "peak TOPS (int8)", "{:.4g}"),
    ("chips", "chips", "{}"),
    ("tray_sram_bytes", "SRAM, all chips (MiB)", "{}"),
]


def config_table():
    """Markdown: one column per shipped config, one row per derived number."""
    cfgs = [load_config(n) for n in shipped_configs()]
    ds = [c.derived() for c in cfgs]
    lines = ["| | " + " | ".join(f"`{c.name}`" for c in cfgs) + " |", "|---" * (len(cfgs) + 1) + "|"]
    for key, label, fmt in _TABLE_ROWS:
        vals = [f"{d[key] / 2**20:g}" if key == "tray_sram_bytes" else fmt.format(d[key]) for d in ds]
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def _config_table(args):
    table = config_table()
    if args.output:
        path = Path(args.output)
        text = path.read_text() if path.exists() else ""
        begin, end = "<!-- config table: begin -->", "<!-- config table: end -->"
        if begin not in text or end not in text:
            raise CliError(f"{path}: needs the markers {begin} and {end} around the table it keeps current")
        head, rest = text.split(begin, 1)
        path.write_text(head + begin + "\n" + table + end + rest.split(end, 1)[1])
        print(f"{path}: table of {len(shipped_configs())} configs")
    else:
        print(table, end="")
    return 0


def _serve(args):
    from tinylpu.sim.serving.cli import compare_main, serve_main
    if args.cmd == "serve":
        if args.requests is None and args.synthetic is None and args.prompt is None:
            raise CliError("serve: give --prompt TEXT, --requests FILE.jsonl or --synthetic N")
        return serve_main(args)
    return compare_main(args)


def build_parser():
    ap = argparse.ArgumentParser(prog="tinylpu", description="tinylpu: a scaled-down, synthesizable LPU")
    sub = ap.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("config", help="chip configurations")
    csub = c.add_subparsers(dest="config_cmd", required=True)
    cs = csub.add_parser("show", help="print a config and its derived numbers")
    cs.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help="shipped config name or YAML path")
    cs.add_argument("--json", action="store_true")
    cs.set_defaults(fn=_config_show)
    ct = csub.add_parser("table", help="every shipped config's derived numbers as a markdown table (docs/configs.md)")
    ct.add_argument("-o", "--output", default=None, metavar="FILE.md")
    ct.set_defaults(fn=_config_table)
    cl = csub.add_parser("list", help="list shipped configs")
    cl.set_defaults(fn=_config_list)

    a = sub.add_parser("asm", help="assemble PROG.s into a program binary")
    a.add_argument("source")
    a.add_argument("-o", "--output")
    a.add_argument("--config", default=DEFAULT_CONFIG)
    a.set_defaults(fn=_asm)

    d = sub.add_parser("disasm", help="disassemble a program binary")
    d.add_argument("binary")
    d.add_argument("-o", "--output")
    d.add_argument("--config", default=None, help="also check the program against this config")
    d.set_defaults(fn=_disasm)

    r = sub.add_parser("run", help="run a program (assembly or binary) on the golden model")
    r.add_argument("program")
    r.add_argument("--config", default=DEFAULT_CONFIG)
    r.add_argument("--load", action="append", metavar="BANK:ADDR=FILE.npy", help="preload int8 vectors")
    r.add_argument("--dump", action="append", metavar="BANK:ADDR:N[=FILE.npy]", help="read back vectors")
    r.add_argument("--max-cycles", type=int, default=1_000_000)
    r.add_argument("--json", action="store_true")
    r.set_defaults(fn=_run)

    i = sub.add_parser("isa-doc", help="generate the ISA reference (docs/isa.md)")
    i.add_argument("-o", "--output")
    i.add_argument("--config", default=DEFAULT_CONFIG)
    i.set_defaults(fn=_isa_doc)

    s = sub.add_parser("sim", help="compile the default SwiGLU FFN and run it (what `make sim` does)")
    s.add_argument("--config", default=DEFAULT_CONFIG)
    s.add_argument("--engine", choices=["golden", "rtl"], default="rtl")
    s.add_argument("--sim", choices=["icarus", "verilator"], default="icarus")
    s.add_argument("--tokens", type=int, default=None, help="tokens (default: one per lane)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--waves", action="store_true", help="write waveforms (also WAVES=1)")
    s.add_argument("--artifacts", default="build/sim", help="where the listing, trace and report go")
    s.set_defaults(fn=_sim)

    f = sub.add_parser("ffn", help="compile an FFN layer and run it on a chip engine")
    f.add_argument("--weights", required=True, metavar="W.npz")
    f.add_argument("--input", required=True, metavar="X.npy")
    f.add_argument("--output", required=True, metavar="Y.npy")
    f.add_argument("--engine", choices=["golden", "rtl", "amaranth"], default="golden",
                   help="golden model, the RTL under cocotb, or the RTL under Amaranth's simulator (one chip)")
    f.add_argument("--sim", choices=["icarus", "verilator"], default="icarus")
    f.add_argument("--config", default=None, help="default: tiny, or tray with --chips > 1")
    f.add_argument("--chips", type=int, default=1, help="tensor-parallel over this many chips of a tray")
    f.add_argument("--ppm", default=None, metavar="P1,P2,...", help="per-chip clock offsets (RTL tray)")
    f.add_argument("--ppm-spread", type=float, default=None, metavar="X", help="random offsets in [-X, X] ppm")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--report", metavar="R.json")
    f.add_argument("--waves", action="store_true")
    f.add_argument("--artifacts", default=None, metavar="DIR",
                   help="also write program.bin, mem_image.npz, listing.s, trace.json, report.json here")
    f.set_defaults(fn=_ffn)

    v = sub.add_parser("verilog", help="write the chip's Verilog (module tinylpu_chip)")
    v.add_argument("--config", default=DEFAULT_CONFIG, help="shipped config name or YAML path")
    v.add_argument("-o", "--output", required=True, metavar="FILE.v")
    v.set_defaults(fn=_verilog)

    sv = sub.add_parser("serve", help="serve a workload: attention on the GPU model, MoE FFN on the LPU tray")
    g = sv.add_mutually_exclusive_group()
    g.add_argument("--requests", metavar="FILE.jsonl", help="one request per line: prompt, max_tokens, class, ...")
    g.add_argument("--synthetic", type=int, metavar="N", help="N synthetic requests")
    g.add_argument("--prompt", metavar="TEXT", help="one request: this text (a model with a tokenizer)")
    sv.add_argument("--model", choices=["synthetic", "smollm2-135m"], default=None,
                    help="the served model (default: the serving config's; smollm2-135m reads "
                         "configs/serving/smollm2.yaml unless --serving-config is given)")
    sv.add_argument("--max-tokens", type=int, default=None, metavar="N", help="--prompt: tokens to generate (32)")
    sv.add_argument("--chat", action="store_true", help="--prompt: wrap the text in the model's chat template")
    sv.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    sv.add_argument("--top-k", type=int, default=0, metavar="K", help="with --temperature: sample the K best")
    sv.add_argument("--seed", type=int, default=0, help="with --temperature: the sampling seed")
    sv.add_argument("--engine", choices=["golden", "rtl"], default="golden", help="the tray's chip engine")
    sv.add_argument("--sim", choices=["icarus", "verilator"], default=None)
    sv.add_argument("--ffn", choices=["lpu", "gpu"], default="lpu", help="where the MoE experts run")
    sv.add_argument("--speculate", type=int, default=None, metavar="K", help="draft tokens per step (0: off)")
    sv.add_argument("--micro-batches", type=int, default=None, metavar="M", help="decode batch split (ping-pong)")
    sv.add_argument("--no-pingpong", action="store_true", help="run the micro-batches without overlap")
    sv.add_argument("--decode-workers", type=int, default=None, metavar="W",
                    help="decode GPU workers sharing the tray (KV-load routing)")
    sv.add_argument("--lpu-clock-mhz", type=float, default=None)
    sv.add_argument("--serving-config", default=None, metavar="FILE.yaml", help="default configs/serving/serving.yaml")
    sv.add_argument("--gpu-config", default=None, metavar="FILE.yaml", help="default configs/serving/gpu_rubin.yaml")
    sv.add_argument("--json", action="store_true")
    sv.add_argument("--reference", action="store_true", help="check the tokens against the monolithic numpy model")
    sv.set_defaults(fn=_serve)
    sc = sub.add_parser("serve-compare", help="FFN on the GPU model vs on the LPU tray; writes docs/serving.md")
    sc.add_argument("--synthetic", type=int, default=8, metavar="N")
    sc.add_argument("--model", choices=["smollm2-135m"], default=None,
                    help="a real model (its serving config, configs/serving/smollm2.yaml): the shipped prompts")
    sc.add_argument("--max-tokens", type=int, default=None, metavar="N", help="--model: new tokens per prompt (16)")
    sc.add_argument("--requests", default=None, metavar="FILE.jsonl", help="--model: prompts instead of the shipped ones")
    sc.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8])
    sc.add_argument("--serving-config", default=None, metavar="FILE.yaml")
    sc.add_argument("-o", "--output", default="docs/serving.md")
    sc.set_defaults(fn=_serve)

    b = sub.add_parser("bench", help="measure simulator speeds; prints numbers and writes docs/")
    b.add_argument("what", choices=["golden", "compiler", "sims", "tray", "c2c", "all"])
    b.add_argument("--json", action="store_true", help="c2c: print the cases as JSON")
    b.add_argument("--vectors", type=int, default=300, help="c2c: vectors per case")
    b.add_argument("--config", default=DEFAULT_CONFIG)
    b.add_argument("--repeat", type=int, default=5)
    b.add_argument("-o", "--output", default=None, help="markdown file to write the results to")
    b.set_defaults(fn=_bench)

    pj = sub.add_parser("project", help="analytical full-scale projection (chips, tokens/s per user, energy)")
    pj.add_argument("--chip", metavar="NAME|FILE", help="configs/project/chips/NAME.yaml or a YAML path")
    pj.add_argument("--model", metavar="NAME|FILE", help="configs/project/models/NAME.yaml or a YAML path")
    pj.add_argument("--context", type=int, default=None, metavar="N", help="KV tokens (default: the model's)")
    pj.add_argument("--json", action="store_true")
    pj.add_argument("--compare", action="store_true",
                    help="compare with published figures; writes -o (docs/projection.md) and its plots")
    pj.add_argument("--fleet", nargs="?", const="", default=None, metavar="FILE.yaml",
                    help="best LPU:GPU split for a workload mix (default configs/project/fleet.yaml)")
    pj.add_argument("-o", "--output", default=None, help="--compare: markdown file; --fleet: plot (PNG)")
    pj.set_defaults(fn=_project)
    return ap


def main(argv=None):
    from tinylpu.firmware.asm import AsmError
    from tinylpu.firmware.check import ProgramCheckError
    from tinylpu.firmware.compiler import CompileError
    from tinylpu.firmware.program import ProgramFormatError
    from tinylpu.firmware.quant import WeightsError
    from tinylpu.sim.golden.chip import ProgramError
    from tinylpu.sim.host.engine import EngineError
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except AsmError as e:
        print(str(e), file=sys.stderr)
        return 2
    except (CliError, ConfigError, ProgramFormatError, ProgramCheckError, ProgramError, CompileError, WeightsError,
            EngineError, SchemaError) as e:
        print(f"tinylpu: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:
        print(f"tinylpu: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
