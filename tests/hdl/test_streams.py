"""The stream fabric against a numpy model of the golden model's stream shift (Amaranth sim)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from tests.harness import land_bits
from tinylpu.config import load_config
from tinylpu.hdl.common import aligned, land_copies
from tinylpu.hdl.streams import StreamFabric


@pytest.mark.parametrize("cfg_name", ["tiny", "ice40"])
def test_random_drive(cfg_name):
    """``ice40`` has 4 streams (``common.aligned``): no plane select, so a unit drives a one-vector
    result on every plane of ``data``, as the VXM does there."""
    CFG = load_config(cfg_name)
    S, P, lanes = CFG.streams, CFG.positions, CFG.lanes
    dut = StreamFabric(CFG)
    rng = np.random.default_rng(1)
    ncyc = 60

    # drives[c][p] = None or (west, index, wide, [4 ints])
    drives = []
    for c in range(ncyc):
        row = []
        for p in range(P):
            if rng.random() < 0.3:
                wide = bool(rng.random() < 0.4)
                idx = int(rng.integers(0, S - 3 if wide else S))
                vals = [int.from_bytes(rng.bytes(lanes), "little") for _ in range(4)]
                if aligned(CFG) and not wide:
                    vals = [vals[0]] * 4
                row.append((int(rng.integers(0, 2)), idx, wide, vals))
            else:
                row.append(None)
        drives.append(row)
    clear_at = 40

    # reference: (dir, s, p) -> value or None, as the golden model's _commit does it
    ref = {(d, s, p): None for d in (0, 1) for s in range(S) for p in range(P)}
    expect = []
    for c in range(ncyc):
        expect.append(dict(ref))
        new = {}
        for s in range(S):
            for p in range(P):
                new[(0, s, p)] = ref[(0, s, p - 1)] if p > 0 else None
                new[(1, s, p)] = ref[(1, s, p + 1)] if p < P - 1 else None
        for p, dr in enumerate(drives[c]):
            if dr:
                w, idx, wide, vals = dr
                for b in range(4 if wide else 1):
                    new[(w, idx + b, p)] = vals[b]
        if c == clear_at:
            new = {k: None for k in new}
        ref = new

    async def bench(ctx):
        for c in range(ncyc):
            for p in range(P):
                o = dut.outs[p]
                dr = drives[c][p]
                ctx.set(o.valid, dr is not None)
                land, plane = land_bits(dr, S)
                for g in range(land_copies(lanes)):
                    ctx.set(o.land[g], land)
                    ctx.set(o.plane[g], plane)
                if dr:
                    w, idx, wide, vals = dr
                    ctx.set(o.west, w)
                    ctx.set(o.index, idx)
                    ctx.set(o.wide, wide)
                    for b in range(4):
                        ctx.set(o.data[b], vals[b])
            ctx.set(dut.clear, c == clear_at)
            for (d, s, p), v in expect[c].items():
                tap = dut.taps[p]
                valid = ctx.get((tap.west_valid if d else tap.east_valid)[s])
                assert valid == (v is not None), (c, d, s, p)
                if v is not None:
                    assert ctx.get((tap.west if d else tap.east)[s]) == v, (c, d, s, p)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
