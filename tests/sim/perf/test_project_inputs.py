"""The projection's inputs (chips, models, fleet, Pareto settings, published figures) go through
tinylpu.schema: one-line mutations of the shipped files are refused naming file, field and line,
or give a valid input that projects."""

import math
import re
import subprocess
import sys

import pytest

from tests.yaml_mutations import KINDS, mutations, value_lines
from tinylpu.cli import main
from tinylpu.schema import SchemaError
from tinylpu.sim.perf import project as pj
from tinylpu.sim.perf.project.model import Calibration

CAL = Calibration(a=1.0, c0=5.0, c_lat=1.0, c_dist=1.0, c_tok=1.0, points=(), max_residual=0.0)   # no compiling

_NAMES = {("name", "banana"), ("name", "1e30"), ("description", "banana"), ("description", "1e30")}
_CHIP_OK = _NAMES | {("mxm_to_vxm_slices", "0"), ("pipeline_latency_cycles", "0"), ("c2c.hop_latency_ns", "0"),
                     ("c2c.hops_within_node", "0"), ("c2c.hops_across_nodes", "0"), ("power_w", "0"),
                     ("power_w", "null")}
FILES = {  # file -> (loader, accepted mutations, {(field, kind): (field named instead, its line)})
    "chips/tsp-v1.yaml": (pj.load_chip, _CHIP_OK | {("weight_rows_per_cycle", "null"),
                                                    ("weight_install_bytes_per_cycle", "null"),
                                                    ("nodes_per_rack", "null")},
                          {("mem_slices", "null"): "sram_bandwidth"}),
    "chips/lp30.yaml": (pj.load_chip, _CHIP_OK | {("nodes_per_rack", "null")}, {}),
    "models/llama-2-7b.yaml": (pj.load_model, _NAMES | {("context", "0")}, {}),
    "models/mixtral-8x7b.yaml": (pj.load_model, _NAMES | {("context", "0")}, {}),
    "models/moe-2t.yaml": (pj.load_model, _NAMES | {("context", "0")}, {}),
    "fleet.yaml": (pj.load_fleet, {("context", "0"), ("context", "null")}, {}),
    "pareto.yaml": (pj.pareto_config, {("net_hop_s", "0"), ("context", "0")}, {}),
    "gpus/gb200-nvl72.yaml": (pj.load_gpu, _NAMES | {("collective_latency_s", "0"), ("kernel_overhead_s", "0"),
                                                    ("kernels_per_layer", "0")}, {}),
    "gpus/vr-nvl72.yaml": (pj.load_gpu, _NAMES | {("collective_latency_s", "0"), ("kernel_overhead_s", "0"),
                                                 ("kernels_per_layer", "0")}, {}),
}


def _text(rel):
    return pj._root().joinpath(rel).read_text()


