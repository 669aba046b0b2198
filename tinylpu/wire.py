"""Wire formats of the host port: the 64-bit command word, the two STATUS words, the error flags
and the layout of a vector across host words.

One definition for both sides: the gateware (``hdl/hostport.py``) views its stream payload through
these ``lib.data`` Structs, and the host protocol (``sim/host/proto.py``) packs and parses words
with the same Structs (docs/rtl.md, "Host port").
"""

from amaranth.lib import data, enum

__all__ = ["Cmd", "CommandWord", "StatusWord0", "StatusWord1", "ErrorFlags", "ERROR_BITS",
           "command", "parse_command", "status_words", "parse_status", "vector_words", "words_vector",
           "HOST_WORD_BITS", "MASK64"]

HOST_WORD_BITS = 64
MASK64 = (1 << HOST_WORD_BITS) - 1


class Cmd(enum.Enum, shape=8):
    WRITE_MEM = 0x01
    READ_MEM = 0x02
    LOAD_QUEUE = 0x03
    START = 0x04
    STATUS = 0x05


class CommandWord(data.Struct):
    """A command word: bits 0-7 command, 8-15 target, 16-31 address, 32-47 count."""
    cmd: 8              # a ``Cmd`` value; unknown values are dropped by the chip
    target: 8           # bank number (WRITE_MEM, READ_MEM) or slice position (LOAD_QUEUE)
    address: 16
    count: 16
    reserved: 16


class ErrorFlags(data.Struct):
    """Program errors the chip flags in status (each maps to a golden-model ProgramError)."""
    empty: 1      # an element sampled a stream slot holding no data
    busy: 1       # an instruction issued to a busy sub-unit
    port: 1       # two results landed on one slice's stream port in the same cycle
    addr: 1       # an address out of range (GATHER/SCATTER index, REPEAT running past the end)
    hazard: 1     # an accumulator entry read before its pending MM write committed
    inflight: 1   # work still in flight when the last queue halted
    queue: 1      # a queue ran past its last instruction without HALT / undefined opcode
    deadlock: 1   # every live queue parked in SYNC with no NOTIFY coming
    link: 1       # C2C: RECV found no vector, an RX vector FIFO overflowed, or the link TX overran


ERROR_BITS = [name for name, _ in data.Layout.cast(ErrorFlags)]


class StatusWord0(data.Struct):
    """First STATUS answer: run state and the sticky error flags."""
    running: 1
    done: 1
    reserved0: 6
    errors: 16          # ``ErrorFlags`` in its low bits
    reserved1: 40


class StatusWord1(data.Struct):
    """Second STATUS answer: the cycle counter and the DESKEW stall cycles (0 without C2C)."""
    cycles: 32
    stall: 32


for _s in (CommandWord, StatusWord0, StatusWord1):
    assert _s.as_shape().size == HOST_WORD_BITS, _s
assert len(ERROR_BITS) <= 16


def command(cmd, target=0, address=0, count=0) -> int:
    """A command word as an integer (for hosts and testbenches); fields are truncated to width."""
    return CommandWord.const({"cmd": int(getattr(cmd, "value", cmd)) & 0xFF, "target": target & 0xFF,
                              "address": address & 0xFFFF, "count": count & 0xFFFF}).as_bits()


def parse_command(word) -> dict:
    """A command word -> {"cmd" (a Cmd, or the raw int if undefined), "target", "address", "count"}."""
    c = CommandWord.from_bits(word)
    try:
        op = Cmd(c.cmd)
    except ValueError:
        op = int(c.cmd)
    return {"cmd": op, "target": int(c.target), "address": int(c.address), "count": int(c.count)}


def status_words(running, done, errors, cycles, stall=0) -> tuple:
    """The two STATUS answer words (what the chip sends) from their fields; errors as a bit mask."""
    w0 = StatusWord0.const({"running": int(running), "done": int(done), "errors": errors}).as_bits()
    w1 = StatusWord1.const({"cycles": cycles & 0xFFFFFFFF, "stall": stall & 0xFFFFFFFF}).as_bits()
    return w0, w1


def parse_status(w0, w1) -> dict:
    """STATUS's two answer words -> {"running", "done", "error_bits", "errors", "cycles", "stall"}."""
    s0, s1 = StatusWord0.from_bits(w0), StatusWord1.from_bits(w1)
    errs = int(s0.errors)
    return {"running": bool(s0.running), "done": bool(s0.done), "error_bits": errs,
            "errors": [n for i, n in enumerate(ERROR_BITS) if errs >> i & 1], "cycles": int(s1.cycles),
            "stall": int(s1.stall)}


def vector_words(vec, lanes) -> list:
    """int8 lanes -> host words (lane 0 in bits 0-7 of the first word; ceil(lanes/8) words)."""
    v = 0
    for j, x in enumerate(vec):
        v |= (int(x) & 0xFF) << (8 * j)
    return [(v >> (64 * k)) & MASK64 for k in range(-(-lanes // 8))]


def words_vector(words, lanes) -> list:
    """Host words -> int8 lanes (the inverse of ``vector_words``)."""
    v = 0
    for k, w in enumerate(words):
        v |= w << (64 * k)
    out = []
    for j in range(lanes):
        b = (v >> (8 * j)) & 0xFF
        out.append(b - 256 if b >= 128 else b)
    return out
