"""Reading DICOM files: slice geometry from headers, pixels only when asked.

Every failure to read a file becomes a :class:`DataError` whose message is one line naming the
file and the reason, so stages can record a skip or stop with that line instead of a traceback.
Only geometry and intensity attributes are read into our objects; identifying tags never leave
the raw files.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_rescale

AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
IPP, IOP, PIXEL_SPACING, NUMBER_OF_FRAMES = 0x00200032, 0x00200037, 0x00280030, 0x00280008
THICKNESS, SPACING_BETWEEN = 0x00180050, 0x00180088
SHARED_GROUPS, PER_FRAME_GROUPS = 0x52009229, 0x52009230
PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_PIXEL_DATA = 0x7FE00010, 0x7FE00008, 0x7FE00009
SAMPLES_PER_PIXEL, PHOTOMETRIC, MODALITY_LUT = 0x00280002, 0x00280004, 0x00283000
RESCALE_INTERCEPT, RESCALE_SLOPE = 0x00281052, 0x00281053
BITS_ALLOCATED, BITS_STORED, PIXEL_REPRESENTATION = 0x00280100, 0x00280101, 0x00280103
NATIVE_SYNTAXES = {pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian}
logging.getLogger("pydicom").setLevel(logging.CRITICAL)
# We check every value we use ourselves; pydicom's per-value validation only costs time here.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


class DataError(Exception):
    """A problem with one input file or folder; ``str()`` is a single line naming it."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())[:300]
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self) -> tuple:
        return (DataError, (self.path, self.reason))


