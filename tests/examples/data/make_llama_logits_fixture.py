#!/usr/bin/env python3
"""Makes llama_logits_fixture.json: what PyTorch + transformers compute on
SmolLM2-135M-Instruct.Q4_1.gguf, for tests/examples/test_llama_model.cpp.

transformers loads the GGUF through the `gguf` package, dequantizes every tensor
to float32 and undoes llama.cpp's Q/K row permutation (its LlamaTensorProcessor),
then runs its own Llama forward (rotate_half RoPE) in float32. Nobody here wrote
any of that, which is the point.

What the fixture holds (token ids, not text, so it does not depend on a tokenizer;
the ids of the text sequences were made with transformers' tokenizer here):
  - for each sequence and each position: the top-k logits (ids and values), the
    logits of a fixed subset of the vocabulary, max |logit| over the whole row and
    the row's log-sum-exp (float64 over the float32 logits);
  - the sum of -log p(next token) over the sequence (the log-likelihood);
  - the last sequence is long enough that decoding it token by token exercises
    the KV cache over many positions;
  - a checksum of every weight exactly as transformers holds it (q_proj and
    k_proj in its un-permuted order), which pins down the permutation.

Runs only where torch, transformers, gguf and numpy are installed:
    python3 -m venv /tmp/venv-fwd && /tmp/venv-fwd/bin/pip install torch==2.13.0 \
        && /tmp/venv-fwd/bin/pip install transformers gguf numpy sentencepiece accelerate
    /tmp/venv-fwd/bin/python tests/examples/data/make_llama_logits_fixture.py [MODEL.gguf]
"""
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

TOP_K = 8
SUBSET = 48  # vocabulary entries whose logits are kept at every position

TEXTS = [
    "In the beginning God created the heaven and the earth.",
    "The quick brown fox, 12345 times: jumps over the lazy dog?!",
]
LONG_TEXT = (
    "And the earth was without form, and void; and darkness was upon the face of the deep. "
    "And the Spirit of God moved upon the face of the waters. And God said, Let there be light: "
    "and there was light. And God saw the light, that it was good: and God divided the light from "
    "the darkness. And God called the light Day, and the darkness he called Night."
)


def checksum(w):
    """Σ bits(x[i]) · (2i + 1) mod 2^64 over the float32 elements in row-major
    order (tests/io/test_gguf_smollm2.cpp's checksum): equal checksums mean
    bit-identical tensors, barring a collision."""
    bits = w.detach().to(torch.float32).contiguous().numpy().reshape(-1).view(np.uint32).astype(np.uint64)
    idx = 2 * np.arange(bits.size, dtype=np.uint64) + 1
    with np.errstate(over="ignore"):
        return int(np.sum(bits * idx, dtype=np.uint64))


def f32(x):
    """Floats as the shortest decimal that reads back as the same float32."""
    return [float(repr(np.float32(v)).replace("np.float32(", "").rstrip(")")) for v in np.asarray(x).reshape(-1)]


def model_path():
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    if os.environ.get("LQER_SMOLLM2_GGUF"):
        return Path(os.environ["LQER_SMOLLM2_GGUF"])
    cache = Path(os.environ.get("LQER_CACHE", Path.home() / ".cache" / "lqer"))
    return cache / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main():
    path = model_path()
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model.eval()
    cfg = model.config
    vocab = cfg.vocab_size

    seqs = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    rng = np.random.default_rng(20)
    seqs.append([int(i) for i in rng.integers(0, vocab, size=20)])  # ids no text would give
    seqs.append(tok(LONG_TEXT, add_special_tokens=False)["input_ids"])
    # A fixed subset: a stride over the vocabulary plus the special tokens.
    subset = sorted(set([0, 1, 2] + [int((i * 1021 + 7) % vocab) for i in range(SUBSET - 3)]))

    out = {
        "made_by": "tests/examples/data/make_llama_logits_fixture.py",
        "model_file": path.name,
        "model_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": "float32",
        "vocab_subset": subset,
        "sequences": [],
        "weights": [],
    }
    with torch.no_grad():
        for ids in seqs:
            logits = model(torch.tensor([ids])).logits[0].to(torch.float32)  # [T, vocab]
            l64 = logits.to(torch.float64)
            lse = torch.logsumexp(l64, dim=-1)
            nll = float(sum(lse[t] - l64[t, ids[t + 1]] for t in range(len(ids) - 1)))
            top = torch.topk(logits, TOP_K, dim=-1)
            out["sequences"].append({
                "ids": ids,
                "top_ids": top.indices.tolist(),
                "top_logits": [f32(r) for r in top.values.numpy()],
                "subset_logits": [f32(r) for r in logits[:, subset].numpy()],
                "max_abs_logit": f32(logits.abs().max(dim=-1).values.numpy()),
                "logsumexp": lse.tolist(),
                "nll_sum": nll,
            })

        # Every weight as transformers holds it (q_proj and k_proj un-permuted),
        # by checksum: the C++ test recomputes it from its own decoding, reading
        # attn_q / attn_k through its row map.
        layers = model.model.layers
        for b, layer in enumerate(layers):
            a, mlp = layer.self_attn, layer.mlp
            for name, w in [("attn_q", a.q_proj.weight), ("attn_k", a.k_proj.weight), ("attn_v", a.v_proj.weight),
                            ("attn_output", a.o_proj.weight), ("ffn_gate", mlp.gate_proj.weight),
                            ("ffn_up", mlp.up_proj.weight), ("ffn_down", mlp.down_proj.weight),
                            ("attn_norm", layer.input_layernorm.weight),
                            ("ffn_norm", layer.post_attention_layernorm.weight)]:
                out["weights"].append({"gguf": f"blk.{b}.{name}.weight", "checksum": checksum(w)})
        out["weights"].append({"gguf": "token_embd.weight", "checksum": checksum(model.model.embed_tokens.weight)})
        out["weights"].append({"gguf": "output_norm.weight", "checksum": checksum(model.model.norm.weight)})
        tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        out["tied_output"] = bool(tied)

    dst = Path(__file__).with_name("llama_logits_fixture.json")
    dst.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"{dst}: {len(seqs)} sequences ({[len(s) for s in seqs]} tokens), {dst.stat().st_size} bytes")


if __name__ == "__main__":
    main()
