"""The tinylpu chip: the top, assembled from the config's floorplan.

Per slice (west to east): an ICU (``icu_<name>``) and the slice unit (``<name>``: ``MemSlice``,
``MxmSlice``, ``VxmSlice`` or ``SxmSlice``); the stream fabric (``streams``) joins the units' result
ports and taps; the host port (``host``) is the only way in or out (``cmd``/``resp`` streams).

Run control (cycle 0 is the first cycle after the START command):

* ``notify``: the OR of every queue's NOTIFY pulse, delayed ``latency.notify`` cycles, is
  broadcast to all ICUs as ``fire``;
* a free-running cycle counter (0 in cycle 0);
* done: every queue halted (registered ICU states).  That is first true in cycle H+1, H the cycle
  of the last HALT, and the program's cycle count is H+1.  A unit ``busy`` in that cycle is an
  ``inflight`` error;
* ``deadlock``: every queue halted or parked in SYNC, at least one parked, and no NOTIFY on its
  way (the golden model's check, in the same cycle);
* errors: the units' ``err`` pulses and the ICUs' queue errors are OR-ed into sticky status flags.
  The first error stops the run (queues halt, status done with the flags set, cycles = the cycle
  the error was flagged in).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .common import ERROR_BITS, ErrorFlags
from .hostport import HostPort
from .icu import ICU
from .streams import StreamFabric

__all__ = ["Chip", "unit_classes"]


def unit_classes():
    from .mem import MemSlice
    from .mxm import MxmSlice
    from .sxm import SxmSlice
    from .vxm import VxmSlice
    return {"mem": MemSlice, "mxm": MxmSlice, "vxm": VxmSlice, "sxm": SxmSlice}


class Chip(wiring.Component):
    """``Chip(cfg)``; ``units`` may map slice kinds to other unit classes (tests)."""

    def __init__(self, cfg, units=None):
        self.cfg = cfg
        self._units = units
        super().__init__({
            "cmd": In(stream.Signature(64)),
            "resp": Out(stream.Signature(64)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        classes = self._units or unit_classes()

        m.submodules.streams = fabric = StreamFabric(cfg)
        m.submodules.host = host = HostPort(cfg)
        wiring.connect(m, wiring.flipped(self.cmd), host.cmd)
        wiring.connect(m, host.resp, wiring.flipped(self.resp))

        icus, units = [], []
        for s in cfg.slices:
            p = s.position
            icu = ICU(cfg, s)
            unit = classes[s.kind](cfg, s)
            m.submodules[f"icu_{s.name}"] = icu
            m.submodules[s.name] = unit
            icus.append(icu)
            units.append(unit)
            m.d.comb += [unit.issue.eq(icu.issue), unit.insn.eq(icu.insn)]
            wiring.connect(m, unit.out, fabric.outs[p])
            wiring.connect(m, fabric.taps[p], unit.tap)
            m.d.comb += [
                icu.load_we.eq(host.q_we[p]), icu.load_addr.eq(host.q_addr), icu.load_data.eq(host.q_data),
                icu.len_we.eq(host.q_len_we[p]), icu.len.eq(host.q_len),
                icu.start.eq(host.start),
            ]
            if s.kind == "mem":
                m.d.comb += [
                    unit.host_addr.eq(host.mem_addr), unit.host_wdata.eq(host.mem_wdata),
                    unit.host_we.eq(host.mem_we[s.index]), unit.host_re.eq(host.mem_re[s.index]),
                    host.mem_rdata[s.index].eq(unit.host_rdata),
                ]
        m.d.comb += fabric.clear.eq(host.start)

        # --- run state ---------------------------------------------------------------------
        running = Signal()
        done = Signal()
        counter = Signal(32)
        last_halt_p1 = Signal(32)       # (cycle of the last HALT) + 1
        result_cycles = Signal(32)
        errors = Signal(ErrorFlags)     # sticky

        # NOTIFY delay line
        n = cfg.latency["notify"]
        line = [Signal(name=f"notify_d{i + 1}") for i in range(n)]
        any_notify = Signal()
        m.d.comb += any_notify.eq(Cat(icu.notify for icu in icus).any())
        fire = line[-1]
        with m.If(host.start):
            m.d.sync += [x.eq(0) for x in line]
        with m.Else():
            m.d.sync += line[0].eq(any_notify)
            m.d.sync += [line[i].eq(line[i - 1]) for i in range(1, n)]
        for icu in icus:
            m.d.comb += icu.fire.eq(fire)

        all_halted = Signal()
        deadlock = Signal()
        m.d.comb += [
            all_halted.eq(Cat(icu.halted for icu in icus).all()),
            deadlock.eq(Cat(icu.halted | icu.parked for icu in icus).all()
                        & Cat(icu.parked for icu in icus).any()
                        & ~Cat(*line).any()),
        ]

        err_now = Signal(ErrorFlags)
        unit_err = Signal(len(ERROR_BITS))
        acc = 0
        for u in units:
            acc = acc | u.err.as_value()
        m.d.comb += unit_err.eq(acc)
        inflight = all_halted & Cat(u.busy for u in units).any()
        m.d.comb += err_now.eq(unit_err)
        m.d.comb += [
            err_now.queue.eq(unit_err[ERROR_BITS.index("queue")] | Cat(icu.err_queue for icu in icus).any()),
            err_now.deadlock.eq(unit_err[ERROR_BITS.index("deadlock")] | deadlock),
            err_now.inflight.eq(unit_err[ERROR_BITS.index("inflight")] | inflight),
        ]
        any_err = Signal()
        m.d.comb += any_err.eq(running & (err_now.as_value() != 0))
        for icu in icus:
            m.d.comb += icu.stop.eq(any_err)

        with m.If(host.start):
            m.d.sync += [running.eq(1), done.eq(0), counter.eq(0), last_halt_p1.eq(0), errors.eq(0),
                         result_cycles.eq(0)]
        with m.Elif(running):
            m.d.sync += counter.eq(counter + 1)
            with m.If(Cat(icu.halt for icu in icus).any()):
                m.d.sync += last_halt_p1.eq(counter + 1)
            with m.If(any_err):
                m.d.sync += [errors.eq(errors.as_value() | err_now.as_value()), running.eq(0), done.eq(1),
                             result_cycles.eq(counter)]
            with m.Elif(all_halted):
                m.d.sync += [running.eq(0), done.eq(1), result_cycles.eq(last_halt_p1)]

        m.d.comb += [
            host.st_running.eq(running),
            host.st_done.eq(done),
            host.st_errors.eq(errors),
            host.st_cycles.eq(Mux(running, counter, result_cycles)),
        ]
        return m
