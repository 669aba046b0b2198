"""Queue compression: rewrite each queue of a finished program into an equivalent shorter one with REPEAT.

``REPEAT n, d`` (tinylpu/isa.py) issues the previous unit instruction n more times, d cycles apart,
each repetition's address continuing where the previous one ended (``advance``), and the queue's
next instruction d cycles after the last repetition.  So a run of unit instructions

    X_0 at t, X_1 at t + d, ..., X_n at t + n d      with X_{k+1} = advance(X_k)

with nothing else issued from that queue in between (NOP gaps are fine: they are absorbed into d)
is the same as ``X_0; REPEAT n, d`` followed by a NOP for whatever gap is left before the next
instruction.  ``compress_program`` finds such runs greedily (leftmost, longest) and rewrites each
queue so that every unit instruction issues in the same cycle with the same operands and addresses
as before, and every control instruction (NOTIFY, SYNC, DESKEW, HALT) issues in the same cycle.

The rules it relies on (the golden reference stepper ``Golden._issue``/``_advance``, the fast path's
``_advance_fields`` and the RTL ICU ``hdl/icu.py`` agree on each):

* ``advance``: READ/WRITE ``addr += count * stride``; LW/MM/EMIT ``addr += count``; LDLUT
  ``imm += count``; every other unit instruction repeats unchanged (GATHER/SCATTER keep their base,
  the VXM's ``imm`` is an operand except for LDLUT, SXM and C2C instructions have no address).  A
  run is only formed where each instruction's address equals the previous one's plus that step
  exactly (Python integers), so no repetition wraps a field the original did not.
* Timing: an instruction issued at t fetches the next queue word at t + 1 (NOP n: at t + n); a
  REPEAT fetched at t + 1 issues its repetitions at t + d, ..., t + n d (with d = 1 the first in
  its own fetch cycle) and the next word at t + (n + 1) d.  So the instruction after a run must
  issue at least d cycles after the run's last member; when it issues sooner the run gives up its
  last member, which then issues as itself.
* A REPEAT directly follows the unit instruction it repeats (``check_program``, the assembler);
  n in [1, 2^24), d in [1, 2^16) (the CtlArgs fields); a NOP's n in [1, 2^24).
* SYNC and DESKEW wait for an event, so cycles are counted from the instruction after them: a run
  never spans one.  NOTIFY and HALT issue in a queue slot: a run never spans one either.
  Instructions after the first HALT never issue and are kept as they are.

Existing REPEATs (the compiler's weight installs, ``LW`` + ``REPEAT E-1, 1``) are read as runs of
their own, which may grow by neighbours that continue them.  A queue whose REPEAT does not directly
follow a unit instruction (which ``check_program`` refuses) is left as it is.  ``expand_program``
does the opposite: one queue word per issue.

What changes: the instruction indices (``compress_program`` returns the new listing and the map
from old indices to new ones) and the golden model's ``activity[q]["issued"]`` (queue words
fetched).  What does not: every issue cycle, operand and address, hence the cycle count, the data,
the sub-unit busy counts, and every error the golden model reports (a repetition's errors name the
instruction it repeats).
"""

import functools

from tinylpu.firmware.program import Program
from tinylpu.isa import OPS, Insn, Opcode

__all__ = ["NOP_N_MAX", "REPEAT_D_MAX", "REPEAT_N_MAX", "advance", "compress_program", "compress_queue",
           "expand_program", "expand_queue"]

REPEAT_N_MAX = (1 << 24) - 1      # CtlArgs.n
REPEAT_D_MAX = (1 << 16) - 1      # CtlArgs.d
NOP_N_MAX = (1 << 24) - 1

_STEP_MEM = (Opcode.READ, Opcode.WRITE)
_STEP_MXM = (Opcode.LW, Opcode.MM, Opcode.EMIT)
_WAIT = (Opcode.SYNC, Opcode.DESKEW)          # the next instruction issues at a run-time cycle


_UNIT = frozenset(op for op, info in OPS.items() if info.unit != "any")


def _is_unit(op):
    return op in _UNIT


@functools.lru_cache(maxsize=4096)
def _nop(n):
    return Insn.make(Opcode.NOP, n=n)


def advance(insn: Insn) -> Insn:
    """The next repetition of `insn` under REPEAT (its address continues where this one ended)."""
    return _advanced(insn, 1)


def _step(insn):
    """(address field, its advance per repetition) of a unit instruction; (None, 0) when it has none."""
    op = insn.op
    if op in _STEP_MEM:
        return "addr", insn.count * insn.stride
    if op in _STEP_MXM:
        return "addr", insn.count
    if op == Opcode.LDLUT:
        return "imm", insn.count
    return None, 0


