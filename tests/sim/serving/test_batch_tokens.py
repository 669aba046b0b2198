"""lpu.batch_tokens: every layer compiled for several token counts on one MEM image, a call run by the
smallest program that holds its tokens: the serving schema's checks, the compiled-program disk cache
keyed on the counts, and a serving run whose calls use several programs with the reference's tokens."""

from importlib import resources

import numpy as np
import pytest

from tinylpu.schema import SchemaError
from tinylpu.sim.serving.model import ModelConfig, load_serving_config
from tinylpu.sim.serving.serve import Request, default_config, run_serving, synthetic_requests

SMOLLM2 = resources.files("tinylpu.configs").joinpath("serving/smollm2.yaml").read_text()
SMALL = {"model.d_model": 32, "model.d_ff": 32, "model.experts": 4, "model.heads": 2, "lpu.chips": 4,
         "lpu.chip_config": "tiny", "lpu.tokens_per_call": 4, "model.calib_sequences": 2, "model.max_seq": 64}


def test_shipped_smollm2_config_compiles_one_to_eight_tokens():
    lpu = load_serving_config("smollm2")["lpu"]
    assert lpu["batch_tokens"] == [1, 2, 4, 8] and lpu["tokens_per_call"] == 8
    assert load_serving_config()["lpu"]["batch_tokens"] is None       # the synthetic default: [tokens_per_call]


@pytest.mark.parametrize("new, field, msg", [
    ("batch_tokens: [1, 4, 2, 8]", "lpu.batch_tokens[2]", "strictly increasing, got 2 after 4"),
    ("batch_tokens: [1, 2, 2, 8]", "lpu.batch_tokens[2]", "strictly increasing, got 2 after 2"),
    ("batch_tokens: [1, 2, 4]", "lpu.batch_tokens", "largest token count 4 must equal lpu.tokens_per_call 8"),
    ("batch_tokens: [0, 8]", "lpu.batch_tokens[0]", "must be in [1, 256], got 0"),
    ("batch_tokens: []", "lpu.batch_tokens", "has 0 entries"),
    ("batch_tokens: 8", "lpu.batch_tokens", "must be a list"),
])
def test_batch_tokens_errors_name_file_line_and_field(tmp_path, new, field, msg):
    old = "batch_tokens: [1, 2, 4, 8]"
    assert old in SMOLLM2
    f = tmp_path / "s.yaml"
    f.write_text(SMOLLM2.replace(old, new, 1))
    line = SMOLLM2[:SMOLLM2.index(old)].count("\n") + 1
    with pytest.raises(SchemaError) as ei:
        load_serving_config(str(f))
    e = ei.value
    assert e.field == field and msg in str(e) and str(e).startswith(f"{f}:{line}: field '{field}'"), str(e)


def test_disk_cache_keys_on_the_token_counts(tmp_path, monkeypatch):
    """The compiled-program cache: one file per token list, a second call loads it (no compile)."""
    from tinylpu.config import load_config
    from tinylpu.firmware.compiler import compile_moe
    from tinylpu.firmware.quant import FFNWeights, quantize_ffn
    from tinylpu.sim.serving.lpu import _disk_cached
    monkeypatch.setenv("TINYLPU_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    w = FFNWeights(rng.normal(size=(16, 32)) / 4, rng.normal(size=(32, 16)) / 6, rng.normal(size=(16, 32)) / 4,
                   None, None, None, "swiglu")
    qs, cfg = [quantize_ffn(w, rng.normal(size=(4, 16)))], load_config("tiny")
    built = []

    def build(tokens):
        built.append(tokens)
        return compile_moe(qs, cfg, tokens)
    for tokens in (1, [1], [1, 2], [1, 2, 4], [1, 2]):
        out = _disk_cached(qs, cfg, tokens, lambda t=tokens: build(t))
        assert (out[0].token_counts if isinstance(tokens, list) else (out[0].tokens,)) == \
            (tuple(tokens) if isinstance(tokens, list) else (tokens,))
    assert built == [1, [1], [1, 2], [1, 2, 4]]          # [1, 2] the second time from the cache
    assert len(list(tmp_path.glob("compiled-*.pkl"))) == 4


