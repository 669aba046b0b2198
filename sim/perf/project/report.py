"""The projection's output: the text of one projection and of the fleet study, the plots,
docs/projection.md (``projection.md.in`` filled in with the computed numbers) and the
``tinylpu project`` command."""

from __future__ import annotations

import json
import math
import re
from importlib import resources
from pathlib import Path

from tinylpu.sim.perf.project.inputs import ProjectError, load_chip, load_gpu, load_model, pareto_config, published
from tinylpu.sim.perf.project.model import _best_at, calibrate, fleet, frontier, pareto, project

__all__ = [
    "compare",
    "describe",
    "describe_fleet",
    "main",
    "plot_fleet",
    "plot_pareto",
    "render_doc",
    "sensitivity",
    "write_doc",
]


# ------------------------------------------------------------------------------------------
# comparison with published figures: the only code that reads configs/project/published.yaml
# ------------------------------------------------------------------------------------------

def compare(cal=None):
    cal = cal or calibrate()
    rows = []
    for p in published():
        r = project(p["chip"], p["model"], cal=cal)
        err = r["tokens_per_s_per_user"] / p["tokens_per_s_per_user"] - 1
        lo, hi = r["tokens_per_s_per_user_with_host"]
        rows.append({**p, "projected": r["tokens_per_s_per_user"], "error": err, "chips": r["chips"],
                     "with_host": [lo, hi], "result": r})
    return rows


