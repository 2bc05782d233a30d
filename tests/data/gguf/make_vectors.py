#!/usr/bin/env python3
"""Makes tests/data/gguf/vectors.gguf: reference vectors for lqer's GGUF reader.

Run where the `gguf` PyPI package (ggml's own Python reader/writer, with numpy
dequantizers in gguf.quants that mirror ggml-quants.c) is installed:

    python3 -m venv /tmp/venv-gguf && /tmp/venv-gguf/bin/pip install gguf numpy
    /tmp/venv-gguf/bin/python tests/data/gguf/make_vectors.py

The C++ test (tests/io/test_gguf.cpp) always runs on the committed output; this
script is only needed to regenerate it. Deterministic: a fixed seed, so a rerun
with the same package versions reproduces the file byte for byte.

The file is written by gguf.GGUFWriter, so reading it also tests lqer's parser
against the reference writer. It holds:

* metadata of every value type, arrays of each, an array of strings (with an
  empty and a non-ASCII one) and nested arrays — their values are listed in
  METADATA below and repeated in the C++ test;
* for every ggml type T that gguf.quants dequantizes and lqer decodes, a
  tensor `T` of raw blocks and a float32 tensor `T.expected`: what
  gguf.quants.dequantize gives for those blocks. Block bytes are random except
  where edge cases are planted: fp16 scales that are normal, negative, zero,
  -0, subnormal (smallest and largest), the largest finite half, +-Inf and NaN,
  and one block per type whose code bytes sweep every value 0..255 (so every
  code of every width occurs);
* Q8_K, which gguf.quants does not dequantize (it is ggml's intermediate for
  dot products, rarely stored): `Q8_K.expected` is ggml's formula d * q
  evaluated here in float32, and says so in metadata key `lqer.q8_k_reference`.
"""
import os
import sys
from importlib.metadata import version

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT
from gguf.constants import GGML_QUANT_SIZES

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors.gguf")

# (type, number of blocks) — a few blocks each keeps the file small (~110 KB).
TYPES = [
    (QT.F16, 64), (QT.BF16, 64), (QT.Q4_0, 12), (QT.Q4_1, 12), (QT.Q5_0, 12), (QT.Q5_1, 12),
    (QT.Q8_0, 12), (QT.IQ4_NL, 12), (QT.Q2_K, 8), (QT.Q3_K, 8), (QT.Q4_K, 8), (QT.Q5_K, 8),
    (QT.Q6_K, 8), (QT.Q8_K, 3),
]

# Byte offsets of the fp16 scale fields in each block (ggml-common.h).
HALF_FIELDS = {
    QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2], QT.Q8_0: [0], QT.IQ4_NL: [0],
    QT.Q2_K: [80, 82], QT.Q3_K: [108], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208],
}

# Edge fp16 bit patterns planted into scale fields, block by block (the rest random normal halves).
# The most telling first: K-quant tensors have fewer blocks than the list.
EDGE_HALVES = [0x0001, 0xbc00, 0x7c00, 0x03ff, 0x7e00, 0x8000, 0x7bff, 0xfc00, 0x0000, 0x8001, 0xfbff, 0x3c00]

METADATA = [
    ("test.u8", "uint8", 200), ("test.i8", "int8", -100), ("test.u16", "uint16", 60000),
    ("test.i16", "int16", -30000), ("test.u32", "uint32", 4000000000), ("test.i32", "int32", -2000000000),
    ("test.u64", "uint64", 18000000000000000000), ("test.i64", "int64", -9000000000000000000),
    ("test.f32", "float32", 0.1), ("test.f64", "float64", 0.1), ("test.bool_true", "bool", True),
    ("test.bool_false", "bool", False), ("test.string", "string", "h\u00e9llo, \u4e16\u754c"),
    ("test.empty_string", "string", ""),
]
# GGUFWriter.add_string drops empty strings: add_key_value writes them.


def half_fields(qtype):
    return HALF_FIELDS.get(qtype, [])


