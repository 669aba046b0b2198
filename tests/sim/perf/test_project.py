"""The full-scale projection (sim/perf/project/): calibration, consistency, errors, published figures,
the compiled vector work, sensitivity, Pareto and fleet."""

import json
import re
from pathlib import Path

import pytest

from tinylpu.cli import main as cli_main
from tinylpu.sim.perf import project as pj


@pytest.fixture(scope="module")
def cal():
    return pj.calibrate(quick=True)


def test_calibration_fits_the_compiler_exactly(cal):
    # one row per cycle, one cycle per latency cycle and per slice of distance, one per extra token
    assert cal.max_residual < 0.5
    assert cal.a == pytest.approx(1.0, abs=1e-3)
    assert cal.c_lat == pytest.approx(1.0, abs=1e-3) and cal.c_dist == pytest.approx(1.0, abs=1e-3)
    assert cal.c_tok == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("chip", pj.shipped("chips"))
@pytest.mark.parametrize("model", pj.shipped("models"))
def test_every_shipped_pair_projects(chip, model, cal):
    r = pj.project(chip, model, cal=cal)
    assert r["tokens_per_s_per_user"] > 0 and r["chips"] >= 1
    assert r["chips_deployed"] >= r["chips"] and r["chips_deployed"] % 8 == 0
    assert sum(r["breakdown_s"].values()) == pytest.approx(r["time_per_token_s"])
    assert r["chips"] * pj.load_chip(chip)["sram_bytes"] >= r["weight_bytes"] + r["kv_bytes_per_user"]   # they fit
    lo, hi = r["tokens_per_s_per_user_with_host"]
    assert lo <= hi <= r["tokens_per_s_per_user"] * (1 + 1e-12)
    assert r["energy_per_token_j"] == pytest.approx(r["power_w"] * r["time_per_token_s"])


def test_consistency(cal):
    small = pj.project("tsp-v1", "llama-2-7b", cal=cal)
    big = pj.project("tsp-v1", "llama-2-70b", cal=cal)
    assert big["chips"] > small["chips"] and big["tokens_per_s_per_user"] < small["tokens_per_s_per_user"]
    # more context streams more KV and needs at least as many chips
    long = pj.project("tsp-v1", "llama-2-7b", context=8192, cal=cal)
    assert long["time_per_token_s"] > small["time_per_token_s"] and long["chips"] >= small["chips"]
    # MoE streams only the active experts: Mixtral is faster than a dense model of its size would be
    mx = pj.project("tsp-v1", "mixtral-8x7b", cal=cal)
    assert mx["active_params"] < 0.35 * mx["params"]
    assert mx["tokens_per_s_per_user"] > big["tokens_per_s_per_user"]


def test_faster_install_path_is_faster(cal):
    chip = pj.load_chip("tsp-v1")
    slow = dict(chip, weight_install_bytes_per_cycle=chip["lanes"])
    assert pj.project(slow, "llama-2-7b", cal=cal)["tokens_per_s_per_user"] < \
        pj.project(chip, "llama-2-7b", cal=cal)["tokens_per_s_per_user"]


