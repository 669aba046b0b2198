"""C2C link wire format and timing: the K-symbol codes, the flit layout and every number derived
from the config's ``c2c`` section.  The one formula for link timing: the gateware (``hdl/c2c.py``,
``hdl/c2cslice.py``), the golden model, the compiler and the host all read it from here
(``ChipConfig.vector_interval`` is ``LinkParams.from_cfg(cfg).send_interval``).
"""

from dataclasses import dataclass

from amaranth.lib import enum

__all__ = ["Sym", "LinkParams", "HAC_BITS", "CRC_POLY_REFLECTED", "CRC_INIT"]

#: Width of the hardware-aligned counter carried by HAC frames.
HAC_BITS = 32
#: CRC-32 (IEEE 802.3 / zlib): polynomial 0x04C11DB7, reflected, init and final XOR 0xFFFFFFFF.
CRC_POLY_REFLECTED = 0xEDB88320
CRC_INIT = 0xFFFFFFFF


class Sym(enum.Enum, shape=4):
    """K-symbol codes (bits [0, 4) of a word with k=1).  The five codes have even parity, so a
    single flipped bit never turns one symbol into another: it becomes an invalid code."""
    IDLE = 0x3
    SKIP = 0x5
    TRAIN = 0x6
    HAC = 0x9
    DATA = 0xA


@dataclass(frozen=True)
class LinkParams:
    """Numbers derived from the config's ``c2c`` section (``cfg.link``) and ``lanes``."""
    lanes: int
    width: int
    skip_interval: int
    hac_interval: int
    depth: int
    ppm_budget: float

    @classmethod
    def from_cfg(cls, cfg):
        lk = cfg.link
        return cls(lanes=cfg.lanes, width=lk["width_bits"], skip_interval=lk["skip_interval"],
                   hac_interval=lk["hac_interval"], depth=lk["elastic_depth"],
                   ppm_budget=float(lk["ppm_budget"]))

    @property
    def payload_words(self):
        return 8 * self.lanes // self.width

    @property
    def crc_words(self):
        return -(-32 // self.width)

    @property
    def hac_words(self):
        return -(-HAC_BITS // self.width)

    @property
    def flit_words(self):
        """Words of one DATA flit: header + payload + CRC."""
        return 1 + self.payload_words + self.crc_words

    @property
    def hac_frame_words(self):
        return 1 + self.hac_words + self.crc_words

    @property
    def send_interval(self):
        """The link rate the compiler must respect: at most one vector per this many cycles.
        One word per flit slot is left for SKIP/HAC, so the link never falls behind."""
        return self.flit_words + 1

    @property
    def seq_bits(self):
        return min(8, self.width - 4)

    @property
    def goodput_max(self):
        """Payload bits / wire data bits at one vector per ``send_interval``."""
        return 8 * self.lanes / (self.send_interval * self.width)

    @property
    def nominal_latency(self):
        """Receiver cycles from the TX accepting a vector (into an idle TX) to ``recv_valid``, at
        equal clocks with the elastic buffer centred (measured; docs/c2c.md).  Drift moves it by
        at most a cycle or two either way while the buffer stays inside its guard band."""
        return self.flit_words + self.depth // 2 + 2

    @property
    def compensation_ppm(self):
        """Largest relative clock difference the SKIP mechanism can absorb: one word per SKIP."""
        return 1e6 / self.skip_interval
