"""The RTL tray: ``cfg.chips`` chips, each in its own clock domain, joined by their C2C links.

* Clock domains ``chip0`` .. ``chip<N-1>`` (Verilog ports ``chip<i>_clk`` / ``chip<i>_rst``): chip i
  runs entirely in ``chip<i>``; the front end of each ``LinkRX`` runs in the *sender's* domain (the
  clock forwarded with the wire), mapped by renaming the chip's ``rxrec<p>`` domains.
* Links: ``tx[p]`` of chip a drives ``rx[q]`` of chip b for every (b, q) = ``cfg.peer(a, p)``.
* Host: one host port per chip (``chip<i>_cmd`` / ``chip<i>_resp``, in the chip's clock), so a
  host loads every chip in parallel; no mux.
* ``chip<i>_link[p]`` (out, chip i's clock): the status of chip i's receiver on port p
  (``hdl.chip.LINK_STATUS``: CRC/framing/sequence errors, SKIPs, elastic fill, alarm, hac_offset).
* ``start`` (asynchronous input): the START broadcast.  Each chip passes it through a 2-FF
  synchronizer in its own clock and starts on the rising edge (the same as a START command), so
  the chips start within one clock period of each other (plus the synchronizers' phase).
  Hold it high for a few cycles of the slowest clock, then low.
* Each chip's ``deskew_ref`` input is the constant ``hdl.chip.deskew_ref(cfg, i)`` (DESKEW's
  reference: chip 0 itself, or the port on which chip i hears chip 0), so all chips are the same
  module.
* ``chip<a>_inject[p][e]`` (in, static: set before reset is released): bit-error injection on the
  wire from chip a's port p, ``INJECT_ENTRIES`` entries per link, each ``en``, ``index``, ``word``,
  ``mask``: XOR ``mask`` (width+1 bits, bit ``width`` = the K flag) into word ``word`` of the
  ``index``-th DATA flit chip a sends on port p (counted from reset), as
  ``sim.golden.tray.GoldenTray(link_flips=...)`` does.  ``LinkInjector``: combinational on the wire,
  no added latency; all zero (the default) leaves the wire untouched, and so do undriven ports
  under Icarus (an X/Z enable selects no mask: ``LinkInjector``).

``Tray(cfg)`` elaborates ``cfg.chips`` ``Chip(cfg)`` (Amaranth's simulator, run_tray_pysim).
``Tray(cfg, chip_module="tinylpu_chip")`` instantiates a separately converted chip module of that
name instead (``ChipInstance``: a Verilog ``Instance`` with the chip's ports), so the tray's
Verilog is the chip converted once plus this top (sim/rtl/build.py ``build_tray_verilog``).
"""

from amaranth.hdl import ClockSignal, DomainRenamer, Instance, Module, Mux, ResetSignal, Signal, Value
from amaranth.lib import cdc, stream, wiring
from amaranth.lib.wiring import In, Out

from tinylpu.hdl.c2c import LinkWire
from tinylpu.hdl.chip import Chip, LinkStatusSignature, deskew_ref
from tinylpu.link import LinkParams, Sym

__all__ = ["ChipInstance", "Tray", "LinkInjector", "InjectSignature", "INJECT_ENTRIES", "INJECT_INDEX_BITS"]

#: Error-injection entries per link (``Tray``'s ``chip<a>_inject`` ports).
INJECT_ENTRIES = 4
#: Width of an entry's DATA flit index (flits counted from reset; the counter wraps).
INJECT_INDEX_BITS = 16


def InjectSignature(params):  # noqa: N802 (a signature constructor)
    """One injection entry (all In on the tray): XOR ``mask`` into word ``word`` of DATA flit (burst
    framing: frame) ``index``."""
    return wiring.Signature({"en": Out(1), "index": Out(INJECT_INDEX_BITS),
                             "word": Out(range(_data_words(params))), "mask": Out(params.width + 1)})


def _data_words(p):
    """Most words of a DATA flit or burst frame."""
    return p.frame_words(p.burst_vectors) if p.burst else p.flit_words


