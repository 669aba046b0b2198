"""FPGA top: ``Chip(cfg)`` behind a UART, so that a host can drive a real board.

The host port's 64-bit words travel as 8 UART bytes each (8N1), least significant byte first, in
both directions.  Nothing else is framed: the byte stream *is* the host-port word stream of
docs/rtl.md (command words, data words, answers).

* ``UartRx`` / ``UartTx``: 8N1 at ``divisor`` clock cycles per bit (``clk_hz // baud``).
* ``BytesToWords`` / ``WordsToBytes``: 8 bytes <-> one 64-bit word, little-endian.
* ``FpgaTop(cfg, divisor)``: ports ``rx`` (in) and ``tx`` (out, idle high).  The byte -> word side
  holds one assembled word until the chip takes it; the chip's ``cmd.ready`` is high except while a
  command is being served, and a new word needs 8 byte times, so a host that waits for the answers
  of READ_MEM / STATUS before sending more never overruns it.
* ``BoardTop(cfg, baud, pll=None)``: the same on an amaranth-boards platform: ``uart`` resource 0,
  the platform's default clock (and ``uart_tx_enable`` driven high where the board has one, ULX3S).
  With ``pll`` (ECP5 only: ``{"freq_hz", "params", "attrs"}`` of an ``EHXPLLL``, as
  ``scripts/synth.py`` gets them from ``ecppll``) the chip runs from the PLL's CLKOP instead, held in
  reset until the PLL locks, and the clock constraint is the PLL's frequency (``cfg.clock_mhz``).
"""

from amaranth.hdl import Cat, ClockDomain, Instance, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from tinylpu.hdl.chip import Chip

__all__ = ["UartRx", "UartTx", "BytesToWords", "WordsToBytes", "FpgaTop", "BoardTop"]


class UartRx(wiring.Component):
    """8N1 receiver; ``out`` carries one byte per received frame (no back-pressure: a byte not
    taken before the next one completes is lost, ``overrun`` pulses)."""

    def __init__(self, divisor):
        assert divisor >= 4
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "out": Out(stream.Signature(8)), "overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        # two-flop synchroniser
        s1 = Signal(init=1)
        s2 = Signal(init=1)
        m.d.sync += [s1.eq(self.rx), s2.eq(s1)]
        timer = Signal(range(d + d // 2 + 1))
        bit = Signal(range(9))
        shreg = Signal(8)
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += self.out.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~s2):
                    # sample in the middle of data bit 0: 1.5 bit times after the start edge
                    m.d.sync += [timer.eq(d + d // 2 - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], s2)), bit.eq(bit + 1), timer.eq(d - 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(s2):                      # a good stop bit
                        m.d.sync += [self.out.payload.eq(shreg), self.out.valid.eq(1)]
                        with m.If(self.out.valid & ~self.out.ready):
                            m.d.comb += self.overrun.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
        return m


class UartTx(wiring.Component):
    """8N1 transmitter; takes one byte from ``in_`` per frame."""

    def __init__(self, divisor):
        assert divisor >= 2
        self.divisor = divisor
        super().__init__({"in_": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        timer = Signal(range(d))
        bits = Signal(10)            # start, 8 data bits, stop (sent LSB first)
        left = Signal(range(11))     # bits still to start
        # the stop bit (the last one started) is held a full bit time before the next frame
        m.d.comb += self.in_.ready.eq((left == 0) & (timer == 0))
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Elif(left != 0):
            m.d.sync += [self.tx.eq(bits[0]), bits.eq(bits >> 1), left.eq(left - 1), timer.eq(d - 1)]
        with m.Elif(self.in_.valid):
            m.d.sync += [bits.eq(Cat(0, self.in_.payload, 1)), left.eq(10)]
        return m


class BytesToWords(wiring.Component):
    """8 bytes (least significant first) -> one 64-bit word."""

    def __init__(self):
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(64))})

    def elaborate(self, platform):
        m = Module()
        n = Signal(range(8))
        acc = Signal(56)
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            with m.If(n == 7):
                m.d.sync += [self.o.payload.eq(Cat(acc, self.i.payload)), self.o.valid.eq(1), n.eq(0)]
            with m.Else():
                m.d.sync += [acc.eq(Cat(acc[8:], self.i.payload)), n.eq(n + 1)]
        return m


class WordsToBytes(wiring.Component):
    """One 64-bit word -> 8 bytes, least significant first."""

    def __init__(self):
        super().__init__({"i": In(stream.Signature(64)), "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        word = Signal(64)
        left = Signal(range(9))
        m.d.comb += [self.i.ready.eq(left == 0), self.o.valid.eq(left != 0), self.o.payload.eq(word[:8])]
        with m.If(left == 0):
            with m.If(self.i.valid):
                m.d.sync += [word.eq(self.i.payload), left.eq(8)]
        with m.Elif(self.o.ready):
            m.d.sync += [word.eq(word >> 8), left.eq(left - 1)]
        return m


class FpgaTop(wiring.Component):
    """``FpgaTop(cfg, divisor)``: ``Chip(cfg)`` whose host port is a UART (``rx`` in, ``tx`` out)."""

    def __init__(self, cfg, divisor):
        self.cfg = cfg
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.chip = chip = Chip(self.cfg)
        m.submodules.uart_rx = urx = UartRx(self.divisor)
        m.submodules.uart_tx = utx = UartTx(self.divisor)
        m.submodules.b2w = b2w = BytesToWords()
        m.submodules.w2b = w2b = WordsToBytes()
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx), self.overrun.eq(urx.overrun)]
        wiring.connect(m, urx.out, b2w.i)
        wiring.connect(m, b2w.o, chip.cmd)
        wiring.connect(m, chip.resp, w2b.i)
        wiring.connect(m, w2b.o, utx.in_)
        return m


class BoardTop(wiring.Component):
    """``FpgaTop`` on an amaranth-boards platform (default clock or an ECP5 PLL, ``uart`` resource 0)."""

    def __init__(self, cfg, baud=115200, pll=None):
        self.cfg = cfg
        self.baud = baud
        self.pll = pll
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        freq = platform.default_clk_frequency
        if self.pll:
            freq = self.pll["freq_hz"]
            clkin = platform.request(platform.default_clk, dir="i").i
            m.domains.sync = cd = ClockDomain("sync")
            locked = Signal()
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=str(int(platform.default_clk_frequency // 1e6)),
                a_FREQUENCY_PIN_CLKOP=str(round(freq / 1e6, 6)).removesuffix(".0"),
                **{f"a_{k}": v for k, v in self.pll.get("attrs", {}).items()},
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD", p_CLKOP_ENABLE="ENABLED",
                p_FEEDBK_PATH="CLKOP",
                **{f"p_{k}": v for k, v in self.pll["params"].items()},
                i_RST=0, i_STDBY=0, i_CLKI=clkin, o_CLKOP=cd.clk, i_CLKFB=cd.clk,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
            m.submodules.rst_sync = ResetSynchronizer(~locked, domain="sync")
            platform.add_clock_constraint(cd.clk, freq)
        divisor = int(freq // self.baud)
        m.submodules.top = top = FpgaTop(self.cfg, divisor)
        uart = platform.request("uart", 0)
        m.d.comb += [top.rx.eq(uart.rx.i), uart.tx.o.eq(top.tx)]
        if "uart_tx_enable" in {r.name for r in platform.resources.values()}:
            m.d.comb += platform.request("uart_tx_enable", 0).o.eq(1)
        return m
