"""Shapes and signatures shared by every tinylpu unit.

Conventions (see docs/rtl.md):

* A vector is ``unsigned(8 * lanes)``; lane j is bits [8j, 8j+8), an int8 in two's complement.
* Every slice unit sees the stream registers at its own position (``east``/``west`` data and
  valid bits) and drives one result port ``out``.  Driving ``out.valid`` during cycle c loads the
  addressed register(s) at the end of c, so the value is visible during c+1: a result the golden
  model makes visible at cycle D is driven during D-1.
* ``issue``/``insn``: the slice's ICU presents a unit instruction in the cycle it issues (the
  golden model's issue cycle t); element 0 samples its operands in that same cycle.
* ``pre_insn``: on chips with registered issue (hdl/chip.py) a word with the opcode and count of
  the instruction the unit issues in the next cycle (hdl/icu.py ``dec_src``; the other fields are
  not that instruction's), so that a unit can decode them into registers before the issue
  (``predecode``); a unit uses it only when the chip sets its ``early`` attribute.
* ``busy``: high in cycle c when the unit still has something to do (sample, drive, write) in a
  cycle >= c.  ``err``: one-cycle pulses; the chip keeps them sticky in its status register.
"""

from dataclasses import dataclass
from types import SimpleNamespace

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from tinylpu.isa import COUNT_MAX, INT32_PLANES, Instr
from tinylpu.wire import ERROR_BITS, ErrorFlags

__all__ = ["vec", "Vec", "ErrorFlags", "OutPortSignature", "StreamTap", "unit_signature", "ERROR_BITS",
           "LAND_LANES", "land_copies", "aligned", "landing", "port_landing", "drive_landing", "hw_multipliers",
           "lut_mul8", "below", "ecp5_dsp", "ecp5_mult", "select", "pick_stream", "predecode", "predecode_held",
           "ElementField", "ElementSequencer"]


def vec(lanes):
    return unsigned(8 * lanes)


def Vec(lanes):  # noqa: N802 (a shape constructor)
    return vec(lanes)


#: lanes per copy of a result port's landing selects (``out.land`` / ``out.plane``)
LAND_LANES = 2


