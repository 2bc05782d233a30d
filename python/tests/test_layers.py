"""lqer.factorize against the LQER authors' reference layers, the Layer's
contents, and checkpoint files. (The files are the C++ side's own writer's;
tests/io/test_checkpoint.cpp decodes them with PyPI's safetensors by the
documented schema.)"""

import json

import numpy as np
import pytest

import lqer
from conftest import DATA, load


def reference(name):
    m = json.loads((DATA / "manifest.json").read_text())
    return {
        "w": load(name + "_W"),
        "xcal": load(name + "_Xcal"),
        "xtest": load(name + "_Xtest"),
        "wq": load(name + "_Wq"),
        "yfp": load(name + "_Yfp"),
        "y_plain": load(name + "_Y_plain"),
        "y_lqer": load(name + "_Y_lqer"),
        "y_l2qer": load(name + "_Y_l2qer"),
        "rank": 16 if name == "layer_small" else 32,  # tests/data/README.md
    }


@pytest.mark.parametrize("name", ["layer_small", "layer_mid"])
def test_reference_layers(name):
    r = reference(name)
    st = lqer.ActivationStats(r["w"].shape[1])
    st.add(r["xcal"])  # one batch, as the reference computes its scale
    plain = lqer.factorize(r["w"], st, rank=0, policy="identity", solver="exact")
    keep = np.abs(r["w"]) >= 1e-7
    assert np.array_equal(plain.wq[keep], r["wq"][keep])  # MXINT4 b16 LQER rule, bit for bit
    # LQER / L²QER, exact solver, paper semantics: the reference's float32
    # torch SVD and ours (double, rounded) may flip single 8-bit codes, which
    # moves the output by at most about one step, 2^-7, of the correction.
    for policy, want in [("identity", r["y_lqer"]), ("mean_abs", r["y_l2qer"])]:
        layer = lqer.factorize(r["w"], st, rank=r["rank"], policy=policy, solver="exact")
        y = lqer.Linear(layer, reference="paper")(r["xtest"]).astype(np.float64)
        correction = np.linalg.norm(want.astype(np.float64) - r["y_plain"])
        assert np.linalg.norm(y - want) <= 2.0**-7 * correction, policy


def test_layer_contents_and_report(rng):
    w = (rng.standard_normal((80, 64)) * 0.05).astype(np.float32)
    x = rng.standard_normal((200, 64)).astype(np.float32)
    st = lqer.ActivationStats(64)
    st.add(x)
    bias = rng.standard_normal(80).astype(np.float32)
    l = lqer.factorize(w, st, rank=16, bias=bias)
    assert (l.in_features, l.out_features, l.rank, l.block) == (64, 80, 16, 16)
    assert (l.weight_format, l.lowrank_format, l.policy, l.solver) == (
        "mxint4_b16_lqer", "mxint8_b16_lqer", "mean_abs", "randomized")
    assert l.wq.shape == (80, 64) and l.a.shape == (64, 16) and l.b.shape == (16, 80)
    assert np.array_equal(l.bias, bias)
    assert l.scale.shape == (64,)
    # Bits: 4-bit codes + an 8-bit scale per 16 (4.5) for W, and A, B at 8.5
    # bits per element: 4.5 + 8.5·16·(64+80)/(64·80) (rank 16 = one block:
    # no padding is stored).
    assert l.bits_per_weight == pytest.approx(4.5 + 8.5 * 16 * (64 + 80) / (64 * 80))
    rep = l.report
    assert rep["rank"] == 16 and len(rep["singular_values"]) == 16
    assert rep["residual_norm"] < rep["error_norm"]
    # Wq is W fake-quantized; Wq + (A·B)ᵀ is closer to W than Wq in the scaled metric.
    assert np.array_equal(l.wq, lqer.fake_quantize(w, "mxint4", rule="lqer"))
    s = l.scale
    e0 = np.linalg.norm((w - l.wq) * s)
    e1 = np.linalg.norm((w - l.wq - (l.a @ l.b).T) * s)
    assert e1 < e0


@pytest.mark.parametrize(
    "kw",
    [
        dict(policy="identity", w_format="mxint3", block=32, rule="ocp"),
        dict(policy="rms", w_format="mxint8", lr_format="mxint8", solver="exact"),
        dict(policy="whiten", w_format="mxint2", lr_rule="ocp"),
    ],
)
def test_other_formats_policies_and_solvers(rng, kw):
    w = (rng.standard_normal((48, 64)) * 0.05).astype(np.float32)
    st = lqer.ActivationStats(64, gram=True)
    st.add(rng.standard_normal((100, 64)).astype(np.float32))
    l = lqer.factorize(w, st, rank=4, **kw)
    assert l.weight_format.startswith(kw.get("w_format", "mxint4"))
    assert l.policy == kw["policy"]
    assert l.report["residual_norm"] < l.report["error_norm"]


