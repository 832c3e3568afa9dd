"""Reading DICOM files: slice geometry from headers, pixels only when asked.

:class:`PlainReader` is the reference: ``pydicom.dcmread`` and ``pixel_array`` with pydicom's
own value conversion. :mod:`stages.dicom_fast` holds an optimised reader that must give the same
headers and pixels (tested); preprocessing chooses between them with ``preprocess.reader``.

Every failure to read a file becomes a :class:`~stages.errors.DataError` whose message is one
line naming the file and the reason. Only geometry and intensity attributes are read into our
objects; identifying tags never leave the raw files.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_rescale

from stages.errors import DataError

AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
IPP, IOP, PIXEL_SPACING, NUMBER_OF_FRAMES = 0x00200032, 0x00200037, 0x00280030, 0x00280008
THICKNESS, SPACING_BETWEEN = 0x00180050, 0x00180088
SHARED_GROUPS, PER_FRAME_GROUPS = 0x52009229, 0x52009230
PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_PIXEL_DATA = 0x7FE00010, 0x7FE00008, 0x7FE00009
SAMPLES_PER_PIXEL, PHOTOMETRIC, MODALITY_LUT = 0x00280002, 0x00280004, 0x00283000
RESCALE_INTERCEPT, RESCALE_SLOPE = 0x00281052, 0x00281053
BITS_ALLOCATED, BITS_STORED, PIXEL_REPRESENTATION = 0x00280100, 0x00280101, 0x00280103
ROWS, COLUMNS, TRANSFER_SYNTAX = 0x00280010, 0x00280011, 0x00020010
# Values longer than this, in practice pixel data, stay in the file until used: a series' headers
# are held in memory, its pixels are not.
DEFER_BYTES = 16 * 1024
logging.getLogger("pydicom").setLevel(logging.CRITICAL)

Vector = tuple[float, float, float]


@dataclass(frozen=True)
class SliceHeader:
    """Geometry of one image frame, read without pixel data."""

    path: Path
    frame: int | None  # index into a multi-frame file, None for single-frame files
    position: Vector  # ImagePositionPatient (mm, LPS)
    row_dir: Vector  # direction of increasing column index
    col_dir: Vector  # direction of increasing row index
    normal: Vector  # unit slice normal, row_dir x col_dir
    spacing: tuple[float, float]  # (between rows, between columns) in mm
    shape: tuple[int, int]  # (Rows, Columns)
    thickness: float
    geometry_known: bool  # orientation and position read from the file, not assumed


@dataclass(frozen=True)
class DicomFile:
    """One parsed file: its frames' geometry and the dataset (pixel data left in the file)."""

    path: Path
    headers: list[SliceHeader]
    dataset: pydicom.Dataset
    native: bool = False  # parsed by the fast reader's own path (see stages.dicom_fast)


class Reader(Protocol):
    """How DICOM files become headers and pixels."""

    def read(self, path: Path) -> DicomFile:
        """Parse one file (headers; pixel data deferred); failures are DataErrors."""
        ...

    def pixels(self, file: DicomFile) -> np.ndarray:
        """Decoded frames as float32 ``(frames, rows, cols)`` in scanner units (see :func:`finish_pixels`)."""
        ...


class DataErrorGuard:
    """Context manager turning any failure inside its block into a one-line :class:`DataError`.

    ``what`` names the step in the message and may be updated as the block proceeds, so one
    guard serves several steps. pydicom parses lazily, so corrupt input can fail at any
    attribute access, with many exception types; Rust decoders (pylibjpeg-rle) even panic with a
    ``BaseException``.
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self._warnings = warnings.catch_warnings()

    def __enter__(self) -> DataErrorGuard:
        self._warnings.__enter__()
        warnings.simplefilter("ignore")  # problems are reported once, by our callers
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        self._warnings.__exit__(None, None, None)
        if exc is None or isinstance(exc, (DataError, KeyboardInterrupt, SystemExit)):
            return
        if isinstance(exc, InvalidDicomError):
            raise DataError(self.path, "not a DICOM file") from None
        raise DataError(self.path, f"{self.what} ({type(exc).__name__}: {exc})") from None


def data_errors(path: Path, what: str) -> DataErrorGuard:
    """Guard a block reading ``path``: any failure becomes a one-line DataError naming ``what``."""
    return DataErrorGuard(path, what)


# How header values are got from a dataset: pydicom's conversion here, a memoised raw parse in
# the fast reader. ``numbers`` returns a DS/IS value as floats, None when absent or empty.
ValueFn = Callable[[pydicom.Dataset, int], object]
NumbersFn = Callable[[pydicom.Dataset, int], Sequence[float] | None]


def present(ds: pydicom.Dataset, tag: int) -> bool:
    """Whether ``ds`` has the element, without converting it or reading a deferred value."""
    return ds.get_item(tag, keep_deferred=True) is not None


def plain_value(ds: pydicom.Dataset, tag: int) -> object:
    """``ds[tag].value`` through pydicom's conversion, or None when absent."""
    return ds[tag].value if tag in ds else None


