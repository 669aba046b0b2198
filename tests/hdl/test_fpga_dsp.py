"""ECP5 DSP use (hdl/common.ecp5_mult): the MXM and VXM products on an ECP5 build sit in MULT18X18D
blocks with their input and output registers.

The Amaranth simulator cannot run the primitive, so two checks stand in for it:

* structure: elaborated for an ECP5 device, each unit instantiates exactly its products as
  MULT18X18D with the register parameters the timing relies on;
* behaviour: ``ecp5_mult`` (operand bit order, sign extension, output slice, register timing)
  under Icarus against a behavioural MULT18X18D written from Lattice's description of the block
  (TN1267: optional A/B input registers and output register on CLK0, signed operands), on random
  and edge operands.
"""

import random
import re
import shutil
import subprocess
from types import SimpleNamespace

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tests.hdl.test_taps import unit_config
from tinylpu.hdl.common import ecp5_mult
from tinylpu.hdl.mxm import MxmSlice
from tinylpu.hdl.vxm import VxmSlice

ECP5 = SimpleNamespace(device="LFE5U-85F")


def _instances(text):
    """[(instance body)] of every MULT18X18D in Yosys-written Verilog."""
    return re.findall(r"MULT18X18D\s+#\((.*?)\)\s*\w+\s*\(", text, re.S)


@pytest.mark.parametrize("unit,count,mode", [("mxm", lambda L: L * L, "fabric"),
                                             pytest.param("mxm", lambda L: L * L, "dsp", marks=pytest.mark.slow),
                                             ("vxm", lambda L: 3 * L, "dsp")])
def test_products_in_dsp_blocks_with_registers(unit, count, mode):
    """The MXM's operands come from fabric registers (``MxmSlice.DSP_WEIGHT_REG``, the default) or
    the DSP's input registers, the VXM's from the DSP's input registers; every product is in a DSP's
    output register."""
    assert MxmSlice.DSP_WEIGHT_REG == "fabric"
    cfg = unit_config("fpga")
    cls = {"mxm": MxmSlice, "vxm": VxmSlice}[unit]
    dut = cls(cfg, cfg.slices_of(unit)[0])
    if unit == "mxm":
        dut.DSP_WEIGHT_REG = mode
    reg_in = mode == "dsp"
    text = verilog.convert(dut, name="top", platform=ECP5)
    insts = _instances(text)
    assert len(insts) == count(cfg.lanes)
    for params in insts:
        assert '.REG_OUTPUT_CLK("CLK0")' in params
        for port in "AB":
            assert (f'.REG_INPUT{port}_CLK("CLK0")' if reg_in else f'.REG_INPUT{port}_CLK("NONE")') in params
    # the simulation build of the same unit has no primitive (plain products)
    assert "MULT18X18D" not in verilog.convert(cls(cfg, cfg.slices_of(unit)[0]), name="top")


def _model():
    """A behavioural MULT18X18D: the subset ecp5_mult uses (signed operands, CLK0/CE0 registers)."""
    ports = ([f"A{i}" for i in range(18)] + [f"B{i}" for i in range(18)] + [f"C{i}" for i in range(18)]
             + ["SIGNEDA", "SIGNEDB", "SOURCEA", "SOURCEB", "CLK0", "CE0", "RST0"])
    outs = [f"P{i}" for i in range(36)]
    a = "{" + ", ".join(f"A{i}" for i in reversed(range(18))) + "}"
    b = "{" + ", ".join(f"B{i}" for i in reversed(range(18))) + "}"
    return f"""
module MULT18X18D({", ".join(ports + outs)});
  parameter REG_INPUTA_CLK = "NONE";
  parameter REG_INPUTB_CLK = "NONE";
  parameter REG_OUTPUT_CLK = "NONE";
  parameter GSR = "ENABLED";
  input {", ".join(ports)};
  output {", ".join(outs)};
  wire signed [17:0] a_in = {a};
  wire signed [17:0] b_in = {b};
  reg signed [17:0] a_r, b_r;
  reg signed [35:0] p_r;
  wire signed [17:0] a_op = (REG_INPUTA_CLK == "CLK0") ? a_r : a_in;
  wire signed [17:0] b_op = (REG_INPUTB_CLK == "CLK0") ? b_r : b_in;
  wire signed [35:0] prod = a_op * b_op;
  always @(posedge CLK0) if (CE0) begin a_r <= a_in; b_r <= b_in; p_r <= prod; end
  wire [35:0] p = (REG_OUTPUT_CLK == "CLK0") ? p_r : prod;
  assign {{{", ".join(reversed(outs))}}} = p;
endmodule
"""


