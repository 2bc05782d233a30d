#!/usr/bin/env python3
"""Makes tests/data/safetensors/*: files written by Hugging Face's `safetensors`
package, and what they hold, for lqer's safetensors reader and writer.

Run where the `safetensors` and `numpy` PyPI packages are installed:

    python3 -m venv /tmp/stvenv && /tmp/stvenv/bin/pip install safetensors numpy
    /tmp/stvenv/bin/python tests/data/safetensors/make_fixture.py

The C++ test (tests/io/test_safetensors.cpp) always runs on the committed
output; this script is only needed to regenerate it. Deterministic except for
the order of the metadata keys in multi_metadata.safetensors (the package
serializes a Rust HashMap); the other files are reproduced byte for byte.

Files:

* numpy_dtypes.safetensors — safetensors.numpy.save_file of every dtype numpy
  has (F64 F32 F16 I64 U64 I32 U32 I16 U16 I8 U8 BOOL) with extreme values
  (±0, ±Inf, NaN, subnormals, integer limits), a 0-d tensor and two empty
  ones, and one metadata key (one, so that the header's bytes are defined and
  lqer's writer can be checked to reproduce them exactly);
* raw_dtypes.safetensors — safetensors.serialize_file of the dtypes numpy
  lacks (BF16, F8_E4M3, F8_E5M2, F8_E8M0, C64, F4) as raw bytes, with metadata
  whose keys and values need JSON escapes (quotes, backslash, control
  characters) or are non-ASCII (2-, 3- and 4-byte UTF-8), and an empty key;
* empty.safetensors — no tensors, no metadata;
* expected.json — for each file: its size, header length, SHA-256 and
  metadata; per tensor in header order: dtype, shape, data_offsets, the data
  bytes in hex, their SHA-256 (hashlib) and, for numeric dtypes, the values
  (floats as Python repr, "nan"/"inf"/"-inf" as strings). Also hashlib's
  SHA-256 of bytes(i % 251 for i in range(n)) for the lengths SHA256_LENGTHS
  (each side of every padding case of the 64-byte block: 55/56 bytes leave
  room for the length in the last block or not) for lqer's sha256.
"""
import hashlib
import json
import math
import os
import struct
from importlib.metadata import version

import numpy as np
import safetensors
import safetensors.numpy

HERE = os.path.dirname(os.path.abspath(__file__))
SHA256_LENGTHS = [0, 1, 3, 55, 56, 57, 63, 64, 65, 111, 112, 119, 120, 121, 127, 128, 129, 191, 192, 1000, 4096, 100003]


def numpy_tensors():
    f64 = np.array([[0.0, -0.0, 1e300], [5e-324, -np.inf, np.nan]], dtype=np.float64)
    f32 = np.array([[1.5, -3.25e-38], [np.finfo(np.float32).max, 1e-45], [np.inf, 0.1]], dtype=np.float32)
    f16 = np.array([0.0, -0.0, 1.0, 6e-08, 65504.0, -np.inf, np.nan], dtype=np.float16)
    return {
        "f64": f64,
        "f32": f32,
        "f16": f16,
        "i64": np.array([[-(2**63), 2**63 - 1], [-1, 0]], dtype=np.int64),
        "u64": np.array([0, 2**64 - 1, 12345678901234567890], dtype=np.uint64),
        "i32": np.array([-(2**31), 2**31 - 1, -7], dtype=np.int32),
        "u32": np.array([0, 2**32 - 1], dtype=np.uint32),
        "i16": np.array([[-32768, 32767, 0]], dtype=np.int16),
        "u16": np.array([0, 65535, 258], dtype=np.uint16),
        "i8": np.array([-128, 127, -1, 0, 42], dtype=np.int8),
        "u8": np.array([0, 255, 1, 128], dtype=np.uint8),
        "bool": np.array([True, False, True, True], dtype=np.bool_),
        "scalar": np.array(2.5, dtype=np.float32),  # 0-d
        "empty": np.zeros((0, 3), dtype=np.float32),
        "empty_i8": np.zeros((4, 0), dtype=np.int8),
        # A name that needs no escape but is not ASCII.
        "blk.0.attn_q.weight·α": np.arange(6, dtype=np.float32).reshape(2, 3),
    }