def plain_numbers(ds: pydicom.Dataset, tag: int) -> list[float] | None:
    """A numeric (DS/IS) value as a list of floats, or None when absent or empty."""
    value = plain_value(ds, tag)
    if value is None or value == "":
        return None
    return [float(v) for v in value] if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]


def _floats(value: object, count: int, what: str, path: Path) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as exc:
        raise DataError(path, f"unreadable {what}: {exc}") from None
    if len(out) != count or not all(math.isfinite(v) for v in out):
        raise DataError(path, f"invalid {what}: {out}")
    return out


def _first(seq_owner: pydicom.Dataset | None, seq: str, keyword: str) -> object | None:
    if seq_owner is None or seq not in seq_owner or not seq_owner[seq].value:
        return None
    return seq_owner[seq].value[0].get(keyword)


def _int(value: object) -> int:
    return int(value)  # type: ignore[call-overload]


def unit_normal(row_dir: Sequence[float], col_dir: Sequence[float]) -> Vector | None:
    """``row_dir x col_dir`` scaled to unit length; None when the directions are degenerate.

    Plain Python: for 3-vectors numpy's call overhead costs more than the arithmetic.
    """
    (a1, a2, a3), (b1, b2, b3) = row_dir, col_dir
    n = (a2 * b3 - a3 * b2, a3 * b1 - a1 * b3, a1 * b2 - a2 * b1)
    length = math.sqrt(n[0] ** 2 + n[1] ** 2 + n[2] ** 2)
    return None if length < 0.5 else (n[0] / length, n[1] / length, n[2] / length)


