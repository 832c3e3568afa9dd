"""The slice plan of a series: from ordered headers to which frames to decode and where they go.

Pure functions of the headers and the settings, so they are tested on their own: the order along
the slice normal, the mapping to the target plane (axis permutation and flips), the slices kept
(the middle fraction, every k-th, in target order), their positions, and which frames must be
decoded (only the kept ones when the series is already in the target plane, every one when it
has to be reformatted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.dicom import SliceHeader
from stages.errors import DataError

# Target layouts as (LPS axis, sign) for the slice, row and column axes of the stack.
# Axial rows run anterior->posterior and columns right->left (radiological convention).
ORIENTATIONS: dict[str, tuple[tuple[int, int], ...]] = {
    "axial": ((2, 1), (1, 1), (0, 1)),
    "coronal": ((1, 1), (2, -1), (0, 1)),
    "sagittal": ((0, 1), (2, -1), (1, 1)),
}


@dataclass(frozen=True)
class SlicePlan:
    """How one series becomes a stack of target-plane slices.

    ``perm``/``flips`` take a source stack ``[slice, row, col]`` to the target layout; ``keep``
    indexes the target slice axis (in target order); ``decode`` indexes ``headers`` (the frames
    to decode, in source order); ``z`` holds the position of each kept slice along the target
    axis (mm); ``spacing`` is the in-plane pixel spacing of the target layout.
    """

    headers: tuple[SliceHeader, ...]
    perm: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    keep: tuple[int, ...]
    decode: tuple[int, ...]
    z: tuple[float, ...]
    spacing: tuple[float, float]

    @property
    def reformats(self) -> bool:
        """Whether the slice axis changes, so every frame is needed to build the kept slices."""
        return self.perm[0] != 0

    @property
    def source_shape(self) -> tuple[int, int, int]:
        return (len(self.headers), *self.headers[0].shape)


def choose_slices(n: int, *, middle_fraction: float, step: int) -> np.ndarray:
    """Indices of the central ``middle_fraction`` of ``n`` slices, every ``step``-th."""
    count = max(1, round(n * middle_fraction))
    return centred_slices(n, centre=(n - count) // 2 + count // 2, fraction=middle_fraction, step=step)


def centred_slices(n: int, *, centre: int, fraction: float, step: int) -> np.ndarray:
    """Indices of ``fraction`` of ``n`` slices centred on ``centre`` (moved inside the stack), every ``step``-th."""
    if n <= 0:
        return np.zeros(0, dtype=int)
    count = max(1, round(n * fraction))
    start = min(max(centre - count // 2, 0), n - count)
    return np.arange(start, start + count, step, dtype=int)


def axis_map(header: SliceHeader, target: str) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Permutation and flips taking a stack ``[slice, row, col]`` to the ``target`` layout."""
    if target == "native":
        return (0, 1, 2), (False, False, False)
    dirs = [np.asarray(header.normal), np.asarray(header.col_dir), np.asarray(header.row_dir)]
    dominant = [int(np.argmax(np.abs(d))) for d in dirs]
    if len(set(dominant)) < 3:
        raise DataError(header.path, "oblique orientation cannot be mapped to a standard plane")
    perm, flips = [], []
    for lps_axis, sign in ORIENTATIONS[target]:
        a = dominant.index(lps_axis)
        perm.append(a)
        flips.append(bool(np.sign(dirs[a][lps_axis]) != sign))
    return (perm[0], perm[1], perm[2]), (flips[0], flips[1], flips[2])


def along_normal(header: SliceHeader, normal: tuple[float, float, float]) -> float:
    """Position of a slice projected on ``normal`` (mm)."""
    return sum(p * n for p, n in zip(header.position, normal))


def plan_series(headers: list[SliceHeader], *, orientation: str, middle_fraction: float, slice_step: int) -> SlicePlan:
    """The plan for ``headers`` (consistent, ordered along their normal; see ``volume.series_headers``)."""
    first = headers[0]
    perm, flips = axis_map(first, orientation)
    proj = np.array([along_normal(h, first.normal) for h in headers])
    slice_gap = float(np.median(np.diff(proj))) if len(proj) > 1 else first.thickness
    spacing = (slice_gap, *first.spacing)  # of the source axes [slice, row, col]
    n_target = (len(headers), *first.shape)[perm[0]]
    keep = choose_slices(n_target, middle_fraction=middle_fraction, step=slice_step)
    source = n_target - 1 - keep if flips[0] else keep  # indices along the un-flipped source axis
    if orientation == "native":
        z = proj[source]
    else:
        # each kept slice is labelled by its centre's coordinate along the target axis: the corner
        # differs from the centre by tens of mm when an oblique series is mapped to another plane
        lps_axis, sign = ORIENTATIONS[orientation][0]
        dirs = (first.normal, first.col_dir, first.row_dir)  # of the source axes [slice, row, col]
        extent = (len(headers), *first.shape)
        to_centre = sum(dirs[a][lps_axis] * spacing[a] * (extent[a] - 1) / 2 for a in range(3) if a != perm[0])
        if perm[0] == 0:  # the slice axis stays: each kept slice is a source frame
            z = (np.array([headers[k].position[lps_axis] for k in source]) + to_centre) * sign
        else:  # a reformatted stack: one source index along the target axis per slice
            step_mm = dirs[perm[0]][lps_axis] * spacing[perm[0]]
            z = (first.position[lps_axis] + source * step_mm + to_centre) * sign
    decode = tuple(range(len(headers))) if perm[0] != 0 else tuple(int(k) for k in source)
    return SlicePlan(
        headers=tuple(headers),
        perm=perm,
        flips=flips,
        keep=tuple(int(k) for k in keep),
        decode=decode,
        z=tuple(float(v) for v in z),
        spacing=(spacing[perm[1]], spacing[perm[2]]),
    )
