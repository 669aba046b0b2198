"""The RTL tray engine: ``hdl.tray.Tray`` (every chip on its own clock) under cocotb + Icarus.

``run_tray_rtl(cfg, programs, mems, reads, ppm=None, sim="icarus")``:

* ``programs``: one ``Program`` per chip (``None``: an empty program, every queue halted);
* ``mems``: per chip ``{bank: vectors | (addr, vectors) | [(addr, vectors), ...]}`` (or None);
* ``reads``: per chip ``[(bank, addr, n), ...]`` (or None);
* ``ppm``: per chip clock offset (default ``cfg.ppm``): chip i's clock period is
  10 ns x (1 + ppm[i] x 1e-6), rounded to a picosecond (so positive ppm = a slower clock).
* ``link_flips``: bit errors injected on the C2C wires (``hdl.tray.LinkInjector``), the same as
  ``GoldenTray(link_flips=...)``: a list ``[(chip, port, index, word, mask), ...]`` (mask bit
  ``width_bits`` = the K flag) or a callable ``f(chip, port, index) -> [(word, mask), ...]``
  (asked for indices below ``flip_scan``).  At most ``hdl.tray.INJECT_ENTRIES`` distinct
  (index, word) per link; ``link_flip_fn`` turns a list into the golden tray's callable.

Returns ``{"chips": [{"cycles", "stall", "done", "running", "timeout", "errors", "error_bits",
"mem": [int8 (n, lanes) per read], "links": [LINK_STATUS dict per port]}, ...], "sim_ns",
"wall_s", "period_ps"}``.  ``cycles`` is in program cycles (the golden model's count: DESKEW's
variable hold is not in it), ``stall`` the cycles DESKEW held the chip.

The Verilog is built once per config into ``build/rtl/<config>-tray/`` (rebuilt when hdl/ or the
config changes).
"""

import time

import numpy as np

from tinylpu.config import load_config
from tinylpu.sim.rtl.build import TRAY_TOP, build_tray_verilog
from tinylpu.sim.rtl.launch import launch
from tinylpu.sim.rtl.runner import normalize_case, scrub_program

__all__ = ["run_tray_rtl", "build_tray_verilog", "period_ps", "link_flip_fn", "inject_entries"]

TOP = TRAY_TOP
NOMINAL_PS = 10_000


def period_ps(ppm):
    return int(round(NOMINAL_PS * (1 + ppm * 1e-6)))


def link_flip_fn(flips):
    """``[(chip, port, index, word, mask), ...]`` as ``GoldenTray``'s ``link_flips`` callable."""
    flips = list(flips)

    def f(chip, port, index):
        return [(w, m) for a, p, i, w, m in flips if (a, p, i) == (chip, port, index)]
    return f


def inject_entries(cfg, link_flips, flip_scan=4096):
    """``{(chip, port): [(index, word, mask), ...]}`` for the tray's injector ports (masks of the
    same (index, word) XOR-ed together)."""
    from tinylpu.hdl.tray import INJECT_ENTRIES, INJECT_INDEX_BITS
    from tinylpu.link import LinkParams
    p = LinkParams.from_cfg(cfg)
    if link_flips is None:
        return {}
    if callable(link_flips):
        flips = [(a, q, i, w, m) for a in range(cfg.chips) for q in range(cfg.c2c_ports)
                 for i in range(flip_scan) for w, m in (link_flips(a, q, i) or [])]
    else:
        flips = list(link_flips)
    acc = {}
    for a, q, i, w, m in flips:
        if not (0 <= a < cfg.chips and 0 <= q < cfg.c2c_ports):
            raise ValueError(f"link flip on chip {a} port {q}: no such link in {cfg.name}")
        most = p.frame_words(p.burst_vectors) if p.burst else p.flit_words
        if not (0 <= w < most and 0 <= m < (1 << (p.width + 1)) and 0 <= i < (1 << INJECT_INDEX_BITS)):
            raise ValueError(f"link flip {(a, q, i, w, m)}: word must be below {most}, mask below "
                             f"2**{p.width + 1}, index below 2**{INJECT_INDEX_BITS}")
        key = (a, q)
        acc.setdefault(key, {})
        acc[key][(i, w)] = acc[key].get((i, w), 0) ^ m
    out = {}
    for key, d in acc.items():
        ent = [(i, w, m) for (i, w), m in sorted(d.items()) if m]
        if len(ent) > INJECT_ENTRIES:
            raise ValueError(f"{len(ent)} flipped words on chip {key[0]} port {key[1]}: the RTL tray injects "
                             f"at most {INJECT_ENTRIES} per link")
        out[key] = ent
    return out


