"""Build tiny programs that run one unit instruction on known operands and write its results back.

Used by the per-opcode golden-model tests (and reusable by RTL tests): operands are placed in MEM
banks, READ so that they reach the unit exactly when it samples them, and the result is WRITten
into a bank, all timed with the rules of docs/microarchitecture.md via firmware.randprog's
reservation helpers.
"""

import copy

import numpy as np
import yaml

from tinylpu.config import load_config, parse_config
from tinylpu.firmware.sched import Schedule, read_to, write_from
from tinylpu.isa import INSTR_BITS, INT32_PLANES, Insn, Opcode, StreamRef
from tinylpu.sim.golden.chip import Golden

T0 = 40        # the unit instruction issues at this cycle
OUT_ADDR = 64  # results are written from this bank address on


def run_unit_op(cfg, unit, op, operands, out_planes=1, n=None, pre=(), **fields):
    """Run `op` on slice `unit` with operand vectors from MEM; returns (results, golden, cycles).

    operands: dict field -> array (n, lanes) int8 for a stream operand, or a list of 4 such arrays
    (int32 planes) for a group operand.  pre: list of (op, operands, fields) register loads issued
    before the main instruction (LDM, LDLUT, LDPERM).
    """
    sch = Schedule(cfg)
    b = sch.txn()
    lanes = cfg.lanes
    upos = sch.pos[unit]
    banks = [s.name for s in cfg.slices_of("mem")]
    free = list(banks)
    mem = {}
    stream_idx = [0]
    used = set()   # (west, index) of operand streams: results must not overwrite them on the way

    def take_bank():
        return free.pop(0)

    def place(arr, t_arrive):
        bk = take_bank()
        arr = np.asarray(arr, dtype=np.int8).reshape(-1, lanes)
        mem[bk] = arr
        s = read_to(b, bk, 0, len(arr), upos, t_arrive, stream_idx[0] % cfg.streams)
        stream_idx[0] += 1
        used.add((s.west, s.index))
        return s

    def place_group(planes, t_arrive):
        # four banks on one side, consecutive stream indices
        base = stream_idx[0] % (cfg.streams - INT32_PLANES + 1)
        side = [x for x in free if sch.pos[x] > upos] or [x for x in free if sch.pos[x] < upos]
        if len(side) < INT32_PLANES:
            side = [x for x in free if sch.pos[x] < upos]
        grp = side[:INT32_PLANES]
        for x in grp:
            free.remove(x)
        refs = []
        for i, (bk, arr) in enumerate(zip(grp, planes)):
            arr = np.asarray(arr, dtype=np.int8).reshape(-1, lanes)
            mem[bk] = arr
            refs.append(read_to(b, bk, 0, len(arr), upos, t_arrive, base + i))
            used.add((refs[-1].west, refs[-1].index))
        stream_idx[0] += INT32_PLANES
        return refs[0]

    t = T0 - 30
    for pop, pops, pfields in pre:
        kw = dict(pfields)
        cnt = kw.get("count", 1)
        for f, arr in pops.items():
            kw[f] = place(arr, t)
        b.add(unit, t, [Insn.make(pop, **kw)], t + 1, None)
        t += cnt + 2
    kw = dict(fields)
    for f, arr in operands.items():
        kw[f] = place_group(arr, T0) if isinstance(arr, list) else place(arr, T0)
    count = n if n is not None else next(
        (len(np.asarray(a[0] if isinstance(a, list) else a).reshape(-1, lanes)) for a in operands.values()), 1)
    lat = {Opcode.MUL: "vxm_mul", Opcode.REQ: "vxm_req", Opcode.REQL: "vxm_req", Opcode.LUT: "vxm_lut"}.get(
        op, "sxm" if cfg.slice(unit).kind == "sxm" else "vxm_alu")
    L = cfg.latency[lat]
    land = T0 + L
    if op == Opcode.TRANS:
        land = T0 + lanes - 1 + L
        count = lanes
    # results go to banks on the other side if possible
    # (a bank's write port is free even when its read port fed an operand)
    outs = []
    dst_side = [x for x in banks if sch.pos[x] > upos]
    if len(dst_side) < out_planes:
        dst_side = [x for x in banks if sch.pos[x] < upos]
    west = sch.pos[dst_side[0]] < upos
    dbase = next(d for d in range(cfg.streams - out_planes + 1)
                 if not any((west, d + i) in used for i in range(out_planes)))
    for i in range(out_planes):
        bk = dst_side[i]
        s = StreamRef(dbase + i, west)
        write_from(b, bk, s, OUT_ADDR, count, land + abs(sch.pos[bk] - upos), src_pos=upos)
        outs.append(bk)
    kw["d"] = StreamRef(dbase, west)
    if op not in (Opcode.TRANS,) and "count" not in kw:
        kw["count"] = count
    insn = Insn.make(op, **kw)
    b.add(unit, T0, [insn], T0 + 1, None, None, [land + k for k in range(count)])
    assert b.ok, "harness could not schedule the operation"
    b.commit()
    prog, _, _ = sch.finish()
    g = Golden(cfg)
    g.load_program(prog)
    for bk, arr in mem.items():
        g.write_mem(bk, 0, arr)
    r = g.run()
    res = [g.read_mem(bk, OUT_ADDR, count) for bk in outs]
    return res, g, r.cycles


