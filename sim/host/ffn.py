"""Compile and run an FFN layer end to end: float weights and inputs in, float outputs and a report out.

Used by `tinylpu ffn` and `make sim`.
"""

import json
from pathlib import Path

import numpy as np

from tinylpu.config import load_config
from tinylpu.firmware.compiler import compile_ffn
from tinylpu.firmware.quant import FFNWeights, float_ffn, load_weights, quantize_ffn
from tinylpu.sim.host.api import run_compiled

__all__ = ["InputError", "run_ffn", "default_swiglu", "check_input", "save_waves"]


def save_waves(cfg, sim, program, outdir):
    """Copy the simulator's FST next to the other artifacts and write a GTKWave save file for it."""
    import shutil

    from tinylpu.sim.rtl.runner import build_verilog, waves_file
    from tinylpu.sim.rtl.waves import write_gtkw
    outdir.mkdir(parents=True, exist_ok=True)
    fst = outdir / "waves.fst"
    shutil.copyfile(waves_file(cfg, sim), fst)
    vtext = build_verilog(cfg).read_text()
    return write_gtkw(outdir / "waves.gtkw", fst, load_config(cfg), vtext, program)


class InputError(ValueError):
    pass


def check_input(x, d_model, source="input"):
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise InputError(f"{source}: dtype {x.dtype}; expected float32 activations (tokens x {d_model})")
    if x.ndim != 2 or x.shape[1] != d_model:
        raise InputError(f"{source}: shape {x.shape}; expected (tokens, {d_model}) to match w1 ({d_model} x d_ff)")
    if x.shape[0] < 1:
        raise InputError(f"{source}: no tokens")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{source}: contains NaN or infinite values")
    return x.astype(np.float64)


def default_swiglu(cfg, seed=0, tokens=None):
    """The layer `make sim` runs: SwiGLU with biases, d_model = 4 lanes, d_ff = 8 lanes."""
    rng = np.random.default_rng(seed)
    L = cfg.lanes
    dm, dff = 4 * L, 8 * L
    w = FFNWeights(rng.normal(size=(dm, dff)) / np.sqrt(dm), rng.normal(size=(dff, dm)) / np.sqrt(dff),
                   rng.normal(size=(dm, dff)) / np.sqrt(dm), rng.normal(size=dff) * 0.1,
                   rng.normal(size=dm) * 0.1, rng.normal(size=dff) * 0.1, "swiglu")
    x = rng.normal(size=(tokens or L, dm)).astype(np.float32)
    return w, x


