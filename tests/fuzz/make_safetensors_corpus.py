#!/usr/bin/env python3
"""Writes the seed corpus tests/fuzz/corpus/safetensors/ for fuzz_safetensors
(and test_safetensors, which checks that every valid_* seed parses and every
bad_* seed is refused). Standard library only, deterministic; the files are
committed, so this runs only to change them:

    python3 tests/fuzz/make_safetensors_corpus.py

Small files (under 1 KB) so that the fuzzer mutates structure, not bulk: the
layout Hugging Face's writer produces (metadata first, tensors by decreasing
dtype, header padded with spaces to 8 bytes), every dtype, 0-d and empty
tensors, JSON whitespace and escapes, and one file per kind of refusal.
"""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "safetensors")
BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
        "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
        "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64}
ORDER = list(BITS)  # Hugging Face's enum order


def build(tensors, metadata=None, pad=True):
    """tensors: [(name, dtype, shape, bytes)] written as Hugging Face does."""
    tensors = sorted(tensors, key=lambda t: (-ORDER.index(t[1]), t[0]))
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def raw_file(header, data=b""):
    h = header.encode("utf-8") if isinstance(header, str) else header
    return struct.pack("<Q", len(h)) + h + data


def every_dtype():
    out = []
    for i, (dtype, bits) in enumerate(BITS.items()):
        n = 4  # 4 elements: whole bytes for F4 (2) and F6 (3) too
        out.append((dtype.lower(), dtype, [2, 2], bytes((17 * k + i) % 256 for k in range(n * bits // 8))))
    return out


SEEDS = {
    "valid_f32.safetensors": build([("w", "F32", [2, 3], struct.pack("<6f", 1, -2, 0.5, 0, 3, -0.0))],
                                   {"format": "pt"}),
    "valid_every_dtype.safetensors": build(every_dtype(), {"lqer.version": "0.1.0"}),
    "valid_scalar_and_empty.safetensors": build([("s", "F64", [], struct.pack("<d", 2.5)),
                                                 ("e", "F32", [0, 3], b""), ("m", "BOOL", [3], b"\x01\x00\x01")]),
    "valid_empty.safetensors": build([]),
    "valid_whitespace_escapes.safetensors": raw_file(
        ' {"__metadata__" : {"\\"q\\"":"\\u00e9\\t\\ud83d\\ude00"},\n'
        ' "b" : {"data_offsets":[8,12], "shape":[], "dtype":"F32"},\n'
        ' "a\\/\\u0062" : {"shape":[2],"dtype":"F32","data_offsets":[0,8]}}  ', b"\x01" * 12),
    "valid_unpadded_misaligned.safetensors": raw_file(
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}}',
        b"\x07\x00\x00\x80\x3f"),
    "bad_truncated.safetensors": build([("w", "F32", [4], b"\x00" * 16)])[:-3],
    "bad_overlap.safetensors": raw_file(
        '{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}}',
        b"\x00" * 12),
    "bad_hole.safetensors": raw_file('{"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}', b"\x00" * 8),
    "bad_duplicate_name.safetensors": raw_file(
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}',
        b"\x00\x00"),
    "bad_dtype.safetensors": raw_file('{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}', b"\x00" * 4),
    "bad_shape_float.safetensors": raw_file('{"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}', b"\x00"),
    "bad_deep.safetensors": raw_file('{"a":' + "[" * 200 + "]" * 200 + "}"),
    "bad_utf8.safetensors": raw_file(b'{"\xc0\xaf":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}'),
    "bad_metadata_value.safetensors": raw_file('{"__metadata__":{"k":1}}'),
    "bad_header_length.safetensors": struct.pack("<Q", 1 << 40) + b"{}",
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, blob in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(blob)
    print(f"{len(SEEDS)} seeds in {OUT}")


if __name__ == "__main__":
    main()
