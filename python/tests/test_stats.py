"""lqer.ActivationStats: the numbers, exact merging, the file both sides read,
and several Python threads adding at once."""

import threading

import numpy as np
import pytest

import lqer


def test_mean_abs_rms_and_gram_equal_numpy_in_double(rng):
    x = rng.standard_normal((300, 48)).astype(np.float32)
    s = lqer.ActivationStats(48, gram=True)
    s.add(x[:100])
    s.add(x[100:])
    assert (s.tokens, s.batches, s.in_features, s.has_gram) == (300, 2, 48, True)
    xd = x.astype(np.float64)
    # lqer accumulates in compensated double: equal to numpy's double sums up
    # to double rounding of a few operations per element.
    np.testing.assert_allclose(s.mean_abs, np.abs(xd).mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.mean_square, (xd * xd).mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.rms, np.sqrt((xd * xd).mean(0)), rtol=1e-12)
    np.testing.assert_allclose(s.gram(), xd.T @ xd / 300, rtol=1e-12, atol=1e-15)


def test_merge_equals_one_pass_exactly(rng):
    x = rng.standard_normal((257, 32)).astype(np.float32) * 3
    one = lqer.ActivationStats(32, gram=True)
    for part in np.array_split(x, 5):
        one.add(part)
    a, b = lqer.ActivationStats(32, gram=True), lqer.ActivationStats(32, gram=True)
    for i, part in enumerate(np.array_split(x, 5)):
        (a if i < 2 else b).add(part)
    a.merge(b)
    assert a.tokens == one.tokens and a.batches == one.batches
    assert np.array_equal(a.mean_abs, one.mean_abs)
    assert np.array_equal(a.mean_square, one.mean_square)
    assert np.array_equal(a.gram(), one.gram())


def test_save_load_round_trip_and_damage(tmp_path, rng):
    s = lqer.ActivationStats(16, gram=True)
    s.add(rng.standard_normal((40, 16)).astype(np.float32))
    p = tmp_path / "s.safetensors"
    s.save(p)
    t = lqer.ActivationStats.load(p)
    assert t.tokens == 40 and np.array_equal(t.mean_abs, s.mean_abs) and np.array_equal(t.gram(), s.gram())
    raw = bytearray(p.read_bytes())
    raw[-3] ^= 0x40  # a byte of the last tensor
    p.write_bytes(bytes(raw))
    with pytest.raises(lqer.FileFormatError, match="checksum"):
        lqer.ActivationStats.load(p)
    lqer.ActivationStats.load(p, verify=False)  # the structure is intact
    with pytest.raises(OSError):
        lqer.ActivationStats.load(tmp_path / "missing.safetensors")


def test_bad_batches_leave_the_statistics_unchanged(rng):
    s = lqer.ActivationStats(8)
    s.add(np.ones((2, 8), np.float32))
    bad = np.ones((3, 8), np.float32)
    bad[1, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        s.add(bad)
    with pytest.raises(ValueError):
        s.add(np.ones((3, 9), np.float32))
    assert s.tokens == 2 and s.batches == 1
    with pytest.raises(ValueError):
        s.merge(lqer.ActivationStats(9))
    with pytest.raises(ValueError):
        s.merge(s)
    with pytest.raises(ValueError):
        lqer.ActivationStats(0)


def test_several_threads_adding_to_one_accumulator(rng):
    # The GIL is released inside add(); the object's mutex serializes the
    # accumulation, so the result is the sum of every batch, in some order:
    # equal to a serial pass up to the order of the (compensated) additions.
    batches = [rng.standard_normal((64, 24)).astype(np.float32) for _ in range(32)]
    serial = lqer.ActivationStats(24, gram=True)
    for b in batches:
        serial.add(b)
    shared = lqer.ActivationStats(24, gram=True)

    def work(i):
        for b in batches[i::4]:
            shared.add(b)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert shared.tokens == serial.tokens and shared.batches == serial.batches
    np.testing.assert_allclose(shared.mean_abs, serial.mean_abs, rtol=1e-14)
    np.testing.assert_allclose(shared.gram(), serial.gram(), rtol=1e-13, atol=1e-16)


def test_torch_tensors_are_accepted(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((10, 12)).astype(np.float32)
    a, b = lqer.ActivationStats(12), lqer.ActivationStats(12)
    a.add(x)
    b.add(torch.from_numpy(x))
    assert np.array_equal(a.mean_abs, b.mean_abs)