def test_bad_arguments_name_the_problem(rng):
    w = np.zeros((16, 32), np.float32)
    st = lqer.ActivationStats(32)
    st.add(np.ones((4, 32), np.float32))
    cases = [
        (dict(policy="gptq"), "policy"),
        (dict(solver="lanczos"), "solver"),
        (dict(w_format="int4"), "MX integer format"),
        (dict(lr_format="mxint4"), "low-rank"),
        (dict(block=64), "block"),
        (dict(rank=100), "rank"),
        (dict(policy="whiten"), "Gram"),
    ]
    for kw, needle in cases:
        with pytest.raises(ValueError, match=needle):
            lqer.factorize(w, st, **{"rank": 4, **kw})
    with pytest.raises(ValueError, match="statistics"):
        lqer.factorize(w, None, rank=4)
    with pytest.raises(ValueError, match="inputs|width|shape|in_features"):
        lqer.factorize(np.zeros((16, 48), np.float32), st, rank=4)


def ggml_q4_0(w):
    """llama.cpp's Q4_0 of w's rows (blocks of 32), dequantized: ggml's
    quantize_row_q4_0_ref written out in numpy float32 — d = (the signed value
    of largest magnitude) / −8, q = min(15, trunc(x/d + 8.5)), d stored as fp16
    — then (q − 8)·fp16(d)."""
    b = w.reshape(w.shape[0], -1, 32).astype(np.float32)
    idx = np.abs(b).argmax(-1)
    mx = np.take_along_axis(b, idx[..., None], -1)
    d = mx / np.float32(-8)
    inv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, np.float32(1)), np.float32(0)).astype(np.float32)
    q = np.minimum(np.float32(15), np.trunc(b * inv + np.float32(8.5)))
    return ((q - 8) * d.astype(np.float16).astype(np.float32)).astype(np.float32).reshape(w.shape)


def test_q4_0_weights_with_a_q8_0_correction(tmp_path, rng):
    # An LQER correction on top of llama.cpp's Q4_0 (block 32, fp16 scales):
    # Wq is exactly ggml's Q4_0 of W, the correction shrinks the error, and the
    # layer survives a checkpoint bit for bit.
    w = (rng.standard_normal((48, 96)) * 0.05).astype(np.float32)
    st = lqer.ActivationStats(96)
    st.add(rng.standard_normal((200, 96)).astype(np.float32))
    l = lqer.factorize(w, st, rank=8, w_format="q4_0", lr_format="q8_0", block=32)
    # Stored names: Q4_0 is int4 group 32 with the signed extreme's scale, Q8_0 int8 group 32, both fp16.
    assert l.weight_format.startswith("int4_g32_") and l.lowrank_format.startswith("int8_g32_")
    assert np.array_equal(l.wq, ggml_q4_0(w))
    assert l.report["residual_norm"] < l.report["error_norm"]
    p = tmp_path / "q4.lqer.safetensors"
    lqer.save(p, {"blk.0.q": l})
    b = lqer.load(p, "blk.0.q")
    assert (b.weight_format, b.lowrank_format, b.rank) == (l.weight_format, l.lowrank_format, 8)
    assert np.array_equal(b.wq, l.wq) and np.array_equal(b.a, l.a) and np.array_equal(b.b, l.b)
    x = rng.standard_normal((5, 96)).astype(np.float32)
    assert np.array_equal(lqer.Linear(b)(x), lqer.Linear(l)(x))


