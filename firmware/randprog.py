"""Random *valid* programs, for differential testing (golden model vs RTL) and golden-model tests.

``random_program(cfg, seed)`` schedules a random mix of data flows — MEM copies (with REPEAT
bursts), VXM ops on one to eight operand streams, SXM ops and transposes, MXM weight installs,
multiplies and emits, GATHER/SCATTER, SYNC/NOTIFY — onto a reservation table that mirrors the
timing rules of docs/microarchitecture.md, so every operand arrives when it is sampled and no
sub-unit, queue slot or stream port is used twice.  It returns the program, the MEM image it
expects, and the MEM ranges worth reading back.  On configs with ``install_rows`` R > 1 an LW is
fed by up to R banks on one side of the MXM, on R consecutive streams (docs/isa.md, LW).

Flows read bank addresses [0, REGION) and write only [REGION/2, REGION); index vectors for GATHER /
SCATTER sit in the first rows of each bank, which nothing writes.
"""

from dataclasses import dataclass, field

import numpy as np

from tinylpu.firmware.program import Program
from tinylpu.firmware.sched import Schedule, Txn, read_to, write_from
from tinylpu.isa import BINARY_OPS, INT32_PLANES, UNARY_VXM_OPS, Insn, Opcode, StreamRef, element_count, latency_key

__all__ = ["random_program", "RandomCase"]

REGION = 64


@dataclass
class RandomCase:
    program: Program
    mem: dict                  # bank name -> (addr, int8 array (n, lanes))
    readback: list             # (bank name, addr, n)
    flows: list = field(default_factory=list)   # human-readable description of what was scheduled
    seed: int = 0


