"""Chip configuration: one YAML file read by the gateware, golden model, compiler and host.

``load_config("tiny")`` finds a shipped config by name; ``load_config("my.yaml")`` reads a file.
Every problem is reported as a :class:`ConfigError` naming the file, the field and what is allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tinylpu.link import FRAMINGS, LinkParams, link_problems
from tinylpu.schema import Doc, SchemaError, parse_yaml

__all__ = ["ConfigError", "ChipConfig", "Slice", "load_config", "shipped_configs",
           "LATENCY_KEYS", "MIN_LATENCY", "TAP_LATENCY_KEYS", "SLICE_KINDS", "DEFAULT_CONFIG"]

DEFAULT_CONFIG = "tiny"

#: Slice kinds that may appear in a floorplan (c2c only when the config has C2C ports).
SLICE_KINDS = ("mem", "mxm", "vxm", "sxm", "c2c")

#: Latency keys and the smallest value the RTL pipeline can implement (see docs/microarchitecture.md).
MIN_LATENCY = {
    "mem_read": 2,     # READ/GATHER: bank address at issue cycle -> vector visible on the stream
    "mem_write": 2,    # WRITE/SCATTER: stream sampled at issue cycle -> readable by a READ issued that many cycles later
    "mxm_install": 1,  # LW: row sampled -> used by MM elements issued that many cycles later
    "mxm_mm": 3,       # MM: activation sampled -> accumulator entry committed
    "mxm_emit": 2,     # EMIT: accumulator read -> int32 byte planes visible on streams
    "vxm_alu": 2,      # int8 add/sub/min/max/logic/select/relu/shift/mov, ADD32
    "vxm_mul": 2,      # MUL (int8 x int8, rounded shift, saturate)
    "vxm_req": 2,      # REQ/REQL (int32 x int16 multiplier, rounded shift, saturate)
    "vxm_lut": 2,      # LUT (256-entry table)
    "sxm": 2,          # SHIFT/ROT/PERM/DIST, and TRANS counted from its last input row
    "notify": 1,       # NOTIFY issue -> parked SYNC queues issue again
    "c2c_recv": 1,     # RECV element -> the received vector visible on the stream (optional key, default 2)
}
_LATENCY_DEFAULTS = {"c2c_recv": 2}
LATENCY_KEYS = tuple(MIN_LATENCY)

#: Latencies from a unit's sample cycle to its result on the streams: with ``fabric.tap_registers``
#: each unit reads a registered copy of the streams, which takes one of these cycles (hdl/taps.py),
#: so each must be at least its MIN_LATENCY + 1.
TAP_LATENCY_KEYS = ("mem_read", "mxm_emit", "vxm_alu", "vxm_mul", "vxm_req", "vxm_lut", "sxm")

_NAME_RE = re.compile(r"^(mem|mxm|vxm|sxm|c2c)(\d+)$")


class ConfigError(SchemaError):
    """A configuration file is malformed; the message names the file, line, field and allowed values.

    ``ConfigError(source, field, message, line=None)`` (``tinylpu.schema.SchemaError``)."""


@dataclass(frozen=True)
class Slice:
    name: str        # e.g. "mem3"
    kind: str        # one of SLICE_KINDS
    index: int       # the number in the name: mem3 -> 3
    position: int    # 0 = westmost slice


@dataclass(frozen=True)
class ChipConfig:
    name: str
    source: str
    description: str
    lanes: int
    streams: int
    slices: tuple
    mem_depth: int
    acc_depth: int
    queue_depth: int
    latency: dict
    clock_mhz: float
    ppm: tuple            # one entry per chip
    c2c_ports: int
    link_latency: int
    topology: str
    chips: int
    link: dict            # C2C link-layer parameters (width_bits, skip_interval, elastic_depth, ...)
    install_rows: int = 1  # weight rows an MXM installs per cycle (LW element), from that many streams
    tap_registers: bool = False  # fabric.tap_registers: units read registered copies of the streams
    raw: dict = field(repr=False, compare=False, default_factory=dict)

    # --- floorplan helpers -------------------------------------------------------------
    @property
    def positions(self) -> int:
        return len(self.slices)

    def slices_of(self, kind):
        return [s for s in self.slices if s.kind == kind]

    def slice(self, name) -> Slice:
        for s in self.slices:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def slice_names(self):
        return [s.name for s in self.slices]

    @property
    def banks(self) -> int:
        return len(self.slices_of("mem"))

    # --- derived numbers ---------------------------------------------------------------
    @property
    def sram_bytes(self) -> int:
        return self.banks * self.mem_depth * self.lanes

    @property
    def macs_per_cycle(self) -> int:
        return len(self.slices_of("mxm")) * self.lanes * self.lanes

    @property
    def stream_bytes_per_cycle(self) -> int:
        """Bytes crossing one slice boundary per cycle, both directions together."""
        return 2 * self.streams * self.lanes

    @property
    def clock_hz(self) -> float:
        return self.clock_mhz * 1e6

    @property
    def peak_tops(self) -> float:
        return 2 * self.macs_per_cycle * self.clock_hz / 1e12

    @property
    def link_params(self):
        """The link's derived numbers (``tinylpu.link.LinkParams``): the one link-timing formula."""
        return LinkParams.from_cfg(self)

    @property
    def flit_words(self) -> int:
        """Link words per vector flit: header + payload + CRC-32."""
        return self.link_params.flit_words

    @property
    def vector_interval(self) -> int:
        """Cycles between the elements of a SEND or RECV (``LinkParams.send_interval``): one flit plus
        one spare word (SKIP / HAC), or with burst framing one vector's payload words."""
        return self.link_params.send_interval

    def peer(self, chip, port):
        """(chip, port) at the other end of `port` of `chip` (fully connected: port p skips itself)."""
        if self.topology == "full":
            other = port if port < chip else port + 1
            return other, (chip if chip < other else chip - 1)
        nxt = (chip + (1 if port == 0 else -1)) % self.chips       # ring: port 0 east, port 1 west
        return nxt, 1 - port

    @property
    def weight_bytes_per_cycle(self) -> int:
        """Peak rate at which weights can enter the MXMs: `install_rows` rows of `lanes` bytes per MXM per
        cycle (LW)."""
        return len(self.slices_of("mxm")) * self.install_rows * self.lanes

    @property
    def sram_read_bytes_per_cycle(self) -> int:
        """The SRAM roofline: every MEM bank reads one vector per cycle."""
        return self.banks * self.lanes

    def derived(self) -> dict:
        return {
            "name": self.name,
            "lanes": self.lanes,
            "slices": len(self.slices),
            "mem_banks": self.banks,
            "mem_depth_vectors": self.mem_depth,
            "sram_bytes": self.sram_bytes,
            "sram_kib": self.sram_bytes / 1024,
            "macs_per_cycle": self.macs_per_cycle,
            "stream_bytes_per_cycle": self.stream_bytes_per_cycle,
            "stream_bandwidth_gbps": self.stream_bytes_per_cycle * self.clock_hz / 1e9,
            "mem_read_bandwidth_gbps": self.banks * self.lanes * self.clock_hz / 1e9,
            "mem_read_bytes_per_cycle": self.sram_read_bytes_per_cycle,
            "install_rows": self.install_rows,
            "weight_install_bytes_per_cycle": self.weight_bytes_per_cycle,
            "sram_bytes_per_mac": self.sram_bytes / self.macs_per_cycle,
            "clock_mhz": self.clock_mhz,
            "peak_tops_int8": self.peak_tops,
            "chips": self.chips,
            "c2c_ports": self.c2c_ports,
            "tray_sram_bytes": self.chips * self.sram_bytes,
            "tray_peak_tops_int8": self.chips * self.peak_tops,
        }


