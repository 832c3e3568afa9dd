"""Reading DICOM files: slice geometry from headers, pixels only when asked.

Every failure to read a file becomes a :class:`DataError` whose message is one line naming the
file and the reason, so stages can record a skip or stop with that line instead of a traceback.
Only geometry and intensity attributes are read into our objects; identifying tags never leave
the raw files.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom import filereader
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_rescale

from stages.io import read_range

AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
IPP, IOP, PIXEL_SPACING, NUMBER_OF_FRAMES = 0x00200032, 0x00200037, 0x00280030, 0x00280008
THICKNESS, SPACING_BETWEEN = 0x00180050, 0x00180088
SHARED_GROUPS, PER_FRAME_GROUPS = 0x52009229, 0x52009230
PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_PIXEL_DATA = 0x7FE00010, 0x7FE00008, 0x7FE00009
SAMPLES_PER_PIXEL, PHOTOMETRIC, MODALITY_LUT = 0x00280002, 0x00280004, 0x00283000
RESCALE_INTERCEPT, RESCALE_SLOPE = 0x00281052, 0x00281053
BITS_ALLOCATED, BITS_STORED, PIXEL_REPRESENTATION = 0x00280100, 0x00280101, 0x00280103
ROWS, COLUMNS, TRANSFER_SYNTAX = 0x00280010, 0x00280011, 0x00020010
# Values longer than this, in practice pixel data, are parsed when first used (see read_dataset);
# smaller ones cost less to parse inline than to fetch later.
DEFER_BYTES = 16 * 1024
NATIVE_SYNTAXES = {pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian}
logging.getLogger("pydicom").setLevel(logging.CRITICAL)
# We check every value we use ourselves; pydicom's per-value validation only costs time here.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


Reader = Callable[[Path], bytes]  # how a file's bytes are got (preprocess also hashes them)


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
    normal: tuple[float, float, float]  # unit slice normal, row_dir x col_dir
    spacing: tuple[float, float]  # (between rows, between columns) in mm
    shape: tuple[int, int]  # (Rows, Columns)
    thickness: float
    geometry_known: bool


def _floats(value: object, count: int, what: str, path: Path) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise DataError(path, f"unreadable {what}: {exc}") from None
    if len(out) != count or not all(math.isfinite(v) for v in out):
        raise DataError(path, f"invalid {what}: {out}")
    return out


_CONVERTED: dict[tuple, object] = {}


def _present(ds: pydicom.Dataset, tag: int) -> bool:
    """Whether ``ds`` has the element, without converting it or reading a deferred value."""
    return ds.get_item(tag, keep_deferred=True) is not None


def _value(ds: pydicom.Dataset, tag: int) -> object | None:
    """``ds[tag].value``, or None when the element is absent.

    A series repeats most header values in every file, and pydicom's conversion of an element
    costs more than the rest of handling a small slice, so short raw values are converted once
    per distinct encoding and remembered. Only used for binary and ASCII values, which do not
    depend on the character set.
    """
    elem = ds.get_item(tag, keep_deferred=True)
    if elem is None:
        return None
    if not isinstance(elem, RawDataElement) or elem.value is None or len(elem.value) > 64 or elem.VR == "SQ":
        return ds[tag].value
    key = (tag, elem.VR, elem.value, elem.is_implicit_VR, elem.is_little_endian)
    if key not in _CONVERTED:
        if len(_CONVERTED) > 4096:
            _CONVERTED.clear()
        _CONVERTED[key] = ds[tag].value
    return _CONVERTED[key]


@functools.lru_cache(maxsize=1024)
def _parse_numbers(raw: bytes) -> tuple[float, ...] | None:
    """Floats of a raw DS/IS value; remembered, as most of them repeat in every file of a series."""
    return tuple(float(v) for v in raw.decode("ascii").split("\\") if v.strip()) or None


def _numbers(ds: pydicom.Dataset, tag: int) -> tuple[float, ...] | list | None:
    """A numeric (DS/IS) value of ``ds`` as floats, or None when absent or empty.

    Header values still in their raw encoded form are split and parsed directly: building
    pydicom's validated ``DSfloat`` objects costs more than the rest of reading a slice's
    geometry. Any other form goes through pydicom's conversion.
    """
    elem = ds.get_item(tag, keep_deferred=True)
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes) and elem.VR in ("DS", "IS"):
        return _parse_numbers(value)
    value = ds[tag].value
    if value is None or value == "":
        return None
    return list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]


def _first(seq_owner: pydicom.Dataset | None, seq: str, keyword: str) -> object | None:
    if seq_owner is None or seq not in seq_owner or not seq_owner[seq].value:
        return None
    return seq_owner[seq].value[0].get(keyword)


class DataErrorGuard:
    """Context manager turning any failure inside its block into a one-line :class:`DataError`.

    ``what`` names the step in the message and may be updated as the block proceeds, so one
    guard serves several steps (each costs a few microseconds, which add up over 400k files).
    pydicom parses lazily, so corrupt input can fail at any attribute access, with many
    exception types; Rust decoders (pylibjpeg-rle) even panic with a ``BaseException``.
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


