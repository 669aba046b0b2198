"""A tray of chips on the golden model: every chip cycle-exact, links with the configured latency.

The golden tray runs its chips in lockstep (ideal clocks): a vector SENT on chip a's port p at
cycle c can be RECEIVED on the peer port from cycle c + link_latency (with burst framing: every
vector of a SEND from link_latency cycles after its last element; ``tinylpu.link.arrival_cycles``).
Clock drift, the elastic buffers and the DESKEW realignment are the RTL's business; programs that
are correct here keep their cycle counts there, because DESKEW realigns every chip to the same
epoch boundaries.
"""

from dataclasses import dataclass, field

import numpy as np

from tinylpu.config import load_config
from tinylpu.firmware.asm import assemble
from tinylpu.link import (
    UNCORRECTABLE,
    LinkParams,
    arrival_cycles,
    decode_burst,
    decode_frame,
    encode_burst,
    encode_flit,
)
from tinylpu.sim.golden.chip import ProgramError
from tinylpu.sim.golden.fast import FastGolden
from tinylpu.sim.golden.fasttray import NotExact, run_fast

__all__ = ["GoldenTray", "TrayResult", "run_tray_golden"]


@dataclass
class TrayResult:
    cycles: list                       # per chip (a program in several runs: the runs' sum)
    link_vectors: dict = field(default_factory=dict)   # (chip, port) -> vectors sent
    activity: list = field(default_factory=list)       # per chip (several runs: the last run's)
    run_cycles: list = None            # per run (``TrayCompiled.runs``): cycles per chip
    y: list = None                     # ``run_tray_golden``: per chip its int8 output, every run's
                                       # tokens (None for a chip that writes no output)


