"""From a series folder to a normalised stack of square slices in one common orientation.

Three steps per series: read every header and plan (:mod:`stages.planner`), decode the frames the
plan needs, then finish (target layout, shrink to ``img_size`` keeping the physical aspect, pad,
normalise, drop blank slices, store as uint8).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stages.dicom import DicomFile, Reader, SliceHeader
from stages.errors import DataError, Problems
from stages.intensity import is_blank, normalise
from stages.planner import SlicePlan, along_normal, centred_slices, plan_series
from stages.settings import PreprocessSettings


@dataclass(frozen=True)
class Series:
    """A preprocessed series: uint8 slices ``(n, size, size)`` and their positions (mm)."""

    images: np.ndarray
    z: np.ndarray

    @classmethod
    def empty(cls, size: int) -> Series:
        return cls(np.zeros((0, size, size), np.uint8), np.zeros(0, np.float32))


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


ASSUMED_GEOMETRY = (
    "slice geometry assumed: ImageOrientationPatient or a per-frame ImagePositionPatient is missing,"
    " so slices are taken as axial or evenly spaced by the slice thickness"
)


def pad_square(image: np.ndarray, *, size: int, fill: float) -> np.ndarray:
    """Centre ``image`` on a ``size`` x ``size`` canvas of ``fill``."""
    rows, cols = image.shape
    out = np.full((size, size), fill, dtype=np.float32)
    top, left = (size - rows) // 2, (size - cols) // 2
    out[top : top + rows, left : left + cols] = image
    return out


def series_headers(
    series_dir: Path, *, reader: Reader, problems: Problems
) -> tuple[list[SliceHeader], dict[Path, DicomFile]]:
    """Readable, mutually consistent frame headers ordered along the slice normal, and the parsed files.

    Every file is read and parsed once; memory holds one series' headers, not its pixels.
    """
    headers: list[SliceHeader] = []
    files: dict[Path, DicomFile] = {}
    for path in sorted(Path(e.path) for e in os.scandir(series_dir) if e.is_file()):
        try:
            files[path] = reader.read(path)
        except DataError as err:
            problems.add_error(err)
            continue
        headers.extend(files[path].headers)
    if not headers:
        return [], files
    keys = [(h.shape, tuple(round(r + c, 3) for r, c in zip(h.row_dir, h.col_dir))) for h in headers]
    majority = Counter(keys).most_common(1)[0][0]
    kept = []
    for h, key in zip(headers, keys):
        if key != majority:
            problems.add(h.path, f"inconsistent slice size/orientation {h.shape} in a series of {majority[0]}")
        else:
            kept.append(h)
    along = {id(h): along_normal(h, kept[0].normal) for h in kept}
    kept.sort(key=lambda h: (along[id(h)], str(h.path), h.frame or 0))
    unique = [kept[0]]
    for h in kept[1:]:
        if abs(along[id(h)] - along[id(unique[-1])]) < 1e-3:
            problems.add(h.path, "duplicate slice position")
        else:
            unique.append(h)
    return unique, files


def decoded_frames(
    headers: list[SliceHeader], *, files: dict[Path, DicomFile], reader: Reader, problems: Problems
) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, frame)`` for each of ``headers`` that decodes; each file decoded once, then let go."""
    by_path: dict[Path, list[int]] = defaultdict(list)
    for i, h in enumerate(headers):
        by_path[h.path].append(i)
    for path in sorted(by_path):
        try:
            frames = reader.pixels(files.pop(path))
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


def target_slices(plan: SlicePlan, frames: Iterator[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray]]:
    """``(index into plan.keep, full-size slice in the target layout)`` from the decoded frames.

    In the target plane already, each decoded frame is a kept slice and is passed on as soon as
    decoded (full-size frames are never held together); a reformatted series is stacked first.
    """
    if not plan.reformats:
        for i, frame in frames:
            yield i, in_plane_layout(frame[None], plan.perm, plan.flips)[0]
        return
    volume = np.zeros(plan.source_shape, np.float32)
    decoded = False
    for i, frame in frames:
        volume[i] = frame
        decoded = True
    if decoded:
        volume = in_plane_layout(volume, plan.perm, plan.flips)
        volume = np.flip(volume, 0) if plan.flips[0] else volume
        yield from enumerate(volume[list(plan.keep)])