@dataclass(frozen=True)
class SliceHeader:
    """Geometry of one image frame, read without pixel data."""

    path: Path
    frame: int | None  # index into a multi-frame file, None for single-frame files
    position: tuple[float, float, float]  # ImagePositionPatient (mm, LPS)
    row_dir: tuple[float, float, float]  # direction of increasing column index
    col_dir: tuple[float, float, float]  # direction of increasing row index
    spacing: tuple[float, float]  # (between rows, between columns) in mm
    shape: tuple[int, int]  # (Rows, Columns)
    thickness: float
    geometry_known: bool

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal (row direction x column direction)."""
        n = np.cross(self.row_dir, self.col_dir)
        return n / np.linalg.norm(n)


def _floats(value: object, count: int, what: str, path: Path) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise DataError(path, f"unreadable {what}: {exc}") from None
    if len(out) != count or not np.all(np.isfinite(out)):
        raise DataError(path, f"invalid {what}: {out}")
    return out


def _numbers(ds: pydicom.Dataset, tag: int) -> tuple[float, ...] | list | None:
    """A numeric (DS/IS) value of ``ds`` as floats, or None when absent or empty.

    Header values still in their raw encoded form are split and parsed directly: building
    pydicom's validated ``DSfloat`` objects costs more than the rest of reading a slice's
    geometry. Any other form goes through pydicom's conversion.
    """
    if tag not in ds:
        return None
    elem = ds.get_item(tag)
    value = elem.value
    if isinstance(value, bytes) and elem.VR in ("DS", "IS"):
        parts = value.decode("ascii").split("\\")
        return tuple(float(v) for v in parts if v.strip()) or None
    value = ds[tag].value
    if value is None or value == "":
        return None
    return list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]


def _first(seq_owner: pydicom.Dataset | None, seq: str, keyword: str) -> object | None:
    if seq_owner is None or seq not in seq_owner or not seq_owner[seq].value:
        return None
    return seq_owner[seq].value[0].get(keyword)


@contextlib.contextmanager
def data_errors(path: Path, what: str) -> Iterator[None]:
    """Turn any failure inside the block into a one-line :class:`DataError` about ``path``.

    pydicom parses lazily, so corrupt input can fail at any attribute access, with many
    exception types; Rust decoders (pylibjpeg-rle) even panic with a ``BaseException``.
    """
    try:
        with warnings.catch_warnings():  # problems are reported once, by our callers
            warnings.simplefilter("ignore")
            yield
    except (DataError, KeyboardInterrupt, SystemExit):
        raise
    except InvalidDicomError:
        raise DataError(path, "not a DICOM file") from None
    except BaseException as exc:  # noqa: BLE001
        raise DataError(path, f"{what} ({type(exc).__name__}: {exc})") from None


def read_dataset(path: Path, *, pixels: bool = True) -> pydicom.Dataset:
    """``dcmread`` one file, without its pixel data unless ``pixels``; failures become DataErrors."""
    with data_errors(path, "corrupt DICOM"):
        return pydicom.dcmread(path, stop_before_pixels=not pixels)


def headers_from_dataset(ds: pydicom.Dataset, path: Path) -> list[SliceHeader]:
    """Per-frame geometry of a dataset (single- or multi-frame)."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.NumberOfFrames or 1) if NUMBER_OF_FRAMES in ds else 1
    except (AttributeError, TypeError, ValueError):
        raise DataError(path, "incomplete header without Rows/Columns (truncated or not an image?)") from None
    if rows < 1 or cols < 1 or frames < 1:
        raise DataError(path, f"invalid image size {frames}x{rows}x{cols}")
    # tag membership tests are cheap; keyword lookups of absent attributes are not
    shared = ds.SharedFunctionalGroupsSequence[0] if SHARED_GROUPS in ds and ds[SHARED_GROUPS].value else None
    per_frame = ds[PER_FRAME_GROUPS].value if PER_FRAME_GROUPS in ds else []

    iop = _numbers(ds, IOP) or _first(shared, "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = _numbers(ds, PIXEL_SPACING) or _first(shared, "PixelMeasuresSequence", "PixelSpacing")
    thick = _numbers(ds, SPACING_BETWEEN) or _numbers(ds, THICKNESS)
    thick = thick[0] if thick else None
    thick = thick or _first(shared, "PixelMeasuresSequence", "SpacingBetweenSlices")
    thick = thick or _first(shared, "PixelMeasuresSequence", "SliceThickness")
    thickness = _floats([thick or 1.0], 1, "slice thickness", path)[0] or 1.0
    spacing_rc = _floats(spacing, 2, "PixelSpacing", path) if spacing else (1.0, 1.0)
    if min(spacing_rc) <= 0:
        raise DataError(path, f"invalid PixelSpacing {spacing_rc}")
    orient = _floats(iop, 6, "ImageOrientationPatient", path) if iop else AXIAL_IOP
    row_dir, col_dir = np.array(orient[:3]), np.array(orient[3:])
    normal = np.cross(row_dir, col_dir)
    length = float(np.sqrt(normal @ normal))
    if length < 0.5:
        raise DataError(path, f"degenerate ImageOrientationPatient {orient}")
    normal /= length

    positions: list[tuple[float, ...]] = []
    known = iop is not None
    for k in range(frames):
        ipp = None
        if k < len(per_frame):
            ipp = _first(per_frame[k], "PlanePositionSequence", "ImagePositionPatient")
        if ipp is None and frames == 1:
            ipp = _numbers(ds, IPP)
        if ipp is None:
            known = False
            positions.append(tuple(float(v) for v in normal * thickness * k))
        else:
            positions.append(_floats(ipp, 3, "ImagePositionPatient", path))
    return [
        SliceHeader(
            path=path,
            frame=k if frames > 1 else None,
            position=positions[k],  # type: ignore[arg-type]
            row_dir=tuple(row_dir),  # type: ignore[arg-type]
            col_dir=tuple(col_dir),  # type: ignore[arg-type]
            spacing=spacing_rc,  # type: ignore[arg-type]
            shape=(rows, cols),
            thickness=thickness,
            geometry_known=known,
        )
        for k in range(frames)
    ]


def read_file(path: Path, *, pixels: bool = False) -> tuple[list[SliceHeader], pydicom.Dataset]:
    """One file's frame headers and its dataset (holding the encoded pixel data if ``pixels``)."""
    ds = read_dataset(path, pixels=pixels)
    with data_errors(path, "corrupt DICOM header"):
        return headers_from_dataset(ds, path), ds


def read_headers(path: Path) -> list[SliceHeader]:
    """Read one file's header (no pixel data) and return one :class:`SliceHeader` per frame."""
    return read_file(path, pixels=False)[0]


def decode_pixels(path: Path, ds: pydicom.Dataset | None = None) -> np.ndarray:
    """Decoded frames of one file as float32 ``(frames, rows, cols)`` in scanner units.

    RescaleSlope/Intercept are applied and MONOCHROME1 is inverted so that bright means
    high signal for every file.
    """
    ds = read_dataset(path, pixels=True) if ds is None else ds
    with data_errors(path, "cannot decode pixel data"):
        return _pixels(ds, path)


def _pixels(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    # integer-tag lookups throughout: keyword access costs more than the decoding of a small slice
    if PIXEL_DATA not in ds and FLOAT_PIXEL_DATA not in ds and DOUBLE_PIXEL_DATA not in ds:
        raise DataError(path, "no pixel data")
    samples = int(ds[SAMPLES_PER_PIXEL].value or 1) if SAMPLES_PER_PIXEL in ds else 1
    if samples != 1:
        raise DataError(path, f"not a greyscale image (SamplesPerPixel={samples})")
    arr = native_pixels(ds)
    if arr is None:
        arr = ds.pixel_array
    arr = arr.astype(np.float32)
    if MODALITY_LUT in ds:
        arr = np.asarray(apply_rescale(ds.pixel_array, ds), dtype=np.float32)
    else:  # RescaleSlope/Intercept in float32, without pydicom's float64 copy
        slope, intercept = (_numbers(ds, RESCALE_SLOPE) or [1.0])[0], (_numbers(ds, RESCALE_INTERCEPT) or [0.0])[0]
        if slope != 1.0:
            arr *= slope
        if intercept:
            arr += intercept
    rows, cols = int(ds.Rows), int(ds.Columns)
    arr = arr.reshape(-1, rows, cols) if arr.size % (rows * cols) == 0 else arr
    if arr.ndim != 3:
        raise DataError(path, f"unexpected pixel array shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(path, "non-finite pixel values")
    if PHOTOMETRIC in ds and ds[PHOTOMETRIC].value == "MONOCHROME1":
        arr = -arr  # a constant map for the whole series; normalisation removes the offset
    return arr


def native_pixels(ds: pydicom.Dataset) -> np.ndarray | None:
    """Uncompressed little-endian greyscale pixels straight from the buffer, else None.

    Same values as ``ds.pixel_array`` (unused high bits masked, signed values sign-extended)
    without its per-file set-up cost, which dominates for small slices; every other encoding
    goes through pydicom's decoders.
    """
    if ds.file_meta.get("TransferSyntaxUID") not in NATIVE_SYNTAXES or PIXEL_DATA not in ds:
        return None
    bits = int(ds[BITS_ALLOCATED].value)
    stored = int(ds[BITS_STORED].value or bits) if BITS_STORED in ds else bits
    if bits not in (8, 16):
        return None
    signed = PIXEL_REPRESENTATION in ds and ds[PIXEL_REPRESENTATION].value == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(ds[NUMBER_OF_FRAMES].value or 1) if NUMBER_OF_FRAMES in ds else 1
    data = ds[PIXEL_DATA].value
    if len(data) < frames * rows * cols * dtype.itemsize:
        return None  # let pydicom's decoder report the short buffer
    arr = np.frombuffer(data, dtype=dtype, count=frames * rows * cols).copy()
    if stored < bits:
        if signed:
            arr = (arr << (bits - stored)) >> (bits - stored)
        else:
            arr &= (1 << stored) - 1
    return arr.reshape(frames, rows, cols)
