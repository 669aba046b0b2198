"""Static checks of instructions and programs against a chip configuration.

These catch what can be seen without running: a queue that is not in the floorplan, an opcode on
the wrong kind of slice, a stream index or address out of range, an over-long queue.  What depends
on timing (port conflicts, empty stream slots, repeated addresses running off the end) is checked
by the golden model while it runs.
"""

from tinylpu.config import SLICE_KINDS
from tinylpu.isa import COUNT_MAX, INT32_PLANES, OPS, Format, Insn, Opcode, StreamRef

__all__ = ["insn_problems", "program_problems", "program_ok", "ProgramCheckError", "check_program"]


class ProgramCheckError(ValueError):
    """A program does not fit the chip it is meant for."""


def insn_problems(insn: Insn, kind: str, cfg):
    """Problems of one instruction placed on a slice of `kind`: list of (field, message)."""
    info = OPS[insn.op]
    out = []
    if info.unit == "c2c" and not cfg.c2c_ports:
        out.append(("op", f"{insn.op.name} needs a C2C slice; config {cfg.name} has no C2C ports"))
        return out
    if info.unit not in ("any", kind):
        out.append(("op", f"{insn.op.name} runs on a {info.unit} slice, not on a {kind} slice"))
        return out
    f = insn.fields
    for o in info.operands:
        if o.kind in ("stream", "group"):
            if o.imm_flag and f.get("use_imm"):
                continue
            s: StreamRef = f[o.field]
            top = s.index + (INT32_PLANES - 1 if o.kind == "group" else 0)
            if top >= cfg.streams:
                what = (f"int32 group {s} uses streams {s}..{'w' if s.west else 'e'}{top}"
                        if o.kind == "group" else f"stream {s}")
                out.append((o.field, f"{what}: the chip has {cfg.streams} streams per direction "
                                     f"(e0..e{cfg.streams - 1}, w0..w{cfg.streams - 1})"))
    if info.unit == "c2c" and f["port"] >= cfg.c2c_ports:
        out.append(("port", f"port {f['port']} out of range: config {cfg.name} has {cfg.c2c_ports} C2C ports"))
    n = f.get("count", 1)
    if info.fmt != Format.CTL and insn.op not in (Opcode.TRANS, Opcode.DESKEW) and not 1 <= n <= COUNT_MAX:
        out.append(("count", f"n must be in [1, {COUNT_MAX}], got {n}"))
    op = insn.op
    if op in (Opcode.NOP,) and f["n"] < 1:
        out.append(("n", "NOP needs n >= 1"))
    if op == Opcode.REPEAT:
        if f["n"] < 1:
            out.append(("n", "REPEAT needs n >= 1"))
        if f["d"] < 1:
            out.append(("d", "REPEAT needs d >= 1"))
    if op in (Opcode.READ, Opcode.WRITE):
        lo = min(f["addr"], f["addr"] + (n - 1) * f["stride"])
        hi = max(f["addr"], f["addr"] + (n - 1) * f["stride"])
        if lo < 0 or hi >= cfg.mem_depth:
            out.append(("addr", f"addresses {lo}..{hi} leave the bank (depth {cfg.mem_depth}: 0..{cfg.mem_depth - 1})"))
    if op in (Opcode.GATHER, Opcode.SCATTER) and f["addr"] >= cfg.mem_depth:
        out.append(("addr", f"base {f['addr']} is beyond the bank (depth {cfg.mem_depth})"))
    if op == Opcode.LW and f["addr"] + n > cfg.lanes:
        out.append(("addr", f"rows {f['addr']}..{f['addr'] + n - 1} exceed the {cfg.lanes} weight rows"))
    R = cfg.install_rows
    if op == Opcode.LW and R > 1 and f["s"].index + R > cfg.streams:
        s = f["s"]
        out.append(("s", f"LW installs {R} rows per cycle from streams {s}..{StreamRef(s.index + R - 1, s.west)}: "
                         f"the chip has {cfg.streams} streams per direction, so the first is at most "
                         f"{StreamRef(cfg.streams - R, s.west)}"))
    if op in (Opcode.MM, Opcode.EMIT) and f["addr"] + n > cfg.acc_depth:
        out.append(("addr", f"accumulator entries {f['addr']}..{f['addr'] + n - 1} exceed acc_depth {cfg.acc_depth}"))
    if op == Opcode.LDLUT and (f["imm"] + n) * cfg.lanes > 256:
        out.append(("imm", f"LUT rows {f['imm']}..{f['imm'] + n - 1} exceed the {256 // cfg.lanes} rows "
                           f"of {cfg.lanes} entries"))
    if op in (Opcode.SHIFT, Opcode.ROT) and not -cfg.lanes <= f["imm"] <= cfg.lanes:
        out.append(("imm", f"k must be in [-{cfg.lanes}, {cfg.lanes}], got {f['imm']}"))
    if op == Opcode.DIST and not 0 <= f["imm"] < cfg.lanes:
        out.append(("imm", f"lane must be in [0, {cfg.lanes - 1}], got {f['imm']}"))
    if any(o.imm_flag for o in info.operands) and f.get("use_imm") and not -128 <= f["imm"] <= 127:
        out.append(("imm", f"the immediate operand is an int8: [-128, 127], got {f['imm']}"))
    if op == Opcode.LDM and f["count"] != 4:
        out.append(("count", f"LDM loads exactly 4 vectors, got count {f['count']}"))
    if op == Opcode.TRANS and f["count"] != 0:
        out.append(("count", f"TRANS takes exactly lanes vectors (count field 0), got {f['count']}"))
    if op == Opcode.LDPERM and f["count"] != 1:
        out.append(("count", f"LDPERM loads exactly 1 vector, got count {f['count']}"))
    return out


