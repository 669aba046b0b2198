"""ISA encoding, assembler and disassembler: round trips and errors."""

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinylpu.config import load_config
from tinylpu.firmware.asm import AsmError, assemble, disassemble
from tinylpu.firmware.program import Program, ProgramFormatError, decode_strict
from tinylpu.isa import COUNT_MAX, OPS, Insn, Instr, Opcode, StreamRef, decode, encode, format_insn

CFG = load_config("tiny")


def _value(draw, o):
    if o.kind in ("stream", "group"):
        if o.imm_flag and draw(st.booleans()):
            return "imm", draw(st.integers(-128, 127))
        top = 15 if o.kind == "stream" else 12
        return "stream", StreamRef(draw(st.integers(0, top)), draw(st.booleans()))
    if o.kind == "count":
        return "int", draw(st.integers(1, COUNT_MAX))
    if o.kind == "uint":
        lo = 1 if o.name in ("n", "d") else 0
        return "int", draw(st.integers(lo, (1 << o.bits) - 1))
    return "int", draw(st.integers(-(1 << (o.bits - 1)), (1 << (o.bits - 1)) - 1))


@st.composite
def insns(draw, ops=tuple(o for o in Opcode if o != Opcode.REPEAT)):
    op = draw(st.sampled_from(ops))
    fields = {}
    for o in OPS[op].operands:
        kind, v = _value(draw, o)
        if kind == "imm":
            fields["imm"], fields["use_imm"] = v, 1
        else:
            fields[o.field] = v
    return Insn.make(op, **fields)


@st.composite
def programs(draw):
    names = draw(st.lists(st.sampled_from(CFG.slice_names), min_size=1, max_size=4, unique=True))
    queues = {}
    for n in names:
        body = []
        for insn in draw(st.lists(insns(), min_size=0, max_size=12)):
            body.append(insn)
            if OPS[insn.op].unit != "any" and draw(st.integers(0, 4)) == 0:
                body.append(Insn.make(Opcode.REPEAT, n=draw(st.integers(1, 100)), d=draw(st.integers(1, 100))))
        queues[n] = body
    return Program(queues)


@settings(max_examples=150, deadline=None)
@given(insns())
def test_encode_decode_roundtrip(insn):
    word = encode(insn)
    assert 0 <= word < 1 << 64
    assert decode_strict(word) == insn
    assert Instr.from_bits(word).op == insn.op   # the same layout the gateware decodes


@settings(max_examples=60, deadline=None)
@given(programs())
def test_disassemble_assemble_roundtrip(prog):
    text = disassemble(prog)
    again = assemble(text, None, "roundtrip.s")
    assert again.queues == prog.queues
    assert disassemble(again) == text
    blob = prog.to_bytes()
    assert Program.from_bytes(blob).queues == prog.queues


def test_every_opcode_documented_and_decodable():
    for op, info in OPS.items():
        assert info.summary
        assert decode(encode(Insn.make(op))).op == op


def test_syntax_forms():
    src = """
    ; comment
    .equ BASE, 0x20
    .queue mem0            // another comment
    top: READ  e3, BASE, n=4, stride=-2
         read  w1, addr=7
    next:
         NOP
         NOP 5
         REPEAT 2, top + 0
    """.replace("top + 0", "9")
    p = assemble(src.replace("REPEAT 2, 9", "READ e0, 0\n         REPEAT 2, 9"), CFG)
    q = p.queues["mem0"]
    assert q[0] == Insn.make(Opcode.READ, s=StreamRef(3, False), addr=0x20, count=4, stride=-2)
    assert q[1] == Insn.make(Opcode.READ, s=StreamRef(1, True), addr=7)
    assert q[2].n == 1 and q[3].n == 5
    assert format_insn(q[0]) == "READ e3, 32, n=4, stride=-2"
    assert format_insn(q[3]) == "NOP 5"
    v = assemble(".queue vxm0\n ADD e1, e2, #-128\n LUT w0, e1, n=3\n", CFG).queues["vxm0"]
    assert v[0].use_imm == 1 and v[0].imm == -128
    assert format_insn(v[0]) == "ADD e1, e2, #-128"


def test_labels_resolve_to_instruction_index():
    p = assemble(".queue mem0\n NOP\n here: NOP here\n HALT\n", CFG)
    assert p.queues["mem0"][1].n == 1


ERRS = [
    ("FOO e0", "test.s:2:2: error: unexpected 'FOO': expected an instruction mnemonic"),
    ("READ x9, 0", "test.s:2:7: error: unexpected 'x9': expected a stream: e0..e15 (eastward) or w0..w15 (westward)"),
    ("READ e0", "test.s:2:2: error: unexpected 'READ': expected operand addr of READ (READ dst, addr, n, stride)"),
    ("READ e0, 1, 2, 3, 4", "test.s:2:20: error: unexpected '4': expected end of line: READ takes 4 operands"),
    ("READ e0, 1, n=0", "test.s:2:16: error: unexpected '0': expected n in [1, 4095]"),
    ("READ e0, 1, zz=3", "test.s:2:14: error: unexpected 'zz': expected an operand of READ: dst, addr, n, stride"),
    ("READ e0, 1, n=2, 3", "test.s:2:19: error: unexpected '3': expected name=value (positional operands come first)"),
    ("READ e0, 600", "test.s:2:11: error: unexpected '600': expected addresses 600..600 leave the bank (depth 512: 0..511)"),
    ("READ e9, 6", "test.s:2:7: error: unexpected 'e9': expected stream e9: the chip has 8 streams per direction"),
    ("READ e0, undefined_sym", "test.s:2:11: error: unexpected 'undefined_sym': expected an integer for addr"),
    ("READ e0,, 3", "test.s:2:10: error: unexpected ',': expected an operand between commas"),
    ("MM e0, 0, 0", "test.s:2:2: error: unexpected 'MM': expected MM runs on a mxm slice, not on a mem slice"),
    ("REPEAT 2, 3", "test.s:2:2: error: unexpected 'REPEAT': expected REPEAT right after a unit instruction"),
    ("SEND 1, e0", "test.s:2:2: error: unexpected 'SEND': expected SEND needs a C2C slice; config tiny has no C2C ports"),
    ("NOP 1, 2", "test.s:2:9: error: unexpected '2': expected end of line: NOP takes 1 operand (n)"),
]


