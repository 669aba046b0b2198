"""Every opcode of the golden model against plain numpy arithmetic, with edge operands."""

import numpy as np
import pytest

from tests.harness import run_unit_op
from tinylpu.arith import int32_to_planes, planes_to_int32
from tinylpu.config import load_config
from tinylpu.isa import Opcode

CFG = load_config("tiny")
LANES = CFG.lanes
EDGE = np.array([-128, 127, 0, -1, 1, -127, 126, 64, -64, 100, -100, 2, -2, 127, -128, 5], dtype=np.int8)


def vecs(seed, n=4):
    rng = np.random.default_rng(seed)
    v = rng.integers(-128, 128, (n, LANES), dtype=np.int8)
    v[0] = EDGE
    v[1] = EDGE[::-1]
    return v


def i64(x):
    return np.asarray(x, dtype=np.int64)


def sat(x):
    return np.clip(x, -128, 127)


def rsr(x, s):
    """Round-half-up right shift written independently of the golden model's helper."""
    x = i64(x)
    if s == 0:
        return x
    return (x + (1 << (s - 1))) // (1 << s)


BINARY = {
    Opcode.ADD: lambda a, b: sat(a + b),
    Opcode.SUB: lambda a, b: sat(a - b),
    Opcode.MIN: np.minimum,
    Opcode.MAX: np.maximum,
    Opcode.AND: np.bitwise_and,
    Opcode.OR: np.bitwise_or,
    Opcode.XOR: np.bitwise_xor,
}


@pytest.mark.parametrize("op", list(BINARY), ids=lambda o: o.name)
def test_vxm_binary(op):
    a, b = vecs(1), vecs(2)[::-1].copy()
    (res,), _, _ = run_unit_op(CFG, "vxm0", op, {"a": a, "b": b})
    assert np.array_equal(res, BINARY[op](i64(a), i64(b)).astype(np.int8))


@pytest.mark.parametrize("op", list(BINARY), ids=lambda o: o.name)
@pytest.mark.parametrize("imm", [-128, 127, -1, 3])
def test_vxm_binary_immediate(op, imm):
    a = vecs(3)
    (res,), _, _ = run_unit_op(CFG, "vxm0", op, {"a": a}, imm=imm, use_imm=1)
    assert np.array_equal(res, BINARY[op](i64(a), imm).astype(np.int8))


@pytest.mark.parametrize("sh", [0, 1, 4, 7, 15])
def test_vxm_mul_rounds_and_saturates(sh):
    a, b = vecs(4), vecs(5)
    (res,), _, _ = run_unit_op(CFG, "vxm0", Opcode.MUL, {"a": a, "b": b}, sh=sh)
    assert np.array_equal(res, sat(rsr(i64(a) * i64(b), sh)).astype(np.int8))
    if sh == 0:  # -128 * -128 saturates
        assert res[0, 0] == 127


