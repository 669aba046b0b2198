"""MXM slice: double-buffered lanes x lanes int8 weights, a pipelined MAC array and an int32
accumulator SRAM.  Three independent sub-units run concurrently: install (LW), multiply (MM) and
emit (EMIT); each runs the ``count`` elements of one instruction on consecutive cycles, element 0
in the issue cycle (fields from ``insn``), element k in cycle t+k (fields from registers).

On an FPGA build (``common.hw_multipliers(platform)`` knows the device) only as many products as
the device has multipliers left after the VXM (3 per lane) and the MEM ICUs (1 each) are plain
``*`` (DSP blocks); the others are ``common.lut_mul8`` LUT multipliers.  Same numbers either way.

Weights are flip-flops, ``w{buf}_row{i}`` (row i = weights from input lane i to every output lane).
The accumulator is one ``lib.memory.Memory`` of ``acc_depth`` x (lanes x int32) with one write
port and two synchronous, non-transparent read ports: ``acc_rmw`` (MM acc=1) and ``acc_emit``.

LW element sampled in cycle t (``L_i = latency["mxm_install"]`` >= 1)::

    cycle   t                 t+1 .. t+L_i-1     t+L_i                        t+L_i+1
            sample row v      lw_s* stages       w{buf}_row{r} <= v at the    the multiplier of the
                                                 end of the cycle             MM element sampled in
                                                                              t+L_i reads it
    natural latency 1.

With ``install_rows`` R > 1 an LW element samples R streams s..s+R-1 and carries R rows through
the stages, in row slots: slot q holds the element's row = q mod R (``_install_slots``), so each
weight row is written from one slot only.  An LW of n rows runs ceil(n / R) elements; the row
address advances by R per element; on the last element only the first ((n - 1) mod R) + 1
streams are sampled.  With R = 1 the logic is the one-row path (same signals and names).

MM element sampled in cycle c (``L_m = latency["mxm_mm"]`` >= 3, E = L_m - 1)::

    cycle   c          c+1                c+2 .. c+E-1              c+E                 c+E+1 = c+L_m
            sample x   mm_x: products     adder tree levels         last levels,        EMIT / MM acc=1
                       x[i]*W[buf][i][j]  (registers after some     y (+ acc_rmw data   sampled here
                       -> mm_prod         levels) and pad stages;   if acc=1) -> write  see the entry
                                          acc_rmw read issued       port
                                          in c+E-1 (data in c+E)

    The log2(lanes) adder levels and the final 32-bit add are spread evenly over the
    L_m - 2 cycles c+2..c+E; with L_m >= log2(lanes) + 3 (7 for 16 lanes) every level has its own
    register and further latency is padded in front of the final add.  So the *natural* (fully
    pipelined) latency is log2(lanes) + 3; the minimum 3 puts the whole tree in one cycle.
    A new activation enters every cycle.

    With L_m >= 4 the read of the old entry for acc=1 happens in c+E-2 and its data is
    registered (``mm_old``), so the block RAM's output does not feed the 32-bit add directly;
    with L_m = 3 it happens in c+E-1.  Either way it is >= c+1, not c.  That is invisible to
    a correct program: any MM write to the entry that commits after c is an accumulator hazard
    (flagged), and no later MM can commit before c+E.

EMIT element sampled in cycle c (``L_e = latency["mxm_emit"]`` >= 2)::

    cycle   c                 c+1                 c+2 .. c+L_e-1      c+L_e
            addr -> acc_emit  read data valid     em_s* pad stages    planes visible on s..s+3
            read port         out driven in c+L_e-1 (wide: plane b = byte b of every lane's int32)
    natural latency 2.  The read in cycle c sees every MM write committed by c (written in <= c-1).
    With L_e >= 3 the address is registered first (|addr|) and the read happens in c+1; the only
    extra write it can see commits in c+1, which is a flagged hazard.

Errors are registered: a problem of an element sampled (or an instruction issued) in cycle c
pulses ``err`` in cycle c+1.

* ``empty``:  LW or MM sampled a stream slot with valid = 0 (the element then does nothing; with
  R > 1 an LW element with any of its sampled streams empty installs none of its rows).
* ``addr``:   LW row >= lanes, MM/EMIT entry >= acc_depth (the element then does nothing); with
  R > 1 also an LW whose streams s..s+R-1 run past the last stream (whatever its count; the
  static checker refuses it too).
* ``hazard``: MM acc=1 or EMIT reads entry A in cycle c while an MM element sampled in
  c-L_m+1 .. c-1 writes A (its commit cycle is > c).  The element still runs.  An MM element
  sampled in the same cycle c does not count: its write is later than the read.
* ``busy``:   an instruction issues to a sub-unit with elements left; the new one replaces it.

``busy`` (out) is high in cycle c while an element runs in c or later, a result is still to be
driven, or an accumulator write is still to happen; an LW row counts until the cycle before it is
written into the weight registers, since the golden model commits it at t+L_i (it is then
"visible" for MM elements sampled from t+L_i on), so a program whose last LW element is sampled
L_i cycles before its end is not in flight.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from tinylpu import isa
from tinylpu.hdl.common import (
    ElementField,
    ElementSequencer,
    below,
    drive_landing,
    ecp5_dsp,
    ecp5_mult,
    hw_multipliers,
    lut_mul8,
    pick_stream,
    port_landing,
    predecode,
    select,
    unit_signature,
    vec,
)
from tinylpu.isa import INT32_PLANES, Opcode

__all__ = ["MxmSlice", "tree_cuts"]


def tree_cuts(lanes, l_mm):
    """Where the MM pipeline registers go: (set of adder levels followed by a register, pad stages).

    Levels 1..log2(lanes) are the adder tree, level log2(lanes)+1 the accumulator add; they are
    spread over the l_mm - 2 cycles after the product register.
    """
    levels = (lanes - 1).bit_length()
    regs = min(levels, l_mm - 3)
    cuts = {lv for lv in range(1, levels + 1)
            if lv * (regs + 1) // (levels + 1) > (lv - 1) * (regs + 1) // (levels + 1)}
    assert len(cuts) == regs
    return cuts, l_mm - 3 - regs


class MxmSlice(wiring.Component):
    """One MXM; built as ``MxmSlice(cfg, slice)``.  See the module docstring for timing."""

    #: ECP5: where the activation and the selected weight are registered in front of a MULT18X18D:
    #: "dsp" (its A and B input registers) or "fabric" (flip-flops, the DSP's inputs unregistered);
    #: the same cycles either way.  "fabric": with the input registers in the DSPs, the LUTs of the
    #: weight select drive the DSP pins directly and nextpnr's router2 did not converge (docs/fpga.md
    #: "DSP blocks on ECP5")
    DSP_WEIGHT_REG = "fabric"

    def __init__(self, cfg, slice):
        self.cfg = cfg
        self.slice = slice
        lanes = cfg.lanes
        self.ahead = None       # set by hdl/taps.py's ``Tapped`` (``ElementSequencer`` ahead)
        super().__init__(unit_signature(cfg))
        self.acc = Memory(shape=unsigned(32 * lanes), depth=cfg.acc_depth, init=[])
        self.weights = [[Signal(vec(lanes), name=f"w{b}_row{i}") for i in range(lanes)] for b in range(2)]

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        l_inst, l_mm, l_emit = (cfg.latency[k] for k in ("mxm_install", "mxm_mm", "mxm_emit"))
        assert l_inst >= 1 and l_mm >= 3 and l_emit >= 2

        m.submodules.acc = acc = self.acc
        acc_w = acc.write_port()
        acc_rmw = acc.read_port()
        acc_emit = acc.read_port()

        dec = self._decode(m)
        lw = self._install_path(m, dec)
        mm = self._multiply_path(m, platform, dec, lw, acc_w, acc_rmw)
        em = self._emit_path(m, dec, acc_emit, mm.pending)
        self._status(m, dec, lw, mm, em)
        return m

    def _decode(self, m):
        """The issuing instruction's sub-unit, decoded from the word alone (``common.predecode``:
        in the cycle before the issue on chips with registered issue); ``multi``: count >= 2;
        ``lw_multi``: an LW of more than one element (count > install_rows)."""
        issue, ahead = {}, {}
        for code in (Opcode.LW, Opcode.MM, Opcode.EMIT):
            name = {Opcode.LW: "lw", Opcode.MM: "mm", Opcode.EMIT: "em"}[code]
            issue[name] = Signal(name=f"issue_{name}")
            fn = (lambda i, code=code: (i.op == code) & (i.args.mxm.count != 0))
            dec = predecode(m, self, f"dec_{code.name.lower()}", fn)
            m.d.comb += issue[name].eq(self.issue & dec)
            if self.ahead is not None:
                # behind tap registers: the next cycle's issue (``ElementSequencer`` ahead)
                ahead[name] = self.ahead.issue & fn(self.ahead.insn)
        dec_multi = predecode(m, self, "dec_multi", lambda i: i.args.mxm.count[1:].any())
        rows = self.cfg.install_rows
        lw_multi = dec_multi if rows == 1 else predecode(m, self, "dec_lw_multi", lambda i: i.args.mxm.count > rows)
        return SimpleNamespace(**issue, multi=dec_multi, lw_multi=lw_multi, ahead=ahead or None)

    def _sequencer(self, m, prefix, issue, multi, with_buf=False, with_acc=False, count=None, step=1, extra=None,
                   dec=None):
        """Element sequencing of one sub-unit (``common.ElementSequencer``): this cycle's element's
        stream ``s``, address ``addr`` (+`step` per element) and, as asked, buffer, acc flag and
        `extra` fields (``extra(args)``: {key: ElementField} from an instruction's MXM fields);
        `count`: the element count (default the ``count`` field).  Behind tap registers (`dec`'s
        ``ahead``) the fields are registers loaded a cycle ahead (``ElementSequencer`` ahead)."""
        def build(args):
            fields = {"s": ElementField(args.s),
                      "addr": ElementField(args.addr, shape=13, step=lambda el: el["addr"] + step)}
            if with_buf:
                fields["buf"] = ElementField(args.buf)
            if with_acc:
                fields["acc"] = ElementField(args.acc, reg=f"{prefix}_accum")
            fields.update(extra(args) if extra else {})
            return fields
        args = self.insn.args.mxm
        kw = {}
        if dec is not None and dec.ahead is not None:
            kw["ahead"] = SimpleNamespace(issue=dec.ahead[prefix],
                                          fields={k: f.new for k, f in build(self.ahead.insn.args.mxm).items()})
        return ElementSequencer(m, prefix, issue, args.count if count is None else count, multi=multi,
                                fields=build(args), **kw)

    # ------------------------------------------------------------------------------------
    # install (LW)
    # ------------------------------------------------------------------------------------
    def _install_path(self, m, dec):
        """LW: the sampled rows through ``lw_s*`` stages into the weight registers.  Returns the
        last stage: ``buf`` and per row slot q (``slots``, ``install_rows`` of them) ``valid``,
        ``row`` (row >> log2(install_rows): slot q only ever holds rows = q mod install_rows) and
        ``data``, written at the end of this cycle."""
        lanes, rows = self.cfg.lanes, self.cfg.install_rows
        rbits = max(1, (lanes - 1).bit_length())
        if rows == 1:
            seq = self._sequencer(m, "lw", dec.lw, dec.multi, with_buf=True, dec=dec)
            el = seq.fields
            vec_data, vec_valid = pick_stream(self.tap, el["s"].west, el["s"].index)
            row_ok = below(el["addr"], lanes)
            slots = [(seq.el & vec_valid & row_ok, el["addr"][:rbits], vec_data)]
            err_empty, err_addr = seq.el & ~vec_valid, seq.el & vec_valid & ~row_ok
        else:
            seq, slots, err_empty, err_addr = self._install_slots(m, dec)
        hbits = max(1, rbits - (rows.bit_length() - 1))
        lw_buf = seq.fields["buf"]
        busy_valids = []
        l_inst = self.cfg.latency["mxm_install"]
        we = we_cols = None
        for k in range(1, l_inst + 1):
            if k == l_inst:
                # the last stage's row write enables, one register per buffer and row
                # (``lw_we{b}_row{i}``), decoded from the stage before: each row's clock enable
                # comes straight from a flip-flop (the routed critical path at 8747abf, 73.72 MHz,
                # was lw_s1_valid -> buf/row decode -> a weight row's enable, across the MXM)
                hits = [[self._lw_hit(i, slots, lw_buf == b) for i in range(lanes)] for b in range(2)]
                we = [[Signal(name=f"lw_we{b}_row{i}") for i in range(lanes)] for b in range(2)]
                m.d.sync += [we[b][i].eq(hits[b][i]) for b in range(2) for i in range(lanes)]
                if self.ahead is not None:
                    # behind tap registers also once per output lane (``lw_we{b}_row{i}_copy{j}``):
                    # the enable of row i's byte j and its bypass into weight register (i, j), at
                    # DSP column j (the routed critical path of seed 3 at 1f396d5, 73.19 MHz, ran
                    # lw_we0_row6 across the MXM to mm_w_i6_j4, 12.65 ns of routing)
                    we_cols = [[[Signal(name=f"lw_we{b}_row{i}_copy{j}") for j in range(lanes)]
                                for i in range(lanes)] for b in range(2)]
                    m.d.sync += [we_cols[b][i][j].eq(hits[b][i])
                                 for b in range(2) for i in range(lanes) for j in range(lanes)]
            b = Signal(name=f"lw_s{k}_buf")
            staged = []
            for q, (lw_valid, lw_row, lw_data) in enumerate(slots):
                sfx = "" if rows == 1 else str(q)
                v = Signal(name=f"lw_s{k}_valid{sfx}")
                r = Signal(rbits if rows == 1 else hbits, name=f"lw_s{k}_row{sfx}")
                x = Signal(vec(lanes), name=f"lw_s{k}_data{sfx}")
                m.d.sync += [v.eq(lw_valid)] + ([b.eq(lw_buf)] if q == 0 else []) + [r.eq(lw_row), x.eq(lw_data)]
                staged.append((v, r, x))
                if k < l_inst:
                    busy_valids.append(v)
            lw_buf, slots = b, staged
        if we is None:
            we = [[self._lw_hit(i, slots, lw_buf == b) for i in range(lanes)] for b in range(2)]
        for b in range(2):
            for i in range(lanes):
                if we_cols is None:
                    with m.If(we[b][i]):
                        m.d.sync += self.weights[b][i].eq(slots[i % rows][2])
                    continue
                for j in range(lanes):
                    with m.If(we_cols[b][i][j]):
                        m.d.sync += self.weights[b][i][8 * j:8 * j + 8].eq(slots[i % rows][2][8 * j:8 * j + 8])
        return SimpleNamespace(seq=seq, buf=lw_buf, slots=slots, busy_valids=busy_valids, we=we, we_cols=we_cols,
                               err_empty=err_empty, err_addr=err_addr)

    def _lw_hit(self, i, slots, buf_match):
        """Weight row i is written at the end of this cycle (by the row slot i mod install_rows)."""
        rows = self.cfg.install_rows
        valid, row, _ = slots[i % rows]
        return valid & buf_match & (row == i // rows)

    def _install_slots(self, m, dec):
        """install_rows = R > 1: element k samples streams s+j (j < R) and writes rows addr + j
        (addr = row + k*R; j < n - k*R on the last element).  Row addr + j goes to slot
        (addr + j) mod R, so stream j feeds slot q = (o + j) mod R, o = addr mod R: each slot is a
        mux of the R streams by o, and each weight row has one slot as its only source.  An
        element with a stream past the last one (``lw_oob``: s + R - 1 >= streams, whatever n),
        an empty sampled stream or a row out of range installs nothing.  Returns (sequencer,
        slots, err_empty, err_addr)."""
        cfg = self.cfg
        lanes, S, R = cfg.lanes, cfg.streams, cfg.install_rows
        r = R.bit_length() - 1
        args = self.insn.args.mxm
        n_el = Signal(12, name="lw_elements")           # ceil(count / R)
        m.d.comb += n_el.eq(args.count[r:] + args.count[:r].any())
        # (count - 1) mod R: rows of the last element - 1
        seq = self._sequencer(m, "lw", dec.lw, dec.lw_multi, with_buf=True, count=n_el, step=R,
                              extra=lambda a: {"tail": ElementField((a.count[:r] - 1)[:r], shape=r)}, dec=dec)
        el = seq.fields
        s = el["s"]
        last = Signal(name="lw_last")                   # the element running now is the LW's last
        m.d.comb += last.eq(Mux(seq.start, ~dec.lw_multi, seq.left == 1))
        oob = Signal(name="lw_oob")
        m.d.comb += oob.eq(s.index > S - R)
        streams = [pick_stream(self.tap, s.west, s.index, offset=j) for j in range(R)]
        o, hi = el["addr"][:r], el["addr"][r:]
        hi1 = Signal(len(hi), name="lw_row_hi1")        # the block after the element's first row
        m.d.comb += hi1.eq(hi + 1)
        hbits = max(1, (lanes - 1).bit_length() - r)
        slots, ok_streams, ok_rows = [], [], []
        for q in range(R):
            jq = Signal(r, name=f"lw_slot{q}_j")         # the stream that feeds slot q: (q - o) mod R
            act = Signal(name=f"lw_slot{q}_act")
            m.d.comb += [jq.eq((q - o)[:r]), act.eq(~last | (jq <= el["tail"]))]
            data = Signal(vec(lanes), name=f"lw_slot{q}_data")
            valid = Signal(name=f"lw_slot{q}_valid")
            row_hi = Signal(len(hi), name=f"lw_slot{q}_row")  # row >> r: slot q < o wraps into the next block
            m.d.comb += [data.eq(select([d for d, _ in streams], jq)), valid.eq(select([v for _, v in streams], jq)),
                         row_hi.eq(Mux(o > q, hi1, hi))]
            ok_streams.append(~act | valid)
            ok_rows.append(~act | below(row_hi, lanes >> r))
            slots.append((act, row_hi[:hbits], data))
        streams_ok, rows_ok = Signal(name="lw_streams_ok"), Signal(name="lw_rows_ok")
        m.d.comb += [streams_ok.eq(Cat(*ok_streams).all()), rows_ok.eq(Cat(*ok_rows).all())]
        ok = Signal(name="lw_ok")
        m.d.comb += ok.eq(seq.el & ~oob & streams_ok & rows_ok)
        slots = [(ok & act, row, data) for act, row, data in slots]
        return seq, slots, seq.el & ~oob & ~streams_ok, seq.el & (oob | (streams_ok & ~rows_ok))

    # ------------------------------------------------------------------------------------
    # multiply (MM)
    # ------------------------------------------------------------------------------------
    def _multiply_path(self, m, platform, dec, lw, acc_w, acc_rmw):
        """MM: operands, products, adder tree and the accumulator read-modify-write."""
        seq = self._sequencer(m, "mm", dec.mm, dec.multi, with_buf=True, with_acc=True, dec=dec)
        el = seq.fields
        x, x_valid = pick_stream(self.tap, el["s"].west, el["s"].index)
        addr_ok = below(el["addr"], self.cfg.acc_depth)
        meta, pending, err_hazard = self._mm_stages(m, seq.el & x_valid & addr_ok, el)
        x_reg, w_next = self._operand_selects(m, x, el["buf"], lw)
        y = self._adder_tree(m, self._products(m, platform, x, x_reg, w_next))
        self._accumulator(m, y, meta, acc_w, acc_rmw)
        return SimpleNamespace(seq=seq, meta=meta, pending=pending, err_hazard=err_hazard,
                               err_empty=seq.el & ~x_valid, err_addr=seq.el & x_valid & ~addr_ok)

    def _mm_stages(self, m, ok, el):
        """Element metadata per stage 1..E (stage k holds the element sampled k cycles ago), the
        hazard check and ``pending(addr)``.  Returns (stages 1..E, pending, hazard error)."""
        e_stage = self.cfg.latency["mxm_mm"] - 1   # stage (cycles after sampling) of the accumulator write
        mm_meta = []
        prev = (ok, el["addr"], el["acc"])
        for k in range(1, e_stage + 2):       # (stage E+1 only feeds the hazard check)
            st = (Signal(name=f"mm_s{k}_valid"), Signal(13, name=f"mm_s{k}_addr"), Signal(name=f"mm_s{k}_accum"))
            m.d.sync += [d.eq(s) for d, s in zip(st, prev)]
            mm_meta.append(st)
            prev = st

        def pending(addr):
            """In the cycle after an element's sample cycle c: an MM write to `addr` sampled in
            c-L_m+1 .. c-1 (now in stages 2..E+1) has not committed by c."""
            return Cat(*[v & (a == addr) for v, a, _ in mm_meta[1:]]).any()

        # the hazard check runs in c+1 on registered addresses (the pulse's cycle): stage 1 holds
        # the element, stages 2..E+1 the writes that were pending in c
        s1_valid, s1_addr, s1_acc = mm_meta[0]
        return mm_meta[:e_stage], pending, s1_valid & s1_acc & pending(s1_addr)

    def _operand_selects(self, m, x, buf_now, lw):
        """Stage 1: the activation and the selected weights, registered in the sample cycle c.
        The weights are those the multiplier must use in c+1: the element's buffer as it is now,
        with the row an LW stage writes at the end of c already in place (bypass), so the product
        of c+1 sees exactly the weights a product computed from the weight registers in c+1 would.
        On ECP5 these two registers and the product register are the MULT18X18D's A, B and output
        registers (``common.ecp5_mult``).  Returns (``mm_x``, w_next[i][j]: the int8 weight from
        input lane i to output lane j)."""
        lanes = self.cfg.lanes
        x_reg = Signal(vec(lanes), name="mm_x")
        m.d.sync += x_reg.eq(x)
        w_next = []
        for i in range(lanes):
            new = lw.slots[i % self.cfg.install_rows][2]
            old = Mux(buf_now, self.weights[1][i], self.weights[0][i])
            if lw.we_cols is None:
                hit = Signal(name=f"mm_lw_bypass{i}")
                m.d.comb += hit.eq(Mux(buf_now, lw.we[1][i], lw.we[0][i]))
                row = Mux(hit, new, old)
                w_next.append([row[8 * j:8 * j + 8] for j in range(lanes)])
            else:
                # (each weight register's bypass from its own column's copy of the row enables)
                w_next.append([Mux(Mux(buf_now, lw.we_cols[1][i][j], lw.we_cols[0][i][j]),
                                   new[8 * j:8 * j + 8], old[8 * j:8 * j + 8]) for j in range(lanes)])
        return x_reg, w_next

    def _products(self, m, platform, x, x_reg, w_next):
        """The lanes x lanes products, registered at the end of stage 1; terms[j]: the addends of
        output lane j.  On an FPGA with fewer hardware multipliers than lanes^2 + the VXM's 3 per
        lane + one per MEM slice's ICU (READ/WRITE REPEAT step, count x stride), the products past
        the budget are LUT multipliers (``lut_mul8``): two int8 products cannot share one 18x18
        multiplier (docs/fpga.md)."""
        cfg = self.cfg
        lanes = cfg.lanes
        budget = hw_multipliers(platform)
        others = 3 * lanes * len(cfg.slices_of("vxm")) + len(cfg.slices_of("mem"))
        n_dsp = lanes * lanes if budget is None else max(0, min(lanes * lanes, budget - others))
        dsp_regs = ecp5_dsp(platform)     # ECP5: the products' registers inside the MULT18X18D
        terms = []
        for j in range(lanes):
            col = []
            for i in range(lanes):
                xi = x_reg[8 * i:8 * i + 8].as_signed()
                p = Signal(signed(16), name=f"mm_prod_i{i}_j{j}")
                if j * lanes + i < n_dsp and dsp_regs and self.DSP_WEIGHT_REG == "dsp":
                    m.d.comb += p.eq(ecp5_mult(m, x[8 * i:8 * i + 8], w_next[i][j], f"mm_dsp_i{i}_j{j}",
                                               reg_b=True)[:16])
                    col.append(p)
                    continue
                w = Signal(signed(8), name=f"mm_w_i{i}_j{j}")
                m.d.sync += w.eq(w_next[i][j])
                if j * lanes + i < n_dsp and dsp_regs:
                    # activation and weight from fabric registers into the DSP's unregistered A and
                    # B inputs, product in its output register: the same cycles (``common.ecp5_mult``)
                    m.d.comb += p.eq(ecp5_mult(m, xi, w, f"mm_dsp_i{i}_j{j}", reg_a=False)[:16])
                elif j * lanes + i < n_dsp:
                    m.d.sync += p.eq(xi * w)
                else:
                    m.d.sync += p.eq(lut_mul8(m, xi, w, f"mm_lmul_i{i}_j{j}"))
                col.append(p)
            terms.append(col)
        return terms

    def _adder_tree(self, m, terms):
        """The adder tree, registers after the levels in ``tree_cuts``, then pad stages: one
        int32 sum per output lane."""
        lanes = self.cfg.lanes
        cuts, pad = tree_cuts(lanes, self.cfg.latency["mxm_mm"])
        levels = (lanes - 1).bit_length()
        for lv in range(1, levels + 1):
            new_terms = []
            for j, col in enumerate(terms):
                nxt = []
                for n in range(0, len(col), 2):
                    s = col[n] + col[n + 1]
                    if lv in cuts:
                        r = Signal(s.shape(), name=f"mm_sum{lv}_j{j}_{n // 2}")
                        m.d.sync += r.eq(s)
                        s = r
                    nxt.append(s)
                new_terms.append(nxt)
            terms = new_terms
        y = [col[0] for col in terms]
        for k in range(pad):
            regs = [Signal(signed(32), name=f"mm_pad{k}_y{j}") for j in range(lanes)]
            m.d.sync += [r.eq(v) for r, v in zip(regs, y)]
            y = regs
        return y

    def _accumulator(self, m, y, mm_meta, acc_w, acc_rmw):
        """Read-modify-write: read in stage E-1, add and write in stage E.  With E >= 3 the read
        happens in stage E-2 and its data is registered, so the block RAM's clock-to-output delay
        is not in front of the 32-bit add (a correct program has no write to the entry committing
        after the MM's sample cycle c, and E-2 >= 1 > 0, so both see the same value)."""
        lanes = self.cfg.lanes
        abits = max(1, (self.cfg.acc_depth - 1).bit_length())
        e_stage = self.cfg.latency["mxm_mm"] - 1
        early = e_stage >= 3
        rd_valid, rd_addr, rd_accum = mm_meta[e_stage - 3] if early else mm_meta[e_stage - 2]
        wr_valid, wr_addr, wr_accum = mm_meta[e_stage - 1]
        m.d.comb += [
            acc_rmw.addr.eq(rd_addr[:abits]),
            acc_rmw.en.eq(rd_valid & rd_accum),
        ]
        old_entry = acc_rmw.data
        if early:
            old_entry = Signal.like(acc_rmw.data, name="mm_old")
            m.d.sync += old_entry.eq(acc_rmw.data)
        new_entry = []
        for j in range(lanes):
            old = old_entry[32 * j:32 * j + 32].as_signed()
            s = Signal(32, name=f"mm_new_j{j}")
            m.d.comb += s.eq(y[j] + Mux(wr_accum, old, 0))
            new_entry.append(s)
        m.d.comb += [
            acc_w.addr.eq(wr_addr[:abits]),
            acc_w.data.eq(Cat(*new_entry)),
            acc_w.en.eq(wr_valid),
        ]

    # ------------------------------------------------------------------------------------
    # emit (EMIT)
    # ------------------------------------------------------------------------------------
    def _emit_path(self, m, dec, acc_emit, pending):
        """EMIT: the accumulator read (|addr| with L_e >= 3) and the result pipeline."""
        cfg = self.cfg
        abits = max(1, (cfg.acc_depth - 1).bit_length())
        seq = self._sequencer(m, "em", dec.em, dec.multi, dec=dec)
        el = seq.fields
        addr_ok = below(el["addr"], cfg.acc_depth)
        em_ok = seq.el & addr_ok
        # |addr| (L_e >= 3): the accumulator is read one cycle after the sample cycle c.  It then
        # also sees an MM write committing in c+1, but that write is an accumulator hazard
        # (flagged), so a correct program reads the same value.
        em_reg = int(cfg.latency["mxm_emit"] >= 3)
        em_h_addr = Signal(13, name="em_h_addr")
        em_h_ok = Signal(name="em_h_ok")               # em_ok of the element sampled in the last cycle
        m.d.sync += [em_h_addr.eq(el["addr"]), em_h_ok.eq(em_ok)]
        valids = []
        port_ok, port_addr, port_dst = em_ok, el["addr"][:abits], el["s"]
        if em_reg:
            port_dst = Signal(isa.StreamField, name="em_a_dst")
            m.d.sync += port_dst.eq(el["s"])
            port_ok, port_addr = em_h_ok, em_h_addr[:abits]
            valids.append(em_h_ok)
        m.d.comb += [
            acc_emit.addr.eq(port_addr),
            acc_emit.en.eq(port_ok),
        ]
        self._result_port(m, acc_emit.data, port_ok, port_dst, valids, 2 + em_reg)
        return SimpleNamespace(seq=seq, valids=valids, err_addr=seq.el & ~addr_ok,
                               err_hazard=em_h_ok & pending(em_h_addr))

    def _result_port(self, m, data, port_ok, port_dst, valids, first_pad):
        """EMIT's result pipeline: stage 1 = the cycle the accumulator data is valid, then pad
        stages ``em_s<first_pad>..``; the last drives ``out`` (wide: plane b = byte b of every
        lane's int32)."""
        cfg = self.cfg
        lanes = cfg.lanes
        em_valid = Signal(name="em_s1_valid")
        em_dst = Signal(isa.StreamField, name="em_s1_dst")
        m.d.sync += [em_valid.eq(port_ok), em_dst.eq(port_dst)]
        last_in = (port_ok, port_dst)       # the inputs of the last result register
        em_data = data
        valids.append(em_valid)
        for k in range(first_pad, cfg.latency["mxm_emit"]):
            v = Signal(name=f"em_s{k}_valid")
            d = Signal(isa.StreamField, name=f"em_s{k}_dst")
            x = Signal(unsigned(32 * lanes), name=f"em_s{k}_data")
            m.d.sync += [v.eq(em_valid), d.eq(em_dst), x.eq(em_data)]
            last_in = (em_valid, em_dst)
            em_valid, em_dst, em_data = v, d, x
            valids.append(v)
        drive_landing(m, self.out, *port_landing(m, "em", last_in[0], last_in[1].index, last_in[1].west, 1, cfg))
        m.d.comb += [
            self.out.valid.eq(em_valid),
            self.out.west.eq(em_dst.west),
            self.out.index.eq(em_dst.index),
            self.out.wide.eq(1),
        ]
        for b in range(INT32_PLANES):
            m.d.comb += self.out.data[b].eq(Cat(*[em_data[32 * j + 8 * b:32 * j + 8 * b + 8] for j in range(lanes)]))

    def _status(self, m, dec, lw, mm, em):
        """``err`` (registered pulses; the hazard checks already run in c+1) and ``busy``."""
        m.d.sync += [
            self.err.empty.eq(lw.err_empty | mm.err_empty),
            self.err.addr.eq(lw.err_addr | mm.err_addr | em.err_addr),
            self.err.busy.eq(lw.seq.err_busy | mm.seq.err_busy | em.seq.err_busy),
        ]
        m.d.comb += self.err.hazard.eq(mm.err_hazard | em.err_hazard)
        m.d.comb += self.busy.eq(
            dec.lw | dec.mm | dec.em | lw.seq.more | mm.seq.more | em.seq.more
            | Cat(*lw.busy_valids, *[v for v, _, _ in mm.meta], *em.valids).any())
