"""The whole chip (Verilog from Amaranth, under cocotb + Icarus) against the golden model.

Every case of the fast tier runs in ONE simulator invocation (module fixture ``rtl``): the example
program tile_matmul.s, hand-written programs exercising NOP / REPEAT / SYNC / NOTIFY, erroneous
programs the chip must flag in its status register, and random valid programs
(``firmware.randprog``).  MEM results and cycle counts must be identical to the golden model's.
"""

import os
from importlib import resources

import numpy as np
import pytest

from tests.harness import golden_run, variant
from tinylpu.config import load_config
from tinylpu.firmware.asm import assemble
from tinylpu.firmware.program import Program
from tinylpu.sim.golden.chip import Golden, ProgramError
from tinylpu.sim.rtl.runner import run_cases_rtl

os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")

CFG = load_config("tiny")
LANES = CFG.lanes
FAST_SEEDS = range(10)           # the fast tier; the slow tier runs 10..119
SLOW_SEEDS = range(10, 120)
ROWS4 = variant("tiny", "tiny-rows4", install_rows=4)
ROWS4_SEEDS = range(10)


def _golden(prog, mem, reads, cfg=CFG):
    return golden_run(cfg, prog, mem, reads)


# --- cases -------------------------------------------------------------------------------------

def tile_matmul_case(seed=0):
    src = (resources.files("tinylpu.firmware") / "examples" / "tile_matmul.s").read_text()
    prog = assemble(src, CFG, "tile_matmul.s")
    rng = np.random.default_rng(seed)
    W = rng.integers(-128, 128, (LANES, LANES), dtype=np.int8)
    X = rng.integers(-128, 128, (LANES, LANES), dtype=np.int8)
    X[0, :] = -128
    return {"program": prog, "mem": {"mem0": (0, W), "mem1": (0, X)}, "read": [("mem4", 0, LANES)]}


# floorplan tiny: mxm0=0 sxm0=1 mem0=2 mem1=3 mem2=4 mem3=5 vxm0=6 mem4=7 mem5=8 mem6=9 mem7=10
REPEAT_S = """
.queue mem0
    READ   e0, 0, n=4           ; 0..3, then repetitions at 4, 8, 12: addresses 0..15
    REPEAT 3, 4
    READ   e1, 20, n=1          ; 16, repetitions 17..21 (d=1: right after): addresses 20..25
    REPEAT 5, 1
    READ   e2, 40, n=2, stride=-1   ; 22: 40, 39; repetitions at 25 (38, 37) and 28 (36, 35)
    REPEAT 2, 3
    HALT
.queue mem1
    NOP    3
    WRITE  e0, 100, n=4         ; one slice east: 3..6, repetitions at 7, 11, 15
    REPEAT 3, 4
    WRITE  e1, 20, n=1          ; 19, repetitions 20..24
    REPEAT 5, 1
    WRITE  e2, 40, n=2, stride=-1   ; 25, repetitions at 28 and 31
    REPEAT 2, 3
    HALT                        ; 34: the program ends at 35
"""

SYNC_S = """
.queue mem0
    NOP    5
    NOTIFY                      ; 5: fires at 7
    SYNC                        ; 6: parked, wakes at 7
    READ   e0, 0, n=2           ; 7
    NOTIFY                      ; 8: fires at 10
    NOP    5
    WRITE  w1, 60, n=1          ; 14: mem2's READ at 10 arrives (two slices west)
    HALT
.queue mem1
    SYNC                        ; 0: wakes at 7
    NOP    3
    WRITE  e0, 50, n=2          ; 10, 11
    SYNC                        ; 12: wakes at 22
    HALT
.queue mem2
    NOP    7
    SYNC                        ; issued in the fire cycle 7: waits for the next NOTIFY (10)
    READ   w1, 4, n=1           ; 10: at mem0 (two slices west) at 14
    HALT
.queue mem6
    NOP    13
    HALT
.queue vxm0
    NOP    20
    NOTIFY
    HALT
"""