def test_vxm_unary_and_shifts():
    a = vecs(6)
    (r,), _, _ = run_unit_op(CFG, "vxm0", Opcode.MOV, {"a": a})
    assert np.array_equal(r, a)
    (r,), _, _ = run_unit_op(CFG, "vxm0", Opcode.RELU, {"a": a})
    assert np.array_equal(r, np.maximum(a, 0))
    for k in (0, 1, 3, 7):
        (r,), _, _ = run_unit_op(CFG, "vxm0", Opcode.SHL, {"a": a}, sh=k)
        assert np.array_equal(r, ((i64(a) << k) & 0xFF).astype(np.uint8).view(np.int8))
        (r,), _, _ = run_unit_op(CFG, "vxm0", Opcode.SHR, {"a": a}, sh=k)
        assert np.array_equal(r, (i64(a) // (1 << k)).astype(np.int8))


def test_vxm_select():
    a, b, c = vecs(7), vecs(8), vecs(9)
    c[2] = 0
    (r,), _, _ = run_unit_op(CFG, "vxm0", Opcode.SEL, {"a": a, "b": b, "c": c})
    assert np.array_equal(r, np.where(c != 0, a, b))


def _acc_values(seed, n=4):
    rng = np.random.default_rng(seed)
    v = rng.integers(-(1 << 31), 1 << 31, (n, LANES), dtype=np.int64)
    v[0, :4] = [-(1 << 31), (1 << 31) - 1, 0, -1]
    v[0, 4:8] = [64, -64, 96, -96]   # rounding ties for small shifts
    return v.astype(np.int32)


@pytest.mark.parametrize("m,sh", [(1, 0), (3, 9), (-7, 6), (32767, 40), (-32768, 47), (12345, 63), (1, 1), (1, 7)])
def test_vxm_requantize_per_instruction(m, sh):
    acc = _acc_values(10)
    (r,), _, _ = run_unit_op(CFG, "vxm0", Opcode.REQ, {"a": int32_to_planes(acc)}, imm=m, sh=sh)
    assert np.array_equal(r, sat(rsr(i64(acc) * m, min(sh, 62))).astype(np.int8))


def test_vxm_requantize_per_lane():
    acc = _acc_values(11)
    rng = np.random.default_rng(12)
    m = rng.integers(-32768, 32768, LANES).astype(np.int16)
    m[:3] = [-32768, 32767, 0]
    sh = rng.integers(0, 64, LANES)
    lo = (m.view(np.uint16) & 0xFF).astype(np.uint8).view(np.int8).reshape(1, -1)
    hi = (m.view(np.uint16) >> 8).astype(np.uint8).view(np.int8).reshape(1, -1)
    shv = sh.astype(np.uint8).view(np.int8).reshape(1, -1)
    z = rng.integers(-128, 128, (1, LANES)).astype(np.int8)
    z[0, :2] = [127, -128]
    (r,), _, _ = run_unit_op(CFG, "vxm0", Opcode.REQL, {"a": int32_to_planes(acc)},
                             pre=[(Opcode.LDM, {"a": np.concatenate([lo, hi, shv, z])}, {"count": 4})])
    exp = np.stack([sat(rsr(i64(acc[:, j]) * int(m[j]), min(int(sh[j]), 62)) + int(z[0, j]))
                    for j in range(LANES)], axis=1)
    assert np.array_equal(r, exp.astype(np.int8))


def test_vxm_add32_wraps():
    a, b = _acc_values(13), _acc_values(14)
    a[1, 0], b[1, 0] = (1 << 31) - 1, 1              # wraps to -2^31
    a[1, 1], b[1, 1] = -(1 << 31), -1                # wraps to 2^31 - 1
    res, _, _ = run_unit_op(CFG, "vxm0", Opcode.ADD32, {"a": int32_to_planes(a), "b": int32_to_planes(b)},
                            out_planes=4)
    got = planes_to_int32(res)
    assert np.array_equal(got, (i64(a) + i64(b) + (1 << 31)) % (1 << 32) - (1 << 31))
    assert got[1, 0] == -(1 << 31) and got[1, 1] == (1 << 31) - 1


def test_vxm_lut():
    table = np.random.default_rng(15).integers(-128, 128, 256, dtype=np.int8)
    rows = table.reshape(256 // LANES, LANES)
    a = vecs(16)
    (r,), _, _ = run_unit_op(CFG, "vxm0", Opcode.LUT, {"a": a},
                             pre=[(Opcode.LDLUT, {"a": rows}, {"count": len(rows)})])
    assert np.array_equal(r, table[a.view(np.uint8)])


@pytest.mark.parametrize("k", [0, 1, 5, -3, 16, -16])
def test_sxm_shift_rotate(k):
    a = vecs(17)
    j = np.arange(LANES)
    (r,), _, _ = run_unit_op(CFG, "sxm0", Opcode.SHIFT, {"a": a}, imm=k)
    src = j - k
    exp = np.where((src >= 0) & (src < LANES), a[:, np.clip(src, 0, LANES - 1)], 0)
    assert np.array_equal(r, exp)
    (r,), _, _ = run_unit_op(CFG, "sxm0", Opcode.ROT, {"a": a}, imm=k)
    assert np.array_equal(r, np.roll(a, k, axis=1))


def test_sxm_distribute_permute_transpose():
    a = vecs(18)
    (r,), _, _ = run_unit_op(CFG, "sxm0", Opcode.DIST, {"a": a}, imm=5)
    assert np.array_equal(r, np.repeat(a[:, 5:6], LANES, axis=1))
    perm = np.random.default_rng(19).integers(0, LANES, LANES)   # repeats allowed: a distribute map
    (r,), _, _ = run_unit_op(CFG, "sxm0", Opcode.PERM, {"a": a},
                             pre=[(Opcode.LDPERM, {"a": perm.astype(np.int8).reshape(1, -1)}, {})])
    assert np.array_equal(r, a[:, perm])
    blk = np.random.default_rng(20).integers(-128, 128, (LANES, LANES), dtype=np.int8)
    (r,), _, _ = run_unit_op(CFG, "sxm0", Opcode.TRANS, {"a": blk})
    assert np.array_equal(r, blk.T)
