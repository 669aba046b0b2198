"""The fast golden tray (``sim/golden/fasttray.py``) against the lockstep tray (every chip's per-cycle
reference stepped one cycle at a time): the same cycles, link counts, activity, halt cycles, MEM and
unit state, and the same errors, on compiled tensor-parallel layers, on random relay chains across
the tray (data passed and transformed chip to chip) and on their mutants (RECVs too early, vectors never received, DESKEWs, shifted SENDs)."""

import numpy as np
import pytest

from tinylpu.config import load_config
from tinylpu.firmware.asm import assemble
from tinylpu.firmware.quant import FFNWeights, quantize_ffn
from tinylpu.firmware.tray import compile_tp
from tinylpu.link import LinkParams, arrival_cycles
from tinylpu.sim.golden.chip import ProgramError
from tinylpu.sim.golden.tray import GoldenTray

CFG = load_config("tray")
EMPTY = ".queue mem0\n HALT\n"
_STATE = ("acc", "weights", "lut", "req_m", "req_sh", "req_z", "perm")


def outcome(cfg, programs, images, lockstep):
    """Run on a fresh tray: ("ok", result, per-chip state) or ("error", message); and the tray."""
    t = GoldenTray(cfg)
    t.load_programs(programs)
    for g, image in zip(t.chips, images):
        g.write_image(image)
    try:
        r = t.run(lockstep=lockstep)
    except ProgramError as e:
        return ("error", str(e)), t
    state = []
    for g in t.chips:
        s = {f"mem.{b}": g.mem[b].copy() for b in g.mem}
        for d in _STATE:
            for k, v in getattr(g, d).items():
                s[f"{d}.{k}"] = v.copy()
        state.append((s, dict(g.halted)))
    return ("ok", r.cycles, r.link_vectors, r.activity, state), t


def assert_same(a, b):
    assert a[0] == b[0], (a[:2], b[:2])
    if a[0] == "error":
        assert a == b
        return
    assert a[1:4] == b[1:4]
    for (sa, ha), (sb, hb) in zip(a[4], b[4]):
        assert ha == hb
        assert sa.keys() == sb.keys()
        for k in sa:
            assert np.array_equal(sa[k], sb[k]), k


def compare(cfg, programs, images=None):
    """Both trays; returns (outcome, the fast tray) after asserting the outcomes equal."""
    images = images or [{}] * len(programs)
    fast, t = outcome(cfg, programs, images, False)
    ref, _ = outcome(cfg, programs, images, True)
    assert_same(fast, ref)
    return fast, t


# --- compiled tensor-parallel layers ------------------------------------------------------------

def _layer(dm, dff, tokens, seed, gated=False):
    rng = np.random.default_rng(seed)
    w = FFNWeights(rng.normal(size=(dm, dff)) / 20, rng.normal(size=(dff, dm)) / 40,
                   rng.normal(size=(dm, dff)) / 20 if gated else None,
                   rng.normal(size=dff) * 0.1, rng.normal(size=dm) * 0.1, None, "silu" if gated else "gelu")
    x = rng.normal(size=(tokens, dm))
    q = quantize_ffn(w, x)
    return q, q.quantize_input(x)


def _tp_case(cfg, q, xq, tokens):
    tc = compile_tp(q, cfg, tokens)
    empty = assemble(EMPTY, cfg)
    programs = [c.program if c is not None else empty for c in tc.chips]
    images = []
    for c in tc.chips:
        image = {}
        if c is not None:
            image = {b: list(lst) for b, lst in c.mem_image.items()}
            for b, lst in c.pack_input(xq).items():
                image.setdefault(b, []).extend(lst)
        images.append(image)
    return tc, programs, images


def _config(name):
    """A shipped config, or ``<base>+burst``: its burst-framing variant (``sim/perf/c2c.py``)."""
    if name.endswith("+burst"):
        from tinylpu.sim.perf.c2c import burst_variant
        return burst_variant(name.split("+")[0], 16)
    return load_config(name)


@pytest.mark.parametrize("cfgname,dm,dff,tokens,gated", [("tray", 64, 256, 4, False), ("tray", 32, 128, 3, True),
                                                       ("duo", 32, 64, 2, False), ("tray+burst", 64, 256, 4, False)])
