#!/usr/bin/env python3
"""Decodes an LQER checkpoint with Hugging Face's `safetensors` package and numpy
alone, by the schema docs/checkpoint.md documents, and compares every matrix with
lqer's own dequantization (tests/io/test_checkpoint.cpp writes both):

    $LQER_PYTHON tests/io/checkpoint_interop.py CHECKPOINT DIR

DIR holds <layer>.wq.npy, <layer>.a.npy, <layer>.b.npy (float32, lqer's
quantized_matrix::dequantize). For each layer in the checkpoint's metadata the
script unpacks the codes (two's-complement nibbles, element 2j in the low
nibble, for formats of at most 4 bits; a byte each otherwise), reads the block
scales (F8_E8M0 as 2^(byte - 127) with the format's fraction bits, F32, F16, and
I8 zero points), evaluates value = (code - zero) * scale in float32 as lqer
does, puts lanes back as rows (Wq) or columns (A, B), and requires the result
to equal lqer's floats bit for bit. It also checks every lqer.sha256.<tensor>
with hashlib. Exit status 0 when everything matches; 1 with a message otherwise.
"""
import hashlib
import os
import re
import sys

import numpy as np
import safetensors
import safetensors.numpy

MX = re.compile(r"^mxint([2-8])_b([0-9]+)_(ocp|lqer)$")
INT = re.compile(r"^int([2-8])_(row|g[0-9]+)_(sym|sext|asym)_(f16|f32)$")
DTYPES = {"U8": np.uint8, "I8": np.int8, "F16": np.float16, "F32": np.float32, "F8_E8M0": np.uint8}


def fail(msg):
    sys.exit(f"checkpoint_interop: {msg}")


def parse_format(name):
    """bits, block (0 = whole lane), and how a scale record decodes."""
    m = MX.match(name)
    if m:
        bits, block, rule = int(m[1]), int(m[2]), m[3]
        return {"bits": bits, "block": block, "kind": "mx", "fraction": bits - 2 if rule == "ocp" else bits - 1}
    m = INT.match(name)
    if m:
        bits, group = int(m[1]), m[2]
        return {"bits": bits, "block": 0 if group == "row" else int(group[1:]), "kind": "int",
                "zero": m[3] == "asym", "scale": m[4]}
    fail(f"unknown format name {name!r}")


def decode(tensors, prefix, fmt, rows, cols, axis):
    """The float32 matrix [rows, cols] stored as <prefix>.codes/.scales(/.zeros)."""
    lanes, depth = (rows, cols) if axis == "cols" else (cols, rows)
    block = fmt["block"] or depth + (depth & 1)
    blocks = -(-depth // block)
    codes = tensors[prefix + ".codes"]
    if fmt["bits"] <= 4:
        low = (codes & 0x0F).astype(np.int8)
        high = (codes >> 4).astype(np.int8)
        q = np.empty((lanes, codes.shape[1] * 2), dtype=np.int8)
        q[:, 0::2], q[:, 1::2] = low, high
        q = np.where(q >= 8, q - 16, q).astype(np.int8)
    else:
        q = codes.view(np.int8)
    if q.shape != (lanes, blocks * block):
        fail(f"{prefix}.codes: shape {codes.shape} does not hold {lanes} lanes of {blocks} blocks of {block}")
    if np.any(q[:, depth:] != 0):
        fail(f"{prefix}: non-zero padding codes")
    q = q[:, :depth].astype(np.float32)
    scales = tensors[prefix + ".scales"]
    if fmt["kind"] == "mx":
        # 2^(e - 127 - F): exact in float32 for every exponent a code can carry.
        step = np.ldexp(np.float32(1.0), scales.astype(np.int32) - 127 - fmt["fraction"]).astype(np.float32)
        zero = np.zeros_like(step)
    else:
        step = scales.astype(np.float32)
        zero = tensors[prefix + ".zeros"].astype(np.float32) if fmt["zero"] else np.zeros_like(step)
    step = np.repeat(step, block, axis=1)[:, :depth]
    zero = np.repeat(zero, block, axis=1)[:, :depth]
    # lqer: mxint decode = q * 2^(e - F) (exact); intq decode = float(q - zero) * scale (one rounding).
    values = ((q - zero) * step).astype(np.float32)
    return values if axis == "cols" else values.T


def main(path, outdir):
    with open(path, "rb") as f:
        blob = f.read()
    with safetensors.safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
    raw = dict(safetensors.deserialize(blob))
    if metadata.get("lqer.schema") != "lqer.checkpoint" or metadata.get("lqer.schema_version") != "1":
        fail("not an lqer checkpoint of schema version 1")
    for name, info in raw.items():
        want = metadata.get("lqer.sha256." + name)
        if hashlib.sha256(bytes(info["data"])).hexdigest() != want:
            fail(f"{name}: sha256 differs from the metadata")
    tensors = {}
    for name, info in raw.items():
        if info["dtype"] not in DTYPES:
            continue
        tensors[name] = np.frombuffer(bytes(info["data"]), dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    layers = sorted(k[len("lqer.layer."):-len(".weight_format")] for k in metadata
                    if k.startswith("lqer.layer.") and k.endswith(".weight_format"))
    matrices = 0
    for layer in layers:
        meta = lambda field: metadata[f"lqer.layer.{layer}.{field}"]
        out, inp, rank = int(meta("out_features")), int(meta("in_features")), int(meta("rank"))
        w_fmt, lr_fmt = parse_format(meta("weight_format")), parse_format(meta("lowrank_format"))
        parts = [("wq", w_fmt, out, inp, meta("weight_axis"))]
        if rank > 0:
            parts += [("a", lr_fmt, inp, rank, meta("lowrank_axis")), ("b", lr_fmt, rank, out, meta("lowrank_axis"))]
        for part, fmt, rows, cols, axis in parts:
            ours = decode(tensors, f"{layer}.{part}", fmt, rows, cols, axis)
            theirs = np.load(os.path.join(outdir, f"{layer}.{part}.npy"))
            if theirs.dtype != np.float32 or theirs.shape != ours.shape:
                fail(f"{layer}.{part}: lqer's array is {theirs.dtype} {theirs.shape}, decoded {ours.shape}")
            if not np.array_equal(ours.view(np.uint32), theirs.view(np.uint32)):
                bad = tuple(int(i) for i in np.argwhere(ours.view(np.uint32) != theirs.view(np.uint32))[0])
                fail(f"{layer}.{part}: element {bad} decodes to {float(ours[bad])!r}, lqer has {float(theirs[bad])!r}")
            matrices += 1
        if meta("bias") == "true":
            if tensors[f"{layer}.bias"].dtype != np.float32 or tensors[f"{layer}.bias"].shape != (out,):
                fail(f"{layer}.bias: not F32 [{out}]")
    print(f"{path}: {len(layers)} layers, {matrices} matrices decoded, all equal to lqer's (safetensors "
          f"{safetensors.__version__}, numpy {np.__version__})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