def shipped_configs():
    d = resources.files("tinylpu.configs")
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".yaml"))


def _resolve(name_or_path) -> tuple[str, str]:
    """Return (source label, YAML text)."""
    p = Path(str(name_or_path))
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(str(p), "-", "file not found")
        return str(p), p.read_text()
    res = resources.files("tinylpu.configs") / f"{name_or_path}.yaml"
    if not res.is_file():
        raise ConfigError(str(name_or_path), "-",
                          f"no such config; shipped configs are {', '.join(shipped_configs())} "
                          "(or give a path to a .yaml file)")
    return f"configs/{name_or_path}.yaml", res.read_text()


class _Reader(Doc):
    """The chip config's fields (``tinylpu.schema.Doc``: ``get``, ``int``, ``num``, ``err``, with the
    line of each field) reporting :class:`ConfigError`."""

    def __init__(self, source, data, lines=None):
        super().__init__(source, data, lines, ConfigError)


_TOP_KEYS = {"name", "description", "lanes", "streams", "floorplan", "mem", "mxm", "queue_depth",
             "latency", "clock", "c2c", "chips", "fabric"}
_C2C_KEYS = {"ports", "link_latency", "topology", "width_bits", "skip_interval", "elastic_depth", "ppm_budget",
             "hac_interval", "epoch", "rx_vectors", "link_slack", "framing", "burst_vectors"}