def program_problems(program, cfg):
    """All static problems of a program: list of strings naming queue, index and instruction."""
    out = []
    names = {s.name: s for s in cfg.slices}
    for q, insns in program.queues.items():
        if q not in names:
            out.append(f"queue {q}: no such slice in config {cfg.name} "
                       f"(floorplan: {', '.join(cfg.slice_names)})")
            continue
        if len(insns) > cfg.queue_depth:
            out.append(f"queue {q}: {len(insns)} instructions, the queue holds {cfg.queue_depth}")
        for k, insn in enumerate(insns):
            # (the previous instruction must be a unit instruction: not NOP, REPEAT, SYNC, NOTIFY,
            # HALT or DESKEW, the instructions of unit "any")
            if insn.op == Opcode.REPEAT and (k == 0 or OPS[insns[k - 1].op].unit == "any"):
                out.append(f"queue {q} #{k} {insn}: REPEAT must follow a unit instruction")
            for fld, msg in insn_problems(insn, names[q].kind, cfg):
                out.append(f"queue {q} #{k} {insn}: {msg}")
    return out


_RULES = {}                    # id(config) -> (config, {id(op): (slice kinds or None for any, problem test or None)})


def _rules(cfg):
    """Per opcode (keyed by its id): the slice kinds it may run on (None: any) and one function of the
    fields that is true on a problem (the tests of ``insn_problems`` that apply to it, in one
    expression: a compiled layer has thousands of instructions), or None when none apply (no kinds at
    all: an opcode this config cannot run)."""
    e = _RULES.get(id(cfg))
    if e is not None and e[0] is cfg:
        return e[1]
    S, R, lanes, depth, acc_depth = cfg.streams, cfg.install_rows, cfg.lanes, cfg.mem_depth, cfg.acc_depth
    out = {}
    for op, info in OPS.items():
        if info.unit == "c2c" and not cfg.c2c_ports:
            out[id(op)] = (frozenset(), None)
            continue
        kinds = None if info.unit == "any" else frozenset([info.unit])
        tests = []
        for o in info.operands:
            if o.kind in ("stream", "group"):
                top = S - (INT32_PLANES - 1 if o.kind == "group" else 0)
                if o.imm_flag:
                    tests.append(f'(not f.get("use_imm") and f["{o.field}"].index >= {top})')
                else:
                    tests.append(f'f["{o.field}"].index >= {top}')
        if info.unit == "c2c":
            tests.append(f'f["port"] >= {int(cfg.c2c_ports)}')
        if info.fmt != Format.CTL and op not in (Opcode.TRANS, Opcode.DESKEW):
            tests.append(f'not 1 <= f.get("count", 1) <= {COUNT_MAX}')
        if op == Opcode.NOP:
            tests.append('f["n"] < 1')
        elif op == Opcode.REPEAT:
            tests.append('(f["n"] < 1 or f["d"] < 1)')
        elif op in (Opcode.READ, Opcode.WRITE):
            # (the first and the last address: a < 0 or b < 0 or a >= depth or b >= depth)
            tests.append(f'not 0 <= f["addr"] < {depth}')
            tests.append(f'not 0 <= f["addr"] + (f.get("count", 1) - 1) * f["stride"] < {depth}')
        elif op in (Opcode.GATHER, Opcode.SCATTER):
            tests.append(f'f["addr"] >= {depth}')
        elif op == Opcode.LW:
            tests.append(f'(f["addr"] + f.get("count", 1) > {lanes} or ({R} > 1 and f["s"].index + {R} > {S}))')
        elif op in (Opcode.MM, Opcode.EMIT):
            tests.append(f'f["addr"] + f.get("count", 1) > {acc_depth}')
        elif op == Opcode.LDLUT:
            tests.append(f'(f["imm"] + f.get("count", 1)) * {lanes} > 256')
        elif op in (Opcode.SHIFT, Opcode.ROT):
            tests.append(f'not -{lanes} <= f["imm"] <= {lanes}')
        elif op == Opcode.DIST:
            tests.append(f'not 0 <= f["imm"] < {lanes}')
        elif op == Opcode.LDM:
            tests.append('f["count"] != 4')
        elif op == Opcode.TRANS:
            tests.append('f["count"] != 0')
        elif op == Opcode.LDPERM:
            tests.append('f["count"] != 1')
        if any(o.imm_flag for o in info.operands):
            tests.append('(f.get("use_imm") and not -128 <= f["imm"] <= 127)')
        # (the config's numbers are ints, written into the expression as literals)
        test = eval("lambda f: " + " or ".join(tests), {}) if tests else None   # noqa: S307
        out[id(op)] = (kinds, test)               # (by id: an enum member's hash runs Python code)
    _RULES[id(cfg)] = (cfg, out)
    if len(_RULES) > 64:
        _RULES.pop(next(iter(_RULES)))
    return out