class GoldenTray:
    """``link_flips``: optional ``f(chip, port, index) -> [(word, mask), ...]``, bit errors injected
    into the ``index``-th DATA flit (burst framing: frame) chip ``chip`` sends on ``port`` (mask bit
    ``width_bits`` = the K flag).  The flit goes through the wire format's software codec (``tinylpu.link.encode_flit`` /
    ``decode_frame``): a corrected vector arrives bit-exact, an uncorrectable one raises the link
    error, as the RTL's ``link`` flag does.  ``self.corrected`` counts corrected flits."""

    def __init__(self, config="tray", link_flips=None):
        self.cfg = cfg = load_config(config)
        self.link_flips = link_flips
        self.corrected = 0
        if cfg.chips < 2 or not cfg.c2c_ports:
            raise ValueError(f"config {cfg.name} is not a tray (chips {cfg.chips}, C2C ports {cfg.c2c_ports})")
        self.chips = [FastGolden(cfg) for _ in range(cfg.chips)]   # (the per-cycle reference + the fast path)
        self.fallbacks = 0                   # fast runs redone in lockstep (errors, link_flips; ``run``)
        self.sent = {}
        self._frames, self._open = {}, {}    # burst framing: (chip, port) -> last frame, its entries
        for a, g in enumerate(self.chips):
            g.tx_hook = self._hook(a)

    def _hook(self, a):
        c2c = self.cfg.slices_of("c2c")[0].name
        g = self.chips[a]

        def send(port, cycle, vec):
            act = g.active[(c2c, f"tx{port}")]       # the SEND this element belongs to
            self.arrive(a, port, cycle, vec, act.start, act.n)
        return send

    def arrive(self, a, port, cycle, vec, t0, n):
        """Element ``(cycle - t0) / F`` of a SEND of ``n`` vectors on chip ``a``'s ``port`` whose
        element 0 is at ``t0`` samples ``vec`` at ``cycle``: the link's rules (RX buffer, and with
        burst framing the frame length and the gap between frames) and the vector's entry
        ``[arrival cycle, vector]`` on the peer port (``tinylpu.link.arrival_cycles``: the one arrival
        rule).  Injected bit errors (``link_flips``) go through the wire codec: per flit, or per
        burst frame once its last vector is sampled (the entries of the frame are corrected in place
        before any can arrive)."""
        cfg, p = self.cfg, self.params
        if not self.sent:                       # a new run (``run`` resets ``sent``)
            self._frames, self._open = {}, {}
        b, q = cfg.peer(a, port)
        rx = self.chips[b].rx[q]
        if len(rx) >= cfg.link["rx_vectors"]:
            raise ProgramError(cycle, f"chip{b}.c2c", None, None,
                               f"RX buffer of port {q} overflows: {cfg.link['rx_vectors']} vectors from chip {a} "
                               f"have not been received yet")
        index = self.sent.get((a, port), 0)
        k = (cycle - t0) // p.send_interval
        entry = [arrival_cycles(p, cfg.link_latency, t0, n)[k], vec.copy()]
        rx.append(entry)
        self.sent[(a, port)] = index + 1
        if not p.burst:
            flips = self.link_flips(a, port, index) if self.link_flips else None
            if flips:
                entry[1] = self._through_wire(a, port, index, cycle, [vec], flips)[0]
            return
        key = (a, port)
        c2c = cfg.slices_of("c2c")[0].name
        if k == 0:
            if n > p.burst_vectors:
                raise ProgramError(cycle, c2c, None, None,
                                   f"SEND of {n} vectors on port {port}: a burst frame holds at most c2c.burst_vectors "
                                   f"= {p.burst_vectors}")
            last = self._frames.get(key)
            if last is not None and t0 < last[0] + p.frame_period(last[1]):
                raise ProgramError(cycle, c2c, None, None,
                                   f"link overrun on port {port}: a SEND may start a frame at cycle "
                                   f"{last[0] + p.frame_period(last[1])} at the earliest (the previous frame of "
                                   f"{last[1]} vectors from cycle {last[0]} + c2c frame gap {p.frame_gap}), not {t0}")
            self._frames[key] = (t0, n, self._frames.get(key, (0, 0, -1))[2] + 1)
            self._open[key] = []
        self._open[key].append(entry)
        if k == n - 1 and self.link_flips:
            frame = self._frames[key][2]
            flips = self.link_flips(a, port, frame)
            if flips:
                got = self._through_wire(a, port, frame, cycle, [e[1] for e in self._open[key]], flips)
                for e, v in zip(self._open[key], got):
                    e[1] = v

    @property
    def params(self):
        return LinkParams.from_cfg(self.cfg)

    def _through_wire(self, a, port, index, cycle, vecs, flips):
        """``vecs`` encoded as DATA flit (one vector) or burst frame ``index``, ``flips`` applied,
        decoded: the vectors that arrive, or the link error (``ProgramError``) if uncorrectable."""
        p = self.params
        values = [int.from_bytes(np.asarray(v, np.int8).tobytes(), "little") for v in vecs]
        words = encode_burst(p, values, index) if p.burst else encode_flit(p, values[0], index)
        for w, mask in flips:
            k, d = words[w]
            words[w] = (k ^ (mask >> p.width) & 1, d ^ (mask & ((1 << p.width) - 1)))
        if p.burst:
            got, seq, out = decode_burst(p, words)
            kind = "data"
        else:
            kind, got, seq, out = decode_frame(p, words)
            got = [got]
        if out == UNCORRECTABLE or kind != "data" or seq != index % (1 << p.seq_bits):
            what = "frame" if p.burst else "flit"
            raise ProgramError(cycle, self.cfg.slices_of("c2c")[0].name, None, None,
                               f"link error: {what} {index} on port {port} has an uncorrectable error ({flips})")
        if out != "ok":
            self.corrected += 1
        return [np.frombuffer(v.to_bytes(p.lanes, "little"), np.int8).copy() for v in got]

    def load_programs(self, programs):
        if len(programs) != len(self.chips):
            raise ValueError(f"{len(programs)} programs for a tray of {len(self.chips)} chips")
        for g, p in zip(self.chips, programs):
            g.load_program(p)

    def run(self, max_cycles=1_000_000, lockstep=False) -> TrayResult:
        """Run the loaded programs.  ``lockstep``: step every chip's per-cycle reference model, one
        cycle at a time (the reference).  Otherwise the fast tray (``sim/golden/fasttray.py``: the
        same results, or, when it cannot prove its run exact, e.g. on any error, this lockstep run
        from the untouched state, which reports the error)."""
        if not lockstep:
            try:
                cycles, sent, activity = run_fast(self, max_cycles)
                return TrayResult(cycles, sent, activity)
            except NotExact:
                self.fallbacks += 1
        self.sent = {}
        for g in self.chips:
            g.start()
        c = 0
        while not all(g.done for g in self.chips):
            for i, g in enumerate(self.chips):
                try:
                    g.step()
                except ProgramError as e:
                    raise ProgramError(e.cycle, f"chip{i}.{e.slice}", e.index, e.insn, e.message) from None
            c += 1
            if c >= max_cycles:
                raise ProgramError(c, "-", None, None, f"the tray did not halt within {max_cycles} cycles")
        res = [g.result() for g in self.chips]
        for i, g in enumerate(self.chips):
            left = {p: len(q) for p, q in g.rx.items() if q}
            if left:
                raise ProgramError(res[i].cycles, f"chip{i}.c2c", None, None,
                                   f"vectors arrived but were never received: {left} (port: count)")
        return TrayResult([r.cycles for r in res], dict(self.sent), [r.activity for r in res])