def program_case(text, seed):
    prog = assemble(text, CFG, "<test>")
    rng = np.random.default_rng(seed)
    mem = {f"mem{b}": (0, rng.integers(-128, 128, (128, LANES), dtype=np.int8)) for b in range(CFG.banks)}
    reads = [(f"mem{b}", 0, 128) for b in range(CFG.banks)]
    mem["mem3"] = (0, rng.integers(-128, 128, (512, LANES), dtype=np.int8))
    reads[3] = ("mem3", 0, 512)
    return {"program": prog, "mem": mem, "read": reads}


# erroneous programs: (assembly, the status flag the chip must raise)
ERRORS = {
    "empty": ("""
.queue mem1
    WRITE e0, 0, n=1            ; nothing on e0
    HALT
""", "empty"),
    "deadlock": ("""
.queue mem0
    NOP 3
    SYNC
    HALT
.queue mem1
    HALT
""", "deadlock"),
    "inflight": ("""
.queue mem0
    READ e0, 0, n=4
    HALT                        ; 1: the READ's results are still to land
""", "inflight"),
    "queue": ("""
.queue mem0
    NOP 2                       ; no HALT
""", "queue"),
    "busy": ("""
.queue mem0
    READ e0, 0, n=4
    READ e1, 0, n=1             ; the read port is busy until cycle 3
    NOP 6
    HALT
""", "busy"),
    "addr": ("""
.queue mem0
    READ e0, 504, n=8
    REPEAT 1, 8                 ; the repetition reads 512..519
    NOP 6
    HALT
""", "addr"),
    "port": ("""
.queue mem3
    READ e0, 0, n=2             ; at vxm0 (one slice east) at 3, 4
    NOP 6
    HALT
.queue vxm0
    NOP 3
    MUL  e1, e0, #2             ; 3: lands at 6
    ADD  e2, e0, #1             ; 4: lands at 6 as well
    NOP 4
    HALT
""", "port"),
    "hazard": ("""
.queue mem0
    READ w0, 0, n=1             ; at mxm0 (two slices west) at 4
    NOP 8
    HALT
.queue mxm0
    NOP 4
    MM   w0, 0, 0, n=1          ; 4: acc[0] committed at 9
    EMIT e0, 0, n=1             ; 5: reads acc[0] too early
    NOP 6
    HALT
""", "hazard"),
}


def _random_case(seed):
    from tinylpu.firmware.randprog import random_program
    rc = random_program(CFG, seed)
    return {"program": rc.program, "mem": rc.mem, "read": rc.readback, "name": f"rand{seed}"}


def _fast_cases():
    cases = {"tile_matmul": tile_matmul_case(0), "tile_matmul_1": tile_matmul_case(1),
             "repeat": program_case(REPEAT_S, 1),
             "sync": program_case(SYNC_S, 2),
             "empty_program": {"program": Program({}), "mem": {}, "read": [("mem0", 0, 1)]}}
    for name, (text, _) in ERRORS.items():
        cases[f"err_{name}"] = {"program": assemble(text, CFG, name), "mem": {}, "read": []}
    for seed in FAST_SEEDS:
        cases[f"rand{seed}"] = _random_case(seed)
    return cases


@pytest.fixture(scope="module")
def fast():
    cases = _fast_cases()
    results = run_cases_rtl("tiny", [dict(c, name=n) for n, c in cases.items()], sim="icarus")
    return cases, dict(zip(cases, results))


def _compare(case, res, cfg=CFG):
    reads = case["read"]
    cycles, mem = _golden(case["program"], case["mem"], reads, cfg)
    assert res["errors"] == [], res
    assert res["done"] and not res["timeout"]
    for (bank, addr, n), got in zip(reads, res["reads"]):
        bad = np.argwhere(got != mem[bank])
        assert len(bad) == 0, f"{bank}[{addr}+{bad[0][0]}] lane {bad[0][1]}: RTL {got[tuple(bad[0])]} " \
                              f"golden {mem[bank][tuple(bad[0])]} ({len(bad)} lanes differ)"
    assert res["cycles"] == cycles
    return cycles


