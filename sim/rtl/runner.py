"""The RTL engine: the chip's Verilog under cocotb (Icarus Verilog by default, or Verilator).

``run_cases_rtl(cfg_name, cases)`` runs a list of cases in ONE simulator invocation (building and
launching the simulator is the slow part) and returns one result per case::

    {"cycles": int, "done": bool, "running": bool, "timeout": bool,
     "error_bits": int, "errors": ["empty", ...],
     "mem" (alias "reads"): [int8 array (n, lanes) per readback entry, in order],
     "mem_by_bank": {"mem4": int8 array, ...}  (the same by bank name; "bank:addr" keys if a
                                                bank is read more than once),
     "name": str, "wall_s": float}

A case is a dict (or an object with the same attributes, e.g. ``firmware.randprog.RandomCase``)::

    {"program": Program | bytes | hex str,
     "mem": {bank: vectors | (addr, vectors) | [(addr, vectors), ...]},
                                         bank "mem3" or 3; vectors (n, lanes) int8
     "read" (or "readback"): [(bank, addr, n), ...] or {bank: (addr, n)},
     "max_cycles": int (optional), "name": str (optional)}

The Verilog is built once per config into ``build/rtl/<config>/`` (rebuilt when hdl/ or the config
changes).  Environment: ``SIM`` (icarus | verilator) is the default simulator, ``WAVES=1`` writes
an FST waveform into the simulator build directory.
"""

import os
from pathlib import Path

import numpy as np

from tinylpu.config import load_config
from tinylpu.sim.rtl.build import CHIP_TOP, build_root, build_verilog, chip_verilog
from tinylpu.sim.rtl.launch import default_sim, launch

__all__ = ["run_cases_rtl", "build_verilog", "normalize_case", "chip_verilog", "waves_file", "scrub_program", "TOP"]

TOP = CHIP_TOP