#: The keys of each section (``latency`` is checked against LATENCY_KEYS below).
_SECTION_KEYS = {"mem": {"depth", "banks"}, "mxm": {"acc_depth", "install_rows"}, "clock": {"mhz", "ppm"}, "c2c": _C2C_KEYS,
                 "fabric": {"tap_registers"}}


def parse_config(text, source="<string>") -> ChipConfig:
    doc = parse_yaml(text, source, ConfigError)
    data = doc.data
    if not isinstance(data, dict):
        raise ConfigError(source, "-", "top level must be a mapping of fields")
    r = _Reader(source, data, doc.lines)
    r.check_keys((), _TOP_KEYS)
    for section, keys in _SECTION_KEYS.items():
        if section in data:
            r.check_keys(section, keys)

    name = r.get("name")
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_.-]+$", name):
        raise r.err("name", f"must be a word of letters, digits, '_', '-', '.', got {name!r}")
    lanes = r.int("lanes", 4, 512, pow2=True)
    streams = r.int("streams", 4, 16)

    fp = r.get("floorplan")
    if not isinstance(fp, list) or not fp:
        raise r.err("floorplan", "must be a non-empty list of slice names like mem0, mxm0, vxm0, sxm0")
    slices, seen = [], set()
    for pos, nm in enumerate(fp):
        m = _NAME_RE.match(str(nm))
        if not m:
            raise r.err(f"floorplan[{pos}]", f"{nm!r} is not a slice name; use <kind><number> with kind in "
                        f"{', '.join(SLICE_KINDS)}")
        if nm in seen:
            raise r.err(f"floorplan[{pos}]", f"slice {nm!r} appears twice")
        seen.add(nm)
        slices.append(Slice(nm, m.group(1), int(m.group(2)), pos))
    for kind in ("mem", "mxm", "vxm"):
        if not any(s.kind == kind for s in slices):
            raise r.err("floorplan", f"needs at least one {kind} slice")
    for kind in SLICE_KINDS:
        idx = sorted(s.index for s in slices if s.kind == kind)
        if idx != list(range(len(idx))):
            raise r.err("floorplan", f"{kind} slices must be numbered 0..{len(idx) - 1}, got {idx}")

    mem_depth = r.int("mem.depth", 2, 65536, pow2=True)
    if "banks" in (data.get("mem") or {}):
        banks = r.int("mem.banks", 1, 64)
        if banks != sum(s.kind == "mem" for s in slices):
            raise r.err("mem.banks", f"is {banks} but the floorplan has "
                        f"{sum(s.kind == 'mem' for s in slices)} mem slices (one bank per slice)")
    acc_depth = r.int("mxm.acc_depth", 1, 4096)
    install_rows = r.int("mxm.install_rows", 1, min(lanes, streams), default=1, pow2=True)
    queue_depth = r.int("queue_depth", 4, 65536, default=256)

    lat_raw = r.get("latency")
    if not isinstance(lat_raw, dict):
        raise r.err("latency", f"must be a mapping with keys {', '.join(LATENCY_KEYS)}")
    for k in lat_raw:
        if k not in MIN_LATENCY:
            raise r.err(f"latency.{k}", f"unknown latency; allowed keys are {', '.join(LATENCY_KEYS)}")
    latency = {k: r.int(f"latency.{k}", MIN_LATENCY[k], 64, default=_LATENCY_DEFAULTS.get(k, KeyError))
               for k in LATENCY_KEYS}

    tap_registers = r.bool("fabric.tap_registers", default=False)

    chips = r.int("chips", 1, 256, default=1)
    clock_mhz = r.num("clock.mhz", 1, 5000)
    ppm_raw = r.get("clock.ppm", 0)
    if isinstance(ppm_raw, list):
        if len(ppm_raw) != chips:
            raise r.err("clock.ppm", f"has {len(ppm_raw)} entries but chips is {chips} (one offset per chip)")
        ppm = tuple(_ppm(r, i, v) for i, v in enumerate(ppm_raw))
    else:
        ppm = (_ppm(r, None, ppm_raw),) * chips
    c2c_ports = r.int("c2c.ports", 0, 16, default=0)
    link_latency = r.int("c2c.link_latency", 1, 4096, default=16)
    topology = r.get("c2c.topology", "full")
    if topology not in ("full", "ring"):
        raise r.err("c2c.topology", f"must be one of full, ring; got {topology!r}")
    link = {
        "width_bits": r.int("c2c.width_bits", 8, 256, default=32, pow2=True),
        "skip_interval": r.int("c2c.skip_interval", 16, 1 << 20, default=1024),
        "elastic_depth": r.int("c2c.elastic_depth", 16, 1024, default=16, pow2=True),
        "ppm_budget": r.num("c2c.ppm_budget", 1, 100000, default=300),
        "hac_interval": r.int("c2c.hac_interval", 16, 1 << 20, default=256),
        "epoch": r.int("c2c.epoch", 64, 1 << 24, default=4096, pow2=True),
        "rx_vectors": r.int("c2c.rx_vectors", 1, 1024, default=8),
        "link_slack": r.num("c2c.link_slack", 0, 4096, default=4),
        "framing": r.get("c2c.framing", "flit"),
    }
    if link["framing"] not in FRAMINGS:
        raise r.err("c2c.framing", f"must be one of {', '.join(FRAMINGS)}; got {link['framing']!r}")
    if link["framing"] == "burst":
        link["burst_vectors"] = r.int("c2c.burst_vectors", 1, 256, default=16)
    elif "burst_vectors" in (data.get("c2c") or {}):
        raise r.err("c2c.burst_vectors", "applies to c2c.framing burst only (flits carry one vector each)")
    if link["width_bits"] > 8 * lanes:
        raise r.err("c2c.width_bits", f"is {link['width_bits']} but a vector has only {8 * lanes} bits")
    problems = link_problems(lanes, link, link_latency) if c2c_ports else []
    if problems:
        raise r.err(*problems[0])
    n_c2c = sum(sl.kind == "c2c" for sl in slices)
    if n_c2c > 1:
        raise r.err("floorplan", f"at most one c2c slice (it serves all {c2c_ports} ports), got {n_c2c}")
    if n_c2c and not c2c_ports:
        raise r.err("floorplan", "has a c2c slice but c2c.ports is 0")
    if tap_registers and c2c_ports:
        raise r.err("fabric.tap_registers", "applies to chips without C2C (c2c.ports 0) only")
    if tap_registers:
        for k in TAP_LATENCY_KEYS:
            if latency[k] < MIN_LATENCY[k] + 1:
                raise r.err(f"latency.{k}", f"is {latency[k]}, but with fabric.tap_registers the tap register takes "
                            f"one cycle of it: the minimum is {MIN_LATENCY[k] + 1}")
    if chips > 1 and topology == "full" and c2c_ports < chips - 1:
        raise r.err("c2c.ports", f"a fully connected tray of {chips} chips needs {chips - 1} ports per chip, "
                    f"got {c2c_ports}")
    return ChipConfig(name=name, source=source, description=r.str("description", default=""),
                      lanes=lanes, streams=streams, slices=tuple(slices), mem_depth=mem_depth,
                      acc_depth=acc_depth, queue_depth=queue_depth, latency=latency, clock_mhz=clock_mhz,
                      ppm=ppm, c2c_ports=c2c_ports, link_latency=link_latency, topology=topology,
                      chips=chips, link=link, install_rows=install_rows, tap_registers=tap_registers,
                      raw=data)


def _ppm(r, i, v):
    f = "clock.ppm" if i is None else f"clock.ppm[{i}]"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not -10000 <= v <= 10000:
        raise r.err(f, f"must be a number of parts per million in [-10000, 10000], got {v!r}")
    return float(v)


def load_config(name_or_path=DEFAULT_CONFIG) -> ChipConfig:
    if isinstance(name_or_path, ChipConfig):
        return name_or_path
    source, text = _resolve(name_or_path)
    return parse_config(text, source)
