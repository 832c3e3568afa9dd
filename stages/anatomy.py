"""Adult brain anatomy for the demo cohort: the MNI152 2009 template's tissue maps.

nilearn's wheel ships the ICBM 2009 symmetric template at 1 mm with its grey- and white-matter
probability maps (no download). They are averaged to 2 mm once per process; CSF is the template's
brain mask less grey and white matter (ventricles and sulci). Points are given in the patient's
LPS millimetres (x to the left, y posterior, z superior); the template is RAS, centred here on its
brain's centroid.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

STEP_MM = 2.0
CLASSES = ("gm", "wm", "csf")
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Atlas:
    """Tissue probabilities on a regular RAS grid."""

    maps: np.ndarray  # (3, X, Y, Z) float32: grey matter, white matter, CSF
    origin: np.ndarray  # RAS mm of voxel (0, 0, 0)'s centre
    centre: np.ndarray  # RAS mm of the brain's centroid (the patient-space origin)
    white_matter: np.ndarray  # (n, 3) LPS mm of deep white-matter voxels, sorted: where tumours start


def _pool(volume: np.ndarray, factor: int) -> np.ndarray:
    x, y, z = (s // factor * factor for s in volume.shape)
    v = volume[:x, :y, :z]
    return v.reshape(x // factor, factor, y // factor, factor, z // factor, factor).mean(axis=(1, 3, 5))


@functools.lru_cache(maxsize=1)
def atlas() -> Atlas:
    """The template's tissue maps at :data:`STEP_MM` (loaded once per process)."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    mask = (t1.get_fdata(dtype=np.float32) > 0).astype(np.float32)
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    factor = int(STEP_MM)
    maps = np.stack([_pool(np.clip(v, 0, 1), factor) for v in (gm, wm, csf)]).astype(np.float32)
    affine = t1.affine
    origin = affine[:3, 3] + np.diag(affine)[:3] * (factor - 1) / 2.0
    brain = maps.sum(axis=0) > 0.5
    idx = np.argwhere(brain)
    centre = origin + idx.mean(axis=0) * STEP_MM
    deep = np.argwhere((maps[1] > 0.9) & (maps.sum(axis=0) > 0.95))
    white = (origin + deep * STEP_MM - centre) * LPS_TO_RAS
    return Atlas(maps=maps, origin=origin, centre=centre, white_matter=white.astype(np.float64))


def tissue_probabilities(points: np.ndarray) -> np.ndarray:
    """Grey matter, white matter and CSF probability ``(..., 3)`` at template points (LPS mm)."""
    from scipy.ndimage import map_coordinates

    a = atlas()
    ras = points.reshape(-1, 3) * LPS_TO_RAS + a.centre
    idx = ((ras - a.origin) / STEP_MM).T
    probs = np.stack([map_coordinates(m, idx, order=1, mode="constant", cval=0.0) for m in a.maps], axis=-1)
    return probs.reshape(*points.shape[:-1], 3).astype(np.float32)
