"""lqer.fake_quantize against the original implementations' vectors (the
LQER authors' block_fp quantizer, Microsoft's microxcaling), bit for bit, and
its shape/axis/array-type handling."""

import numpy as np
import pytest

import lqer
from conftest import load

# (vector name, format, rule, block, axis); the C++ test test_reference_vectors
# checks the same files.
VECTORS = [
    ("lqer_w4_rows_b16", "mxint4", "lqer", 16, 1),
    ("lqer_w4_rows_b16_tail", "mxint4", "lqer", 16, 1),
    ("lqer_w3_rows_b16", "mxint3", "lqer", 16, 1),
    ("lqer_w2_rows_b16", "mxint2", "lqer", 16, 1),
    ("lqer_a8_cols_b16", "mxint8", "lqer", 16, 0),
    ("lqer_a8_cols_b16_tail", "mxint8", "lqer", 16, 0),
    ("lqer_x8_b16", "mxint8", "lqer", 16, 1),
    ("lqer_x8_b16_tail", "mxint8", "lqer", 16, 1),
    ("ocp_mxint8_b32", "mxint8", "ocp", 32, 1),
    ("ocp_mxint4_b32", "mxint4", "ocp", 32, 1),
    ("ocp_mxint8_b16", "mxint8", "ocp", 16, 1),
    ("ocp_mxint4_b16", "mxint4", "ocp", 16, 1),
    ("ocp_mxint8_b32_tail", "mxint8", "ocp", 32, 1),
    ("ocp_mxint4_b32_tail", "mxint4", "ocp", 32, 1),
    ("ocp_mxint8_b16_tail", "mxint8", "ocp", 16, 1),
    ("ocp_mxint4_b16_tail", "mxint4", "ocp", 16, 1),
]


@pytest.mark.parametrize("name,fmt,rule,block,axis", VECTORS)
def test_reference_vectors_bit_for_bit(name, fmt, rule, block, axis):
    x = load(name + "_in")
    want = load(name + "_out")
    got = lqer.fake_quantize(x, fmt, block=block, rule=rule, axis=axis)
    assert got.shape == x.shape and got.dtype == np.float32
    # The LQER reference passes |x| <~ 1e-8 through unquantized (README of the vectors).
    keep = np.abs(x) >= 1e-7
    assert keep.sum() > x.size // 2
    g, w = got[keep], want[keep]
    same = (g.view(np.uint32) == w.view(np.uint32)) | ((g == 0) & (w == 0))
    assert same.all(), f"{(~same).sum()} of {keep.sum()} elements differ"


def test_every_format_family_round_trips_its_own_grid(rng):
    # Quantizing a fake-quantized array again changes nothing for formats whose
    # scale is a function of the block's largest magnitude that the grid keeps
    # (OCP MX, symmetric int): the quantizer is idempotent there.
    x = rng.standard_normal((8, 128)).astype(np.float32)
    for fmt, kw in [("mxint4", {}), ("mxint8", {}), ("int8", {"block": 32}), ("int4", {"block": 0})]:
        once = lqer.fake_quantize(x, fmt, **kw)
        assert np.array_equal(lqer.fake_quantize(once, fmt, **kw), once), fmt


def test_bits_per_weight_and_names():
    assert lqer.format_info("mxint4", rule="lqer") == ("mxint4_b16_lqer", 4.5)
    assert lqer.format_info("mxint4") == ("mxint4_b32_ocp", 4.25)
    assert lqer.format_info("q4_0")[1] == 4.5  # 4-bit codes + an fp16 scale per 32
    # GPTQ/AWQ-style: 4-bit codes, an fp16 scale and an 8-bit zero point per 128.
    assert lqer.format_info("int4", block=128, scheme="asym", scale="f16")[1] == 4 + 24 / 128
    assert set(lqer.format_names()) == {"mxint2", "mxint3", "mxint4", "mxint8", "int4", "int8", "q4_0", "q4_1", "q8_0"}
    assert lqer.format_info("q4_1")[1] == 5.0  # 4-bit codes + an fp16 scale and an fp16 minimum per 32
    assert "mxint" in lqer.format_help()


def test_axis_and_leading_dimensions(rng):
    x = rng.standard_normal((3, 5, 64)).astype(np.float32)
    flat = lqer.fake_quantize(x.reshape(15, 64), "mxint4")
    assert np.array_equal(lqer.fake_quantize(x, "mxint4"), flat.reshape(3, 5, 64))
    # axis=0 of a matrix is the last axis of its transpose.
    m = rng.standard_normal((64, 24)).astype(np.float32)
    assert np.array_equal(lqer.fake_quantize(m, "mxint8", axis=0), lqer.fake_quantize(m.T, "mxint8").T)
    with pytest.raises(ValueError, match="axis"):
        lqer.fake_quantize(m, "mxint8", axis=2)


def test_strided_views_and_other_dtypes_give_the_same_numbers(rng):
    x = rng.standard_normal((16, 96)).astype(np.float32)
    want = lqer.fake_quantize(np.ascontiguousarray(x[:, :64]), "mxint4")
    assert np.array_equal(lqer.fake_quantize(x[:, :64], "mxint4"), want)  # row stride 96: viewed
    assert np.array_equal(lqer.fake_quantize(np.asfortranarray(x)[:, :64], "mxint4"), want)  # copied
    assert np.array_equal(lqer.fake_quantize(x[:, :64].astype(np.float64), "mxint4"), want)  # converted


def test_torch_in_torch_out(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((4, 64)).astype(np.float32)
    t = torch.from_numpy(x).requires_grad_(True)
    y = lqer.fake_quantize(t, "mxint4", rule="lqer")
    assert isinstance(y, torch.Tensor)
    assert np.array_equal(y.numpy(), lqer.fake_quantize(x, "mxint4", rule="lqer"))


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"format": "mxint5"}, "unknown format 'mxint5'"),
        ({"format": "mxint4", "block": 24}, "block"),
        ({"format": "q4_0", "block": 16}, "32"),
        ({"format": "mxint4", "scheme": "asym"}, "scheme"),
        ({"format": "int8", "rule": "ocp"}, "rule"),
        ({"format": "mxint4", "rule": "ieee"}, "rule"),
    ],
)
def test_bad_options_are_value_errors_naming_the_problem(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        lqer.fake_quantize(np.zeros((2, 64), np.float32), **kwargs)


def test_q4_1_is_llama_cpps_rule(rng):
    # ggml's quantize_row_q4_1_ref in numpy float32: per block of 32, lo = min,
    # d = (max − lo)/15, u = min(15, trunc((x − lo)·(1/d) + 0.5)), d and lo
    # stored as fp16; value u·fp16(d) + fp16(lo).
    x = (rng.standard_normal((6, 96)) * 0.3 + 0.1).astype(np.float32)
    b = x.reshape(6, 3, 32)
    lo, hi = b.min(-1, keepdims=True), b.max(-1, keepdims=True)
    d = ((hi - lo) / np.float32(15)).astype(np.float32)
    inv = (np.float32(1) / d).astype(np.float32)
    u = np.minimum(np.float32(15), np.trunc(((b - lo) * inv).astype(np.float32) + np.float32(0.5)))
    want = (u * d.astype(np.float16).astype(np.float32)).astype(np.float32) + lo.astype(np.float16).astype(np.float32)
    assert np.array_equal(lqer.fake_quantize(x, "q4_1"), want.reshape(6, 96))
