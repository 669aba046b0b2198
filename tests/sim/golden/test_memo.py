"""FastGolden's per-instruction memos (keyed by the ``Insn`` object, one per instruction word): the
static check's per-instruction tests (``firmware.check.program_ok``, which FastGolden's
``load_program`` runs) and the walk's VXM / SXM op functions
(``walk._vx_insn``, lane-local ops as byte translation tables).  A remembered word must give the
same answers wherever it appears again: in another program, another slice, another place in a
queue, with other data."""

import numpy as np

from tests.sim.golden.test_fast import CFG, case_image, compare
from tests.sim.golden.test_walk import walked
from tinylpu.config import load_config
from tinylpu.firmware import check as check_mod
from tinylpu.firmware.check import program_ok, program_problems
from tinylpu.firmware.program import Program
from tinylpu.firmware.randprog import random_program
from tinylpu.isa import BINARY_OPS, OPS, Insn, Opcode, StreamRef
from tinylpu.sim.golden import walk as walk_mod
from tinylpu.sim.golden.fast import FastGolden


def _ok(prog, cfg):
    return program_ok(prog, cfg)


def test_program_ok_memo_agrees_with_program_ok():
    """Random queues of random words (each word drawn from a small pool, so most are remembered by
    the time they recur, in other slices and other places): the memoized program_ok gives the
    answer every time (that of ``program_problems``, which tests every word each time and builds
    the messages), with the memo cold and warm."""
    rng = np.random.default_rng(11)
    for cfg in (load_config("tiny"), load_config("duo")):
        names, S = [s.name for s in cfg.slices], cfg.streams
        pool = []
        for op in OPS:
            base = Insn.make(op)
            for _ in range(4):
                f = {}
                for k, v in base.fields.items():
                    if isinstance(v, StreamRef):
                        f[k] = StreamRef(int(rng.integers(0, S + 2)), bool(rng.integers(0, 2)))
                    elif k == "count":
                        f[k] = int(rng.choice([0, 1, 2, 4, cfg.lanes, cfg.lanes + 1]))
                    else:
                        f[k] = int(rng.integers(-2, 20))
                pool.append(base.replace(**f))
        pool = [Insn.make(i.op, **i.fields) for i in pool]           # (one object per word)
        check_mod._INSN_OK.clear()
        good = bad = 0
        for _ in range(3000):
            queues = {}
            for _ in range(int(rng.integers(1, 3))):
                queues[names[int(rng.integers(0, len(names)))]] = [
                    pool[int(rng.integers(0, len(pool)))] for _ in range(int(rng.integers(1, 4)))]
            prog = Program(queues)
            want = not program_problems(prog, cfg)
            assert _ok(prog, cfg) == want, {q: [str(i) for i in v] for q, v in prog.queues.items()}
            assert _ok(prog, cfg) == want                                # (warm)
            good += want
            bad += not want
        assert good > 100 and bad > 1000


def test_program_ok_memo_place_dependent_tests():
    """The tests of a word's place are made every time: a word remembered as fine on its slice is
    rejected on a slice of another kind, a REPEAT remembered after a unit instruction is rejected
    first in a queue, and a queue longer than the queue depth is rejected."""
    cfg = CFG
    read = Insn.make(Opcode.READ, s=StreamRef(1, False), addr=3, count=2)
    rep = Insn.make(Opcode.REPEAT, n=2, d=2)
    halt = Insn.make(Opcode.HALT)
    assert _ok(Program({"mem0": [read, rep, halt]}), cfg)
    assert not _ok(Program({"vxm0": [read, halt]}), cfg)
    assert not _ok(Program({"mem0": [rep, read, halt]}), cfg)
    assert not _ok(Program({"mem0": [read, halt, rep]}), cfg)
    assert not _ok(Program({"mem0": [halt] * (cfg.queue_depth + 1)}), cfg)
    assert not _ok(Program({"nosuch": [halt]}), cfg)
    f = FastGolden(cfg)
    try:
        f.load_program(Program({"vxm0": [read, halt]}))
    except Exception as e:                      # (check_program's own error, with the problem listed)
        assert "READ" in str(e)
    else:
        raise AssertionError("a READ on a VXM slice was accepted")


def test_vx_translation_tables():
    """Every lane-local op of one byte operand (and every binary op with an immediate), as its byte
    translation table, gives the op's own numpy arithmetic on all 256 byte values."""
    lanes = CFG.lanes
    vecs = [bytes(range(b, b + lanes)) for b in range(0, 256, lanes)]
    d, a = StreamRef(0, False), StreamRef(1, False)
    insns = []
    for sh in range(8):
        insns += [Insn.make(Opcode.RELU, d=d, a=a, sh=sh), Insn.make(Opcode.SHL, d=d, a=a, sh=sh),
                  Insn.make(Opcode.SHR, d=d, a=a, sh=sh)]
        for op in BINARY_OPS:
            for imm in (-128, -77, -1, 0, 1, 5, 64, 127):
                insns.append(Insn.make(op, d=d, a=a, imm=imm, use_imm=1, sh=sh))
    walk_mod._VX_MEMO.clear()
    for insn in insns:
        ins, fn = walk_mod._vx_insn(insn, lanes, None, "vxm0")
        ins0, fn0 = walk_mod._vx(insn.op, insn.fields, lanes, None, "vxm0")
        assert ins == ins0
        for v in vecs:
            assert fn([v]) == [bytes(x) for x in fn0([v])], (str(insn), v)
        assert walk_mod._vx_insn(insn, lanes, None, "vxm0")[1] is fn          # (remembered)


def test_memos_across_programs_and_data():
    """The same random programs run twice as first runs (new program objects, so walked both times;
    their words remembered from the first time), with other MEM data the second time: each run the
    same as Golden (errors included)."""
    rng = np.random.default_rng(5)
    ok = 0
    for seed in range(40):
        case = random_program(CFG, seed)
        for image in (case_image(case),
                      {b: [(a, rng.integers(-128, 128, v.shape, dtype=np.int8))] for b, (a, v) in case.mem.items()}):
            prog = Program(case.program.queues)
            f = FastGolden(CFG)
            res, fast = compare(CFG, prog, image, f=f)
            # (other data may make a GATHER / SCATTER index run out of its bank: the same error)
            assert res[0] == "error" or (fast and walked(f, prog)), seed
            ok += res[0] == "ok"
    assert ok >= 45                 # (40 with the programs' own images, the rest with other data)
