"""scripts/golden_bytecodes.py: the opcode count behind docs/architecture.md's figures."""

import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "golden_bytecodes", Path(__file__).resolve().parents[2] / "scripts" / "golden_bytecodes.py")
gb = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(gb)


def _per_file(got, n):
    out = {}
    for (f, _, _), v in got.items():
        out[f] = out.get(f, 0) + v / n
    return out


def test_counts_name_the_engines_code():
    """The fast engine's first runs go through the walk (and the static check); the reference's
    through its per-cycle stepper (chip.py), with more bytecodes on the same programs (it spends
    most of its time in numpy calls on small arrays, the walk in bytecodes)."""
    fast, n = gb.count("fast", 3)
    ref, m = gb.count("reference", 3)
    assert n == m == 3
    f, r = _per_file(fast, n), _per_file(ref, m)
    assert f["walk.py"] > 0.5 * sum(f.values()) and "walk.py" not in r
    assert f["check.py"] > 0 and r["check.py"] > 0
    assert r["chip.py"] > sum(f.values())


def test_cli_prints_the_total(capsys):
    assert gb.main(["--programs", "2", "--top", "3", "--lines"]) == 0
    out = capsys.readouterr().out
    assert "bytecodes per program" in out and "walk.py:" in out and "busiest lines:" in out