#: One input at a time, moved to the other end of its stated range (label, why, how): `how` returns
#: (chip changes, deployment changes, project() keyword arguments) for a projection.
SENSITIVITY = [
    ("weight install rate 20,480 B/cycle", "all 64 streams (2 x 32) of 320 B feed the MXMs, twice ISCA 2020's 409,600 "
     "weights in 40 cycles", lambda c, d: ({"weight_install_bytes_per_cycle": 20480}, {}, {})),
    ("tensor parallel 1 (pure pipeline)", "a layer's chips stream one after the other, not at once",
     lambda c, d: ({}, {"tensor_parallel": 1}, {})),
    ("every matrix over all of a layer's chips", "Megatron-style tensor parallelism: attention and FFN each split "
     "over the whole layer group instead of the chips their bytes fill", lambda c, d: ({}, {"megatron": True}, {})),
    ("twice the chips", "each layer spread over twice as many chips",
     lambda c, d: ({}, {"chips": 2 * c}, {})),
    ("all weights and KV int8", "1 byte per weight and KV element instead of the deployment's precision",
     lambda c, d: ({}, {"precision": {"attention": 1, "ffn": 1, "kv": 1, "embedding": 1}}, {})),
    ("half the context", "the run's KV held half the deployment's context",
     lambda c, d: ({}, {}, {"context": d["context"] // 2})),
    ("no vector work", "norms, RoPE, softmax and routing cost nothing",
     lambda c, d: ({}, {}, {"vector": False})),
    ("VXM without chaining", "each element-wise op a separate pass through MEM (vxm_chain 1)",
     lambda c, d: ({"vxm_chain": 1}, {}, {})),
    ("C2C hop 350 ns", "LP30's reported chip-to-chip latency instead of TSP v1's 722 ns",
     lambda c, d: ({"c2c": "hop350"}, {}, {})),
]


def sensitivity(rows, cal=None):
    """For each TSP v1 comparison row and each input of SENSITIVITY: the projected tokens/s per user
    with that input moved, and the ranking by the largest change (host overhead from its range)."""
    from tinylpu.sim.perf.project.model import deployment
    cal = cal or calibrate()
    tsp = [r for r in rows if r["chip"] == "tsp-v1"]
    table = []
    for label, why, how in SENSITIVITY:
        vals = []
        for r in tsp:
            chip, model = load_chip(r["chip"]), load_model(r["model"])
            base = r["result"]
            dep = deployment(chip, model)
            cc, dd, kw = how(base["chips"], dep)
            if cc.get("c2c") == "hop350":
                cc = {"c2c": dict(chip["c2c"], hop_latency_ns=350)}
            if dd.get("megatron"):
                n = max(1.0, base["chips_per_layer"])
                dd = {"n_attn": n, "n_ffn": n}
            if "chips" in dd and dep["chips"] is None:
                dd = {}                             # capacity-minimal: 2x the fewest chips
                usable = chip["sram_usable"] * chip["sram_bytes"]
                cc = dict(cc, sram_usable=chip["sram_usable"] / 2) if usable else cc
            p = project(dict(chip, **cc), model, cal=cal, deploy=dd or None, **kw)
            vals.append(p["tokens_per_s_per_user"])
        table.append({"input": label, "why": why, "values": vals,
                      "changes": [v / r["projected"] - 1 for v, r in zip(vals, tsp)]})
    lo_host = [r["with_host"][0] for r in tsp]
    table.append({"input": "host overhead at its high end", "why": "the stated unknown's upper bound per token",
                  "values": lo_host, "changes": [v / r["projected"] - 1 for v, r in zip(lo_host, tsp)]})
    table.sort(key=lambda e: -max(abs(math.log1p(c)) for c in e["changes"]))
    return {"models": [r["model"] for r in tsp], "published": [r["tokens_per_s_per_user"] for r in tsp],
            "projected": [r["projected"] for r in tsp], "rows": table}


# ------------------------------------------------------------------------------------------
# text output
# ------------------------------------------------------------------------------------------

def _fmt_bytes(n):
    for unit, s in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= s:
            return f"{n / s:.2f} {unit}"
    return f"{n:.0f} B"


def describe(r):
    pr = r["precision"]
    lo, hi = r["tokens_per_s_per_user_with_host"]
    lines = [f"{r['model']} on {r['chip']} (context {r['context']} tokens, batch 1; deployment {r['deployment']})",
             f"  precision         attention {pr['attention']:g} B, FFN {pr['ffn']:g} B, KV {pr['kv']:g} B, "
             f"tables {pr['embedding']:g} B per element",
             f"  parameters        {r['params'] / 1e9:.1f} B ({r['active_params'] / 1e9:.1f} B active per token), "
             f"weights {_fmt_bytes(r['weight_bytes'])}, KV of one user {_fmt_bytes(r['kv_bytes_per_user'])}",
             f"  chips             {r['chips']} ({r['chips_per_layer']} per layer, {r['layers_per_chip']} layers per "
             f"chip, {r['pipeline_stages']} pipeline stages); {r['nodes']} nodes = {r['chips_deployed']} chips deployed",
             f"  weight rate       {r['weight_bytes_per_cycle']:,.0f} B/cycle per chip",
             f"  time per token    {r['time_per_token_s'] * 1e6:,.1f} us",
             f"  tokens/s per user {r['tokens_per_s_per_user']:,.0f} ({lo:,.0f}-{hi:,.0f} with the host overhead "
             f"range {r['host_overhead_s'][0] * 1e6:g}-{r['host_overhead_s'][1] * 1e6:g} us, a stated unknown)",
             f"  vector work       {r['vector_cycles_per_layer']:,} cycles per layer (compiled)"]
    for k, v in r["breakdown_s"].items():
        lines.append(f"    {k:36s} {v * 1e6:10,.1f} us ({v / r['time_per_token_s']:5.1%})")
    if "energy_per_token_j" in r:
        lines.append(f"  power             {r['power_w'] / 1e3:,.1f} kW for the deployed chips; "
                     f"{r['energy_per_token_j']:.2f} J per token at batch 1")
    return "\n".join(lines)


def plot_pareto(pp, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    curves = [(f"{g} (GPU only)", pts, "o") for g, pts in pp["gpu_only"].items()]
    curves.append((f"Vera Rubin NVL72 + LPX ({pp['chip']} FFN / experts)", pp["afd"], "s"))
    for label, pts_all, mk in curves:
        ax.scatter([p["tps_user"] for p in pts_all], [p["tps_per_mw"] for p in pts_all], s=6, alpha=0.3)
        pts = frontier(pts_all)
        ax.plot([p["tps_user"] for p in pts], [p["tps_per_mw"] for p in pts], marker=mk, ms=4, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens/s per user")
    ax.set_ylabel("tokens/s per MW")
    ax.set_title(f"{pp['model']}, context {pp['context']:,}: Pareto frontiers (analytical)", fontsize=9)
    ax.axvline(400, color="grey", lw=0.6, ls=":")
    ax.axvline(1000, color="grey", lw=0.6, ls=":")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", lw=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_fleet(fr, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = [p["afd_power_share"] * 100 for p in fr["curve"]]
    ys = [p["tokens_per_s_per_mw"] for p in fr["curve"]]
    ax.plot(xs, ys, marker="o", ms=3)
    b = fr["best"]
    ax.plot([b["afd_power_share"] * 100], [b["tokens_per_s_per_mw"]], "r*", ms=12,
            label=f"best: {b['afd_power_share']:.0%} of the power to AFD pods "
                  f"({b['lpu_power_share']:.0%} to LPUs)")
    ax.axvline(25, color="grey", ls=":", lw=0.8, label="published commentary: ~25 % Groq-based")
    ax.set_xlabel("share of the power budget in Rubin + LPX pods (%)")
    ax.set_ylabel("tokens/s per MW (whole mix, every class at its target)")
    ax.set_title(f"Fleet mix: {fr['spec']['model']}, {fr['spec']['power_mw']} MW")
    ax.legend(fontsize=8)
    ax.grid(True, lw=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def describe_fleet(fr):
    s = fr["spec"]
    lines = [f"fleet {fr['source']}: {s['model']} on {s['chip']} + GPUs, {s['power_mw']} MW, context "
             f"{fr['pareto']['context']:,}",
             "  class        share  target tok/s/user   AFD: batch, tok/s/user, tok/s/MW     GPU only: batch, tok/s/user, tok/s/MW"]
    for c, o in zip(s["classes"], fr["operating_points"]):
        def f(x):
            return f"{x['batch']:5d} {x['tps_user']:9,.0f} {x['tps_per_mw']:12,.0f}" if x else "   cannot meet the target   "
        lines.append(f"  {c['name']:12s} {c['share']:5.2f} {c['tokens_per_s_per_user']:10,.0f}          "
                     f"{f(o['afd'])}       {f(o['gpu'])}")
    b = fr["best"]
    lines.append(f"  best split: {b['afd_power_share']:.0%} of the power in AFD pods ({b['lpu_power_share']:.1%} in "
                 f"LPU chips), {b['tokens_per_s_per_mw']:,.0f} tokens/s per MW for the whole mix")
    g0 = fr["curve"][0]
    lines.append(f"  GPU only: {g0['tokens_per_s_per_mw']:,.0f} tokens/s per MW"
                 + ("" if g0["meets_targets"] else " (cannot meet every class's target)"))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# docs/projection.md
# ------------------------------------------------------------------------------------------

def write_doc(path="docs/projection.md", cal=None):
    cal = cal or calibrate()
    docs = Path(path).parent
    rows = compare(cal)
    pp = pareto(cal=cal)
    plot_pareto(pp, docs / "projection_pareto.png")
    fr = fleet(cal=cal)
    plot_fleet(fr, docs / "fleet.png")
    text = render_doc(cal, rows, pp, fr, sensitivity(rows, cal))
    Path(path).write_text(text)
    return text


def _fill(template, values):
    """``${name}`` -> values[name]; a line that is only ``${name}`` with a list value -> those lines."""
    out = []
    for line in template.splitlines():
        if line.startswith("#!"):
            continue
        m = re.fullmatch(r"\$\{(\w+)\}", line)
        if m and isinstance(values[m.group(1)], list):
            out += values[m.group(1)]
            continue
        out.append(re.sub(r"\$\{(\w+)\}", lambda m: str(values[m.group(1)]), line))
    return out


def _template():
    return resources.files("tinylpu.sim.perf.project").joinpath("projection.md.in").read_text()


def _pct(x):
    return f"{x:+.0%}"


def render_doc(cal, rows, pp, fr, sens=None):
    from tinylpu.sim.perf.project.model import _peer_Bps
    sens = sens or sensitivity(rows, cal)
    pc = pareto_config()
    tsp = load_chip("tsp-v1")
    v = {"cal_points": len(cal.points), "cal_a": f"{cal.a:g}", "cal_c0": f"{cal.c0:g}", "cal_c_lat": f"{cal.c_lat:g}",
         "cal_c_dist": f"{cal.c_dist:g}", "cal_c_tok": f"{cal.c_tok:g}", "cal_max_residual": f"{cal.max_residual:g}",
         "tsp_install": f"{tsp['weight_install_bytes_per_cycle']:,.0f}", "fill_stages": "6 (7)",
         "tsp_peer_gbs": f"{_peer_Bps(tsp) / 1e9:.2f}", "tsp_hop_ns": f"{tsp['c2c']['hop_latency_ns']:g}",
         "tsp_host_us": "{:g}-{:g}".format(*tsp["host_overhead_us"])}
    v["vector_cycles"] = ", ".join(f"{r['model']} {r['result']['vector_cycles_per_layer']:,}" for r in rows)

    # against published figures
    v["published_rows"] = out = []
    for r in rows:
        res = r["result"]
        big = max(res["breakdown_s"].items(), key=lambda kv: kv[1])
        pub = f"{'>= ' if r.get('at_least') else '~'}{r['tokens_per_s_per_user']:,}"
        err = (_pct(r["error"]) if not r.get("at_least") else
               ("meets it" if r["projected"] >= r["tokens_per_s_per_user"] else _pct(r["error"])))
        pr = res["precision"]
        dep = (f"{res['chips']} ({res['chips_per_layer']:g}), {pr['attention']:g}/{pr['ffn']:g}/{pr['kv']:g} B, "
               f"{res['context']:,}")
        lo, hi = r["with_host"]
        out.append(f"| {r['chip']} | {r['model']} | {dep} | {r['projected']:,.0f} | {lo:,.0f}-{hi:,.0f} | {pub} | "
                   f"{err} | {big[0]} {big[1] / res['time_per_token_s']:.0%} |")
    t = [r for r in rows if r["chip"] == "tsp-v1"]
    v["residual_summary"] = ", ".join(f"{r['model']} {_pct(r['error'])}" for r in t) + (
        " (all within +-25 %)" if all(abs(r["error"]) <= 0.25 for r in t) else "")
    keys = list(rows[0]["result"]["breakdown_s"])
    v["breakdown_table"] = out = ["| chip | model | " + " | ".join(keys) + " | total | energy per token (J) |",
                                  "|---|---|" + "---|" * (len(keys) + 2)]
    for r in rows:
        res = r["result"]
        e = f"{res['energy_per_token_j']:.2f}" if "energy_per_token_j" in res else "-"
        out.append(f"| {r['chip']} | {r['model']} | " + " | ".join(f"{res['breakdown_s'][k] * 1e6:,.1f}" for k in keys)
                   + f" | {res['time_per_token_s'] * 1e6:,.1f} | {e} |")
    v["sens_header"] = " | ".join(f"{m} ({p:,.0f} projected)" for m, p in zip(sens["models"], sens["projected"]))
    v["sens_sep"] = "---|" * len(sens["models"])
    v["sens_rows"] = [f"| {i} | {e['input']} | {e['why']} | "
                      + " | ".join(f"{x:,.0f} ({_pct(c)})" for x, c in zip(e["values"], e["changes"])) + " |"
                      for i, e in enumerate(sens["rows"], 1)]
    v["error_notes"] = [f"- {line}" for line in _error_notes(rows, sens)]

    # Pareto
    gpus = list(pp["gpu_only"])
    v.update(pp_model=pp["model"], pp_context=f"{pp['context']:,}", pp_lpu_chips=f"{pp['lpu_chips']:,}",
             pp_chip=pp["chip"], gpu_names=", ".join(gpus), kernels=load_gpu(gpus[0])["kernels_per_layer"])
    curves = [(g, frontier(pp["gpu_only"][g])) for g in gpus] + [(f"{pc['afd_gpu']} + LPX", frontier(pp["afd"]))]
    v["pareto_header"] = " | ".join(f"{name}: GPUs, tok/s/user, tok/s/MW" for name, _ in curves)
    v["pareto_sep"] = "---|" * len(curves)
    v["pareto_rows"] = out = []
    for B in pc["batches"]:
        cells = []
        for name, pts in curves:
            best = [p for p in pts if p["batch"] == B]
            cells.append("; ".join(f"{p['gpus']}{'x' + str(p['groups']) if 'groups' in p else ''}, "
                                   f"{p['tps_user']:,.0f}, {p['tps_per_mw']:,.0f}" for p in best) or "-")
        out.append(f"| {B} | " + " | ".join(cells) + " |")
    v["pareto_targets"] = _pareto_notes(pp, pc)

    # fleet mix
    s, b = fr["spec"], fr["best"]
    v.update(fleet_power_mw=s["power_mw"], fleet_model=s["model"], fleet_context=f"{fr['pareto']['context']:,}")

    def f(x):
        return f"{x['batch']}, {x['tps_user']:,.0f}, {x['tps_per_mw']:,.0f}" if x else "cannot meet the target"
    v["fleet_rows"] = [f"| {c['name']} | {c['share']:.2f} | {c['tokens_per_s_per_user']:,} | {f(o['afd'])} | "
                       f"{f(o['gpu'])} |" for c, o in zip(s["classes"], fr["operating_points"])]
    v.update(best_afd=f"{b['afd_power_share']:.0%}", best_lpu_1=f"{b['lpu_power_share']:.1%}",
             best_lpu_0=f"{b['lpu_power_share']:.0%}", best_tps_mw=f"{b['tokens_per_s_per_mw']:,.0f}",
             gpu_only_tps_mw=f"{fr['curve'][0]['tokens_per_s_per_mw']:,.0f}",
             gpu_only_note="" if fr["curve"][0]["meets_targets"] else
             " — it cannot meet the fastest class's target at all",
             premium_share=f"{sum(c['share'] for c in s['classes'] if c['tokens_per_s_per_user'] >= 300):.0%}")
    if b["afd_power_share"] < 0.01:
        v["fleet_note"] = ("In this model LPX earns no share: Rubin NVL72 alone meets every class's target (the "
                           "agentic 500 tok/s per user too) at a better tokens/s per MW than Rubin + LPX, because the "
                           "LPX pool that holds a 2T model's experts is a fixed block of power and the GPU side's "
                           "per-layer fixed costs, which AFD does not remove, set the per-user speed. The ~25 % "
                           "quoted would follow from a class whose target Rubin cannot reach alone (1,000 tok/s per "
                           "user: neither configuration reaches it here) or from an LPX pool far smaller or far more "
                           "shared than the capacity this model needs.")
    else:
        v["fleet_note"] = ""
    return "\n".join(_fill(_template(), v)) + "\n"


def _pareto_notes(pp, pc):
    out = []
    gpus = list(pp["gpu_only"])
    for tgt in (400, 1000):
        a = _best_at(pp["afd"], tgt)
        parts = []
        for gname in gpus:
            g = _best_at(pp["gpu_only"][gname], tgt)
            parts.append(f"{gname} {g['tps_per_mw']:,.0f} tokens/s per MW (batch {g['batch']}, {g['gpus']} GPUs)"
                         if g else f"{gname} cannot get there")
        line = f"- At >= {tgt} tokens/s per user: " + "; ".join(parts) + "; "
        line += (f"Vera Rubin + LPX {a['tps_per_mw']:,.0f} (batch {a['batch']}, {a['gpus']} GPUs x {a['groups']} groups"
                 f" + {a['lpu_chips']:,} LP30)." if a else "Vera Rubin + LPX cannot get there.")
        out.append(line)
    a400 = _best_at(pp["afd"], 400)
    g400 = _best_at(pp["gpu_only"][gpus[0]], 400)
    if a400 and g400:
        ratio = a400["tps_per_mw"] / g400["tps_per_mw"]
        out.append(
            f"- **At 400 tokens/s per user the model gives {ratio:.1f}x** for Vera Rubin NVL72 + LPX over "
            f"{gpus[0]}, against NVIDIA's published \"up to 35x\". Where the difference comes from: (1) the LPX pool "
            f"that holds a 2T model's experts in SRAM is {a400['lpu_chips']:,} LP30 chips "
            f"({a400['lpu_chips'] / 256:.0f} racks) drawing power whatever the load, shared here by at most "
            f"{pc['max_attention_groups']} GPU attention groups ({a400['lpu_power_share']:.0%} of the power at that "
            f"point); (2) at a 400K context the GPUs still read every user's KV each token "
            f"(AFD moves the experts, not attention); (3) the per-layer fixed costs of the GPU roofline (kernel "
            f"launches, NVLink collectives) are paid on both sides, and the GPU-LPU network adds two crossings per "
            f"layer; (4) NVIDIA's model shape, precision (likely FP4 on the GPUs), KV format and GB200 operating "
            f"point are not published. For 35x the GB200 point at 400 tokens/s per user would have to sit about "
            f"{35 * g400['tps_per_mw'] / a400['tps_per_mw']:.0f}x lower than this roofline puts it, or the LPX pool be "
            f"shared by far more attention racks than its per-layer time allows here.")
    return out


def _error_notes(rows, sens):
    out = []
    tsp = [r for r in rows if r["chip"] == "tsp-v1"]
    if tsp:
        top = sens["rows"][0]
        out.append(f"TSP v1: {', '.join(r['model'] + ' ' + _pct(r['error']) for r in tsp)}, with every input "
                   f"from a source or a named assumption and none tuned to these speeds. The largest single lever is "
                   f"{top['input']} ({', '.join(_pct(c) for c in top['changes'])}): how a deployment spreads a layer "
                   f"over its chips matters more than any per-chip figure, and it is the input the public record "
                   f"pins down least (\"pipeline parallelism\" for the 70B system, nothing for the 7B).")
        dense = [r for r in tsp if load_model(r["model"])["experts"] == 1]
        per = ", ".join(f"{r['model']} {1e6 / (r['tokens_per_s_per_user'] * load_model(r['model'])['layers']):.1f} "
                        f"us published, {r['result']['time_per_token_s'] * 1e6 / load_model(r['model'])['layers']:.1f}"
                        f" us projected" for r in dense)
        out.append(f"Per layer ({per}): both published dense figures are the same time per layer although the 70B "
                   "layer is 4x the 7B's, as a capacity-filled layer-wise partitioning predicts: a layer's chips are "
                   "about full either way, so a layer costs about one chip's SRAM streamed at 10,240 B/cycle (23 us) "
                   "plus its vector work and C2C hops.")
    for r in rows:
        if r["chip"] != "tsp-v1":
            res = r["result"]
            big = max(res["breakdown_s"].items(), key=lambda kv: kv[1])
            out.append(f"{r['chip']} / {r['model']} on LP30 alone: {r['projected']:,.0f} tokens/s per user on "
                       f"{res['chips']:,} chips at a {res['context']:,}-token context; the largest share is "
                       f"{big[0]} ({big[1] / res['time_per_token_s']:.0%}): one user's KV "
                       f"({res['kv_bytes_per_user'] / 1e9:,.0f} GB) and its softmax sit on the LPUs. The published "
                       f"1,000+ regime is the Rubin + LPX system, where attention and the KV stay on the GPUs "
                       f"(Pareto section below); the standalone LP30 would need the KV spread over many more chips to "
                       f"get there.")
    return out


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------

def main(args):
    if args.compare:
        out = args.output or "docs/projection.md"
        text = write_doc(out)
        print(text)
        print(f"wrote {out}, {Path(out).parent / 'projection_pareto.png'}, {Path(out).parent / 'fleet.png'}")
        return 0
    if args.fleet is not None:
        fr = fleet(args.fleet or None)
        if args.output:
            plot_fleet(fr, args.output)
        if args.json:
            print(json.dumps({k: v for k, v in fr.items() if k != "pareto"}, indent=2))
        else:
            print(describe_fleet(fr))
            if args.output:
                print(f"wrote {args.output}")
        return 0
    if not args.chip or not args.model:
        raise ProjectError("give --chip and --model (or --compare, or --fleet)")
    if args.context is not None and not 0 <= args.context <= 1_000_000_000:     # as a model file's `context`
        raise ProjectError(f"--context {args.context}: must be in [0, 1000000000] (KV tokens)")
    r = project(args.chip, args.model, context=args.context)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(describe(r))
    return 0