@pytest.mark.parametrize("line,msg", ERRS, ids=[e[0] for e in ERRS])
def test_errors_name_file_line_col_token_expected(line, msg):
    with pytest.raises(AsmError) as ei:
        assemble(".queue mem0\n " + line + "\n", CFG, "test.s")
    assert str(ei.value).startswith(msg), str(ei.value)


def test_structural_errors():
    with pytest.raises(AsmError, match=r"x.s:1:2: error: unexpected 'READ': expected a '.queue NAME' directive"):
        assemble(" READ e0, 0\n", CFG, "x.s")
    with pytest.raises(AsmError, match=r"x.s:1:8: error: unexpected 'foo0': expected a slice of config tiny"):
        assemble(".queue foo0\n", CFG, "x.s")
    with pytest.raises(AsmError, match=r"x.s:3:8: error: unexpected 'mem0': expected a queue not opened before"):
        assemble(".queue mem0\n HALT\n.queue mem0\n", CFG, "x.s")
    with pytest.raises(AsmError, match=r"x.s:3:2: error: unexpected 'a': expected a new name"):
        assemble(".queue mem0\n a: NOP\n a: NOP\n", CFG, "x.s")
    with pytest.raises(AsmError, match=r"x.s:1:1: error: unexpected '.foo': expected a directive"):
        assemble(".foo\n", CFG, "x.s")
    with pytest.raises(AsmError, match=r"expected an int8 immediate in \[-128, 127\]"):
        assemble(".queue vxm0\n ADD e0, e1, #200\n", CFG, "x.s")
    too_long = ".queue mem0\n" + " NOP\n" * (CFG.queue_depth + 1)
    with pytest.raises(AsmError, match=f"at most {CFG.queue_depth} instructions per queue"):
        assemble(too_long, CFG, "x.s")


def test_binary_format_errors():
    good = assemble(".queue mem0\n READ e0, 1\n HALT\n", CFG).to_bytes()
    with pytest.raises(ProgramFormatError, match="not a tinylpu program"):
        Program.from_bytes(b"ELF" + good[3:], "p.bin")
    with pytest.raises(ProgramFormatError, match=r"p.bin: truncated at byte"):
        Program.from_bytes(good[:-3], "p.bin")
    bad_op = bytearray(good)
    bad_op[-16] = 0xEE
    with pytest.raises(ProgramFormatError, match=r"queue mem0, instruction 0 \(byte \d+\): undefined opcode 0xee"):
        Program.from_bytes(bytes(bad_op), "p.bin")
    stray = bytearray(good)
    stray[-9] = 0x80           # the top bit of the READ word is outside its fields
    with pytest.raises(ProgramFormatError, match="has bits set outside its operand fields"):
        Program.from_bytes(bytes(stray), "p.bin")
    with pytest.raises(ProgramFormatError, match="trailing bytes"):
        Program.from_bytes(good + b"\0", "p.bin")


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tinylpu.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_asm_disasm(tmp_path):
    src = tmp_path / "p.s"
    src.write_text(".queue mem0\n READ e0, 3, n=2\n NOP 4\n HALT\n.queue mem1\n NOP 3\n WRITE e0, 0, n=2\n NOP 3\n HALT\n")
    r = _cli("asm", str(src), "-o", str(tmp_path / "p.bin"))
    assert r.returncode == 0, r.stderr
    r = _cli("disasm", str(tmp_path / "p.bin"))
    assert r.returncode == 0
    assert r.stdout == ".queue mem0\n    READ e0, 3, n=2\n    NOP 4\n    HALT\n.queue mem1\n    NOP 3\n    WRITE e0, 0, n=2\n    NOP 3\n    HALT\n"
    r = _cli("run", str(tmp_path / "p.bin"), "--json")
    assert r.returncode == 0 and '"cycles": 8' in r.stdout


def test_cli_errors_have_no_traceback(tmp_path):
    src = tmp_path / "bad.s"
    src.write_text(".queue mem0\n READ e0, 3, n=2,\n")
    r = _cli("asm", str(src))
    assert r.returncode == 2
    assert "bad.s:2:18: error: unexpected ',': expected an operand between commas" in r.stderr
    assert "Traceback" not in r.stderr
    r = _cli("disasm", str(src))
    assert r.returncode == 2 and "not a tinylpu program" in r.stderr and "Traceback" not in r.stderr
    r = _cli("config", "show", "nosuch")
    assert r.returncode == 2 and "no such config" in r.stderr and "Traceback" not in r.stderr
    src.write_text(".queue mem0\n WRITE e0, 0\n HALT\n")
    r = _cli("run", str(src))
    assert r.returncode == 2 and "cycle 0, slice mem0, instruction #0" in r.stderr and "Traceback" not in r.stderr


def test_cli_config_show():
    r = _cli("config", "show")
    assert r.returncode == 0
    for key in ("SRAM", "65536 bytes", "peak int8 MACs/cycle      256", "stream bandwidth", "peak TOPS"):
        assert key in r.stdout
    r = _cli("config", "show", "fpga", "--json")
    assert '"sram_bytes": 131072' in r.stdout
