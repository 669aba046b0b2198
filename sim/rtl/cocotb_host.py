"""cocotb test that runs host code inside the simulation (Glasgow's simulation-assembly pattern).

Launched by ``sim.host.api.run_in_simulation`` (through ``sim.rtl.launch``).  Environment:
``TINYLPU_INPUT`` (JSON
``{"entry": "package.module:function", "args": {...}}``) and ``TINYLPU_RESULT`` (where
``{"result": ...}`` or ``{"error": "..."}`` is written).  The entry is awaited as
``function(dut, **args)``: it builds ``Chip``/``Tray`` objects with ``engine="rtl", dut=dut`` and
talks to the chip's host port for as long as it likes, all in this one simulator run.
"""

import importlib
import json
import os
import traceback

import cocotb


@cocotb.test()
async def run_host_job(dut):
    with open(os.environ["TINYLPU_INPUT"]) as f:
        job = json.load(f)
    mod, fn = job["entry"].split(":")
    func = getattr(importlib.import_module(mod), fn)
    try:
        doc = {"result": await func(dut, **job["args"])}
    except Exception as e:           # reported to the launching process, which raises it
        doc = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    with open(os.environ["TINYLPU_RESULT"], "w") as f:
        json.dump(doc, f)
