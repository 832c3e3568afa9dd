"""From a series folder to a normalised stack of square slices in one common orientation."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pydicom

from stages.dicom import DataError, Reader, SliceHeader, decode_pixels, read_file

# Target layouts as (LPS axis, sign) for the slice, row and column axes of the stack.
# Axial rows run anterior->posterior and columns right->left (radiological convention).
ORIENTATIONS: dict[str, tuple[tuple[int, int], ...]] = {
    "axial": ((2, 1), (1, 1), (0, 1)),
    "coronal": ((1, 1), (2, -1), (0, 1)),
    "sagittal": ((0, 1), (2, -1), (1, 1)),
}


@dataclass
class Problems:
    """Recorded skips; in strict mode the first one raises instead."""

    strict: bool = False
    root: Path | None = None
    items: list[dict[str, str]] = field(default_factory=list)

    def add(self, path: Path | str, reason: str) -> None:
        """Record (or, when strict, raise) a problem with ``path``."""
        err = DataError(self._rel(path), reason)
        if self.strict:
            raise err
        self.items.append({"file": err.path, "reason": err.reason})

    def add_error(self, err: DataError) -> None:
        """Record a :class:`DataError` raised by a reader."""
        self.add(err.path, err.reason)

    def _rel(self, path: Path | str) -> str:
        p = Path(path)
        if self.root is not None:
            try:
                return p.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return p.as_posix()


@dataclass(frozen=True)
class Series:
    """A preprocessed series: uint8 slices ``(n, size, size)`` and their positions (mm)."""

    images: np.ndarray
    z: np.ndarray
    files_decoded: int


def choose_slices(n: int, *, middle_fraction: float, step: int) -> np.ndarray:
    """Indices of the central ``middle_fraction`` of ``n`` slices, every ``step``-th."""
    if n <= 0:
        return np.zeros(0, dtype=int)
    count = max(1, round(n * middle_fraction))
    start = (n - count) // 2
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
    return tuple(perm), tuple(flips)  # type: ignore[return-value]


def in_plane_layout(volume: np.ndarray, perm: tuple[int, ...], flips: tuple[bool, ...]) -> np.ndarray:
    """Permute a ``[slice, row, col]`` stack to the target axes and flip its rows and columns.

    The slice axis is flipped (or not) by the caller, which selects slices in target order.
    """
    volume = np.transpose(volume, perm)
    for axis in (1, 2):
        if flips[axis]:
            volume = np.flip(volume, axis)
    return volume


def shrink(image: np.ndarray, *, spacing: tuple[float, float], size: int) -> np.ndarray:
    """Resize (area averaging) so the longer physical side spans ``size`` pixels, keeping the aspect."""
    rows, cols = image.shape
    height, width = rows * spacing[0], cols * spacing[1]
    scale = size / max(height, width)
    new_h = min(size, max(1, round(height * scale)))
    new_w = min(size, max(1, round(width * scale)))
    return cv2.resize(np.asarray(image, np.float32), (new_w, new_h), interpolation=cv2.INTER_AREA)


def pad_square(image: np.ndarray, *, size: int, fill: float) -> np.ndarray:
    """Centre ``image`` on a ``size`` x ``size`` canvas of ``fill``."""
    rows, cols = image.shape
    out = np.full((size, size), fill, dtype=np.float32)
    top, left = (size - rows) // 2, (size - cols) // 2
    out[top : top + rows, left : left + cols] = image
    return out


def normalise(volume: np.ndarray, *, percentiles: tuple[float, float]) -> np.ndarray | None:
    """Clip to the series' percentile range and scale to [0, 1]; None for a constant series.

    Percentiles come from a regular subsample of at most about 64x64 pixels per slice, which
    estimates them well at a fraction of the cost of sorting the whole series.
    """
    stride = max(1, min(volume.shape[1:]) // 64)
    lo, hi = np.percentile(volume[:, ::stride, ::stride], percentiles)
    if not hi > lo:
        return None
    out = volume.astype(np.float32, copy=True)
    out -= lo
    out *= 1.0 / (hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def is_blank(image: np.ndarray, *, level: float, min_fraction: float) -> bool:
    """A slice is blank when under ``min_fraction`` of its pixels exceed ``level``."""
    return float(np.mean(image > level)) < min_fraction


def series_headers(
    series_dir: Path, problems: Problems, read: Reader = Path.read_bytes
) -> tuple[list[SliceHeader], dict[Path, pydicom.Dataset]]:
    """Readable, mutually consistent frame headers ordered along the slice normal.

    Also returns each file's parsed dataset, whose pixel data (when larger than
    ``dicom.DEFER_BYTES``) stay in the file until decoded: every file is read and parsed once,
    and memory holds one series' headers, not its pixels.
    """
    headers: list[SliceHeader] = []
    datasets: dict[Path, pydicom.Dataset] = {}
    for path in sorted(Path(e.path) for e in os.scandir(series_dir) if e.is_file()):
        try:
            file_headers, datasets[path] = read_file(path, read)
        except DataError as err:
            problems.add_error(err)
            continue
        headers.extend(file_headers)
    if not headers:
        return [], datasets
    keys = [(h.shape, tuple(round(r + c, 3) for r, c in zip(h.row_dir, h.col_dir))) for h in headers]
    shape, orient = Counter(keys).most_common(1)[0][0]
    kept = []
    for h, key in zip(headers, keys):
        if key != (shape, orient):
            problems.add(h.path, f"inconsistent slice size/orientation {h.shape} in a series of {shape}")
        else:
            kept.append(h)
    normal = kept[0].normal
    along = {id(h): sum(p * n for p, n in zip(h.position, normal)) for h in kept}
    kept.sort(key=lambda h: (along[id(h)], str(h.path), h.frame or 0))
    unique = [kept[0]]
    for h in kept[1:]:
        if abs(along[id(h)] - along[id(unique[-1])]) < 1e-3:
            problems.add(h.path, "duplicate slice position")
        else:
            unique.append(h)
    return unique, datasets


def _decoded(
    headers: list[SliceHeader], problems: Problems, datasets: dict[Path, pydicom.Dataset]
) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, frame)`` for each frame of ``headers`` that decodes (each file decoded once).

    Decoded files leave ``datasets``, so their pixel data is not held twice; yielding frame by
    frame lets the caller shrink each one before the next is decoded.
    """
    by_path: dict[Path, list[int]] = defaultdict(list)
    for i, h in enumerate(headers):
        by_path[h.path].append(i)
    for path in sorted(by_path):
        try:
            frames = decode_pixels(path, datasets.pop(path, None))
        except DataError as err:
            problems.add_error(err)
            continue
        for i in by_path[path]:
            h = headers[i]
            frame = frames[h.frame or 0] if (h.frame or 0) < len(frames) else None
            if frame is None or frame.shape != h.shape:
                problems.add(path, f"pixel data does not match header size {h.shape}")
                continue
            yield i, frame


