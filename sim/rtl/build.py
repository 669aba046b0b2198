"""The Verilog build cache: every design the simulators run is converted once per source change.

``build/rtl/<name>/<top>.v`` is rewritten when the hash of the config, the Amaranth version,
every file of the gateware and the core (``hdl/*.py``, ``tinylpu/*.py``) and this file changes.  Writes are
atomic and serialized by a lock file, so parallel test workers can share the cache.
"""

import fcntl
import hashlib
import os
import re
from contextlib import contextmanager
from pathlib import Path

from tinylpu.config import load_config

__all__ = ["ROOT", "CHIP_TOP", "TRAY_TOP", "build_root", "source_hash", "locked", "cached_verilog",
           "chip_verilog", "tray_verilog", "build_verilog", "build_tray_verilog", "icarus_patch"]

ROOT = Path(__file__).resolve().parents[2]
CHIP_TOP = "tinylpu_chip"
TRAY_TOP = "tinylpu_tray"


def build_root():
    return Path(os.environ.get("TINYLPU_BUILD", ROOT / "build")) / "rtl"


def source_hash(cfg):
    """Changes whenever anything the generated Verilog depends on changes."""
    import amaranth
    h = hashlib.sha256()
    h.update(repr(cfg).encode())
    h.update(amaranth.__version__.encode())
    for p in sorted((ROOT / "hdl").glob("*.py")) + sorted((ROOT / "tinylpu").glob("*.py")) + [Path(__file__)]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@contextmanager
def locked(directory):
    """Hold an exclusive lock on `directory` (created if missing) for the duration of the block."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield directory
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_verilog(cfg, top, subdir, convert, key=None):
    """``build/rtl/<subdir>/<top>.v``, rebuilt with ``convert() -> text`` when its key is stale."""
    d = build_root() / subdir
    key = key or source_hash(cfg)
    with locked(d):
        v, stamp = d / f"{top}.v", d / f"{top}.hash"
        if not (v.exists() and stamp.exists() and stamp.read_text() == key):
            tmp = d / f"{top}.v.tmp"
            tmp.write_text(convert())
            tmp.replace(v)
            stamp.write_text(key)
    return v


def _convert(design, name):
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    from amaranth.back import verilog
    return verilog.convert(design, name=name)


def chip_verilog(cfg):
    """The chip's Verilog text (module ``tinylpu_chip``)."""
    from tinylpu.hdl.chip import Chip
    return _convert(Chip(load_config(cfg)), CHIP_TOP)


def build_verilog(cfg):
    """``build/rtl/<config>/tinylpu_chip.v``, current; its path."""
    cfg = load_config(cfg)
    return cached_verilog(cfg, CHIP_TOP, cfg.name, lambda: chip_verilog(cfg))


_MODULE = re.compile(r"(?m)^module\s+(\\\S+|[A-Za-z_][\w$]*)\s*\(([^;]*)\);")
_TOP_ATTR = "(* top =  1  *)\n"


def _modules(text):
    """{module name: [port names]} of Verilog written by Amaranth's converter."""
    return {mo.group(1).lstrip("\\"): [p.strip().lstrip("\\") for p in mo.group(2).split(",")]
            for mo in _MODULE.finditer(text)}


def tray_verilog(cfg):
    """The tray's Verilog text (module ``tinylpu_tray``): the chip converted once (module
    ``tinylpu_chip``, ``chip_verilog``) and the tray top (``hdl.tray.Tray(cfg, chip_module=...)``),
    which instantiates it ``cfg.chips`` times, in one file."""
    from tinylpu.hdl.tray import ChipInstance, Tray
    cfg = load_config(cfg)
    chip = chip_verilog(cfg)
    top = _convert(Tray(cfg, chip_module=CHIP_TOP), TRAY_TOP)
    chip_mods, top_mods = _modules(chip), _modules(top)
    clash = set(chip_mods) & set(top_mods)
    if clash:
        raise RuntimeError(f"tray Verilog: modules {sorted(clash)} both in the chip and the tray top")
    inst = ChipInstance(cfg, CHIP_TOP)
    inst._MustUse__silence = True           # only its port names are wanted here
    want = sorted(inst.port_names())
    if sorted(chip_mods[CHIP_TOP]) != want:
        raise RuntimeError(f"tray Verilog: the converted chip's ports {sorted(chip_mods[CHIP_TOP])} are "
                           f"not the instance's {want}")
    # one root: the chip module is only the tray's submodule
    if not chip.count(_TOP_ATTR) == 1:
        raise RuntimeError("tray Verilog: the chip module's top attribute not found")
    return top + "\n" + chip.replace(_TOP_ATTR, "", 1)


def build_tray_verilog(cfg):
    """``build/rtl/<config>-tray/tinylpu_tray.v`` (``hdl.tray.Tray``: every chip on its own clock;
    the chip converted once, ``tray_verilog``)."""
    cfg = load_config(cfg)
    return cached_verilog(cfg, TRAY_TOP, f"{cfg.name}-tray", lambda: tray_verilog(cfg))


_DUMP_REG = re.compile(r"(?m)^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;$")


def icarus_patch(text):
    """Verilog that Icarus Verilog 11 evaluates correctly from time 0.

    Yosys' Verilog backend wakes every ``always @*`` block at time 0 through a dummy register
    declared ``reg $auto$...dump_module$N = 0``; Icarus 11 raises no event for that initializer,
    so a combinational block whose inputs never change (e.g. ``cmd.ready`` while the host port
    idles in its reset state) would stay X.  An ``initial #0`` write to the register fixes that.
    """
    return _DUMP_REG.sub(lambda mo: f"{mo.group(1)}reg {mo.group(2)} = 0;\n"
                                    f"{mo.group(1)}initial #0 {mo.group(2)} = 1'b1;", text)