def run_tray_golden(tc, xq_per_chip, lockstep=False):
    """Run a ``firmware.tray.TrayCompiled`` on the golden tray; xq_per_chip: int8 inputs per chip (None for idle).

    Every run of ``tc.runs`` in order on the one tray (the resident images written once; before each
    run its chips' tokens of X, after it their Y read back), each on the fast tray (``lockstep``:
    the per-cycle lockstep tray).  Returns (tray, TrayResult): per chip the cycles of all runs
    together, per run the cycles per chip (``run_cycles``), the vectors sent over all runs, and per
    chip the int8 output of all its tokens (``y``)."""
    t = GoldenTray(tc.cfg)
    empty = assemble(".queue mem0\n HALT\n", tc.cfg)
    chips = tc.chips
    reads = [[] for _ in chips]
    run_cycles, sent, activity = [], {}, None
    one = len(tc.runs) == 1             # (one run: the chips' own programs, as a caller may have replaced them)
    for i, run in enumerate(tc.runs):
        t.load_programs([empty if r is None else c.program if one else r.program for c, r in zip(chips, run.chips)])
        for chip, (c, r, xq) in enumerate(zip(chips, run.chips, xq_per_chip)):
            if r is None:
                continue
            image = {b: list(lst) for b, lst in c.mem_image.items()} if i == 0 else {}
            for b, lst in c.pack_input(xq, i).items():
                image.setdefault(b, []).extend(lst)
            t.chips[chip].write_image(image)
        res = t.run(lockstep=lockstep)
        run_cycles.append(list(res.cycles))
        for key, n in res.link_vectors.items():
            sent[key] = sent.get(key, 0) + n
        activity = res.activity
        for chip, r in enumerate(run.chips):
            if r is not None:           # (a run that writes no output tile reads nothing)
                got = {(reg.bank, reg.addr): t.chips[chip].read_mem(reg.bank, reg.addr, r.tokens)
                       for reg in r.y_layout.values()}
                reads[chip].append(lambda bank, addr, n, got=got: got[(bank, addr)][:n])
    ys = [c.assemble_output(rd) if c is not None and c.y_layout else None for c, rd in zip(chips, reads)]
    if len(tc.runs) == 1:
        return t, TrayResult(run_cycles[0], sent, activity, run_cycles, ys)
    cycles = [sum(rc[c] for rc in run_cycles) for c in range(len(chips))]
    return t, TrayResult(cycles, sent, activity, run_cycles, ys)
