"""Normalisation: contrast kept, outliers resisted, scanner scale removed; the blank rule."""

from __future__ import annotations

import numpy as np
import pytest

from stages.intensity import Normalisation, intensity_range, is_blank, normalise

PERCENTILE = Normalisation("percentile", clip_percentiles=(0.5, 99.5))
MINMAX = Normalisation("percentile", clip_percentiles=(0.0, 100.0))
REFERENCE = Normalisation("reference", ceiling=3.0)


def head(rim: float = 900.0, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    """A stack of 6 slices of 64x64: air, a brain disc (480) and an enhancing rim (``rim``), with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 32, xx - 32)
    t = np.hypot(yy - 28, xx - 40)
    img = np.where(r < 26, 480.0, 0.0)
    img = np.where((t > 3) & (t < 6), rim, img)
    vol = np.stack([img + rng.normal(0, 15, img.shape) * (img > 0) for _ in range(6)]).astype(np.float32)
    return vol * scale


@pytest.mark.parametrize("norm", [PERCENTILE, REFERENCE], ids=["percentile", "reference"])
def test_a_single_hot_pixel_changes_nothing_but_itself(norm):
    vol = head()
    hot = vol.copy()
    hot[2, 10, 50] = 1e6
    a, b = normalise(vol, norm), normalise(hot, norm)
    mask = np.ones(vol.shape, bool)
    mask[2, 10, 50] = False
    assert np.abs(a[mask] - b[mask]).max() < 0.5 / 255, "other pixels must keep their uint8 value"


def test_min_max_scaling_fails_the_hot_pixel_check():
    vol = head()
    hot = vol.copy()
    hot[2, 10, 50] = 1e6
    assert np.abs(normalise(vol, MINMAX) - normalise(hot, MINMAX)).max() > 0.3


def test_reference_normalisation_keeps_the_contrast_the_percentile_clip_saturates():
    dim, bright = head(rim=900.0), head(rim=1100.0)
    rim = (slice(None), 28, 44)  # a pixel on the rim
    p_dim, p_bright = normalise(dim, PERCENTILE)[rim], normalise(bright, PERCENTILE)[rim]
    r_dim, r_bright = normalise(dim, REFERENCE)[rim], normalise(bright, REFERENCE)[rim]
    assert abs((p_bright - p_dim).mean()) < 0.03, "the rim sets the percentile clip: its brightness is lost"
    assert (r_bright - r_dim).mean() > 0.1 and r_bright.max() < 1.0, "reference scaling keeps it"
    brain = normalise(dim, REFERENCE)[:, 32, 20]
    assert brain.mean() == pytest.approx(1 / 3, abs=0.02), "the tissue median maps to 1 / ceiling"


def test_reference_normalisation_removes_the_scanner_scale():
    np.testing.assert_allclose(normalise(head(scale=1.6), REFERENCE), normalise(head(), REFERENCE), atol=1e-5)


def test_constant_series_and_missing_settings():
    assert normalise(np.ones((2, 4, 4), np.float32), PERCENTILE) is None
    assert normalise(np.zeros((2, 4, 4), np.float32), REFERENCE) is None
    with pytest.raises(ValueError):
        intensity_range(head(), Normalisation("reference"))


def test_blank_rule():
    assert is_blank(np.zeros((8, 8)), level=0.1, min_fraction=0.02)
    assert not is_blank(np.ones((8, 8)), level=0.1, min_fraction=0.02)
    sparse = np.zeros((10, 10))
    sparse[0, 0] = 1.0  # 1% of the pixels
    assert is_blank(sparse, level=0.1, min_fraction=0.02) and not is_blank(sparse, level=0.1, min_fraction=0.005)
    assert is_blank(np.full((8, 8), 0.1), level=0.1, min_fraction=0.02), "a pixel at the level does not exceed it"
    assert not is_blank(sparse, level=0.1, min_fraction=0.01), "exactly min_fraction above the level is not blank"


def test_percentiles_are_estimated_on_a_regular_subsample_of_about_64_pixels_a_side():
    from stages.intensity import _subsample

    volume = np.arange(2 * 256 * 200).reshape(2, 256, 200)
    np.testing.assert_array_equal(_subsample(volume), volume[:, ::3, ::3])  # the shorter side sets it
    np.testing.assert_array_equal(_subsample(volume[:, :130, :128]), volume[:, :130:2, :128:2])
    np.testing.assert_array_equal(_subsample(volume[:, :100, :64]), volume[:, :100, :64])


def test_reference_normalisation_by_hand_on_a_raised_background():
    """A volume whose every level is known: 800 background pixels at 100 (one at 0, below the
    background percentile), 400 dim at 190, 300 brain at 300, 100 rim at 900. By hand: the
    background level is 100 and the bright one 900, so the foreground is above 180 (dim, brain
    and rim), its median (190 + 300) / 2 = 245, and the top of the range 100 + 3 x 145 = 535."""
    values = np.array([0.0] + [100.0] * 799 + [190.0] * 400 + [300.0] * 300 + [900.0] * 100, np.float32)
    volume = values.reshape(1, 40, 40)
    before = volume.copy()
    reference = Normalisation("reference", clip_percentiles=(0.5, 99.5), ceiling=3.0)
    assert intensity_range(volume, reference) == (100.0, 535.0)
    out = normalise(volume, reference)
    assert out.dtype == np.float32 and np.array_equal(volume, before)  # a new array: the input is untouched
    expected = {0.0: 0.0, 100.0: 0.0, 190.0: 90 / 435, 300.0: 200 / 435, 900.0: 1.0}
    for value, level in expected.items():
        assert out[volume == value] == pytest.approx(level, abs=1e-6), value
