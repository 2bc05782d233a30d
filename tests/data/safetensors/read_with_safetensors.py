#!/usr/bin/env python3
"""Reads a safetensors file with Hugging Face's `safetensors` package and prints
what it found as JSON, for tests/io/test_safetensors.cpp (the direction lqer
writes, the reference reads):

    $LQER_PYTHON tests/data/safetensors/read_with_safetensors.py FILE OUT.json

OUT.json: {"metadata": {...}, "tensors": {name: {"dtype", "shape", "hex",
"numpy_dtype"}}}. Every tensor comes from safetensors.deserialize (all dtypes,
raw bytes); when every dtype has a numpy type, the file is also loaded with
safetensors.numpy.load_file and each array must agree with the raw bytes —
"numpy_dtype" then names the array's numpy dtype. Any failure of the package
(it refuses the file) exits non-zero with its message on stderr.
"""
import json
import sys

import numpy as np
import safetensors
import safetensors.numpy


def main(path, out):
    with open(path, "rb") as f:
        blob = f.read()
    with safetensors.safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
    raw = {name: info for name, info in safetensors.deserialize(blob)}
    tensors = {
        name: {"dtype": info["dtype"], "shape": list(info["shape"]), "hex": bytes(info["data"]).hex()}
        for name, info in raw.items()
    }
    numpy_types = safetensors.numpy._TYPES
    if all(t["dtype"] in numpy_types for t in tensors.values()):
        arrays = safetensors.numpy.load_file(path)
        if set(arrays) != set(tensors):
            sys.exit(f"load_file gave tensors {sorted(arrays)}, deserialize {sorted(tensors)}")
        for name, a in arrays.items():
            t = tensors[name]
            if list(a.shape) != t["shape"] or np.ascontiguousarray(a).tobytes().hex() != t["hex"]:
                sys.exit(f"{name}: load_file and deserialize disagree")
            t["numpy_dtype"] = str(a.dtype)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"metadata": metadata, "tensors": tensors}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
