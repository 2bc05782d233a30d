"""SmolLM2-135M through lqer from PyTorch: load the GGUF with Hugging Face
transformers, calibrate and quantize every linear layer of the decoder with
lqer.torch, and measure held-out perplexity the way the C++ engine does
(`llama perplexity`: windows of --ctx tokens from an empty cache, the second
half of each window scored).

    python python/examples/smollm2_perplexity.py --quant l2qer --rank 32 \\
        --calib CALIB.txt --text EVAL.txt [--ctx 512 --chunks 8 --calib-chunks 8]

Prints one JSON object: the configuration, the float and the quantized
perplexity, timings, bits per weight. The model and the KJV texts come from
scripts/fetch_smollm2.sh (cache: $LQER_CACHE/smollm2, default
~/.cache/lqer/smollm2). Needs torch, transformers, gguf, accelerate.

The quantization methods are the C++ engine's names: plain (rank 0), lqer
(policy identity), l2qer (mean_abs), rms, whiten (Gram matrices). The output
projection (lm_head, tied to the embeddings) stays float, as in the engine's
default.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time

import numpy as np
import torch

import lqer
import lqer.torch as lt

METHODS = {"plain": "identity", "lqer": "identity", "l2qer": "mean_abs", "rms": "rms", "whiten": "whiten"}


def default_dir() -> pathlib.Path:
    cache = pathlib.Path(os.environ.get("LQER_CACHE", pathlib.Path.home() / ".cache" / "lqer"))
    return cache / "smollm2"


def load_model(path: pathlib.Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model.eval()
    return tok, model


def windows(ids: list, ctx: int, limit: int) -> list:
    n = len(ids) // ctx
    if limit > 0:
        n = min(n, limit)
    if n == 0:
        raise SystemExit(f"the text has {len(ids)} tokens, fewer than one window of {ctx}")
    return [torch.tensor(ids[i * ctx : (i + 1) * ctx]).unsqueeze(0) for i in range(n)]


@torch.no_grad()
def perplexity(model, wins: list, ctx: int) -> tuple:
    """llama.cpp's / the engine's: −log p(t[j+1] | t[..j]) for j in [ctx/2, ctx−1)."""
    nll, count = 0.0, 0
    first = ctx // 2
    for w in wins:
        logits = model(w).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        tgt = w[0, first + 1 :]
        nll -= logp[first : ctx - 1].gather(1, tgt.unsqueeze(1)).sum().item()
        count += ctx - 1 - first
    return math.exp(nll / count), count


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(default_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--text", default=str(default_dir() / "text" / "eval.txt"))
    ap.add_argument("--calib", default=str(default_dir() / "text" / "calib.txt"))
    ap.add_argument("--quant", choices=sorted(METHODS), default="l2qer")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=8, help="evaluation windows (0: all)")
    ap.add_argument("--calib-chunks", type=int, default=8)
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--rule", default="lqer")
    ap.add_argument("--solver", default="randomized")
    ap.add_argument("--threads", type=int, default=0, help="lqer's and torch's threads (0: their defaults)")
    ap.add_argument("--no-float", action="store_true", help="skip the float model's perplexity")
    a = ap.parse_args(argv)
    if a.threads > 0:
        lqer.set_num_threads(a.threads)
        torch.set_num_threads(a.threads)

    t0 = time.perf_counter()
    tok, model = load_model(pathlib.Path(a.model))
    load_s = time.perf_counter() - t0
    text = pathlib.Path(a.text).read_text(encoding="utf-8")
    evals = windows(tok(text, add_special_tokens=False).input_ids, a.ctx, a.chunks)
    out = {"model": a.model, "quant": a.quant, "rank": 0 if a.quant == "plain" else a.rank, "ctx": a.ctx,
           "windows": len(evals), "block": a.block, "rule": a.rule, "kernel_path": lqer.kernel_paths()["best"],
           "load_seconds": load_s}
    if not a.no_float:
        out["float_perplexity"], out["scored_tokens"] = perplexity(model, evals, a.ctx)

    policy = METHODS[a.quant]
    decoder = ["model.layers.*"]  # the 210 linears; lm_head (tied) stays float
    stats = None
    t1 = time.perf_counter()
    if policy != "identity":
        calib_text = pathlib.Path(a.calib).read_text(encoding="utf-8")
        cal = windows(tok(calib_text, add_special_tokens=False).input_ids, a.ctx, a.calib_chunks)
        stats = lt.calibrate(model, cal, layers=decoder, gram=policy == "whiten")
        out["calib_tokens"] = len(cal) * a.ctx
    t2 = time.perf_counter()
    lt.quantize(model, stats, rank=0 if a.quant == "plain" else a.rank, policy=policy, layers=decoder,
                block=a.block, rule=a.rule, solver=a.solver)
    t3 = time.perf_counter()
    q = [m for m in model.modules() if isinstance(m, lt.LQERLinear)]
    weights = sum(m.in_features * m.out_features for m in q)
    out["linears"] = len(q)
    out["bits_per_weight"] = sum(m.layer.bits_per_weight * m.in_features * m.out_features for m in q) / weights
    out["weight_format"] = q[0].layer.weight_format
    out["calibrate_seconds"], out["quantize_seconds"] = t2 - t1, t3 - t2
    out["perplexity"], out["scored_tokens"] = perplexity(model, evals, a.ctx)
    out["eval_seconds"] = time.perf_counter() - t3
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