def load_series(
    series_dir: Path,
    *,
    orientation: str,
    middle_fraction: float,
    slice_step: int,
    img_size: int,
    clip_percentiles: tuple[float, float],
    blank_level: float,
    blank_min_fraction: float,
    problems: Problems,
    read: Reader = Path.read_bytes,
) -> Series | None:
    """Order, orient, select, normalise and resize one series; None if nothing usable is left.

    Every header is read; when the series is already acquired in the target plane only the
    chosen slices are decoded, otherwise every slice is needed to reformat the volume.
    """
    headers, datasets = series_headers(series_dir, problems, read)
    if not headers:
        problems.add(series_dir, "no readable DICOM slices")
        return None
    try:
        perm, flips = axis_map(headers[0], orientation)
    except DataError as err:
        problems.add_error(err)
        return None
    normal = headers[0].normal
    proj = np.array([sum(p * n for p, n in zip(h.position, normal)) for h in headers])
    slice_gap = float(np.median(np.diff(proj))) if len(proj) > 1 else headers[0].thickness
    spacing = (slice_gap, *headers[0].spacing)
    origin = np.asarray(headers[0].position)
    axis_dirs = [normal, np.asarray(headers[0].col_dir), np.asarray(headers[0].row_dir)]
    shape = (len(headers), *headers[0].shape)
    if orientation == "native":
        along, sign = proj, 1
    else:
        lps_axis, sign = ORIENTATIONS[orientation][0]
        along = np.array([h.position[lps_axis] for h in headers])

    n_target = shape[perm[0]]
    keep = choose_slices(n_target, middle_fraction=middle_fraction, step=slice_step)
    source = n_target - 1 - keep if flips[0] else keep  # indices along the un-flipped source axis
    in_plane = (spacing[perm[1]], spacing[perm[2]])
    # Each kept slice is shrunk as soon as it is decoded (area averaging is linear, so
    # normalising the small stack afterwards gives the same result up to clipping of single hot
    # pixels): full-size frames are never held together, which would cost memory and page faults.
    small: dict[int, np.ndarray] = {}
    fill = np.inf  # the series' minimum, i.e. the background, also for MONOCHROME1 series
    if perm[0] == 0:
        for i, frame in _decoded([headers[k] for k in source], problems, datasets):
            image = in_plane_layout(frame[None], perm, flips)[0]
            fill = min(fill, float(image.min()))
            small[i] = shrink(image, spacing=in_plane, size=img_size)
        decoded = len(small)
        z = along[source] * sign
    else:
        volume = np.zeros(shape, np.float32)
        decoded = 0
        for i, frame in _decoded(headers, problems, datasets):
            volume[i] = frame
            decoded += 1
        volume = in_plane_layout(volume, perm, flips)
        volume = volume[keep] if not flips[0] else np.flip(volume, 0)[keep]
        if decoded:
            fill = float(volume.min())
            small = {i: shrink(image, spacing=in_plane, size=img_size) for i, image in enumerate(volume)}
        # a reformatted stack (never "native"): positions along the target axis
        step_mm = axis_dirs[perm[0]][lps_axis] * spacing[perm[0]]
        z = (origin[lps_axis] + np.arange(n_target) * step_mm)[source] * sign
    if not small:
        return None
    order = sorted(small)
    z = z[order]
    squares = np.stack([pad_square(small[i], size=img_size, fill=fill) for i in order])
    scaled = normalise(squares, percentiles=clip_percentiles)
    if scaled is None:
        problems.add(series_dir, "constant intensity, no usable slices")
        return None
    images, positions = [], []
    for square, pos in zip(scaled, z):
        if not is_blank(square, level=blank_level, min_fraction=blank_min_fraction):
            images.append(np.round(square * 255).astype(np.uint8))
            positions.append(pos)
    if not images:
        return Series(np.zeros((0, img_size, img_size), np.uint8), np.zeros(0, np.float32), decoded)
    return Series(np.stack(images), np.asarray(positions, dtype=np.float32), decoded)


