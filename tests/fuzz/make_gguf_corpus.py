#!/usr/bin/env python3
"""Writes the seed corpus tests/fuzz/corpus/gguf/ for fuzz_gguf (and test_gguf,
which checks that every valid_* seed parses and decodes and every bad_* seed is
refused). Standard library only, deterministic; the files are committed, so this
runs only to change them:

    python3 tests/fuzz/make_gguf_corpus.py

Small files (under 2 KB each) so that the fuzzer mutates structure, not bulk:
versions 2 and 3, alignments 32 / 64 / 1, every metadata value type with arrays
and nested arrays, and one or two blocks of every ggml type the reader knows the
size of — the decodable ones and one it does not decode (IQ2_XXS).
"""
import os
import random
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "gguf")

# ggml type ids and (block elements, block bytes)
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ2_XXS, IQ4_NL, BF16 = 10, 11, 12, 13, 14, 15, 16, 20, 30
SIZES = {F32: (1, 4), F16: (1, 2), Q4_0: (32, 18), Q4_1: (32, 20), Q5_0: (32, 22), Q5_1: (32, 24),
         Q8_0: (32, 34), Q2_K: (256, 84), Q3_K: (256, 110), Q4_K: (256, 144), Q5_K: (256, 176),
         Q6_K: (256, 210), Q8_K: (256, 292), IQ2_XXS: (256, 66), IQ4_NL: (32, 18), BF16: (1, 2)}


def gstr(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def value(t, v):
    if t in SCALAR:
        return struct.pack(SCALAR[t], v)
    if t == 8:
        return gstr(v)
    elem_type, items = v  # array
    out = struct.pack("<IQ", elem_type, len(items))
    for item in items:
        out += value(elem_type, item)
    return out


def kv(key, t, v):
    return gstr(key) + struct.pack("<I", t) + value(t, v)


def gguf(version=3, kvs=(), tensors=(), alignment=32):
    """tensors: (name, type, dims, payload); placed in order at aligned offsets."""
    infos, data = b"", b""
    for name, ttype, dims, payload in tensors:
        data += b"\0" * (-len(data) % alignment)
        infos += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", ttype, len(data))
        data += payload
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs) + infos
    if tensors:
        head += b"\0" * (-len(head) % alignment)
    return head + data


def blocks(rng, ttype, n):
    elems, size = SIZES[ttype]
    if ttype == F32:
        return b"".join(struct.pack("<f", rng.uniform(-2, 2)) for _ in range(n)), n
    return bytes(rng.getrandbits(8) for _ in range(n * size)), n * elems


def main():
    rng = random.Random(20)
    os.makedirs(OUT, exist_ok=True)
    seeds = {}

    f32, _ = blocks(rng, F32, 6)
    seeds["valid_v3_f32.gguf"] = gguf(kvs=[kv("general.architecture", 8, "llama"), kv("llama.block_count", 4, 2)],
                                      tensors=[("w", F32, [3, 2], f32)])

    q4, _ = blocks(rng, Q4_0, 2)
    q8, _ = blocks(rng, Q8_0, 2)
    seeds["valid_v2_q4_0_q8_0_align64.gguf"] = gguf(
        version=2, alignment=64, kvs=[kv("general.alignment", 4, 64)],
        tensors=[("blk.0.attn_q.weight", Q4_0, [32, 2], q4), ("token_embd.weight", Q8_0, [64], q8)])

    seeds["valid_v3_all_metadata.gguf"] = gguf(kvs=[
        kv("u8", 0, 200), kv("i8", 1, -5), kv("u16", 2, 60000), kv("i16", 3, -3), kv("u32", 4, 7),
        kv("i32", 5, -7), kv("f32", 6, 0.5), kv("bool", 7, True), kv("str", 8, "h\u00e9"),
        kv("u64", 10, 2**63), kv("i64", 11, -2), kv("f64", 12, 0.25),
        kv("a_i32", 9, (5, [1, 2, 3])), kv("a_str", 9, (8, ["a", "", "bc"])), kv("a_bool", 9, (7, [True, False])),
        kv("a_empty", 9, (0, [])), kv("a_nested", 9, (9, [(4, [1]), (8, ["x", "y"]), (9, [(0, [1, 2])])])),
    ])

    kq = [(f"k{t}", t, [256], blocks(rng, t, 1)[0]) for t in (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K)]
    seeds["valid_v3_kquants.gguf"] = gguf(kvs=[kv("general.alignment", 4, 32)], tensors=kq)

    small = [(f"t{t}", t, [SIZES[t][0] * (1 if SIZES[t][0] > 1 else 4)], blocks(rng, t, 1 if SIZES[t][0] > 1 else 4)[0])
             for t in (Q4_1, Q5_0, Q5_1, F16, BF16, IQ4_NL, IQ2_XXS)]
    seeds["valid_v3_legacy_types_align1.gguf"] = gguf(alignment=1, kvs=[kv("general.alignment", 4, 1)], tensors=small)

    seeds["valid_v3_empty.gguf"] = gguf()

    good = seeds["valid_v3_f32.gguf"]
    seeds["bad_magic.gguf"] = b"GGUG" + good[4:]
    seeds["bad_truncated.gguf"] = good[:-3]
    seeds["bad_version1.gguf"] = good[:4] + struct.pack("<I", 1) + good[8:]
    # Two infos pointing at overlapping bytes: built by hand.
    infos = gstr("a") + struct.pack("<IQIQ", 1, 8, F32, 0) + gstr("b") + struct.pack("<IQIQ", 1, 8, F32, 16)
    head = b"GGUF" + struct.pack("<IQQ", 3, 2, 0) + infos
    head += b"\0" * (-len(head) % 32)
    seeds["bad_overlap.gguf"] = head + bytes(64)
    deep = struct.pack("<IQ", 9, 1) * 7 + struct.pack("<IQ", 0, 0)
    seeds["bad_deep_nesting.gguf"] = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gstr("deep") + struct.pack("<I", 9) + deep
    infos = gstr("w") + struct.pack("<IQIQ", 1, 1, F32, 4)
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + infos
    head += b"\0" * (-len(head) % 32)
    seeds["bad_misaligned.gguf"] = head + bytes(64)

    for name in os.listdir(OUT):
        os.remove(os.path.join(OUT, name))
    for name, data in sorted(seeds.items()):
        with open(os.path.join(OUT, name), "wb") as fh:
            fh.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
