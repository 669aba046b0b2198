"""SEND/RECV test programs for a tray config, shared by the golden-tray and RTL-tray tests."""


def rep(n, F):
    return f"        REPEAT {n - 1}, {F}\n" if n > 1 else ""


def sender(cfg, port, n, t_send=3):
    F = cfg.vector_interval
    return f"""
    .queue mem7
        READ e0, 0
{rep(n, F)}        NOP 10
        HALT
    .queue c2c0
        NOP {t_send}
        SEND {port}, e0, n={n}
        NOP {n * F + 4}
        HALT
    """


def receiver(cfg, port, n, t_recv, out_addr=5):
    F, lr = cfg.vector_interval, cfg.latency["c2c_recv"]
    return f"""
    .queue c2c0
        NOP {t_recv}
        RECV w0, {port}, n={n}
        NOP {n * F + 4}
        HALT
    .queue mem7
        NOP {t_recv + lr + 1}
        WRITE w0, {out_addr}
{rep(n, F)}        NOP {F}
        HALT
    """


def burst_cells(p, n):
    """``(word, bit, code)`` of every wire bit of a burst frame of ``n`` vectors that its FEC covers
    (bit ``p.width`` = the K flag): ``code`` "hdr" (the header's sequence number, count and their
    SECDED bits), "frame" (payload and trailer bits: the frame's Hamming code), "k" (a body word's K
    flag, which the receiver ignores).  The header's symbol code and K flag and the padding above
    the header and trailer fields are not covered (a hit there is a framing error or nothing)."""
    out = [(0, b, "hdr") for b in range(4, p.bhdr_bits)]
    last = p.frame_words(n) - 1
    for w in range(1, last + 1):
        bits = range(p.frame_fec_bits) if w == last else range(p.width)
        out += [(w, b, "frame") for b in bits] + [(w, p.width, "k")]
    return out
