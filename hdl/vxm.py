"""VXM slice: the vector ALU (every VXM opcode), requantization, the LUT and their register loads.

One ALU sub-unit: an instruction with count n processes element k at cycle t+k (t the issue cycle);
element k samples its stream operands from ``tap`` during t+k and its result is driven on ``out``
during t+k+L-1 (visible on the stream during t+k+L), L the op's configured latency:

===========================  ===========  =========================================================
ops                          latency      pipeline; ``|cut|`` = optional register stage
===========================  ===========  =========================================================
MOV ADD SUB MIN MAX RELU     ``vxm_alu``  operands |in| every op's value, masked by its one-hot op
SHL SHR AND OR XOR SEL ADD32              bit |mid| OR of the masked values -> result register
MUL                          ``vxm_mul``  operands |in| 8x16 product |prod| coarse shift (by 8s)
                                          |coarse| fine shift, round, saturate -> result register
REQ REQL                     ``vxm_req``  operands (A, m, sh, z) |in| two 16x16 partial products
                                          (DSP blocks) |prod| 48-bit sum |sum| coarse shift
                                          |coarse| fine shift, round, add z (REQL offset),
                                          saturate -> result
LUT                          ``vxm_lut``  operand |in| table read (one table copy per lane), byte
                                          select -> result register; with |in| the copies have a
                                          synchronous read port addressed in the sample cycle
LDM (elements: M low bytes,  -            registers written at the end of the sample cycle
M high bytes, SH, Z), LDLUT
===========================  ===========  =========================================================

Each op class has its own result pipeline of L-1 registers.  The last one is always the result
register; the cuts are used in the order of priority ALU: in, mid; MUL: prod, in, coarse; REQ: prod, sum, in,
coarse; LUT: in, as far as L-1 leaves room, and what is left over pads the result as a delay line.
At the minimum latency (2) every op computes in its sample cycle.  tiny (mul 3, req 4, lut 2):
MUL |prod|, REQ |prod|sum|; fpga-8s (alu 4, mul 5, req 6, lut 3), and fpga behind its tap registers:
ALU |in|mid|, MUL |in|prod|coarse|, REQ |in|prod|sum|coarse|, LUT |in| (a synchronous table read).  On an ECP5 build MUL's and REQ's |in|
and |prod| registers are the MULT18X18D's own (``common.ecp5_mult``).  The rounded shift is split in two
(``shr_coarse``: by the multiple of 8, plus the range test looked up for each fine shift;
``shr_fine_round``: by 0..7, round, saturate) so that no stage has a 49-bit barrel shifter and a
saturating add in series.
Register loads take effect at the end of their sample cycle.  REQL takes M/SH/Z in its sample
cycle; LUT reads the table at most one cycle later (after |in|), when a load sampled then has not
landed yet: an element never sees a load sampled after it.

Two results driven in one cycle (ops of different latency) flag ``err.port``; an element reading
an empty stream slot flags ``err.empty``; an issue while elements remain flags ``err.busy`` (the
new instruction is ignored); an LDLUT row outside the table flags ``err.addr``.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.utils import exact_log2

from tinylpu.config import MIN_LATENCY
from tinylpu.hdl.common import (
    ElementField,
    ElementSequencer,
    aligned,
    below,
    ecp5_dsp,
    ecp5_mult,
    land_copies,
    pick_stream,
    port_landing,
    predecode,
    predecode_held,
    select,
    unit_signature,
    vec,
)
from tinylpu.isa import INT32_PLANES, Opcode

__all__ = ["VxmSlice", "Pipe", "round_sat8", "sat8"]


#: The instruction fields a lane's operand selects read (``_operands``): its copy of ``el_insn``
#: behind tap registers holds only these (``ElementField.lanes``)
LANE_FIELDS = (("args", "vxm", "a"), ("args", "vxm", "b"), ("args", "vxm", "c"), ("args", "vxm", "imm"),
               ("args", "vxm", "use_imm"))


class Pipe:
    """The result pipeline of one op class: ``latency - 1`` register stages.

    ``cuts`` names the optional register stages inside the computation, most useful first; as
    many as fit are used (``cut``), the final result register comes from ``finish``, and the rest
    of the budget pads the result as a delay line.  Values travel as dicts of name -> Value or
    list of Values (one per lane); ``valid`` marks a live element.
    """

    def __init__(self, m, name, latency, cuts=()):
        regs = latency - 1
        if regs < 1:
            raise ValueError(f"{name}: latency {latency} is below the minimum of 2")
        self.m, self.name = m, name
        self.cuts = tuple(cuts)[:regs - 1]
        self.pad = regs - 1 - len(self.cuts)
        self.valids = []

    def _reg1(self, name, v, live=None):
        v = Value.cast(v)
        s = Signal(v.shape(), name=name)
        self.m.d.sync += s.eq(v if live is None else Mux(live, v, 0))
        return s

    def _reg(self, tag, vals, live=None):
        """Register `vals`; with `live`, ``data`` is registered as 0 where `live` is 0."""
        out = {}
        for key, v in vals.items():
            k = live if key == "data" else None
            if isinstance(v, (list, tuple)):
                out[key] = [self._reg1(f"{self.name}_{tag}_{key}{j}", x, k) for j, x in enumerate(v)]
            else:
                out[key] = self._reg1(f"{self.name}_{tag}_{key}", v, k)
        if "valid" in out:
            self.valids.append(out["valid"])
        return out

    def cut(self, tag, vals, done=()):
        """Register `vals` when the stage `tag` is used; keys in `done` are already registered
        for that stage by the caller (a DSP block's output register) and pass through."""
        if tag not in self.cuts:
            return vals
        out = self._reg(tag, {k: v for k, v in vals.items() if k not in done})
        out.update({k: vals[k] for k in done})
        return out

    def has(self, *tags):
        return all(t in self.cuts for t in tags)

    def finish(self, vals, cfg, zeroed=False):
        """The result register and the pad stages.  The last register also holds the landing
        selects (``land``/``plane``, ``common.port_landing``) and registers ``data`` as 0 when no
        element is valid, so that the output port is the OR of the pipelines' last registers
        (`zeroed`: the caller's data is already 0 then, and no zeroing mux is added)."""
        for i in range(1 + self.pad):
            tag = "r" if i == 0 else f"d{i}"
            if i < self.pad:
                vals = self._reg(tag, vals)
                continue
            land, plane = port_landing(self.m, f"{self.name}_{tag}", vals["valid"], vals["index"], vals["west"],
                                       vals["wide"], cfg)
            vals = self._reg(tag, vals, live=None if zeroed else vals["valid"])
            vals.update(land=land, plane=plane)
        return vals


META = ("valid", "index", "west", "wide")

#: the int8 ALU ops, in the order of the ALU's one-hot op register (ADD32 follows them)
ALU8_OPS = (Opcode.MOV, Opcode.ADD, Opcode.SUB, Opcode.MIN, Opcode.MAX, Opcode.RELU, Opcode.SHL, Opcode.SHR,
            Opcode.AND, Opcode.OR, Opcode.XOR, Opcode.SEL)


def _or(vals):
    out = vals[0]
    for v in vals[1:]:
        out = out | v
    return out


def _meta(vals):
    return {k: vals[k] for k in META}


def sat8(v):
    """Saturate a signed value to int8; returns the 8-bit pattern.

    v fits int8 iff its bits 7.. are all equal (no comparator carry chains: one wide AND/NOR and a
    mux, which is what keeps the ALU's and REQ's last stage short on an FPGA)."""
    v = Value.cast(v)
    assert v.shape().signed, "sat8 needs a signed value"
    w = len(v)
    if w <= 8:
        return Cat(v, v[w - 1].replicate(8 - w))        # always fits: sign-extend
    hi = v[7:w]
    fits = hi.all() | ~hi.any()
    return Mux(fits, v[0:8], Mux(v[w - 1], 0x80, 0x7F))


def clamp10(y):
    """A signed value clamped to [-512, 511], as a signed(10) (sat8(x + y), min/max(x, y) of an int8
    x are the same with y or clamp10(y))."""
    y = Value.cast(y)
    w = len(y)
    if w <= 10:
        return y.as_signed()
    hi = y[9:w]
    return Mux(hi.all() | ~hi.any(), y[0:10], Mux(y[w - 1], 0x200, 0x1FF)).as_signed()


def round_sat8(t, fits=None, neg=None):
    """sat8((t + 1) >> 1) for a signed t = (2 * p) >> s, i.e. sat8(rshift_round(p, s)).

    With u = t >> 1 = p >> s and the round bit r = t[0] = p[s - 1], the result is u + r; the
    saturation test is done on u (a sign-extension check) so only an 8-bit increment remains.
    `fits` ("u fits int8": t's bits 8.. all equal) and `neg` (t's sign) may be given when an earlier
    stage looked them up; then only t's bits 0..8 are used.
    """
    t = Value.cast(t)
    if fits is None:
        w = len(t)
        assert w >= 10
        hi = t[8:w]                     # u bits 7.. : u fits int8 iff they are all equal
        fits, neg = hi.all() | ~hi.any(), t[w - 1]
    u_is_127 = t[1:8].all() & ~t[8]
    low = (t[1:9] + t[0])[0:8]
    return Mux(fits, Mux(u_is_127 & t[0], 0x7F, low), Mux(neg, 0x80, 0x7F))


def shr_coarse(m, t0, sh, name, fit_bits=10):
    """First half of ``t = t0 >> sh`` (arithmetic, sh unsigned 6-bit): shift by the multiple of 8 in
    sh and look ahead at the range test the second half needs.

    Returns ``(tl, fits, neg)``: tl = the low 18 bits of t0 >> (sh & ~7), fits[f] = "t0 >> (sh & ~7)
    >> f has bits `fit_bits`.. all equal" for f = 0..7, neg = the sign.  ``shr_fine_round``
    finishes: with an offset z (REQ) it needs t in 11 bits (``fit_bits`` 10), without one (MUL)
    u = t >> 1 in int8 (``fit_bits`` 8)."""
    t0 = Value.cast(t0)
    w = len(t0)
    src = Signal(w, name=f"{name}_t0")
    c = Signal(3, name=f"{name}_c")
    m.d.comb += [src.eq(t0), c.eq(sh[3:6])]
    neg = src[w - 1]
    tc = Signal(w, name=f"{name}_tc")
    with m.Switch(c):
        for n in range(8):
            with m.Case(n):
                m.d.comb += tc.eq(Cat(*(src[i + 8 * n] if i + 8 * n < w else neg for i in range(w))))
    ne = Signal(w, name=f"{name}_ne")      # bit i set: tc[i] differs from the sign
    fits = Signal(8, name=f"{name}_fits")
    m.d.comb += [ne.eq(tc ^ neg.replicate(w)),
                 fits.eq(Cat(*(~ne[fit_bits + f:w].any() for f in range(8))))]
    return tc[0:18], fits, neg


def shr_fine_round(m, tl, fits, neg, sh, z, name):
    """Second half: t = tl >> (sh & 7), then sat8(((t + 1) >> 1) + z), i.e.
    sat8(rshift_round(p, s) + z), whose range test ``fits`` the first half looked up.

    With an offset z (REQ/REQL; ``fits`` from ``shr_coarse(fit_bits=10)``): only u = t >> 1 in
    [-512, 511] needs the addition (11 bits); outside that range |z + r| <= 128 cannot bring the
    result back into int8, and the sign decides.  Without one (z None, MUL; ``fit_bits=8``):
    ``round_sat8``, an 8-bit increment and no saturation test after it."""
    f = Signal(3, name=f"{name}_f")
    fit = fits.bit_select(f, 1)
    r = Signal(8, name=f"{name}_res")
    m.d.comb += f.eq(sh[0:3])
    if z is None:
        t = Signal(9, name=f"{name}_t")
        m.d.comb += [t.eq(tl >> f), r.eq(round_sat8(t, fit, neg))]
        return r
    t = Signal(11, name=f"{name}_t")
    small = Signal(signed(12), name=f"{name}_small")
    m.d.comb += [
        t.eq(tl >> f),
        small.eq(t[1:11].as_signed() + t[0] + Value.cast(z).as_signed()),
        r.eq(Mux(fit, sat8(small), Mux(neg, 0x80, 0x7F))),
    ]
    return r


def _lanes(v, lanes):
    return [v[8 * j:8 * j + 8] for j in range(lanes)]


class VxmSlice(wiring.Component):
    """The VXM slice unit; ``VxmSlice(cfg, slice)``."""

    def __init__(self, cfg, slice=None, lut_read=None):
        """`lut_read`: how the LUT table is read with the |in| cut, ``"sync"`` (a synchronous read
        port addressed in the sample cycle: block RAM) or ``"late"`` (the operand registered, then
        an asynchronous read: LUT RAM); None picks ``"late"`` on ECP5, else ``"sync"``."""
        if lut_read not in (None, "sync", "late"):
            raise ValueError(f"lut_read must be 'sync' or 'late', not {lut_read!r}")
        self.lut_read = lut_read
        self.cfg = cfg
        self.slice = slice
        self.lanes = cfg.lanes
        self.aligned = aligned(cfg)       # 4 streams: one-vector results on every plane
        self.latency = {k: cfg.latency[k] for k in ("vxm_alu", "vxm_mul", "vxm_req", "vxm_lut")}
        for key, value in self.latency.items():
            if value < MIN_LATENCY[key]:
                self._MustUse__silence = True       # never elaborated: no "unused" warning
                raise ValueError(f"latency {key} = {value} is below the minimum of {MIN_LATENCY[key]}")
        self.lut_rows = 256 // cfg.lanes          # 0 when a row is wider than the table
        # set by hdl/taps.py's ``Tapped`` before elaboration: this cycle's issue and instruction at
        # the tap registers' inputs, i.e. the unit's of the next cycle (``ElementSequencer`` ahead)
        self.ahead = None
        super().__init__(unit_signature(cfg))

    def _lut_read(self, platform):
        if self.lut_read:
            return self.lut_read
        return "late" if ecp5_dsp(platform) else "sync"

    def elaborate(self, platform):
        m = Module()
        seq = self._sequencer(m)
        dec = self._decode(m, seq)
        op = self._operands(m, seq, dec)
        pipes = [self._alu(m, op), self._mul(m, platform, op), self._req(m, platform, op),
                 self._lut(m, platform, op)]
        self._result_port(m, pipes, seq.el)
        return m

    def _sequencer(self, m):
        """Element sequencing (``common.ElementSequencer``): ``el_insn`` is the instruction of this
        cycle's element (``cur_insn`` holds it for elements k >= 1), ``el_k`` its index; an issue
        while elements remain is ignored (``err.busy``)."""
        # decoded from the instruction word alone (``common.predecode``: in the cycle before the
        # issue on chips with registered issue)
        new_some = predecode(m, self, "dec_some", lambda i: i.args.vxm.count != 0)
        new_few = predecode(m, self, "dec_few", lambda i: i.args.vxm.count <= 1)
        kw = {}
        if self.ahead is not None:
            # behind tap registers: el_valid, el_k, el_insn and the op classes are registers loaded
            # a cycle ahead, el_valid and el_insn once per lane (``el_insn_copy<j>``), so each
            # lane's operand selects have their own select registers beside them
            a = self.ahead
            kw = {"ahead": SimpleNamespace(issue=a.issue, insn=a.insn, fields={"insn": a.insn},
                                           some=a.insn.args.vxm.count != 0, multi=a.insn.args.vxm.count >= 2),
                  "copies": self.lanes}
        seq = ElementSequencer(
            m, "el", self.issue, self.insn.args.vxm.count, replace=False, some=new_some, few=new_few, index=True,
            fields={"insn": ElementField(self.insn, reg="cur_insn", el="el_insn", lanes=LANE_FIELDS)},
            names={"start": "accept", "el": "el_valid", "left": "elems_left", "idle": "idle", "k": "el_k",
                   "knext": "elem_next"}, **kw)
        m.d.comb += self.err.busy.eq(seq.err_busy)
        return seq

    def _decode(self, m, seq):
        """Each op class: predecoded for a new instruction, held while it runs
        (``common.predecode_held``).  {class: flag}."""
        accept = seq.start
        O = Opcode
        dec = {}
        for nm, ops in {
            "alu8": ALU8_OPS,
            "add32": (O.ADD32,), "mul": (O.MUL,), "req": (O.REQ, O.REQL), "reql": (O.REQL,),
            "lut": (O.LUT,), "ldm": (O.LDM,), "ldlut": (O.LDLUT,), "sel": (O.SEL,),
            "binary": (O.ADD, O.SUB, O.MUL, O.MIN, O.MAX, O.AND, O.OR, O.XOR),
            **{o.name.lower(): (o,) for o in ALU8_OPS},       # the ALU's one-hot op
        }.items():
            dec[nm] = predecode_held(m, self, f"dec_{nm}", lambda i, ops=ops: Cat(*(i.op == o for o in ops)).any(),
                                     accept, seq)
        return dec

    def _operands(self, m, seq, dec):
        """Streams a, a+1..a+3, b, b+1..b+3 and c of this cycle's element, operand b of the binary
        ops (``ys``: a stream lane or the immediate) and ``err.empty``."""
        lanes, tap = self.lanes, self.tap
        v = seq.fields["insn"].args.vxm
        el = seq.el
        # per lane: the instruction copy its selects read (one register for all without taps)
        vl = [c["insn"].args.vxm for c in seq.field_copies] if self.ahead is not None else [v] * lanes

        def stream(which, name, plane=0):
            """Stream ``ref.index + plane`` of direction ``ref.west`` (``common.pick_stream``), ref
            = ``which(insn)``: each lane selected by its own copy of the instruction."""
            d = Signal(vec(lanes), name=name)
            ok = Signal(name=f"{name}_ok")
            ref = which(v)
            pd, pv = pick_stream(tap, ref.west, ref.index, plane)
            if self.ahead is not None:
                pd = Cat(*(pick_stream(tap, which(vl[j]).west, which(vl[j]).index, plane, lane=j)[0]
                           for j in range(lanes)))
            m.d.comb += [d.eq(pd), ok.eq(pv)]
            return d, ok

        def group_ok(ref, name):
            """Streams ref.index .. ref.index + 3 all valid: the AND of each 4-stream window is formed
            from the valid registers first, then one window is selected (no AND after the selects)."""
            n = len(tap.east_valid)
            win = (lambda vb: [Cat(*(vb[i + p] for p in range(INT32_PLANES))).all() if i + INT32_PLANES <= n
                               else 0 for i in range(n)])
            ok = Signal(name=name)
            m.d.comb += ok.eq(Mux(ref.west, select(win(tap.west_valid), ref.index),
                                  select(win(tap.east_valid), ref.index)))
            return ok

        a = [stream(lambda i: i.a, f"opa{b}", b) for b in range(INT32_PLANES)]
        bb = [stream(lambda i: i.b, f"opb{b}", b) for b in range(INT32_PLANES)]
        c, c_ok = stream(lambda i: i.c, "opc")
        a_ok4 = group_ok(v.a, "opa_ok4")
        b_ok4 = group_ok(v.b, "opb_ok4")
        a_group = dec["req"] | dec["add32"]
        a_byte = dec["alu8"] | dec["mul"] | dec["lut"] | dec["ldm"] | dec["ldlut"]
        b_byte = (dec["binary"] & ~v.use_imm) | dec["sel"]
        c_byte = dec["sel"]
        m.d.comb += self.err.empty.eq(el & (
            (a_byte & ~a[0][1]) | (a_group & ~a_ok4) | (b_byte & ~bb[0][1]) |
            (dec["add32"] & ~b_ok4) | (c_byte & ~c_ok)))

        xb = _lanes(bb[0][0], lanes)
        imm = v.imm                                   # signed 16

        def meta(cls, wide=0):
            """A pipeline's element metadata: valid for the op class `cls`, destination, width."""
            return {"valid": el & cls, "index": v.d.index, "west": v.d.west, "wide": wide}

        return SimpleNamespace(
            v=v, el=el, dec=dec, seq=seq, imm=imm, meta=meta,
            el_lane=getattr(seq, "el_copies", [el] * lanes),
            a=[p[0] for p in a], b=[p[0] for p in bb], xa=_lanes(a[0][0], lanes), xc=_lanes(c, lanes),
            # operand b of the binary ops: the stream lane, or the immediate (all 16 bits of it)
            ys=[Mux(vl[j].use_imm, vl[j].imm, xb[j].as_signed()) for j in range(lanes)],
            # ys clamped to 10 bits (``clamp10``), the clamp on the immediate only (an int8 lane is
            # its own clamp): the range test is not behind the operand select (the routed critical
            # path of seed 1 at 56a395c, 79.23 MHz, ran a lane's el_insn copy through the select
            # and the clamp into ``alu_in_yc``)
            yc=[Mux(vl[j].use_imm, clamp10(vl[j].imm), xb[j].as_signed()) for j in range(lanes)])

    # --- ALU: int8 ops and ADD32 -------------------------------------------------------------
    def _alu(self, m, op):
        """|in| (vxm_alu >= 3): the selected operands are registered, the ALU gets a cycle of its
        own.  The op is one-hot (each bit already ANDed with the element's valid), registered at
        |in|: the result is an AND-OR of the ops' values, 0 when no element is valid, with no op
        decoder, ADD32 mux or zeroing mux after the arithmetic."""
        lanes, dec = self.lanes, op.dec
        alu = Pipe(m, "alu", self.latency["vxm_alu"], cuts=("in", "mid"))
        onehot = Cat(*(op.el & dec[o.name.lower()] for o in ALU8_OPS), op.el & dec["add32"])
        # behind tap registers the op and the shift once per lane (``alu_in_onehot<j>``,
        # ``alu_in_sh<j>``, kept apart by scripts/synth.py ``KEEP_COPIES``): the one onehot
        # register fed every lane's AND-OR (the routed critical path of seed 3 at 154bb63 with
        # timing weight 40, 79.14 MHz, ran alu_in_onehot across the VXM into lane 7's ALU)
        per_lane = self.ahead is not None

        def lane(v):
            return [v] * lanes if per_lane else v

        def of(s, key, j):
            return s[key][j] if per_lane else s[key]
        s = alu.cut("in", {**op.meta(dec["alu8"] | dec["add32"], dec["add32"]), "onehot": lane(onehot),
                           "sh": lane(op.v.sh),
                           "a": op.a, "b": op.b,
                           # b clamped to 10 bits for ADD/SUB and the MIN/MAX comparison (same outcome
                           # against an int8 x), and its low byte for AND/OR/XOR and the MIN/MAX
                           # result: no 16-bit carry chain in the ALU stage
                           "yc": op.yc, "yl": [y[0:8] for y in op.ys],
                           "cs": [op.xc[j].any() for j in range(lanes)]})
        sa = [_lanes(pa, lanes) for pa in s["a"]]
        sb = [_lanes(pb, lanes) for pb in s["b"]]
        # each op's value ANDed with its one-hot bit (``terms``, one 8-bit term per int8 op and the
        # 32-bit ADD32 sum); the result is their OR.  |mid| registers the terms, so the compare,
        # carry and saturation logic and the AND-OR are in different cycles
        terms = {f"t_{o.name.lower()}": [] for o in ALU8_OPS}
        terms["t_add32"] = []
        for j in range(lanes):
            sel = dict(zip((*ALU8_OPS, Opcode.ADD32), of(s, "onehot", j)))
            s32 = Signal(32, name=f"add32_sum{j}")
            m.d.comb += s32.eq(Cat(*(p[j] for p in sa)) + Cat(*(p[j] for p in sb)))
            values = self._alu_values(sa[0][j], sb[0][j], s["yc"][j].as_signed(), s["yl"][j], of(s, "sh", j),
                                      s["cs"][j])
            for o in ALU8_OPS:
                terms[f"t_{o.name.lower()}"].append(sel[o].replicate(8) & Value.cast(values[o])[0:8])
            terms["t_add32"].append(sel[Opcode.ADD32].replicate(32) & s32)
        s = alu.cut("mid", {**_meta(s), **terms})
        planes = [[None] * lanes for _ in range(INT32_PLANES)]
        for j in range(lanes):
            r8 = Signal(8, name=f"alu_res8_{j}")
            m.d.comb += r8.eq(_or([s[f"t_{o.name.lower()}"][j] for o in ALU8_OPS]))
            t32 = s["t_add32"][j]
            r = Signal(8, name=f"alu_res{j}")
            m.d.comb += r.eq(r8 | t32[0:8])
            planes[0][j] = r
            for p in range(1, INT32_PLANES):
                # aligned chips (common.aligned): an int8 result on every plane (hdl/streams.py)
                planes[p][j] = t32[8 * p:8 * p + 8] | (r8 if self.aligned else 0)
        return alu, alu.finish({**_meta(s), "data": [Cat(*pl) for pl in planes]}, self.cfg, zeroed=True)

    @staticmethod
    def _alu_values(xu, bs, y, yl, sh, cs):
        """One lane's value of every int8 ALU op: x = `xu` (int8 pattern), b = `bs` (its byte),
        `y` b clamped to 10 bits (or the immediate), `yl` its low byte, `cs` lane c != 0."""
        O = Opcode
        x = xu.as_signed()
        return {
            O.MOV: x,
            O.ADD: sat8(x + y),
            O.SUB: sat8(x - y),
            O.MIN: Mux(x < y, xu, yl),      # (the clamped b orders the same; the result is
            O.MAX: Mux(x > y, xu, yl),      # b's low byte, as in the golden model)
            O.RELU: Mux(x[7], 0, x),
            O.SHL: (xu << sh)[0:8],
            O.SHR: (x >> sh)[0:8],
            O.AND: xu & yl,
            O.OR: xu | yl,
            O.XOR: xu ^ yl,
            O.SEL: Mux(cs, xu, bs),
        }

    # --- MUL: sat8(rshift_round(a * b, sh)) ----------------------------------------------------
    def _mul(self, m, platform, op):
        lanes, dec, xa, ys = self.lanes, op.dec, op.xa, op.ys
        mul = Pipe(m, "mul", self.latency["vxm_mul"], cuts=("prod", "in", "coarse"))
        # the shift amount: behind tap registers one register per lane and stage (``mul_*_sh_copy<j>``,
        # kept apart by scripts/synth.py ``KEEP_COPIES``): one shared register fed every lane's
        # coarse and fine shifters (the routed critical path at 86f96d4, 75.92 MHz, ran from
        # mul_coarse_sh across the VXM to a lane's fine stage)
        key = "sh_copy" if self.ahead is not None else "sh"

        def sh_of(s, j):
            return s[key][j] if key == "sh_copy" else s[key]
        sh0 = [op.v.sh] * lanes if key == "sh_copy" else op.v.sh
        if ecp5_dsp(platform) and mul.has("in", "prod"):
            # ECP5: |in| and |prod| are the MULT18X18D's input and output registers
            prods = [ecp5_mult(m, xa[j].as_signed(), ys[j], f"mul_dsp{j}", reg_b=True)[:24].as_signed()
                     for j in range(lanes)]
            s = mul.cut("in", {**op.meta(dec["mul"]), key: sh0})
            s = mul.cut("prod", {**_meta(s), "p": prods, key: s[key]}, done=("p",))
        else:
            s = mul.cut("in", {**op.meta(dec["mul"]), "x": [xa[j].as_signed() for j in range(lanes)],
                               "y": ys, key: sh0})
            s = mul.cut("prod", {**_meta(s), "p": [s["x"][j] * s["y"][j] for j in range(lanes)], key: s[key]})
        co = [shr_coarse(m, p << 1, sh_of(s, j), f"mul_co{j}", fit_bits=8) for j, p in enumerate(s["p"])]
        s = mul.cut("coarse", {**_meta(s), "tl": [c[0] for c in co], "fits": [c[1] for c in co],
                               "neg": [c[2] for c in co], key: s[key]})
        return mul, mul.finish({**_meta(s), "data": [Cat(*(shr_fine_round(m, s["tl"][j], s["fits"][j], s["neg"][j],
                                                                         sh_of(s, j), None, f"mul_fi{j}")
                                                          for j in range(lanes)))]}, self.cfg)

    # --- REQ / REQL: sat8(rshift_round(A * m, sh) + z), A int32, m int16, z int8 ------------------
    def _ldm_registers(self, m, op):
        """LDM: element 0 loads the low bytes of M, 1 the high bytes, 2 the shifts, 3 (and any
        further element) the offsets Z, each from stream a.  Returns (M, SH, Z), one per lane."""
        lanes, xa = self.lanes, op.xa
        ldm_m = [Signal(signed(16), name=f"ldm_m{j}") for j in range(lanes)]
        ldm_sh = [Signal(6, name=f"ldm_sh{j}") for j in range(lanes)]
        ldm_z = [Signal(signed(8), name=f"ldm_z{j}") for j in range(lanes)]
        for j in range(lanes):
            with m.If(op.el_lane[j] & op.dec["ldm"]):
                with m.Switch(op.seq.k):
                    with m.Case(0):
                        m.d.sync += ldm_m[j][0:8].eq(xa[j])
                    with m.Case(1):
                        m.d.sync += ldm_m[j][8:16].eq(xa[j])
                    with m.Case(2):
                        m.d.sync += ldm_sh[j].eq(xa[j][0:6])
                    with m.Default():
                        m.d.sync += ldm_z[j].eq(xa[j])
        return ldm_m, ldm_sh, ldm_z

    def _req(self, m, platform, op):
        lanes, dec = self.lanes, op.dec
        ldm_m, ldm_sh, ldm_z = self._ldm_registers(m, op)
        req = Pipe(m, "req", self.latency["vxm_req"], cuts=("prod", "sum", "in", "coarse"))
        acc = [Cat(*(p[8 * j:8 * j + 8] for p in op.a)).as_signed() for j in range(lanes)]
        mult = [Mux(dec["reql"], ldm_m[j], op.imm) for j in range(lanes)]
        sh_z = {"sh": [Mux(dec["reql"], ldm_sh[j], op.v.sh) for j in range(lanes)],
                "z": [Mux(dec["reql"], ldm_z[j], 0) for j in range(lanes)]}
        if ecp5_dsp(platform) and req.has("in", "prod"):
            # ECP5: |in| and |prod| are the two MULT18X18Ds' input and output registers
            plo = [ecp5_mult(m, Cat(acc[j][0:16], Const(0, 1)), mult[j], f"req_dsp_lo{j}", reg_b=True)[:33]
                   .as_signed() for j in range(lanes)]
            phi = [ecp5_mult(m, acc[j][16:32], mult[j], f"req_dsp_hi{j}", reg_b=True)[:32].as_signed()
                   for j in range(lanes)]
            s = req.cut("in", {**op.meta(dec["req"]), **sh_z})
            s = req.cut("prod", {**_meta(s), "plo": plo, "phi": phi, "sh": s["sh"], "z": s["z"]},
                        done=("plo", "phi"))
        else:
            s = req.cut("in", {**op.meta(dec["req"]), "acc": acc, "m": mult, **sh_z})
            s = req.cut("prod", {**_meta(s),
                                 "plo": [s["acc"][j][0:16] * s["m"][j] for j in range(lanes)],      # signed 33
                                 "phi": [s["acc"][j][16:32].as_signed() * s["m"][j] for j in range(lanes)],
                                 "sh": s["sh"], "z": s["z"]})
        # |A * m| <= 2^46: 48 bits hold the product
        s = req.cut("sum", {**_meta(s), "p": [((s["phi"][j] << 16) + s["plo"][j])[0:48].as_signed()
                                              for j in range(lanes)], "sh": s["sh"], "z": s["z"]})
        # shifts of 48 or more leave 0 (as the golden model's 62 does): the shifter fills with sign
        co = [shr_coarse(m, s["p"][j] << 1, s["sh"][j], f"req_co{j}") for j in range(lanes)]
        s = req.cut("coarse", {**_meta(s), "tl": [c[0] for c in co], "fits": [c[1] for c in co],
                               "neg": [c[2] for c in co], "sh": s["sh"], "z": s["z"]})
        return req, req.finish({**_meta(s), "data": [Cat(*(shr_fine_round(m, s["tl"][j], s["fits"][j], s["neg"][j],
                                                                         s["sh"][j], s["z"][j], f"req_fi{j}")
                                                          for j in range(lanes)))]}, self.cfg)

    # --- LUT / LDLUT: a 256-entry table, one copy per lane ----------------------------------
    def _ldlut_row(self, m, op):
        """LDLUT's row (imm + k, kept as ``ldlut_row_next`` so no adder sits in the write path),
        its range check (``err.addr``) and the table write enable.  Returns (row, write enable)."""
        row = Signal(signed(18), name="ldlut_row")
        row_ok = Signal(name="ldlut_row_ok")
        lut_we = Signal(name="ldlut_we")
        if self.ahead is not None:
            # a register loaded a cycle ahead (``ElementSequencer`` ahead): no mux on the issue
            m.d.sync += row.eq(Mux(op.seq.start_next, self.ahead.insn.args.vxm.imm, row + 1))
        else:
            row_next = Signal(signed(18), name="ldlut_row_next")   # row + 1, kept for the next element
            m.d.sync += row_next.eq(row + 1)
            m.d.comb += row.eq(Mux(op.seq.start, op.imm, row_next))  # imm + k without an adder in the write path
        m.d.comb += [
            row_ok.eq(below(row, self.lut_rows)),
            lut_we.eq(op.el & op.dec["ldlut"] & row_ok),
            self.err.addr.eq(op.el & op.dec["ldlut"] & ~row_ok),
        ]
        return row, lut_we

    def _lut(self, m, platform, op):
        """Every table copy has one write port (LDLUT writes a row of `lanes` entries into all of
        them) and one read port, so it maps to LUT RAM / block RAM instead of flip-flops and a
        256:1 multiplexer per lane.  With the |in| cut the read port is synchronous and addressed
        in the sample cycle (its data register is the cut); at the minimum latency it reads
        combinationally.  Not transparent: an LDLUT row written in the sample cycle of a LUT
        element is not seen by it (it could not be: one sub-unit).

        ``lut_read="late"`` (ECP5 builds, whose LUT RAM reads asynchronously): with |in| the whole
        operand byte is registered and the table is read combinationally in the next cycle, and
        LDLUT's row write is registered too, so it lands one cycle late, still before any later
        LUT element reads.  Nothing in the sample cycle then reaches the table's ports."""
        lanes, xa = self.lanes, op.xa
        rows = max(1, self.lut_rows)
        colbits = exact_log2(min(lanes, 256))
        row, lut_we = self._ldlut_row(m, op)
        lut = Pipe(m, "lut", self.latency["vxm_lut"], cuts=("in",))
        sync_read = "in" in lut.cuts
        late = sync_read and self._lut_read(platform) == "late"
        wr_row, wr_data, wr_en = [row] * lanes, op.a[0], [lut_we] * lanes
        if late:
            # the row and the enable once per lane's table (``ldlut_w_row_copy<j>``, kept apart by
            # scripts/synth.py ``KEEP_COPIES``): one register fed all eight tables' write ports
            # (the routed critical path of seed 1 at b18c578, 53.97 MHz, ran from ldlut_w_row to a
            # table the placer had put 37 columns away)
            wr_row = [Signal(len(row), name=f"ldlut_w_row_copy{j}") for j in range(lanes)]
            wr_data = Signal(vec(lanes), name="ldlut_w_data")
            wr_en = [Signal(name=f"ldlut_w_en_copy{j}") for j in range(lanes)]
            m.d.sync += [wr_data.eq(op.a[0])] + [r.eq(row) for r in wr_row] + [e.eq(lut_we) for e in wr_en]
        s = lut.cut("in", {**op.meta(op.dec["lut"]), "x": [x if late else x[0:colbits] for x in xa]})
        # a 16-row table (16 lanes) is exactly one LUT-RAM column on ECP5
        attrs = {"ram_style": "distributed"} if rows <= 16 or late else {}
        res = []
        for j in range(lanes):
            mem = Memory(shape=vec(lanes), depth=rows, init=[], attrs=attrs)
            m.submodules[f"lut_mem{j}"] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(wr_row[j][:len(wp.addr)]), wp.data.eq(wr_data), wp.en.eq(wr_en[j])]
            rp = mem.read_port(domain="sync" if sync_read and not late else "comb")
            m.d.comb += rp.addr.eq((s["x"][j] if late else xa[j])[colbits:8])
            byte = Signal(8, name=f"lut_res{j}")
            m.d.comb += byte.eq(select([rp.data[8 * i:8 * i + 8] for i in range(lanes)], s["x"][j][0:colbits]))
            res.append(byte)
        return lut, lut.finish({**_meta(s), "data": [Cat(*res)]}, self.cfg)

    # --- output port ------------------------------------------------------------------------
    def _result_port(self, m, pipes, el):
        """Each pipeline's last register is 0 unless it holds a result, so data and landing selects
        are ORed (no select with a fanout of the whole port); valid/index/west/wide, which the
        fabric does not use, follow the priority ALU, MUL, REQ, LUT.  Two results in one cycle
        are a port error, and then the landed data is the OR of both.  Also ``busy``."""
        finals = [f for _, f in pipes]
        first = True
        for f in finals:
            with (m.If if first else m.Elif)(f["valid"]):
                m.d.comb += [self.out.valid.eq(1), self.out.index.eq(f["index"]),
                             self.out.west.eq(f["west"]), self.out.wide.eq(f["wide"])]
            first = False
        for p in range(INT32_PLANES):
            # aligned chips (common.aligned): one-vector results on every plane (hdl/streams.py)
            ds = [f["data"][p] if p < len(f["data"]) else f["data"][0] for f in finals
                  if p < len(f["data"]) or self.aligned]
            m.d.comb += self.out.data[p].eq(_or(ds))
        for g in range(land_copies(self.lanes)):
            m.d.comb += [self.out.land[g].eq(_or([f["land"][g] for f in finals])),
                         self.out.plane[g].eq(_or([f["plane"][g] for f in finals]))]
        vs = [f["valid"] for f in finals]
        m.d.comb += self.err.port.eq(Cat(*(vs[i] & vs[j] for i in range(len(vs))
                                           for j in range(i + 1, len(vs)))).any())
        m.d.comb += self.busy.eq(el | Cat(*(vv for p, _ in pipes for vv in p.valids)).any())
