"""The host API (async Chip/Tray, golden vs RTL) and the serving model (tokens, routing, ping-pong,
speculative decoding, CLI contract)."""

import json

import numpy as np
import pytest

from tinylpu.cli import main
from tinylpu.config import load_config
from tinylpu.firmware.compiler import compile_moe
from tinylpu.sim.host.api import EngineError, Tray, drive, run_in_simulation
from tinylpu.sim.serving.model import ModelConfig, MoEModel, reference_generate
from tinylpu.sim.serving.serve import (
    PrefillRouter,
    Request,
    default_config,
    pingpong_schedule,
    run_serving,
    synthetic_requests,
)

SMALL = {"model.d_model": 32, "model.d_ff": 32, "model.experts": 4, "model.heads": 2, "lpu.chips": 4,
         "lpu.chip_config": "tiny", "lpu.tokens_per_call": 4, "model.calib_sequences": 4, "model.max_seq": 64}
DUO = {"lpu.chip_config": "duo", "lpu.chips": None}     # the 2-chip RTL tray (hdl/tray.py)


def small_cfg(**extra):
    return default_config(**{**SMALL, **extra})


def duo_cfg(**extra):
    return small_cfg(**{**DUO, **extra})


def small_requests():
    return [Request("a", [1, 2, 3, 4, 5], 3), Request("b", [1, 2, 3, 4, 9], 3, "batch", 1e-6)]


# --- host API ----------------------------------------------------------------------------------

def _tray_job_build(config="tiny"):
    scfg = small_cfg()
    m = MoEModel.build(ModelConfig.from_dict(scfg["model"]))
    cfg = load_config(config)
    per = [compile_moe([m.q[0][0], m.q[1][0]], cfg, 4), compile_moe([m.q[0][1], m.q[1][1]], cfg, 4)]
    rng = np.random.default_rng(3)
    xs = [rng.integers(-128, 128, size=(k, 32)).astype(np.int8) for k in (1, 4, 2, 3)]
    return m, per, xs