def land_bits(drive, streams):
    """The pre-decoded landing selects (``out.land``/``out.plane``, hdl/common.py) of a result port
    drive, None or (west, index, wide, ...): bit ``west * streams + s`` for every stream register
    it loads, and the plane rotation ``index % 4`` (0 on a chip with 4 streams); (0, 0) when nothing is
    driven."""
    if drive is None:
        return 0, 0
    w, idx, wide = drive[:3]
    bits = 0
    for k in range(4 if wide else 1):
        bits |= 1 << (w * streams + idx + k)
    return bits, 0 if streams == 4 else idx % 4      # 4 streams: no plane select (hdl/streams.py)


def check_landing(ctx, out, cfg, wide_unit=True):
    """Assert that every copy of a unit's ``out.land``/``out.plane`` agrees with its
    ``valid``/``west``/``index``/``wide`` in the current cycle (the fabric reads only the former)."""
    from tinylpu.hdl.common import land_copies
    drive = None
    if ctx.get(out.valid):
        drive = (ctx.get(out.west), ctx.get(out.index), ctx.get(out.wide))
    land, plane = land_bits(drive, cfg.streams)
    for g in range(land_copies(cfg.lanes)):
        assert ctx.get(out.land[g]) == land, (g, drive, bin(ctx.get(out.land[g])))
        if wide_unit:
            assert ctx.get(out.plane[g]) == plane, (g, drive)


def vec_int(v):
    """An int8 vector as the unsigned integer of its bytes, lane 0 lowest (a stream register's value)."""
    return int.from_bytes(np.asarray(v, np.int8).view(np.uint8).tobytes(), "little")


def tap_ints(cfg, tap):
    """A unit's stream taps in one cycle (``tap.data[dir][stream]`` int8 vectors, ``tap.valid[dir, stream]``)
    as the four integers of its ``tap`` port: east data, east valid bits, west data, west valid bits."""
    out = []
    for d in (0, 1):
        out.append(int.from_bytes(tap.data[d].view(np.uint8).reshape(-1).tobytes(), "little"))
        out.append(sum(1 << s for s in range(cfg.streams) if tap.valid[d, s]))
    return out


def run_unit_rtl(dut, cfg, cycles, issues, taps, wide_unit):
    """Drive a VXM or SXM slice in Amaranth's simulator: per cycle its issue (``issues``: cycle -> Insn)
    and stream taps; returns per cycle (valid, west, index, wide, data, {error: bit}, busy) of its result
    port, checking the pre-decoded landing selects every cycle (``check_landing``)."""
    from tinylpu.isa import encode
    from tinylpu.wire import ERROR_BITS as ERRS
    rec = []
    ints = [tap_ints(cfg, t) for t in taps]
    data_v, err_v = dut.out.data.as_value(), dut.err.as_value()
    te, tev, tw, twv = (dut.tap.east.as_value(), dut.tap.east_valid, dut.tap.west.as_value(),
                        dut.tap.west_valid)
    words = issue_words(cycles, issues, encode)

    # a unit behind tap registers (hdl/taps.py ``Tapped``) gives cycle c's err/busy in c + delay
    delay = getattr(dut, "FLAG_DELAY", 0)
    flags = []

    async def bench(ctx):
        await lead_in(ctx, dut, words)
        for c in range(cycles + delay):
            if c < cycles:
                drive_issue(ctx, dut, words, c)
                e, ev, wd, wv = ints[c]
            else:
                ctx.set(dut.issue, 0)
            ctx.set(te, e)
            ctx.set(tev, ev)
            ctx.set(tw, wd)
            ctx.set(twv, wv)
            ev_ = ctx.get(err_v)
            flags.append(({n: (ev_ >> i) & 1 for i, n in enumerate(ERRS)}, ctx.get(dut.busy)))
            if c < cycles:
                # (the port clash of this cycle's results: the wrapped unit's, before the delay)
                port_err = ctx.get(dut.unit.err.as_value() if delay else err_v)
                if not (port_err >> ERRS.index("port")) & 1:  # a port clash ORs two results' selects
                    check_landing(ctx, dut.out, cfg, wide_unit=wide_unit)
                rec.append([ctx.get(dut.out.valid), ctx.get(dut.out.west), ctx.get(dut.out.index),
                            ctx.get(dut.out.wide), ctx.get(data_v)])
            await ctx.tick()

    simulate(dut, bench)
    return [tuple(r + list(flags[c + delay])) for c, r in enumerate(rec)]


# One simulator per shared DUT and test process (``shared_dut``, ``simulate``)
_SHARED = {}
_SIMS = {}