def _ln(text, needle):
    """The line number of the first line of `text` containing `needle`."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def _line_of(msg):
    m = re.search(r"\(line (\d+)\)", msg)
    return int(m.group(1)) if m else None


@pytest.mark.parametrize("rel", list(FILES))
def test_one_line_mutations(tmp_path, rel):
    loader, ok, instead = FILES[rel]
    text = _text(rel)
    f = tmp_path / "m.yaml"
    bad, n = [], 0
    for line, field, kind, t in mutations(text, KINDS):
        n += 1
        f.write_text(t)
        try:
            got = loader(f)
        except pj.ProjectError as e:
            msg = str(e)
            named = instead.get((field, kind), field)
            want_line = line if named == field else next(ln for ln, fl, _ in value_lines(text) if fl == named)
            if not (msg.startswith(f"{f}: field '{named}") and _line_of(msg) == want_line and e.line == want_line):
                bad.append(f"line {line} {field} = {kind}: {msg}")
            continue
        if (field, kind) not in ok:
            bad.append(f"line {line} {field} = {kind}: accepted")
        elif rel.startswith("chips/"):          # an accepted input must project
            r = pj.project(got, "llama-2-7b", cal=CAL)
            assert math.isfinite(r["tokens_per_s_per_user"]) and r["tokens_per_s_per_user"] > 0
        elif rel.startswith("models/"):
            r = pj.project("tsp-v1", got, cal=CAL)
            assert math.isfinite(r["tokens_per_s_per_user"]) and r["tokens_per_s_per_user"] > 0
    assert bad == [] and n >= 40


@pytest.mark.parametrize("old, new, field, msg", [
    ("tokens_per_s_per_user: 750", "tokens_per_s_per_user: -1", "[0].tokens_per_s_per_user", "must be in (0, 1e+09]"),
    ("tokens_per_s_per_user: 300", "tokens_per_s_per_user: .nan", "[1].tokens_per_s_per_user", "finite number"),
    ("chip: tsp-v1, model: llama-2-7b", "chip: tsp-v9, model: llama-2-7b", "[0].chip", "unknown chip 'tsp-v9'"),
    ("at_least: true", "at_least: 1", "[3].at_least", "must be true or false, got 1"),
    ("source: \"TechPowerUp", "colour: 1, source: \"TechPowerUp", "[0].colour", "unknown field; allowed fields are at_least"),
])
def test_published_mutations(tmp_path, old, new, field, msg):
    text = _text("published.yaml")
    assert old in text
    f = tmp_path / "p.yaml"
    f.write_text(text.replace(old, new, 1))
    with pytest.raises(pj.ProjectError) as ei:
        pj.published(f)
    assert ei.value.field == field and msg in str(ei.value) and str(ei.value).startswith(f"{f}: field '{field}' (line ")
    assert pj.published() == pj.published(pj._root().joinpath("published.yaml"))


@pytest.mark.parametrize("old, new, field, msg", [
    ("share: 0.10", "share: 1.5", "classes[0].share", "must be in [0, 1], got 1.5"),
    ("share: 0.10", "share: 0.20", "classes", "shares sum to 1.1, not 1"),
    ("tokens_per_s_per_user: 50}", "tokens_per_s_per_user: 0}", "classes[2].tokens_per_s_per_user", "(0, 1e+09]"),
    ("name: premium", "name: agentic", "classes[1].name", "class 'agentic' appears twice"),
    ("model: moe-2t", "model: gpt-9", "model", "unknown model 'gpt-9'"),
    ("chip: lp30", "chip: [lp30]", "chip", "must be a chip name or a .yaml path, got [lp30]"),
    ("power_mw: 100", "power_mw: 0", "power_mw", "must be in (0, 1e+06], got 0"),
])
def test_fleet_mutations(tmp_path, old, new, field, msg):
    text = _text("fleet.yaml")
    assert old in text
    f = tmp_path / "fleet.yaml"
    f.write_text(text.replace(old, new, 1))
    with pytest.raises(pj.ProjectError) as ei:
        pj.load_fleet(f)
    assert ei.value.field == field and msg in str(ei.value), str(ei.value)
    assert ei.value.line is not None and f"(line {ei.value.line})" in str(ei.value)


def test_cross_field_rules(tmp_path):
    chip, model = tmp_path / "chip.yaml", tmp_path / "model.yaml"
    cases = [
        (chip, pj.load_chip, "chips/tsp-v1.yaml", "links_per_peer: 1\n", "links_per_peer: 17\n",
         "c2c.links_per_peer", "17 is more than the chip's 16 links"),
        (chip, pj.load_chip, "chips/lp30.yaml", "sram_bandwidth: 150.0e+12", "sram_bandwidth: null",
         "sram_bandwidth", "give it, or 'mem_slices' to derive it"),
        (model, pj.load_model, "models/mixtral-8x7b.yaml", "top_k: 2", "top_k: 9", "top_k",
         "9 is more than the 8 experts"),
        (model, pj.load_model, "models/llama-2-7b.yaml", "kv_heads: 32", "kv_heads: 5", "kv_heads",
         "5 does not divide heads 32"),
        (model, pj.load_model, "models/llama-2-7b.yaml", "d_model: 4096", "d_model: 4001", "heads",
         "32 does not divide d_model 4001"),
        (model, pj.load_model, "models/llama-2-7b.yaml", "vocab: 32000", "vocab: 32000\ngated: yes please", "gated",
         "must be true or false, got 'yes please'"),
    ]
    for f, loader, rel, old, new, field, msg in cases:
        text = _text(rel).replace(old, new, 1)
        f.write_text(text)
        with pytest.raises(pj.ProjectError) as ei:
            loader(f)
        line = _ln(text, field.split(".")[-1] + ":")
        assert str(ei.value) == f"{f}: field '{field}' (line {line}): {msg}"


def test_errors_are_schema_errors_and_shipped_files_load():
    assert issubclass(pj.ProjectError, SchemaError) and issubclass(pj.ProjectError, ValueError)
    for kind in ("chips", "models"):
        for name in pj.shipped(kind):
            d = (pj.load_chip if kind == "chips" else pj.load_model)(name)
            assert d["source"] == f"configs/project/{kind}/{name}.yaml"
    assert pj.load_chip("tsp-v1")["sram_bandwidth"] == 88 * 320 * 900e6
    assert [c["name"] for c in pj.load_fleet()["classes"]] == ["agentic", "premium", "throughput"]
    assert pj.pareto_config()["batches"][0] == 1 and len(pj.published()) == 4


def test_cli_exit_2_in_process(tmp_path, capsys):
    m = tmp_path / "model.yaml"
    text = _text("models/llama-2-7b.yaml").replace("vocab: 32000", "vocab: 1.0e+30")
    m.write_text(text)
    assert main(["project", "--chip", "tsp-v1", "--model", str(m)]) == 2
    assert capsys.readouterr().err == (f"tinylpu: error: {m}: field 'vocab' (line {_ln(text, 'vocab:')}): must be an "
                                       "integer in [1, 100000000], got 1e+30\n")
    assert main(["project", "--chip", "tsp-v1", "--model", "llama-2-7b", "--context", "-1"]) == 2
    assert "--context -1: must be in [0, 1000000000]" in capsys.readouterr().err


def test_cli_subprocess_no_traceback(tmp_path):
    c = tmp_path / "chip.yaml"
    text = _text("chips/lp30.yaml").replace("clock_mhz: 1465\n", "clock_mhz: banana\n")
    c.write_text(text)
    p = subprocess.run([sys.executable, "-m", "tinylpu.cli", "project", "--chip", str(c), "--model", "llama-2-7b"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
    assert p.stderr == (f"tinylpu: error: {c}: field 'clock_mhz' (line {_ln(text, 'clock_mhz:')}): must be a number "
                        "in [1, 100000], got 'banana'\n")


# --- sources: every number has one -------------------------------------------------------------

@pytest.mark.parametrize("rel, loader", [("chips/tsp-v1.yaml", pj.load_chip), ("chips/lp30.yaml", pj.load_chip),
                                         ("models/llama-2-70b.yaml", pj.load_model),
                                         ("gpus/gb200-nvl72.yaml", pj.load_gpu), ("pareto.yaml", pj.pareto_config)])
def test_every_number_has_a_source(tmp_path, rel, loader):
    text = _text(rel)
    f = tmp_path / "x.yaml"
    # drop one source line: the field it covered is refused, named with its line
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("sources:"))
    j = next(n for n in range(i + 1, len(lines)) if lines[n].strip() and not lines[n].strip().startswith("default"))
    field = lines[j].split(":")[0].strip()
    f.write_text("\n".join(lines[:j] + lines[j + 1:]) + "\n")
    if "  default:" not in text:                 # without a file-wide default the field has no source left
        with pytest.raises(pj.ProjectError, match=rf"field '{re.escape(field)}.*has no source"):
            loader(f)
    # a source that names nothing, and a source with no year, 'derived' or 'assumption'
    f.write_text(text.replace("sources:\n", "sources:\n  no_such_field: \"assumption: x\"\n", 1))
    with pytest.raises(pj.ProjectError, match=r"field 'sources.no_such_field'.*names no field"):
        loader(f)
    f.write_text(re.sub(r'(?m)^(  default: ).*$', r'\1"a blog"', text, count=1) if "  default:" in text
                 else text.replace("sources:\n", "sources:\n  default: \"a blog\"\n", 1))
    with pytest.raises(pj.ProjectError, match=r"must be a source"):
        loader(f)


def test_shipped_sources_cover_every_number():
    for kind, loader in (("chips", pj.load_chip), ("models", pj.load_model), ("gpus", pj.load_gpu)):
        for name in pj.shipped(kind):
            d = loader(name)
            for path, v in _numbers(d):
                src = pj.source_of(d["sources"], path)
                assert src and re.search(r"assumption|derived|(19|20)\d\d", src), (kind, name, path)
    for r in pj.load_deployments():
        for path, v in _numbers(r):
            assert pj.source_of(r["sources"], path), (r["chip"], r["model"], path)
    assert pj.source_of(pj.load_chip("tsp-v1")["sources"], "weight_install_bytes_per_cycle").startswith("ISCA 2020")
    assert "722 ns" in pj.source_of(pj.load_chip("tsp-v1")["sources"], "c2c.hop_latency_ns")


def _numbers(d, prefix=()):
    for k, v in d.items():
        if k in ("sources", "source"):
            continue
        if isinstance(v, dict):
            yield from _numbers(v, prefix + (k,))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield prefix + (k,), v


@pytest.mark.parametrize("old, new, field, msg", [
    ("  chips: 576", "  chips: -576", "[1].chips", "must be in [1, 10000000], got -576"),
    ("  context: 4096", "  context: banana", "[1].context", "must be an integer"),
    ("{attention: 1, ffn: 2", "{attention: 0, ffn: 2", "[1].precision.attention", "must be in [0.125, 8], got 0"),
    ("  model: llama-2-70b", "  model: llama-2-7b", "[1].model", "a second deployment of llama-2-7b on tsp-v1"),
    ("  model: mixtral-8x7b", "  model: gpt-9", "[2].model", "unknown model 'gpt-9'"),
    ("  tensor_parallel: null\n  expert_parallel: null\n  sources:\n    chips: \"Groq at SC23",
     "  tensor_parallel: 0\n  expert_parallel: null\n  sources:\n    chips: \"Groq at SC23",
     "[1].tensor_parallel", "must be in [1, 1000000], got 0"),
    ("    context: \"TechPowerUp 2024 (Groq LPU article): a 4096", "    context: \"a blog post: a 4096",
     "[1].sources.context", "must be a source"),
    ("    chips: \"Hacker News", "    chipz: \"Hacker News", "[2].sources.chipz", "names no field"),
])
def test_deployment_mutations(tmp_path, old, new, field, msg):
    text = _text("deployments.yaml")
    assert old in text, old
    f = tmp_path / "d.yaml"
    f.write_text(text.replace(old, new, 1))
    with pytest.raises(pj.ProjectError) as ei:
        pj.load_deployments(f)
    assert ei.value.field == field and msg in str(ei.value), str(ei.value)
    assert str(ei.value).startswith(f"{f}: field '{field}' (line ")
