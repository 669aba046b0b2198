"""The tinylpu instruction set: the one place where opcodes, encodings and operand syntax live.

Every instruction is a 64-bit word, ``Instr`` below: an 8-bit opcode and a 56-bit argument field whose
layout depends on the opcode's format.  The gateware decodes ``Instr`` views of its queue words, the
assembler builds them with ``Instr.const(...)``, the disassembler and testbench monitors read them
back with ``Instr.from_bits(...)``.  ``OPS`` describes each opcode once: the unit it runs on, its
operands and their assembly syntax, the latency key in the chip config, and its semantics (the text
that ``docs/isa.md`` is generated from).
"""



import enum as pyenum
import functools
from dataclasses import dataclass

from amaranth.hdl import signed
from amaranth.lib import data, enum

__all__ = ["format_insn", "BINARY_OPS", "UNARY_VXM_OPS", "latency_key", "element_count", "Opcode", "Format", "Instr",
           "INSTR_BITS", "OPS", "OpInfo", "Operand", "Insn", "encode", "decode", "StreamRef", "COUNT_MAX",
           "INT32_PLANES"]

INSTR_BITS = 64
COUNT_MAX = 4095          # largest element count of one instruction (12-bit field)
INT32_PLANES = 4          # an int32 vector travels as 4 byte planes on consecutive streams (LSB first)


class Opcode(enum.Enum, shape=8):
    # ICU control: legal in every queue
    NOP = 0x00
    REPEAT = 0x01
    SYNC = 0x02
    NOTIFY = 0x03
    HALT = 0x04
    # MEM
    READ = 0x10
    WRITE = 0x11
    GATHER = 0x12
    SCATTER = 0x13
    # MXM
    LW = 0x20
    MM = 0x21
    EMIT = 0x22
    # VXM
    MOV = 0x30
    ADD = 0x31
    SUB = 0x32
    MUL = 0x33
    MIN = 0x34
    MAX = 0x35
    RELU = 0x36
    SHL = 0x37
    SHR = 0x38
    AND = 0x39
    OR = 0x3A
    XOR = 0x3B
    SEL = 0x3C
    REQ = 0x3D
    REQL = 0x3E
    LUT = 0x3F
    ADD32 = 0x40
    LDM = 0x41
    LDLUT = 0x42
    # SXM
    SHIFT = 0x50
    ROT = 0x51
    PERM = 0x52
    DIST = 0x53
    TRANS = 0x54
    LDPERM = 0x55
    # C2C
    SEND = 0x60
    RECV = 0x61
    DESKEW = 0x62


class StreamField(data.Struct):
    """A stream register name: index within a direction, and the direction (0 = eastward)."""
    index: 4
    west: 1


class CtlArgs(data.Struct):
    n: 24
    d: 16
    _pad: 16


class MemArgs(data.Struct):
    s: StreamField          # data stream: destination of READ/GATHER, source of WRITE/SCATTER
    a: StreamField          # address stream of GATHER/SCATTER
    addr: 16                # vector address (GATHER/SCATTER: base added to the address stream)
    count: 12
    stride: signed(8)
    _pad: 10


class MxmArgs(data.Struct):
    s: StreamField          # source (LW, MM) or first destination plane (EMIT)
    buf: 1                  # weight buffer
    addr: 12                # weight row (LW) or accumulator address (MM, EMIT)
    count: 12
    acc: 1                  # MM: 1 = add into the accumulator, 0 = overwrite
    _pad: 25


class VxmArgs(data.Struct):
    d: StreamField
    a: StreamField
    b: StreamField
    c: StreamField
    count: 12
    imm: signed(16)        # immediate operand / REQ multiplier / LDLUT start row
    sh: 6                   # shift amount
    use_imm: 1              # binary ops: operand b is the immediate
    _pad: 1


class SxmArgs(data.Struct):
    d: StreamField
    a: StreamField
    imm: signed(8)         # shift / rotate amount, or DIST source lane
    count: 12
    _pad: 26


class C2cArgs(data.Struct):
    s: StreamField
    port: 4
    count: 12
    _pad: 35


