"""The instruction control unit of one slice: its instruction queue and the issue logic.

Reproduces ``sim.golden.Golden._issue`` cycle for cycle (docs/microarchitecture.md):

* cycle 0 is the first cycle after ``start``; an ordinary instruction takes one issue slot,
  ``NOP n`` n cycles;
* ``REPEAT n, d`` takes no slot of its own: the previous (unit) instruction issues again at
  t+d, ..., t+nd (t its issue cycle) with its address advanced each time (``advance`` below), and
  the next instruction at t+(n+1)d.  A REPEAT is always fetched at t+1 (the assembler/checker
  insists it directly follows a unit instruction), so with d = 1 the first repetition issues in
  that very cycle;
* ``SYNC`` parks the queue until ``fire`` (the delayed NOTIFY broadcast); the queue issues its next
  instruction in the fire cycle.  A SYNC issued in a fire cycle waits for the next one;
* ``NOTIFY`` pulses ``notify`` in its issue cycle (the chip delays and broadcasts it);
* ``HALT`` pulses ``halt`` and parks the queue for good (``halted``);
* ``DESKEW`` parks the queue (``deskewed``) until ``deskew_go``: the chip raises it at the next
  epoch boundary once the aligned counter says every chip of the tray is there (hdl/chip.py,
  docs/c2c.md); the queue issues its next instruction in that cycle.

The queue is a ``lib.memory`` of ``cfg.queue_depth`` 64-bit words (block RAM) with a synchronous
read port.  The word to issue (``head``, queue index pc) and the one after it (``nxt``) sit in
registers, and the read port runs two words ahead (it is addressed with pc + 2, or pc + 3 when the
queue moves on this cycle, and its data loads ``nxt``), so no block-RAM output drives the issue
logic or the units; the words at indices 0 and 1 are also kept in registers (written through the
load port) so that the queue can start in the cycle after ``start``.  The next repetition of a
REPEAT (``advance``) is kept ready in a register too (``adv``), and the address step of each unit
instruction (count x stride, or count) is computed while it waits in ``nxt``.  The issue timing is
the one described above: none of these registers changes it.

Load port (from the host port, only while the chip is not running): ``load_we`` writes
``load_data`` at ``load_addr``; ``len_we`` sets the number of loaded instructions to ``len``.
A queue of length 0 is halted from the start (as in the golden model).  Running past the last
loaded instruction, an undefined opcode, or an opcode that does not run on this slice's kind
pulses ``err_queue`` (and halts the queue).
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from tinylpu.isa import INSTR_BITS, OPS, Instr, Opcode

__all__ = ["ICU", "advance"]


class State(enum.Enum, shape=2):
    HALT = 0
    RUN = 1
    SYNC = 2
    DESKEW = 3


def advance(m, insn):
    """The next repetition of `insn` (an ``Instr`` view) under REPEAT, as a new ``Instr`` view.

    READ/WRITE: addr += count * stride; LW/MM/EMIT: addr += count; LDLUT: imm += count.
    """
    nxt = Signal(Instr, name="adv")
    m.d.comb += nxt.eq(insn)
    with m.Switch(insn.op):
        with m.Case(Opcode.READ, Opcode.WRITE):
            m.d.comb += nxt.args.mem.addr.eq(insn.args.mem.addr + insn.args.mem.count * insn.args.mem.stride)
        with m.Case(Opcode.LW, Opcode.MM, Opcode.EMIT):
            m.d.comb += nxt.args.mxm.addr.eq(insn.args.mxm.addr + insn.args.mxm.count)
        with m.Case(Opcode.LDLUT):
            m.d.comb += nxt.args.vxm.imm.eq(insn.args.vxm.imm + insn.args.vxm.count)
    return nxt


class ICU(wiring.Component):
    def __init__(self, cfg, slice):
        self.cfg, self.slice = cfg, slice
        self.depth = cfg.queue_depth
        self.unit_ops = [op for op, info in OPS.items() if info.unit == slice.kind]
        super().__init__({
            # control from the chip
            "start": In(1),        # the START cycle: reset to queue index 0; cycle 0 is the next one
            "stop": In(1),         # halt now (the chip stops on an error)
            "fire": In(1),         # a NOTIFY fires this cycle
            "deskew_go": In(1),    # queues parked in DESKEW leave it this cycle
            # to the slice unit
            "issue": Out(1),
            "insn": Out(Instr),
            "dec_src": Out(Instr),  # an instruction with the op and count of the next issue (below)
            # status to the chip
            "notify": Out(1),      # a NOTIFY issues this cycle
            "halt": Out(1),        # a HALT issues this cycle
            "halted": Out(1),      # the queue is halted (registered state)
            "parked": Out(1),      # the queue waits in SYNC (registered state)
            "deskewed": Out(1),    # the queue waits in DESKEW (registered state)
            "err_queue": Out(1),   # ran past its last instruction / bad opcode (one-cycle pulse)
            # load port
            "load_we": In(1),
            "load_addr": In(16),
            "load_data": In(INSTR_BITS),
            "len_we": In(1),
            "len": In(range(cfg.queue_depth + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        depth = self.depth

        m.submodules.queue = queue = Memory(shape=INSTR_BITS, depth=depth, init=[])
        wr = queue.write_port()
        rd = queue.read_port(domain="sync")
        m.d.comb += [wr.en.eq(self.load_we), wr.addr.eq(self.load_addr), wr.data.eq(self.load_data)]

        # the first two words, as loaded (the queue starts in the cycle after `start`)
        word0 = Signal(Instr)
        word1 = Signal(Instr)
        with m.If(self.load_we & (self.load_addr == 0)):
            m.d.sync += word0.eq(self.load_data)
        with m.If(self.load_we & (self.load_addr == 1)):
            m.d.sync += word1.eq(self.load_data)

        length = Signal(range(depth + 1))
        with m.If(self.len_we):
            m.d.sync += length.eq(self.len)

        state = Signal(State, init=State.HALT)
        pc = Signal(range(depth + 1))              # queue index of `head`
        cnt = Signal(24)                          # cycles until the next issue slot
        rep_left = Signal(24)
        rep_d = Signal(16)

        kind = self.slice.kind
        sbits = 21 if kind == "mem" else 13

        def step_of(insn):
            """The address step of one repetition of `insn` (0 when it has none)."""
            st = Signal(signed(sbits))
            with m.Switch(insn.op):
                if kind == "mem":
                    with m.Case(Opcode.READ, Opcode.WRITE):
                        m.d.comb += st.eq(insn.args.mem.count * insn.args.mem.stride)
                elif kind == "mxm":
                    with m.Case(Opcode.LW, Opcode.MM, Opcode.EMIT):
                        m.d.comb += st.eq(insn.args.mxm.count)
                elif kind == "vxm":
                    with m.Case(Opcode.LDLUT):
                        m.d.comb += st.eq(insn.args.vxm.count)
            return st

        def step_add(insn, step):
            """`insn` with its address field advanced by `step` (``advance``), as an ``Instr``."""
            nxt = Signal(Instr)
            m.d.comb += nxt.eq(insn)
            if kind == "mem":
                m.d.comb += nxt.args.mem.addr.eq(insn.args.mem.addr + step)
            elif kind == "mxm":
                m.d.comb += nxt.args.mxm.addr.eq(insn.args.mxm.addr + step)
            elif kind == "vxm":
                m.d.comb += nxt.args.vxm.imm.eq(insn.args.vxm.imm + step)
            return nxt

        # (the instruction words and steps are data: loaded before they are used -- head, nxt and
        # head_step at START, last and adv at a unit instruction's issue, the only place a REPEAT
        # may follow -- so they have no reset; the reset, a registered one per slice on tapped
        # chips, then reaches only the control registers.  The routed critical path of seed 3 at
        # d161505, 59.21 MHz, ran slice_rst_vxm0 through the issue logic into a register's LSR)
        head = Signal(Instr, reset_less=True)     # the word at pc
        nxt = Signal(Instr, reset_less=True)      # the word at pc + 1
        head_step = Signal(signed(sbits), reset_less=True)    # step_of(head)
        last = Signal(Instr, reset_less=True)     # the last unit instruction issued
        last_step = Signal(signed(sbits), reset_less=True)    # step_of(last)
        adv_last = Signal(Instr, reset_less=True)  # advance(last)
        adv = Signal(Instr, reset_less=True)      # the repetition a REPEAT would issue now
        adv_head = step_add(head, head_step)      # advance(head)
        adv_more = step_add(adv, last_step)       # the repetition after `adv`

        cur = head
        m.d.comb += [self.halted.eq(state == State.HALT), self.parked.eq(state == State.SYNC),
                     self.deskewed.eq(state == State.DESKEW)]

        # cnt == 0, rep_left != 0 and pc >= length, kept in registers next to the counters (set
        # wherever those are), so the issue decision starts from flip-flops, not from wide compares
        cnt_zero = Signal(init=1)
        rep_active = Signal()
        at_end = Signal()
        # ``dec_src``: in a cycle where the queue issues, a word with the opcode and count of
        # ``insn`` -- `last` for a repetition (``advance`` changes only the address) and `head`
        # otherwise -- chosen from registers only (`head_rep`: head is a REPEAT, whose d = 1 form
        # issues its first repetition at once).  Units decode it a cycle before the issue
        # (hdl/common.py ``predecode``) without the issue logic in front of their decoders.
        # head's opcode class, one register per class, loaded with head (decoded from the word
        # that loads it): the issue decision and the enables of the wide registers below start
        # from these flip-flops, not from a decoder of head.op (the routed critical path at
        # 706b03f, 70.88 MHz, ran head.op -> decode -> state -> nxt's clock enable)
        classes = ("nop", "rep", "sync", "deskew", "notify", "halt", "unit", "rep_d1")
        head_is = {c: Signal(name=f"head_is_{c}") for c in classes}
        head_rep = head_is["rep"]

        def classify(word):
            """The class flags of `word`'s opcode, as (register, value) assignments."""
            ops = {"nop": [Opcode.NOP], "rep": [Opcode.REPEAT], "sync": [Opcode.SYNC],
                   "deskew": [Opcode.DESKEW], "notify": [Opcode.NOTIFY], "halt": [Opcode.HALT],
                   "unit": self.unit_ops}
            out = []
            d1 = Signal(name="is_rep_d1")
            m.d.comb += d1.eq((word.op == Opcode.REPEAT) & (word.args.ctl.d == 1))
            out.append(head_is["rep_d1"].eq(d1))
            for c in classes[:-1]:
                v = Signal(name=f"is_{c}")
                m.d.comb += v.eq(0)
                if ops[c]:
                    with m.Switch(word.op):
                        with m.Case(*ops[c]):
                            m.d.comb += v.eq(1)
                out.append(head_is[c].eq(v))
            return out

        m.d.comb += self.dec_src.eq(Mux(rep_active | head_rep, last, head))
        go = Signal()                             # this queue issues in this cycle
        m.d.comb += go.eq(((state == State.RUN) & cnt_zero) | ((state == State.SYNC) & self.fire) |
                          ((state == State.DESKEW) & self.deskew_go))

        consume = Signal()
        # the read port's data is the word at pc + 2 (pc of the next cycle + 1); pc + 2 and pc + 3
        # are registers of the read address's width (``rd_pc2``, ``rd_pc3``), so that no adder sits
        # between the issue decision and the block RAM's address (the routed critical path of
        # seed 1 at 59caa47, 76.27 MHz, ran START through ``consume`` and pc + 3 to that address)
        pc2 = Signal(len(rd.addr), name="rd_pc2", init=2)
        pc3 = Signal(len(rd.addr), name="rd_pc3", init=3)
        m.d.comb += rd.addr.eq(Mux(self.start, 2, Mux(consume, pc3, pc2)))
        # consume leaves `start` out (the issue logic below sees `start` first, so where it is set
        # neither `consume` nor this value is used): START reaches the address through its last
        # mux only (the routed critical path of seed 2 at 56a395c, 73.82 MHz, ran icu_mxm0's START
        # register through ``consume`` to the queue's read address)
        m.d.comb += consume.eq(go & ~rep_active & ~at_end)
        with m.If(self.start):
            m.d.sync += [pc.eq(0), pc2.eq(2), pc3.eq(3), head.eq(word0), nxt.eq(word1),
                         head_step.eq(step_of(word0)), at_end.eq(length == 0), *classify(word0)]
        with m.Elif(consume):
            m.d.sync += [pc.eq(pc + 1), pc2.eq(pc3), pc3.eq(pc3 + 1), head.eq(nxt), nxt.eq(rd.data),
                         head_step.eq(step_of(nxt)), at_end.eq(pc + 1 >= length), *classify(nxt)]

        def set_cnt(v, zero):
            m.d.sync += [cnt.eq(v), cnt_zero.eq(zero)]      # zero: v == 0, in the cheapest form

        def set_rep(v, active):
            m.d.sync += [rep_left.eq(v), rep_active.eq(active)]      # active: v != 0, cheaply

        with m.If((state == State.RUN) & ~cnt_zero):
            m.d.sync += [cnt.eq(cnt - 1), cnt_zero.eq(cnt == 1)]

        with m.If(self.start):
            m.d.sync += [state.eq(Mux(length == 0, State.HALT, State.RUN)), adv.eq(adv_last)]
            set_cnt(0, 1)
            set_rep(0, 0)
        with m.Elif(go):
            with m.If(rep_active):
                m.d.comb += [self.issue.eq(1), self.insn.eq(adv)]
                m.d.sync += [state.eq(State.RUN), adv.eq(Mux(rep_left == 1, adv_last, adv_more))]
                m.d.sync += [rep_left.eq(rep_left - 1), rep_active.eq(rep_left != 1)]
                m.d.sync += [cnt.eq(rep_d - 1), cnt_zero.eq(rep_d == 1)]
            with m.Elif(at_end):
                m.d.comb += self.err_queue.eq(1)
                m.d.sync += state.eq(State.HALT)
            with m.Else():
                m.d.sync += state.eq(State.RUN)
                with m.If(head_is["nop"]):
                    set_cnt(cur.args.ctl.n - 1, cur.args.ctl.n == 1)
                with m.Elif(head_is["rep"]):
                    d = cur.args.ctl.d
                    m.d.sync += rep_d.eq(d)
                    with m.If(head_is["rep_d1"]):
                        # the first repetition issues right now (t + 1)
                        m.d.comb += [self.issue.eq(1), self.insn.eq(adv)]
                        m.d.sync += adv.eq(Mux(cur.args.ctl.n == 1, adv_last, adv_more))
                        set_rep(cur.args.ctl.n - 1, cur.args.ctl.n != 1)
                        set_cnt(0, 1)
                    with m.Else():
                        # the repetitions start again from `last`: `adv` stays advance(last)
                        set_rep(cur.args.ctl.n, cur.args.ctl.n != 0)
                        set_cnt(d - 2, d == 2)
                with m.Elif(head_is["sync"]):
                    m.d.sync += state.eq(State.SYNC)
                with m.Elif(head_is["deskew"]):
                    m.d.sync += state.eq(State.DESKEW)
                with m.Elif(head_is["notify"]):
                    m.d.comb += self.notify.eq(1)
                with m.Elif(head_is["halt"]):
                    m.d.comb += self.halt.eq(1)
                    m.d.sync += state.eq(State.HALT)
                with m.Elif(head_is["unit"]):
                    m.d.comb += [self.issue.eq(1), self.insn.eq(cur)]
                    m.d.sync += [last.eq(cur), last_step.eq(head_step), adv_last.eq(adv_head),
                                 adv.eq(adv_head)]
                with m.Else():
                    m.d.comb += self.err_queue.eq(1)
                    m.d.sync += state.eq(State.HALT)
        # (after the issue logic, so that `stop` never feeds back into this cycle's issue)
        with m.If(self.stop & ~self.start):
            m.d.sync += state.eq(State.HALT)
        return m