_INSN_OK = {}                  # id(config) -> (config, {slice: kind bit}, {id(insn): code}, {id(insn): insn})
_INSN_OK_MAX = 1 << 16
# an instruction's code: a bit per slice kind it passes its tests on, | _UNIT (a unit instruction), | _REPEAT
_KIND_BITS = {k: 1 << i for i, k in enumerate(SLICE_KINDS)}
_ALL_KINDS = (1 << len(SLICE_KINDS)) - 1
_UNIT, _REPEAT = 1 << len(SLICE_KINDS), 2 << len(SLICE_KINDS)


def program_ok(program, cfg):
    """Whether ``program_problems`` finds nothing (the same tests, without building messages: a
    compiled layer has thousands of instructions).  Each instruction's own tests (its opcode's
    slice kinds and field tests) are remembered per instruction, as one int (the slice kinds it
    passes on, and whether it is a unit instruction or a REPEAT): an ``Insn`` is immutable and
    ``Insn.make`` makes one object per instruction word, so a word seen before (in any program, any
    queue) is not tested again (the memo keeps the word alive: its id names no other object while
    it is remembered).  The tests that depend on its place (its slice's kind, a REPEAT after a unit
    instruction, the queue's length) are made every time."""
    entry = _INSN_OK.get(id(cfg))
    if entry is None or entry[0] is not cfg:
        if len(_INSN_OK) >= 16:
            _INSN_OK.clear()
        entry = _INSN_OK[id(cfg)] = (cfg, {s.name: _KIND_BITS[s.kind] for s in cfg.slices}, {}, {})
    _, kinds, memo, _ = entry
    depth = cfg.queue_depth
    get = memo.get
    for q, insns in program.queues.items():
        kind = kinds.get(q)
        if kind is None or len(insns) > depth:
            return False
        unit = 0                                    # the previous instruction is a unit instruction
        for insn in insns:
            x = get(id(insn))
            if x is None:
                x = _insn_code(insn, cfg, entry)
            if not x & kind or (x & _REPEAT and not unit):
                return False
            unit = x & _UNIT
    return True


def _insn_code(insn, cfg, entry):
    """`insn`'s code for ``program_ok`` (remembered): the bits of the slice kinds it passes its
    tests on, | _UNIT for a unit instruction, | _REPEAT for a REPEAT."""
    op = insn.op
    ks, test = _rules(cfg)[id(op)]
    if ks is None:
        x = _ALL_KINDS
    else:
        x = _UNIT
        for k in ks:
            x |= _KIND_BITS[k]
    if test is not None and test(insn.fields):
        x &= ~_ALL_KINDS                            # (on no slice)
    if op is Opcode.REPEAT:
        x |= _REPEAT
    memo, keep = entry[2], entry[3]
    if len(memo) >= _INSN_OK_MAX:
        memo.clear()
        keep.clear()
    memo[id(insn)] = x
    keep[id(insn)] = insn
    return x


def check_program(program, cfg):
    if program_ok(program, cfg):
        return
    probs = program_problems(program, cfg)
    if probs:
        more = f" (and {len(probs) - 10} more)" if len(probs) > 10 else ""
        raise ProgramCheckError(f"program does not fit config {cfg.name}:\n  " + "\n  ".join(probs[:10]) + more)