def test_cli_json(capsys):
    assert cli_main(["project", "--chip", "tsp-v1", "--model", "llama-2-7b", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["tokens_per_s_per_user"] > 0 and d["chips"] > 0


def test_unknown_names_list_the_shipped_ones(capsys):
    assert cli_main(["project", "--chip", "nosuch", "--model", "llama-2-7b"]) == 2
    err = capsys.readouterr().err
    assert "unknown chip 'nosuch'" in err and "tsp-v1" in err and "lp30" in err
    assert cli_main(["project", "--chip", "lp30", "--model", "gpt-9"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'gpt-9'" in err and "llama-2-70b" in err


def test_bad_yaml_names_file_and_field(tmp_path):
    text = pj._root().joinpath("chips", "tsp-v1.yaml").read_text()
    bad = tmp_path / "chip.yaml"
    bad.write_text(text.replace("clock_mhz: 900", "clock_mhz: fast"))
    with pytest.raises(pj.ProjectError, match=r"chip.yaml: field 'clock_mhz'"):
        pj.load_chip(bad)
    bad.write_text(text.replace("  link_gbps: 100", "  link_gbps: -1"))
    with pytest.raises(pj.ProjectError, match=r"field 'c2c.link_gbps'"):
        pj.load_chip(bad)
    m = tmp_path / "model.yaml"
    m.write_text("name: x\nlayers: 2\nd_model: 64\nd_ff: 128\nheads: 4\nkv_heads: 3\nvocab: 10\n")
    with pytest.raises(pj.ProjectError, match=r"model.yaml: field 'kv_heads'"):
        pj.load_model(m)
    m.write_text("name: x\nlayers: 2\n")
    with pytest.raises(pj.ProjectError, match=r"field 'd_model': missing"):
        pj.load_model(m)


def test_pareto_and_fleet_meet_targets(cal):
    fr = pj.fleet(cal=cal, steps=20)
    best = fr["best"]
    assert best["meets_targets"] and best["tokens_per_s"] > 0
    for c, op in zip(fr["spec"]["classes"], fr["operating_points"]):
        served = [x for x in (op["afd"], op["gpu"]) if x]
        assert served, c["name"]
        for x in served:
            assert x["tps_user"] >= c["tokens_per_s_per_user"]
    # the best split beats both ends of the curve
    assert best["tokens_per_s"] >= fr["curve"][0]["tokens_per_s"]
    assert best["tokens_per_s"] >= fr["curve"][-1]["tokens_per_s"]
    front = pj.frontier(fr["pareto"]["afd"])
    assert all(a["tps_user"] < b["tps_user"] and a["tps_per_mw"] > b["tps_per_mw"] for a, b in zip(front, front[1:]))


def test_fleet_shares_must_sum_to_one(tmp_path):
    f = tmp_path / "fleet.yaml"
    f.write_text("power_mw: 10\nclasses:\n  - {name: a, share: 0.5, tokens_per_s_per_user: 100}\n")
    with pytest.raises(pj.ProjectError, match="shares sum to 0.5"):
        pj.load_fleet(f)


# --- the published TSP v1 figures -------------------------------------------------------------

@pytest.mark.parametrize("model, published", [("llama-2-7b", 750), ("llama-2-70b", 300), ("mixtral-8x7b", 480)])
def test_tsp_v1_within_25_percent_of_published(model, published, capsys):
    assert cli_main(["project", "--chip", "tsp-v1", "--model", model, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert abs(d["tokens_per_s_per_user"] / published - 1) <= 0.25, d["tokens_per_s_per_user"]
    assert d["vector_cycles_per_layer"] > 0 and d["breakdown_s"]["vector work (compiled)"] > 0
    lo, hi = d["tokens_per_s_per_user_with_host"]           # host overhead: its own range, not in the figure
    assert lo < hi == pytest.approx(d["tokens_per_s_per_user"])


def test_published_deployments_are_the_defaults(cal):
    r = pj.project("tsp-v1", "llama-2-70b", cal=cal)
    assert r["chips"] == 576 and r["context"] == 4096 and r["precision"]["ffn"] == 2
    assert pj.project("tsp-v1", "mixtral-8x7b", cal=cal)["chips"] == 568
    assert r["weight_bytes_per_cycle"] == 10240                # ISCA 2020: 409,600 weights in 40 cycles
    # a deployment that cannot hold its model is refused, naming the field
    with pytest.raises(pj.ProjectError, match=r"deployments.yaml\[1\]: field 'chips': 300 chips"):
        pj.project("tsp-v1", "llama-2-70b", cal=cal, deploy={"chips": 300})
    # inputs move the answer the way physics says
    base = r["tokens_per_s_per_user"]
    assert pj.project("tsp-v1", "llama-2-70b", cal=cal, deploy={"tensor_parallel": 1})["tokens_per_s_per_user"] < base
    int8 = {"attention": 1, "ffn": 1, "kv": 1, "embedding": 1}
    assert pj.project("tsp-v1", "llama-2-70b", cal=cal, deploy={"precision": int8})["tokens_per_s_per_user"] > base
    assert pj.project("tsp-v1", "llama-2-70b", cal=cal, vector=False)["tokens_per_s_per_user"] > base


_READER = re.compile(r"\bpublished\s*\(|published\.yaml")


def test_published_figures_are_read_only_by_the_comparison_report(monkeypatch, cal):
    """configs/project/published.yaml is read by report.compare() and nothing else: no source file
    outside sim/perf/project/{inputs,report}.py names it, and the projection, the Pareto points
    and the fleet run with the reader broken."""
    root = Path(pj.__file__).resolve().parents[3]
    allowed = {root / "sim/perf/project/inputs.py", root / "sim/perf/project/report.py"}
    bad = []
    for folder in ("tinylpu", "sim", "firmware", "hdl"):
        for f in (root / folder).rglob("*.py"):
            if f.resolve() not in allowed and _READER.search(f.read_text(errors="replace")):
                bad.append(str(f.relative_to(root)))
    assert bad == []
    from tinylpu.sim.perf.project import inputs, report

    def boom(*a, **k):
        raise AssertionError("published figures read outside the comparison report")
    monkeypatch.setattr(inputs, "published", boom)
    monkeypatch.setattr(report, "published", boom)
    for chip in pj.shipped("chips"):
        for model in ("llama-2-7b", "llama-2-70b", "mixtral-8x7b"):
            pj.project(chip, model, cal=cal)
    pj.fleet(cal=cal, steps=4)
    with pytest.raises(AssertionError, match="outside the comparison report"):
        report.compare(cal)


# --- the vector work is compiled, not a constant ----------------------------------------------

def test_vector_work_is_compiled_on_the_chip_model():
    from tinylpu.sim.perf.project import vector as vec
    chip = pj.load_chip("tsp-v1")
    m70 = pj.load_model("llama-2-70b")
    c = vec.layer_vector_cycles(chip, m70, (1024, 128, 8), 4096)
    steps = vec.layer_ops(m70, 320, (1024, 128, 8), 4096, chip["vxm_chain"])
    assert c == vec.compile_ops(steps, vec.vector_config(46, chip["latency"]))
    names = " ".join(s[0] for s in steps)
    for op in ("attention norm", "RoPE", "softmax: max", "softmax: exp", "residual add", "FFN norm"):
        assert op in names
    # longer context, slower latencies, a longer MXM-VXM distance, no ALU chaining: more cycles
    assert vec.layer_vector_cycles(chip, m70, (1024, 128, 8), 8192) > c
    assert vec.layer_vector_cycles(dict(chip, latency=dict(chip["latency"], vxm_lut=8)), m70, (1024, 128, 8), 4096) > c
    assert vec.layer_vector_cycles(dict(chip, mxm_to_vxm_slices=60), m70, (1024, 128, 8), 4096) > c
    assert vec.layer_vector_cycles(dict(chip, vxm_chain=1), m70, (1024, 128, 8), 4096) > c
    # an MoE adds the router; a long softmax is extrapolated from two compiled programs, close to compiling it
    mx = pj.load_model("mixtral-8x7b")
    assert "router: top-2 select" in " ".join(s[0] for s in vec.layer_ops(mx, 320, (4096, 1024, 32), 2048, 16))
    full = vec.compile_ops(vec.layer_ops(mx, 320, (4096, 1024, 32), 32768, 16), vec.vector_config(46, chip["latency"]))
    assert vec.layer_vector_cycles(chip, mx, (4096, 1024, 32), 32768) == pytest.approx(full, rel=0.02)


# --- sensitivity, Pareto, the one-command report -------------------------------------------------

def test_sensitivity_ranks_the_inputs(cal):
    rows = pj.compare(cal)
    s = pj.sensitivity(rows, cal)
    assert s["models"] == ["llama-2-7b", "llama-2-70b", "mixtral-8x7b"]
    key = [max(abs(c) for c in e["changes"]) for e in s["rows"]]
    assert len(s["rows"]) >= 8 and all(len(e["values"]) == 3 for e in s["rows"])
    inputs = [e["input"] for e in s["rows"]]
    assert "host overhead at its high end" in inputs and "weight install rate 20,480 B/cycle" in inputs
    import math
    logs = [max(abs(math.log1p(c)) for c in e["changes"]) for e in s["rows"]]
    assert logs == sorted(logs, reverse=True) and key[0] > 0.2


def test_pareto_three_systems(cal):
    pp = pj.pareto(cal=cal)
    assert set(pp["gpu_only"]) == {"gb200-nvl72", "vr-nvl72"} and pp["afd"] and pp["context"] == 400_000
    for pts in list(pp["gpu_only"].values()) + [pp["afd"]]:
        front = pj.frontier(pts)
        assert all(a["tps_user"] < b["tps_user"] and a["tps_per_mw"] > b["tps_per_mw"] for a, b in zip(front, front[1:]))
        assert all(p["gpus"] <= 72 for p in pts)
    # the faster, bigger-memory Rubin rack beats GB200 at some operating point
    best = {k: max(p["tps_per_mw"] for p in v) for k, v in pp["gpu_only"].items()}
    assert best["vr-nvl72"] > best["gb200-nvl72"]


def test_compare_writes_doc_and_plots(tmp_path, cal):
    out = tmp_path / "projection.md"
    text = pj.write_doc(out, cal=cal)
    assert out.read_text() == text
    assert (tmp_path / "projection_pareto.png").stat().st_size > 1000 and (tmp_path / "fleet.png").stat().st_size > 1000
    for needle in ("## Against published figures", "### Sensitivity", "| rank | input |", "## Pareto", "35x",
                   "## Fleet mix", "Best split", "with host overhead"):
        assert needle in text, needle
    assert "${" not in text
