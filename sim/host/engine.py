"""One ``Engine`` interface behind the host API, and its implementations.

An engine is one chip's backend.  It holds a resident MEM image (a compiled layer's weights) and
runs programs on it::

    result = await engine.run(owner, image, program, inputs, reads)

* ``owner``: whose ``image`` is meant; an engine shared by several host ``Chip`` objects (a
  simulated chip standing in for all the chips of a tray) rewrites the image only when the owner
  changes;
* ``image`` / ``inputs``: ``{bank name: [(addr, int8 vectors)]}``, the resident weights and this
  call's activations;
* ``reads``: ``[(bank name, addr, n vectors)]``; the result's ``reads`` maps ``(bank, addr)`` to
  int8 arrays.

The engines, chosen by name in one place (``make_engine``):

==========  ======================================================================================
golden      the golden model (``sim.golden``: ``FastGolden``, tested against the per-cycle
            ``Golden``), in-process, persistent per chip
rtl         the chip's Verilog under cocotb (Icarus or Verilator).  With a ``dut`` (host code
            running inside a cocotb test) it drives the chip's host port directly (``RtlPort``);
            without one, every run is one simulator launch (``sim.rtl.runner``)
amaranth    the chip under Amaranth's own simulator, through its host port (``sim.rtl.pysim``)
uart        a board running the FPGA top (``hdl/fpga_top.py``) behind a serial port or any byte
            transport (``sim.host.uart``)
==========  ======================================================================================
"""

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from tinylpu.config import load_config
from tinylpu.wire import Cmd, command

# under cocotb's logger, so that a simulation's log shows the host's progress
_LOG = logging.getLogger("cocotb.tinylpu.host")

__all__ = ["Engine", "EngineError", "EngineResult", "RunOutput", "ENGINES", "make_engine", "GoldenEngine",
           "LaunchEngine", "AmaranthEngine", "PortEngine", "RtlPort", "TrayPorts"]

#: engine names accepted by the host API
ENGINES = ("golden", "rtl", "amaranth", "uart")


class EngineError(RuntimeError):
    pass


@dataclass
class RunOutput:
    y: np.ndarray          # int8 tokens x d_model
    cycles: int
    engine: str
    activity: dict = None
    errors: list = None
    run_cycles: list = None    # per run of the layer (Compiled.runs), in order


@dataclass
class EngineResult:
    cycles: int
    reads: dict                                   # (bank, addr) -> int8 array (n x lanes)
    activity: dict = field(default=None)          # per-slice activity counters (golden only)


def _merge(image, inputs):
    rows = {}
    for bank, lst in list(image.items()) + list(inputs.items()):
        rows.setdefault(bank, []).extend((int(a), np.asarray(v, np.int8)) for a, v in lst)
    return rows


def _flagged(errors):
    if errors:
        raise EngineError(f"the chip flagged program errors: {', '.join(errors)}")


class Engine(ABC):
    """One chip's backend (see the module docstring)."""
    name = "?"

    def __init__(self, cfg):
        self.cfg = cfg

    @abstractmethod
    async def run(self, owner, image, program, inputs, reads, max_cycles=200_000) -> EngineResult:
        """Make `owner`'s `image` resident if it is not, write `inputs`, run `program`, read `reads`."""

    async def run_many(self, owner, image, jobs) -> list:
        """Several runs on one resident image, in order: jobs [(program, inputs, reads, max_cycles)]
        (a layer whose tokens run in chunks).  One ``EngineResult`` per job."""
        return [await self.run(owner, image, program, inputs, reads, max_cycles)
                for program, inputs, reads, max_cycles in jobs]

    @property
    def stats(self):
        return {}