def run_ffn_tray(w, x, cfg, chips, engine="golden", ppm=None, artifacts=None):
    """Tensor-parallel FFN over `chips` chips of a tray config. Returns (y float, report, TrayCompiled)."""
    from tinylpu.firmware.tray import compile_tp
    from tinylpu.sim.golden.tray import run_tray_golden
    from tinylpu.sim.host.engine import EngineError
    if cfg.chips < 2:
        raise InputError(f"--chips {chips} needs a tray config (config {cfg.name} has {cfg.chips} chip); "
                         f"use --config tray")
    if engine not in ("golden", "rtl"):
        raise EngineError(f"engine {engine!r} runs one chip; a tray runs on golden or rtl")
    q = quantize_ffn(w, x)
    tc = compile_tp(q, cfg, len(x), chips)
    xq = q.quantize_input(x)
    tray, res = run_tray_golden(tc, [xq] * cfg.chips)
    rtl = None
    if engine == "rtl":
        from tinylpu.sim.rtl.tray import run_tray_compiled_rtl
        yq, rtl = run_tray_compiled_rtl(tc, [xq] * cfg.chips, ppm=ppm)
    else:
        yq = res.y[tc.root]             # every run's tokens (``TrayCompiled.runs``)
    y = q.dequantize_output(yq)
    yf = float_ffn(w, x)
    single = q.run_int(xq)
    rep = dict(tc.report)
    measured = res.cycles if rtl is None else [c["cycles"] for c in rtl["chips"]]
    run_measured = res.run_cycles if rtl is None else rtl.get("run_cycles", [measured])
    total = sum(max(rc) for rc in run_measured)         # the runs one after the other
    rep.update({
        "engine": engine, "config": cfg.name, "lanes": cfg.lanes, "chips": chips,
        "measured_cycles": total, "per_chip_measured_cycles": measured,
        "per_run_measured_cycles": run_measured,
        "cycles_match": measured == tc.predicted_cycles and run_measured == [r.predicted_cycles for r in tc.runs],
        "bit_exact_vs_integer_reference": bool(np.array_equal(yq, single)),
        "identical_to_single_chip": bool(np.array_equal(yq, single)),
        "links": {f"chip{a}.port{p}": {"vectors": n, "busy_cycles": n * cfg.vector_interval,
                                       "utilization": n * cfg.vector_interval / max(res.cycles[a], 1)}
                  for (a, p), n in sorted(res.link_vectors.items())},
        "ppm": list(ppm) if ppm is not None else list(cfg.ppm),
        "ppm_note": ("the golden tray runs ideal clocks; the ppm offsets apply to the RTL tray" if rtl is None
                     else "RTL tray: chip i's clock period is 10 ns x (1 + ppm[i] x 1e-6)"),
        "max_abs_error_vs_float": float(np.abs(y - yf).max()),
        "max_abs_float_output": float(np.abs(yf).max()),
        "cosine_vs_float": float((y * yf).sum() / max(np.linalg.norm(y) * np.linalg.norm(yf), 1e-30)),
        "mxm_utilization": rep["mxm_utilization"],
        "weight_bw_utilization": (q.d_model * q.d_ff * (3 if q.gated else 2)) /
                                 (cfg.weight_bytes_per_cycle * rep["chips_used"]) / total,
    })
    if rtl is not None:
        rep["ppm"] = rtl["ppm"]
        rep["rtl"] = {
            "simulator": "icarus", "wall_s": rtl["wall_s"], "sim_ns": rtl["sim_ns"],
            "per_chip_errors": [c["errors"] for c in rtl["chips"]],
            "per_chip_deskew_stall_cycles": [c["stall"] for c in rtl["chips"]],
            "links": {f"chip{i}.port{p}": {k: lk[k] for k in ("flits_ok", "crc_errors", "frame_errors", "seq_errors",
                                                              "skips_removed", "skips_inserted", "fill_min",
                                                              "fill_max", "hac_offset", "alarm", "overrun")}
                      for i, c in enumerate(rtl["chips"]) for p, lk in enumerate(c["links"])},
        }
    if artifacts:
        d = Path(artifacts)
        d.mkdir(parents=True, exist_ok=True)
        for i, c in enumerate(tc.chips):
            if c is not None:
                (d / f"chip{i}.bin").write_bytes(c.program.to_bytes())
                for j, p in enumerate({id(r.program): r.program for r in c.runs[1:]
                                       if r.program is not c.program}.values()):
                    (d / f"chip{i}.program{j + 1}.bin").write_bytes(p.to_bytes())   # the other run sizes'
                (d / f"chip{i}.s").write_text(c.listing_text())
        (d / "report.json").write_text(json.dumps(rep, indent=2))
    return y.astype(np.float32), rep, tc


def run_ffn(weights, x, config="tiny", engine="golden", sim="icarus", waves=False, artifacts=None, chips=1,
            ppm=None):
    """Returns (y float, report dict, compiled)."""
    cfg = load_config(config)
    w = weights if isinstance(weights, FFNWeights) else load_weights(weights)
    x = check_input(x, w.d_model)
    if chips > 1:
        return run_ffn_tray(w, x, cfg, chips, engine, ppm, artifacts)
    q = quantize_ffn(w, x)
    c = compile_ffn(q, cfg, len(x))
    xq = q.quantize_input(x)
    out = run_compiled(c, xq, engine, check_cycles=False, sim=sim, waves=waves)
    ref_int = q.run_int(xq)
    y = q.dequantize_output(out.y)
    yf = float_ffn(w, x)
    rep = dict(c.report)
    rep.update({
        "engine": engine,
        "measured_cycles": out.cycles,
        "measured_run_cycles": out.run_cycles,
        "cycles_match": out.run_cycles == [r.predicted_cycles for r in c.runs],
        "bit_exact_vs_integer_reference": bool(np.array_equal(out.y, ref_int)),
        "max_abs_error_vs_float": float(np.abs(y - yf).max()),
        "max_abs_float_output": float(np.abs(yf).max()),
        "cosine_vs_float": float((y * yf).sum() / max(np.linalg.norm(y) * np.linalg.norm(yf), 1e-30)),
    })
    if engine == "rtl":
        rep["simulator"] = sim
    if engine == "rtl" and waves and artifacts:
        rep["waves"] = str(save_waves(cfg, sim, c.program, Path(artifacts)))
    if artifacts:
        d = Path(artifacts)
        d.mkdir(parents=True, exist_ok=True)
        (d / "program.bin").write_bytes(c.program.to_bytes())
        for i, p in enumerate({id(r.program): r.program for r in c.runs[1:] if r.program is not c.program}.values()):
            (d / f"program{i + 1}.bin").write_bytes(p.to_bytes())      # the other run sizes' programs
        (d / "listing.s").write_text(c.listing_text())
        (d / "trace.json").write_text(c.trace_json())
        np.savez(d / "mem_image.npz", **{f"{b}@{a}": v for b, lst in c.mem_image.items() for a, v in lst})
        (d / "report.json").write_text(json.dumps(rep, indent=2))
        rep["artifacts"] = str(d)
    return y.astype(np.float32), rep, c
