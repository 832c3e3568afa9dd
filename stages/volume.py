"""From a series folder to a normalised stack of square slices in one common orientation."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pydicom

from stages.dicom import DataError, SliceHeader, decode_pixels, read_file

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
    dirs = [header.normal, np.asarray(header.col_dir), np.asarray(header.row_dir)]
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


def to_square(image: np.ndarray, *, spacing: tuple[float, float], size: int, fill: float = 0.0) -> np.ndarray:
    """Resize keeping the physical aspect ratio, then pad with ``fill`` to ``size`` x ``size``."""
    rows, cols = image.shape
    height, width = rows * spacing[0], cols * spacing[1]
    scale = size / max(height, width)
    new_h = min(size, max(1, round(height * scale)))
    new_w = min(size, max(1, round(width * scale)))
    resized = cv2.resize(np.asarray(image, np.float32), (new_w, new_h), interpolation=cv2.INTER_AREA)
    out = np.full((size, size), fill, dtype=np.float32)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
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
    series_dir: Path, problems: Problems, datasets: dict[Path, pydicom.Dataset] | None = None
) -> list[SliceHeader]:
    """Readable, mutually consistent frame headers ordered along the slice normal.

    With ``datasets`` every file is read whole, once, and kept there for decoding; without it
    only headers are read (``stop_before_pixels``).
    """
    headers: list[SliceHeader] = []
    for path in sorted(p for p in series_dir.iterdir() if p.is_file()):
        try:
            file_headers, ds = read_file(path, pixels=datasets is not None)
        except DataError as err:
            problems.add_error(err)
            continue
        headers.extend(file_headers)
        if datasets is not None:
            datasets[path] = ds
    if not headers:
        return []
    keys = [(h.shape, np.round(h.row_dir + h.col_dir, 3).tobytes()) for h in headers]
    shape, orient = Counter(keys).most_common(1)[0][0]
    kept = []
    for h, key in zip(headers, keys):
        if key != (shape, orient):
            problems.add(h.path, f"inconsistent slice size/orientation {h.shape} in a series of {shape}")
        else:
            kept.append(h)
    normal = kept[0].normal
    kept.sort(key=lambda h: (float(np.dot(h.position, normal)), str(h.path), h.frame or 0))
    unique = [kept[0]]
    for h in kept[1:]:
        if abs(np.dot(np.subtract(h.position, unique[-1].position), normal)) < 1e-3:
            problems.add(h.path, "duplicate slice position")
        else:
            unique.append(h)
    return unique


def _decode(
    headers: list[SliceHeader], problems: Problems, datasets: dict[Path, pydicom.Dataset]
) -> list[np.ndarray | None]:
    """Decode the frames of ``headers`` (each file once), None where decoding failed."""
    by_path: dict[Path, list[int]] = defaultdict(list)
    for i, h in enumerate(headers):
        by_path[h.path].append(i)
    out: list[np.ndarray | None] = [None] * len(headers)
    for path in sorted(by_path):
        try:
            frames = decode_pixels(path, datasets.get(path))
        except DataError as err:
            problems.add_error(err)
            continue
        for i in by_path[path]:
            h = headers[i]
            frame = frames[h.frame or 0] if (h.frame or 0) < len(frames) else None
            if frame is None or frame.shape != h.shape:
                problems.add(path, f"pixel data does not match header size {h.shape}")
                continue
            out[i] = frame
    return out


def reads_every_file(series_dir: Path, orientation: str, keep_fraction: float) -> bool:
    """Whether decoding will need most files of the series, judged from its first readable header.

    Then one full read per file is cheapest; otherwise a header pass plus full reads of the kept
    files is (a reformatted plane needs every slice).
    """
    for path in sorted(p for p in series_dir.iterdir() if p.is_file()):
        try:
            header = read_file(path)[0][0]
            perm, _ = axis_map(header, orientation)
        except DataError:
            continue
        return perm[0] != 0 or header.frame is not None or keep_fraction > 0.5
    return False


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
) -> Series | None:
    """Order, orient, select, normalise and resize one series; None if nothing usable is left.

    When the series is already acquired in the target plane only the chosen files are decoded;
    otherwise every slice is needed to reformat the volume.
    """
    datasets = {} if reads_every_file(series_dir, orientation, middle_fraction / slice_step) else None
    headers = series_headers(series_dir, problems, datasets)
    if not headers:
        problems.add(series_dir, "no readable DICOM slices")
        return None
    try:
        perm, flips = axis_map(headers[0], orientation)
    except DataError as err:
        problems.add_error(err)
        return None
    normal = headers[0].normal
    proj = np.array([np.dot(h.position, normal) for h in headers])
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
    if perm[0] == 0:
        frames = _decode([headers[i] for i in source], problems, datasets or {})
        ok = [i for i, f in enumerate(frames) if f is not None]
        if not ok:
            return None
        volume = in_plane_layout(np.stack([frames[i] for i in ok]), perm, flips)
        z = along[source[ok]] * sign
        decoded = len(ok)
    else:
        frames = _decode(headers, problems, datasets or {})
        if all(f is None for f in frames):
            return None
        volume = np.stack([f if f is not None else np.zeros(shape[1:], np.float32) for f in frames])
        volume = in_plane_layout(volume, perm, flips)
        # a reformatted stack (never "native"): positions along the target axis
        step_mm = axis_dirs[perm[0]][lps_axis] * spacing[perm[0]]
        coord = origin[lps_axis] + np.arange(n_target) * step_mm
        volume = volume[keep] if not flips[0] else np.flip(volume, 0)[keep]
        z = coord[source] * sign
        decoded = sum(f is not None for f in frames)

    # resize first (area averaging is linear), then normalise the small stack: same result up
    # to clipping of single hot pixels, at a fraction of the cost for large images
    in_plane = (spacing[perm[1]], spacing[perm[2]])
    fill = float(volume.min())  # the background, also for inverted (MONOCHROME1) series
    squares = np.stack([to_square(img, spacing=in_plane, size=img_size, fill=fill) for img in volume])
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

    ``settings`` are the keyword arguments of :func:`load_series`. A missing or unusable series
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
