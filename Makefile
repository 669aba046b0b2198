# tinylpu — every target sets itself up on first use (.venv/, pip packages, Icarus Verilog).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
CONFIG ?= tiny
SIM   ?= icarus
export AMARANTH_USE_YOSYS := builtin
PYTEST := PYTHONWARNINGS=error $(PY) -m pytest

.PHONY: setup sim test test-all docs bench perf clean help

help:
	@echo "make sim       run the example program on the default config ($(CONFIG)) and check it"
	@echo "make test      fast test tier (what CI runs)"
	@echo "make test-all  fast + slow tiers"
	@echo "make docs      regenerate docs/isa.md from the ISA module"
	@echo "make bench     measure the golden model's speed (writes docs/benchmarks.md)"
	@echo "make perf      compiled-FFN utilization across shapes (writes docs/performance.md)"

setup:
	@./scripts/bootstrap.sh

sim: setup
	$(PY) -m tinylpu.cli sim --config $(CONFIG)

test: setup
	$(PYTEST) -q

test-all: setup
	$(PYTEST) -q -m "slow or not slow"

docs: setup
	$(PY) -m tinylpu.cli isa-doc --config $(CONFIG) -o docs/isa.md

bench: setup
	$(PY) -m tinylpu.cli bench golden --config $(CONFIG) -o docs/benchmarks.md

perf: setup
	$(PY) -m tinylpu.cli bench compiler -o docs/performance.md

clean:
	rm -rf build .pytest_cache
