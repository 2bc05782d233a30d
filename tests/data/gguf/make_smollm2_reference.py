#!/usr/bin/env python3
"""Makes tests/data/gguf/smollm2_reference.json: what the `gguf` PyPI package
(ggml's own Python reader, numpy dequantizers) reports for the real model file,
SmolLM2-135M-Instruct.Q4_1.gguf (scripts/fetch_smollm2.sh fetches it; it is
never committed). tests/io/test_gguf_smollm2.cpp compares lqer's reader with it
whenever the model is in the cache.

    /tmp/venv-gguf/bin/python tests/data/gguf/make_smollm2_reference.py "$(bash scripts/fetch_smollm2.sh)"

Recorded: the file's size and header; every metadata key with its type and, for
scalars and strings, its value (arrays: length and a few elements); the count
of tensors per ggml type; and for every tensor its name, type, dims (GGUF
order, ne[0] first), absolute data offset, byte size and a checksum of its
float32 decoding by gguf.quants.dequantize:

    checksum = sum over i of bits(x[i]) * (2 i + 1)   (mod 2^64)

where bits() is the float's IEEE bit pattern as an unsigned integer. Integer
arithmetic makes it exact and independent of summation order, the odd weights
make it depend on every element's position: equal checksums mean the same bits.
A few tensors also get their first values as bit patterns (`head`).
"""
import hashlib
import json
import os
import sys
from collections import Counter
from importlib.metadata import version

import numpy as np
import gguf

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smollm2_reference.json")
HEADS = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_norm.weight", "blk.29.ffn_down.weight",
         "output_norm.weight"]


def checksum(x: np.ndarray) -> int:
    bits = np.ascontiguousarray(x, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    weights = np.arange(bits.size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    with np.errstate(over="ignore"):
        return int(np.sum(bits * weights, dtype=np.uint64))


def field_entry(f):
    types = [gguf.GGUFValueType(t).name.lower() for t in f.types]
    e = {"types": types}  # ["uint32"], ["array", "string"], …
    if types[0] == "array":
        vals = f.contents()
        e["length"] = len(vals)
        e["first"] = vals[:3]
        e["last"] = vals[-1]
    else:
        v = f.contents()
        e["value"] = float(v) if isinstance(v, (float, np.floating)) else v
    return e


def main():
    path = sys.argv[1]
    with open(path, "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()
    r = gguf.GGUFReader(path)
    meta = {k: field_entry(f) for k, f in r.fields.items() if not k.startswith("GGUF.")}
    tensors = []
    for t in r.tensors:
        x = gguf.quants.dequantize(t.data, t.tensor_type)
        e = {"name": t.name, "type": t.tensor_type.name, "dims": [int(d) for d in t.shape],
             "offset": int(t.data_offset), "n_bytes": int(t.n_bytes), "checksum": str(checksum(x))}
        if t.name in HEADS:
            e["head"] = [int(b) for b in np.asarray(x, dtype=np.float32).reshape(-1)[:8].view(np.uint32)]
        tensors.append(e)
    ref = {
        "made_by": f"tests/data/gguf/make_smollm2_reference.py, gguf {version('gguf')}, numpy {np.__version__}",
        "file": os.path.basename(path),
        "file_sha256": sha,
        "file_size": os.path.getsize(path),
        "version": int(r.fields["GGUF.version"].contents()),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "metadata": meta,
        "type_counts": dict(Counter(t["type"] for t in tensors)),
        "tensors": tensors,
    }
    # One line per metadata key and per tensor: small, and diffs read well.
    lines = ["{"]
    for k in ["made_by", "file", "file_sha256", "file_size", "version", "alignment", "data_offset", "type_counts"]:
        lines.append(f" {json.dumps(k)}: {json.dumps(ref[k], ensure_ascii=False)},")
    lines.append(' "metadata": {')
    items = list(meta.items())
    for i, (k, e) in enumerate(items):
        lines.append(f"  {json.dumps(k)}: {json.dumps(e, ensure_ascii=False)}" + ("," if i + 1 < len(items) else ""))
    lines.append(" },")
    lines.append(' "tensors": [')
    for i, e in enumerate(tensors):
        lines.append("  " + json.dumps(e) + ("," if i + 1 < len(tensors) else ""))
    lines.append(" ]")
    lines.append("}")
    with open(OUT, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {OUT}: {len(tensors)} tensors, {ref['type_counts']}", file=sys.stderr)


if __name__ == "__main__":
    main()