def headers_from_dataset(
    ds: pydicom.Dataset, path: Path, *, value: ValueFn = plain_value, numbers: NumbersFn = plain_numbers
) -> list[SliceHeader]:
    """Per-frame geometry of a dataset (single- or multi-frame)."""
    try:
        rows, cols = _int(value(ds, ROWS)), _int(value(ds, COLUMNS))
        frames = _int(value(ds, NUMBER_OF_FRAMES) or 1)
    except (TypeError, ValueError):
        raise DataError(path, "incomplete header without Rows/Columns (truncated or not an image?)") from None
    if rows < 1 or cols < 1 or frames < 1:
        raise DataError(path, f"invalid image size {frames}x{rows}x{cols}")
    # integer-tag lookups: keyword lookups of absent attributes are slow
    shared = ds[SHARED_GROUPS].value if present(ds, SHARED_GROUPS) else None
    shared = shared[0] if shared else None
    per_frame = ds[PER_FRAME_GROUPS].value if present(ds, PER_FRAME_GROUPS) else []

    iop = numbers(ds, IOP) or _first(shared, "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = numbers(ds, PIXEL_SPACING) or _first(shared, "PixelMeasuresSequence", "PixelSpacing")
    thick: object = (numbers(ds, SPACING_BETWEEN) or numbers(ds, THICKNESS) or [None])[0]
    thick = thick or _first(shared, "PixelMeasuresSequence", "SpacingBetweenSlices")
    thick = thick or _first(shared, "PixelMeasuresSequence", "SliceThickness")
    thickness = _floats([thick or 1.0], 1, "slice thickness", path)[0] or 1.0
    spacing_rc = _floats(spacing, 2, "PixelSpacing", path) if spacing else (1.0, 1.0)
    if min(spacing_rc) <= 0:
        raise DataError(path, f"invalid PixelSpacing {spacing_rc}")
    orient = _floats(iop, 6, "ImageOrientationPatient", path) if iop else AXIAL_IOP
    row_dir, col_dir = (orient[0], orient[1], orient[2]), (orient[3], orient[4], orient[5])
    normal = unit_normal(row_dir, col_dir)
    if normal is None:
        raise DataError(path, f"degenerate ImageOrientationPatient {orient}")

    positions: list[Vector] = []
    known = iop is not None
    origin = numbers(ds, IPP)
    # without per-frame positions, frame k lies k slice thicknesses from the file's position
    ox, oy, oz = _floats(origin, 3, "ImagePositionPatient", path) if origin else (0.0, 0.0, 0.0)
    for k in range(frames):
        ipp = None
        if k < len(per_frame):
            ipp = _first(per_frame[k], "PlanePositionSequence", "ImagePositionPatient")
        if ipp is None and frames == 1:
            ipp = origin
        if ipp is None:
            known = False
            step = thickness * k
            positions.append((ox + normal[0] * step, oy + normal[1] * step, oz + normal[2] * step))
        else:
            x, y, z = _floats(ipp, 3, "ImagePositionPatient", path)
            positions.append((x, y, z))
    return [
        SliceHeader(
            path=path,
            frame=k if frames > 1 else None,
            position=positions[k],
            row_dir=row_dir,
            col_dir=col_dir,
            normal=normal,
            spacing=(spacing_rc[0], spacing_rc[1]),
            shape=(rows, cols),
            thickness=thickness,
            geometry_known=known,
        )
        for k in range(frames)
    ]


def check_pixels(ds: pydicom.Dataset, path: Path, *, value: ValueFn = plain_value) -> None:
    """Raise a DataError unless ``ds`` holds greyscale pixel data."""
    if not any(present(ds, t) for t in (PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_PIXEL_DATA)):
        raise DataError(path, "no pixel data")
    samples = _int(value(ds, SAMPLES_PER_PIXEL) or 1)
    if samples != 1:
        raise DataError(path, f"not a greyscale image (SamplesPerPixel={samples})")


def finish_pixels(arr: np.ndarray, ds: pydicom.Dataset, path: Path, *, value: ValueFn = plain_value) -> np.ndarray:
    """Rescaled frames as ``(frames, rows, cols)``, MONOCHROME1 inverted so bright means high signal."""
    rows, cols = _int(value(ds, ROWS)), _int(value(ds, COLUMNS))
    arr = arr.reshape(-1, rows, cols) if arr.size % (rows * cols) == 0 else arr
    if arr.ndim != 3:
        raise DataError(path, f"unexpected pixel array shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(path, "non-finite pixel values")
    if value(ds, PHOTOMETRIC) == "MONOCHROME1":
        arr = -arr  # a constant map for the whole series; normalisation removes the offset
    return arr


class PlainReader:
    """The reference reader: ``pydicom.dcmread`` (large values deferred) and ``pixel_array``."""

    def read(self, path: Path) -> DicomFile:
        """Parse one file and its frames' geometry."""
        with data_errors(path, "unreadable file") as guard:
            with open(path, "rb") as fh:
                guard.what = "corrupt DICOM"
                ds = pydicom.dcmread(fh, defer_size=DEFER_BYTES)  # deferred values are read from fh.name
            guard.what = "corrupt DICOM header"
            return DicomFile(path, headers_from_dataset(ds, path), ds)

    def pixels(self, file: DicomFile) -> np.ndarray:
        """Decoded frames as float32 ``(frames, rows, cols)``, RescaleSlope/Intercept applied."""
        ds, path = file.dataset, file.path
        with data_errors(path, "cannot decode pixel data"):
            check_pixels(ds, path)
            arr = np.asarray(apply_rescale(ds.pixel_array, ds), dtype=np.float32)
            return finish_pixels(arr, ds, path)


def read_headers(path: Path, reader: Reader | None = None) -> list[SliceHeader]:
    """One file's frame headers (no pixel data decoded)."""
    return (reader or PlainReader()).read(path).headers


def decode_pixels(path: Path, reader: Reader | None = None) -> np.ndarray:
    """One file's decoded frames (see :meth:`Reader.pixels`)."""
    reader = reader or PlainReader()
    return reader.pixels(reader.read(path))
