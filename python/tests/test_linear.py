"""lqer.Linear: the fused kernel against lqer's scalar reference (bit for bit
on every path the CPU has), against float within the formats' error, with
any array layout, from several Python threads, and without holding the GIL."""

import threading
import time

import numpy as np
import pytest

import lqer


def make_layer(rng, out=72, inp=96, rank=16, **kw):
    w = (rng.standard_normal((out, inp)) * 0.05).astype(np.float32)
    st = lqer.ActivationStats(inp)
    st.add(rng.standard_normal((256, inp)).astype(np.float32))
    return w, lqer.factorize(w, st, rank=rank, bias=rng.standard_normal(out).astype(np.float32), **kw)


def test_kernel_paths_are_reported():
    p = lqer.kernel_paths()
    assert p["best"] in p["usable"] and set(p["usable"]) <= set(p["built"]) and "generic" in p["usable"]


@pytest.mark.parametrize(
    "kw,act",
    [
        ({}, "mxint8"),
        ({}, "mxint4"),
        ({"block": 32, "rule": "ocp"}, "mxint8"),
        ({"w_format": "mxint3", "block": 32}, "mxint8"),
        ({"w_format": "mxint2"}, "mxint8"),
        ({"w_format": "mxint8", "rule": "ocp"}, "mxint8"),
        ({"lr_rule": "ocp"}, "mxint8"),
        ({"w_format": "q4_0", "lr_format": "q8_0", "block": 32}, "q8_0"),  # llama.cpp's pair + LQER
        ({"w_format": "q4_0", "lr_format": "q8_0", "block": 32, "policy": "identity"}, None),  # default: q8_0
        ({"w_format": "q4_1", "lr_format": "q8_0", "block": 32}, "q8_0"),  # llama.cpp's Q4_1 + LQER
        ({"w_format": "q4_1", "lr_format": "q8_0", "block": 32, "policy": "rms"}, None),
    ],
)
def test_kernel_equals_the_fused_reference_bit_for_bit(rng, kw, act):
    w, layer = make_layer(rng, **kw)
    x = rng.standard_normal((9, 96)).astype(np.float32)
    y = lqer.Linear(layer, act_format=act)(x)
    ref = lqer.Linear(layer, act_format=act, reference="fused")(x)
    assert y.dtype == np.float32 and y.shape == (9, 72)
    assert np.array_equal(y, ref)
    # Format names as stored: q8_0 is int8, group 32, symmetric, fp16 scale.
    expect = {"mxint8": "mxint8_b", "mxint4": "mxint4_b", "q8_0": "int8_g32_", None: "int8_g32_"}[act]
    assert lqer.Linear(layer, act_format=act).act_format.startswith(expect)


def block_max(m, block=16):
    """|m|'s maximum over each element's block along the last axis."""
    a = np.abs(m.astype(np.float64))
    pad = (-a.shape[-1]) % block
    ap = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, pad)])
    mx = ap.reshape(*a.shape[:-1], -1, block).max(-1)
    return np.repeat(mx, block, axis=-1)[..., : a.shape[-1]]


def test_output_is_within_the_formats_error_of_float(rng):
    # y = Q(x)·Wqᵀ + Q(Q(x)·A)·B + b against x·Wᵀ + b. MX rounding moves an
    # element by at most half a step, and a step is 2^-(bits-2) of the block's
    # power-of-two bound (≤ 2× the block maximum): |Δx| ≤ 2^-6·Mx for MXINT8,
    # |ΔW| ≤ 2^-2·Mw for MXINT4, M the block maximum of |·|. So
    #   |Q(x)(Wq − W)ᵀ| ≤ (|x| + εx·Mx)·(εw·Mw)ᵀ,  |(Q(x) − x)Wᵀ| ≤ (εx·Mx)·|W|ᵀ,
    # and the correction is at most |Q(Q(x)A)|·|B| with |Q(Q(x)A)| bounded by
    # T + εx·max(T), T = (|x| + εx·Mx)·|A|; float32 accumulation adds at most
    # 2^-16 of Σ|products| for these lengths (γ_n, n ≤ 512).
    w, layer = make_layer(rng, rank=16)
    x = rng.standard_normal((32, 96)).astype(np.float32)
    y = lqer.Linear(layer)(x).astype(np.float64)
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + layer.bias
    ex, ew = 2.0**-6, 2.0**-2
    ax, aw = np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64))
    mx, mw = block_max(x), block_max(w)
    xq = ax + ex * mx
    t = xq @ np.abs(layer.a.astype(np.float64))
    tq = t + ex * t.max(axis=1, keepdims=True)
    bound = xq @ (ew * mw).T + (ex * mx) @ aw.T + tq @ np.abs(layer.b.astype(np.float64))
    bound += 2.0**-16 * (xq @ (aw + ew * mw).T + tq @ np.abs(layer.b))
    assert (np.abs(y - ref) <= bound).all()
    # And the correction helps: closer to float than plain W4A8 on these inputs.
    plain = lqer.factorize(w, None, rank=0, policy="identity", bias=layer.bias)
    y0 = lqer.Linear(plain)(x)
    assert np.linalg.norm(y - ref) < 0.9 * np.linalg.norm(y0 - ref)