def test_tile_matmul(fast):
    cases, res = fast
    for name in ("tile_matmul", "tile_matmul_1"):
        assert _compare(cases[name], res[name]) == 55


def test_nop_repeat(fast):
    cases, res = fast
    assert _compare(cases["repeat"], res["repeat"]) == 35


def test_sync_notify(fast):
    cases, res = fast
    _compare(cases["sync"], res["sync"])


def test_empty_program(fast):
    _, res = fast
    r = res["empty_program"]
    assert r["done"] and r["cycles"] == 0 and r["errors"] == []


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors_flagged(fast, name):
    cases, res = fast
    text, flag = ERRORS[name]
    with pytest.raises(ProgramError):
        g = Golden(CFG)
        g.load_program(cases[f"err_{name}"]["program"])
        g.run()
    r = res[f"err_{name}"]
    assert r["done"] and not r["running"]
    assert flag in r["errors"], r["errors"]


def test_random_programs(fast):
    cases, res = fast
    failed = []
    for seed in FAST_SEEDS:
        try:
            _compare(cases[f"rand{seed}"], res[f"rand{seed}"])
        except AssertionError as e:
            failed.append(f"seed {seed}: {e}")
    assert not failed, "\n".join(failed)


@pytest.mark.slow
def test_random_programs_slow():
    cases = [_random_case(s) for s in SLOW_SEEDS]
    results = run_cases_rtl("tiny", cases, sim="icarus")
    failed = []
    for seed, c, r in zip(SLOW_SEEDS, cases, results):
        try:
            _compare(c, r)
        except AssertionError as e:
            failed.append(f"seed {seed}: {e}")
    assert not failed, "\n".join(failed)


@pytest.mark.slow
def test_random_programs_install_rows():
    """tiny with mxm.install_rows 4 (LW takes 4 rows per cycle from 4 streams; the scrub program
    installs one row per LW): random programs equal to the golden model in MEM and cycles.  Slow: its
    own chip build (Verilog ~20-60 s, Icarus compile ~20 s) plus ~4 s per case."""
    from tinylpu.firmware.randprog import random_program
    rcs = [random_program(ROWS4, s) for s in ROWS4_SEEDS]
    assert sum(" from 4 streams" in f for rc in rcs for f in rc.flows) >= 6
    cases = [{"program": rc.program, "mem": rc.mem, "read": rc.readback, "name": f"rows4_{rc.seed}"} for rc in rcs]
    results = run_cases_rtl(ROWS4, cases, sim="icarus")
    failed = []
    for seed, c, r in zip(ROWS4_SEEDS, cases, results):
        try:
            _compare(c, r, ROWS4)
        except AssertionError as e:
            failed.append(f"seed {seed}: {e}")
    assert not failed, "\n".join(failed)


@pytest.mark.slow
def test_verilog_cli(tmp_path):
    from tinylpu.cli import main
    out = tmp_path / "chip.v"
    assert main(["verilog", "--config", "tiny", "-o", str(out)]) == 0
    assert "module tinylpu_chip(" in out.read_text()


@pytest.mark.parametrize("config", ["tiny", "fpga", "tiny-rows4", "lpu-mini"])
def test_scrub_program_resets_unit_state(config):
    """The program run before every RTL case is valid and restores the golden power-on state."""
    from tinylpu.sim.rtl.runner import scrub_program
    cfg = ROWS4 if config == "tiny-rows4" else load_config(config)
    prog, host, restore = scrub_program(cfg)
    g = Golden(cfg)
    g.load_program(prog)
    for b, a, v in host:
        g.write_mem(f"mem{b}", a, np.array(v))
    fresh = Golden(cfg)
    state = ("weights", "acc", "lut", "perm", "req_m", "req_sh", "req_z")
    for name in state:
        for arr in getattr(g, name).values():
            arr[...] = 5
    g.run()
    for b, a, v in restore:
        g.write_mem(f"mem{b}", a, np.array(v))
    for name in state:
        for k, arr in getattr(g, name).items():
            assert (arr == getattr(fresh, name)[k]).all(), (name, k)
    for bank, arr in g.mem.items():
        assert (arr == 0).all(), bank
