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
"""

from amaranth.hdl import DomainRenamer, Module, Signal
from amaranth.lib import cdc, stream, wiring
from amaranth.lib.wiring import In, Out

from tinylpu.hdl.chip import Chip, LinkStatusSignature

__all__ = ["Tray"]


class Tray(wiring.Component):
    def __init__(self, cfg):
        if cfg.chips < 2 or not cfg.slices_of("c2c"):
            raise ValueError(f"config {cfg.name} is not a tray (chips {cfg.chips}, c2c slice "
                             f"{bool(cfg.slices_of('c2c'))})")
        self.cfg = cfg
        members = {"start": In(1)}
        for i in range(cfg.chips):
            members[f"chip{i}_cmd"] = In(stream.Signature(64))
            members[f"chip{i}_resp"] = Out(stream.Signature(64))
            members[f"chip{i}_link"] = Out(LinkStatusSignature(cfg)).array(cfg.c2c_ports)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        chips = []
        for i in range(cfg.chips):
            chip = Chip(cfg, chip=i)
            names = {"sync": f"chip{i}"}
            for p in range(cfg.c2c_ports):
                names[f"rxrec{p}"] = f"chip{cfg.peer(i, p)[0]}"
            m.submodules[f"chip{i}"] = DomainRenamer(names)(chip)
            chips.append(chip)
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
                wiring.connect(m, chips[a].tx[p], chips[b].rx[q])
        return m
