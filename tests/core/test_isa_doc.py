"""docs/isa.md is generated from the ISA module (`make docs`); it must be what the generator writes
today, so the reference never drifts from the encodings."""

from pathlib import Path

from tinylpu.config import DEFAULT_CONFIG, load_config
from tinylpu.firmware.isadoc import render_isa_doc
from tinylpu.isa import BINARY_OPS, OPS, Opcode, latency_key

ROOT = Path(__file__).resolve().parents[2]


def test_docs_isa_md_is_current():
    want = render_isa_doc(load_config(DEFAULT_CONFIG))
    have = (ROOT / "docs" / "isa.md").read_text()
    assert have == want, "docs/isa.md is stale: run `make docs`"


def test_every_opcode_is_documented():
    text = (ROOT / "docs" / "isa.md").read_text()
    for op in Opcode:
        assert f"`{op.name}" in text or f"| {op.name}" in text or op.name in text, op.name


def test_derived_op_classes():
    """Facts derived from the OPS table, not typed again: the ops with an int8 operand b that may be
    an immediate, and the latency key of every op that has one."""
    assert {o.name for o in BINARY_OPS} == {"ADD", "SUB", "MUL", "MIN", "MAX", "AND", "OR", "XOR"}
    cfg = load_config(DEFAULT_CONFIG)
    for op, info in OPS.items():
        if info.latency is not None:
            assert latency_key(op) in cfg.latency, op
    assert latency_key(Opcode.MUL) == "vxm_mul" and latency_key(Opcode.REQL) == "vxm_req"