def test_layouts_leading_dims_and_torch(rng):
    _, layer = make_layer(rng)
    lin = lqer.Linear(layer)
    x = rng.standard_normal((6, 128)).astype(np.float32)
    want = lin(np.ascontiguousarray(x[:, :96]))
    assert np.array_equal(lin(x[:, :96]), want)  # a column slice: viewed with its row stride
    assert np.array_equal(lin(np.asfortranarray(x)[:, :96]), want)  # copied
    assert np.array_equal(lin(x[:, :96].reshape(2, 3, 96)), want.reshape(2, 3, 72))
    assert np.array_equal(lin(x[0, :96]), want[0])
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(np.ascontiguousarray(x[:, :96])).requires_grad_(True)
    yt = lin(t)
    assert isinstance(yt, torch.Tensor) and np.array_equal(yt.numpy(), want)
    with pytest.raises(ValueError, match="features"):
        lin(np.zeros((2, 95), np.float32))
    with pytest.raises(ValueError, match="finite|NaN"):
        lin(np.full((2, 96), np.nan, np.float32))


def test_thread_counts_give_the_same_bits(rng):
    _, layer = make_layer(rng, out=256, inp=512, rank=32)
    x = rng.standard_normal((40, 512)).astype(np.float32)
    before = lqer.get_num_threads()
    try:
        lqer.set_num_threads(1)
        y1 = lqer.Linear(layer)(x)
        lqer.set_num_threads(2)
        assert lqer.get_num_threads() == 2
        y2 = lqer.Linear(layer)(x)
    finally:
        lqer.set_num_threads(before)
    assert np.array_equal(y1, y2)
    with pytest.raises(ValueError):
        lqer.set_num_threads(0)


def test_several_python_threads_calling_at_once(rng):
    _, layer = make_layer(rng, out=128, inp=256, rank=16)
    lin = lqer.Linear(layer)
    xs = [rng.standard_normal((1 + 7 * i % 33, 256)).astype(np.float32) for i in range(12)]
    want = [lin(x) for x in xs]
    got = [None] * len(xs)

    def work(i):
        for j in range(i, len(xs), 3):
            for _ in range(5):
                got[j] = lin(xs[j])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(g, w) for g, w in zip(got, want))


def test_the_gil_is_released_during_a_call(rng):
    # While one thread is inside a long call (the scalar reference on a large
    # input: about a second), the main thread keeps running Python. With the
    # GIL held, the main thread would stall for the whole call.
    _, layer = make_layer(rng, out=256, inp=512, rank=32)
    lin = lqer.Linear(layer, reference="fused")
    x = rng.standard_normal((160, 512)).astype(np.float32)
    t0 = time.perf_counter()
    lin(x[:16])
    one = time.perf_counter() - t0
    inside = threading.Event()
    done = threading.Event()

    def work():
        inside.set()
        lin(x)
        done.set()

    th = threading.Thread(target=work)
    th.start()
    inside.wait()
    stamps = []
    while not done.is_set():
        stamps.append(time.perf_counter())
    th.join()
    call = 10 * one
    gaps = np.diff(stamps) if len(stamps) > 1 else np.array([np.inf])
    # The call lasts about 10× one slice; the main thread's longest pause must
    # be far shorter (Python's switch interval is 5 ms).
    assert gaps.max() < max(0.25 * call, 0.05), (gaps.max(), call)


def test_bad_construction():
    rng = np.random.default_rng(0)
    _, layer = make_layer(rng)
    with pytest.raises(ValueError, match="act_format"):
        lqer.Linear(layer, act_format="int8")
    with pytest.raises(ValueError, match="reference"):
        lqer.Linear(layer, reference="exact")


@pytest.mark.parametrize("w_format", ["q4_0", "q4_1"])
def test_llama_cpp_layers_take_q8_0_activations_only(rng, w_format):
    _, layer = make_layer(rng, w_format=w_format, lr_format="q8_0", block=32)
    for act in ("mxint8", "mxint4", "int8", "q4_1"):
        with pytest.raises(ValueError, match=w_format + " layers take activations in q8_0"):
            lqer.Linear(layer, act_format=act)
    _, mx = make_layer(rng)
    with pytest.raises(ValueError, match="mxint8"):
        lqer.Linear(mx, act_format="q8_0")
