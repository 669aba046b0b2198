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

Issue registers (every chip without C2C): the ICUs and the NOTIFY line run one cycle ahead of the
rest of the chip.  They see the host's START one cycle before the counter, the stream fabric and
the run state do, and every ICU output (``issue``, ``insn``, the queue states and pulses) reaches the
units and the run logic through a register.  So no ICU logic and no queue memory sits in a path
into a unit.  Each unit also gets a word with the opcode and count of its next instruction
(``pre_insn``, the ICU's ``dec_src``) in the cycle before it issues and decodes it into registers
there (``common.predecode``: opcode classes, count tests), so its sample cycle starts from decoded
flip-flops.  The cycle counts are unchanged.  The run logic acts on cycle c's error flags and
all-halted state in cycle c+2 (per-unit registers ``err_<slice>``/``busy_<slice>`` in c+1, their
OR ``err_seen`` in c+2, with c's counter), so the status (flags, cycles) is exactly as before; the
units may still see the issues of cycles c+1 and c+2 after an error in c (``stopped`` masks them
from c+3), which only matters to a program that has already failed.  Chips with C2C keep the combinational issue,
because DESKEW's release is decided in the cycle the queues leave it.

Tap registers (``fabric.tap_registers``, chips without C2C; hdl/taps.py): every unit is a
``Tapped`` unit that reads a registered copy of its position's stream registers and gets its issue
one cycle later, built with result latencies one shorter, so the golden model's timing holds.  Its
``err``/``busy`` come one cycle late, so the run logic takes every flag one more cycle late (the
queue states through one more register, ``*_t``) and acts in c+3 with c's counter; ``stopped``
then masks the issues from c+4.

C2C (only when the floorplan has a c2c slice; docs/c2c.md): the ``C2CSlice``, per port p a
``LinkTX`` (``link_tx<p>``, this chip's clock) and a ``LinkRX`` (``link_rx<p>``: its front end in
clock domain ``rxrec<p>``, which the tray maps to the sending chip's clock; its back end in this
chip's clock), the chip ports ``tx`` / ``rx`` (one ``LinkWire`` per port) and ``ext_start`` (the
tray's START broadcast, a one-cycle pulse in this chip's clock).  Two counters:

* ``at``, the aligned-time counter: every clock since START, never stalled; it is the HAC the
  links exchange;
* the program counter (``counter``): the golden model's cycle, frozen while DESKEW holds.

DESKEW: when the program counter is at an epoch boundary B (a multiple of ``c2c.epoch``) and a
queue is parked in DESKEW, every live queue must be parked in DESKEW (else ``queue``) and no unit
busy (else ``inflight``).  The chip then holds (program counter, ICUs and stream fabric frozen)
until its estimate of chip 0's aligned time reaches B + (B / epoch) * ``deskew_margin(cfg)``, and
releases the queues in that cycle with the program counter at B.  Chip 0 is the reference and
uses its own ``at``; chip k uses ``at - hac_offset`` of its link from chip 0.  Which one is a
run-time input, so one chip module serves every tray position: ``deskew_ref`` (a tray drives it
with the constant ``deskew_ref(cfg, chip)``) is 0 on the reference (its default: a single chip
behaves as chip 0) and p + 1 on a chip that hears chip 0 on port p.
The held cycles are counted in ``stall`` (STATUS word 1, bits 32-63).
"""

import math
from types import SimpleNamespace

from amaranth.hdl import (
    Cat,
    ClockDomain,
    ClockSignal,
    DomainRenamer,
    EnableInserter,
    Module,
    Mux,
    ResetSignal,
    Signal,
    Value,
)
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from tinylpu.hdl.hostport import HostPort
from tinylpu.hdl.icu import ICU
from tinylpu.hdl.streams import StreamFabric
from tinylpu.hdl.taps import Tapped
from tinylpu.wire import ERROR_BITS, ErrorFlags

__all__ = ["Chip", "unit_classes", "deskew_margin", "ref_port", "deskew_ref", "LINK_STATUS",
           "LinkStatusSignature"]

#: ``LinkRX`` status outputs a chip with C2C exposes per port (``link[p]``), plus the TX's overrun.
LINK_STATUS = ["trained", "crc_errors", "corrected", "frame_errors", "seq_errors", "flits_ok", "hac_ok", "skips_removed",
               "skips_inserted", "fill_min", "fill_max", "hac_offset", "alarm", "alarm_flags"]


def LinkStatusSignature(cfg):  # noqa: N802
    from tinylpu.hdl.c2c import LinkRX
    rx = LinkRX(cfg)
    rx._MustUse__silence = True             # only its signature is wanted here
    members = {}
    for name, mem in rx.signature.members.items():
        if name in LINK_STATUS:
            members[name] = Out(mem.shape, init=mem.init)
    members["overrun"] = Out(1)
    return wiring.Signature(members)


def unit_classes():
    from tinylpu.hdl.c2cslice import C2CSlice
    from tinylpu.hdl.mem import MemSlice
    from tinylpu.hdl.mxm import MxmSlice
    from tinylpu.hdl.sxm import SxmSlice
    from tinylpu.hdl.vxm import VxmSlice
    return {"mem": MemSlice, "mxm": MxmSlice, "vxm": VxmSlice, "sxm": SxmSlice, "c2c": C2CSlice}


def deskew_margin(cfg):
    """Aligned cycles of stall budget per epoch of program time: the worst drift between two chips
    over one epoch (2 x ppm_budget) plus 6 cycles for the START skew and the HAC estimate's error."""
    E = cfg.link["epoch"]
    return math.ceil(2 * cfg.link["ppm_budget"] * 1e-6 * E) + 6


def ref_port(cfg, chip):
    """The port on which chip `chip` hears chip 0 (None for chip 0, the DESKEW reference)."""
    if chip == 0:
        return None
    for p in range(cfg.c2c_ports):
        if cfg.peer(chip, p)[0] == 0:
            return p
    raise ValueError(f"config {cfg.name}: chip {chip} has no link from chip 0 (DESKEW needs one)")


def deskew_ref(cfg, chip):
    """The value of the ``deskew_ref`` input of chip `chip` of a tray: 0 for chip 0 (the DESKEW
    reference, its own aligned time), p + 1 if it hears chip 0 on port p (``ref_port``)."""
    p = ref_port(cfg, chip)
    return 0 if p is None else p + 1


class Chip(wiring.Component):
    """``Chip(cfg)``; ``units`` may map slice kinds to other unit classes (tests)."""

    def __init__(self, cfg, units=None):
        self.cfg = cfg
        self._units = units
        self.has_c2c = bool(cfg.slices_of("c2c"))
        members = {
            "cmd": In(stream.Signature(64)),
            "resp": Out(stream.Signature(64)),
        }
        if self.has_c2c:
            from tinylpu.hdl.c2c import LinkWire
            from tinylpu.link import LinkParams
            w = LinkParams.from_cfg(cfg).width
            members.update({
                "tx": Out(LinkWire(w)).array(cfg.c2c_ports),
                "rx": In(LinkWire(w)).array(cfg.c2c_ports),
                "ext_start": In(1),
                # DESKEW's reference: 0 = this chip (chip 0), p + 1 = port p (``deskew_ref``)
                "deskew_ref": In(range(cfg.c2c_ports + 1)),
                "link": Out(LinkStatusSignature(cfg)).array(cfg.c2c_ports),
            })
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        classes = self._units or unit_classes()

        # units that never drive an int32 group (``WIDE_OUT = False``) get a cheaper fabric port
        fabric = StreamFabric(cfg, wide=[getattr(classes[s.kind], "WIDE_OUT", True) for s in cfg.slices])
        hold = Signal()                 # DESKEW holds the chip (program counter, ICUs, streams)
        m.submodules.streams = EnableInserter(~hold)(fabric) if self.has_c2c else fabric
        m.submodules.host = host = HostPort(cfg)
        start = Signal()
        m.d.comb += start.eq(host.start | (self.ext_start if self.has_c2c else 0))
        wiring.connect(m, wiring.flipped(self.cmd), host.cmd)
        wiring.connect(m, host.resp, wiring.flipped(self.resp))

        # Registered issue (every chip without C2C; module docstring, "Issue registers"): the ICUs
        # run one cycle ahead of the rest of the chip and their outputs pass through registers.
        ahead = not self.has_c2c
        icu_start = start                       # the ICUs' START cycle
        if ahead:
            start = Signal(name="start_chip")   # the rest of the chip's START cycle: one later
            m.d.sync += start.eq(icu_start)
        stopped = Signal()                      # an error stopped the run (gates the registered issue)
        stop_next = Signal()                    # `stopped` of the next cycle (its register's input)
        # tap registers: each slice's own stop_next (``_stop``), from registers of its own
        stop_nexts = ([Signal(name=f"stop_next_{s.name}") for s in self.cfg.slices]
                      if ahead and self.cfg.tap_registers else None)
        sl = self._slices(m, classes, fabric, host, icu_start, stop_next, stop_nexts)
        m.d.comb += fabric.clear.eq(start)

        run = self._run_registers()
        line = self._notify_line(m, sl, icu_start, hold)
        all_halted, deadlock = self._queue_states(m, sl, line)
        deskew_queue_err = Signal()
        deskew_busy_err = Signal()
        if self.has_c2c:
            self._c2c(m, sl.c2c, sl.icus, sl.units, start, run.running, run.counter, hold, run.stall,
                      deskew_queue_err, deskew_busy_err)
        dec_err, dec_halted, dec_cycle = self._error_flags(m, sl, start, run.counter, all_halted, deadlock,
                                                           deskew_queue_err, deskew_busy_err)
        any_err = Signal()
        m.d.comb += any_err.eq(run.running & (dec_err.as_value() != 0))
        self._stop(m, sl, icu_start, start, stopped, stop_next, any_err, stop_nexts, run.running, dec_halted)
        self._run_state(m, run, sl, icu_start, start, hold, any_err, dec_err, dec_halted, dec_cycle)
        m.d.comb += [
            host.st_running.eq(run.running),
            host.st_done.eq(run.done),
            host.st_errors.eq(run.errors),
            host.st_cycles.eq(Mux(run.running, run.counter, run.result_cycles)),
            host.st_stall.eq(run.stall),
        ]
        return m

    def _slices(self, m, classes, fabric, host, icu_start, stop_next, stop_nexts=None):
        """Per slice an ICU (``icu_<name>``) and the unit (``<name>``), joined to the fabric, the
        host port and (registered issue) through the issue registers.  Returns ``icus``, ``units``,
        ``icu_st`` (per ICU: halted, parked, deskewed, halt, err_queue, in chip time) and ``c2c``."""
        cfg = self.cfg
        ahead = not self.has_c2c
        icus, units, icu_st, c2c = [], [], [], None
        doms, starts = [], []
        for i, s in enumerate(cfg.slices):
            p = s.position
            icu = ICU(cfg, s)
            if cfg.tap_registers:
                # tap registers (hdl/taps.py): the unit reads a registered copy of its position's
                # streams; its err/busy come one cycle late (``_error_flags``)
                unit = Tapped(classes[s.kind], cfg, s)
            else:
                unit = classes[s.kind](cfg, s)
            dom = self._slice_domain(m, s)
            # (renamed where added: ``icu`` and ``unit`` stay the objects themselves, whose
            # attributes this method sets)
            m.submodules[f"icu_{s.name}"] = DomainRenamer(dom)(icu) if dom != "sync" else icu
            m.submodules[s.name] = DomainRenamer(dom)(unit) if dom != "sync" else unit
            icus.append(icu)
            units.append(unit)
            doms.append(dom)
            if ahead:
                icu_st.append(self._issue_registers(m, s, icu, unit, stop_next if stop_nexts is None
                                                    else stop_nexts[i], dom))
            else:
                m.d.comb += [unit.issue.eq(icu.issue), unit.insn.eq(icu.insn)]
                icu_st.append([icu.halted, icu.parked, icu.deskewed, icu.halt, icu.err_queue])
            wiring.connect(m, unit.out, fabric.outs[p])
            wiring.connect(m, fabric.taps[p], unit.tap)
            # host access: with tap registers, registered at the slice (and MEM read data on its way
            # back), so no host-port wire crosses the chip between two logic levels
            # (``HostPort.mem_latency`` counts the MEM registers)
            def hreg(src, name, s=s, dom=dom):
                if not cfg.tap_registers:
                    return src
                r = Signal.like(src, name=f"host_{s.name}_{name}")
                m.d[dom] += r.eq(src)
                return r
            m.d.comb += [
                icu.load_we.eq(hreg(host.q_we[p], "q_we")), icu.load_addr.eq(hreg(host.q_addr, "q_addr")),
                icu.load_data.eq(hreg(host.q_data, "q_data")),
                icu.len_we.eq(hreg(host.q_len_we[p], "q_len_we")), icu.len.eq(hreg(host.q_len, "q_len")),
            ]
            if cfg.tap_registers:
                # the START pulse from a register of the slice's own (``start_<s>``), loaded with
                # the host port's next-cycle start: the same cycle as ``icu_start``, no chip-wide net
                st = Signal(name=f"start_{s.name}")
                m.d[dom] += st.eq(host.start_next)
                m.d.comb += icu.start.eq(st)
                starts.append(st)
            else:
                m.d.comb += icu.start.eq(icu_start)
            if s.kind == "mem":
                m.d.comb += [
                    unit.host_addr.eq(hreg(host.mem_addr, "addr")), unit.host_wdata.eq(hreg(host.mem_wdata, "wdata")),
                    unit.host_we.eq(hreg(host.mem_we[s.index], "we")), unit.host_re.eq(hreg(host.mem_re[s.index], "re")),
                    host.mem_rdata[s.index].eq(hreg(unit.host_rdata, "rdata")),
                ]
            if s.kind == "c2c":
                c2c = unit
        return SimpleNamespace(icus=icus, units=units, icu_st=icu_st, c2c=c2c, doms=doms, starts=starts or None)

    def _slice_domain(self, m, s):
        """The clock domain of slice `s`'s ICU, unit and issue registers: ``sync``, or with tap
        registers ``slice_<s>``, the same clock with the reset registered for the slice
        (``slice_rst_<s>``), so the chip's reset reaches each slice from a register of its own instead of
        one net (and the logic Yosys shares between slices) spanning the chip.  A slice leaves reset
        one cycle after the rest of the chip, long before a host command can reach it."""
        if not self.cfg.tap_registers:
            return "sync"
        dom = f"slice_{s.name}"
        cd = ClockDomain(dom, local=True)
        m.domains += cd
        # (scripts/synth.py ``KEEP_COPIES`` keeps Yosys from merging the slices' identical registers)
        rst = Signal(name=f"slice_rst_{s.name}", reset_less=True)
        m.d.sync += rst.eq(ResetSignal("sync"))
        m.d.comb += [cd.clk.eq(ClockSignal("sync")), cd.rst.eq(rst)]
        return dom

    def _issue_registers(self, m, s, icu, unit, stop_next, dom="sync"):
        """Slice `s`'s ICU outputs, registered on their way to the unit and the run logic
        (``issue_<s>``, ``insn_<s>``, ``halted_<s>`` ...); the unit predecodes ``pre_insn``.
        Returns the registered queue states (halted, parked, deskewed, halt, err_queue)."""
        iss = Signal(name=f"issue_{s.name}")
        ins = Signal.like(icu.insn, name=f"insn_{s.name}", reset_less=True)     # (data: used with `iss`)
        st = [Signal(name=f"{n}_{s.name}") for n in ("halted", "parked", "deskewed", "halt", "err_queue")]
        # `iss` is the issue already masked by `stopped` of its own cycle (taken from the
        # stop register's input), so no chip-wide net gates the units' sample logic
        m.d[dom] += [iss.eq(icu.issue & ~stop_next), ins.eq(icu.insn),
                     st[0].eq(icu.halted), st[1].eq(icu.parked), st[2].eq(icu.deskewed),
                     st[3].eq(icu.halt), st[4].eq(icu.err_queue)]
        m.d.comb += [unit.issue.eq(iss), unit.insn.eq(ins)]
        if hasattr(unit, "pre_insn"):
            # the op and count of the next cycle's instruction (the ICU's ``dec_src``), for
            # the unit's predecode registers (hdl/common.py ``predecode``)
            unit.early = True
            m.d.comb += unit.pre_insn.eq(icu.dec_src)
        return st

    @staticmethod
    def _run_registers():
        """The run state: ``running``, ``done``, the program ``counter``, ``last_halt_p1`` ((cycle
        of the last HALT) + 1), ``result_cycles``, the sticky ``errors`` and the DESKEW ``stall``."""
        running = Signal()
        done = Signal()
        counter = Signal(32)
        last_halt_p1 = Signal(32)
        result_cycles = Signal(32)
        errors = Signal(ErrorFlags)     # sticky
        stall = Signal(32)              # cycles DESKEW held the chip
        return SimpleNamespace(running=running, done=done, counter=counter, last_halt_p1=last_halt_p1,
                               result_cycles=result_cycles, errors=errors, stall=stall)

    def _notify_line(self, m, sl, icu_start, hold):
        """The OR of the queues' NOTIFY pulses, delayed ``latency.notify`` cycles (``notify_d<i>``),
        broadcast to every ICU as ``fire``; with tap registers each ICU gets its own copy of the
        line's last register (``fire_<s>``, in its slice's domain, cleared by its ``start_<s>``), so
        no chip-wide net reaches the ICUs' issue logic.  Returns the delay line."""
        icus = sl.icus
        n = self.cfg.latency["notify"]
        line = [Signal(name=f"notify_d{i + 1}") for i in range(n)]
        any_notify = Signal()
        m.d.comb += any_notify.eq(Cat(icu.notify for icu in icus).any())
        fire = line[-1]
        with m.If(icu_start):
            m.d.sync += [x.eq(0) for x in line]
        with m.Elif(~hold):
            m.d.sync += line[0].eq(any_notify)
            m.d.sync += [line[i].eq(line[i - 1]) for i in range(1, n)]
        if sl.starts is None:
            for icu in icus:
                m.d.comb += icu.fire.eq(fire)
            return line
        before = line[-2] if n >= 2 else any_notify           # what `fire` takes next cycle (no hold here)
        for s, icu, dom, st in zip(self.cfg.slices, icus, sl.doms, sl.starts):
            copy = Signal(name=f"fire_{s.name}")
            m.d[dom] += copy.eq(Mux(st, 0, before))
            m.d.comb += icu.fire.eq(copy)
        return line

    def _queue_states(self, m, sl, line):
        """``all_halted`` (chip time) and ``deadlock``: every queue halted or parked in SYNC, at
        least one parked, and no NOTIFY on its way."""
        all_halted = Signal()
        deadlock = Signal()
        # (in the ICUs' time: with registered issue, the chip sees it one cycle later)
        deadlock_now = (Cat(icu.halted | icu.parked for icu in sl.icus).all()
                        & Cat(icu.parked for icu in sl.icus).any() & ~Cat(*line).any())
        m.d.comb += all_halted.eq(Cat(st[0] for st in sl.icu_st).all())
        if not self.has_c2c:
            m.d.sync += deadlock.eq(deadlock_now)
        else:
            m.d.comb += deadlock.eq(deadlock_now)
        return all_halted, deadlock

    def _error_flags(self, m, sl, start, counter, all_halted, deadlock, deskew_queue_err, deskew_busy_err):
        """This cycle's error flags (the units' ``err`` pulses, queue errors, deadlock, inflight)
        and the all-halted state the run logic decides on, with the cycle they belong to.  With
        registered issue that is two cycles late (``err_<slice>``/``busy_<slice>`` ..., then
        ``err_seen``/``halted_seen``).  Returns (flags, halted, cycle)."""
        cfg = self.cfg
        ahead = not self.has_c2c
        unit_errs = [u.err.as_value() for u in sl.units]
        unit_busy = [u.busy for u in sl.units]
        queue_err = Cat(st[4] for st in sl.icu_st).any()
        halted_now, deadlock_now = all_halted, deadlock
        # tap registers (hdl/taps.py): the units' err/busy of cycle c come in c + late
        late = 1 if cfg.tap_registers else 0
        if ahead:
            # With registered issue the run logic decides two cycles late: cycle c's unit err/busy
            # vectors, queue states and deadlock are registered per unit in c+1 (no OR across the
            # chip in front of a register yet), OR-ed into ``err_seen`` in c+2, and acted on in c+2
            # with c's counter.  So no unit's combinational err/busy crosses the chip in one cycle.
            # With tap registers each step is one cycle later (the queue states wait a cycle).
            def stage1(name, v):
                r = Signal(len(Value.cast(v)), name=name)
                with m.If(start):
                    m.d.sync += r.eq(0)
                with m.Else():
                    m.d.sync += r.eq(v)
                return r
            unit_errs = [stage1(f"err_{s.name}", e) for s, e in zip(cfg.slices, unit_errs)]
            unit_busy = [stage1(f"busy_{s.name}", b) for s, b in zip(cfg.slices, unit_busy)]
            if late:
                queue_err = stage1("queue_err_t", queue_err)
                all_halted = stage1("halted_t", all_halted)
                deadlock = stage1("deadlock_t", deadlock)
            queue_err = stage1("queue_err_d", queue_err)
            halted_now = stage1("halted_d", all_halted)
            deadlock_now = stage1("deadlock_d", deadlock)
        err_now = Signal(ErrorFlags)
        unit_err = Signal(len(ERROR_BITS))
        acc = 0
        for e in unit_errs:
            acc = acc | e
        m.d.comb += unit_err.eq(acc)
        inflight = halted_now & Cat(*unit_busy).any()
        m.d.comb += err_now.eq(unit_err)
        self._err_now = err_now
        m.d.comb += [
            err_now.queue.eq(unit_err[ERROR_BITS.index("queue")] | queue_err | deskew_queue_err),
            err_now.deadlock.eq(unit_err[ERROR_BITS.index("deadlock")] | deadlock_now),
            err_now.inflight.eq(unit_err[ERROR_BITS.index("inflight")] | inflight | deskew_busy_err),
        ]
        if not ahead:
            return err_now, all_halted, counter
        dec_err = Signal(ErrorFlags, name="err_seen")     # cycle c's errors, in c+2
        dec_halted = Signal(name="halted_seen")
        with m.If(start):
            m.d.sync += [dec_err.eq(0), dec_halted.eq(0)]
        with m.Else():
            m.d.sync += [dec_err.eq(err_now), dec_halted.eq(halted_now)]
        return dec_err, dec_halted, (counter - 2 - late)[:32]

    def _stop(self, m, sl, icu_start, start, stopped, stop_next, any_err, stop_nexts=None, running=None,
              dec_halted=None):
        """The ICUs' ``stop``: at once (C2C chips), or three cycles late (err_*, err_seen,
        ``stopped``); `stopped` also masks the issue registers, so units see at most the issues
        of the two cycles after the error.  With tap registers each slice computes its own
        ``stop_next_<s>`` (= ``stop_next`` in every cycle) from registers in its own domain:
        ``start_<s>`` (the ICU START), ``start_chip_<s>`` (START of the rest of the chip),
        ``stopped_<s>`` and ``stop_err_<s>`` (= ``any_err``, loaded a cycle ahead with the run
        state's next values: running_next & err_seen_next != 0), so no chip-wide net gates the
        issue registers (the routed critical path of seed 2 at b18c578, 68.12 MHz, ran from
        err_seen through the one stop_next to an issue register across the die)."""
        icus = sl.icus
        if self.has_c2c:
            for icu in icus:
                m.d.comb += icu.stop.eq(any_err)
            return
        m.d.comb += stop_next.eq(Mux(icu_start | start, 0, stopped | any_err))
        m.d.sync += stopped.eq(stop_next)
        if sl.starts is not None:
            # any_err of the next cycle: running_next = start | running & ~any_err & ~dec_halted
            # (``_run_state``), err_seen_next = 0 on start, else err_now
            err_next = Signal(name="stop_err_next")
            m.d.comb += err_next.eq(~start & running & ~any_err & ~dec_halted & (self._err_now.as_value() != 0))
            for s, icu, dom, st, sn in zip(self.cfg.slices, icus, sl.doms, sl.starts, stop_nexts):
                copy = Signal(name=f"stopped_{s.name}")
                st_chip = Signal(name=f"start_chip_{s.name}")
                err = Signal(name=f"stop_err_{s.name}")
                m.d.comb += sn.eq(Mux(st | st_chip, 0, copy | err))
                m.d[dom] += [copy.eq(sn), st_chip.eq(st), err.eq(err_next)]
                m.d.comb += icu.stop.eq(copy)
            return
        for icu in icus:
            m.d.comb += icu.stop.eq(stopped)

    def _run_state(self, m, run, sl, icu_start, start, hold, any_err, dec_err, dec_halted, dec_cycle):
        """START, the program counter, the last HALT, and the end of the run (done, the sticky
        flags and the cycle count)."""
        if not self.has_c2c:
            with m.If(icu_start):
                m.d.sync += run.done.eq(0)           # the host must not read the last run's result now
        with m.If(start):
            m.d.sync += [run.running.eq(1), run.done.eq(0), run.counter.eq(0), run.last_halt_p1.eq(0),
                         run.errors.eq(0), run.result_cycles.eq(0)]
        with m.Elif(run.running):
            with m.If(~hold):
                m.d.sync += run.counter.eq(run.counter + 1)
            with m.If(Cat(st[3] for st in sl.icu_st).any()):
                m.d.sync += run.last_halt_p1.eq(run.counter + 1)
            with m.If(any_err):
                m.d.sync += [run.errors.eq(run.errors.as_value() | dec_err.as_value()), run.running.eq(0),
                             run.done.eq(1), run.result_cycles.eq(dec_cycle)]
            with m.Elif(dec_halted):
                m.d.sync += [run.running.eq(0), run.done.eq(1), run.result_cycles.eq(run.last_halt_p1)]

    def _c2c(self, m, c2c, icus, units, start, running, counter, hold, stall, queue_err, busy_err):
        """Links, the aligned counter and DESKEW (module docstring)."""
        from tinylpu.hdl.c2c import LinkRX, LinkTX
        cfg = self.cfg
        P = cfg.c2c_ports
        at = Signal(32)                     # aligned time: every clock since START
        with m.If(start):
            m.d.sync += at.eq(0)
        with m.Else():
            m.d.sync += at.eq(at + 1)
        rxs = []
        for p in range(P):
            tx = LinkTX(cfg, domain="sync")
            rx = LinkRX(cfg, domain="sync", rec_domain=f"rxrec{p}")
            m.submodules[f"link_tx{p}"] = tx
            m.submodules[f"link_rx{p}"] = rx
            rxs.append(rx)
            wiring.connect(m, tx.wire, wiring.flipped(self.tx[p]))
            wiring.connect(m, wiring.flipped(self.rx[p]), rx.wire)
            m.d.comb += [
                tx.send_valid.eq(c2c.tx_valid[p]), tx.send_data.eq(c2c.tx_data[p]), tx.hac.eq(at),
                tx.send_count.eq(c2c.tx_count[p]),
                c2c.tx_overrun[p].eq(tx.overrun),
                rx.hac.eq(at), rx.flip.eq(0),
                c2c.rx_valid[p].eq(rx.recv_valid), c2c.rx_data[p].eq(rx.recv_data),
                c2c.rx_error[p].eq(rx.error),
                self.link[p].overrun.eq(tx.overrun),
            ]
            m.d.comb += [getattr(self.link[p], n).eq(getattr(rx, n)) for n in LINK_STATUS]
        ref = Signal(32)                    # this chip's estimate of chip 0's aligned time
        offset = Signal.like(rxs[0].hac_offset)     # 0 on the reference (``deskew_ref`` 0)
        with m.Switch(self.deskew_ref):
            for p in range(P):
                with m.Case(p + 1):
                    m.d.comb += offset.eq(rxs[p].hac_offset)
        m.d.comb += ref.eq(at - offset)

        E = cfg.link["epoch"]
        lg = E.bit_length() - 1
        M = deskew_margin(cfg)
        any_deskew = Cat(icu.deskewed for icu in icus).any()
        boundary = Signal()
        target = Signal(32)
        late = Signal(32)
        release = Signal()
        m.d.comb += [
            boundary.eq(running & any_deskew & (counter[:lg] == 0)),
            target.eq(counter + (counter >> lg) * M),
            late.eq(ref - target),
            queue_err.eq(boundary & ~Cat(icu.halted | icu.deskewed for icu in icus).all()),
            release.eq(boundary & ~late[31]),
            # (checked while holding: in the release cycle the queues' first issues make units busy)
            busy_err.eq(boundary & ~release & Cat(u.busy for u in units).any()),
            hold.eq(boundary & late[31] & ~queue_err & ~busy_err),
        ]
        for icu in icus:
            m.d.comb += icu.deskew_go.eq(release)
        with m.If(start):
            m.d.sync += stall.eq(0)
        with m.Elif(hold):
            m.d.sync += stall.eq(stall + 1)
