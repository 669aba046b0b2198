"""Assembler and disassembler for tinylpu programs.

Syntax (see docs/isa.md)::

    ; comment (also // comment)
    .equ  W1, 0x40          ; a named constant
    .queue mem0             ; following instructions go to slice mem0's queue
    start:                  ; a label: its value is the index of the next instruction in this queue
        READ  e0, W1, n=16  ; positional operands in the documented order, or name=value
        REPEAT 3, 20
        HALT
    .queue vxm0
        ADD   w1, e0, #-3   ; '#' marks an immediate operand
        HALT

Every error names ``file:line:col``, the offending token, and what was expected.
"""

import re
from dataclasses import dataclass

from tinylpu.firmware.check import insn_problems
from tinylpu.firmware.program import Program
from tinylpu.isa import BY_MNEMONIC, COUNT_MAX, OPS, Insn, Opcode, StreamRef, format_insn

__all__ = ["AsmError", "assemble", "disassemble", "parse_int"]


class AsmError(ValueError):
    def __init__(self, file, line, col, token, expected):
        self.file, self.line, self.col, self.token, self.expected = file, line, col, token, expected
        super().__init__(f"{file}:{line}:{col}: error: unexpected {token!r}: expected {expected}")


_TOKEN_RE = re.compile(r"\s*([^,\s]+(?:\s*=\s*[^,\s]+)?)\s*(,|$)")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_STREAM = re.compile(r"^([ewEW])(\d+)$")


def parse_int(text):
    t = text.replace("_", "")
    neg = t.startswith("-")
    if neg or t.startswith("+"):
        t = t[1:]
    try:
        if t.lower().startswith("0x"):
            v = int(t[2:], 16)
        elif t.lower().startswith("0b"):
            v = int(t[2:], 2)
        elif t.isdigit():
            v = int(t, 10)
        else:
            return None
    except ValueError:
        return None
    return -v if neg else v


@dataclass
class _Tok:
    text: str
    col: int   # 1-based


def _split_operands(s, col0):
    """Split 'a, b=c, #d' into tokens with their columns; empty operands are errors for the caller."""
    toks = []
    parts = s.split(",")
    pos = 0
    for p in parts:
        stripped = p.strip()
        lead = len(p) - len(p.lstrip())
        toks.append(_Tok(stripped, col0 + pos + lead))
        pos += len(p) + 1
    return toks


def _strip_comment(line):
    for marker in (";", "//"):
        i = line.find(marker)
        if i >= 0:
            line = line[:i]
    return line


def assemble(text, cfg=None, file="<input>") -> Program:
    """Assemble text into a Program.  With a config, every instruction is also checked against it."""
    lines = text.splitlines()
    symbols, queues, order = {}, {}, []
    cur = None
    pending = []   # (queue, index, mnemonic, operand tokens, line no, col) resolved after labels are known

    def err(ln, col, tok, exp):
        raise AsmError(file, ln, col, tok, exp)

    for ln, raw in enumerate(lines, 1):
        body = _strip_comment(raw).rstrip()
        if not body.strip():
            continue
        col = len(body) - len(body.lstrip()) + 1
        rest = body.strip()
        # labels (possibly several, possibly followed by an instruction)
        while True:
            m = re.match(r"^([A-Za-z_][A-Za-z0-9_.]*)\s*:(?!=)", rest)
            if not m:
                break
            name = m.group(1)
            if cur is None:
                err(ln, col, name + ":", "a '.queue NAME' directive before the first label")
            if name in symbols:
                err(ln, col, name, "a new name (this symbol is already defined)")
            symbols[name] = len(queues[cur])
            adv = m.end() + (len(rest) - m.end() - len(rest[m.end():].lstrip()))
            col += adv
            rest = rest[m.end():].lstrip()
        if not rest:
            continue
        head = rest.split(None, 1)
        word, tail = head[0], (head[1] if len(head) > 1 else "")
        tail_col = col + len(rest) - len(tail) if tail else col + len(word)
        if word.startswith("."):
            d = word.lower()
            if d == ".queue":
                args = tail.split()
                if len(args) != 1 or not _IDENT.match(args[0]):
                    err(ln, tail_col, tail or "end of line", "one slice name after .queue, e.g. '.queue mem0'")
                name = args[0]
                if cfg is not None and name not in cfg.slice_names:
                    err(ln, tail_col, name, f"a slice of config {cfg.name}: {', '.join(cfg.slice_names)}")
                if name in queues:
                    err(ln, tail_col, name, "a queue not opened before (each queue has one section)")
                queues[name] = []
                order.append(name)
                cur = name
            elif d == ".equ":
                toks = _split_operands(tail, tail_col)
                if len(toks) != 2 or not _IDENT.match(toks[0].text):
                    err(ln, tail_col, tail or "end of line", "'.equ NAME, VALUE'")
                v = parse_int(toks[1].text)
                if v is None:
                    v = symbols.get(toks[1].text)
                if v is None:
                    err(ln, toks[1].col, toks[1].text, "an integer or a defined symbol")
                if toks[0].text in symbols:
                    err(ln, toks[0].col, toks[0].text, "a new name (this symbol is already defined)")
                symbols[toks[0].text] = v
            elif d == ".config":
                name = tail.strip()
                if cfg is not None and name not in (cfg.name,):
                    err(ln, tail_col, name, f"config {cfg.name} (the program is being assembled for it)")
            else:
                err(ln, col, word, "a directive: .queue, .equ or .config")
            continue
        mnem = word.upper()
        if mnem not in BY_MNEMONIC:
            err(ln, col, word, "an instruction mnemonic (one of " + ", ".join(sorted(BY_MNEMONIC)) + ")")
        if cur is None:
            err(ln, col, word, "a '.queue NAME' directive before the first instruction")
        toks = _split_operands(tail, tail_col) if tail.strip() else []
        queues[cur].append(None)
        pending.append((cur, len(queues[cur]) - 1, mnem, toks, ln, col, word))

    for q, idx, mnem, toks, ln, col, word in pending:
        info = BY_MNEMONIC[mnem]
        insn, cols = _build(info, toks, symbols, file, ln, col, word)
        if insn.op == Opcode.REPEAT:
            prev = queues[q][idx - 1] if idx > 0 else None
            if prev is None or OPS[prev.op].unit == "any":
                raise AsmError(file, ln, col, word, "REPEAT right after a unit instruction (it repeats that one)")
        if cfg is not None:
            kind = cfg.slice(q).kind
            for fld, msg in insn_problems(insn, kind, cfg):
                c = cols.get(fld, col)
                raise AsmError(file, ln, c, cols.get(fld + "#tok", word), msg)
        queues[q][idx] = insn
    if cfg is not None:
        for q in order:
            if len(queues[q]) > cfg.queue_depth:
                raise AsmError(file, len(lines), 1, q, f"at most {cfg.queue_depth} instructions per queue "
                               f"(queue {q} has {len(queues[q])})")
    return Program({q: queues[q] for q in order})


