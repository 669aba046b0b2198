"""GTKWave save files for the chip's waveforms: one group per slice, in floorplan order.

The signal names are read from the chip's Verilog (the scopes in the FST follow its instance
hierarchy), so the save file always matches the design.  Instruction words are decoded twice:
the 8-bit opcode fields through an opcode filter (``READ``, ``MM`` ...), and the 64-bit ``insn``
words of the program that ran through a per-program filter that shows the disassembled text.
"""

import re
from pathlib import Path

from vcd.gtkw import GTKWSave, make_translation_filter

from tinylpu.isa import Opcode, format_insn

__all__ = ["verilog_signals", "write_gtkw"]

_MOD = re.compile(r"^module\s+(\\\S+|\S+)\s*\(", re.M)
_DECL = re.compile(r"^\s*(?:input|output|wire|reg)\s+(?:signed\s+)?(?:\[(\d+):0\]\s+)?(\\\S+|[A-Za-z_]\w*)\s*[;=,]",
                   re.M)


def verilog_signals(vtext):
    """{scope: [(name, width)]} for every module of an Amaranth-generated Verilog file."""
    out = {}
    starts = [(m.start(), m.group(1).lstrip("\\")) for m in _MOD.finditer(vtext)]
    for i, (pos, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(vtext)
        body = vtext[pos:end]
        sigs, seen = [], set()
        for m in _DECL.finditer(body):
            nm = m.group(2)
            if nm in seen:
                continue
            seen.add(nm)
            sigs.append((nm, int(m.group(1)) + 1 if m.group(1) else 1))
        out[name] = sigs
    return out


def _ref(scope, name, width):
    return f"{scope}.{name}" + (f"[{width - 1}:0]" if width > 1 else "")


def _keep(name, width):
    plain = name.lstrip("\\")
    if plain.startswith("$") or "$" in plain or width > 256:
        return False
    if plain.startswith(("rep_insn.", "cur.", "tap__", "rp__", "wp__", "wr__", "rd__", "load_")):
        return plain in ("tap__east_valid", "tap__west_valid")
    if ".args." in plain:
        return False
    return True


def write_gtkw(gtkw_path, dump_path, cfg, vtext, program=None, top="tinylpu_chip"):
    """Write a .gtkw save file (and its filter files beside it) for a waveform of the chip."""
    gtkw_path = Path(gtkw_path)
    sigs = verilog_signals(vtext)
    opf = gtkw_path.with_name("opcodes.filter")
    opf.write_text(make_translation_filter([(op.value, op.name) for op in Opcode], datafmt="hex", size=8))
    progf = None
    if program is not None:
        from tinylpu.isa import encode
        words = {}
        for insns in program.queues.values():
            for insn in insns:
                words[encode(insn)] = format_insn(insn).replace(" ", "_")
        progf = gtkw_path.with_name("program.filter")
        progf.write_text(make_translation_filter(sorted(words.items()), datafmt="hex", size=64))
    with open(gtkw_path, "w") as f:
        g = GTKWSave(f)
        g.comment(f"tinylpu chip, config {cfg.name}: one group per slice, west to east")
        g.dumpfile(str(Path(dump_path).resolve()))
        g.treeopen(top)
        with g.group("chip", closed=False):
            for name, width in sigs.get(top, []):
                plain = name.lstrip("\\")
                if plain in ("clk", "rst", "counter", "done", "all_halted", "halted", "any_err", "clear", "fire",
                             "start_chip", "stopped", "halted_seen",
                             "cmd__valid", "cmd__ready", "cmd__payload", "resp__valid", "resp__ready",
                             "resp__payload") or plain.startswith("errors."):
                    g.trace(_ref(top, name, width), datafmt="dec" if plain == "counter" else
                            ("bin" if width == 1 else "hex"))
        for s in cfg.slices:
            with g.group(f"{s.position:02d} {s.name} ({s.kind})", closed=True):
                for scope in (f"{top}.icu_{s.name}", f"{top}.{s.name}"):
                    for name, width in sigs.get(scope, []):
                        if not _keep(name, width):
                            continue
                        plain = name.lstrip("\\")
                        ref = _ref(scope, name, width)
                        if plain.endswith("op") and width == 8:
                            g.trace(ref, datafmt="hex", translate_filter_file=str(opf.resolve()))
                        elif plain == "insn" and width == 64 and progf is not None:
                            g.trace(ref, datafmt="hex", translate_filter_file=str(progf.resolve()))
                        else:
                            g.trace(ref, datafmt="bin" if width == 1 else "hex")
        with g.group("streams (valid bits per position)", closed=True):
            for name, width in sigs.get(f"{top}.streams", []):
                if "valid" in name and _keep(name, width):
                    g.trace(_ref(f"{top}.streams", name, width), datafmt="bin")
    return gtkw_path