class GoldenEngine(Engine):
    """The golden model, one persistent model per engine: MEM and unit state persist between runs.
    The fast path (``FastGolden``) by default; ``reference=True`` runs the per-cycle ``Golden``."""
    name = "golden"

    def __init__(self, cfg, reference=False):
        super().__init__(cfg)
        from tinylpu.sim.golden.chip import Golden
        from tinylpu.sim.golden.fast import FastGolden
        self.g = (Golden if reference else FastGolden)(cfg)
        self.resident = None

    async def run(self, owner, image, program, inputs, reads, max_cycles=200_000):
        g = self.g
        rows = inputs if self.resident is owner else _merge(image, inputs)
        self.resident = owner
        g.write_image(rows)                      # (each bank's pieces in one copy)
        g.load_program(program)
        r = g.run(max_cycles=max_cycles) if max_cycles else g.run()
        return EngineResult(r.cycles, {(b, a): g.read_mem(b, a, n) for b, a, n in reads}, r.activity)


class LaunchEngine(Engine):
    """The chip's Verilog under cocotb, one simulator launch per run (the image is sent every time)."""
    name = "rtl"

    def __init__(self, cfg, sim="icarus", waves=False):
        super().__init__(cfg)
        self.sim, self.waves = sim, waves
        self.launches = 0

    async def run(self, owner, image, program, inputs, reads, max_cycles=200_000):
        (res,) = await self.run_many(owner, image, [(program, inputs, reads, max_cycles)])
        return res

    async def run_many(self, owner, image, jobs):
        """All runs in ONE simulator launch: the first case writes the image, the later ones their
        inputs and the image rows the scrub before every case overwrites (MEM keeps what earlier
        cases left; every case starts from reset and scrub)."""
        from tinylpu.sim.rtl.runner import run_cases_rtl, scrub_program
        _, scrub_rows, _ = scrub_program(self.cfg)
        names = {s.index: s.name for s in self.cfg.slices_of("mem")}
        hit = {(names[b], a + k) for b, a, vecs in scrub_rows for k in range(len(vecs))}
        again = {}                                  # the image rows the scrub clobbers
        for bank, lst in image.items():
            for addr, v in lst:
                for k in range(len(v)):
                    if (bank, int(addr) + k) in hit:
                        again.setdefault(bank, []).append((int(addr) + k, np.asarray(v, np.int8)[k:k + 1]))
        cases = [{"program": program, "mem": _merge(image, inputs) if i == 0 else _merge(again, inputs),
                  "read": list(reads), "max_cycles": max_cycles}
                 for i, (program, inputs, reads, max_cycles) in enumerate(jobs)]
        results = run_cases_rtl(self.cfg, cases, sim=self.sim, waves=self.waves)
        self.launches += 1
        out = []
        for (_, _, reads, _), res in zip(jobs, results):
            _flagged(res.get("errors"))
            if res.get("timeout"):
                raise EngineError(f"the chip did not halt within the cycle budget ({res['cycles']} cycles run)")
            out.append(EngineResult(res["cycles"], {(b, a): x for (b, a, _), x in zip(reads, res["mem"])}))
        return out

    @property
    def stats(self):
        return {"simulator_launches": self.launches}


class AmaranthEngine(Engine):
    """The chip under Amaranth's simulator (no Verilog tools), one fresh simulation per run."""
    name = "amaranth"

    async def run(self, owner, image, program, inputs, reads, max_cycles=200_000):
        from tinylpu.sim.rtl.pysim import run_case_pysim
        rows = {b: [(a, v.astype(int).tolist()) for a, v in lst] for b, lst in _merge(image, inputs).items()}
        res = run_case_pysim(self.cfg, program, rows, reads, max_cycles=max_cycles)
        if res.get("timeout"):
            raise EngineError(f"the chip did not halt within {max_cycles} cycles")
        _flagged(res.get("errors"))
        return EngineResult(res["cycles"], {(b, a): np.asarray(x, np.int8).reshape(-1, self.cfg.lanes)
                                            for (b, a, _), x in zip(reads, res["reads"])})


