"""Shapes and signatures shared by every tinylpu unit.

Conventions (see docs/rtl.md):

* A vector is ``unsigned(8 * lanes)``; lane j is bits [8j, 8j+8), an int8 in two's complement.
* Every slice unit sees the stream registers at its own position (``east``/``west`` data and
  valid bits) and drives one result port ``out``.  Driving ``out.valid`` during cycle c loads the
  addressed register(s) at the end of c, so the value is visible during c+1: a result the golden
  model makes visible at cycle D is driven during D-1.
* ``issue``/``insn``: the slice's ICU presents a unit instruction in the cycle it issues (the
  golden model's issue cycle t); element 0 samples its operands in that same cycle.
* ``busy``: high in cycle c when the unit still has something to do (sample, drive, write) in a
  cycle >= c.  ``err``: one-cycle pulses; the chip keeps them sticky in its status register.
"""

from amaranth.hdl import unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..firmware.isa import INT32_PLANES, Instr

__all__ = ["vec", "Vec", "ErrorFlags", "OutPortSignature", "StreamTap", "unit_signature", "ERROR_BITS"]


def vec(lanes):
    return unsigned(8 * lanes)


def Vec(lanes):  # noqa: N802 (a shape constructor)
    return vec(lanes)


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


def OutPortSignature(lanes):  # noqa: N802
    """A slice's stream output port: up to four vectors (an int32 group) onto consecutive streams."""
    return wiring.Signature({
        "valid": Out(1),
        "west": Out(1),
        "index": Out(4),
        "wide": Out(1),      # 1: data[0..3] onto streams index..index+3; 0: data[0] onto stream index
        "data": Out(data.ArrayLayout(vec(lanes), INT32_PLANES)),
    })


def StreamTap(lanes, streams):  # noqa: N802
    """The stream registers at one position, as seen by the slice there."""
    return wiring.Signature({
        "east": Out(data.ArrayLayout(vec(lanes), streams)),
        "east_valid": Out(streams),
        "west": Out(data.ArrayLayout(vec(lanes), streams)),
        "west_valid": Out(streams),
    })


def unit_signature(cfg, extra=None):
    """The members every slice unit has; `extra` adds unit-specific ones (host access etc.)."""
    members = {
        "issue": In(1),
        "insn": In(Instr),
        "tap": In(StreamTap(cfg.lanes, cfg.streams)),
        "out": Out(OutPortSignature(cfg.lanes)),
        "busy": Out(1),
        "err": Out(ErrorFlags),
    }
    members.update(extra or {})
    return members
