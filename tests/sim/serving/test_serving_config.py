"""The serving and GPU configs go through tinylpu.schema: every one-line mutation of the shipped
files is refused with FILE:LINE: field '...' (or is a valid config that runs), and the CLI turns a
refused file into exit status 2 and one error line, without a traceback."""

import re
import subprocess
import sys
from importlib import resources

import pytest

from tests.yaml_mutations import KINDS, mutate, mutations, value_lines
from tinylpu.cli import main
from tinylpu.schema import SchemaError
from tinylpu.sim.serving.gpu import load_gpu
from tinylpu.sim.serving.model import ModelConfig, load_serving_config
from tinylpu.sim.serving.serve import default_config, run_serving, synthetic_requests

SERVING = resources.files("tinylpu.configs").joinpath("serving/serving.yaml").read_text()
GPU = resources.files("tinylpu.configs").joinpath("serving/gpu_rubin.yaml").read_text()

# one-line mutations that give a valid config (each is run below)
SERVING_OK = {("model.seed", "0"), ("model.attn_gain", "0"), ("lpu.net_hop_s", "0"), ("lpu.power_w", "0"),
              ("dynamo.overlap_weight", "0"), ("dynamo.kv_transfer_latency_s", "0"), ("synthetic.prefix_len", "0"),
              ("synthetic.interarrival_s", "0"), ("synthetic.seed", "0")}
GPU_OK = {("name", "banana"), ("name", "1e30"), ("description", "banana"), ("description", "1e30"),
          ("launch_overhead_s", "0"), ("power_w", "null")}
SMALL = {"model.d_model": 32, "model.d_ff": 32, "model.experts": 4, "model.heads": 2, "lpu.chips": 4,
         "lpu.chip_config": "tiny", "lpu.tokens_per_call": 4, "model.calib_sequences": 2, "model.max_seq": 64}


def _refusals(text, loader, ok, tmp_path, kind):
    """Apply every mutation of `kind`; returns the problems (empty when all behave)."""
    bad, f = [], tmp_path / "m.yaml"
    for line, field, k, t in mutations(text, (kind,)):
        f.write_text(t)
        try:
            loader(str(f))
        except SchemaError as e:
            msg = str(e)
            if not (msg.startswith(f"{f}:{line}: field '{field}") and "\n" not in msg):
                bad.append(f"line {line} {field} = {k}: {msg}")
            continue
        if (field, k) not in ok:
            bad.append(f"line {line} {field} = {k}: accepted")
    return bad


@pytest.mark.parametrize("kind", KINDS)
def test_serving_mutations_name_file_line_and_field(tmp_path, kind):
    assert _refusals(SERVING, load_serving_config, SERVING_OK, tmp_path, kind) == []


@pytest.mark.parametrize("kind", KINDS)
def test_gpu_mutations_name_file_line_and_field(tmp_path, kind):
    assert _refusals(GPU, load_gpu, GPU_OK, tmp_path, kind) == []


def test_mutations_cover_every_section():
    fields = {f for _, f, _ in value_lines(SERVING)}
    assert {f.split(".")[0] for f in fields} == {"model", "lpu", "draft", "dynamo", "classes", "synthetic"}
    assert len(mutations(SERVING)) > 350 and len(mutations(GPU)) > 140


def test_shipped_files_load_unchanged():
    import yaml
    assert load_serving_config() == yaml.safe_load(SERVING)
    assert load_gpu().p == yaml.safe_load(GPU)


def test_accepted_mutations_run(tmp_path):
    """Every accepted one-line mutation at once (on a small model): the serving run completes."""
    text = SERVING
    for line, field, _ in value_lines(SERVING):
        if (field, "0") in SERVING_OK:
            text = mutate(text, line, "0")
    f = tmp_path / "s.yaml"
    f.write_text(text)
    scfg = default_config(str(f), **SMALL)
    reqs = synthetic_requests(2, ModelConfig.from_dict(scfg["model"]), scfg["synthetic"])
    rep = run_serving(reqs, scfg, "lpu", "golden", reference=True)
    assert rep["totals"]["reference_identical"] and rep["totals"]["tokens"] > 0
    g = tmp_path / "g.yaml"
    g.write_text(GPU.replace("launch_overhead_s: 2.0e-6", "launch_overhead_s: 0").replace("power_w: 1800",
                                                                                          "power_w: null"))
    gpu = load_gpu(str(g))
    assert gpu.p["power_w"] is None and 0 < gpu.kernel(1e9, 1e6) < 1