def largest_area_window(squares: np.ndarray, *, settings: PreprocessSettings) -> np.ndarray:
    """Which of a stack's slices to keep: ``middle_fraction`` of them, every ``slice_step``-th,
    centred on the slice with the most foreground (pixels above ``blank_level`` once normalised)."""
    scaled = normalise(squares, settings.normalisation)
    if scaled is None:
        return np.arange(len(squares))
    area = (scaled > settings.blank_level).sum(axis=(1, 2))
    centre = int(np.argmax(area))  # the first of equal areas
    return centred_slices(len(squares), centre=centre, fraction=settings.middle_fraction, step=settings.slice_step)


def finish(
    small: dict[int, np.ndarray], *, fill: float, plan: SlicePlan, settings: PreprocessSettings
) -> Series | None:
    """Pad the shrunk slices, normalise them together, drop blank ones; None for a constant series."""
    order = sorted(small)
    squares = np.stack([pad_square(small[i], size=settings.img_size, fill=fill) for i in order])
    z = np.asarray(plan.z)[order]
    if settings.window == "largest_area":
        window = largest_area_window(squares, settings=settings)
        squares, z = squares[window], z[window]
    scaled = normalise(squares, settings.normalisation)
    if scaled is None:
        return None
    level, min_fraction = settings.blank_level, settings.blank_min_fraction
    kept = [k for k, square in enumerate(scaled) if not is_blank(square, level=level, min_fraction=min_fraction)]
    images = np.round(scaled[kept] * 255).astype(np.uint8).reshape(-1, settings.img_size, settings.img_size)
    return Series(images, z[kept].astype(np.float32))


def load_series(series_dir: Path, *, settings: PreprocessSettings, reader: Reader, problems: Problems) -> Series | None:
    """Order, orient, select, normalise and resize one series; None if nothing usable is left."""
    headers, files = series_headers(series_dir, reader=reader, problems=problems)
    if not headers:
        problems.add(series_dir, "no readable DICOM slices")
        return None
    if not all(h.geometry_known for h in headers):
        problems.add(series_dir, ASSUMED_GEOMETRY)
    try:
        centred = settings.window == "middle"  # else every slice is kept until the areas are known
        plan = plan_series(
            headers,
            orientation=settings.orientation,
            middle_fraction=settings.middle_fraction if centred else 1.0,
            slice_step=settings.slice_step if centred else 1,
        )
    except DataError as err:
        problems.add_error(err)
        return None
    frames = decoded_frames([headers[k] for k in plan.decode], files=files, reader=reader, problems=problems)
    # Each slice is shrunk as soon as it is in the target layout (area averaging is linear, so
    # normalising the small stack afterwards gives the same result up to clipping of single hot
    # pixels); the series' minimum, i.e. the background (also for MONOCHROME1), pads them.
    small, fill = {}, np.inf
    for i, image in target_slices(plan, frames):
        fill = min(fill, float(image.min()))
        small[i] = shrink(image, spacing=plan.spacing, size=settings.img_size)
    if not small:
        return None
    series = finish(small, fill=fill, plan=plan, settings=settings)
    if series is None:
        problems.add(series_dir, "constant intensity, no usable slices")
    return series


def empty_arrays(settings: PreprocessSettings) -> dict[str, np.ndarray]:
    """The arrays of a patient without usable slices (every key present, no slices)."""
    empty = Series.empty(settings.img_size)
    return {key: value for name in settings.series for key, value in ((name, empty.images), (f"{name}_z", empty.z))}


def load_patient(
    folder: Path, *, settings: PreprocessSettings, reader: Reader, problems: Problems
) -> dict[str, np.ndarray]:
    """Arrays ``{name: (n, size, size) uint8, name + "_z": (n,) float32}`` for each series.

    A missing or unusable series is recorded in ``problems`` and yields empty arrays, so every
    patient has every key.
    """
    arrays: dict[str, np.ndarray] = {}
    for name in settings.series:
        result = None
        series_dir = folder / name
        if not series_dir.is_dir():
            problems.add(series_dir, "series folder missing")
        elif not any(series_dir.iterdir()):
            problems.add(series_dir, "series folder empty")
        else:
            result = load_series(series_dir, settings=settings, reader=reader, problems=problems)
        result = result or Series.empty(settings.img_size)
        arrays[name] = result.images
        arrays[f"{name}_z"] = result.z
    return arrays