class Instr(data.Struct):
    """One 64-bit instruction word."""
    op: Opcode
    args: data.UnionLayout({"ctl": CtlArgs, "mem": MemArgs, "mxm": MxmArgs,
                            "vxm": VxmArgs, "sxm": SxmArgs, "c2c": C2cArgs})


assert Instr.as_shape().size == INSTR_BITS


class Format(str, pyenum.Enum):
    CTL = "ctl"
    MEM = "mem"
    MXM = "mxm"
    VXM = "vxm"
    SXM = "sxm"
    C2C = "c2c"


# ---------------------------------------------------------------------------------------------
# Operand descriptions (assembly syntax)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Operand:
    """One assembly operand.

    kind: 'stream' (e0..e15 / w0..w15), 'group' (a stream that starts 4 consecutive int32 planes),
    'uint' / 'sint' (bits wide), 'count' (1..COUNT_MAX).  ``field`` is the argument field it fills.
    An operand with a default may be left out, or given as ``name=value``.
    """
    name: str
    field: str
    kind: str
    bits: int = 0
    default: int | None = None
    imm_flag: bool = False   # 'b' of VXM binary ops: '#value' selects the immediate form
    positional: bool = False  # an optional operand printed positionally (NOP 5) rather than as name=value


@dataclass(frozen=True)
class OpInfo:
    op: Opcode
    fmt: Format
    unit: str                # slice kind that runs it ('any' for ICU control)
    operands: tuple
    latency: str | None      # key into the config's latency table
    summary: str
    fixed: dict = None       # fields with a fixed value (e.g. count=1)

    @property
    def mnemonic(self):
        return self.op.name


def _s(name, field):
    return Operand(name, field, "stream")


def _g(name, field):
    return Operand(name, field, "group")


def _n(default=1):
    return Operand("n", "count", "count", 12, default)


