"""lqer.torch: LQERLinear in place of nn.Linear, calibration by forward hooks,
whole-model quantization and its checkpoint."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import lqer  # noqa: E402
import lqer.torch as lt  # noqa: E402


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.up = nn.Linear(64, 128)
        self.act = nn.GELU()
        self.down = nn.Linear(128, 48, bias=False)
        self.head = nn.Sequential(nn.Linear(48, 32))

    def forward(self, x):
        return self.head(self.down(self.act(self.up(x))))


def batches(n=4):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(3, 10, 64, generator=g) for _ in range(n)]


def test_calibrate_collects_what_manual_statistics_collect():
    m = MLP()
    stats = lt.calibrate(m, batches())
    assert set(stats) == {"up", "down", "head.0"}
    # The same by hand: the inputs of `down` are GELU(up(x)).
    want = lqer.ActivationStats(128)
    with torch.no_grad():
        for b in batches():
            want.add(m.act(m.up(b)).reshape(-1, 128))
    assert stats["down"].tokens == 120 and np.array_equal(stats["down"].mean_abs, want.mean_abs)
    assert lt.linear_names(m, ["head.*"]) == ["head.0"]
    assert lt.calibrate(m, batches(1), layers=lambda n, mod: n == "up", gram=True)["up"].has_gram
    with pytest.raises(ValueError, match="no nn.Linear"):
        lt.calibrate(m, batches(1), layers=["nothing*"])


def test_lqer_linear_from_linear_keeps_the_bias_and_runs_the_kernel():
    torch.manual_seed(3)
    lin = nn.Linear(96, 80)
    x = torch.randn(20, 96)
    st = lqer.ActivationStats(96)
    st.add(x)
    q = lt.LQERLinear.from_linear(lin, st, rank=16)
    assert np.array_equal(q.layer.bias, lin.bias.detach().numpy())
    y = q(x)
    assert y.dtype == torch.float32 and y.shape == (20, 80)
    assert torch.equal(y, torch.from_numpy(lqer.Linear(q.layer)(x.numpy())))
    with torch.no_grad():
        ref = lin(x)
    rel = (y - ref).norm() / ref.norm()
    assert rel < 0.1  # W4A8 + rank 16 on a random layer: a few percent
    # float64 and (where available) other devices come back as they went in.
    y64 = q(x.double())
    assert y64.dtype == torch.float64 and torch.equal(y64.float(), y)
    assert "rank=16" in repr(q)


def test_quantize_swaps_every_selected_linear_and_matches_layer_by_layer():
    m = MLP()
    x = torch.randn(5, 64)
    stats = lt.calibrate(m, batches())
    ref = MLP()  # the same weights (seeded)
    lt.quantize(m, stats, rank=8, layers=["up", "down"])
    assert isinstance(m.up, lt.LQERLinear) and isinstance(m.down, lt.LQERLinear)
    assert isinstance(m.head[0], nn.Linear)
    # Layer by layer the same as factorizing each module by hand.
    up = lt.LQERLinear.from_linear(ref.up, stats["up"], rank=8)
    assert np.array_equal(m.up.layer.wq, up.layer.wq) and np.array_equal(m.up.layer.a, up.layer.a)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (5, 32)
    with pytest.raises(ValueError, match="no statistics"):
        lt.quantize(MLP(), {"up": stats["up"]}, rank=8)


def test_model_checkpoint_round_trip(tmp_path):
    m = MLP()
    stats = lt.calibrate(m, batches())
    lt.quantize(m, stats, rank=8, policy="mean_abs")
    p = tmp_path / "mlp.lqer.safetensors"
    lt.save(m, str(p))
    assert lqer.layer_names(p) == ["down", "head.0", "up"]
    fresh = lt.load_into(MLP(), str(p))
    x = torch.randn(4, 64)
    with torch.no_grad():
        assert torch.equal(fresh(x), m(x))
    with pytest.raises(ValueError, match="names no module"):
        lt.load_into(nn.Sequential(nn.Linear(64, 128)), str(p))