def random_program(cfg, seed, flows=None) -> RandomCase:
    rng = np.random.default_rng(seed)
    sch = Schedule(cfg)
    lanes = cfg.lanes
    banks = [s.name for s in cfg.slices_of("mem")]
    mem = {bk: (0, rng.integers(-128, 128, (REGION, lanes), dtype=np.int8)) for bk in banks}
    # index rows 0..3 of every bank hold in-range GATHER/SCATTER indices (bank-relative, small)
    for bk in banks:
        img = mem[bk][1]
        for r in range(4):
            v = int(rng.integers(REGION // 2, REGION))
            img[r, 0], img[r, 1] = v & 0xFF, v >> 8
    nflows = flows if flows is not None else int(rng.integers(4, 12))
    described = []
    kinds = ["copy", "vxm", "vxm", "sxm", "mxm", "gather", "scatter", "trans", "sync"]
    if not cfg.slices_of("sxm"):
        kinds = [k for k in kinds if k not in ("sxm", "trans")]
    cursor = 0
    for _ in range(nflows):
        kind = kinds[int(rng.integers(len(kinds)))]
        for attempt in range(200):
            t0 = cursor + int(rng.integers(0, 12)) + attempt
            b = Txn(sch)
            try:
                desc = _FLOWS[kind](b, cfg, rng, t0, banks)
            except _TooFew:          # this config has too few banks/sides for the flow: skip it
                break
            if desc and b.ok:
                b.commit()
                described.append(desc)
                cursor = max(cursor, t0 - 4)
                break
    # HALT every queue; the last HALT closes the program after everything has landed
    end = sch.end_cycle
    queues = {}
    for s, entries in sch.q.items():
        entries = sorted(entries, key=lambda e: e.start)
        out, cur = [], 0
        for e in entries:
            if e.start > cur:
                out.append(Insn.make(Opcode.NOP, n=e.start - cur))
            out += e.insns
            cur = e.end
        if not entries and rng.random() < 0.5:
            continue
        halt_at = max(cur, end if not queues else cur + int(rng.integers(0, 3)))
        if halt_at > cur:
            out.append(Insn.make(Opcode.NOP, n=halt_at - cur))
        out.append(Insn.make(Opcode.HALT))
        queues[s] = out
    readback = [(bk, 0, REGION) for bk in banks]
    return RandomCase(Program(queues), mem, readback, described, seed)


# ----------------------------------------------------------------------------------------------
# flows: each returns a description, or None if it cannot be placed on this config
# ----------------------------------------------------------------------------------------------

class _TooFew(Exception):
    pass


def _pick(rng, seq, k=1):
    if k > len(seq):
        raise _TooFew
    idx = rng.choice(len(seq), size=k, replace=False)
    return [seq[i] for i in idx]


def _flow_copy(b, cfg, rng, t0, banks):
    src, dst = _pick(rng, banks, 2)
    ps, pd = b.sch.pos[src], b.sch.pos[dst]
    n = int(rng.integers(1, 9))
    reps = int(rng.integers(0, 3))
    d = n + int(rng.integers(0, 4)) if reps else 0
    if reps and (REGION // 2) + (reps + 1) * n > REGION:
        reps = 0
    stride = 1
    raddr = int(rng.integers(0, REGION - n * (reps + 1) + 1))
    waddr = int(rng.integers(REGION // 2, REGION - n * (reps + 1) + 1))
    arrive = t0 + cfg.latency["mem_read"] + abs(pd - ps)
    s = read_to(b, src, raddr, n, pd, arrive, int(rng.integers(cfg.streams)), stride, reps, d)
    write_from(b, dst, s, waddr, n, arrive, reps, d)
    return f"copy {src}[{raddr}] -> {dst}[{waddr}] n={n} reps={reps}"


_VXM_BIN = list(BINARY_OPS)
_VXM_UN = list(UNARY_VXM_OPS)


def _operands_to(b, cfg, rng, banks, target, n, t_sample, count_streams, group_at=None):
    """Schedule READs from distinct banks so that operand i is on its stream at `target` at t_sample.

    With `group_at`, the first 4 x len(group_at) operands form int32 groups on streams g..g+3,
    each group read from four banks on one side of the target (so the planes share a direction).
    """
    tpos = b.sch.pos[target]
    free = list(banks)
    chosen = []
    for g in group_at or ():
        sides = [[x for x in free if b.sch.pos[x] < tpos], [x for x in free if b.sch.pos[x] > tpos]]
        sides = [sd for sd in sides if len(sd) >= INT32_PLANES]
        if not sides:
            return None
        grp = _pick(rng, sides[int(rng.integers(len(sides)))], INT32_PLANES)
        chosen += [(bk, g + i) for i, bk in enumerate(grp)]
        free = [x for x in free if x not in grp]
    rest = count_streams - len(chosen)
    if rest > len(free):
        return None
    chosen += [(bk, int(rng.integers(cfg.streams))) for bk in _pick(rng, free, rest)]
    streams, used = [], set()
    for bk, idx in chosen:
        west = tpos < b.sch.pos[bk]
        if (idx, west) in used:
            return None
        used.add((idx, west))
        addr = int(rng.integers(0, REGION - n + 1))
        streams.append(read_to(b, bk, addr, n, tpos, t_sample, idx))
    return streams


def _side_banks(b, rng, banks, src_slice, k):
    """k banks on one side of src_slice (for the planes of an int32 result), or None."""
    p = b.sch.pos[src_slice]
    sides = [[x for x in banks if b.sch.pos[x] < p], [x for x in banks if b.sch.pos[x] > p]]
    sides = [sd for sd in sides if len(sd) >= k]
    if not sides:
        return None
    return _pick(rng, sides[int(rng.integers(len(sides)))], k)


def _sink(b, cfg, rng, banks, src_slice, out_stream_idx, land, n, exclude=()):
    """WRITE the n vectors landing on out stream at src_slice from cycle `land` into some bank."""
    choices = [bk for bk in banks if bk not in exclude]
    dst = _pick(rng, choices)[0]
    ps, pd = b.sch.pos[src_slice], b.sch.pos[dst]
    s = StreamRef(out_stream_idx, west=pd < ps)
    waddr = int(rng.integers(REGION // 2, REGION - n + 1))
    write_from(b, dst, s, waddr, n, land + abs(pd - ps), src_pos=ps)
    return s, dst


def _flow_vxm(b, cfg, rng, t0, banks):
    vxm = _pick(rng, [s.name for s in cfg.slices_of("vxm")])[0]
    L = cfg.latency
    n = int(rng.integers(1, 7))
    r = rng.random()
    mbank = len(banks)
    if r < 0.45:
        op = _pick(rng, _VXM_BIN)[0]
        use_imm = rng.random() < 0.3
        st = _operands_to(b, cfg, rng, banks, vxm, n, t0, 1 if use_imm else 2)
        if st is None:
            return None
        kw = dict(d=StreamRef(0, False), a=st[0])
        if use_imm:
            kw.update(imm=int(rng.integers(-128, 128)), use_imm=1)
        else:
            kw.update(b=st[1])
        if op == Opcode.MUL:
            kw["sh"] = int(rng.integers(0, 9))
        lat = L[latency_key(op)]
    elif r < 0.6:
        op = _pick(rng, _VXM_UN)[0]
        st = _operands_to(b, cfg, rng, banks, vxm, n, t0, 1)
        if st is None:
            return None
        kw = dict(d=StreamRef(0, False), a=st[0])
        if op in (Opcode.SHL, Opcode.SHR):
            kw["sh"] = int(rng.integers(0, 8))
        lat = L[latency_key(op)]
    elif r < 0.7:
        op = Opcode.SEL
        st = _operands_to(b, cfg, rng, banks, vxm, n, t0, 3)
        if st is None:
            return None
        kw = dict(d=StreamRef(0, False), a=st[0], b=st[1], c=st[2])
        lat = L["vxm_alu"]
    elif r < 0.85 and mbank >= 4:
        op = _pick(rng, [Opcode.REQ, Opcode.REQL])[0]
        g = int(rng.integers(0, cfg.streams - INT32_PLANES + 1))
        st = _operands_to(b, cfg, rng, banks, vxm, n, t0, 4, group_at=[g])
        if st is None:
            return None
        kw = dict(d=StreamRef(0, False), a=st[0])
        if op == Opcode.REQ:
            kw.update(imm=int(rng.integers(-32768, 32768)), sh=int(rng.integers(0, 64)))
        lat = L["vxm_req"]
    elif mbank >= 8:
        op = Opcode.ADD32
        g1 = int(rng.integers(0, cfg.streams - INT32_PLANES + 1))
        g2 = int(rng.integers(0, cfg.streams - INT32_PLANES + 1))
        st = _operands_to(b, cfg, rng, banks, vxm, n, t0, 8, group_at=[g1, g2])
        if st is None:
            return None
        # both groups must be on the streams named (their directions may differ)
        kw = dict(d=StreamRef(0, False), a=st[0], b=st[4])
        lat = L["vxm_alu"]
        # ADD32 results are 4 planes: sink each plane into its own bank
        dgrp = int(rng.integers(0, cfg.streams - INT32_PLANES + 1))
        land = t0 + lat
        outs = _side_banks(b, rng, banks, vxm, INT32_PLANES)
        if outs is None:
            return None
        west = None
        for i, bk in enumerate(outs):
            wst = b.sch.pos[bk] < b.sch.pos[vxm]
            if west is None:
                west = wst
            if wst != west:
                return None
            s = StreamRef(dgrp + i, west)
            write_from(b, bk, s, int(rng.integers(REGION // 2, REGION - n + 1)),
                   n, land + abs(b.sch.pos[bk] - b.sch.pos[vxm]), src_pos=b.sch.pos[vxm])
        kw["d"] = StreamRef(dgrp, west)
        insn = Insn.make(op, count=n, **kw)
        b.add(vxm, t0, [insn], t0 + 1, "alu", (t0, t0 + n - 1), [t0 + k + lat for k in range(n)])
        return f"{vxm} ADD32 n={n}"
    else:
        return None
    # pre-load registers the op depends on, sometimes
    didx = int(rng.integers(cfg.streams))
    s_out, dst = _sink(b, cfg, rng, banks, vxm, didx, t0 + lat, n)
    kw["d"] = s_out
    insn = Insn.make(op, count=n, **kw)
    b.add(vxm, t0, [insn], t0 + 1, "alu", (t0, t0 + n - 1), [t0 + k + lat for k in range(n)])
    if op in (Opcode.REQL, Opcode.LUT) and rng.random() < 0.7:
        _load_regs(b, cfg, rng, banks, vxm, op, t0 - int(rng.integers(4, 7)) - (256 // cfg.lanes))
    return f"{vxm} {op.name} n={n} -> {dst}"


def _load_regs(b, cfg, rng, banks, vxm, op, t):
    if t < 0:
        b.ok = False
        return
    if op == Opcode.REQL:
        st = _operands_to(b, cfg, rng, banks, vxm, 4, t, 1)
        if st is None:
            b.ok = False
            return
        b.add(vxm, t, [Insn.make(Opcode.LDM, a=st[0])], t + 1, "alu", (t, t + 3))
    else:
        n = 256 // cfg.lanes
        st = _operands_to(b, cfg, rng, banks, vxm, n, t, 1)
        if st is None:
            b.ok = False
            return
        b.add(vxm, t, [Insn.make(Opcode.LDLUT, a=st[0], imm=0, count=n)], t + 1, "alu", (t, t + n - 1))


def _flow_sxm(b, cfg, rng, t0, banks):
    sxm = cfg.slices_of("sxm")[0].name
    n = int(rng.integers(1, 6))
    op = _pick(rng, [Opcode.SHIFT, Opcode.ROT, Opcode.DIST, Opcode.PERM, Opcode.LDPERM])[0]
    st = _operands_to(b, cfg, rng, banks, sxm, 1 if op == Opcode.LDPERM else n, t0, 1)
    if st is None:
        return None
    if op == Opcode.LDPERM:
        b.add(sxm, t0, [Insn.make(op, a=st[0])], t0 + 1, "sxm", (t0, t0))
        return f"{sxm} LDPERM"
    kw = dict(a=st[0])
    if op in (Opcode.SHIFT, Opcode.ROT):
        kw["imm"] = int(rng.integers(-cfg.lanes, cfg.lanes + 1))
    if op == Opcode.DIST:
        kw["imm"] = int(rng.integers(cfg.lanes))
    L = cfg.latency["sxm"]
    s_out, dst = _sink(b, cfg, rng, banks, sxm, int(rng.integers(cfg.streams)), t0 + L, n)
    b.add(sxm, t0, [Insn.make(op, d=s_out, count=n, **kw)], t0 + 1, "sxm", (t0, t0 + n - 1),
          [t0 + k + L for k in range(n)])
    return f"{sxm} {op.name} n={n} -> {dst}"


def _flow_trans(b, cfg, rng, t0, banks):
    sxm = cfg.slices_of("sxm")[0].name
    lanes = cfg.lanes
    st = _operands_to(b, cfg, rng, banks, sxm, lanes, t0, 1)
    if st is None:
        return None
    L = cfg.latency["sxm"]
    first = t0 + lanes - 1 + L
    s_out, dst = _sink(b, cfg, rng, banks, sxm, int(rng.integers(cfg.streams)), first, lanes)
    b.add(sxm, t0, [Insn.make(Opcode.TRANS, d=s_out, a=st[0])], t0 + 1, "sxm", (t0, t0 + 2 * lanes - 1),
          [first + j for j in range(lanes)])
    return f"{sxm} TRANS -> {dst}"


def _flow_mxm(b, cfg, rng, t0, banks):
    mxm = _pick(rng, [s.name for s in cfg.slices_of("mxm")])[0]
    L = cfg.latency
    lanes = cfg.lanes
    buf = int(rng.integers(2))
    rows = int(rng.integers(1, lanes + 1))
    row0 = int(rng.integers(0, lanes - rows + 1))
    # install
    R = cfg.install_rows
    if R == 1:
        st = _operands_to(b, cfg, rng, banks, mxm, rows, t0, 1)
    else:
        st = _install_streams(b, cfg, rng, banks, mxm, rows, t0)
    if st is None:
        return None
    els = element_count(Opcode.LW, rows, R)
    b.add(mxm, t0, [Insn.make(Opcode.LW, s=st[0], buf=buf, addr=row0, count=rows)], t0 + 1,
          "install", (t0, t0 + els - 1))
    # multiply
    n = int(rng.integers(1, 9))
    tm = t0 + els - 1 + L["mxm_install"] + int(rng.integers(0, 3))
    addr = int(rng.integers(0, min(cfg.acc_depth, 16) - n + 1))
    acc = int(rng.random() < 0.5)
    Lmm = L["mxm_mm"]
    te = tm + Lmm + int(rng.integers(0, 3))
    for k in range(n):
        b.acc_write(mxm, addr + k, tm + k)
        if acc:
            b.acc_read(mxm, addr + k, tm + k)
        b.acc_read(mxm, addr + k, te + k)
    if not b.ok:
        return None
    st2 = _operands_to(b, cfg, rng, banks, mxm, n, tm, 1)
    if st2 is None:
        return None
    b.add(mxm, tm, [Insn.make(Opcode.MM, s=st2[0], buf=buf, addr=addr, count=n, acc=acc)], tm + 1,
          "mm", (tm, tm + n - 1))
    # emit into 4 banks (planes)
    land = te + L["mxm_emit"]
    outs = _side_banks(b, rng, banks, mxm, INT32_PLANES)
    if outs is None:
        return None
    g = int(rng.integers(0, cfg.streams - INT32_PLANES + 1))
    # all planes flow east from the MXM when it is west of the banks, else west
    west = None
    for i, bk in enumerate(outs):
        wst = b.sch.pos[bk] < b.sch.pos[mxm]
        if west is None:
            west = wst
        if wst != west:
            return None
        write_from(b, bk, StreamRef(g + i, west), int(rng.integers(REGION // 2, REGION - n + 1)), n,
               land + abs(b.sch.pos[bk] - b.sch.pos[mxm]), src_pos=b.sch.pos[mxm])
    b.add(mxm, te, [Insn.make(Opcode.EMIT, s=StreamRef(g, west), addr=addr, count=n)], te + 1,
          "emit", (te, te + n - 1), [land + k for k in range(n)])
    per = f" from {R} streams, {els} elements" if R > 1 else ""
    return f"{mxm} LW {rows} rows buf {buf}{per}, MM n={n} acc={acc}, EMIT"


def _install_streams(b, cfg, rng, banks, mxm, rows, t0):
    """The operands of an LW of `rows` rows with R = install_rows > 1: stream g+j (one direction)
    carries rows j, j+R, ... at the MXM from t0 on, each read from its own bank on one side of it.
    Returns [stream g], or None."""
    R = cfg.install_rows
    used = min(R, rows)
    grp = _side_banks(b, rng, banks, mxm, used)
    if grp is None:
        return None
    g = int(rng.integers(0, cfg.streams - R + 1))
    tpos = b.sch.pos[mxm]
    streams = []
    for j, bk in enumerate(grp):
        n_j = -(-(rows - j) // R)
        addr = int(rng.integers(0, REGION - n_j + 1))
        streams.append(read_to(b, bk, addr, n_j, tpos, t0, g + j))
    return streams


def _flow_gather(b, cfg, rng, t0, banks):
    bank, other = _pick(rng, banks, 2)
    p = b.sch.pos[bank]
    n = int(rng.integers(1, 4))
    # the index vectors come from rows 0..3 of `other`, read onto a stream toward `bank`
    st = read_to(b, other, int(rng.integers(0, 4 - n + 1)), n, p, t0, int(rng.integers(cfg.streams)))
    L = cfg.latency["mem_read"]
    sink_bank = _pick(rng, [x for x in banks if x != bank])[0]
    ps = b.sch.pos[sink_bank]
    s_out = StreamRef(int(rng.integers(cfg.streams)), west=ps < p)
    b.add(bank, t0, [Insn.make(Opcode.GATHER, s=s_out, a=st, addr=0, count=n)], t0 + 1, "rd",
          (t0, t0 + n - 1), [t0 + k + L for k in range(n)])
    write_from(b, sink_bank, s_out, int(rng.integers(REGION // 2, REGION - n + 1)), n, t0 + L + abs(ps - p),
           src_pos=p)
    return f"GATHER {bank} -> {sink_bank}"


def _flow_scatter(b, cfg, rng, t0, banks):
    bank, ib, db = _pick(rng, banks, 3)
    p = b.sch.pos[bank]
    n = int(rng.integers(1, 4))
    si = read_to(b, ib, int(rng.integers(0, 4 - n + 1)), n, p, t0, int(rng.integers(cfg.streams)))
    sd = read_to(b, db, int(rng.integers(0, REGION - n + 1)), n, p, t0, int(rng.integers(cfg.streams)))
    if si == sd:
        return None
    b.add(bank, t0, [Insn.make(Opcode.SCATTER, s=sd, a=si, addr=0, count=n)], t0 + 1, "wr", (t0, t0 + n - 1))
    b.expect(t0 + n - 1 + cfg.latency["mem_write"])
    return f"SCATTER into {bank}"


def _flow_sync(b, cfg, rng, t0, banks):
    """A queue parks in SYNC and resumes exactly when another queue's NOTIFY fires."""
    names = [s.name for s in cfg.slices]
    waiter, notifier = _pick(rng, names, 2)
    fire = t0 + cfg.latency["notify"]
    ts = t0 - int(rng.integers(0, 3)) + 1   # SYNC before the fire cycle
    if ts >= fire or ts < 0:
        return None
    # the waiter's queue is blocked from ts until fire; the notifier's for one cycle
    b.add(waiter, ts, [Insn.make(Opcode.SYNC)], fire)
    b.add(notifier, t0, [Insn.make(Opcode.NOTIFY)], t0 + 1)
    # no other queue may be parked at that time: a NOTIFY wakes every parked queue; our
    # generator only parks queues inside these flows, so overlapping sync flows are refused
    for s, entries in b.sch.q.items():
        for e in entries:
            if e.insns[0].op == Opcode.SYNC and not (e.end <= ts - cfg.latency["notify"] or e.start >= fire):
                b.ok = False
            if e.insns[0].op == Opcode.NOTIFY and abs(e.start - t0) <= cfg.latency["notify"] + 2:
                b.ok = False
    return f"SYNC {waiter} until NOTIFY from {notifier}"


_FLOWS = {"copy": _flow_copy, "vxm": _flow_vxm, "sxm": _flow_sxm, "trans": _flow_trans, "mxm": _flow_mxm,
          "gather": _flow_gather, "scatter": _flow_scatter, "sync": _flow_sync}