def load_patient(folder: Path, *, series: list[str], problems: Problems, **settings: object) -> dict[str, np.ndarray]:
    """Arrays ``{name: (n, size, size) uint8, name + "_z": (n,) float32}`` for each series.

    ``settings`` are the keyword arguments of :func:`load_series` (``read`` included). A missing or unusable series
    is recorded in ``problems`` and yields empty arrays, so every patient has every key.
    """
    size = int(settings["img_size"])  # type: ignore[call-overload]
    arrays: dict[str, np.ndarray] = {}
    for name in series:
        result = None
        series_dir = folder / name
        if not series_dir.is_dir():
            problems.add(series_dir, "series folder missing")
        elif not any(series_dir.iterdir()):
            problems.add(series_dir, "series folder empty")
        else:
            result = load_series(series_dir, problems=problems, **settings)  # type: ignore[arg-type]
        if result is None:
            result = Series(np.zeros((0, size, size), np.uint8), np.zeros(0, np.float32), 0)
        arrays[name] = result.images
        arrays[f"{name}_z"] = result.z
    return arrays


def settings_from_params(params: dict) -> dict[str, object]:
    """Keyword arguments of :func:`load_series` taken from the ``preprocess`` params section."""
    return {
        "orientation": params["orientation"],
        "middle_fraction": float(params["middle_fraction"]),
        "slice_step": int(params["slice_step"]),
        "img_size": int(params["img_size"]),
        "clip_percentiles": tuple(float(p) for p in params["clip_percentiles"]),
        "blank_level": float(params["blank_level"]),
        "blank_min_fraction": float(params["blank_min_fraction"]),
    }
