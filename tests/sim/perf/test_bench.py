"""The benchmark suite's fast parts (no timing assertions): `bench all` is wired into the CLI,
the HALT-first variant loads the same programs and runs nothing, and the golden-chip
determinism record is identical across reruns with random data."""

import numpy as np

from tinylpu.cli import build_parser
from tinylpu.config import load_config
from tinylpu.sim.perf import bench


def test_bench_all_is_a_choice():
    args = build_parser().parse_args(["bench", "all", "-o", "x.md"])
    assert args.what == "all" and args.output == "x.md"
    for what in ("golden", "compiler", "sims", "tray"):       # the existing subcommands are unchanged
        assert build_parser().parse_args(["bench", what]).what == what


def test_halted_variant_runs_nothing_on_the_golden_tray():
    from tinylpu.sim.golden.tray import run_tray_golden
    cfg = load_config("duo")
    q, tc, xq = bench._tray_workload(cfg, 0, dm=32, dff=64, tokens=2)
    h = bench._halted(tc)
    for a, b in zip(tc.chips, h.chips):
        assert len(b.program) == len(a.program) + len(a.program.queues)
    _, r = run_tray_golden(h, [xq] * cfg.chips)
    assert r.cycles == [1] * cfg.chips
    _, r = run_tray_golden(tc, [xq] * cfg.chips)
    assert r.cycles == tc.predicted_cycles


def test_golden_chip_determinism_record():
    det, pred = bench.bench_determinism_chip("tiny", reruns=3)
    assert [d["cycles"] for d in det] == [[pred]] * 3
    assert all(d["bit_exact"] for d in det)


def test_tray_workload_data_differs_per_seed_program_does_not():
    cfg = load_config("duo")
    _, tc0, x0 = bench._tray_workload(cfg, 0, dm=32, dff=64, tokens=2)
    _, tc1, x1 = bench._tray_workload(cfg, 1, dm=32, dff=64, tokens=2)
    assert not np.array_equal(x0, x1)
    assert tc0.predicted_cycles == tc1.predicted_cycles
    assert [c.program.to_bytes() for c in tc0.chips] == [c.program.to_bytes() for c in tc1.chips]


def test_golden_parts_table():
    """`bench golden`'s breakdown of a random program's job: one row per engine, every part timed,
    the job column their sum (the figures themselves are measured, not asserted)."""
    parts = bench.bench_golden_parts("tiny", 1)
    assert [p["engine"] for p in parts] == [e[0] for e in bench._golden_engines()]
    assert all(p[k] > 0 for p in parts for k in bench._PARTS)
    rows = bench._parts_rows(parts)
    assert len(rows) == 2 + len(parts)
    for p, row in zip(parts, rows[2:]):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == p["engine"]
        assert abs(float(cells[-1]) - sum(float(c) for c in cells[1:-1])) < 0.3