def test_compiled_tp_layers(cfgname, dm, dff, tokens, gated):
    cfg = _config(cfgname)
    q, xq = _layer(dm, dff, tokens, 1, gated)
    tc, programs, images = _tp_case(cfg, q, xq, tokens)
    res, t = compare(cfg, programs, images)
    assert res[0] == "ok" and t.fallbacks == 0
    assert res[1] == tc.predicted_cycles
    assert t.stats["linked_chips"] == sum(c is not None for c in tc.chips)    # one flow for them
    assert np.array_equal(tc.chips[0].unpack_output(t.chips[0].read_mem), q.run_int(xq))


def test_program_cached_and_rerun_with_other_data():
    """A second run of the same programs (plans cached) with other inputs: equal to lockstep."""
    q, xq = _layer(64, 128, 2, 3)
    tc, programs, images = _tp_case(CFG, q, xq, 2)
    compare(CFG, programs, images)
    xq2 = np.random.default_rng(9).integers(-128, 128, xq.shape, dtype=np.int8)
    _, _, images2 = _tp_case(CFG, q, xq2, 2)
    res, t = compare(CFG, programs, images2)
    assert res[0] == "ok" and t.fallbacks == 0
    assert np.array_equal(tc.chips[0].unpack_output(t.chips[0].read_mem), q.run_int(xq2))


# --- random relay chains ----------------------------------------------------------------------

def _port(cfg, a, b):
    return next(p for p in range(cfg.c2c_ports) if cfg.peer(a, p)[0] == b)


def _earliest_recv(cfg, t_send, n):
    """The earliest first RECV element for a SEND of n vectors from t_send (the link's arrival rule)."""
    F = cfg.vector_interval
    return max(a - k * F for k, a in enumerate(arrival_cycles(LinkParams.from_cfg(cfg), cfg.link_latency, t_send, n)))


def relay_chain(cfg, rng, hops=None, slack=None, chain=None, n=None, hop_slack=None):
    """A vector block READ on one chip and passed along a random chain of chips, each hop a RECV and
    a SEND, some through a VXM op (ADD / XOR with an immediate) on the way; the last chip WRITEs
    it.  ``slack``: cycles each RECV starts after the earliest (random if None; ``hop_slack``: {hop: slack}).  Returns (per-chip queue events {queue: [(cycle, line, cycles the queue is taken)]}, images,
    the chain, the hops' RECV slack)."""
    F, lr = cfg.vector_interval, cfg.latency["c2c_recv"]
    pos = {s.name: s.position for s in cfg.slices}
    d_vc = pos["c2c0"] - pos["vxm0"]
    Lr, Lv = cfg.latency["mem_read"], cfg.latency["vxm_alu"]
    t_read_to_send = Lr + pos["c2c0"] - pos["mem7"]
    if chain is None:
        nhops = int(rng.integers(1, 7)) if hops is None else hops
        chain = [int(rng.integers(cfg.chips))]
        while len(chain) <= nhops:
            chain.append(int(rng.choice([c for c in range(cfg.chips) if c != chain[-1]])))
    n = int(rng.integers(1, 4)) if n is None else n
    ev = {c: {} for c in range(cfg.chips)}

    def add(chip, queue, t, line, span=1):
        ev[chip].setdefault(queue, []).append((t, line, span))

    def rep(n):
        return f"\n        REPEAT {n - 1}, {F}" if n > 1 else ""

    t0 = int(rng.integers(0, 5))
    data = rng.integers(-128, 128, (n, cfg.lanes), dtype=np.int8)
    images = [{} for _ in range(cfg.chips)]
    images[chain[0]] = {"mem7": [(0, data)]}
    add(chain[0], "mem7", t0, f"READ e0, 0{rep(n)}", n * F)
    t_send, stream = t0 + t_read_to_send, "e0"
    slacks = []
    for h in range(1, len(chain)):
        a, b = chain[h - 1], chain[h]
        add(a, "c2c0", t_send, f"SEND {_port(cfg, a, b)}, {stream}, n={n}")
        s = int(rng.integers(0, 4)) if slack is None else slack
        s = (hop_slack or {}).get(h, s)
        slacks.append(s)
        t_recv = _earliest_recv(cfg, t_send, n) + s
        add(b, "c2c0", t_recv, f"RECV w0, {_port(cfg, b, a)}, n={n}")
        if h == len(chain) - 1:
            add(b, "mem7", t_recv + lr + pos["c2c0"] - pos["mem7"], f"WRITE w0, 8{rep(n)}", n * F)
        elif rng.random() < 0.5:
            t_send, stream = t_recv + lr, "w0"
        else:
            op = "ADD" if rng.random() < 0.5 else "XOR"
            t_v = t_recv + lr + d_vc
            add(b, "vxm0", t_v, f"{op} e1, w0, #{int(rng.integers(-128, 128))}{rep(n)}", n * F)
            t_send, stream = t_v + Lv + d_vc, "e1"
    return ev, images, chain, slacks


