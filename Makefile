# tinylpu — every target sets itself up on first use (.venv/, pip packages, Icarus Verilog).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
CONFIG ?= tiny
SIM   ?= icarus
JOBS  ?= $(shell nproc 2>/dev/null || echo 2)
export AMARANTH_USE_YOSYS := builtin
PYTEST := PATH=$(CURDIR)/$(VENV)/bin:$$PATH PYTHONWARNINGS=error $(PY) -m pytest

.PHONY: setup sim waves test test-all docs bench perf synth lint clean help

help:
	@echo "make sim       compile the default SwiGLU FFN and run it on the RTL ($(SIM)); WAVES=1 for waveforms"
	@echo "make waves     open the last 'WAVES=1 make sim' waveform in GTKWave (or print its path)"
	@echo "make test      fast test tier (what CI runs)"
	@echo "make test-all  fast + slow tiers"
	@echo "make docs      regenerate docs/isa.md from the ISA module"
	@echo "make bench     measure simulators, compiler, determinism, C2C; full-scale projection (docs/benchmarks.md, docs/projection.md)"
	@echo "make perf      compiled-FFN utilization across shapes (writes docs/performance.md)"
	@echo "make lint      verilator --lint-only on the generated Verilog (writes docs/lint.md)"
	@echo "make synth     FPGA build (BOARD=ulx3s-85f or icebreaker; writes build/synth/<board>/report.json)"

setup:
	@./scripts/bootstrap.sh

sim: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m tinylpu.cli sim --config $(CONFIG) --sim $(SIM)

waves:
	@if [ ! -f build/sim/waves.gtkw ]; then echo "no waves yet: run 'WAVES=1 make sim' first"; exit 1; fi
	@if [ -n "$$DISPLAY" ] && command -v gtkwave >/dev/null; then gtkwave build/sim/waves.gtkw & \
	 elif [ -n "$$DISPLAY" ] && command -v surfer >/dev/null; then surfer build/sim/waves.fst & \
	 else echo "waves: build/sim/waves.fst, save file build/sim/waves.gtkw (open with: gtkwave build/sim/waves.gtkw)"; fi

# --dist loadfile: one worker runs a whole test file, so a file's shared simulators (tests/harness.py
# shared_dut) and module fixtures (one cocotb launch for all of tests/sim/rtl/test_chip.py) are built once.
# (pytest-xdist 3.8's loadgroup does not group under pytest 9: it renames node ids through an attribute
# pytest 9 no longer reads.)
test: setup
	$(PYTEST) -q -n $(JOBS) --dist loadfile

test-all: setup
	$(PYTEST) -q -n $(JOBS) --dist loadfile -m "slow or not slow"

docs: setup
	$(PY) -m tinylpu.cli isa-doc --config $(CONFIG) -o docs/isa.md

bench: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m tinylpu.cli bench all --config $(CONFIG) --repeat 3 -o docs/benchmarks.md
	$(PY) -m tinylpu.cli project --compare -o docs/projection.md

perf: setup
	$(PY) -m tinylpu.cli bench compiler -o docs/performance.md
	$(PY) -m tinylpu.cli bench tray -o docs/tray-performance.md

BOARD ?= ulx3s-85f
# Yosys 0.70's abc9 step asserts on the full fpga chip: map ECP5 LUTs with the classic abc (docs/fpga.md)
SYNTH_FLAGS ?= --units $(if $(filter ulx3s-85f,$(BOARD)),--legacy-abc --depth 40,)
synth: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) scripts/synth.py --board $(BOARD) --write-docs $(SYNTH_FLAGS)

lint: setup
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) scripts/lint.py --write-docs docs/lint.md

clean:
	rm -rf build .pytest_cache