def land_copies(lanes):
    """How many copies of the landing selects a result port carries: one per `LAND_LANES` lanes."""
    return -(-lanes // LAND_LANES)


def OutPortSignature(lanes, streams):  # noqa: N802
    """A slice's stream output port: up to four vectors (an int32 group) onto consecutive streams.

    ``valid``/``west``/``index``/``wide`` describe the result; ``land``/``plane`` are the same
    decision pre-decoded and registered by the unit (``port_landing``), which is all the stream
    fabric uses: ``land[g]`` bit ``d * streams + s`` loads register s of direction d (0 east, 1 west)
    at the lanes of copy g, and ``plane[g]`` is ``index % 4`` (stream s takes plane
    ``(s - plane) % 4`` of ``data``).  Both are 0 when nothing lands, so that a unit with several
    result pipelines can OR them.  One copy per ``LAND_LANES`` lanes keeps every select net short:
    no single register output reaches all the bits of a stream register (docs/fpga.md)."""
    copies = land_copies(lanes)
    return wiring.Signature({
        "valid": Out(1),
        "west": Out(1),
        "index": Out(4),
        "wide": Out(1),      # 1: data[0..3] onto streams index..index+3; 0: data[0] onto stream index
        "data": Out(data.ArrayLayout(vec(lanes), INT32_PLANES)),
        "land": Out(data.ArrayLayout(2 * streams, copies)),
        "plane": Out(data.ArrayLayout(2, copies)),
    })


def aligned(cfg):
    """True when every int32 group (4 consecutive streams) necessarily starts at stream 0: a chip
    with 4 streams per direction.  Its units then drive a one-vector result on every plane of
    ``out.data`` and the stream fabric needs no plane select (hdl/streams.py)."""
    return cfg.streams == INT32_PLANES


def landing(valid, index, west, wide, streams):
    """The ``2 * streams`` landing bits of a result (``OutPortSignature``): bit ``d * streams + s``
    when it lands on stream s in direction d.  A wide (int32) group starting at index covers
    streams index..index+3; equality tests only (an adder or comparator here would be a carry chain
    in front of the port register)."""
    index = Value.cast(index)
    at = [index == Const(k, len(index)) for k in range(streams)]
    bits = []
    for d in (0, 1):
        go = valid & (west if d else ~west)
        for s in range(streams):
            covers = (wide & Cat(*at[max(0, s - 3):s]).any()) if s > 0 else 0
            bits.append(go & (at[s] | covers))
    return Cat(*bits)


def port_landing(m, name, valid, index, west, wide, cfg, planes=True):
    """Registered copies of a result's landing selects, for ``out.land``/``out.plane``.

    `valid`, `index`, `west`, `wide` are the inputs of the unit's last result register (the value
    it drives on ``out`` in the next cycle); returns ``(land, plane)``, one Signal per copy, each
    0 when `valid` is 0.  ``planes=False`` (units that never land an int32 group, ``WIDE_OUT =
    False``, whose fabric position has no plane select) makes ``plane`` the constant 0.  The copies
    are identical by construction; ``make synth`` marks their registers ``keep`` so that Yosys
    does not merge them back into one high-fanout register (scripts/synth.py ``KEEP_COPIES``)."""
    land, plane = [], []
    nxt = Signal(2 * cfg.streams, name=f"{name}_land_next")       # decoded once, registered per copy
    nxt_pl = Signal(2, name=f"{name}_plane_next")
    m.d.comb += [nxt.eq(landing(valid, index, west, wide, cfg.streams)),
                 nxt_pl.eq(Mux(valid, Value.cast(index)[:2], 0))]
    for g in range(land_copies(cfg.lanes)):
        lg = Signal(2 * cfg.streams, name=f"{name}_land{g}", attrs={"keep": 1})
        m.d.sync += lg.eq(nxt)
        land.append(lg)
        if not planes or aligned(cfg):      # (aligned: the fabric has no plane select)
            plane.append(Const(0, 2))
            continue
        pg = Signal(2, name=f"{name}_plane{g}", attrs={"keep": 1})
        m.d.sync += pg.eq(nxt_pl)
        plane.append(pg)
    return land, plane


def drive_landing(m, out, land, plane):
    """``out.land``/``out.plane`` from `port_landing`'s registers (lists of per-copy Values)."""
    for g, (lg, pg) in enumerate(zip(land, plane)):
        m.d.comb += [out.land[g].eq(lg), out.plane[g].eq(pg)]


def StreamTap(lanes, streams):  # noqa: N802
    """The stream registers at one position, as seen by the slice there."""
    return wiring.Signature({
        "east": Out(data.ArrayLayout(vec(lanes), streams)),
        "east_valid": Out(streams),
        "west": Out(data.ArrayLayout(vec(lanes), streams)),
        "west_valid": Out(streams),
    })


def select(items, index):
    """``items[index]`` as a tree of 2:1 muxes on the bits of `index`; 0 past the end.  (Indexing
    an ``ArrayLayout`` view with a Value becomes a shift of the whole array in RTLIL, which Yosys
    maps as a barrel shifter: several times the LUTs of this tree.)"""
    index = Value.cast(index)
    bits = max(1, (len(items) - 1).bit_length())
    level = list(items) + [0] * ((1 << bits) - len(items))
    for b in range(bits):
        sel = index[b] if b < len(index) else Const(0, 1)
        level = [Mux(sel, level[2 * k + 1], level[2 * k]) for k in range(len(level) // 2)]
    out = level[0]
    return Mux(index[bits:].any(), 0, out) if len(index) > bits else out


def pick_stream(tap, west, index, offset=0, lane=None):
    """(vector, valid) of stream ``index + offset`` of direction `west` (1: westward) in `tap`;
    a stream past the last one reads as empty.  The offset is applied to the mux inputs, not added
    to `index`, so no adder sits between the instruction and the operand mux.  `lane`: only that
    lane's byte of the vector."""
    n = len(tap.east_valid)
    part = (lambda r: r) if lane is None else (lambda r: r[8 * lane:8 * lane + 8])
    pick = (lambda regs: select([part(regs[i + offset]) if i + offset < n else 0 for i in range(n)], index))
    data = Mux(west, pick(tap.west), pick(tap.east))
    valid = Mux(west, pick(tap.west_valid), pick(tap.east_valid))
    return data, valid


def predecode(m, unit, name, fn):
    """``fn(unit.insn)`` -- a function of the opcode and count fields only (an opcode class, a count
    test) -- as a Signal named `name`.  With ``unit.early`` (the chip presents ``pre_insn`` one cycle
    ahead: hdl/chip.py, "Issue registers") it is a register loaded with ``fn(unit.pre_insn)``, so
    the decode sits in the cycle before the issue and the sample cycle starts from a flip-flop;
    otherwise it is ``fn(unit.insn)``, combinational.  The two agree in every cycle the unit issues
    (``pre_insn`` has the opcode and count of the next cycle's issue); in other cycles the early
    value is unspecified, so it may only matter together with ``issue``."""
    early = getattr(unit, "early", False)
    v = Value.cast(fn(unit.pre_insn if early else unit.insn))
    s = Signal(v.shape(), name=name)
    if early:
        m.d.sync += s.eq(v)
    else:
        m.d.comb += s.eq(v)
    return s


def predecode_held(m, unit, name, fn, accept, seq=None):
    """A `predecode`d bit of the instruction the unit accepts in this cycle, held in a register
    (``cur_<name>``) while that instruction runs: ``accept ? predecode(fn) : cur_<name>``, so the
    running element's class is one mux away from flip-flops (units that ignore an issue while busy,
    VXM and SXM).  With a sequencer `seq` built ``ahead`` (tap registers): one register, loaded
    with ``fn`` of the next cycle's instruction when that one is accepted (``seq.start_next``)."""
    if seq is not None and seq.ahead is not None:
        out = Signal(name=name)
        with m.If(seq.start_next):
            m.d.sync += out.eq(Value.cast(fn(seq.ahead.insn)).any())
        return out
    new = predecode(m, unit, f"{name}_new", fn)
    cur = Signal(name=f"cur_{name}")
    with m.If(accept):
        m.d.sync += cur.eq(new)
    out = Signal(name=name)
    m.d.comb += out.eq(Mux(accept, new, cur))
    return out


@dataclass(frozen=True)
class ElementField:
    """A field an ``ElementSequencer`` carries from the issuing word to every element.

    `new`: its value in the issue cycle (a field of ``insn``, a predecoded flag, or all of
    ``insn``); `shape`: the register's shape (default: `new`'s); `step`: ``step(el)`` is the next
    element's value, from this cycle's element fields ``el`` (an address that advances), None to
    keep it; `reg` / `el`: the names of the register and of this cycle's value (default
    ``<prefix>_<key>`` and ``<prefix>_el_<key>``); `lanes`: for a field with lane copies
    (``ElementSequencer`` `copies`) and a struct shape, the fields a lane reads, as paths
    (``("args", "vxm", "a")``): each copy registers only those bits and the others read 0 (with
    the whole 64-bit word per lane, kept apart from Yosys' merging, 352 of the 648 copy flip-flops
    of the ULX3S netlist at 332cb7a were read by nothing, all on the start decision's enable net)."""
    new: object
    shape: object = None
    step: object = None
    reg: str = None
    el: str = None
    lanes: tuple = None


def bit_ranges(shape, paths):
    """The bit ranges [(lo, hi)] of a value of layout `shape` that hold the fields `paths` (each a
    tuple of field names, ``("args", "vxm", "a")``), merged and sorted."""
    spans = []
    for path in paths:
        off, sh = 0, shape
        for name in path:
            field = data.Layout.cast(sh)[name]
            off, sh = off + field.offset, field.shape
        spans.append((off, off + Shape.cast(sh).width))
    out = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


class ElementSequencer:
    """Which element of a sub-unit's instruction runs in this cycle, and its fields.

    Built into the unit's own module (no submodule: the names stay in the unit's waveform scope
    and synthesis sees the same netlist as a hand-written copy).  An instruction that issues in
    cycle t with n elements runs element 0 in t, its fields straight from the issuing word, and
    element k in t+k, its fields from registers (with `replace` they take this cycle's fields
    every cycle, a field with a ``step`` advancing; without, they hold the accepted instruction's).
    Registers:

    * ``left``: elements still to run from this cycle on (loaded with n - 1 at the issue);
    * ``more`` (with `multi`: count >= 2) or ``idle`` (with `few`: count <= 1; init 1): ``left != 0``
      or its complement as a flip-flop, loaded from the predecoded count test, so "elements
      remain" needs no compare in the issue cycle;
    * ``knext`` (`index`): the next cycle's element index;
    * one per `fields` entry (``ElementField``).

    `issue`: an instruction for this sequencer issues in this cycle (its count test in `some`,
    None when `issue` already implies count != 0); `count`: its element count.  `replace`: an
    issue while elements remain starts the new instruction (MEM, MXM sub-units); otherwise it is
    ignored (VXM, SXM).  Either way it is ``err_busy``.

    Attributes: ``start`` (element 0 runs now: `issue`, or the accepted issue, ``names["start"]``),
    ``el`` (an element runs now), ``more`` / ``idle``, ``running`` (``more``, or ``~idle``),
    ``left``, ``k`` (the element index, with `index`), ``fields`` ({key: this cycle's value}),
    ``err_busy``.  `names` overrides the default names ``<prefix>_el``, ``<prefix>_left``,
    ``<prefix>_more`` / ``<prefix>_idle``, ``<prefix>_start``, ``<prefix>_k``, ``<prefix>_knext``.
    """

    def __init__(self, m, prefix, issue, count, *, fields=None, replace=True, some=None, multi=None, few=None,
                 span=COUNT_MAX, index=False, names=None, ahead=None, copies=1, copy_keys=None):
        if (multi is None) == (few is None):
            raise ValueError("ElementSequencer: give exactly one of multi (count >= 2) and few (count <= 1)")
        self.ahead = ahead
        nm = {key: f"{prefix}_{key}" for key in ("el", "left", "more", "idle", "start", "k", "knext")}
        nm.update(names or {})
        self.left = Signal(range(span + 1), name=nm["left"])
        if multi is not None:
            self.more = Signal(name=nm["more"])
            self.running = self.more
        else:
            self.idle = Signal(init=1, name=nm["idle"])
            self.running = ~self.idle
        if replace:
            self.start = issue
        else:
            self.start = Signal(name=nm["start"])
            m.d.comb += self.start.eq(issue & ~self.running)
        self.err_busy = issue & self.running
        self.el = Signal(name=nm["el"])
        self._count(m, count, some, multi, few, span, index, nm)
        if ahead is None:
            self._fields(m, prefix, fields or {}, replace)
        else:
            self._ahead(m, prefix, fields or {}, some, multi, index, nm, copies, replace, copy_keys)

    def _count(self, m, count, some, multi, few, span, index, nm):
        """``el``, ``left``, ``more``/``idle`` and (with `index`) ``k``/``knext``."""
        left, start, running = self.left, self.start, self.running
        flag, flag_new, flag_next = ((self.more, multi, left != 1) if multi is not None
                                     else (self.idle, few, left == 1))
        knext = Signal(range(span + 1), name=nm["knext"]) if index else None
        comb = self.ahead is None           # `ahead`: el and k are registers (``_ahead``)
        with m.If(start):
            if comb:
                m.d.comb += self.el.eq(1 if some is None else some)
            m.d.sync += [left.eq(count - 1 if some is None else Mux(some, count - 1, 0)), flag.eq(flag_new)]
            if index:
                m.d.sync += knext.eq(1)
        with m.Else():
            if comb:
                m.d.comb += self.el.eq(running)
            with m.If(running):
                m.d.sync += [left.eq(left - 1), flag.eq(flag_next)]
                if index:
                    m.d.sync += knext.eq(knext + 1)
        left_next = None
        if self.ahead is not None:
            left_next = Signal.like(left, name=f"{nm['left']}_next")      # next cycle's left
            m.d.comb += left_next.eq(Mux(start, count - 1 if some is None else Mux(some, count - 1, 0),
                                         Mux(running, left - 1, left)))
        self._next = SimpleNamespace(
            flag=Mux(start, flag_new, Mux(running, flag_next, flag)),
            left=left_next,
            knext=Mux(start, 1, Mux(running, knext + 1, knext)) if index else None)
        if index:
            self.k = Signal(range(span + 1), name=nm["k"])
            if comb:
                m.d.comb += self.k.eq(Mux(start, 0, knext))

    def _ahead(self, m, prefix, fields, some, multi, index, nm, copies, replace, copy_keys):
        """`ahead` (a unit behind tap registers, hdl/taps.py, which sees the issue of its next cycle
        a cycle early: ``ahead.issue``, ``ahead.fields[key]`` the fields' `new` values next cycle,
        ``ahead.some`` the count test): ``el``, ``k`` and every field are registers loaded from
        next-cycle values, so no mux on ``start`` sits between the issue and the unit's operand
        selects.  Same values as the combinational form in every cycle:
        ``start_next`` = next cycle's ``start`` (``ahead.issue``, and without `replace` not running
        next cycle); a field register takes ``ahead.fields[key]`` then, and otherwise its ``step``
        or its own value (element 0 and the held register are one register).  ``copies`` > 1:
        ``el`` and every field also in ``copies`` kept registers (``<name>_copy<g>``, g = 0 ..
        copies - 1, scripts/synth.py ``KEEP_COPIES``), ``el_copies`` and ``field_copies[g]``, for
        selects spread over the lanes, beside the base registers the shared logic reads;
        `copy_keys`: only these fields (default all; ``field_copies[g]`` holds the base register
        of the others).  The field registers and their copies have no reset: they are data, read
        only where ``el`` marks an element (and hold the last instruction's values between
        instructions anyway), so the slice's reset net reaches the sequencing registers only (the
        routed critical path of seed 2 at dabd5b1, 78.22 MHz, was slice_rst_vxm0's net to
        ``el_insn_copy6``, 11.84 ns of routing)."""
        run_next = self._next.flag if multi is not None else ~self._next.flag
        self.start_next = Signal(name=f"{nm['start']}_next")
        m.d.comb += self.start_next.eq(self.ahead.issue if replace else self.ahead.issue & ~run_next)
        some_next = 1 if some is None else self.ahead.some
        el_next = Mux(self.start_next, some_next, run_next)
        self.el_next = el_next                  # next cycle's ``el`` (the base register's input)
        # with copies: the base registers (``el``, ``fields``) feed the unit's shared logic only,
        # and carry ``tinylpu_keep`` (scripts/synth.py ``KEEP_COPIES``) so that Yosys does not merge
        # them into one of the lane copies (it did: the copy then fed every lane's logic and the
        # shared logic from one place, the routed critical path at 706b03f, 72.44 MHz)
        keep = {"tinylpu_keep": 1} if copies > 1 else {}
        if copies > 1:
            self.el = Signal(name=nm["el"], attrs=keep)
        self.el_copies = ([self.el] if copies == 1 else
                          [Signal(name=f"{nm['el']}_copy{g}") for g in range(copies)])
        # each lane copy's own start decision (``start_next_copy<g>``): without `replace` it needs
        # "running next cycle" (``run_next``), which is kept per copy as a register
        # (``<prefix>_run_copy<g>``) loaded a cycle earlier still, from next cycle's start
        # (``start_next``, ``ahead.multi``: the next issue's count >= 2) and next cycle's count
        # (``left_next``): run_next(t + 1) = start(t + 1) ? count >= 2 : running(t + 1) and
        # left(t + 1) != 1.  So each copy's clock enable comes from a flip-flop beside it and the
        # ICU's issue, not from the shared count (the routed critical path of seed 3 at 332cb7a,
        # 70.16 MHz, ran elems_left through the one start decision to lane 2's copy, 13.0 ns of
        # routing)
        self.start_next_copies = [self.start_next] * copies
        if copies > 1 and not replace:
            self.start_next_copies, el_nexts = [], []
            r_next = Mux(self.start_next, self.ahead.multi, run_next & (self._next.left != 1))
            for g in range(copies):
                run_g = Signal(name=f"{prefix}_run_copy{g}")
                m.d.sync += run_g.eq(r_next)
                sn = Signal(name=f"{nm['start']}_next_copy{g}")
                m.d.comb += sn.eq(self.ahead.issue & ~run_g)
                self.start_next_copies.append(sn)
                el_nexts.append(Mux(sn, some_next, run_g))
            m.d.sync += self.el.eq(el_next)
            m.d.sync += [e.eq(x) for e, x in zip(self.el_copies, el_nexts)]
        else:
            m.d.sync += [e.eq(el_next) for e in {id(e): e for e in [self.el, *self.el_copies]}.values()]
        if index:
            self.k_next = Signal.like(self.k, name=f"{nm['k']}_next")       # next cycle's k
            m.d.comb += self.k_next.eq(Mux(self.start_next, 0, self._next.knext))
            m.d.sync += self.k.eq(self.k_next)
        self.fields = {}
        self.field_copies = [{} for _ in range(copies)]
        copied = {key for key in fields if copies > 1 and (copy_keys is None or key in copy_keys)}
        narrow = {}                     # key: the bit ranges a lane copy holds (ElementField.lanes)
        for key, f in fields.items():
            shape = f.shape if f.shape is not None else f.new.shape()
            name = f.el or f"{prefix}_el_{key}"
            self.fields[key] = Signal(shape, name=name, attrs=keep if key in copied else {}, reset_less=True)
            if key in copied and f.lanes is not None:
                if f.step:
                    raise ValueError(f"ElementSequencer: field {key!r} has a step; its lane copies hold all of it")
                narrow[key] = bit_ranges(shape, f.lanes)
            for g in range(copies):
                if key not in copied:
                    self.field_copies[g][key] = self.fields[key]
                elif key in narrow:
                    # the register holds the lanes' bits only; the lane reads them through a
                    # full-shape wire (``<name>_lane<g>``) whose other bits are 0
                    bits = narrow[key]
                    reg = Signal(sum(hi - lo for lo, hi in bits), name=f"{name}_copy{g}", reset_less=True)
                    src = Value.cast(self.ahead.fields[key])
                    with m.If(self.start_next_copies[g]):
                        m.d.sync += reg.eq(Cat(*(src[lo:hi] for lo, hi in bits)))
                    view = Signal(shape, name=f"{name}_lane{g}")
                    flat, at = Value.cast(view), 0
                    for lo, hi in bits:
                        m.d.comb += flat[lo:hi].eq(reg[at:at + hi - lo])
                        at += hi - lo
                    self.field_copies[g][key] = view
                else:
                    self.field_copies[g][key] = Signal(shape, name=f"{name}_copy{g}", reset_less=True)
        for key, f in fields.items():
            regs = [(self.fields, self.start_next)] + (
                list(zip(self.field_copies, self.start_next_copies)) if key in copied and key not in narrow else [])
            for group, start_next in regs:
                r = group[key]
                with m.If(start_next):
                    m.d.sync += r.eq(self.ahead.fields[key])
                if f.step:
                    with m.Else():
                        m.d.sync += r.eq(f.step(group))

    def _fields(self, m, prefix, fields, replace):
        """Per field: this cycle's value (``fields[key]``) and its register.  `replace`: the
        register takes this cycle's value (or its ``step``) every cycle; else it holds the accepted
        instruction's (a register with an enable, as the hand-written VXM/SXM copies had it: the
        same values, and ABC maps that form into fewer LUTs there)."""
        start = self.start
        regs, self.fields = {}, {}
        for key, f in fields.items():
            shape = f.shape if f.shape is not None else f.new.shape()
            regs[key] = Signal(shape, name=f.reg or f"{prefix}_{key}")
            self.fields[key] = Signal(shape, name=f.el or f"{prefix}_el_{key}")
        if replace:
            with m.If(start):
                m.d.comb += [self.fields[key].eq(f.new) for key, f in fields.items()]
            with m.Else():
                m.d.comb += [self.fields[key].eq(regs[key]) for key in regs]
        for key, f in fields.items():
            if not replace:
                m.d.comb += self.fields[key].eq(Mux(start, Value.cast(f.new), Value.cast(regs[key])))
            if f.step:
                m.d.sync += regs[key].eq(f.step(self.fields))
            elif replace:
                m.d.sync += regs[key].eq(self.fields[key])
            else:
                with m.If(start):
                    m.d.sync += regs[key].eq(f.new)


def unit_signature(cfg, extra=None):
    """The members every slice unit has; `extra` adds unit-specific ones (host access etc.)."""
    members = {
        "issue": In(1),
        "insn": In(Instr),
        "pre_insn": In(Instr),
        "tap": In(StreamTap(cfg.lanes, cfg.streams)),
        "out": Out(OutPortSignature(cfg.lanes, cfg.streams)),
        "busy": Out(1),
        "err": Out(ErrorFlags),
    }
    members.update(extra or {})
    return members


#: hardware multipliers per FPGA device (nextpnr-ecp5 maps only MULT18X18D; iCE40UP SB_MAC16)
_MULTIPLIERS = {"LFE5U-85F": 156, "LFE5UM-85F": 156, "LFE5UM5G-85F": 156, "LFE5U-45F": 72,
                "LFE5UM-45F": 72, "LFE5U-25F": 28, "LFE5U-12F": 28, "iCE40UP5K": 8, "iCE40UP3K": 4}


def hw_multipliers(platform):
    """The number of hardware multipliers of `platform`'s device, or None (simulation, Verilog
    export, unknown device: every product is a plain ``*``, mapped however the tool likes)."""
    device = getattr(platform, "device", None)
    return _MULTIPLIERS.get(device) if device else None


def lut_mul8(m, x, w, name):
    """x * w for two int8 Values as a signed 16-bit Signal, built from a radix-4 Booth recoding of
    x and three adders, so that synthesis cannot map it to a DSP block (used where the device has
    run out of hardware multipliers).  Bit-exact with ``x.as_signed() * w.as_signed()``."""
    x, w = Value.cast(x), Value.cast(w).as_signed()
    terms = []
    for k in range(4):
        bm1 = x[2 * k - 1] if k else Const(0, 1)
        b0, b1 = x[2 * k], x[2 * k + 1]
        one = b0 ^ bm1
        two = (b1 & ~b0 & ~bm1) | (~b1 & b0 & bm1)
        neg = b1 & ~(b0 & bm1)
        mag = Signal(signed(10), name=f"{name}_mag{k}")
        m.d.comb += mag.eq(Mux(one, w, Mux(two, w << 1, 0)))
        pp = Mux(neg, ~mag, mag).as_signed()          # -mag = ~mag + 1: the +1 is added below
        terms.append((pp, neg))
    # sum_k (pp_k + neg_k) * 4^k: neg_k rides in the two zero bits below pp_(k+1)
    (p0, n0), (p1, n1), (p2, n2), (p3, n3) = terms
    x1 = Cat(n0, Const(0, 1), p1).as_signed()          # (pp1 << 2) + neg0
    x2 = Cat(n1, Const(0, 1), p2).as_signed()          # ((pp2 << 2) + neg1) << 2
    x3 = Cat(n2, Const(0, 1), p3, ).as_signed()        # ((pp3 << 2) + neg2) << 4
    lo = Signal(signed(13), name=f"{name}_lo")
    hi = Signal(signed(15), name=f"{name}_hi")
    m.d.comb += [lo.eq(p0 + x1), hi.eq(x2 + (x3 << 2) + (n3 << 4))]
    r = Signal(signed(16), name=name)
    m.d.comb += r.eq(lo + (hi << 2))
    return r


def below(v, n):
    """``0 <= v < n`` (for an unsigned `v` just ``v < n``); a bit test, no comparator, when n is a
    power of two: the bits from log2(n) up, the sign included, are all 0."""
    v = Value.cast(v)
    if n >= 1 and n & (n - 1) == 0:
        lg = n.bit_length() - 1
        return ~v[lg:].any() if lg < len(v) else Const(1, 1)
    return ((v >= 0) & (v < n)) if v.shape().signed else v < n


def ecp5_dsp(platform):
    """True when `platform` is a Lattice ECP5 (products may use ``ecp5_mult``)."""
    return str(getattr(platform, "device", "") or "").startswith("LFE5")


def ecp5_mult(m, a, b, name, reg_a=True, reg_b=False):
    """a * b (signed, each at most 18 bits) in one ECP5 ``MULT18X18D`` with its output register
    and, as asked, its A / B input registers, all on the ``sync`` clock: the product of the
    operands presented in cycle c (each operand whose input register is used) or c+1 (one whose
    register is not) is valid in c+2.  It is the
    same timing as fabric registers around a ``*``, but the registers sit inside the DSP block, so
    the route from the fabric to the multiplier and back is register to register.  Only for
    ECP5 builds (``ecp5_dsp``): the Amaranth simulator cannot run the primitive; simulations use
    the fabric-register form, which this matches cycle for cycle."""
    a, b = Value.cast(a), Value.cast(b)
    assert len(a) <= 18 and len(b) <= 18
    a18, b18 = a.as_signed() + Const(0, signed(18)), b.as_signed() + Const(0, signed(18))
    a18, b18 = a18[:18], b18[:18]
    p = Signal(36, name=f"{name}_p")
    ports = {f"i_A{k}": a18[k] for k in range(18)}
    ports.update({f"i_B{k}": b18[k] for k in range(18)})
    ports.update({f"i_C{k}": Const(0, 1) for k in range(18)})
    ports.update({f"o_P{k}": p[k] for k in range(36)})
    m.submodules[name] = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK="CLK0" if reg_a else "NONE",
        p_REG_INPUTB_CLK="CLK0" if reg_b else "NONE",
        p_REG_OUTPUT_CLK="CLK0",
        p_GSR="DISABLED",
        i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1), i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
        i_CLK0=ClockSignal("sync"), i_CE0=Const(1, 1), i_RST0=Const(0, 1),
        **ports)
    return p.as_signed()
