"""Tap registers (``fabric.tap_registers``, hdl/taps.py) on whole chips against the golden model.

The tapped chips run random programs (firmware/randprog.py: copies, VXM ops, GATHER/SCATTER, SXM,
MXM tiles, TRANS, SYNC/NOTIFY) and an error program under Icarus through the same host driver as
every RTL chip test; MEM contents and cycle counts must equal the golden model's, which reads the
same config (its longer latencies) and knows nothing of the taps.  The unit tests run each tapped
unit against the golden model too (tests/hdl/test_vxm.py, test_sxm.py, test_mem.py, test_mxm.py:
configs ``*-tap``).  Also: the config loader's minimum-latency rule.
"""

import copy
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from amaranth.back import rtlil

from tests.harness import golden_run
from tinylpu.config import MIN_LATENCY, TAP_LATENCY_KEYS, ConfigError, load_config, parse_config
from tinylpu.firmware.asm import assemble
from tinylpu.hdl.common import bit_ranges
from tinylpu.hdl.sxm import SxmSlice
from tinylpu.hdl.taps import Tapped
from tinylpu.hdl.vxm import LANE_FIELDS, VxmSlice
from tinylpu.isa import Instr
from tinylpu.sim.golden.chip import ProgramError

os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")

CUT = "fpga"
#: the `fpga` chip before the cut (8 streams, no taps): its units are the ones the cut chip wraps in
#: tap registers (hdl/taps.py ``Tapped`` builds them at latencies one shorter), so the unit tests
#: build bare units from it under the name "fpga"
FPGA_UNITS = Path(__file__).resolve().parents[2] / "configs" / "synth" / "fpga-8s.yaml"


def unit_config(name):
    """A config for a bare unit (no ``Tapped`` wrapper): "fpga" is the 8-stream chip's pipelines."""
    return load_config(FPGA_UNITS if name == "fpga" else name)


def tapped(base, name=None, **latency):
    """A shipped config with tap registers and every result latency one longer (the same unit
    pipelines as `base` behind the tap), latencies in `latency` set as given."""
    raw = copy.deepcopy(unit_config(base).raw)
    raw["name"] = name or f"{base}-tap"
    raw["fabric"] = {"tap_registers": True}
    for k in TAP_LATENCY_KEYS:
        raw["latency"][k] = raw["latency"].get(k, MIN_LATENCY[k]) + 1
    raw["latency"].update(latency)
    return parse_config(yaml.safe_dump(raw), f"<{raw['name']}>")


def cut_config():
    """The shipped `fpga` config: the FPGA cut (4 streams, tap registers)."""
    return load_config(CUT)


def test_tap_config_rules():
    cfg = tapped("tiny")
    assert cfg.tap_registers and not load_config("tiny").tap_registers
    cut = cut_config()
    assert cut.tap_registers and cut.streams == 4
    fpga = load_config(FPGA_UNITS)
    assert fpga.streams == 8 and not fpga.tap_registers
    # the cut keeps the 8-stream chip's unit pipelines: every result latency one longer, the rest unchanged
    assert {k: cut.latency[k] - fpga.latency[k] for k in fpga.latency} == {
        k: int(k in TAP_LATENCY_KEYS) for k in fpga.latency}
    for k in TAP_LATENCY_KEYS:
        with pytest.raises(ConfigError, match=rf"<tiny-low>.*latency\.{k}.*is {MIN_LATENCY[k]}, but with "
                                              rf"fabric\.tap_registers .*minimum is {MIN_LATENCY[k] + 1}"):
            tapped("tiny", "tiny-low", **{k: MIN_LATENCY[k]})
    raw = copy.deepcopy(load_config("duo").raw)
    raw["fabric"] = {"tap_registers": True}
    with pytest.raises(ConfigError, match="fabric.tap_registers.*without C2C"):
        parse_config(yaml.safe_dump(raw), "<duo-tap>")
    raw = copy.deepcopy(load_config("tiny").raw)
    raw["fabric"] = {"taps": True}
    with pytest.raises(ConfigError, match="fabric.taps.*unknown field"):
        parse_config(yaml.safe_dump(raw), "<bad>")


_golden = golden_run


def _check_random(cfg, seeds):
    from tinylpu.firmware.randprog import random_program
    from tinylpu.sim.rtl.runner import run_cases_rtl
    rcs = [random_program(cfg, s) for s in seeds]
    cases = [{"program": rc.program, "mem": rc.mem, "read": rc.readback, "name": f"rand{rc.seed}"} for rc in rcs]
    # an error program: a READ of an empty stream (VXM ADD of e0 that nothing drives)
    err_text = f""".queue {cfg.slices_of('vxm')[0].name}
    ADD e1, e0, #1
    NOP 12
    HALT
"""
    err_prog = assemble(err_text, cfg, "empty")
    cases.append({"program": err_prog, "mem": {}, "read": [], "name": "err_empty"})
    results = run_cases_rtl(cfg, cases, sim="icarus")
    failed = []
    for rc, case, res in zip(rcs, cases, results):
        try:
            cycles, mem = _golden(cfg, case["program"], case["mem"], case["read"])
            assert res["errors"] == [] and res["done"] and not res["timeout"], res
            for (bank, addr, n), got in zip(case["read"], res["reads"]):
                assert np.array_equal(got, mem[bank]), f"{bank}[{addr}..{addr + n}] differs"
            assert res["cycles"] == cycles, (res["cycles"], cycles)
        except AssertionError as e:
            failed.append(f"seed {rc.seed}: {e}")
    with pytest.raises(ProgramError) as e:
        _golden(cfg, err_prog, {}, [])
    r = results[-1]
    assert "empty" in r["errors"] and r["done"], r
    assert r["cycles"] == e.value.cycle, (r["cycles"], e.value.cycle)
    assert not failed, "\n".join(failed)