def test_q4_1_weights_with_a_q8_0_correction(tmp_path, rng):
    # The same on top of llama.cpp's Q4_1 (u·d + m, fp16 d and m per 32): Wq
    # is fake_quantize's q4_1 (which test_formats checks against ggml's rule
    # in numpy); weights all of one sign give minima far from zero.
    w = (rng.standard_normal((40, 64)) * 0.05 + 0.02).astype(np.float32)
    w[:8] = np.abs(w[:8]) + 0.1
    st = lqer.ActivationStats(64)
    st.add(rng.standard_normal((150, 64)).astype(np.float32))
    l = lqer.factorize(w, st, rank=6, w_format="q4_1", lr_format="q8_0", block=32)
    assert l.weight_format.startswith("int4_g32_min_") and l.lowrank_format.startswith("int8_g32_")
    assert np.array_equal(l.wq, lqer.fake_quantize(w, "q4_1"))
    assert l.report["residual_norm"] < l.report["error_norm"]
    p = tmp_path / "q41.lqer.safetensors"
    lqer.save(p, {"blk.0.q": l})
    b = lqer.load(p, "blk.0.q")
    assert (b.weight_format, b.lowrank_format, b.rank) == (l.weight_format, l.lowrank_format, 6)
    assert np.array_equal(b.wq, l.wq) and np.array_equal(b.a, l.a) and np.array_equal(b.b, l.b)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    assert lqer.Linear(b).act_format.startswith("int8_g32_")  # q8_0, the table's pairing
    assert np.array_equal(lqer.Linear(b)(x), lqer.Linear(l, reference="fused")(x))


@pytest.mark.parametrize("w_format", ["q4_0", "q4_1"])
def test_llama_cpp_formats_need_their_pair_and_block(rng, w_format):
    w = (rng.standard_normal((16, 64)) * 0.05).astype(np.float32)
    st = lqer.ActivationStats(64)
    st.add(rng.standard_normal((8, 64)).astype(np.float32))
    with pytest.raises(ValueError, match="blocks of 32"):
        lqer.factorize(w, st, rank=4, w_format=w_format, lr_format="q8_0", block=16)
    with pytest.raises(ValueError, match="built as .* only, not " + w_format + " weights with mxint8"):
        lqer.factorize(w, st, rank=4, w_format=w_format, lr_format="mxint8", block=32)
    with pytest.raises(ValueError, match="built as .* only, not mxint4 weights with q8_0"):
        lqer.factorize(w, st, rank=4, w_format="mxint4", lr_format="q8_0", block=32)
    with pytest.raises(ValueError, match="only, not " + w_format + " weights with " + w_format):
        lqer.factorize(w, st, rank=4, w_format=w_format, lr_format=w_format, block=32)


def test_checkpoint_round_trip_many_layers(tmp_path, rng):
    st = lqer.ActivationStats(64)
    st.add(rng.standard_normal((100, 64)).astype(np.float32))
    layers = {
        "blk.0.q": lqer.factorize((rng.standard_normal((32, 64)) * 0.1).astype(np.float32), st, rank=4),
        "blk.0.k": lqer.factorize((rng.standard_normal((16, 64)) * 0.1).astype(np.float32), st, rank=8, block=32,
                                  rule="ocp"),
    }
    p = tmp_path / "m.lqer.safetensors"
    lqer.save(p, layers)
    assert lqer.layer_names(p) == ["blk.0.k", "blk.0.q"]
    back = lqer.load_all(p)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    for name, l in layers.items():
        b = back[name]
        assert (b.weight_format, b.lowrank_format, b.rank, b.policy, b.solver) == (
            l.weight_format, l.lowrank_format, l.rank, l.policy, l.solver)
        assert np.array_equal(b.wq, l.wq) and np.array_equal(b.a, l.a) and np.array_equal(b.b, l.b)
        assert np.array_equal(lqer.Linear(b)(x), lqer.Linear(l)(x))  # bit for bit
    one = lqer.load(p, "blk.0.q")
    assert one.out_features == 32
    with pytest.raises(ValueError, match="2 layers"):
        lqer.load(p)
    with pytest.raises(ValueError, match="no layer"):
        lqer.load(p, "blk.9.q")
    layers["blk.0.q"].save(tmp_path / "one.lqer.safetensors")
    assert lqer.layer_names(tmp_path / "one.lqer.safetensors") == ["layer"]


def test_damaged_checkpoints_are_refused(tmp_path, rng):
    l = lqer.factorize((rng.standard_normal((16, 32)) * 0.1).astype(np.float32), None, rank=2, policy="identity")
    p = tmp_path / "l.lqer.safetensors"
    l.save(p)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) - 10])
    with pytest.raises(lqer.FileFormatError):
        lqer.load(p)
    flipped = bytearray(raw)
    flipped[-5] ^= 1
    p.write_bytes(bytes(flipped))
    with pytest.raises(lqer.FileFormatError, match="checksum"):
        lqer.load(p)
    lqer.load(p, verify=False)
    p.write_bytes(b"not a checkpoint at all")
    with pytest.raises(lqer.FileFormatError):
        lqer.load(p)