@pytest.mark.parametrize("old, new, field, msg", [
    ("top_k: 2", "top_k: 9", "model.top_k", "9 is more than the 8 experts"),
    ("heads: 4", "heads: 3", "model.heads", "3 does not divide d_model 64"),
    ("calib_len: 24", "calib_len: 300", "model.calib_len", "300 is more than max_seq 256"),
    ("chips: null", "chips: 4", "lpu.chips", "lpu.chip_config 'tray' is a tray of 8 chips"),
    ("chip_config: tray", "chip_config: ice40", "lpu.chip_config", "needs an MXM, a VXM and at least 4 MEM banks"),
    ("chip_config: tray", "chip_config: nosuch", "lpu.chip_config", "no such config"),
    ("max_batch: 16", "max_batch: 0", "dynamo.max_batch", "must be in [1, 4096], got 0"),
    ("pingpong: true", "pingpong: 1", "dynamo.pingpong", "must be true or false, got 1"),
    ("suffix_len: [4, 12]", "suffix_len: [12, 4]", "synthetic.suffix_len", "low <= high"),
    ("suffix_len: [4, 12]", "suffix_len: [4]", "synthetic.suffix_len", "has 1 entry; allowed exactly 2"),
    ("max_tokens: [8, 16]", "max_tokens: [8, 250]", "synthetic.max_tokens", "more than model.max_seq 256"),
    ("  interactive: {ttft_s: 1.0e-4, tpot_s: 1.0e-4}\n", "", "classes", "needs a class named 'interactive'"),
    ("tpot_s: 1.0e-3}", "tpot_s: 1.0e-3, p99: 1}", "classes.batch.p99", "unknown field; allowed fields are"),
    ("  seed: 7", "  seed: 7\n  colour: 1", "synthetic.colour", "allowed fields are interarrival_s, max_tokens"),
    ("  block_size: 8", "  block_size: 8\n  block_size: 8", "dynamo.block_size", "given twice"),
])
def test_cross_field_rules(tmp_path, old, new, field, msg):
    assert old in SERVING
    f = tmp_path / "s.yaml"
    f.write_text(SERVING.replace(old, new, 1))
    with pytest.raises(SchemaError) as ei:
        load_serving_config(str(f))
    e = ei.value
    assert e.field == field and msg in str(e) and str(e).startswith(f"{f}:{e.line}: field '{field}'")
    assert e.source == str(f) and e.line >= 1


def test_cli_refuses_bad_files_in_process(tmp_path, capsys):
    f = tmp_path / "s.yaml"
    f.write_text(SERVING.replace("experts: 8", "experts: -1"))
    assert main(["serve", "--synthetic", "1", "--engine", "golden", "--serving-config", str(f)]) == 2
    line = next(i for i, ln in enumerate(SERVING.splitlines(), 1) if ln.strip().startswith("experts:"))
    assert capsys.readouterr().err == f"tinylpu: error: {f}:{line}: field 'model.experts': must be in [1, 1024], got -1\n"
    assert main(["serve", "--synthetic", "1", "--serving-config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: file not found" in capsys.readouterr().err
    g = tmp_path / "g.yaml"
    g.write_text(GPU.replace("hbm_bandwidth: 22.0e+12", "hbm_bandwidth: 22e12"))
    assert main(["serve", "--synthetic", "1", "--gpu-config", str(g)]) == 2
    err = capsys.readouterr().err
    assert f"{g}:14: field 'hbm_bandwidth': must be a number in (0, 1e+16], got '22e12'" in err


@pytest.mark.parametrize("flag, field", [
    (["--speculate", "-1"], "dynamo.speculate"),
    (["--decode-workers", "0"], "dynamo.decode_workers"),
    (["--lpu-clock-mhz", "nan"], "lpu.clock_mhz"),
])
def test_cli_checks_command_line_values(capsys, flag, field):
    assert main(["serve", "--synthetic", "1", "--engine", "golden", *flag]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinylpu: error: configs/serving/serving.yaml with the command-line options: "
                          f"field '{field}'") and err.count("\n") == 1


@pytest.mark.parametrize("old, new, field", [
    ("max_batch: 16 ", "max_batch: banana ", "dynamo.max_batch"),
    ("d_model: 64", "d_model: null", "model.d_model"),
    ("net_bandwidth: 100.0e+9", "net_bandwidth: 1e30", "lpu.net_bandwidth"),
])
def test_cli_subprocess_exit_2_one_line_no_traceback(tmp_path, old, new, field):
    assert old in SERVING
    f = tmp_path / "s.yaml"
    f.write_text(SERVING.replace(old, new, 1))
    line = next(n for n, ln in enumerate(SERVING.splitlines(), 1) if old.strip() in ln)
    p = subprocess.run([sys.executable, "-m", "tinylpu.cli", "serve", "--synthetic", "1", "--engine", "golden",
                        "--serving-config", str(f)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1
    assert re.match(rf"tinylpu: error: {re.escape(str(f))}:{line}: field '{field}': ", p.stderr)
