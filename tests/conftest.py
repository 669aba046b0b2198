"""Shared test fixtures: shipped and varied chip configs, the per-slice golden reference.

Test files mirror the source folders (tests/core, tests/hdl, tests/firmware, tests/sim/<role>);
helpers that several files use live in ``tests/harness.py`` (RTL unit harness, config variants)
and ``tests/tray_programs.py`` (C2C programs).
"""

import pytest

from tests.harness import variant
from tinylpu.config import load_config
from tinylpu.sim.golden.stepper import SliceStepper


@pytest.fixture(scope="session")
def tiny():
    return load_config("tiny")


@pytest.fixture(scope="session")
def duo():
    return load_config("duo")


@pytest.fixture
def config_variant():
    """``config_variant(base, name=None, lanes=None, streams=None, c2c=None, install_rows=None,
    **latency)``: a shipped config with fields changed, through the validating loader."""
    return variant


@pytest.fixture
def stepper():
    """``stepper(cfg, slice_name)``: the golden model's machinery for one slice, stepped per cycle."""
    return SliceStepper