def read_dataset(path: Path, read: Reader = Path.read_bytes) -> pydicom.Dataset:
    """One file's dataset, parsed from its bytes (got with ``read``) by :func:`dataset_from_bytes`.

    Parsing from memory is a quarter cheaper than from a file object. The bytes are then let go:
    deferred pixel data are read from the file again, for the slices kept only; holding every
    file of a series instead costs memory, and page faults that outweigh the second read.
    Failures become DataErrors.
    """
    with data_errors(path, "") as guard:
        return _parse(path, read, guard)


def _parse(path: Path, read: Reader, guard: DataErrorGuard) -> pydicom.Dataset:
    guard.what = "unreadable file"
    data = read(path)
    guard.what = "corrupt DICOM"
    ds = dataset_from_bytes(data)
    # deferred values are read from the file itself (see read_dataset)
    ds.filename, ds.fileobj_type, ds.buffer, ds.timestamp = str(path), open, None, None
    return ds


def _past_file_meta(tag: int, vr: str | None, length: int) -> bool:
    return tag >> 16 != 2


def dataset_from_bytes(data: bytes) -> pydicom.Dataset:
    """A DICOM file's dataset (with its ``file_meta``) parsed from its bytes, pixel data deferred.

    Files in an uncompressed little-endian transfer syntax (all of the challenge's) are parsed
    with pydicom's own preamble, file meta and dataset readers; ``dcmread``'s general machinery
    around them (five dataset objects, file meta checks) costs as much again as the parsing.
    Anything else, and anything these readers fail on, goes through ``dcmread``.
    """
    fp = io.BytesIO(data)
    try:
        filereader.read_preamble(fp, False)
        meta = filereader.read_dataset(fp, False, True, stop_when=_past_file_meta)
        syntax = meta[TRANSFER_SYNTAX].value if TRANSFER_SYNTAX in meta else None
        start = fp.tell()
        if syntax in NATIVE_SYNTAXES and data[start : start + 2] != b"\0\0":  # no command set group
            implicit = syntax == pydicom.uid.ImplicitVRLittleEndian
            ds = filereader.read_dataset(fp, implicit, True, defer_size=DEFER_BYTES)
            ds.file_meta = meta
            return ds
    except Exception:  # noqa: BLE001 - dcmread below copes, or reports the problem
        pass
    return pydicom.dcmread(io.BytesIO(data), defer_size=DEFER_BYTES)


def headers_from_dataset(ds: pydicom.Dataset, path: Path) -> list[SliceHeader]:
    """Per-frame geometry of a dataset (single- or multi-frame)."""
    try:
        rows, cols = int(_value(ds, ROWS)), int(_value(ds, COLUMNS))  # type: ignore[arg-type]
        frames = int(_value(ds, NUMBER_OF_FRAMES) or 1)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(path, "incomplete header without Rows/Columns (truncated or not an image?)") from None
    if rows < 1 or cols < 1 or frames < 1:
        raise DataError(path, f"invalid image size {frames}x{rows}x{cols}")
    # integer-tag lookups: keyword lookups of absent attributes are slow
    shared = ds[SHARED_GROUPS].value if _present(ds, SHARED_GROUPS) else None
    shared = shared[0] if shared else None
    per_frame = ds[PER_FRAME_GROUPS].value if _present(ds, PER_FRAME_GROUPS) else []

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
    row_dir, col_dir = orient[:3], orient[3:]
    normal = unit_normal(row_dir, col_dir)
    if normal is None:
        raise DataError(path, f"degenerate ImageOrientationPatient {orient}")

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
            positions.append(tuple(v * thickness * k for v in normal))
        else:
            positions.append(_floats(ipp, 3, "ImagePositionPatient", path))
    return [
        SliceHeader(
            path=path,
            frame=k if frames > 1 else None,
            position=positions[k],  # type: ignore[arg-type]
            row_dir=row_dir,  # type: ignore[arg-type]
            col_dir=col_dir,  # type: ignore[arg-type]
            normal=normal,
            spacing=spacing_rc,  # type: ignore[arg-type]
            shape=(rows, cols),
            thickness=thickness,
            geometry_known=known,
        )
        for k in range(frames)
    ]


def unit_normal(row_dir: tuple[float, ...], col_dir: tuple[float, ...]) -> tuple[float, float, float] | None:
    """``row_dir x col_dir`` scaled to unit length; None when the directions are degenerate.

    Plain Python: for 3-vectors numpy's call overhead costs more than the arithmetic.
    """
    (a1, a2, a3), (b1, b2, b3) = row_dir, col_dir
    n = (a2 * b3 - a3 * b2, a3 * b1 - a1 * b3, a1 * b2 - a2 * b1)
    length = math.sqrt(n[0] ** 2 + n[1] ** 2 + n[2] ** 2)
    return None if length < 0.5 else (n[0] / length, n[1] / length, n[2] / length)


