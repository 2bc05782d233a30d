#!/usr/bin/env python3
"""Writes the seed corpus tests/fuzz/corpus/checkpoint/ for fuzz_checkpoint (and
test_checkpoint, which checks that every valid_* seed loads and every bad_* seed
is refused). Standard library only, deterministic; the files are committed, so
this runs only to change them:

    python3 tests/fuzz/make_checkpoint_corpus.py

The files follow docs/checkpoint.md and are written here, not by lqer: a second,
independent writer of the two schemas (LQER checkpoints and calibration
statistics). Small (under 2 KB) so that the fuzzer mutates structure, not bulk:
each scale kind (E8M0, F16 with I8 zero points, ggml's q4_0 / q8_0 F16 d), rank 0
and rank > 0, padding, an application tensor, statistics with and without the
Gram matrix, and one file per kind of refusal.
"""
import hashlib
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "checkpoint")
ORDER = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ",
         "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64", "I64", "U64"]


def build(tensors, metadata, checksums=True):
    """tensors: {name: (dtype, shape, bytes)}; adds the lqer.sha256.<name> keys metadata lacks; HF's layout."""
    md = dict(metadata)
    if checksums:
        for name, (_, _, raw) in tensors.items():
            md.setdefault("lqer.sha256." + name, hashlib.sha256(raw).hexdigest())  # an edited one stays
    header, data = {"__metadata__": dict(sorted(md.items()))}, b""
    for name, (dtype, shape, raw) in sorted(tensors.items(), key=lambda t: (-ORDER.index(t[1][0]), t[0])):
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def common(schema):
    return {"lqer.schema": schema, "lqer.schema_version": "1", "lqer.version": "0.1.0"}


def nibbles(codes):
    """Two's-complement 4-bit codes, element 2j in the low nibble of byte j."""
    return bytes(((codes[i] & 15) | ((codes[i + 1] & 15) << 4)) for i in range(0, len(codes), 2))