def make_blocks(rng, qtype, n_blocks):
    block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
    if qtype == QT.F16:
        # Every class of half: random bits cover normals, subnormals, Inf and NaN.
        raw = rng.integers(0, 1 << 16, size=n_blocks, dtype=np.uint16)
        raw[: len(EDGE_HALVES)] = EDGE_HALVES
        return raw.view(np.uint8).reshape(n_blocks, 2)
    if qtype == QT.BF16:
        raw = rng.integers(0, 1 << 16, size=n_blocks, dtype=np.uint16)
        raw[:6] = [0x3f80, 0xbf80, 0x0001, 0x7f80, 0xff80, 0x7fc0]  # 1, -1, smallest subnormal, +-Inf, NaN
        return raw.view(np.uint8).reshape(n_blocks, 2)
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    # Block 1: its code bytes sweep the byte values — the extremes first (0x80 is
    # Q8_0's -128, which ggml's quantizer never writes but its decoder reads),
    # then multiples of 0x11, so every nibble value sits in both nibbles.
    scale_bytes = {0, 1, 2, 3} if qtype == QT.Q8_K else {o + i for o in half_fields(qtype) for i in (0, 1)}
    code_bytes = [j for j in range(block_bytes) if j not in scale_bytes]
    first = [0x00, 0xFF, 0x80, 0x7F, 0x0F, 0xF0, 0x01, 0x10]
    for idx, j in enumerate(code_bytes):
        blocks[1, j] = first[idx] if idx < len(first) else (idx * 0x11 if len(code_bytes) < 256 else idx) % 256
    if qtype == QT.Q8_K:
        # f32 d: normal, negative, and a subnormal; codes include -128 and 127.
        ds = np.array([0.015625, -3.5e-3, 1e-40], dtype=np.float32)
        blocks[:, 0:4] = ds.view(np.uint8).reshape(-1, 4)[:n_blocks]
        blocks[2, 4:260] = np.arange(256, dtype=np.uint8)
        return blocks
    # Scales: random normal halves of moderate size, then the edge patterns, one per block.
    for b in range(n_blocks):
        for k, off in enumerate(half_fields(qtype)):
            h = np.float16(rng.uniform(-2.0, 2.0) * 2.0 ** rng.integers(-12, 4))
            bits = int(np.array([h]).view(np.uint16)[0])
            if b >= 2:
                bits = EDGE_HALVES[(b - 2 + 5 * k) % len(EDGE_HALVES)]
            blocks[b, off] = bits & 0xFF
            blocks[b, off + 1] = bits >> 8
    return blocks


def reference(qtype, blocks):
    if qtype == QT.Q8_K:
        d = blocks[:, 0:4].copy().view(np.float32)
        q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        return (d * q).astype(np.float32).reshape(-1)
    return gguf.quants.dequantize(blocks.reshape(-1), qtype).astype(np.float32).reshape(-1)


def main():
    rng = np.random.default_rng(20)
    w = gguf.GGUFWriter(OUT, arch="lqer-test")
    for key, kind, value in METADATA:
        if kind == "string" and value == "":
            w.add_key_value(key, value, gguf.GGUFValueType.STRING)
            continue
        getattr(w, {"uint8": "add_uint8", "int8": "add_int8", "uint16": "add_uint16", "int16": "add_int16",
                    "uint32": "add_uint32", "int32": "add_int32", "uint64": "add_uint64", "int64": "add_int64",
                    "float32": "add_float32", "float64": "add_float64", "bool": "add_bool",
                    "string": "add_string"}[kind])(key, value)
    w.add_array("test.array_i32", [1, -2, 3, 2147483647, -2147483648])
    w.add_array("test.array_f32", [0.5, -1.25, 3e38])
    w.add_array("test.array_bool", [True, False, True])
    w.add_array("test.array_string", ["a", "", "\u00fcber", "tab\tand\nnewline"])
    w.add_array("test.array_nested", [[1, 2, 3], [4], [5, 6]])
    w.add_array("test.array_nested2", [[["x", "y"]], [["z"]]])
    w.add_string("lqer.q8_k_reference", "d * q in float32 (ggml's dequantize_row_q8_K), numpy; not gguf.quants")
    w.add_string("lqer.made_by", f"tests/data/gguf/make_vectors.py, gguf {version('gguf')}, numpy {np.__version__}")

    for qtype, n_blocks in TYPES:
        block_elems, _ = GGML_QUANT_SIZES[qtype]
        blocks = make_blocks(rng, qtype, n_blocks)
        expected = reference(qtype, blocks)
        n = n_blocks * block_elems
        # Two rows when the block count allows, so the tensor is 2-D (ne = {n / rows, rows}).
        rows = 2 if n_blocks % 2 == 0 else 1
        # raw_dtype: the writer takes the uint8 array as the blocks (its shape in bytes).
        w.add_tensor(qtype.name, blocks.reshape(rows, -1), raw_dtype=qtype)
        w.add_tensor(qtype.name + ".expected", expected.reshape(rows, n // rows))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
