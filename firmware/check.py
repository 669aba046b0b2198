"""Static checks of instructions and programs against a chip configuration.

These catch what can be seen without running: a queue that is not in the floorplan, an opcode on
the wrong kind of slice, a stream index or address out of range, an over-long queue.  What depends
on timing (port conflicts, empty stream slots, repeated addresses running off the end) is checked
by the golden model while it runs.
"""

from tinylpu.isa import COUNT_MAX, INT32_PLANES, OPS, Format, Insn, Opcode, StreamRef

__all__ = ["insn_problems", "program_problems", "ProgramCheckError", "check_program"]


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
            if insn.op == Opcode.REPEAT and (k == 0 or OPS[insns[k - 1].op].fmt == Format.CTL):
                out.append(f"queue {q} #{k} {insn}: REPEAT must follow a unit instruction")
            for fld, msg in insn_problems(insn, names[q].kind, cfg):
                out.append(f"queue {q} #{k} {insn}: {msg}")
    return out


def check_program(program, cfg):
    probs = program_problems(program, cfg)
    if probs:
        more = f" (and {len(probs) - 10} more)" if len(probs) > 10 else ""
        raise ProgramCheckError(f"program does not fit config {cfg.name}:\n  " + "\n  ".join(probs[:10]) + more)