def sources(cfg, ev, tail=None):
    """Assembly per chip from queue events; None if two events of a queue collide."""
    tail = tail or 4 * cfg.vector_interval + 40
    out = []
    for chip in range(cfg.chips):
        qs = ev[chip]
        if not qs:
            out.append(EMPTY)
            continue
        text = []
        for queue, lst in sorted(qs.items()):
            text.append(f".queue {queue}")
            free = 0
            for t, line, span in sorted(lst):
                if t < free:
                    return None
                if t > free:
                    text.append(f"        NOP {t - free}")
                text.append(f"        {line}")
                free = t + span
            text.append(f"        NOP {tail}\n        HALT")
        out.append("\n".join(text) + "\n")
    return out


def test_relay_around_the_tray():
    """7 -> 6 -> ... -> 0 -> 7, with a VXM op on some hops: data from every chip, through every
    chip, back to the first (the tray's flow spans all 8); every chip's state equals lockstep's."""
    rng = np.random.default_rng(5)
    chain = list(range(CFG.chips - 1, -1, -1)) + [CFG.chips - 1]
    ev, images, _, _ = relay_chain(CFG, rng, slack=1, chain=chain)
    srcs = sources(CFG, ev)
    assert srcs is not None
    res, t = compare(CFG, [assemble(s, CFG, f"chip{i}.s") for i, s in enumerate(srcs)], images)
    assert res[0] == "ok" and t.fallbacks == 0
    assert t.stats["linked_chips"] == CFG.chips


def _mutant(rng, cfg):
    """A chain with one change: a hop's RECV before the vectors arrive, or long after them (clean,
    unless more vectors than an RX buffer holds wait), or one change to its events (``_mutate``)."""
    kind = int(rng.integers(3))
    if kind == 2:
        ev, images, _, _ = relay_chain(cfg, rng)
        _mutate(rng, ev, cfg)
        return ev, images
    hops = int(rng.integers(1, 5))
    h = int(rng.integers(1, hops + 1))
    late = int(rng.integers(1, 6)) if kind == 0 else int(rng.integers(20, 200))
    n = int(rng.integers(1, cfg.link["rx_vectors"] + 3))
    ev, images, _, _ = relay_chain(cfg, rng, hops=hops, n=n, hop_slack={h: -late if kind == 0 else late})
    return ev, images


def _mutate(rng, ev, cfg):
    """One change to a chain's events: a RECV earlier, a SEND one cycle off, a DESKEW somewhere, a
    RECV of fewer vectors."""
    chip = int(rng.choice([c for c in ev if ev[c]]))
    queue = str(rng.choice(sorted(ev[chip])))
    lst = ev[chip][queue]
    i = int(rng.integers(len(lst)))
    t, line, span = lst[i]
    kind = int(rng.integers(4))
    if kind == 0 and line.startswith("RECV"):
        lst[i] = (max(0, t - int(rng.integers(1, 8))), line, span)
    elif kind == 1 and line.startswith("SEND"):
        lst[i] = (max(0, t + int(rng.choice([-1, 1]))), line, span)
    elif kind == 2:
        E = cfg.link["epoch"]
        lst.append((int(rng.integers(0, t + 2)), "DESKEW", E))
    elif line.startswith("RECV") and not line.endswith("n=1"):
        n = int(line.rsplit("n=", 1)[1])
        lst[i] = (t, line.rsplit("n=", 1)[0] + f"n={n - 1}", span)
    else:
        lst[i] = (t + int(rng.integers(1, 4)), line, span)


@pytest.mark.parametrize("cfgname", ["tray", "tray+burst"])
@pytest.mark.parametrize("mutants", [False, True])
def test_random_relay_chains(mutants, cfgname):
    cfg = _config(cfgname)
    rng = np.random.default_rng(11 + mutants)
    ok = errors = 0
    for _ in range(30):
        ev, images = _mutant(rng, cfg) if mutants else relay_chain(cfg, rng)[:2]
        srcs = sources(cfg, ev)
        if srcs is None:
            continue
        res, t = compare(cfg, [assemble(s, cfg, f"chip{i}.s") for i, s in enumerate(srcs)], images)
        if res[0] == "ok":
            ok += 1
            assert t.fallbacks == 0
        else:
            errors += 1
            assert t.fallbacks == 1
    assert ok >= 5 and (errors >= 5 or not mutants)


