"""Post-synthesis simulation (slow tier): random programs on the Yosys gate-level netlist of the
``ice40`` chip under Icarus, through the same cocotb host driver, equal to the golden model in MEM
contents and cycle counts (sim/rtl/postsynth.py; `make test-all`)."""

import numpy as np
import pytest

from tinylpu.config import load_config
from tinylpu.firmware.randprog import random_program
from tinylpu.sim.golden.chip import Golden
from tinylpu.sim.rtl.postsynth import run_netlist

pytestmark = pytest.mark.slow

CONFIG = "ice40"
SEEDS = list(range(1, 9))


def test_gate_level_netlist_equals_golden():
    cfg = load_config(CONFIG)
    cases, golden = [], []
    for seed in SEEDS:
        rc = random_program(cfg, seed)
        g = Golden(cfg)
        mem = {}
        for bank, (addr, v) in rc.mem.items():
            g.write_mem(bank, addr, v)
            mem[bank] = [(addr, v)]
        g.load_program(rc.program)
        r = g.run()
        golden.append((r.cycles, [g.read_mem(b, a, n) for b, a, n in rc.readback]))
        cases.append({"name": f"seed{seed}", "program": rc.program, "mem": mem, "read": rc.readback})
    results = run_netlist(cfg, cases)
    for seed, res, (cycles, reads) in zip(SEEDS, results, golden):
        assert not res["errors"], f"seed {seed}: {res['errors']}"
        assert res["cycles"] == cycles, f"seed {seed}: netlist {res['cycles']} cycles, golden {cycles}"
        for got, want in zip(res["mem"], reads):
            assert np.array_equal(np.asarray(got, np.int8), want), f"seed {seed}: MEM differs"
