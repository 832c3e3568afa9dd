"""Intensity normalisation of a series and the blank-slice rule.

Two methods (``preprocess.normalisation``):

* ``percentile`` (the seed's): clip to the series' ``clip_percentiles`` and scale to [0, 1]. The
  upper clip saturates the brightest tissue, which in contrast-enhanced T1 is the enhancing
  tumour rim, and the grey level of the brain then depends on which tissue sets the percentile.
* ``reference``: reference-tissue scaling. The background level (a low percentile) maps to 0 and
  the median of the foreground (pixels above a tenth of the way from the background to the
  bright end: mostly brain) to ``1 / ceiling``, so tissue contrast is kept up to ``ceiling``
  times the reference level and brighter values clip. Every statistic is a percentile or a
  median, so a single hot pixel changes nothing but itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BACKGROUND_PERCENTILE = 0.5
BRIGHT_PERCENTILE = 99.5
FOREGROUND_FRACTION = 0.1  # of the way from the background to the bright end


@dataclass(frozen=True)
class Normalisation:
    """How a series' intensities map to [0, 1]."""

    method: str  # "percentile" | "reference"
    clip_percentiles: tuple[float, float] | None = None  # percentile only
    ceiling: float | None = None  # reference only


def _subsample(volume: np.ndarray) -> np.ndarray:
    """A regular subsample of at most about 64x64 pixels per slice: percentiles of it estimate the
    series' well at a fraction of the cost of sorting every pixel."""
    stride = max(1, min(volume.shape[1:]) // 64)
    return volume[:, ::stride, ::stride]


def intensity_range(volume: np.ndarray, norm: Normalisation) -> tuple[np.float64, np.float64] | None:
    """The values that map to 0 and 1; None when the series is constant (or has no foreground).

    NumPy float64 scalars, not Python floats: scaling a float32 array by them computes in float64
    (rounded once), as the cache has always been computed.
    """
    sample = _subsample(volume)
    if norm.method == "percentile" and norm.clip_percentiles is not None:
        lo, hi = np.percentile(sample, norm.clip_percentiles)
    elif norm.method == "reference" and norm.ceiling is not None:
        lo, bright = np.percentile(sample, (BACKGROUND_PERCENTILE, BRIGHT_PERCENTILE))
        foreground = sample[sample > lo + FOREGROUND_FRACTION * (bright - lo)]
        if foreground.size == 0:
            return None
        hi = lo + norm.ceiling * (np.median(foreground) - lo)
    else:
        raise ValueError(f"incomplete normalisation {norm}")
    return (np.float64(lo), np.float64(hi)) if hi > lo else None


def normalise(volume: np.ndarray, norm: Normalisation) -> np.ndarray | None:
    """``volume`` scaled to [0, 1] by :func:`intensity_range` (float32); None for a constant series."""
    bounds = intensity_range(volume, norm)
    if bounds is None:
        return None
    lo, hi = bounds
    out = volume.astype(np.float32, copy=True)
    out -= lo
    out *= 1.0 / (hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def is_blank(image: np.ndarray, *, level: float, min_fraction: float) -> bool:
    """A slice is blank when under ``min_fraction`` of its pixels exceed ``level``."""
    return float(np.mean(image > level)) < min_fraction