def _advanced(insn, k):
    """`insn` advanced k times (its k-th repetition)."""
    key, step = _step(insn)
    return insn if key is None or k == 0 else insn.replace(**{key: insn.fields[key] + k * step})


def _follows(prev: Insn, nxt: Insn, k=1) -> bool:
    """nxt is `prev` advanced k times, without building an Insn."""
    if prev.op != nxt.op:
        return False
    key, step = _step(prev)
    if key is None:
        return prev.f == nxt.f
    a, b = prev.fields, nxt.fields
    if b[key] != a[key] + k * step:
        return False
    return all(v == b[f] for f, v in a.items() if f != key)


# --- the queue as a timeline ------------------------------------------------------------------

def expand_queue(insns):
    """The queue as segments of issue events, cycles counted from the segment's start.

    Returns (segments, tail): each segment is a list of events ``(t, insn, old_index, reps, d)`` —
    every unit instruction (with the REPEAT after it, if any: `reps` more issues `d` cycles apart;
    else reps = d = 0) and every NOTIFY, SYNC, DESKEW, HALT — ending with the instruction that
    closes it (SYNC, DESKEW, HALT) or ``(t, None, len(insns), 0, 0)`` when the queue runs out; a new
    segment starts after each SYNC and DESKEW.  ``tail``: the instructions after the first HALT
    (never issued).  NOPs are the gaps.  Raises ValueError for a REPEAT that does not directly
    follow a unit instruction."""
    segments, seg, t, last = [], [], 0, False
    for k, insn in enumerate(insns):
        op = insn.op
        if op == Opcode.NOP:
            t += insn.fields["n"]
            last = False
        elif op == Opcode.REPEAT:
            if not last:
                raise ValueError(f"instruction #{k} {insn}: REPEAT must directly follow a unit instruction")
            t0, base, bi, _, _ = seg[-1]
            seg[-1] = (t0, base, bi, insn.n, insn.d)
            t = t0 + (insn.n + 1) * insn.d
            last = False
        elif _is_unit(op):
            seg.append((t, insn, k, 0, 0))
            last, t = True, t + 1
        else:
            seg.append((t, insn, k, 0, 0))
            last = False
            if op == Opcode.HALT:
                segments.append(seg)
                return segments, list(insns[k + 1:])
            if op in _WAIT:
                segments.append(seg)
                seg, t = [], 0
            else:                   # NOTIFY
                t += 1
    seg.append((t, None, len(insns), 0, 0))
    segments.append(seg)
    return segments, []


def _nops(gap):
    out = []
    while gap > 0:
        n = min(gap, NOP_N_MAX)
        out.append(_nop(n))
        gap -= n
    return out


def _run(seg, i):
    """The longest run from event i: (j, n, d, t_last) -- events i..j issue X_i advanced 0..n times,
    d cycles apart, the last at t_last; the event after j issues at t_last + d or later."""
    t, x, _, n, d = seg[i]
    t_last, m, j = t + n * d, len(seg), i
    while j + 1 < m:
        tb, xb, _, nb, db = seg[j + 1]
        if xb is None or not _is_unit(xb.op):
            break
        dd = tb - t_last
        if n and dd != d or not 1 <= dd <= REPEAT_D_MAX or (nb and db != dd):
            break
        if n + 1 + nb > REPEAT_N_MAX or not _follows(x, xb, n + 1):
            break
        n, d, t_last, j = n + 1 + nb, dd, tb + nb * dd, j + 1
    # an event that came in without a REPEAT of its own may be followed too soon: give it up
    if j > i and seg[j][3] == 0 and seg[j + 1][0] - t_last < d:
        j, n, t_last = j - 1, n - 1, t_last - d
    return j, n, d, t_last


