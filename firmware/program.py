"""A program: one instruction list per slice queue, and its binary container.

Binary format (little endian), version 1::

    magic   8 bytes  b"TLPUPRG\\0"
    version u32      1
    nqueues u32
    per queue:
        name_len u16, name (UTF-8), ninstr u32, ninstr x u64 instruction words (see isa.Instr)
"""

import struct
from dataclasses import dataclass, field

from tinylpu.isa import OPS, Insn, Opcode, decode, encode

__all__ = ["Program", "ProgramFormatError", "MAGIC"]

MAGIC = b"TLPUPRG\0"
VERSION = 1


class ProgramFormatError(ValueError):
    """A program binary is malformed."""


@dataclass
class Program:
    queues: dict = field(default_factory=dict)     # slice name -> list[Insn]

    def __post_init__(self):
        self.queues = {k: list(v) for k, v in self.queues.items()}

    def to_bytes(self) -> bytes:
        out = [MAGIC, struct.pack("<II", VERSION, len(self.queues))]
        for name, insns in self.queues.items():
            nb = name.encode()
            out.append(struct.pack("<H", len(nb)) + nb + struct.pack("<I", len(insns)))
            out.append(b"".join(struct.pack("<Q", encode(i)) for i in insns))
        return b"".join(out)

    @classmethod
    def from_bytes(cls, blob: bytes, source="<bytes>") -> "Program":
        def need(off, n, what):
            if off + n > len(blob):
                raise ProgramFormatError(f"{source}: truncated at byte {off}: expected {what} ({n} bytes), "
                                         f"file has {len(blob)} bytes")
        need(0, 16, "header")
        if blob[:8] != MAGIC:
            raise ProgramFormatError(f"{source}: not a tinylpu program (magic {blob[:8]!r}, expected {MAGIC!r})")
        version, nq = struct.unpack_from("<II", blob, 8)
        if version != VERSION:
            raise ProgramFormatError(f"{source}: program format version {version}, this tool reads version {VERSION}")
        off, queues = 16, {}
        for q in range(nq):
            need(off, 2, f"queue {q} name length")
            (nl,) = struct.unpack_from("<H", blob, off); off += 2
            need(off, nl + 4, f"queue {q} name and count")
            try:
                name = blob[off:off + nl].decode()
            except UnicodeDecodeError:
                raise ProgramFormatError(f"{source}: queue {q} name at byte {off} is not UTF-8") from None
            off += nl
            (ni,) = struct.unpack_from("<I", blob, off); off += 4
            need(off, 8 * ni, f"{ni} instructions of queue {name}")
            insns = []
            for k in range(ni):
                (w,) = struct.unpack_from("<Q", blob, off + 8 * k)
                try:
                    insns.append(decode_strict(w))
                except ValueError as e:
                    raise ProgramFormatError(f"{source}: queue {name}, instruction {k} "
                                             f"(byte {off + 8 * k}): {e}") from None
            off += 8 * ni
            if name in queues:
                raise ProgramFormatError(f"{source}: queue {name} appears twice")
            queues[name] = insns
        if off != len(blob):
            raise ProgramFormatError(f"{source}: {len(blob) - off} trailing bytes after the last queue")
        return cls(queues)

    def __len__(self):
        return sum(len(v) for v in self.queues.values())


def used_fields(op: Opcode):
    info = OPS[op]
    used = {o.field for o in info.operands}
    if any(o.imm_flag for o in info.operands):
        used |= {"imm", "use_imm"}
    if info.fixed:
        used |= set(info.fixed)
    return used


def decode_strict(word: int) -> Insn:
    """Decode and insist that no bit outside the opcode's operands is set (so words round-trip)."""
    insn = decode(word)
    used = used_fields(insn.op)
    if any(o.imm_flag for o in OPS[insn.op].operands):
        used -= {"b"} if insn.use_imm else {"imm"}
    canon = Insn.make(insn.op, **{k: v for k, v in insn.fields.items() if k in used})
    if encode(canon) != word:
        raise ValueError(f"{insn.op.name} word {word:#018x} has bits set outside its operand fields")
    return canon
