"""The host API: ``Chip`` and ``Tray``, async, over one ``Engine`` interface (``sim.host.engine``).

One API, several engines, the same answers::

    chip = Chip("tiny", engine="golden")               # or "rtl", "amaranth", "uart"
    await chip.load(compile_moe(experts, cfg, tokens))  # weights resident once
    out = await chip.run(xq, expert=1)                  # RunOutput(y int8, cycles, ...)
    await chip.load(compile_moe(experts, cfg, [1, 2, 4, 8]))   # a program per token count, one image
    out = await chip.run(xq[:3], expert=1)              # runs the 4-token program (3 rows + 1 zero row)
    out = run_compiled(compiled, xq, engine="rtl")      # the same, synchronously, for one call

* ``golden``: a persistent golden model per chip.
* ``rtl`` with a ``dut``: the host code runs INSIDE the cocotb test coroutine and drives the chip's
  host port (Glasgow's simulation-assembly pattern), so a whole interactive decode loop runs
  against the Verilog in one simulator launch.  ``run_in_simulation("module:function", args,
  config)`` launches a coroutine ``function(dut, **args)`` inside the simulator and returns its
  JSON result.
* ``rtl`` without a ``dut`` (outside a simulation): each ``run`` is one simulator launch
  (``sim.rtl.runner.run_cases_rtl``; slow, but the same protocol and the same answers).
* ``amaranth``: the chip under Amaranth's simulator; ``uart``: a board running the FPGA top.

``Tray(chips, config)``: one ``Chip`` per tray position, each with its own resident image.

* Golden: every chip is its own golden model.
* RTL, ``config`` a tray config (``chips`` > 1 in the YAML, e.g. ``duo`` or ``tray``): the DUT is
  the tray's Verilog (``hdl.tray.Tray``, top ``tinylpu_tray``; ``run_in_simulation`` builds it
  for such configs).  Every chip has its own clock (period from the config's ``ppm``), its own
  host port and its own resident weights; ``run_parallel`` drives the chips' host ports
  concurrently, so the chips of one tray step compute at the same simulated time.
* RTL, ``config`` a single-chip config (``tiny``): the chips TIME-SHARE ONE simulated chip.  The
  DUT holds one chip's image at a time; switching chips rewrites that chip's MEM image through the
  host port (host-port time, not chip time: the cycle counts are the chip's own).

The expert-parallel calls of one tray step are independent single-chip programs (no C2C traffic),
so the answers and cycle counts are what the tray's chips produce; the link hops are modelled by
the caller (``sim.serving.lpu``).
"""

from dataclasses import dataclass, field

import numpy as np

from tinylpu.config import load_config
from tinylpu.sim.host.engine import Engine, EngineError, RtlPort, RunOutput, TrayPorts, make_engine

__all__ = ["Chip", "Tray", "TrayRun", "RunOutput", "EngineError", "RtlPort", "run_in_simulation", "drive",
           "run_compiled"]


def drive(coro):
    """Run a host-API coroutine to completion outside a simulator (golden engine or launch-per-call
    RTL): nothing in the API awaits an asyncio primitive, so stepping the coroutine is enough."""
    try:
        coro.send(None)
    except StopIteration as e:
        return e.value
    coro.close()
    raise EngineError("the coroutine awaited a simulator trigger outside a simulation "
                      "(RTL with a dut must run inside run_in_simulation)")


def run_compiled(compiled, xq, engine="golden", check_cycles=True, **kw) -> RunOutput:
    """One synchronous call: a fresh ``Chip`` of the compiled layer's config on `engine` (keywords go
    to ``Chip``), the layer made resident once, its runs (``Compiled.runs``: one per chunk of tokens)
    on int8 tokens `xq`.  With ``check_cycles`` every run's measured cycle count must equal the
    compiler's prediction (``EngineError`` otherwise)."""
    chip = Chip(compiled.cfg, engine, **kw)
    drive(chip.load(compiled))
    out = drive(chip.run(xq))
    if check_cycles:
        for i, (got, r) in enumerate(zip(out.run_cycles, compiled.runs)):
            if got != r.predicted_cycles:
                raise EngineError(f"run {i} of {len(compiled.runs)} (tokens {r.token0}..{r.token0 + r.tokens - 1}): "
                                  f"{chip.engine} measured {got} cycles, the compiler predicted {r.predicted_cycles}")
    return out