def run_tray_rtl(cfg, programs, mems=None, reads=None, ppm=None, sim="icarus", max_cycles=200_000,
                 scrub=True, link_flips=None):
    from tinylpu.firmware.program import Program
    cfg = load_config(cfg)
    N = cfg.chips
    if len(programs) > N:
        raise ValueError(f"{len(programs)} programs for a tray of {N} chips")
    programs = list(programs) + [None] * (N - len(programs))
    mems = list(mems or []) + [None] * (N - len(mems or []))
    reads = list(reads or []) + [None] * (N - len(reads or []))
    ppm = list(cfg.ppm if ppm is None else ppm)
    if len(ppm) != N:
        raise ValueError(f"{len(ppm)} ppm values for a tray of {N} chips")
    cases = [normalize_case(cfg, {"program": p if p is not None else Program({}), "mem": m or {},
                                  "read": r or []}, i)
             for i, (p, m, r) in enumerate(zip(programs, mems, reads))]
    periods = [period_ps(x) for x in ppm]
    t0 = time.perf_counter()
    inject = [[a, q, i, w, m] for (a, q), ent in sorted(inject_entries(cfg, link_flips).items())
              for i, w, m in ent]
    doc = {"cases": cases, "scrub": None, "period_ps": periods, "max_cycles": max_cycles, "inject": inject}
    if scrub:
        sp, host, restore = scrub_program(cfg)
        doc["scrub"] = {"program": sp.to_bytes().hex(), "mem": host, "restore": restore, "max_cycles": 100_000}
    run = launch(build_tray_verilog(cfg), TOP, "tinylpu.sim.rtl.cocotb_tray", cfg=cfg, payload=doc, sim=sim,
                 what="RTL tray simulation", verilator_args=["--no-timing"])
    res = run.result
    if res is None:
        raise RuntimeError(f"RTL tray simulation returned no result\n{run.log}")
    for r in res["chips"]:
        r["mem"] = [np.asarray(x, dtype=np.int8).reshape(-1, cfg.lanes) for x in r.pop("reads")]
    res["wall_s"] = time.perf_counter() - t0
    res["period_ps"] = periods
    res["ppm"] = ppm
    return res


def compiled_tray_inputs(tc, xq_per_chip, run=0):
    """(programs, mems, reads) per chip for run `run` of a ``firmware.tray.TrayCompiled`` and its
    inputs: every chip's resident image with that run's tokens of X, and its Y regions to read."""
    from tinylpu.firmware.asm import assemble
    empty = assemble(".queue mem0\n HALT\n", tc.cfg)
    programs, mems, reads = [], [], []
    for c, r, xq in zip(tc.chips, tc.runs[run].chips, xq_per_chip):
        if r is None:
            programs.append(empty)
            mems.append(None)
            reads.append(None)
            continue
        programs.append(c.program if len(tc.runs) == 1 else r.program)
        img = {}
        for bank, lst in list(c.mem_image.items()) + list(c.pack_input(xq, run).items()):
            img.setdefault(bank, []).extend((addr, np.asarray(v, np.int8)) for addr, v in lst)
        mems.append(img)
        reads.append([(g.bank, g.addr, r.tokens) for _, g in sorted(r.y_layout.items())])
    return programs, mems, reads


def _reader(y_layout, reads):
    got = {(g.bank, g.addr): np.asarray(x, np.int8) for (_, g), x in zip(sorted(y_layout.items()), reads)}
    return lambda bank, addr, n: got[(bank, addr)][:n]


def compiled_tray_output(tc, root_reads):
    """The root chip's int8 output from its read-back (in the order of ``compiled_tray_inputs``);
    a program in several runs: ``root_reads`` per run, in order."""
    root = tc.chips[tc.root]
    if len(tc.runs) == 1:
        return root.unpack_output(_reader(root.y_layout, root_reads))
    return root.assemble_output([_reader(r.y_layout, rd) for r, rd in zip(root.runs, root_reads)])


def run_tray_compiled_rtl(tc, xq_per_chip, ppm=None, sim="icarus", link_flips=None):
    """A ``firmware.tray.TrayCompiled`` on the RTL tray.  Returns (y int8 of the root chip, result).

    A program in several runs (``tc.runs``) runs each in its own simulation, the chips' resident
    images written again with the run's tokens (a run needs nothing an earlier one left in MEM);
    the result is the last run's, with per chip ``cycles`` summed over the runs and ``run_cycles``
    per run."""
    if len(tc.runs) == 1:
        programs, mems, reads = compiled_tray_inputs(tc, xq_per_chip)
        res = run_tray_rtl(tc.cfg, programs, mems, reads, ppm=ppm, sim=sim, link_flips=link_flips)
        return compiled_tray_output(tc, res["chips"][tc.root]["mem"]), res
    if any(r.work is not None for c in tc.chips if c is not None for r in c.runs):
        raise ValueError("runs cut by work depend on an earlier run's MEM; the RTL tray launches each run afresh")
    root_reads, per_run = [], []
    for i in range(len(tc.runs)):
        programs, mems, reads = compiled_tray_inputs(tc, xq_per_chip, i)
        res = run_tray_rtl(tc.cfg, programs, mems, reads, ppm=ppm, sim=sim, link_flips=link_flips)
        root_reads.append(res["chips"][tc.root]["mem"])
        per_run.append([c["cycles"] for c in res["chips"]])
    for a, c in enumerate(res["chips"]):
        c["cycles"] = sum(rc[a] for rc in per_run)
    res["run_cycles"] = per_run
    return compiled_tray_output(tc, root_reads), res