def scrub_program(cfg):
    """A program that puts every unit's state back to the golden model's power-on values.

    The MXM weights and accumulators, the VXM LUT and LDM registers become 0, the SXM lane map
    the identity.  Returns ``(program, host_writes, restore_writes)``: ``host_writes`` (bank
    number, addr, vectors) prepare a zero row and an identity row at the top of the west-most
    MEM bank B, ``restore_writes`` zero them again afterwards.  B streams the zero row (READ with
    stride 0) east on e0, then west on w0, then the identity row on e1 / w1; every unit
    loads from the one that passes it.
    """
    from tinylpu.firmware.program import Program
    from tinylpu.isa import Insn, Opcode, StreamRef
    L, lanes = cfg.latency, cfg.lanes
    B = min(cfg.slices_of("mem"), key=lambda s: s.position)
    pb, zrow, irow = B.position, cfg.mem_depth - 2, cfg.mem_depth - 1
    lut_rows = 256 // lanes
    N = max(2 * lanes, cfg.acc_depth, lut_rows + 4) + 2        # zero vectors per direction (LDM: 4 after the LUT)
    t_id = 2 * N                                              # identity READ issue cycle
    end = t_id + L["mem_read"] + cfg.positions + max(L.values()) + 4
    I = Insn.make
    sched = {B.name: [(0, [I(Opcode.READ, s=StreamRef(0, False), addr=zrow, count=N, stride=0)], N),
                      (N, [I(Opcode.READ, s=StreamRef(0, True), addr=zrow, count=N, stride=0)], N)]}
    for sl in cfg.slices:
        if sl.kind == "mem":
            continue
        west = sl.position < pb
        s = StreamRef(0, west)
        t = L["mem_read"] + abs(sl.position - pb) + (N if west else 0)   # first zero at the unit
        if sl.kind == "mxm" and cfg.install_rows == 1:
            sched[sl.name] = [
                (t, [I(Opcode.LW, s=s, buf=0, addr=0, count=lanes)], 1),
                (t + 1, [I(Opcode.MM, s=s, buf=0, addr=0, count=cfg.acc_depth, acc=0)], 1),
                (t + lanes, [I(Opcode.LW, s=s, buf=1, addr=0, count=lanes)], 1),
            ]
        elif sl.kind == "mxm":
            # install_rows R > 1: an LW of one row samples only stream s, so the zeros go in one row
            # per cycle (LW n=1, REPEATed); the MM of zeros gives 0 whatever the weights
            sched[sl.name] = [
                (t, [I(Opcode.MM, s=s, buf=0, addr=0, count=cfg.acc_depth, acc=0)], 1),
                (t + 1, [I(Opcode.LW, s=s, buf=0, addr=0, count=1), I(Opcode.REPEAT, n=lanes - 1, d=1)], lanes),
                (t + 1 + lanes, [I(Opcode.LW, s=s, buf=1, addr=0, count=1), I(Opcode.REPEAT, n=lanes - 1, d=1)], lanes),
            ]
        elif sl.kind == "vxm":
            sched[sl.name] = [
                (t, [I(Opcode.LDLUT, a=s, imm=0, count=lut_rows)], 1),
                (t + lut_rows, [I(Opcode.LDM, a=s, b=s, c=s, d=s)], 1),
            ]
        elif sl.kind == "sxm":
            sched[sl.name] = [(t_id + L["mem_read"] + abs(sl.position - pb),
                               [I(Opcode.LDPERM, a=StreamRef(1, west))], 1)]
    # the identity row: one READ per direction that has an SXM
    dirs = sorted({sl.position < pb for sl in cfg.slices_of("sxm")})
    for k, west in enumerate(dirs):
        sched[B.name].append((t_id + k, [I(Opcode.READ, s=StreamRef(1, west), addr=irow, count=1)], 1))
    if len(dirs) == 2:   # the west-bound SXMs see the identity one cycle later
        for sl in cfg.slices_of("sxm"):
            if sl.position < pb:
                (t, ins, n), = sched[sl.name]
                sched[sl.name] = [(t + 1, ins, n)]
    queues = {}
    for name, entries in sched.items():
        out, cur = [], 0
        for t, ins, slots in sorted(entries, key=lambda e: e[0]):
            if t > cur:
                out.append(I(Opcode.NOP, n=t - cur))
            out += ins
            cur = t + max(len(ins), slots if ins[-1].op == Opcode.REPEAT else 1)
        out += [I(Opcode.NOP, n=end - cur), I(Opcode.HALT)]
        queues[name] = out
    ident = [[j % 128 for j in range(lanes)]]
    host = [[B.index, zrow, [[0] * lanes]], [B.index, irow, ident]]
    restore = [[B.index, irow, [[0] * lanes]]]
    return Program(queues), host, restore


def _bank_number(cfg, bank):
    if isinstance(bank, (int, np.integer)):
        return int(bank)
    s = cfg.slice(bank)
    if s.kind != "mem":
        raise ValueError(f"{bank} is not a MEM bank")
    return s.index


def _get(case, key, default=None):
    if isinstance(case, dict):
        return case.get(key, default)
    return getattr(case, key, default)


def _is_entry(x):
    return (isinstance(x, (tuple, list)) and len(x) == 2 and isinstance(x[0], (int, np.integer))
            and not isinstance(x[1], (int, np.integer)))


def _image_entries(spec):
    """A bank's image: vectors (at 0), (addr, vectors), or a list of (addr, vectors)."""
    if _is_entry(spec):
        return [spec]
    if isinstance(spec, (list, tuple)) and spec and all(_is_entry(x) for x in spec):
        return list(spec)
    return [(0, spec)]