async def _tray_job(tray, config="tiny"):
    """Four calls one by one, then the same four as one parallel tray step."""
    m, per, xs = _tray_job_build(config)
    await tray.load(per)
    out = []
    for i, xq in enumerate(xs):
        o = await tray.run(i % 2, xq, expert=i // 2 % 2)
        out.append({"y": o.y.tolist(), "cycles": o.cycles})
    step = await tray.run_parallel([(i % 2, i // 2 % 2, xq) for i, xq in enumerate(xs)])
    out.append({"parallel": [{"y": o.y.tolist(), "cycles": o.cycles} for o in step.outputs],
                "per_chip": {str(k): v for k, v in step.per_chip_cycles.items()}, "cycles": step.cycles})
    return out


async def tray_job_rtl(dut, config="tiny", backdoor_vectors=None, backdoor_words=None):
    from tinylpu.sim.host.engine import RtlPort
    if backdoor_vectors is not None:         # images above this many vectors go in through the backdoor
        RtlPort.BACKDOOR_VECTORS = backdoor_vectors
    if backdoor_words is not None:           # queues above this many words: their middle too
        RtlPort.BACKDOOR_WORDS = backdoor_words
    tray = Tray(2 if config == "tiny" else None, config, "rtl", dut=dut)
    out = await _tray_job(tray, config)
    out.append(tray.stats)
    return out


def test_golden_tray_matches_run_int_and_prediction():
    m, per, xs = _tray_job_build()
    got = drive(_tray_job(Tray(2, "tiny", "golden")))
    for i, (xq, g) in enumerate(zip(xs, got)):
        chip, e = i % 2, i // 2 % 2
        assert np.array_equal(np.asarray(g["y"], np.int8), per[chip][e].q.run_int(xq))
        assert g["cycles"] == per[chip][e].predicted_cycles
    par = got[-1]
    assert par["parallel"] == got[:4]                    # a tray step gives the same answers
    c = [g["cycles"] for g in got[:4]]
    assert par["per_chip"] == {"0": c[0] + c[2], "1": c[1] + c[3]} and par["cycles"] == max(c[0] + c[2], c[1] + c[3])


def test_tray_config_fixes_the_chip_count():
    assert len(Tray(None, "duo", "golden")) == 2 and len(Tray(None, "tiny", "golden")) == 8
    with pytest.raises(EngineError, match="duo is a tray of 2 chips, not 4"):
        Tray(4, "duo", "golden")
    with pytest.raises(ValueError, match="lpu.chips is 4 but lpu.chip_config 'duo' is a tray of 2 chips"):
        run_serving(small_requests()[:1], duo_cfg(**{"lpu.chips": 4}), "lpu", "golden")


def test_host_api_errors():
    t = Tray(2, "tiny", "golden")
    with pytest.raises(EngineError, match="no program loaded"):
        drive(t.run(0, np.zeros((1, 32), np.int8)))
    _, per, _ = _tray_job_build()
    drive(t.load(per))
    with pytest.raises(EngineError, match="expert 5 is not resident"):
        drive(t.run(0, np.zeros((1, 32), np.int8), expert=5))
    with pytest.raises(EngineError, match="input shape"):
        drive(t.run(0, np.zeros((9, 32), np.int8)))


@pytest.mark.slow      # the RTL duo tray's Verilog (the fast tier serves on a time-shared RTL chip through the same API)
def test_rtl_duo_tray_in_one_simulation_equals_golden():
    """The host job on the 2-chip tray's Verilog: each chip its own host port, clock and weights."""
    golden = drive(_tray_job(Tray(None, "duo", "golden"), "duo"))
    rtl = run_in_simulation(f"{__name__}:tray_job_rtl", {"config": "duo"}, config="duo")
    stats = rtl.pop()
    assert rtl == golden
    assert stats["rtl_tray"] is True and stats["dut_reloads"] == 2      # weights written once per chip


def test_rtl_time_shared_chip_in_one_simulation_equals_golden():
    """One simulated chip stands in for both; every image is written through the simulator's bank
    handles and every queue's middle through its queue handle (the backdoors that big images and
    programs take, forced here), the images checked by host-port reads, the queues by the runs."""
    golden = drive(_tray_job(Tray(2, "tiny", "golden")))
    rtl = run_in_simulation(f"{__name__}:tray_job_rtl", {"backdoor_vectors": 0, "backdoor_words": 0})
    stats = rtl.pop()
    assert rtl == golden and stats["shared_dut"] is True
    assert stats["dut_reloads"] >= 2 and stats["backdoor_vectors"] > 0 and stats["backdoor_words"] > 0
    clocks = stats["host_port_clocks"]
    assert set(clocks) == {"power_on", "program", "image", "inputs", "run", "reads"}
    assert clocks["run"] >= sum(g["cycles"] for g in golden[:4]) and all(v > 0 for v in clocks.values())


# --- serving: numbers --------------------------------------------------------------------------

@pytest.mark.parametrize("duo", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_serving_engines_identical_and_equal_reference(duo):
    """Two requests decoding together on the golden engine and on the RTL: one simulated tiny chip
    time-shared by the 4 chips (fast tier), or the duo tray's Verilog (hdl/tray.py; slow tier)."""
    scfg = duo_cfg() if duo else small_cfg()
    g = run_serving(small_requests(), scfg, "lpu", "golden", reference=True)
    r = run_serving(small_requests(), scfg, "lpu", "rtl", reference=True)
    assert g["totals"]["reference_identical"] and r["totals"]["reference_identical"]
    assert g["requests"] == r["requests"]            # tokens AND modelled latencies (exact cycles)
    assert g["totals"]["ffn_backend"]["chip_cycles"] == r["totals"]["ffn_backend"]["chip_cycles"]
    be = r["totals"]["ffn_backend"]
    assert (be.get("rtl_tray") if duo else be.get("shared_dut")) is True


def test_gpu_and_lpu_ffn_give_identical_tokens():
    scfg = small_cfg()
    reqs = lambda: synthetic_requests(3, ModelConfig.from_dict(scfg["model"]), scfg["synthetic"])  # noqa: E731
    a = run_serving(reqs(), scfg, "lpu", "golden", reference=True)
    b = run_serving(reqs(), scfg, "gpu", "golden", reference=True)
    assert [q["tokens"] for q in a["requests"]] == [q["tokens"] for q in b["requests"]]
    assert a["totals"]["reference_identical"] and b["totals"]["reference_identical"]


def test_speculative_decoding_accepts_and_rejects_and_keeps_greedy_tokens():
    scfg = small_cfg(**{"dynamo.speculate": 3})
    reqs = synthetic_requests(4, ModelConfig.from_dict(scfg["model"]), scfg["synthetic"])
    rep = run_serving(reqs, scfg, "lpu", "golden", reference=True)
    assert rep["totals"]["reference_identical"]
    prop = sum(q["spec_proposed"] for q in rep["requests"])
    acc = sum(q["spec_accepted"] for q in rep["requests"])
    assert 0 < acc < prop                     # some drafts accepted, some rejected
    m = MoEModel.build(ModelConfig.from_dict(scfg["model"]))
    for r, q in zip(reqs, rep["requests"]):
        assert q["tokens"] == reference_generate(m, r.prompt, r.max_tokens)


# --- serving: scheduling -----------------------------------------------------------------------

def test_router_prefers_prefix_overlap():
    r = PrefillRouter(3, 4, 1.0)
    shared = list(range(12))
    r.commit(2, shared + [50, 51], end=0.0)
    w, ov = r.choose(shared + [60, 61, 62], now=1.0)
    assert (w, ov) == (2, 3)
    w, ov = r.choose([99] * 10, now=1.0)         # no overlap anywhere: the least-loaded worker
    assert ov == 0 and w == 0


def test_pingpong_overlap_reduces_step_latency():
    chains = [[("gpu", 3.0), ("lpu", 4.0), ("gpu", 3.0), ("lpu", 4.0)] for _ in range(2)]
    serial = pingpong_schedule(chains, overlap=False)
    both = pingpong_schedule(chains, overlap=True)
    assert serial == 28.0 and both < serial and both >= 16.0
    scfg = small_cfg(**{"dynamo.micro_batches": 2})
    on = run_serving(synthetic_requests(4, ModelConfig.from_dict(scfg["model"]), scfg["synthetic"]), scfg,
                     "lpu", "golden")
    scfg_off = small_cfg(**{"dynamo.micro_batches": 2, "dynamo.pingpong": False})
    off = run_serving(synthetic_requests(4, ModelConfig.from_dict(scfg["model"]), scfg["synthetic"]), scfg_off,
                      "lpu", "golden")
    assert on["totals"]["mean_step_s"] < off["totals"]["mean_step_s"]
    assert [q["tokens"] for q in on["requests"]] == [q["tokens"] for q in off["requests"]]


# --- CLI ---------------------------------------------------------------------------------------

def test_cli_json_contract(capsys):
    assert main(["serve", "--synthetic", "2", "--engine", "golden", "--json", "--reference"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"requests", "totals"} and len(doc["requests"]) == 2
    for q in doc["requests"]:
        assert {"tokens", "ttft_s", "tokens_per_s", "p50_token_latency_s", "p99_token_latency_s"} <= set(q)
    assert doc["totals"]["reference_identical"] is True


@pytest.mark.parametrize("line, msg", [
    ("{not json", ":1: not valid JSON"),
    ('{"max_tokens": 3}', ":1: field 'prompt' is missing"),
    ('{"prompt": [1, 300]}', ":1: field 'prompt'[1]: 300 is not a token id in [0, 256)"),
    ('{"prompt": [1], "max_tokens": 0}', ":1: field 'max_tokens': 0 is not an integer >= 1"),
    ('{"prompt": [1], "class": "vip"}', ":1: field 'class': 'vip' is not one of batch, interactive"),
    ('{"prompt": [1], "colour": 1}', ":1: unknown field 'colour'"),
])
def test_cli_bad_request_files(tmp_path, capsys, line, msg):
    f = tmp_path / "req.jsonl"
    f.write_text('{"prompt": [1, 2], "max_tokens": 2}\n' + line.replace(":1:", "") + "\n")
    assert main(["serve", "--requests", str(f), "--engine", "golden"]) == 2
    err = capsys.readouterr().err
    assert f"{f}:2" in err and msg.replace(":1:", "").strip() in err and "Traceback" not in err


def test_cli_missing_file(capsys):
    assert main(["serve", "--requests", "/nonexistent/r.jsonl", "--engine", "golden"]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.slow
def test_synthetic_8_golden_with_reference(capsys):
    assert main(["serve", "--synthetic", "8", "--engine", "golden", "--json", "--reference"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"]["reference_identical"] is True and len(doc["requests"]) == 8


@pytest.mark.slow
def test_rtl_speculative_equals_golden():
    scfg = duo_cfg(**{"dynamo.speculate": 2})
    g = run_serving(small_requests(), scfg, "lpu", "golden", reference=True)
    r = run_serving(small_requests(), scfg, "lpu", "rtl", reference=True)
    assert g["requests"] == r["requests"] and r["totals"]["reference_identical"]


# --- serving: several decode workers sharing the tray --------------------------------------------

def test_decode_router_picks_the_worker_with_the_least_kv():
    from tinylpu.sim.serving.serve import DecodeRouter, DecodeWorker
    ws = [DecodeWorker(0), DecodeWorker(1), DecodeWorker(2)]
    ws[0].active = [Request("a", list(range(30)), 4)]        # 4 blocks of 8
    ws[1].queue = [Request("b", list(range(9)), 4)]          # 2 blocks
    k, loads = DecodeRouter(3, 8).choose(Request("c", [1, 2], 4), ws)
    assert loads == [4, 2, 0] and k == 2
    ws[2].active = [Request("d", list(range(20)), 4)]        # 3 blocks
    assert DecodeRouter(3, 8).choose(Request("e", [1], 4), ws)[0] == 1


def test_two_decode_workers_share_the_tray_and_keep_the_tokens():
    mcfg = ModelConfig.from_dict(small_cfg()["model"])
    runs = {}
    for w in (1, 2):
        scfg = small_cfg(**{"dynamo.decode_workers": w, "dynamo.max_batch": 2})
        reqs = synthetic_requests(6, mcfg, scfg["synthetic"])
        runs[w] = run_serving(reqs, scfg, "lpu", "golden", reference=True)
    one, two = runs[1], runs[2]
    assert one["totals"]["reference_identical"] and two["totals"]["reference_identical"]
    assert [q["tokens"] for q in one["requests"]] == [q["tokens"] for q in two["requests"]]
    assert {q["decode_worker"] for q in one["requests"]} == {0}
    assert {q["decode_worker"] for q in two["requests"]} == {0, 1}          # KV-load routing spreads them
    assert two["totals"]["decode_workers"] == 2
    # twice the attention GPUs, one shared tray: the same work finishes sooner
    assert two["totals"]["makespan_s"] < one["totals"]["makespan_s"]
    with pytest.raises(ValueError, match="decode_workers must be >= 1"):
        run_serving(small_requests()[:1], small_cfg(**{"dynamo.decode_workers": 0}), "lpu", "golden")