class LinkInjector(wiring.Component):
    """Bit errors on one link's wire, in the sender's clock ``domain``: ``wire_out`` = ``wire_in``
    with the mask of every enabled entry whose (DATA flit index, word) is the current word's XOR-ed
    in (``mask`` bit ``width`` flips the K flag).  Combinational from ``wire_in`` to ``wire_out`` (the
    TX's wire is a register, the RX registers its input): the link's timing is unchanged.

    It follows the TX's frames on the unmodified wire: a DATA header (k=1, code ``Sym.DATA``) starts
    flit ``index`` (counted from reset), whose ``flit_words`` words (burst framing: the frame's
    length from the header's count) follow one per cycle (the TX never puts a SKIP inside a frame);
    HAC frames are skipped."""

    def __init__(self, cfg, domain="sync", entries=INJECT_ENTRIES):
        self.params = p = LinkParams.from_cfg(cfg)
        self._domain = domain
        super().__init__({"wire_in": In(LinkWire(p.width)), "wire_out": Out(LinkWire(p.width)),
                          "entry": In(InjectSignature(p)).array(entries)})

    def elaborate(self, platform):
        m = Module()
        p = self.params
        d = m.d[self._domain]
        k, data = self.wire_in.k, self.wire_in.data
        count = Signal(INJECT_INDEX_BITS)          # DATA flits whose header has passed
        cur = Signal(INJECT_INDEX_BITS)            # the index of the flit in progress
        most = _data_words(p)
        left = Signal(range(max(most, p.hac_frame_words)))     # body words still to come
        total = Signal(range(most + 1))                        # words of the frame in progress
        in_data = Signal()                          # the frame in progress is a DATA flit
        is_data = Signal()
        m.d.comb += is_data.eq((left == 0) & k & (data[:4] == Sym.DATA.value))
        with m.If(left != 0):
            d += left.eq(left - 1)
        with m.Elif(is_data):
            if p.burst:     # the header's count field (the unmodified wire: no error to correct)
                n_m1 = data[4 + p.seq_bits:4 + p.bhdr_data_bits]
                words = 1 + (n_m1 + 1) * p.payload_words + p.trailer_words
            else:
                words = p.flit_words
            d += [left.eq(words - 1), total.eq(words), cur.eq(count), count.eq(count + 1), in_data.eq(1)]
        with m.Elif(k & (data[:4] == Sym.HAC.value)):
            d += [left.eq(p.hac_frame_words - 1), in_data.eq(0)]
        index = Signal(INJECT_INDEX_BITS)
        word = Signal(range(most))
        active = Signal()
        m.d.comb += [index.eq(Mux(left != 0, cur, count)),
                     word.eq(Mux(left != 0, total - left, 0)),
                     active.eq(is_data | ((left != 0) & in_data))]
        mask = Signal(p.width + 1)
        hits = []
        for i, e in enumerate(self.entry):
            # an If, not a Mux: its Verilog is an `if`, which takes the else branch (0) on an X/Z
            # condition, so a bench that leaves the inject ports undriven (Icarus: Z) sees a clean wire
            hit = Signal(p.width + 1, name=f"hit{i}")
            with m.If(e.en & active & (e.index == index) & (e.word == word)):
                m.d.comb += hit.eq(e.mask)
            hits.append(hit)
        m.d.comb += mask.eq(_xor(hits))
        m.d.comb += [self.wire_out.data.eq(data ^ mask[:p.width]), self.wire_out.k.eq(k ^ mask[p.width])]
        return m


def _xor(values):
    out = values[0]
    for v in values[1:]:
        out = out ^ v
    return out


