"""DeviceLoader: the GPU-resident loader, exercised on NumPy arrays (same code, xp-generic)."""

import numpy as np
import pytest

from cnnlab.data import DataLoader, DeviceLoader, flip_images, shift_images


def _data(n=37):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


def test_matches_dataloader_without_augmentation():
    x, y = _data()
    a = list(DeviceLoader(x, y, 8, shuffle=True, seed=5, device="cpu"))
    b = list(DataLoader(x, y, 8, shuffle=True, seed=5))
    assert len(a) == len(b) == 5
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(ya, yb)  # same order from the same seed scheme
        np.testing.assert_allclose(xa, xb, rtol=1e-6, atol=1e-6)
        assert xa.dtype == np.float32 and xa.shape[1:] == (1, 28, 28)


def test_shifts_are_translations_with_zero_fill():
    x, y = _data(16)
    loader = DeviceLoader(x, y, 16, shuffle=False, seed=1, max_shift=2, device="cpu")
    xb, _ = next(iter(loader))
    # recover each image's shift by trying all 25 candidates against the reference shifter
    zero = (0 - 0.1307) / 0.3081
    for i in range(16):
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = (shift_images(x[i:i + 1], [dy], [dx])[0] / 255.0 - 0.1307) / 0.3081
                if np.allclose(xb[i, 0], ref, atol=1e-5):
                    found = True
        assert found, f"image {i} is not a translation of the original"
    assert np.isclose(xb, zero).any()  # zero fill shows up somewhere


def test_reproducible_and_epochs_differ():
    x, y = _data()
    a, b = DeviceLoader(x, y, 10, seed=3, max_shift=1, device="cpu"), DeviceLoader(x, y, 10, seed=3, max_shift=1, device="cpu")
    e0a, e0b = list(a), list(b)
    for (xa, _), (xb, _) in zip(e0a, e0b):
        np.testing.assert_array_equal(xa, xb)
    e1 = list(a)
    assert not np.array_equal(e0a[0][1], e1[0][1])


@pytest.mark.parametrize("max_shift", [0, 2])
def test_hflip_mirrors_the_drawn_images_after_the_shift(max_shift):
    x, y = _data(16)
    loader = DeviceLoader(x, y, 16, shuffle=False, seed=1, max_shift=max_shift, hflip=True, mean=0.25, std=0.5,
                          device="cpu")
    xb, _ = next(iter(loader))
    rng = np.random.default_rng(1)  # epoch 0, no shuffle: shifts (if any) then one coin per image
    d = rng.integers(-max_shift, max_shift + 1, size=(16, 2)) if max_shift else np.zeros((16, 2), np.int64)
    coins = rng.random(16) < 0.5
    assert 0 < coins.sum() < 16
    ref = (flip_images(shift_images(x, d[:, 0], d[:, 1]), coins) / 255.0 - 0.25) / 0.5
    np.testing.assert_allclose(xb[:, 0], ref, atol=1e-5)
    again, _ = next(iter(DeviceLoader(x, y, 16, shuffle=False, seed=1, max_shift=max_shift, hflip=True, mean=0.25,
                                      std=0.5, device="cpu")))
    np.testing.assert_array_equal(again, xb)
    assert not np.allclose(next(iter(DeviceLoader(x, y, 16, shuffle=False, seed=1, max_shift=max_shift, mean=0.25,
                                                  std=0.5, device="cpu")))[0], xb)  # off by default


def test_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(np.zeros((3, 28, 28), np.float32), np.zeros(3), 2, device="cpu")
    with pytest.raises(ValueError, match="labels"):
        DeviceLoader(np.zeros((3, 28, 28), np.uint8), np.zeros(4), 2, device="cpu")
    with pytest.raises(TypeError, match="hflip"):
        DeviceLoader(np.zeros((3, 28, 28), np.uint8), np.zeros(3), 2, hflip="yes", device="cpu")
    with pytest.raises(ValueError, match="std"):
        DeviceLoader(np.zeros((3, 28, 28), np.uint8), np.zeros(3), 2, std=0.0, device="cpu")
