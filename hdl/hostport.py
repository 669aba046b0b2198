"""The host port: the chip's only valid/ready interface (``amaranth.lib.stream``), 64-bit words.

Command word (``tinylpu.wire.CommandWord``): bits 0-7 command, 8-15 target, 16-31 address, 32-47
count (docs/rtl.md).  The STATUS answer is ``StatusWord0`` and ``StatusWord1``.

======  ==========  ==============  ==========================================================
cmd     name        target          follows / answers
======  ==========  ==============  ==========================================================
0x01    WRITE_MEM   bank number     ``count`` vectors follow, ceil(lanes/8) words each, lane 0
                                    in bits 0-7 of the first word
0x02    READ_MEM    bank number     answers ``count`` vectors in the same layout
0x03    LOAD_QUEUE  slice position  ``count`` instruction words follow, stored from queue index
                                    ``address``; the queue's length becomes address + count
                                    (so LOAD_QUEUE with count 0 at address 0 empties a queue)
0x04    START       -               queues to index 0, cycle counter to 0, streams cleared
0x05    STATUS      -               2 words: running (bit 0), done (bit 1), error flags (bits
                                    8-23, ``ErrorFlags`` order); cycles (bits 0-31) and DESKEW
                                    stall cycles (bits 32-63, 0 on chips without C2C)
======  ==========  ==============  ==========================================================

Unknown commands are dropped.  A bank number the chip does not have writes nothing and reads
zeros (the word count of the answer stays the same).  MEM and queue access is meant for an idle
chip.

Timing: ``cmd.ready`` and ``resp.valid``/``resp.payload`` depend on registers only (never
combinationally on the host's signals), so a host may sample them anywhere in the cycle.
MEM side: ``mem_we``/``mem_re`` (one bit per bank number) with ``mem_addr``/``mem_wdata``;
the read data of ``mem_re`` in cycle c is on ``mem_rdata`` in c + ``mem_latency``: 1, or 3 on
chips with tap registers, whose MEM slices register the host's signals and the read data
(hdl/chip.py).  Writes are delayed alike, so a read still sees every earlier write.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tinylpu.hdl.common import vec
from tinylpu.isa import INSTR_BITS
from tinylpu.wire import ERROR_BITS, Cmd, CommandWord, StatusWord0, StatusWord1

__all__ = ["HostPort", "mem_latency"]


def mem_latency(cfg):
    """Cycles from ``mem_re`` to its data on ``mem_rdata``: the bank's read, plus with tap
    registers a register on the way to the MEM slice and one on the way back (hdl/chip.py)."""
    return 3 if cfg.tap_registers else 1


def _onehot(sel, n):
    return (Const(1, n) << sel)[:n]


class HostPort(wiring.Component):
    def __init__(self, cfg):
        self.cfg = cfg
        self.banks = max(s.index for s in cfg.slices_of("mem")) + 1
        self.words = -(-cfg.lanes // 8)              # host words per vector
        self.mem_latency = mem_latency(cfg)
        super().__init__({
            "cmd": In(stream.Signature(64)),
            "resp": Out(stream.Signature(64)),
            # MEM banks (bit/entry i = bank number i)
            "mem_addr": Out(16),
            "mem_wdata": Out(vec(cfg.lanes)),
            "mem_we": Out(self.banks),
            "mem_re": Out(self.banks),
            "mem_rdata": In(data.ArrayLayout(vec(cfg.lanes), self.banks)),
            # instruction queues (bit i = slice position i)
            "q_addr": Out(16),
            "q_data": Out(INSTR_BITS),
            "q_we": Out(cfg.positions),
            "q_len": Out(17),
            "q_len_we": Out(cfg.positions),
            # run control and status
            "start": Out(1),
            "start_next": Out(1),       # `start` of the next cycle (its register's input)
            "st_running": In(1),
            "st_done": In(1),
            "st_errors": In(len(ERROR_BITS)),
            "st_cycles": In(32),
            "st_stall": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.words
        cmd, resp = self.cmd, self.resp
        word = cmd.payload
        c = CommandWord(word)                         # the command word's fields (tinylpu.wire)
        c_op, c_target, c_addr, c_count = c.cmd, c.target, c.address, c.count

        target = Signal(8)
        addr = Signal(16)
        count = Signal(16)
        widx = Signal(range(max(W, 2)))
        buf = Signal(64 * W)                          # vector being assembled / sent
        status_w0 = Signal(StatusWord0)                # the STATUS answer, registered at the command
        status_w1 = Signal(StatusWord1)
        status = Cat(status_w0, status_w1)
        status_now = (Signal(StatusWord0), Signal(StatusWord1))
        m.d.comb += [status_now[0].running.eq(self.st_running), status_now[0].done.eq(self.st_done),
                     status_now[0].errors.eq(self.st_errors),
                     status_now[1].cycles.eq(self.st_cycles), status_now[1].stall.eq(self.st_stall)]

        rdata = Array(self.mem_rdata[i] for i in range(self.banks))

        # MEM address: the registered write address while a write is on the port, else the read
        # address of this cycle (reads and writes never share a cycle: a write lands in the cycle
        # after its last word, before the next command can have been taken)
        waddr = Signal(16)
        raddr = Signal(16)
        addr1 = Signal(16)                 # addr + 1, and count == 1, kept as registers (timing)
        last = Signal()
        m.d.comb += [raddr.eq(addr), self.mem_addr.eq(Mux(self.mem_we.any(), waddr, raddr))]

        m.d.sync += [self.start.eq(self.start_next), self.mem_we.eq(0)]
        m.d.comb += [self.q_addr.eq(addr), self.q_data.eq(word)]

        with m.FSM(name="host"):
            with m.State("IDLE"):
                m.d.comb += cmd.ready.eq(1)
                with m.If(cmd.valid):
                    m.d.sync += [target.eq(c_target), addr.eq(c_addr), count.eq(c_count), widx.eq(0),
                                 addr1.eq(c_addr + 1), last.eq(c_count == 1)]
                    with m.Switch(c_op):
                        with m.Case(Cmd.WRITE_MEM):
                            with m.If(c_count != 0):
                                m.next = "WDATA"
                        with m.Case(Cmd.READ_MEM):
                            with m.If(c_count != 0):
                                m.next = "RREAD"
                        with m.Case(Cmd.LOAD_QUEUE):
                            m.d.comb += [self.q_len.eq(c_addr + c_count),
                                         self.q_len_we.eq(_onehot(c_target, self.cfg.positions))]
                            with m.If(c_count != 0):
                                m.next = "QDATA"
                        with m.Case(Cmd.START):
                            m.d.comb += self.start_next.eq(1)
                        with m.Case(Cmd.STATUS):
                            m.d.sync += [status_w0.eq(status_now[0]), status_w1.eq(status_now[1]), widx.eq(0)]
                            m.next = "STATUS"

            with m.State("WDATA"):
                m.d.comb += cmd.ready.eq(1)
                with m.If(cmd.valid):
                    m.d.sync += buf.word_select(widx, 64).eq(word)
                    with m.If(widx == W - 1):
                        m.d.sync += [
                            widx.eq(0),
                            self.mem_we.eq(_onehot(target, self.banks)),
                            waddr.eq(addr),
                            self.mem_wdata.eq(Cat(buf[:64 * (W - 1)], word) if W > 1 else word),
                            addr.eq(addr1), addr1.eq(addr1 + 1),
                            count.eq(count - 1), last.eq(count == 2),
                        ]
                        with m.If(last):
                            m.next = "IDLE"
                    with m.Else():
                        m.d.sync += widx.eq(widx + 1)

            extra = self.mem_latency - 1                  # cycles in RWAIT before RDATA
            wait = Signal(range(extra + 1), name="rwait") if extra else None
            after_read = "RWAIT" if extra else "RDATA"
            with m.State("RREAD"):
                # the first vector's read; its data is on mem_rdata in RDATA
                m.d.comb += self.mem_re.eq(_onehot(target, self.banks))
                if extra:
                    m.d.sync += wait.eq(extra - 1)
                m.next = after_read
            if extra:
                with m.State("RWAIT"):
                    m.d.sync += wait.eq(wait - 1)
                    with m.If(wait == 0):
                        m.next = "RDATA"
            with m.State("RDATA"):
                with m.If(target < self.banks):
                    m.d.sync += buf.eq(rdata[target])
                with m.Else():
                    m.d.sync += buf.eq(0)
                m.d.sync += widx.eq(0)
                m.next = "RSEND"
            with m.State("RSEND"):
                m.d.comb += [resp.valid.eq(1), resp.payload.eq(buf.word_select(widx, 64))]
                with m.If(resp.ready):
                    with m.If(widx == W - 1):
                        m.d.sync += [addr.eq(addr1), addr1.eq(addr1 + 1), count.eq(count - 1), last.eq(count == 2)]
                        with m.If(last):
                            m.next = "IDLE"
                        with m.Else():
                            # read the next vector while its predecessor's last word goes out
                            m.d.comb += [self.mem_re.eq(_onehot(target, self.banks)), raddr.eq(addr1)]
                            if extra:
                                m.d.sync += wait.eq(extra - 1)
                            m.next = after_read
                    with m.Else():
                        m.d.sync += widx.eq(widx + 1)

            with m.State("QDATA"):
                m.d.comb += cmd.ready.eq(1)
                with m.If(cmd.valid):
                    m.d.comb += self.q_we.eq(_onehot(target, self.cfg.positions))
                    m.d.sync += [addr.eq(addr1), addr1.eq(addr1 + 1), count.eq(count - 1), last.eq(count == 2)]
                    with m.If(last):
                        m.next = "IDLE"

            with m.State("STATUS"):
                m.d.comb += [resp.valid.eq(1), resp.payload.eq(status.word_select(widx[0], 64))]
                with m.If(resp.ready):
                    m.d.sync += widx.eq(widx + 1)
                    with m.If(widx[0]):
                        m.next = "IDLE"
        return m