def matrix(name, lanes, depth, block, bits, scale_dtype, zeros=False, seed=0):
    """Tensors of one quantized matrix: codes within the format, zero padding, plausible scales."""
    block = block or depth + (depth & 1)
    blocks = -(-depth // block)
    qmax = (1 << (bits - 1)) - 1
    codes = b""
    for lane in range(lanes):
        q = [((seed + 7 * lane + 3 * i) % (2 * qmax + 1)) - qmax if i < depth else 0 for i in range(blocks * block)]
        codes += nibbles(q) if bits <= 4 else bytes(v & 255 for v in q)
    n = lanes * blocks
    if scale_dtype == "F8_E8M0":
        scales = bytes(120 + (seed + i) % 8 for i in range(n))
    elif scale_dtype == "F16":
        scales = b"".join(struct.pack("<e", 0.01 * (1 + (seed + i) % 5)) for i in range(n))
    else:
        scales = b"".join(struct.pack("<f", 0.01 * (1 + (seed + i) % 5)) for i in range(n))
    code_bytes = blocks * block // 2 if bits <= 4 else blocks * block
    t = {name + ".codes": ("U8", [lanes, code_bytes], codes), name + ".scales": (scale_dtype, [lanes, blocks], scales)}
    if zeros:
        t[name + ".zeros"] = ("I8", [lanes, blocks], bytes(((seed + i) % 16 - 8) & 255 for i in range(n)))
    return t


def layer(name, out, inp, rank, bias, w, lr, md):
    """w, lr: (format name, block, bits, scale dtype, zeros)."""
    md.update({f"lqer.layer.{name}.weight_format": w[0], f"lqer.layer.{name}.lowrank_format": lr[0],
               f"lqer.layer.{name}.out_features": str(out), f"lqer.layer.{name}.in_features": str(inp),
               f"lqer.layer.{name}.rank": str(rank), f"lqer.layer.{name}.bias": "true" if bias else "false",
               f"lqer.layer.{name}.weight_axis": "cols", f"lqer.layer.{name}.lowrank_axis": "rows"})
    t = matrix(name + ".wq", out, inp, *w[1:], seed=out)
    if rank:
        t.update(matrix(name + ".a", rank, inp, *lr[1:], seed=1))
        t.update(matrix(name + ".b", out, rank, *lr[1:], seed=2))
    if bias:
        t[name + ".bias"] = ("F32", [out], struct.pack(f"<{out}f", *[0.1 * i - 0.2 for i in range(out)]))
    return t


# (name, block (0 = whole lane), bits, scale dtype, zero points)
MXINT4_16 = ("mxint4_b16_lqer", 16, 4, "F8_E8M0", False)
MXINT8_16 = ("mxint8_b16_lqer", 16, 8, "F8_E8M0", False)
Q4_0 = ("int4_g32_sext_f16", 32, 4, "F16", False)
Q8_0 = ("int8_g32_sym_f16", 32, 8, "F16", False)
ASYM4 = ("int4_g32_asym_f16", 32, 4, "F16", True)


def checkpoint(layers, extra=None, checksums=True, edit=None, drop=None):
    md = common("lqer.checkpoint")
    tensors = {}
    for args in layers:
        tensors.update(layer(*args, md))
    if extra:
        tensors.update(extra)
    if edit:
        md.update(edit)
    if drop:
        for name in drop:
            tensors.pop(name)
    return build(tensors, md, checksums)


def stats(inp, tokens, batches, gram):
    md = common("lqer.activation_stats")
    md.update({"lqer.stats.in_features": str(inp), "lqer.stats.tokens": str(tokens),
               "lqer.stats.batches": str(batches), "lqer.stats.gram": "true" if gram else "false"})
    f64 = lambda values: struct.pack(f"<{len(values)}d", *values)
    t = {"sum_abs.hi": ("F64", [inp], f64([1.5 * (i + 1) for i in range(inp)])),
         "sum_abs.lo": ("F64", [inp], f64([0.0] * inp)),
         "sum_sq.hi": ("F64", [inp], f64([2.25 * (i + 1) ** 2 for i in range(inp)])),
         "sum_sq.lo": ("F64", [inp], f64([2.0 ** -60] * inp)),
         "batch_mean_abs_max": ("F64", [inp], f64([0.75 * (i + 1) for i in range(inp)]))}
    if gram:
        n = inp * (inp + 1) // 2
        tri = [(i + 1.0) if j == i else 0.5 for i in range(inp) for j in range(i + 1)]
        t["gram.hi"] = ("F64", [n], f64(tri))
        t["gram.lo"] = ("F64", [n], f64([0.0] * n))
    return build(t, md)


def main():
    w16, lr16, q40, q80, asym = MXINT4_16, MXINT8_16, Q4_0, Q8_0, ASYM4
    emb = {"token_embd": ("F32", [3, 2], struct.pack("<6f", 1, 2, 3, 4, 5, 6))}
    seeds = {
        # out 4, in 40 (padding: 3 blocks of 16), rank 2, bias.
        "valid_mxint4_lqer_rank2_bias.safetensors": checkpoint([("blk.0.q", 4, 40, 2, True, w16, lr16)]),
        "valid_q4_0_q8_0.safetensors": checkpoint([("ffn", 2, 64, 1, False, q40, q80)]),
        "valid_asym_zeros_rank0.safetensors": checkpoint([("z", 3, 64, 0, True, asym, lr16)]),
        "valid_two_layers_and_a_tensor.safetensors": checkpoint(
            [("a", 2, 32, 1, False, w16, lr16), ("a.b", 2, 16, 0, True, w16, lr16)], extra=emb),
        "valid_stats_gram.safetensors": stats(4, 10, 2, True),
        "valid_stats.safetensors": stats(3, 5, 1, False),
        "bad_checksum.safetensors": checkpoint([("l", 2, 32, 1, True, w16, lr16)],
                                               edit={"lqer.sha256.l.bias": "0" * 64}),
        "bad_schema_version.safetensors": checkpoint([("l", 2, 32, 1, True, w16, lr16)],
                                                     edit={"lqer.schema_version": "2"}),
        "bad_missing_tensor.safetensors": checkpoint([("l", 2, 32, 1, True, w16, lr16)], drop=["l.a.codes"]),
        "bad_rank.safetensors": checkpoint([("l", 2, 32, 1, True, w16, lr16)], edit={"lqer.layer.l.rank": "3"}),
    }
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        os.remove(os.path.join(OUT, old))
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print(f"{len(seeds)} seeds in {OUT}")


if __name__ == "__main__":
    main()