_OPS = [
    # control
    OpInfo(Opcode.NOP, Format.CTL, "any", (Operand("n", "n", "uint", 24, 1, positional=True),), None,
           "Issue nothing for `n` cycles (n >= 1); the next instruction issues n cycles after this one."),
    OpInfo(Opcode.REPEAT, Format.CTL, "any", (Operand("n", "n", "uint", 24), Operand("d", "d", "uint", 16)), None,
           "Issue the previous instruction `n` more times, `d` cycles apart (d >= 1). Each repetition's "
           "address (MEM addr, MXM row/accumulator address, LDLUT row) continues where the previous one "
           "ended: it advances by count x stride. The next instruction issues d cycles after the last repetition."),
    OpInfo(Opcode.SYNC, Format.CTL, "any", (), None,
           "Park this queue until a NOTIFY (from any queue) fires; the next instruction issues on the "
           "cycle the NOTIFY fires."),
    OpInfo(Opcode.NOTIFY, Format.CTL, "any", (), "notify",
           "Wake every parked queue `latency` cycles from now."),
    OpInfo(Opcode.HALT, Format.CTL, "any", (), None,
           "This queue is done. The program ends the cycle after the last queue halts; nothing may be in flight then."),
    # MEM
    OpInfo(Opcode.READ, Format.MEM, "mem",
           (_s("dst", "s"), Operand("addr", "addr", "uint", 16), _n(), Operand("stride", "stride", "sint", 8, 1)),
           "mem_read", "For k < n: vector bank[addr + k*stride] onto stream `dst` (read port)."),
    OpInfo(Opcode.WRITE, Format.MEM, "mem",
           (_s("src", "s"), Operand("addr", "addr", "uint", 16), _n(), Operand("stride", "stride", "sint", 8, 1)),
           "mem_write", "For k < n: the vector on stream `src` into bank[addr + k*stride] (write port)."),
    OpInfo(Opcode.GATHER, Format.MEM, "mem",
           (_s("dst", "s"), _s("idx", "a"), Operand("base", "addr", "uint", 16, 0), _n()),
           "mem_read", "For k < n: vector bank[base + idx] onto `dst`, where idx is the uint16 in lanes 0 (low) "
           "and 1 (high) of the vector on stream `idx` (read port)."),
    OpInfo(Opcode.SCATTER, Format.MEM, "mem",
           (_s("src", "s"), _s("idx", "a"), Operand("base", "addr", "uint", 16, 0), _n()),
           "mem_write", "For k < n: the vector on `src` into bank[base + idx], idx as in GATHER (write port)."),
    # MXM
    OpInfo(Opcode.LW, Format.MXM, "mxm",
           (_s("src", "s"), Operand("buf", "buf", "uint", 1), Operand("row", "addr", "uint", 12), _n()),
           "mxm_install", "Install weights, R = `install_rows` (config) rows per cycle: the LW runs E = ceil(n / R) "
           "elements, at cycles t .. t+E-1 (the install sub-unit is busy for E cycles). Element k samples the R "
           "streams src+j (j = 0..R-1, the direction of `src`) at t+k and writes weight buffer `buf` row "
           "(row + k*R + j) <- the int8 vector on stream src+j, for every j with k*R + j < n; each sampled stream "
           "must hold a vector. A row so installed is used by MM elements issued from t+k+latency. For R > 1, "
           "src+R-1 must be a stream of the chip. With R = 1: for k < n, row (row + k) <- the vector on `src` "
           "at t+k. Row i holds the weights from input lane i to every output lane."),
    OpInfo(Opcode.MM, Format.MXM, "mxm",
           (_s("src", "s"), Operand("buf", "buf", "uint", 1), Operand("addr", "addr", "uint", 12), _n(),
            Operand("acc", "acc", "uint", 1, 0)),
           "mxm_mm", "For k < n: x = int8 vector on `src`; y[j] = sum_i x[i] * W[buf][i][j] (int32, wrapping); "
           "acc[addr + k] = y (acc=0) or acc[addr + k] + y (acc=1)."),
    OpInfo(Opcode.EMIT, Format.MXM, "mxm",
           (_g("dst", "s"), Operand("addr", "addr", "uint", 12), _n()),
           "mxm_emit", "For k < n: acc[addr + k] as int32 onto streams dst..dst+3, one byte plane each, "
           "least significant byte on `dst`."),
    # VXM
    OpInfo(Opcode.MOV, Format.VXM, "vxm", (_s("dst", "d"), _s("a", "a"), _n()), "vxm_alu", "dst = a."),
    OpInfo(Opcode.ADD, Format.VXM, "vxm", (_s("dst", "d"), _s("a", "a"), Operand("b", "b", "stream", imm_flag=True), _n()),
           "vxm_alu", "dst = sat8(a + b). `b` may be `#imm` (int8)."),
    OpInfo(Opcode.SUB, Format.VXM, "vxm", (_s("dst", "d"), _s("a", "a"), Operand("b", "b", "stream", imm_flag=True), _n()),
           "vxm_alu", "dst = sat8(a - b)."),
    OpInfo(Opcode.MUL, Format.VXM, "vxm",
           (_s("dst", "d"), _s("a", "a"), Operand("b", "b", "stream", imm_flag=True), Operand("sh", "sh", "uint", 6, 0), _n()),
           "vxm_mul", "dst = sat8(rshift_round(a * b, sh))."),
    OpInfo(Opcode.MIN, Format.VXM, "vxm", (_s("dst", "d"), _s("a", "a"), Operand("b", "b", "stream", imm_flag=True), _n()),
           "vxm_alu", "dst = min(a, b)."),
    OpInfo(Opcode.MAX, Format.VXM, "vxm", (_s("dst", "d"), _s("a", "a"), Operand("b", "b", "stream", imm_flag=True), _n()),
           "vxm_alu", "dst = max(a, b)."),
    OpInfo(Opcode.RELU, Format.VXM, "vxm", (_s("dst", "d"), _s("a", "a"), _n()), "vxm_alu", "dst = max(a, 0)."),
    OpInfo(Opcode.SHL, Format.VXM, "vxm", (_s("dst", "d"), _s("a", "a"), Operand("k", "sh", "uint", 3), _n()),
           "vxm_alu", "dst = (a << k) mod 2^8 (bit shift, wraps)."),
    OpInfo(Opcode.SHR, Format.VXM, "vxm", (_s("dst", "d"), _s("a", "a"), Operand("k", "sh", "uint", 3), _n()),
           "vxm_alu", "dst = a >> k (arithmetic: rounds toward minus infinity)."),
    OpInfo(Opcode.AND, Format.VXM, "vxm", (_s("dst", "d"), _s("a", "a"), Operand("b", "b", "stream", imm_flag=True), _n()),
           "vxm_alu", "dst = a & b."),
    OpInfo(Opcode.OR, Format.VXM, "vxm", (_s("dst", "d"), _s("a", "a"), Operand("b", "b", "stream", imm_flag=True), _n()),
           "vxm_alu", "dst = a | b."),
    OpInfo(Opcode.XOR, Format.VXM, "vxm", (_s("dst", "d"), _s("a", "a"), Operand("b", "b", "stream", imm_flag=True), _n()),
           "vxm_alu", "dst = a ^ b."),
    OpInfo(Opcode.SEL, Format.VXM, "vxm", (_s("dst", "d"), _s("a", "a"), _s("b", "b"), _s("c", "c"), _n()),
           "vxm_alu", "dst = a where c != 0, else b (per lane)."),
    OpInfo(Opcode.REQ, Format.VXM, "vxm",
           (_s("dst", "d"), _g("a", "a"), Operand("m", "imm", "sint", 16), Operand("sh", "sh", "uint", 6), _n()),
           "vxm_req", "Requantize: dst = sat8(rshift_round(A * m, sh)), A the int32 on streams a..a+3, "
                      "m an int16 per instruction."),
    OpInfo(Opcode.REQL, Format.VXM, "vxm", (_s("dst", "d"), _g("a", "a"), _n()),
           "vxm_req", "Requantize per lane: dst[j] = sat8(rshift_round(A[j] * M[j], SH[j]) + Z[j]) with the "
                      "multipliers, shifts and int8 offsets (a bias at the output scale) loaded by LDM."),
    OpInfo(Opcode.LUT, Format.VXM, "vxm", (_s("dst", "d"), _s("a", "a"), _n()),
           "vxm_lut", "dst = T[a mod 256]: the 256-entry int8 table loaded by LDLUT (indexed by a's bit pattern)."),
    OpInfo(Opcode.ADD32, Format.VXM, "vxm", (_g("dst", "d"), _g("a", "a"), _g("b", "b"), _n()),
           "vxm_alu", "int32 add, wrapping: planes dst..dst+3 = (a..a+3) + (b..b+3)."),
    OpInfo(Opcode.LDM, Format.VXM, "vxm", (_s("src", "a"),),
           "vxm_alu", "Load the per-lane requantization registers from 4 consecutive vectors on `src`: "
                      "element 0 = low bytes and element 1 = high bytes of the int16 multipliers M, element 2 = "
                      "the shifts SH (mod 64), element 3 = the int8 offsets Z. Each register is used by REQL "
                      "elements from the cycle after it is loaded.", fixed={"count": 4}),
    OpInfo(Opcode.LDLUT, Format.VXM, "vxm", (_s("src", "a"), Operand("row", "imm", "uint", 8, 0), _n()),
           "vxm_alu", "Load the LUT: for k < n, T[(row + k) * lanes + j] = src[j]. "
                      "Used by LUT instructions issued from the next cycle on."),
    # SXM
    OpInfo(Opcode.SHIFT, Format.SXM, "sxm", (_s("dst", "d"), _s("a", "a"), Operand("k", "imm", "sint", 8), _n()),
           "sxm", "dst[j] = a[j - k] when 0 <= j - k < lanes, else 0."),
    OpInfo(Opcode.ROT, Format.SXM, "sxm", (_s("dst", "d"), _s("a", "a"), Operand("k", "imm", "sint", 8), _n()),
           "sxm", "dst[j] = a[(j - k) mod lanes]."),
    OpInfo(Opcode.PERM, Format.SXM, "sxm", (_s("dst", "d"), _s("a", "a"), _n()),
           "sxm", "dst[j] = a[P[j]], P the lane map loaded by LDPERM (repeats allowed: a general distribute)."),
    OpInfo(Opcode.DIST, Format.SXM, "sxm", (_s("dst", "d"), _s("a", "a"), Operand("lane", "imm", "uint", 7), _n()),
           "sxm", "dst[j] = a[lane] (broadcast one lane)."),
    OpInfo(Opcode.TRANS, Format.SXM, "sxm", (_s("dst", "d"), _s("a", "a")),
           "sxm", "Transpose a lanes x lanes block: takes `lanes` vectors from `a` on consecutive cycles, then emits "
                  "row j = (x_0[j], ..., x_{lanes-1}[j]) on `dst`, row j at (last input cycle) + latency + j. "
                  "The SXM is busy for 2 x lanes cycles.", fixed={"count": 0}),
    OpInfo(Opcode.LDPERM, Format.SXM, "sxm", (_s("src", "a"),),
           "sxm", "Load the lane map: P[j] = src[j] mod lanes. Used by PERM instructions issued from the next cycle on.",
           fixed={"count": 1}),
    # C2C (reserved)
    OpInfo(Opcode.SEND, Format.C2C, "c2c", (Operand("port", "port", "uint", 4), _s("src", "s"), _n()), None,
           "For k < n: the vector on `src`, sampled at cycle t + k x F (F = `vector_interval`, the link's cycles per "
           "vector: flit_words + 1 with c2c.framing flit, the payload words 8 x lanes / width_bits with burst), goes "
           "out on C2C `port`. Flit framing: vector k can be received from link_latency cycles after it was sampled. "
           "Burst framing: the SEND is one frame (n <= c2c.burst_vectors, else the `link` error), every vector of it "
           "can be received from link_latency cycles after its last element (t + (n - 1) x F), and the port's next "
           "SEND may start at t + n x F + frame_gap at the earliest (LinkParams.frame_gap)."),
    OpInfo(Opcode.RECV, Format.C2C, "c2c", (_s("dst", "s"), Operand("port", "port", "uint", 4), _n()), "c2c_recv",
           "For k < n: at cycle t + k x F, the oldest vector that has arrived on `port` onto stream `dst` "
           "(an error if none has arrived)."),
    OpInfo(Opcode.DESKEW, Format.C2C, "any", (), None,
           "Park this queue until the next epoch boundary (cycle a multiple of c2c.epoch), where the chips "
           "realign their counters; every live queue must be parked in DESKEW then, with nothing in flight."),
]