def test_tapped_ice40_random_programs():
    """``ice40`` (4 lanes, 4 streams: no plane select) with tap registers: 8 random programs and an
    error program equal to the golden model, MEM and cycles."""
    _check_random(tapped("ice40"), range(8))


@pytest.mark.slow
def test_tapped_tiny_random_programs():
    """``tiny`` (16 lanes, 8 streams: int32 groups at any stream) with tap registers."""
    _check_random(tapped("tiny"), range(12))


@pytest.mark.slow
def test_fpga_cut_random_programs():
    """The config ``make synth BOARD=ulx3s-85f`` builds (configs/fpga.yaml)."""
    _check_random(cut_config(), range(12))


def _check_pysim(cfg, seeds):
    """The ``amaranth`` engine (sim/rtl/pysim.py) on a tapped chip: a host MEM write and read-back
    (several vectors, each bank), random programs and the error program of ``_check_random``, MEM and
    cycles equal to the golden model's.  (Its slice clock domains are combinational copies of
    ``sync``'s clock; before ``netlist_clocks`` Amaranth's simulator ran them a delta cycle late, and
    the first vector of every host MEM write was lost.)"""
    from tinylpu.firmware.randprog import random_program
    from tinylpu.sim.rtl.pysim import run_case_pysim
    rng = np.random.default_rng(1)
    banks = [s.name for s in cfg.slices_of("mem")]
    writes = {b: [(1 + i % 3, rng.integers(-128, 128, (1 + i % 4, cfg.lanes), dtype=np.int8))]
              for i, b in enumerate(banks)}
    halt = assemble(f".queue {banks[0]}\n    HALT\n", cfg, "halt")
    res = run_case_pysim(cfg, halt, {b: [(a, v.astype(int).tolist()) for a, v in w] for b, w in writes.items()},
                         [(b, 0, 12) for b in banks])
    for b, got in zip(banks, res["reads"]):
        (a, v), = writes[b]
        want = np.zeros((12, cfg.lanes), np.int8)
        want[a:a + len(v)] = v
        assert np.array_equal(np.asarray(got, np.int8), want), f"{b}: {got}"
    failed = []
    for seed in seeds:
        rc = random_program(cfg, seed)
        mem = {b: [(a, np.asarray(v).astype(int).tolist())] for b, (a, v) in rc.mem.items()}
        res = run_case_pysim(cfg, rc.program, mem, rc.readback)
        cycles, gmem = _golden(cfg, rc.program, rc.mem, rc.readback)
        try:
            assert res["errors"] == [] and res["done"] and not res["timeout"], res
            for (bank, addr, n), got in zip(rc.readback, res["reads"]):
                assert np.array_equal(np.asarray(got, np.int8), gmem[bank]), f"{bank}[{addr}..{addr + n}] differs"
            assert res["cycles"] == cycles, (res["cycles"], cycles)
        except AssertionError as e:
            failed.append(f"seed {seed}: {e}")
    assert not failed, "\n".join(failed)
    err_prog = assemble(f""".queue {cfg.slices_of('vxm')[0].name}
    ADD e1, e0, #1
    NOP 12
    HALT
""", cfg, "empty")
    with pytest.raises(ProgramError) as e:
        _golden(cfg, err_prog, {}, [])
    r = run_case_pysim(cfg, err_prog, {})
    assert "empty" in r["errors"] and r["done"], r
    assert r["cycles"] == e.value.cycle, (r["cycles"], e.value.cycle)


def test_amaranth_engine_on_tapped_chip():
    """The ``fpga`` chip (8 lanes: one host word per vector, 4 streams, tap registers) under the
    ``amaranth`` engine equals the golden model."""
    _check_pysim(cut_config(), range(4))


@pytest.mark.slow
def test_amaranth_engine_on_tapped_tiny():
    """``tiny`` with tap registers (16 lanes: two host words per vector, 8 streams)."""
    _check_pysim(tapped("tiny"), range(3))


def test_lane_copies_hold_only_the_fields_the_lanes_read():
    """Behind tap registers the VXM and SXM keep the element's instruction once per lane
    (``el_insn_copy<j>``), each copy only the fields that lane's selects read
    (``ElementField.lanes``): the whole word per lane, kept apart from Yosys' merging, was 352 of
    the 648 copy flip-flops read by nothing in the ULX3S netlist of 332cb7a."""
    assert bit_ranges(Instr, LANE_FIELDS) == [(13, 28), (40, 56), (62, 63)]      # a, b, c; imm; use_imm
    assert bit_ranges(Instr, [("op",), ("args", "ctl", "n")]) == [(0, 32)]
    cfg = cut_config()
    for cls, name, width in ((VxmSlice, "vxm0", 32), (SxmSlice, "sxm0", 5)):
        text = rtlil.convert(Tapped(cls, cfg, cfg.slice(name)), name=name)
        copies = dict((int(j), int(w)) for w, j in re.findall(r"wire width (\d+) \\el_insn_copy(\d+)\n", text))
        assert copies == {j: width for j in range(cfg.lanes)}, (name, copies)
