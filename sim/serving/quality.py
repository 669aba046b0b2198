"""Quality of the int8 FFN hand-off against the float model (GGUF weights dequantized, numpy):
perplexity on the shipped English text (sim/serving/data/eval.txt) and greedy top-1 agreement on
the float model's own continuations of the shipped prompts (sim/serving/data/prompts.txt).

Both measure the served arithmetic: the first position of a sequence is the prompt's prefill on
the GPU model (float FFN), every later position's FFNs are the chip's integer arithmetic
(``QuantFFN.run_int``, computed here with the bit-identical float64-BLAS form).

``python -m tinylpu.sim.serving.quality`` prints the numbers (``--json`` for a machine form);
``--cycles`` instead compiles every layer's decode FFN (1 token) for one ``lpu`` chip and prints the
compiler's cycle counts next to the golden model's measured ones.
"""

import argparse
import json
import sys
import time

import numpy as np

from tinylpu.sim.serving.smollm2 import data_text, load_smollm2, prompts

__all__ = ["perplexity", "greedy_float", "agreement", "measure", "layer_cycles"]


def _logprobs(logits):
    lg = np.asarray(logits, np.float64)
    lg = lg - lg.max(axis=1, keepdims=True)
    return lg - np.log(np.exp(lg).sum(axis=1, keepdims=True))


def perplexity(model, tokens, ffn="float"):
    """exp(mean NLL) of tokens[1:] given their prefixes, teacher-forced."""
    lp = _logprobs(model.forward_seq(tokens, ffn))
    toks = np.asarray(tokens)
    return float(np.exp(-lp[np.arange(len(toks) - 1), toks[1:]].mean()))


def greedy_float(model, prompt_ids, n):
    """n greedy tokens from the float model (row kernels)."""
    kv = model.new_kv()
    h = None
    for p, t in enumerate(prompt_ids):
        h = model.step(t, p, kv, "float")
    out = []
    for i in range(n):
        out.append(int(np.argmax(model.logits(h))))
        if i + 1 < n:
            h = model.step(out[-1], len(prompt_ids) + i, kv, "float")
    return out


def agreement(model, prompt_ids, continuation):
    """Teacher-forced on prompt + the float model's greedy continuation: the fraction of the
    continuation's positions where the served model (prompt prefilled in float, every later FFN
    int8 on the chip) picks the same top-1 token.  The first continuation token comes from the
    prefill itself, so it is left out: len(continuation) - 1 positions are compared."""
    seq = list(prompt_ids) + list(continuation)
    lg = model.forward_seq(seq, "int", int_from=len(prompt_ids))
    pred = lg.argmax(axis=1)[len(prompt_ids):len(seq) - 1]
    return int((pred == np.asarray(continuation[1:])).sum()), len(continuation) - 1


def measure(model=None, n_tokens=64):
    t0 = time.perf_counter()
    m = model or load_smollm2()
    tk = m.tokenizer
    ev = tk.encode(data_text("eval.txt"))
    res = {"eval_tokens": len(ev), "ppl_float": perplexity(m, ev, "float"), "ppl_int8": perplexity(m, ev, "int")}
    res["ppl_ratio"] = res["ppl_int8"] / res["ppl_float"]
    per = []
    for p in prompts():
        ids = tk.encode(p)
        cont = greedy_float(m, ids, n_tokens)
        same, n = agreement(m, ids, cont)
        per.append({"prompt": p, "float_text": tk.decode(cont), "agree": same, "positions": n})
    res["agreement"] = sum(x["agree"] for x in per) / sum(x["positions"] for x in per)
    res["prompts"] = per
    res["quantization"] = m.quant_info
    res["wall_s"] = time.perf_counter() - t0
    return res


def layer_cycles(model, config="lpu", tokens=1):
    """Per layer: (predicted, measured) cycles of its FFN programs (every channel group, summed)
    compiled alone for one `config` chip (``compile_ffn``) and run on the golden model with the
    layer's int8 input of random tokens; raises unless the outputs are ``run_int``'s."""
    from tinylpu.config import load_config
    from tinylpu.firmware.compiler import compile_ffn
    from tinylpu.sim.host.api import run_compiled
    cfg = load_config(config)
    rng = np.random.default_rng(0)
    out = []
    for layer, qs in enumerate(model.q):
        pred = meas = 0
        for q in qs:
            xq = rng.integers(-128, 128, size=(tokens, q.d_model)).astype(np.int8)
            c = compile_ffn(q, cfg, tokens)
            r = run_compiled(c, xq)
            if not np.array_equal(r.y, q.run_int(xq)):
                raise AssertionError(f"layer {layer}: the golden model's output is not run_int's")
            pred, meas = pred + c.predicted_cycles, meas + r.cycles
        out.append((pred, meas))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tinylpu.sim.serving.quality", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=64, help="greedy tokens per prompt (default 64)")
    ap.add_argument("--groups", type=int, default=1, help="d_ff channel groups per layer (quant8.py)")
    ap.add_argument("--scheme", choices=("tiles", "channel"), default="tiles",
                    help="int8 scheme (quant8.quantize_swiglu): 'tiles' (served by default: per-tile SiLU "
                         "tables and shifts, hi/lo gated product) or 'channel' (one table and shift per layer)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cycles", action="store_true",
                    help="instead: each layer's decode FFN (1 token) compiled for one lpu chip, predicted vs "
                         "golden-measured cycles")
    ap.add_argument("--write-calibration", metavar="FILE.jsonl", default=None,
                    help="regenerate the sampled part of the calibration corpus into FILE.jsonl and stop")
    args = ap.parse_args(argv)
    if args.write_calibration:
        from tinylpu.sim.serving.smollm2 import generate_calibration_texts
        texts = generate_calibration_texts(load_smollm2(quantized=False))
        with open(args.write_calibration, "w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
        print(f"{args.write_calibration}: {len(texts)} texts")
        return 0
    if args.cycles:
        cyc = layer_cycles(load_smollm2(groups=args.groups, scheme=args.scheme))
        if args.json:
            print(json.dumps({"scheme": args.scheme, "config": "lpu", "tokens": 1, "layers": cyc}))
            return 0
        for layer, (p, m) in enumerate(cyc):
            print(f"layer {layer:2d}: predicted {p} cycles, golden {m}{'' if p == m else '  MISMATCH'}")
        preds = [p for p, _ in cyc]
        print(f"scheme {args.scheme}, 1 token, one lpu chip: {sum(preds) / len(preds):.1f} cycles per layer "
              f"(min {min(preds)}, max {max(preds)}); predicted = golden for every layer: "
              f"{all(p == m for p, m in cyc)}")
        return 0 if all(p == m for p, m in cyc) else 1
    r = measure(load_smollm2(groups=args.groups, scheme=args.scheme), n_tokens=args.tokens)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"perplexity on sim/serving/data/eval.txt ({r['eval_tokens']} tokens): float {r['ppl_float']:.3f}, "
          f"int8 FFN on the chip {r['ppl_int8']:.3f} ({(r['ppl_ratio'] - 1) * 100:+.2f} %)")
    print(f"greedy top-1 agreement over {args.tokens} tokens x {len(r['prompts'])} prompts: "
          f"{r['agreement'] * 100:.1f} %")
    for x in r["prompts"]:
        print(f"  {x['agree']}/{x['positions']}  {x['prompt']!r} -> {x['float_text'][:60]!r}")
    print(f"quantization: {r['quantization']}; {r['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
