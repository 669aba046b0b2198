"""The full-scale projection (sim/project.py): calibration, consistency, errors, Pareto and fleet."""

import json

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
    usable = pj.load_chip(chip)["sram_usable"] * pj.load_chip(chip)["sram_bytes"]
    assert r["chips"] * usable >= r["weight_bytes"]          # the weights fit
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
    slow = dict(chip, weight_rows_per_cycle=1)
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
    bad.write_text(text.replace("  link_gbps: 120", "  link_gbps: -1"))
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