OPS: dict[Opcode, OpInfo] = {i.op: i for i in _OPS}
assert set(OPS) == set(Opcode), set(Opcode) - set(OPS)
BY_MNEMONIC = {i.mnemonic: i for i in _OPS}

#: VXM ops with a second int8 operand `b` that may be a stream or an immediate (``use_imm``)
BINARY_OPS = tuple(i.op for i in _OPS if any(o.field == "b" and o.imm_flag for o in i.operands))
#: VXM ops with one int8 stream operand and no second one
UNARY_VXM_OPS = tuple(i.op for i in _OPS if i.unit == "vxm" and [o.kind for o in i.operands[:2]] == ["stream", "stream"]
                      and not any(o.field in ("b", "c") for o in i.operands) and i.operands[0].field == "d")


def latency_key(op) -> str | None:
    """The config latency key of an opcode (``OPS[op].latency``): the one op-to-latency table."""
    return OPS[Opcode(op)].latency


def element_count(op, count, install_rows=1) -> int:
    """Elements (cycles on its sub-unit) of a unit instruction with element-count field `count`:
    LW installs `install_rows` rows per element, so it runs ceil(count / install_rows) elements;
    every other counted op runs `count` (TRANS and the C2C ops have their own rules)."""
    if Opcode(op) == Opcode.LW:
        return -(-count // install_rows)
    return count


# ---------------------------------------------------------------------------------------------
# A decoded instruction as plain Python (for the assembler, golden model and compiler)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StreamRef:
    index: int
    west: bool

    def __str__(self):
        return f"{'w' if self.west else 'e'}{self.index}"

    @property
    def bits(self):
        return self.index | (int(self.west) << 4)

    @classmethod
    def from_bits(cls, v):
        return cls(v & 0xF, bool(v >> 4 & 1))


_MADE = {}       # Insn.make's instructions by (op, fields and their types as passed): the compiler makes many alike


@dataclass(frozen=True)
class Insn:
    """A decoded instruction: opcode plus the values of its format's fields (streams as StreamRef)."""
    op: Opcode
    f: tuple   # sorted (field, value) pairs

    @classmethod
    def make(cls, op, **fields):
        key = (op, *((k, v, type(v)) for k, v in fields.items()))     # (True and 1 are equal keys)
        try:
            hit = _MADE.get(key)
        except TypeError:               # (an unhashable field value: made, not remembered)
            key, hit = None, None
        if hit is not None:
            return hit
        info = OPS[op]
        full = dict(_field_defaults(info))
        if info.fixed:
            full.update(info.fixed)
        full.update(fields)
        insn = cls(op, tuple(sorted(full.items())))
        if key is not None:
            if len(_MADE) >= 1 << 16:
                _MADE.clear()
            _MADE[key] = insn
        return insn

    def __getattr__(self, name):
        if name in ("op", "f", "fields") or name.startswith("__"):
            raise AttributeError(name)
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(f"{self.op.name} has no field {name!r}") from None

    @functools.cached_property
    def fields(self):
        return dict(self.f)

    @property
    def info(self) -> OpInfo:
        return OPS[self.op]

    def replace(self, **kw):
        d = dict(self.fields)
        d.update(kw)
        return Insn(self.op, tuple(sorted(d.items())))

    def __str__(self):
        return format_insn(self)


_FMT_FIELDS = {
    Format.CTL: {"n": 0, "d": 0},
    Format.MEM: {"s": StreamRef(0, False), "a": StreamRef(0, False), "addr": 0, "count": 1, "stride": 1},
    Format.MXM: {"s": StreamRef(0, False), "buf": 0, "addr": 0, "count": 1, "acc": 0},
    Format.VXM: {"d": StreamRef(0, False), "a": StreamRef(0, False), "b": StreamRef(0, False),
                 "c": StreamRef(0, False), "count": 1, "imm": 0, "sh": 0, "use_imm": 0},
    Format.SXM: {"d": StreamRef(0, False), "a": StreamRef(0, False), "imm": 0, "count": 1},
    Format.C2C: {"s": StreamRef(0, False), "port": 0, "count": 1},
}


def _field_defaults(info):
    return _FMT_FIELDS[info.fmt]


def encode(insn: Insn) -> int:
    """Encode to a 64-bit word through the ``Instr`` layout."""
    fmt = OPS[insn.op].fmt.value
    args = {}
    for k, v in insn.f:
        if isinstance(v, StreamRef):
            v = {"index": v.index, "west": int(v.west)}
        args[k] = v
    return Instr.const({"op": insn.op, "args": {fmt: args}}).as_bits()


def decode(word: int) -> Insn:
    """Decode a 64-bit word; raises ValueError naming the opcode if it is not defined."""
    if not 0 <= word < 1 << INSTR_BITS:
        raise ValueError(f"instruction word {word:#x} is not a 64-bit value")
    opbits = word & 0xFF
    try:
        op = Opcode(opbits)
    except ValueError:
        raise ValueError(f"undefined opcode {opbits:#04x}") from None
    view = Instr.from_bits(word)
    info = OPS[op]
    args = getattr(view.args, info.fmt.value)
    fields = {}
    for k in _FMT_FIELDS[info.fmt]:
        v = getattr(args, k)
        if isinstance(v, data.Const):
            v = StreamRef.from_bits(v.as_bits())
        fields[k] = int(v) if not isinstance(v, StreamRef) else v
    return Insn(op, tuple(sorted(fields.items())))


def format_insn(insn: Insn) -> str:
    """Canonical text of an instruction: required operands positional, others as name=value if not default."""
    info = OPS[insn.op]
    f = insn.fields
    parts = []
    for o in info.operands:
        if o.imm_flag and f.get("use_imm"):
            text = f"#{f['imm']}"
        elif o.kind in ("stream", "group"):
            text = str(f[o.field])
        else:
            text = str(f[o.field])
        if o.default is None or (o.positional and f[o.field] != o.default):
            parts.append(text)
        elif f[o.field] != o.default:
            parts.append(f"{o.name}={text}")
    return info.mnemonic + ((" " + ", ".join(parts)) if parts else "")