def normalize_case(cfg, case, index=0, check=True):
    """A case as the JSON the cocotb testbench reads (see sim/rtl/cocotb_chip.py).

    With ``check``, a program that does not fit the chip (wrong queue, opcode on the wrong slice,
    stream or address out of range) is refused here, before anything is loaded.
    """
    from tinylpu.firmware.check import check_program
    from tinylpu.firmware.program import Program
    prog = _get(case, "program")
    if check:
        p = prog
        if isinstance(p, str):
            p = bytes.fromhex(p)
        if isinstance(p, (bytes, bytearray)):
            p = Program.from_bytes(bytes(p), f"case {index}")
        check_program(p, cfg)
    if isinstance(prog, Program):
        prog = prog.to_bytes()
    if isinstance(prog, (bytes, bytearray)):
        prog = bytes(prog).hex()
    mem = []
    for bank, spec in (_get(case, "mem") or {}).items():
        for addr, vecs in _image_entries(spec):
            vecs = np.asarray(vecs).reshape(-1, cfg.lanes)
            mem.append([_bank_number(cfg, bank), int(addr), vecs.astype(int).tolist()])
    reads = _get(case, "read")
    if reads is None:
        reads = _get(case, "readback", [])
    if isinstance(reads, dict):
        reads = [(b, a, n) for b, (a, n) in reads.items()]
    names = [str(b) if not isinstance(b, (int, np.integer)) else f"mem{b}" for b, _, _ in reads]
    return {
        "name": _get(case, "name") or f"case{index}",
        "program": prog,
        "mem": mem,
        "read": [[_bank_number(cfg, b), int(a), int(n)] for b, a, n in reads],
        "read_names": names,
        "max_cycles": int(_get(case, "max_cycles") or 200_000),
    }


def run_cases_rtl(cfg_name, cases, sim=None, waves=None, scrub=True, check=True, verilog=None):
    """Run `cases` on the RTL chip in one simulator run; one result dict per case (module doc).

    `cfg_name`: a shipped config name, a YAML path, or a ``ChipConfig``.

    With ``scrub`` (the default) every case starts from the golden model's power-on unit state:
    the chip is reset and runs ``scrub_program`` first.  MEM is not cleared: rows a case neither
    writes through its image nor through its program hold what earlier cases left there.

    `verilog`: simulate this Verilog file (module ``tinylpu_chip``, e.g. a Yosys netlist from
    ``sim.rtl.postsynth``) instead of the chip's RTL Verilog.
    """
    sim = default_sim(sim)
    if waves is None:
        waves = os.environ.get("WAVES", "0") not in ("", "0")
    cfg = load_config(cfg_name)
    vfile = Path(verilog) if verilog is not None else build_verilog(cfg)
    norm = [normalize_case(cfg, c, i, check) for i, c in enumerate(cases)]
    doc = {"cases": norm, "scrub": None}
    if scrub:
        sp, host, restore = scrub_program(cfg)
        doc["scrub"] = {"program": sp.to_bytes().hex(), "mem": host, "restore": restore}
    run = launch(vfile, TOP, "tinylpu.sim.rtl.cocotb_chip", cfg=cfg, payload=doc, sim=sim, waves=waves)
    results = run.result or []
    if len(results) != len(norm):
        raise RuntimeError(f"RTL simulation returned {len(results)} of {len(norm)} results\n{run.log}")
    for r, c in zip(results, norm):
        r["reads"] = [np.asarray(x, dtype=np.int8).reshape(-1, cfg.lanes) for x in r["reads"]]
        r["mem"] = r["reads"]
        r["mem_by_bank"] = {}
        dup = len(set(c["read_names"])) != len(c["read_names"])
        for (b, a, n), name, x in zip(c["read"], c["read_names"], r["reads"]):
            r["mem_by_bank"][f"{name}:{a}" if dup else name] = x
    return results


def waves_file(cfg_name, sim=None):
    """Where the last run with waves left its dump (FST)."""
    cfg = load_config(cfg_name)
    sim = default_sim(sim)
    d = build_root() / cfg.name / (sim + "_waves")
    hits = sorted(d.glob("*.fst"), key=lambda p: p.stat().st_mtime) or sorted(d.rglob("*.fst"),
                                                                             key=lambda p: p.stat().st_mtime)
    if not hits:
        raise RuntimeError(f"no FST waveform under {d}: run with waves=True (WAVES=1) first")
    return hits[-1]