def _compress_segment(seg, out, times, index_map, runs=True):
    """Append the compressed (runs=False: written-out) form of one segment to `out` (times: the
    issue cycle of each appended instruction relative to the segment, REPEAT: its first repetition,
    NOP: its fetch)."""
    t_cur, i, m = 0, 0, len(seg)
    while i < m:
        t, insn, k, reps, d = seg[i]
        if t > t_cur:
            for nop in _nops(t - t_cur):
                out.append(nop)
                times.append(t_cur)
                t_cur += nop.fields["n"]
        if insn is None:            # the end of a queue without HALT
            break
        index_map.setdefault(k, len(out))
        if not _is_unit(insn.op):
            out.append(insn)
            times.append(t)
            t_cur = t + 1
            i += 1
            continue
        if not runs:                # every repetition as an instruction of its own
            out.append(insn)
            times.append(t)
            for r in range(1, reps + 1):
                if d > 1:
                    out.append(_nop(d - 1))
                    times.append(t + (r - 1) * d + 1)
                out.append(_advanced(insn, r))
                times.append(t + r * d)
            t_cur = t + reps * d + 1
            i += 1
            continue
        j, n, d, t_last = _run(seg, i)
        out.append(insn)
        times.append(t)
        if n == 0:
            t_cur = t + 1
            i += 1
            continue
        base = len(out) - 1
        out.append(Insn.make(Opcode.REPEAT, n=n, d=d))
        times.append(t + d)
        for r in range(i + 1, j + 1):
            index_map.setdefault(seg[r][2], base)
        t_cur = t_last + d
        i = j + 1


def compress_queue(insns, listing_cycle=None, runs=True):
    """Compress one queue.  Returns (insns, cycles, index_map): cycles[k] the issue cycle of new
    instruction k (as ``Schedule.finish`` lists them: a NOP where it is fetched, a REPEAT at its
    first repetition) when `listing_cycle` gives the cycle of old instruction k (``listing_cycle(k)``),
    else None; index_map maps each old instruction index to the new index that issues it (a
    repetition's: the instruction it repeats; a NOP's: the new instruction at or after its cycle)."""
    try:
        segments, tail = expand_queue(insns)
    except ValueError:              # a REPEAT that follows no unit instruction: left as it is
        return list(insns), (None if listing_cycle is None else [listing_cycle(k) for k in range(len(insns))]), \
            {k: k for k in range(len(insns))}
    out, rel, seg_of, index_map = [], [], [], {}
    for si, seg in enumerate(segments):
        n0 = len(out)
        _compress_segment(seg, out, rel, index_map, runs)
        seg_of += [si] * (len(out) - n0)
    nt = len(out)
    for j, insn in enumerate(tail):
        index_map[len(insns) - len(tail) + j] = nt + j
    out += tail
    # NOPs (and absorbed old REPEATs) map to the next new instruction that was kept
    nxt = len(out)
    for k in range(len(insns) - 1, -1, -1):
        if k in index_map:
            nxt = index_map[k]
        else:
            index_map[k] = nxt
    cycles = None
    if listing_cycle is not None:
        # a segment's offset: the listed cycle of its first old instruction minus its relative cycle
        first = {}
        for si, seg in enumerate(segments):
            old = _first_old(insns, seg)
            c0 = None if old is None else listing_cycle(old[0])
            first[si] = None if c0 is None else c0 - old[1]
        cycles = [None if first[seg_of[j]] is None else first[seg_of[j]] + rel[j] for j in range(nt)]
        cycles += [None] * len(tail)
    return out, cycles, index_map


def _first_old(insns, seg):
    """(old index, relative fetch cycle) of the first old instruction of a segment: the first event's
    instruction or the NOPs before it (a NOP is fetched at the segment's start, relative cycle 0)."""
    t, _, k, _, _ = seg[0]
    # walk back over the NOPs that precede the first event in the old queue
    j = k
    while j > 0 and insns[j - 1].op == Opcode.NOP:
        j -= 1
    if j < k:
        return j, 0
    if k >= len(insns):
        return None
    return k, t


def compress_program(program: Program, listing=None, runs=True):
    """Compress every queue of `program`.  Returns (program, listing, index_map): the new program;
    its listing ((queue, index) -> issue cycle, derived from `listing`, which maps the old program
    the same way; None when not given); index_map[(queue, old index)] -> new index.  With
    ``runs=False`` it does the opposite (``expand_program``): every repetition becomes an explicit
    instruction, the gaps NOPs."""
    queues, new_listing, imap = {}, ({} if listing is not None else None), {}
    for q, insns in program.queues.items():
        lc = None if listing is None else (lambda k, q=q: listing.get((q, k)))
        out, cycles, m = compress_queue(insns, lc, runs)
        queues[q] = out
        for k, v in m.items():
            imap[(q, k)] = v
        if cycles is not None:
            for j, c in enumerate(cycles):
                if c is not None:
                    new_listing[(q, j)] = c
    return Program(queues), new_listing, imap


def expand_program(program: Program, listing=None):
    """`program` with every REPEAT written out: each repetition an explicit instruction (its
    address advanced), the gaps NOPs.  Same issue cycles; returns (program, listing, index_map)."""
    return compress_program(program, listing, runs=False)