def _value(tok, symbols, file, ln, expected):
    v = parse_int(tok.text)
    if v is None and tok.text in symbols:
        v = symbols[tok.text]
    if v is None:
        raise AsmError(file, ln, tok.col, tok.text, expected)
    return v


def _build(info, toks, symbols, file, ln, col, word):
    ops = info.operands
    fields, cols, given = {}, {}, set()
    positional = True
    for i, tok in enumerate(toks):
        if not tok.text:
            raise AsmError(file, ln, tok.col, ",", "an operand between commas")
        name, vtext, vcol = None, tok.text, tok.col
        m = re.match(r"^([A-Za-z_]+)\s*=\s*(.*)$", tok.text)
        if m and not _STREAM.match(tok.text):
            name, vtext = m.group(1).lower(), m.group(2)
            vcol = tok.col + tok.text.index(vtext, m.end(1))
            positional = False
            match = [o for o in ops if o.name == name]
            if not match:
                raise AsmError(file, ln, tok.col, name, f"an operand of {info.mnemonic}: " +
                               (", ".join(o.name for o in ops) or "it takes none"))
            o = match[0]
        else:
            if not positional:
                raise AsmError(file, ln, tok.col, tok.text, "name=value (positional operands come first)")
            if i >= len(ops):
                raise AsmError(file, ln, tok.col, tok.text, f"end of line: {info.mnemonic} takes "
                               f"{len(ops)} operand{'s' if len(ops) != 1 else ''}" +
                               (f" ({', '.join(o.name for o in ops)})" if ops else ""))
            o = ops[i]
        if o.name in given:
            raise AsmError(file, ln, tok.col, tok.text, f"operand {o.name} once (it is already given)")
        given.add(o.name)
        vt = _Tok(vtext, vcol)
        cols[o.field] = vcol
        cols[o.field + "#tok"] = vtext
        if o.kind in ("stream", "group"):
            if o.imm_flag and vtext.startswith("#"):
                v = _value(_Tok(vtext[1:], vcol + 1), symbols, file, ln, "an int8 immediate after '#'")
                if not -128 <= v <= 127:
                    raise AsmError(file, ln, vcol, vtext, "an int8 immediate in [-128, 127]")
                fields["imm"], fields["use_imm"] = v, 1
                cols["imm"] = vcol
                continue
            sm = _STREAM.match(vtext)
            if not sm or int(sm.group(2)) > 15:
                what = "a stream: e0..e15 (eastward) or w0..w15 (westward)"
                if o.kind == "group":
                    what = "the first stream of an int32 group (4 streams): e0..e12 or w0..w12"
                if o.imm_flag:
                    what += ", or an immediate '#value'"
                raise AsmError(file, ln, vcol, vtext, what)
            fields[o.field] = StreamRef(int(sm.group(2)), sm.group(1).lower() == "w")
        else:
            if vtext.startswith("#"):
                vt = _Tok(vtext[1:], vcol + 1)
            v = _value(vt, symbols, file, ln, f"an integer for {o.name}")
            lo, hi = _range(o)
            if not lo <= v <= hi:
                raise AsmError(file, ln, vcol, vtext, f"{o.name} in [{lo}, {hi}]")
            fields[o.field] = v
    for o in ops:
        if o.name not in given and o.default is None:
            raise AsmError(file, ln, col, word, f"operand {o.name} of {info.mnemonic} "
                           f"({info.mnemonic} {', '.join(o.name for o in ops)})")
        if o.name not in given:
            fields[o.field] = o.default
    return Insn.make(info.op, **fields), cols


def _range(o):
    if o.kind == "count":
        return 1, COUNT_MAX
    if o.kind == "uint":
        return 0, (1 << o.bits) - 1
    if o.kind == "sint":
        return -(1 << (o.bits - 1)), (1 << (o.bits - 1)) - 1
    raise AssertionError(o.kind)


def disassemble(program: Program, listing=None) -> str:
    """Program -> assembly text that assembles back to the same program.

    ``listing`` may map (queue, index) -> issue cycle; it is added as a comment.
    """
    out = []
    for q, insns in program.queues.items():
        out.append(f".queue {q}")
        for k, insn in enumerate(insns):
            line = f"    {format_insn(insn)}"
            if listing is not None and (q, k) in listing:
                line = f"{line:<44}; cycle {listing[(q, k)]}"
            out.append(line)
    return "\n".join(out) + "\n"
