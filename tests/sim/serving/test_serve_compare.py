"""`tinylpu serve-compare --model smollm2-135m` on the model cut to 2 layers (the full model's run
writes docs/serving.md: minutes of golden-model decode, not a test): the same prompts with the FFN
on the GPU model and on the LPU tray, every run's tokens checked against the monolithic integer
model, and the command's section of docs/serving.md replaced without touching the other's."""

import json
import re

import yaml

from tinylpu.cli import main
from tinylpu.sim.serving.cli import _write_section
from tinylpu.sim.serving.serve import default_config


def _cut_config(tmp_path):
    raw = default_config("smollm2")
    raw["model"].update(layers=2, draft_layers=1)
    p = tmp_path / "smollm2-cut.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_serve_compare_model_writes_its_section(tmp_path, capsys):
    reqs = tmp_path / "r.jsonl"
    reqs.write_text("\n".join(json.dumps({"prompt": p, "max_tokens": 3}) for p in
                              ["The capital of France is", "Water boils at"]) + "\n")
    doc = tmp_path / "serving.md"
    doc.write_text("old text without markers\n")
    _write_section(doc, "synthetic", ["## synthetic section", "kept"])
    rc = main(["serve-compare", "--model", "smollm2-135m", "--serving-config", str(_cut_config(tmp_path)),
               "--requests", str(reqs), "-o", str(doc)])
    assert rc == 0
    text = doc.read_text()
    assert "old text without markers" not in text                      # the file is the sections only
    assert text.index("<!-- serve-compare smollm2-135m: begin -->") < text.index(
        "<!-- serve-compare synthetic: begin -->")                      # order: the real model first
    assert "## synthetic section\nkept" in text                         # the other section is kept
    sec = text[text.index("## smollm2-135m"):text.index("<!-- serve-compare smollm2-135m: end -->")]
    assert "Every run produced the tokens of the monolithic integer model: True" in sec
    assert "the runs without speculation produced the same tokens as each other: True" in sec
    rows = [ln for ln in sec.splitlines() if ln.startswith("| GPU")]
    assert len(rows) == 3 * 5                         # five set-ups in three tables
    assert any("LPU tray (lpu-tray, 8 chips, 900 MHz), 2 micro-batches ping-pong" in r for r in rows)
    # the LPU rows of the time split carry chip time; the GPU-only rows none
    split = sec[sec.index("### Where the decode time goes"):sec.index("### Per-token")]
    lpu_row = next(r for r in split.splitlines() if r.startswith("| GPU + LPU tray") and "ping-pong" not in r
                   and "speculative" not in r)
    cells = [c.strip() for c in lpu_row.split("|")[1:-1]]
    assert float(cells[5]) > 0 and float(cells[2]) == 0.0            # LPU chips > 0, GPU FFN 0
    assert "| The capital of France is |" in sec
    # the notes say which programs ran: a layer's batch of 2 is one call of its 2-token program, the
    # ping-pong micro-batches of 1 run the 1-token program (lpu.batch_tokens [1, 2, 4, 8])
    assert "Each layer is compiled for 1, 2, 4, 8 token(s) (`lpu.batch_tokens`)" in sec
    assert re.search(r"1 tokens: [\d,]+ calls of [\d,]+ cycles, 2 tokens: [\d,]+ calls of [\d,]+ cycles \(", sec)
    # run again: the section is replaced, not appended
    _write_section(doc, "smollm2-135m", ["## smollm2-135m again"])
    text = doc.read_text()
    assert text.count("serve-compare smollm2-135m: begin") == 1 and "## smollm2-135m again" in text
    assert "## synthetic section\nkept" in text