def shared_dut(key, build):
    """The DUT `build()` makes, built once per `key` and test process, so that ``simulate`` can keep
    its simulator.  `key` must name everything the elaboration depends on (``repr`` of the config,
    constructor options, ``early``); `build` sets every such attribute before returning."""
    if key not in _SHARED:
        _SHARED[key] = build()
    return _SHARED[key]


def simulate(dut, bench, period=1e-8):
    """Run the async testbench ``bench(ctx)`` on `dut` under Amaranth's simulator, one clock of `period`.

    A DUT from ``shared_dut`` keeps its simulator for the whole test process
    (``sim.rtl.pysim.ReusedSimulator``: reset to power-on state before every later run), so the
    seconds of building it are paid once; any other DUT gets a simulator of its own."""
    from tinylpu.sim.rtl.pysim import ReusedSimulator

    sim = _SIMS.get(id(dut))
    if sim is None:
        sim = ReusedSimulator(dut, period)
        if any(d is dut for d in _SHARED.values()):
            _SIMS[id(dut)] = sim
    sim.run(bench)


def issue_words(cycles, schedule, encode, filler=lambda c: 0):
    """Per cycle (issue, instruction word) for a unit test: the scheduled instruction, or
    `filler(c)` (garbage the unit must ignore) in cycles without an issue; with `filler` None the
    last issued word stays (0 before the first)."""
    words, last = [], 0
    for c in range(cycles):
        if c in schedule:
            last = encode(schedule[c])
            words.append((True, last))
        else:
            words.append((False, last if filler is None else filler(c)))
    return words


def drive_issue(ctx, dut, words, c):
    """Drive cycle c's ``issue``/``insn`` and, for a unit built with ``early`` (the chip's registered
    issue, hdl/common.py ``predecode``), ``pre_insn`` = the next cycle's word, as the chip does."""
    issue, word = words[c]
    ctx.set(dut.issue, issue)
    ctx.set(dut.insn.as_value(), word)
    if getattr(dut, "early", False):
        # only the opcode and count of a word that issues next cycle are defined (hdl/icu.py
        # ``dec_src``): before a cycle without an issue the unit gets the inverted word
        nxt = words[c + 1] if c + 1 < len(words) else (False, 0)
        ctx.set(dut.pre_insn.as_value(), nxt[1] if nxt[0] else ~nxt[1] & ((1 << INSTR_BITS) - 1))


async def lead_in(ctx, dut, words):
    """For an ``early`` unit: one idle cycle before cycle 0 that presents cycle 0's word on
    ``pre_insn`` (on a chip, the ICU's word is there in the cycle before any issue)."""
    if getattr(dut, "early", False):
        ctx.set(dut.issue, 0)
        ctx.set(dut.pre_insn.as_value(), words[0][1] if words else 0)
        await ctx.tick()


def variant(base, name=None, lanes=None, streams=None, c2c=None, install_rows=None, queue_depth=None, **latency):
    """A shipped config with some fields changed (latencies as keywords), through the loader."""
    raw = copy.deepcopy(load_config(base).raw)
    if queue_depth:
        raw["queue_depth"] = queue_depth
    if install_rows:
        raw.setdefault("mxm", {})["install_rows"] = install_rows
    raw["name"] = name or f"{base}-test"
    raw["latency"].update(latency)
    if lanes:
        raw["lanes"] = lanes
    if streams:
        raw["streams"] = streams
    if c2c:
        raw["c2c"].update(c2c)
    return parse_config(yaml.safe_dump(raw), f"<{raw['name']}>")


def flit(base):
    """A tray config on per-vector flit framing (``sim.perf.c2c.flit_variant``): for the tests of that
    framing's timing and codec (the shipped trays use burst framing)."""
    from tinylpu.sim.perf.c2c import flit_variant
    return flit_variant(base)


def ffn_layer(dm, dff, act, gated=False, bias=True, seed=0):
    """Random float FFN weights (``FFNWeights``) of one layer, scaled by fan-in."""
    from tinylpu.firmware.quant import FFNWeights
    rng = np.random.default_rng(seed)
    return FFNWeights(rng.normal(size=(dm, dff)) / np.sqrt(dm), rng.normal(size=(dff, dm)) / np.sqrt(dff),
                      rng.normal(size=(dm, dff)) / np.sqrt(dm) if gated else None,
                      rng.normal(size=dff) * 0.1 if bias else None, rng.normal(size=dm) * 0.1 if bias else None,
                      rng.normal(size=dff) * 0.1 if (bias and gated) else None, act)


def golden_run(cfg, prog, mem, reads):
    """A program on a fresh reference golden model: (cycles, {bank: vectors read})."""
    g = Golden(cfg)
    g.load_program(prog)
    for bank, (addr, data) in mem.items():
        g.write_mem(bank, addr, data)
    r = g.run()
    return r.cycles, {bank: g.read_mem(bank, addr, n) for bank, addr, n in reads}
