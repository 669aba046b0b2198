"""The RTL tray engine: ``hdl.tray.Tray`` (every chip on its own clock) under cocotb + Icarus.

``run_tray_rtl(cfg, programs, mems, reads, ppm=None, sim="icarus")``:

* ``programs``: one ``Program`` per chip (``None``: an empty program, every queue halted);
* ``mems``: per chip ``{bank: vectors | (addr, vectors) | [(addr, vectors), ...]}`` (or None);
* ``reads``: per chip ``[(bank, addr, n), ...]`` (or None);
* ``ppm``: per chip clock offset (default ``cfg.ppm``): chip i's clock period is
  10 ns x (1 + ppm[i] x 1e-6), rounded to a picosecond (so positive ppm = a slower clock).

Returns ``{"chips": [{"cycles", "stall", "done", "running", "timeout", "errors", "error_bits",
"mem": [int8 (n, lanes) per read], "links": [LINK_STATUS dict per port]}, ...], "sim_ns",
"wall_s", "period_ps"}``.  ``cycles`` is in program cycles (the golden model's count: DESKEW's
variable hold is not in it), ``stall`` the cycles DESKEW held the chip.

The Verilog is built once per config into ``build/rtl/<config>-tray/`` (rebuilt when hdl/ or the
config changes).
"""

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from tinylpu.config import load_config
from tinylpu.sim.rtl.runner import _DUMP_REG, _source_hash, _tail, build_root, normalize_case, scrub_program

__all__ = ["run_tray_rtl", "build_tray_verilog", "period_ps"]

TOP = "tinylpu_tray"
NOMINAL_PS = 10_000


def period_ps(ppm):
    return int(round(NOMINAL_PS * (1 + ppm * 1e-6)))


def build_tray_verilog(cfg):
    """build/rtl/<config>-tray/tinylpu_tray_icarus.v (patched for Icarus, see rtl_runner)."""
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    d = build_root() / f"{cfg.name}-tray"
    d.mkdir(parents=True, exist_ok=True)
    v, stamp = d / f"{TOP}.v", d / f"{TOP}.hash"
    key = _source_hash(cfg)
    if not (v.exists() and stamp.exists() and stamp.read_text() == key):
        from amaranth.back import verilog

        from tinylpu.hdl.tray import Tray
        text = verilog.convert(Tray(cfg), name=TOP)
        text = _DUMP_REG.sub(lambda mo: f"{mo.group(1)}reg {mo.group(2)} = 0;\n"
                                        f"{mo.group(1)}initial #0 {mo.group(2)} = 1'b1;", text)
        tmp = d / f"{TOP}.v.tmp"
        tmp.write_text(text)
        tmp.replace(v)
        stamp.write_text(key)
    return v


def run_tray_rtl(cfg, programs, mems=None, reads=None, ppm=None, sim="icarus", max_cycles=200_000,
                 scrub=True):
    from cocotb_tools.runner import get_runner

    from tinylpu.firmware.program import Program
    cfg = load_config(cfg)
    N = cfg.chips
    if len(programs) > N:
        raise ValueError(f"{len(programs)} programs for a tray of {N} chips")
    programs = list(programs) + [None] * (N - len(programs))
    mems = list(mems or []) + [None] * (N - len(mems or []))
    reads = list(reads or []) + [None] * (N - len(reads or []))
    ppm = list(cfg.ppm if ppm is None else ppm)
    if len(ppm) != N:
        raise ValueError(f"{len(ppm)} ppm values for a tray of {N} chips")
    cases = [normalize_case(cfg, {"program": p if p is not None else Program({}), "mem": m or {},
                                  "read": r or []}, i)
             for i, (p, m, r) in enumerate(zip(programs, mems, reads))]
    periods = [period_ps(x) for x in ppm]
    t0 = time.perf_counter()
    vfile = build_tray_verilog(cfg)
    sim_dir = vfile.parent / sim
    runner = get_runner(sim)
    runner.build(sources=[vfile], hdl_toplevel=TOP, build_dir=sim_dir, timescale=("1ns", "1ps"),
                 log_file=sim_dir / "build.log")
    with tempfile.TemporaryDirectory(prefix="tinylpu_tray_") as td:
        td = Path(td)
        doc = {"cases": cases, "scrub": None, "period_ps": periods, "max_cycles": max_cycles}
        if scrub:
            sp, host, restore = scrub_program(cfg)
            doc["scrub"] = {"program": sp.to_bytes().hex(), "mem": host, "restore": restore,
                            "max_cycles": 100_000}
        (td / "tray.json").write_text(json.dumps(doc))
        config_f = td / "config.yaml"
        config_f.write_text(yaml.safe_dump(cfg.raw, sort_keys=False))
        results_f, log_f = td / "results.json", td / "sim.log"
        try:
            runner.test(test_module="tinylpu.sim.rtl.cocotb_tray", hdl_toplevel=TOP, build_dir=sim_dir,
                        test_dir=td, results_xml=str(td / "results.xml"), timescale=("1ns", "1ps"),
                        log_file=log_f,
                        extra_env={"TINYLPU_CONFIG": str(config_f), "TINYLPU_TRAY": str(td / "tray.json"),
                                   "TINYLPU_RESULTS": str(results_f)})
        except Exception as e:
            raise RuntimeError(f"RTL tray simulation failed: {e}\n{_tail(log_f)}") from e
        if not results_f.exists():
            raise RuntimeError(f"RTL tray simulation returned no result\n{_tail(log_f)}")
        res = json.loads(results_f.read_text())
    for r in res["chips"]:
        r["mem"] = [np.asarray(x, dtype=np.int8).reshape(-1, cfg.lanes) for x in r.pop("reads")]
    res["wall_s"] = time.perf_counter() - t0
    res["period_ps"] = periods
    res["ppm"] = ppm
    return res


def compiled_tray_inputs(tc, xq_per_chip):
    """(programs, mems, reads) per chip for a ``firmware.tray.TrayCompiled`` and its inputs."""
    from tinylpu.firmware.asm import assemble
    empty = assemble(".queue mem0\n HALT\n", tc.cfg)
    programs, mems, reads = [], [], []
    for c, xq in zip(tc.chips, xq_per_chip):
        if c is None:
            programs.append(empty)
            mems.append(None)
            reads.append(None)
            continue
        programs.append(c.program)
        img = {}
        for bank, lst in list(c.mem_image.items()) + list(c.pack_input(xq).items()):
            img.setdefault(bank, []).extend((addr, np.asarray(v, np.int8)) for addr, v in lst)
        mems.append(img)
        reads.append([(r.bank, r.addr, c.tokens) for _, r in sorted(c.y_layout.items())])
    return programs, mems, reads


def compiled_tray_output(tc, root_reads):
    """The root chip's int8 output from its read-back (in the order of ``compiled_tray_inputs``)."""
    root = tc.chips[tc.root]
    got = {(r.bank, r.addr): np.asarray(x, np.int8) for (_, r), x in zip(sorted(root.y_layout.items()), root_reads)}
    return root.unpack_output(lambda bank, addr, n: got[(bank, addr)][:n])


def run_tray_compiled_rtl(tc, xq_per_chip, ppm=None, sim="icarus"):
    """A ``firmware.tray.TrayCompiled`` on the RTL tray.  Returns (y int8 of the root chip, result)."""
    programs, mems, reads = compiled_tray_inputs(tc, xq_per_chip)
    res = run_tray_rtl(tc.cfg, programs, mems, reads, ppm=ppm, sim=sim)
    return compiled_tray_output(tc, res["chips"][tc.root]["mem"]), res