def _as_list(compiled):
    return list(compiled) if isinstance(compiled, (list, tuple)) else [compiled]


def _programs(c):
    """One resident expert -> its programs, ascending token counts: a ``Compiled`` is one program, a
    ``compiler.Programs`` (``compile_moe`` with a list of token counts) one per count."""
    return tuple(c.programs) if hasattr(c, "programs") else (c,)


def _image_rows(compiled):
    """The resident MEM image of a compiled set: {bank: [(addr, int8 vectors)]}."""
    img = {}
    for bank, lst in compiled[0].mem_image.items():
        for addr, v in lst:
            img.setdefault(bank, []).append((int(addr), np.asarray(v, np.int8)))
    return img


class Chip:
    """One chip: ``await load(compiled or [compiled per expert])``, ``await run(xq, expert=k)``.

    An expert may be a ``Programs`` (``compile_moe`` with a list of token counts): ``run`` then picks
    the program with the fewest tokens that holds the call's, padding only up to its count.

    ``engine``: a name from ``engine.ENGINES`` (golden, rtl, amaranth, uart), made into an
    ``Engine`` by ``make_engine``; or an ``Engine`` object.  ``dut`` (inside a cocotb simulation),
    ``port`` (a shared ``RtlPort``), ``sim``/``waves`` (rtl launches) and ``transport``/``device``/
    ``baud``/``timeout_s`` (uart) and ``reference`` (golden: the per-cycle ``Golden`` instead of
    ``FastGolden``) are passed on to ``make_engine``."""

    def __init__(self, config="tiny", engine="golden", *, dut=None, port=None, sim="icarus", waves=False,
                 name="chip", transport=None, device=None, baud=115200, timeout_s=5.0, reference=False):
        self.cfg = load_config(config)
        if isinstance(engine, Engine):
            self.backend = engine
        else:
            self.backend = make_engine(engine, self.cfg, dut=dut, port=port, sim=sim, waves=waves,
                                       transport=transport, device=device, baud=baud, timeout_s=timeout_s,
                                       reference=reference)
        self.engine, self.sim, self.name = self.backend.name, sim, name
        self.port = getattr(self.backend, "port", None)
        self.experts = None
        self.image = None
        self.calls = 0
        self.cycles_total = 0
        self.programs_run = {}         # program token count -> (calls, cycles) of ``run``

    async def load(self, compiled):
        """Make a compiled layer (or a ``compile_moe`` list of experts) resident on the chip."""
        experts = [_programs(c) for c in _as_list(compiled)]
        for progs in experts:
            for c in progs:
                if c.cfg.name != self.cfg.name and c.cfg.raw != self.cfg.raw:
                    raise EngineError(f"program compiled for config {c.cfg.name}, chip is {self.cfg.name}")
        if len({id(c.mem_image) for progs in experts for c in progs}) != 1:
            raise EngineError("the experts of one chip must come from one compile_moe call (one MEM image)")
        self.experts, self.image = experts, _image_rows([experts[0][0]])

    def _check(self, xq, expert):
        if self.experts is None:
            raise EngineError(f"{self.name}: no program loaded: call load(compiled) first")
        if not 0 <= expert < len(self.experts):
            raise EngineError(f"{self.name}: expert {expert} is not resident (0..{len(self.experts) - 1})")
        progs = self.experts[expert]
        big = progs[-1]
        xq = np.asarray(xq)
        if xq.ndim != 2 or xq.shape[1] != big.q.d_model or not 1 <= len(xq) <= big.tokens:
            raise EngineError(f"{self.name}: input shape {xq.shape}; expected (1..{big.tokens}, {big.q.d_model}) int8")
        if xq.dtype != np.int8:
            raise EngineError(f"{self.name}: input dtype {xq.dtype}; expected int8")
        c = next(c for c in progs if c.tokens >= len(xq))       # the smallest program that holds them
        return c, xq

    @staticmethod
    def _pad(c, xq):
        """Tokens beyond the batch are zero rows: the program always processes c.tokens tokens."""
        full = np.zeros((c.tokens, c.q.d_model), np.int8)
        full[:len(xq)] = xq
        return full

    async def run(self, xq, expert=0) -> RunOutput:
        """Run resident expert `expert` on int8 tokens xq (n x d_model, n <= compiled tokens; with
        several programs, the one with the fewest tokens >= n): every run of the compiled layer (one per
        chunk of tokens, or several per chunk cut by work) on the resident image, X written before and Y
        read after each, Y assembled by ``Compiled.assemble_output``.  ``cycles`` is
        their sum, ``run_cycles`` each run's; ``programs_run`` counts the calls and cycles per program
        token count."""
        c, xq = self._check(xq, expert)
        n = len(xq)
        full = self._pad(c, xq)
        jobs = []
        for i, r in enumerate(c.runs):
            budget = max(200_000, 2 * r.predicted_cycles + 10_000)
            jobs.append((r.program, c.pack_input(full, run=i), c.output_reads(i), budget))
        if self.engine == "amaranth" and any(r.work is not None for r in c.runs):
            raise EngineError(f"{self.name}: this layer runs cut by work (H left in MEM between runs: "
                              f"Compiled.runs); the amaranth engine starts every run from a fresh MEM")
        results = await self.backend.run_many(self, self.image, jobs)
        y = c.assemble_output([lambda bank, addr, k, res=res: res.reads[(bank, addr)][:k] for res in results])
        cycles = [int(res.cycles) for res in results]
        self.calls += 1
        self.cycles_total += sum(cycles)
        calls, cyc = self.programs_run.get(c.tokens, (0, 0))
        self.programs_run[c.tokens] = (calls + 1, cyc + sum(cycles))
        return RunOutput(y[:n].copy(), sum(cycles), self.engine, results[-1].activity, [], cycles)