def test_link_flips_run_in_lockstep():
    """Injected link bit errors go through the wire codec in the lockstep tray only."""
    rng = np.random.default_rng(2)
    ev, images, _, _ = relay_chain(CFG, rng, hops=2, slack=0)
    progs = [assemble(s, CFG) for s in sources(CFG, ev)]
    t = GoldenTray(CFG, link_flips=lambda a, port, i: [])
    t.load_programs(progs)
    for g, image in zip(t.chips, images):
        g.write_image(image)
    r = t.run()
    assert t.fallbacks == 1
    ref, _ = outcome(CFG, progs, images, True)
    assert r.cycles == ref[1] and r.link_vectors == ref[2]


def test_deskew_boundaries():
    """Queues parking in DESKEW around an epoch boundary, with a READ -> WRITE in flight near it:
    clean (the chip quiet at the boundary) or the DESKEW errors, as in lockstep; a SEND after the
    boundary to another chip."""
    E, F = CFG.link["epoch"], CFG.vector_interval
    data = np.arange(2 * CFG.lanes, dtype=np.int8).reshape(2, CFG.lanes)
    seen = set()
    for k in (1, 3, 4, 5, 6, 8, 12):
        for j in (0, 7, E - 1, E + 3):
            src = f"""
    .queue mem0
        NOP {E - k}
        READ e0, 0, n=2
        DESKEW
        READ e0, 1
        NOP 40
        HALT
    .queue mem1
        NOP {E - k + 3}
        WRITE e0, 4, n=2
        DESKEW
        HALT
    .queue mem7
{f"        NOP {j}" if j else ""}
        DESKEW
        READ e0, 0
        NOP {F}
        HALT
    .queue c2c0
        DESKEW
        NOP 3
        SEND 0, e0
        NOP 10
        HALT
    """
            peer, port = CFG.peer(0, 0)
            rx = f"""
    .queue c2c0
        NOP {E + 3 + CFG.link_latency}
        RECV w0, {port}
        NOP 10
        HALT
    """
            srcs = [src] + [EMPTY] * (CFG.chips - 1)
            srcs[peer] = rx
            progs = [assemble(s, CFG, f"chip{i}.s") for i, s in enumerate(srcs)]
            res, t = compare(CFG, progs, [{"mem0": [(0, data)], "mem7": [(0, data)]}] + [{}] * (CFG.chips - 1))
            assert t.fallbacks == (res[0] == "error")
            seen.add(res[0] if res[0] == "ok" else res[1].split(": ", 1)[1][:30])
    assert "ok" in seen and len(seen) >= 3, seen


def test_max_cycles():
    """A tray that runs past max_cycles: the lockstep tray's error, at every limit around the end."""
    rng = np.random.default_rng(4)
    ev, images, _, _ = relay_chain(CFG, rng, hops=2, slack=0)
    progs = [assemble(s, CFG) for s in sources(CFG, ev)]
    t = GoldenTray(CFG)
    t.load_programs(progs)
    end = max(t.run().cycles)
    for limit in (end - 1, end, end + 1):
        got = []
        for lockstep in (False, True):
            t = GoldenTray(CFG)
            t.load_programs(progs)
            for g, image in zip(t.chips, images):
                g.write_image(image)
            try:
                got.append(("ok", t.run(max_cycles=limit, lockstep=lockstep).cycles))
            except ProgramError as e:
                got.append(("error", str(e)))
        assert got[0] == got[1]
        assert (got[0][0] == "error") == (limit <= end)


def test_one_tray_run_twice():
    """The same tray run twice (MEM and unit state persist between runs, as on the chips): the
    second run reads what the first left, as the lockstep tray's second run does."""
    q, xq = _layer(64, 128, 2, 6)
    tc, programs, images = _tp_case(CFG, q, xq, 2)
    trays = []
    for lockstep in (False, True):
        t = GoldenTray(CFG)
        t.load_programs(programs)
        for g, image in zip(t.chips, images):
            g.write_image(image)
        r1, r2 = t.run(lockstep=lockstep), t.run(lockstep=lockstep)
        assert r1.cycles == r2.cycles and t.fallbacks == 0
        trays.append(t)
    for a, b in zip(*(t.chips for t in trays)):
        for d in ("mem",) + _STATE:
            for k in getattr(a, d):
                assert np.array_equal(getattr(a, d)[k], getattr(b, d)[k]), (d, k)