def read_file(path: Path, read: Reader = Path.read_bytes) -> tuple[list[SliceHeader], pydicom.Dataset]:
    """One file's frame headers and its dataset (pixel data parsed when first used)."""
    with data_errors(path, "") as guard:  # one guard for the three steps
        ds = _parse(path, read, guard)
        guard.what = "corrupt DICOM header"
        return headers_from_dataset(ds, path), ds


def read_headers(path: Path) -> list[SliceHeader]:
    """Read one file's header (no pixel data) and return one :class:`SliceHeader` per frame."""
    return read_file(path)[0]


def decode_pixels(path: Path, ds: pydicom.Dataset | None = None) -> np.ndarray:
    """Decoded frames of one file as float32 ``(frames, rows, cols)`` in scanner units.

    RescaleSlope/Intercept are applied and MONOCHROME1 is inverted so that bright means
    high signal for every file.
    """
    ds = read_dataset(path) if ds is None else ds
    with data_errors(path, "cannot decode pixel data"):
        return _pixels(ds, path)


def _pixels(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    # integer-tag lookups throughout: keyword access costs more than the decoding of a small slice
    if not any(_present(ds, t) for t in (PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_PIXEL_DATA)):
        raise DataError(path, "no pixel data")
    samples = int(_value(ds, SAMPLES_PER_PIXEL) or 1)  # type: ignore[arg-type]
    if samples != 1:
        raise DataError(path, f"not a greyscale image (SamplesPerPixel={samples})")
    arr = native_pixels(ds)
    if arr is None:
        arr = ds.pixel_array
    arr = arr.astype(np.float32)
    if _present(ds, MODALITY_LUT):
        arr = np.asarray(apply_rescale(ds.pixel_array, ds), dtype=np.float32)
    else:  # RescaleSlope/Intercept in float32, without pydicom's float64 copy
        slope, intercept = (_numbers(ds, RESCALE_SLOPE) or [1.0])[0], (_numbers(ds, RESCALE_INTERCEPT) or [0.0])[0]
        if slope != 1.0:
            arr *= slope
        if intercept:
            arr += intercept
    rows, cols = int(_value(ds, ROWS)), int(_value(ds, COLUMNS))  # type: ignore[arg-type]
    arr = arr.reshape(-1, rows, cols) if arr.size % (rows * cols) == 0 else arr
    if arr.ndim != 3:
        raise DataError(path, f"unexpected pixel array shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise DataError(path, "non-finite pixel values")
    if _value(ds, PHOTOMETRIC) == "MONOCHROME1":
        arr = -arr  # a constant map for the whole series; normalisation removes the offset
    return arr


def native_pixels(ds: pydicom.Dataset) -> np.ndarray | None:
    """Uncompressed little-endian greyscale pixels straight from the buffer (read-only), else None.

    Same values as ``ds.pixel_array`` (unused high bits masked, signed values sign-extended)
    without its per-file set-up cost, which dominates for small slices; every other encoding
    goes through pydicom's decoders.
    """
    meta = ds.file_meta
    syntax = meta[TRANSFER_SYNTAX].value if TRANSFER_SYNTAX in meta else None
    if syntax not in NATIVE_SYNTAXES or not _present(ds, PIXEL_DATA):
        return None
    bits = int(_value(ds, BITS_ALLOCATED))  # type: ignore[arg-type]
    stored = int(_value(ds, BITS_STORED) or bits)  # type: ignore[arg-type]
    if bits not in (8, 16):
        return None
    signed = _value(ds, PIXEL_REPRESENTATION) == 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    rows, cols = int(_value(ds, ROWS)), int(_value(ds, COLUMNS))  # type: ignore[arg-type]
    frames = int(_value(ds, NUMBER_OF_FRAMES) or 1)  # type: ignore[arg-type]
    count = frames * rows * cols
    elem = ds.get_item(PIXEL_DATA, keep_deferred=True)
    if isinstance(elem, RawDataElement) and elem.value is None and isinstance(ds.filename, str):
        # deferred (see read_dataset): one pread of exactly the values, at a third of the cost of
        # pydicom's deferred read and element conversion
        data = read_range(ds.filename, elem.value_tell, min(elem.length, count * dtype.itemsize))
    else:
        data = ds[PIXEL_DATA].value
    arr = np.frombuffer(data, dtype=dtype, count=min(count, len(data) // dtype.itemsize))  # a read-only view
    if arr.size < count:
        return None  # let pydicom's decoder report the short buffer
    if stored < bits:  # sign-extend or mask the unused high bits
        shift = bits - stored
        arr = (arr << shift) >> shift if signed else arr & ((1 << stored) - 1)
    return arr.reshape(frames, rows, cols)