@dataclass
class TrayRun:
    outputs: list                  # RunOutput per job, in order
    cycles: int                    # the slowest chip of the step (chips run in parallel)
    per_chip_cycles: dict = field(default_factory=dict)


class Tray:
    """`chips` chips of config `config`, expert parallel: ``await load([compiled set per chip])``,
    ``await run(chip, xq, expert)`` for one chip, ``await run_parallel(jobs)`` for one tray step.

    With a tray config (``chips`` > 1 in its YAML) the tray has exactly that many chips, and the RTL
    engine needs the tray's Verilog as its ``dut`` (see the module docstring)."""

    def __init__(self, chips=None, config="tiny", engine="golden", *, dut=None, sim="icarus"):
        self.cfg = load_config(config)
        if self.cfg.chips > 1:
            if chips not in (None, self.cfg.chips):
                raise EngineError(f"config {self.cfg.name} is a tray of {self.cfg.chips} chips, not {chips}")
            chips = self.cfg.chips
        chips = 8 if chips is None else chips
        if chips < 1:
            raise EngineError("a tray needs at least one chip")
        self.engine = engine
        self.ports = None
        if engine == "rtl" and dut is not None:
            if self.cfg.chips > 1:
                self.ports = TrayPorts(dut, self.cfg)
                ports = self.ports.ports
            else:
                ports = [RtlPort(dut, self.cfg)] * chips
        else:
            ports = [None] * chips
        self.port = ports[0]
        self.chips = [Chip(self.cfg, engine, port=ports[i], sim=sim, name=f"chip{i}") for i in range(chips)]

    def __len__(self):
        return len(self.chips)

    @property
    def rtl_tray(self):
        """True when the chips are the tray's own RTL chips (not one time-shared chip)."""
        return self.ports is not None

    async def load(self, per_chip):
        if len(per_chip) > len(self.chips):
            raise EngineError(f"{len(per_chip)} chip images for a tray of {len(self.chips)} chips")
        for chip, comp in zip(self.chips, per_chip):
            if comp:
                await chip.load(comp)

    async def run(self, chip, xq, expert=0) -> RunOutput:
        if not 0 <= chip < len(self.chips):
            raise EngineError(f"no chip {chip} in a tray of {len(self.chips)}")
        return await self.chips[chip].run(xq, expert)

    async def run_parallel(self, jobs) -> TrayRun:
        """jobs: [(chip, expert, xq)]; a chip given several jobs runs them back to back.  On the RTL
        tray the chips run concurrently (one cocotb task per chip, each on its own host port)."""
        jobs = list(jobs)
        outs = [None] * len(jobs)
        by_chip = {}
        for k, (chip, _, _) in enumerate(jobs):
            by_chip.setdefault(chip, []).append(k)

        async def chip_jobs(chip, ks):
            for k in ks:
                outs[k] = await self.run(chip, jobs[k][2], jobs[k][1])

        if self.rtl_tray:
            import cocotb
            failures = []

            async def guarded(chip, ks):      # an exception in a task would end the whole test
                try:
                    await chip_jobs(chip, ks)
                except Exception as e:
                    failures.append(e)

            tasks = [cocotb.start_soon(guarded(c, ks)) for c, ks in by_chip.items()]
            for t in tasks:
                await t
            if failures:
                raise failures[0]
        else:
            for c, ks in by_chip.items():
                await chip_jobs(c, ks)
        per = {c: sum(outs[k].cycles for k in ks) for c, ks in by_chip.items()}
        return TrayRun(outs, max(per.values(), default=0), per)

    @property
    def stats(self):
        d = {"calls": sum(c.calls for c in self.chips), "chip_cycles": sum(c.cycles_total for c in self.chips)}
        runs = {}
        for c in self.chips:
            for t, (n, cyc) in c.programs_run.items():
                a, b = runs.get(t, (0, 0))
                runs[t] = (a + n, b + cyc)
        # program token count -> [calls, chip cycles] (the programs run, ``Chip.run``'s pick)
        d["by_program_tokens"] = {t: list(runs[t]) for t in sorted(runs)}
        if self.rtl_tray:
            d.update(rtl_tray=True, dut_reloads=sum(p.reloads for p in self.ports.ports))
        elif self.port is not None:
            d.update(shared_dut=True, **self.port.stats)
        return d


# ------------------------------------------------------------------------------------------------
# Launch a host coroutine inside the simulator
# ------------------------------------------------------------------------------------------------

def run_in_simulation(entry, args, config="tiny", sim=None):
    """Run ``await module.function(dut, **args)`` inside ONE cocotb simulation of the chip (or, for
    a tray config, of the whole tray) and return its (JSON-serializable) result.  `entry` is
    "package.module:function"."""
    from tinylpu.sim.rtl.build import CHIP_TOP, TRAY_TOP, build_tray_verilog, build_verilog
    from tinylpu.sim.rtl.launch import launch
    cfg = load_config(config)
    vfile, top = (build_tray_verilog(cfg), TRAY_TOP) if cfg.chips > 1 else (build_verilog(cfg), CHIP_TOP)
    run = launch(vfile, top, "tinylpu.sim.rtl.cocotb_host", cfg=cfg, payload={"entry": entry, "args": args},
                 sim=sim, error=EngineError)
    doc = run.result
    if doc is None:
        raise EngineError(f"the simulation produced no result\n{run.log}")
    if "error" in doc:
        raise EngineError(f"inside the simulation: {doc['error']}")
    return doc["result"]