def test_serving_with_several_programs_per_expert_matches_the_reference():
    """A synthetic MoE on 4 tiny chips, experts compiled for 1, 2 and 4 tokens: an expert's tokens of a
    step are one call run by the smallest program that holds them; the tokens equal the monolithic
    reference and those of a run with one 4-token program, with fewer chip cycles."""
    reps = {}
    for bt in (None, [1, 2, 4]):
        scfg = default_config(None, **SMALL, **{"lpu.batch_tokens": bt})
        reqs = synthetic_requests(4, ModelConfig.from_dict(scfg["model"]), scfg["synthetic"])
        reps[str(bt)] = rep = run_serving(reqs, scfg, "lpu", "golden", reference=True)
        assert rep["totals"]["reference_identical"]
    one, several = reps["None"]["totals"], reps["[1, 2, 4]"]["totals"]
    assert [q["tokens"] for q in reps["None"]["requests"]] == [q["tokens"] for q in reps["[1, 2, 4]"]["requests"]]
    used = several["ffn_backend"]["by_program_tokens"]
    assert len(used) >= 2 and set(used) <= {1, 2, 4} and list(one["ffn_backend"]["by_program_tokens"]) == [4]
    assert sum(n for n, _ in used.values()) == several["ffn_backend"]["calls"] == one["ffn_backend"]["calls"]
    assert several["ffn_backend"]["chip_cycles"] < one["ffn_backend"]["chip_cycles"]


@pytest.mark.slow           # ~55 s: one Icarus launch of the duo tray (the program choice is the host's)
def test_rtl_duo_tray_with_several_programs_equals_golden():
    """The same on the 2-chip RTL tray (hdl/tray.py, Icarus): the programs of 1, 2 and 4 tokens run on
    each chip's one resident image give the golden engine's tokens, latencies and cycles."""
    scfg = default_config(None, **{**SMALL, "lpu.chip_config": "duo", "lpu.chips": None, "lpu.batch_tokens": [1, 2, 4]})

    def reqs():              # three requests decoding together: an expert gets 1 to 3 tokens of a step
        return [Request(n, [1, 2, 3, 4, t], 2) for n, t in (("a", 5), ("b", 9), ("c", 17))]
    g = run_serving(reqs(), scfg, "lpu", "golden", reference=True)
    r = run_serving(reqs(), scfg, "lpu", "rtl", reference=True)
    assert g["totals"]["reference_identical"] and r["totals"]["reference_identical"]
    assert g["requests"] == r["requests"] and r["totals"]["ffn_backend"]["rtl_tray"] is True
    gb, rb = g["totals"]["ffn_backend"], r["totals"]["ffn_backend"]
    assert len(gb["by_program_tokens"]) >= 2 and gb["chip_cycles"] == rb["chip_cycles"]
    assert {int(k): v for k, v in rb["by_program_tokens"].items()} == gb["by_program_tokens"]


@pytest.mark.slow      # ~11 s: compiles and runs every program of the cut; the serving test above runs them too
def test_cycles_command_on_the_cut_model(capsys):
    """`python -m tinylpu.sim.serving.lpu --layers 2 --tokens 1,3`: every program run on the golden
    model, measured = predicted, outputs = run_int; the cycles it prints (docs/smollm2.md quotes them)."""
    from tinylpu.sim.serving.lpu import main
    assert main(["--layers", "2", "--tokens", "1,3"]) == 0
    out = capsys.readouterr().out
    assert "compiled for [1, 3] token(s) on one MEM image per chip" in out
    assert "     1                       6,574" in out and "     3                       8,815" in out
    assert "for all 4 programs: True" in out