def raw_specs():
    """(name, package dtype, shape, raw bytes) for dtypes numpy has no type for."""
    bf16 = struct.pack("<6H", 0x3F80, 0xC000, 0x7F80, 0xFF80, 0x7FC0, 0x0001)  # 1, -2, Inf, -Inf, NaN, tiny
    return [
        ("bf16", "bfloat16", (2, 3), bf16),
        ("f8_e4m3", "float8_e4m3fn", (4,), bytes([0x00, 0x38, 0x7E, 0xFF])),
        ("f8_e5m2", "float8_e5m2", (4,), bytes([0x00, 0x3C, 0x7B, 0x80])),
        ("e8m0", "float8_e8m0fnu", (2, 2), bytes([0, 127, 254, 255])),
        ("c64", "complex64", (2,), struct.pack("<4f", 1.0, -2.0, 0.5, 3.0)),
        # Packed FP4, two per byte: the package takes the storage shape (bytes)
        # and writes the logical one, shape [6] for 3 bytes.
        ("f4", "float4_e2m1fn_x2", (3,), bytes([0x21, 0x43, 0xF0])),
        ("bf16_scalar", "bfloat16", (), struct.pack("<H", 0x4049)),  # 3.140625
    ]


RAW_METADATA = {
    "format": "lqer-test",
    "quote\"back\\slash": "tab\there\nnewline",
    "control": "\x01\x1f\x7f",
    "unicode": "é ∑ 😀",
    "": "empty key",
    "empty value": "",
}


def json_value(x):
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def describe(path):
    blob = open(path, "rb").read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    data = blob[8 + n :]
    with safetensors.safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
    tensors = []
    for name, info in header.items():  # json keeps the header's order
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = data[b:e]
        t = {
            "name": name,
            "dtype": info["dtype"],
            "shape": info["shape"],
            "data_offsets": [b, e],
            "hex": raw.hex(),
            "sha256": hashlib.sha256(raw).hexdigest(),
        }
        np_type = safetensors.numpy._TYPES.get(info["dtype"])
        if np_type is not None and info["dtype"] != "C64":
            arr = np.frombuffer(raw, dtype=np_type)
            t["values"] = [json_value(v) for v in arr]
        tensors.append(t)
    return {
        "size": len(blob),
        "header_size": n,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "metadata": metadata,
        "tensors": tensors,
    }


def main():
    files = {}

    path = os.path.join(HERE, "numpy_dtypes.safetensors")
    safetensors.numpy.save_file(numpy_tensors(), path, metadata={"format": "np"})
    files["numpy_dtypes.safetensors"] = path

    path = os.path.join(HERE, "raw_dtypes.safetensors")
    keep = []
    specs = {}
    for name, dtype, shape, raw in raw_specs():
        buf = np.frombuffer(raw, dtype=np.uint8).copy()
        keep.append(buf)
        specs[name] = safetensors.TensorSpec(dtype=dtype, shape=shape, data_ptr=buf.ctypes.data, data_len=len(raw))
    safetensors.serialize_file(specs, path, metadata=RAW_METADATA)
    files["raw_dtypes.safetensors"] = path

    path = os.path.join(HERE, "empty.safetensors")
    safetensors.numpy.save_file({}, path)
    files["empty.safetensors"] = path

    expected = {
        "generator": f"safetensors {version('safetensors')}, numpy {version('numpy')}",
        "files": {name: describe(p) for name, p in files.items()},
        "sha256_lengths": {
            str(n): hashlib.sha256(bytes(i % 251 for i in range(n))).hexdigest() for n in SHA256_LENGTHS
        },
    }
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as out:
        json.dump(expected, out, indent=1, ensure_ascii=True)
        out.write("\n")
    for name, p in files.items():
        os.chmod(p, 0o644)  # the package creates 0600 files
        print(f"{name}: {os.path.getsize(p)} bytes")


if __name__ == "__main__":
    main()
