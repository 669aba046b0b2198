"""Host layer: one API over two engines (golden numpy model, RTL under a simulator).

``Chip(config, engine="golden"|"rtl")``: ``load(compiled)`` makes a compiled layer resident,
``run(xq)`` writes int8 activations into its input regions, runs the program and returns the int8
outputs with the exact cycle count.  The golden engine runs in-process; the RTL engine converts
the chip to Verilog and runs it under cocotb (Icarus or Verilator) through the chip's host port.
"""

from dataclasses import dataclass

import numpy as np

from tinylpu.config import load_config
from tinylpu.sim.golden.chip import Golden

__all__ = ["Chip", "RunOutput", "EngineError"]


class EngineError(RuntimeError):
    pass


@dataclass
class RunOutput:
    y: np.ndarray          # int8 tokens x d_model
    cycles: int
    engine: str
    activity: dict = None
    errors: list = None


class Chip:
    def __init__(self, config="tiny", engine="golden", sim="icarus", waves=False):
        self.cfg = load_config(config)
        if engine not in ("golden", "rtl"):
            raise EngineError(f"unknown engine {engine!r}: use golden or rtl")
        self.engine, self.sim, self.waves = engine, sim, waves
        self.compiled = None

    def load(self, compiled):
        if compiled.cfg.name != self.cfg.name and compiled.cfg.raw != self.cfg.raw:
            raise EngineError(f"program compiled for config {compiled.cfg.name}, chip is {self.cfg.name}")
        self.compiled = compiled

    def _images(self, xq):
        c = self.compiled
        img = {}
        for bank, lst in list(c.mem_image.items()) + list(c.pack_input(xq).items()):
            for addr, v in lst:
                img.setdefault(bank, []).append((addr, np.asarray(v, np.int8)))
        return img

    def run(self, xq) -> RunOutput:
        if self.compiled is None:
            raise EngineError("no program loaded: call load(compiled) first")
        if self.engine == "golden":
            return self._run_golden(xq)
        return self._run_rtl(xq)

    def _run_golden(self, xq):
        c = self.compiled
        g = Golden(self.cfg)
        g.load_program(c.program)
        for bank, lst in self._images(xq).items():
            for addr, v in lst:
                g.write_mem(bank, addr, v)
        r = g.run()
        return RunOutput(c.unpack_output(g.read_mem), r.cycles, "golden", r.activity, [])

    def _run_rtl(self, xq):
        from tinylpu.sim.rtl.runner import run_cases_rtl
        c = self.compiled
        reads = [(r.bank, r.addr, c.tokens) for r in c.y_layout.values()]
        case = {"program": c.program.to_bytes().hex(),
                "mem": {b: [(a, v.tolist()) for a, v in lst] for b, lst in self._images(xq).items()},
                "read": reads}
        (res,) = run_cases_rtl(self.cfg, [case], sim=self.sim, waves=self.waves)
        if res.get("errors"):
            raise EngineError(f"the chip flagged program errors: {', '.join(res['errors'])}")
        got = {}
        for (b, a, n), data in zip(reads, res["mem"]):
            got[(b, a)] = np.asarray(data, np.int8).reshape(n, self.cfg.lanes)

        def read(bank, addr, n):
            return got[(bank, addr)][:n]
        return RunOutput(c.unpack_output(read), res["cycles"], "rtl", None, [])
