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
