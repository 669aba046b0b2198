"""Chip configs: shipped ones load, derived numbers are right, bad files get errors naming file and field."""

from importlib import resources

import pytest

from tinylpu.config import MIN_LATENCY, ConfigError, load_config, parse_config, shipped_configs

GOOD = resources.files("tinylpu.configs").joinpath("tiny.yaml").read_text()


def test_shipped_configs():
    assert {"tiny", "fpga", "tray"} <= set(shipped_configs())
    for name in shipped_configs():
        cfg = load_config(name)
        assert cfg.name == name
        assert cfg.banks >= 1 and cfg.lanes >= 4
        for k, v in cfg.latency.items():
            assert v >= MIN_LATENCY[k]


def test_derived_numbers_tiny():
    cfg = load_config("tiny")
    assert cfg.lanes == 16 and cfg.banks == 8
    assert cfg.sram_bytes == 8 * 512 * 16
    assert cfg.macs_per_cycle == 256
    assert cfg.stream_bytes_per_cycle == 2 * 8 * 16
    assert cfg.peak_tops == pytest.approx(2 * 256 * 100e6 / 1e12)
    assert [s.position for s in cfg.slices] == list(range(len(cfg.slices)))
    assert cfg.slice("vxm0").kind == "vxm"


def test_tray_and_fpga():
    tray = load_config("tray")
    assert tray.chips == 8 and tray.c2c_ports == 7 and len(tray.ppm) == 8
    fpga = load_config("fpga")
    assert fpga.sram_bytes == 128 * 1024 and fpga.lanes == 8


def test_lpu_class_configs():
    """lpu: megabytes of SRAM at SRAM speed; lpu-tray holds every FFN of a 135M decoder; lpu-mini is lpu cut down."""
    lpu, mini, tray = load_config("lpu"), load_config("lpu-mini"), load_config("lpu-tray")
    assert lpu.lanes >= 64 and lpu.sram_bytes == 16 * 2**20
    assert lpu.install_rows == 8 and lpu.weight_bytes_per_cycle == lpu.sram_read_bytes_per_cycle == 512
    # SmolLM2-135M: 30 layers of a 576 x 1536 SwiGLU (3 matrices) in int8, as lanes x lanes tiles
    tiles = lambda k, n: -(-k // lpu.lanes) * -(-n // lpu.lanes)       # noqa: E731
    layer = (2 * tiles(576, 1536) + tiles(1536, 576)) * lpu.lanes ** 2
    assert 30 * layer <= tray.chips * tray.sram_bytes and 30 * layer > 75e6
    assert tray.chips == 8 and tray.c2c_ports == 7 and tray.derived()["tray_sram_bytes"] == 8 * lpu.sram_bytes
    for f in ("lanes", "streams", "install_rows", "latency", "clock_mhz"):
        assert getattr(mini, f) == getattr(lpu, f) == getattr(tray, f), f
    assert mini.slice_names == lpu.slice_names and mini.mem_depth < lpu.mem_depth
    assert load_config("tiny").install_rows == 1


@pytest.mark.parametrize("rows,msg", [(3, "must be a power of two"), (16, "must be in [1, 8]"), (0, "must be in")])
def test_install_rows_limits(tmp_path, rows, msg):
    p = tmp_path / "bad.yaml"
    p.write_text(GOOD.replace("acc_depth: 64", f"acc_depth: 64\n  install_rows: {rows}"))
    with pytest.raises(ConfigError, match="mxm.install_rows") as ei:
        load_config(str(p))
    assert msg in str(ei.value) and ":12:" in str(ei.value)


def test_load_from_file(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text(GOOD.replace("name: tiny", "name: mine").replace("depth: 512", "depth: 1024"))
    cfg = load_config(str(p))
    assert cfg.name == "mine" and cfg.mem_depth == 1024 and cfg.source == str(p)


BAD = [
    ("lanes: 16", "lanes: 12", "field 'lanes': must be a power of two, got 12"),
    ("lanes: 16", "lanes: sixteen", "field 'lanes': must be an integer in [4, 512], got 'sixteen'"),
    ("streams: 8", "streams: 40", "field 'streams': must be in [4, 16], got 40"),
    ("name: tiny\n", "", "field 'name': missing (required)"),
    ("mem4, mem5", "mem4, mem4", "field 'floorplan[8]': slice 'mem4' appears twice"),
    ("vxm0,", "alu0,", "field 'floorplan[6]': 'alu0' is not a slice name"),
    ("mxm0, ", "", "field 'floorplan': needs at least one mxm slice"),
    ("mem_read: 2", "mem_read: 1", "field 'latency.mem_read': must be in [2, 64], got 1"),
    ("mem_read: 2", "mem_raed: 2", "field 'latency.mem_raed': unknown latency; allowed keys are"),
    ("chips: 1", "chips: 1\nbogus: 3", "field 'bogus': unknown field; allowed fields are"),
    ("ppm: 0", "ppm: [1, 2]", "field 'clock.ppm': has 2 entries but chips is 1"),
    ("depth: 512", "depth: 500", "field 'mem.depth': must be a power of two, got 500"),
    ("lanes: 16", "lanes: [16", "not valid YAML"),
    ("mem7]", "mem9]", "field 'floorplan': mem slices must be numbered 0..7, got [0, 1, 2, 3, 4, 5, 6, 9]"),
]


@pytest.mark.parametrize("old,new,msg", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_configs_name_file_and_field(tmp_path, old, new, msg):
    assert old in GOOD
    p = tmp_path / "bad.yaml"
    p.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as ei:
        load_config(str(p))
    assert str(p) in str(ei.value)
    assert msg in str(ei.value)


def test_unknown_config_name_lists_shipped():
    with pytest.raises(ConfigError, match="no such config; shipped configs are duo, fpga, ice40, lpu, lpu-mini, lpu-tray, tiny, tray"):
        load_config("huge")


def test_missing_file():
    with pytest.raises(ConfigError, match="file not found"):
        load_config("/nonexistent/x.yaml")


def test_parse_config_top_level_must_be_mapping():
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config("- 1\n- 2\n", "list.yaml")


def test_configs_doc_is_current():
    """docs/configs.md holds the table `tinylpu config table` makes from the shipped configs."""
    from pathlib import Path

    from tinylpu.cli import config_table
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configs.md").read_text()
    assert config_table() in doc, "docs/configs.md is stale: run tinylpu config table -o docs/configs.md"