class ChipInstance(wiring.Component):
    """``Chip(cfg)``'s ports on an ``Instance`` of the Verilog module `module` (``Chip(cfg)``
    converted on its own, e.g. ``sim.rtl.build.chip_verilog``).

    The instance ports are named as Amaranth's converter names a component's top ports
    (``cmd__valid``, ``link__0__trained`` ...) plus the clock and reset of each of the chip's
    domains (``clk``/``rst`` of ``sync``, ``rxrec<p>_clk``/``rxrec<p>_rst``), taken from this
    component's ``sync`` and ``rxrec<p>`` domains, which a ``DomainRenamer`` maps as for a ``Chip``.
    """

    def __init__(self, cfg, module):
        chip = Chip(cfg)
        chip._MustUse__silence = True           # only its signature is wanted here
        self.cfg, self.module = cfg, module
        super().__init__(chip.signature)

    def port_names(self):
        """The instance's port names (the converted chip module's ports)."""
        return list(self._ports())

    def _ports(self):
        ports = {"clk": ("i", ClockSignal("sync")), "rst": ("i", ResetSignal("sync"))}
        for p in range(self.cfg.c2c_ports):
            ports[f"rxrec{p}_clk"] = ("i", ClockSignal(f"rxrec{p}"))
            ports[f"rxrec{p}_rst"] = ("i", ResetSignal(f"rxrec{p}"))
        for path, member, value in self.signature.flatten(self):
            ports["__".join(map(str, path))] = ("i" if member.flow == In else "o", Value.cast(value))
        return ports

    def elaborate(self, platform):
        return Instance(self.module, *[(d, name, v) for name, (d, v) in self._ports().items()])


class Tray(wiring.Component):
    def __init__(self, cfg, chip_module=None):
        if cfg.chips < 2 or not cfg.slices_of("c2c"):
            raise ValueError(f"config {cfg.name} is not a tray (chips {cfg.chips}, c2c slice "
                             f"{bool(cfg.slices_of('c2c'))})")
        self.cfg = cfg
        self.chip_module = chip_module
        members = {"start": In(1)}
        for i in range(cfg.chips):
            members[f"chip{i}_cmd"] = In(stream.Signature(64))
            members[f"chip{i}_resp"] = Out(stream.Signature(64))
            members[f"chip{i}_link"] = Out(LinkStatusSignature(cfg)).array(cfg.c2c_ports)
            members[f"chip{i}_inject"] = In(InjectSignature(LinkParams.from_cfg(cfg))).array(
                cfg.c2c_ports, INJECT_ENTRIES)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        chips = []
        for i in range(cfg.chips):
            chip = Chip(cfg) if self.chip_module is None else ChipInstance(cfg, self.chip_module)
            names = {"sync": f"chip{i}"}
            for p in range(cfg.c2c_ports):
                names[f"rxrec{p}"] = f"chip{cfg.peer(i, p)[0]}"
            m.submodules[f"chip{i}"] = DomainRenamer(names)(chip)
            chips.append(chip)
            m.d.comb += chip.deskew_ref.eq(deskew_ref(cfg, i))
            wiring.connect(m, wiring.flipped(getattr(self, f"chip{i}_cmd")), chip.cmd)
            wiring.connect(m, chip.resp, wiring.flipped(getattr(self, f"chip{i}_resp")))
            for p in range(cfg.c2c_ports):
                wiring.connect(m, chip.link[p], wiring.flipped(getattr(self, f"chip{i}_link")[p]))
            s = Signal(name=f"start_sync{i}")
            s_d = Signal(name=f"start_prev{i}")
            m.submodules[f"start_sync{i}"] = cdc.FFSynchronizer(self.start, s, o_domain=f"chip{i}")
            m.d[f"chip{i}"] += s_d.eq(s)
            m.d.comb += chip.ext_start.eq(s & ~s_d)
        for a in range(cfg.chips):
            for p in range(cfg.c2c_ports):
                b, q = cfg.peer(a, p)
                inj = LinkInjector(cfg, domain=f"chip{a}")
                m.submodules[f"inject{a}_{p}"] = inj
                wiring.connect(m, chips[a].tx[p], inj.wire_in)
                wiring.connect(m, inj.wire_out, chips[b].rx[q])
                for e in range(INJECT_ENTRIES):
                    wiring.connect(m, wiring.flipped(getattr(self, f"chip{a}_inject")[p][e]), inj.entry[e])
        return m