class _Mul(wiring.Component):
    def __init__(self, wa, wb, reg_a, reg_b):
        self.reg_a, self.reg_b = reg_a, reg_b
        super().__init__({"a": In(signed(wa)), "b": In(signed(wb)), "p": Out(signed(wa + wb))})

    def elaborate(self, platform):
        m = Module()
        p = ecp5_mult(m, self.a, self.b, "dsp", reg_a=self.reg_a, reg_b=self.reg_b)
        m.d.comb += self.p.eq(p[:len(self.p)])
        return m


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog is not installed")
@pytest.mark.parametrize("wa,wb,reg_a,reg_b", [(8, 8, True, False), (8, 8, False, False), (8, 16, True, True),
                                               (17, 16, True, True), (16, 16, True, True)])
def test_ecp5_mult_timing_and_signs(tmp_path, wa, wb, reg_a, reg_b):
    dut = _Mul(wa, wb, reg_a, reg_b)
    (tmp_path / "dut.v").write_text(verilog.convert(dut, name="dut", platform=ECP5))
    (tmp_path / "model.v").write_text(_model())
    rng = random.Random(wa * 100 + wb + 7 * reg_a)
    lo_a, hi_a, lo_b, hi_b = -(1 << (wa - 1)), (1 << (wa - 1)) - 1, -(1 << (wb - 1)), (1 << (wb - 1)) - 1
    if wa == 17:
        lo_a = 0                             # REQ's low half: an unsigned 16-bit value, zero-extended
    vals = [(lo_a, lo_b), (lo_a, hi_b), (hi_a, lo_b), (hi_a, hi_b), (0, lo_b), (-1 if lo_a else 1, -1)]
    vals += [(rng.randint(lo_a, hi_a), rng.randint(lo_b, hi_b)) for _ in range(200)]
    # an operand is sampled in cycle c when registered, in c + 1 when not; p is read in c + 2
    n = len(vals)
    a_seq = ([a for a, _ in vals] + [0, 0]) if reg_a else ([0] + [a for a, _ in vals] + [0])
    b_seq = ([b for _, b in vals] + [0, 0]) if reg_b else ([0] + [b for _, b in vals] + [0])
    lines = ["`timescale 1ns/1ps", "module tb;", "reg clk = 0, rst = 0;",
             f"reg signed [{wa - 1}:0] a; reg signed [{wb - 1}:0] b; wire signed [{wa + wb - 1}:0] p;",
             "dut u(.clk(clk), .rst(rst), .a(a), .b(b), .p(p));", "integer i;",
             f"reg signed [{wa - 1}:0] as [0:{n + 1}]; reg signed [{wb - 1}:0] bs [0:{n + 1}];", "initial begin"]
    lines += [f"  as[{i}] = {x}; bs[{i}] = {y};" for i, (x, y) in enumerate(zip(a_seq, b_seq))]
    lines += [f"  for (i = 0; i < {n + 2}; i = i + 1) begin",
              "    a = as[i]; b = bs[i]; #1 clk = 1; #1 clk = 0;",
              "    if (i >= 1) $display(\"%0d\", p);",
              "  end", "  $finish;", "end", "endmodule"]
    (tmp_path / "tb.v").write_text("\n".join(lines) + "\n")
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "sim"), str(tmp_path / "tb.v"),
                    str(tmp_path / "dut.v"), str(tmp_path / "model.v")], check=True)
    out = subprocess.run(["vvp", "-n", str(tmp_path / "sim")], check=True, capture_output=True, text=True).stdout
    got = [int(x) for x in out.split() if re.fullmatch(r"-?\d+", x)]
    # p printed after clock edge i (i >= 1) is the product of operand pair i - 1
    assert got[:n] == [a * b for a, b in vals]
