"""Integer arithmetic of the ISA, shared by the golden model, the compiler and the tests.

Every function is the exact definition the RTL implements (docs/microarchitecture.md):
saturation to int8, arithmetic right shift with round-half-up, requantization of int32
accumulators, and the split of int32 values into the four int8 byte planes that travel on
four consecutive streams.
"""

import numpy as np

from tinylpu.isa import INT32_PLANES

__all__ = ["sat8", "rshift_round", "requantize", "int32_to_planes", "planes_to_int32"]

# ------------------------------------------------------------------------------------------

def sat8(x):
    return np.clip(x, -128, 127).astype(np.int8)


def rshift_round(x, sh):
    """Arithmetic right shift with round-half-up: floor((x + 2^(sh-1)) / 2^sh); sh = 0 is identity.

    x: int64 array; sh: int or int array (per lane).
    """
    x = np.asarray(x, dtype=np.int64)
    sh = np.asarray(sh, dtype=np.int64)
    bias = np.where(sh > 0, np.left_shift(np.int64(1), np.maximum(sh - 1, 0)), 0)
    return np.right_shift(x + bias, sh)


def requantize(acc, m, sh, z=0):
    """int32 accumulators -> int8: sat8(rshift_round(acc * m, sh) + z); m int16, sh in 0..63, z int8."""
    p = np.asarray(acc, dtype=np.int64) * np.asarray(m, dtype=np.int64)
    # |p| < 2^47, so shifts of 48..63 give 0; clamping at 62 keeps the rounding bias inside int64.
    return sat8(rshift_round(p, np.minimum(sh, 62)) + np.asarray(z, dtype=np.int64))


def int32_to_planes(v):
    u = np.asarray(v, dtype=np.int32).view(np.uint32)
    return [((u >> (8 * b)) & 0xFF).astype(np.uint8).view(np.int8) for b in range(INT32_PLANES)]


def planes_to_int32(planes):
    u = np.zeros(planes[0].shape, dtype=np.uint32)
    for b, p in enumerate(planes):
        u |= p.view(np.uint8).astype(np.uint32) << np.uint32(8 * b)
    return u.view(np.int32)