class RtlPort:
    """One chip's host port, reached through a ``HostProtocol`` transport: the chip's pins inside a
    cocotb simulation (``sim.rtl.cocotb_chip.Host``), or a board's UART.  Shared by every host
    ``Chip`` bound to it; tracks whose MEM image is resident so a chip's weights are rewritten only
    when another chip used the port in between.  Counts calls and reloads for reports."""

    def __init__(self, dut, cfg, period_ps=10_000, group=None, host=None):
        if host is None:
            from tinylpu.sim.rtl.cocotb_chip import Host
            host = Host(dut, cfg)
        self.cfg = cfg
        self.host = host              # a HostProtocol: cocotb pins, or a board's UART (host given)
        self.dut = dut                # the chip's pins (a tray chip: ``cocotb_tray.Pins``); None: a board
        self.period_ps = period_ps
        self.group = group            # the TrayPorts this port belongs to (powered on together)
        self.resident = None          # the owner whose image is in MEM
        self.started = False
        self.reloads = 0
        self.calls = 0
        self.backdoor_vectors = 0     # image vectors written through the simulator's bank handles
        self.backdoor_words = 0       # queue words written through the simulator's queue handles
        # simulated clocks by phase (a simulation only): where a run's host-port time goes
        self.clocks = dict.fromkeys(("power_on", "program", "image", "inputs", "run", "reads"), 0)

    async def power_on(self):
        """Reset and scrub once: unit state equals the golden model's power-on state."""
        if self.group is not None:
            return await self.group.power_on()
        if self.dut is None:          # a board: no reset line, the scrub program alone
            return await self._scrub()
        self.start_clock()
        await self._reset_and_scrub()

    def start_clock(self):
        from cocotb.clock import Clock
        d = self.dut
        d.cmd__valid.value = 0
        d.resp__ready.value = 0
        d.rst.value = 1
        Clock(d.clk, self.period_ps, unit="ps", period_high=self.period_ps // 2).start(start_high=False)

    async def _reset_and_scrub(self):
        await self.host.edge()
        await self.host.reset()
        await self._scrub()

    async def _scrub(self):
        from tinylpu.sim.host.proto import ScrubError, run_scrub
        from tinylpu.sim.rtl.runner import scrub_program
        sp, writes, restore = scrub_program(self.cfg)
        try:
            await run_scrub(self.host, self.cfg, {"program": sp.to_bytes().hex(), "mem": writes, "restore": restore})
        except ScrubError as e:
            raise EngineError(str(e)) from None
        self.started = True

    def _clock(self):
        if self.dut is None:
            return 0
        from tinylpu.sim.rtl.cocotb_chip import sim_clocks
        return sim_clocks(self.dut, self.period_ps)

    def _phase(self, name, t0):
        """Charge the clocks since `t0` to phase `name` and log it (a long simulation's progress, in
        the simulator's log); the clock now."""
        t = self._clock()
        self.clocks[name] += t - t0
        if self.dut is not None:
            _LOG.info("call %d: %s took %d clocks (now at clock %d)",
                                                   self.calls, name, t - t0, t)
        return t

    async def run(self, owner, image, program, inputs, reads, max_cycles=200_000):
        t = self._clock()
        if not self.started:
            if self.dut is not None:
                _LOG.info("power on: reset and scrub")
            await self.power_on()
            t = self._phase("power_on", t)
        h, cfg = self.host, self.cfg
        await h.edge()                # Host methods start just after a falling edge of THIS chip's clock
        await self._load_program(program)
        t = self._phase("program", t)
        if self.resident is not owner:
            await self._load_image(image)
            self.resident = owner
            self.reloads += 1
            t = self._phase("image", t)
        for bank, lst in _merge({}, inputs).items():
            for addr, v in lst:
                await h.write_mem(cfg.slice(bank).index, addr, np.asarray(v).astype(int).tolist())
        t = self._phase("inputs", t)
        await h.start()
        st = await self._wait_done(max_cycles)
        if st["timeout"]:
            raise EngineError(f"the chip did not halt within {max_cycles} cycles")
        _flagged(st["errors"])
        t = self._phase("run", t)
        out = {}
        for bank, addr, n in reads:
            out[(bank, addr)] = np.asarray(await h.read_mem(cfg.slice(bank).index, addr, n), np.int8)
        self._phase("reads", t)
        self.calls += 1
        return EngineResult(st["cycles"], out)

    #: in a simulation, the run's progress is logged every this many cycles
    PROGRESS_CYCLES = 4096

    async def _wait_done(self, max_cycles):
        """``wait_done``; in a simulation, logging the chip's cycle counter every
        ``PROGRESS_CYCLES`` cycles (a 64-lane chip under Icarus runs ~10-60 cycles/s)."""
        if self.dut is None:
            return await self.host.wait_done(max_cycles, poll=16, max_poll=128)
        upto = self.PROGRESS_CYCLES
        while True:
            st = await self.host.wait_done(min(upto, max_cycles), poll=16, max_poll=128)
            if not st["timeout"] or st["cycles"] > max_cycles:
                return st
            _LOG.info("call %d: running, chip cycle %d", self.calls, st["cycles"])
            upto = st["cycles"] + self.PROGRESS_CYCLES

    #: a queue of more words than this is written straight into the simulated queue array
    BACKDOOR_WORDS = 64

    async def _load_program(self, program):
        """Every slice's queue through the host port (a clock per instruction word: a SmolLM2 decode
        layer is ~14,900 words, twice its run), except that in a simulation of the chip top a queue
        of more than ``BACKDOOR_WORDS`` words has its middle written straight into the simulated
        queue array: LOAD_QUEUE sends words 0-1 (which the ICU also keeps in registers) and, after
        the backdoor writes, the last word at its index, which sets the queue's length.  The run
        that follows checks the words: its cycles and results are compared with the golden model."""
        from tinylpu.isa import encode
        h, cfg = self.host, self.cfg
        queues = None
        if self.dut is not None and any(len(v) > self.BACKDOOR_WORDS for v in program.queues.values()):
            from tinylpu.sim.rtl.cocotb_chip import backdoor_queues
            queues = backdoor_queues(self.dut, cfg)
        if queues is None:
            return await h.load_program(program)
        for s in cfg.slices:
            words = [encode(i) for i in program.queues.get(s.name, [])]
            if len(words) <= max(self.BACKDOOR_WORDS, 3):
                await h.load_queue(s.position, words)
                continue
            n = len(words)
            await h.send([command(Cmd.LOAD_QUEUE, s.position, 0, 2)] + words[:2])
            for i in range(2, n - 1):
                queues[s.name][i].value = words[i]
            await h.edge()
            await h.send([command(Cmd.LOAD_QUEUE, s.position, n - 1, 1), words[-1]])
            self.backdoor_words += n - 3

    @property
    def stats(self):
        return {"dut_reloads": self.reloads, "backdoor_vectors": self.backdoor_vectors,
                "backdoor_words": self.backdoor_words, "host_port_clocks": dict(self.clocks)}

    #: a resident image of more vectors than this is written straight into the simulated banks
    BACKDOOR_VECTORS = 4096

    async def _load_image(self, image):
        """Write a resident image through the host port (8L/64 words and a clock per word, so a
        SmolLM2 layer's 2.65 MB would take ~330,000 simulated cycles and minutes of cocotb); in a
        simulation of the chip top, an image of more than ``BACKDOOR_VECTORS`` vectors goes
        straight into the bank arrays instead, and each bank's first and last vector written are read
        back through the host port and compared before the image is trusted."""
        h, cfg = self.host, self.cfg
        rows = _merge(image, {})
        n = sum(len(v) for lst in rows.values() for _, v in lst)
        banks = None
        if self.dut is not None and n > self.BACKDOOR_VECTORS:
            from tinylpu.sim.rtl.cocotb_chip import backdoor_banks, backdoor_write
            banks = backdoor_banks(self.dut, cfg)
        if banks is None:
            for bank, lst in rows.items():
                for addr, v in lst:
                    await h.write_mem(cfg.slice(bank).index, addr, v.astype(int).tolist())
            return
        for bank, lst in rows.items():
            for addr, v in lst:
                backdoor_write(banks[bank], addr, v)
        await h.edge()
        for bank, lst in rows.items():                  # per bank: its first and its last vector written
            (a0, v0), (a1, v1) = lst[0], lst[-1]
            for addr, v in ((a0, v0[0]), (a1 + len(v1) - 1, v1[-1])):
                got = np.asarray(await h.read_mem(cfg.slice(bank).index, addr, 1), np.int8)[0]
                if not np.array_equal(got, v):
                    raise EngineError(f"backdoor image load: {bank}[{addr}] reads back {got.tolist()}, "
                                      f"expected {v.tolist()} (the simulator did not take the write)")
        self.backdoor_vectors += n


class PortEngine(Engine):
    """An engine over an ``RtlPort`` (cocotb pins of a running simulation, or a board's UART)."""

    def __init__(self, cfg, port, name="rtl"):
        super().__init__(cfg)
        self.port, self.name = port, name

    async def run(self, owner, image, program, inputs, reads, max_cycles=200_000):
        return await self.port.run(owner, image, program, inputs, reads, max_cycles)

    @property
    def stats(self):
        return self.port.stats


class TrayPorts:
    """The host ports of the RTL tray top (``tinylpu_tray``): one ``RtlPort`` per chip, each on its
    own clock (period 10 ns x (1 + ppm x 1e-6) from the config), powered on together."""

    def __init__(self, dut, cfg):
        from tinylpu.sim.rtl.cocotb_tray import Pins
        from tinylpu.sim.rtl.tray import period_ps
        self.dut, self.cfg = dut, cfg
        self.ports = [RtlPort(Pins(dut, f"chip{i}_"), cfg, period_ps(cfg.ppm[i]), self) for i in range(cfg.chips)]
        self.powering = None              # a cocotb Event while (and after) the tray powers on

    async def power_on(self):
        """The first caller powers every chip on; concurrent callers wait until it is done."""
        import cocotb
        from cocotb.triggers import Event
        if self.powering is not None:
            await self.powering.wait()
            return
        self.powering = Event()
        self.dut.start.value = 0          # the START broadcast is not used: every chip starts by its host
        for p in self.ports:
            p.start_clock()
        tasks = [cocotb.start_soon(p._reset_and_scrub()) for p in self.ports]
        for t in tasks:
            await t
        self.powering.set()


def make_engine(name, config, *, dut=None, port=None, sim="icarus", waves=False, transport=None, device=None,
                baud=115200, timeout_s=5.0, reference=False) -> Engine:
    """The one place an engine name becomes an engine (see the module docstring for the names)."""
    cfg = load_config(config)
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r}: use one of {', '.join(ENGINES)}")
    if port is not None:
        return PortEngine(cfg, port, name)
    if name == "golden":
        return GoldenEngine(cfg, reference)
    if name == "amaranth":
        return AmaranthEngine(cfg)
    if name == "uart":
        from tinylpu.sim.host.uart import UartHost, open_board
        if transport is None:
            if device is None:
                raise EngineError("engine uart needs device='/dev/ttyUSB..' or a transport")
            transport = open_board(device, baud)
        return PortEngine(cfg, RtlPort(None, cfg, host=UartHost(cfg, transport, timeout_s=timeout_s)), "uart")
    if sim not in ("icarus", "verilator"):
        raise EngineError(f"unknown simulator {sim!r}: use icarus or verilator")
    if dut is not None:
        return PortEngine(cfg, RtlPort(dut, cfg), "rtl")
    return LaunchEngine(cfg, sim, waves)
