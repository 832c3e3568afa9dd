"""An optimised DICOM reader for the challenge's files, beside the plain reference in ``dicom.py``.

``preprocess.reader: fast`` (default) uses it; ``plain`` uses :class:`stages.dicom.PlainReader`.
Both give the same headers and pixels (``tests/test_dicom_fast.py`` runs them on pydicom's and
pydicom-data's files, the demo cohort and fuzzed files). What it does differently, each measured:

* A file is read with one ``os.read`` and parsed from memory; uncompressed little-endian files
  (all of the challenge's) are parsed with pydicom's own preamble, file meta and dataset readers
  (``pydicom.filereader``), skipping ``dcmread``'s machinery around them (five dataset objects,
  file meta checks), which costs as much again as the parsing.
* Header values that repeat in every file of a series are converted once per distinct encoding
  and remembered, and DS/IS numbers are split and parsed from their raw bytes: pydicom's value
  conversion costs more than the rest of reading a small slice. pydicom's per-value validation is
  switched off while this reader parses (we check every value we use).
* Uncompressed pixel data are read with one ``os.pread`` of exactly the element and viewed as an
  array, without ``pixel_array``'s per-file set-up.

Anything else (compressed or big-endian files, files these readers fail on, unusual pixel
layouts) is handed to the plain reader, so the fast path never guesses.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom import filereader
from pydicom.dataelem import RawDataElement

from stages.dicom import (
    BITS_ALLOCATED,
    BITS_STORED,
    COLUMNS,
    DEFER_BYTES,
    MODALITY_LUT,
    NUMBER_OF_FRAMES,
    PHOTOMETRIC,
    PIXEL_DATA,
    PIXEL_REPRESENTATION,
    RESCALE_INTERCEPT,
    RESCALE_SLOPE,
    ROWS,
    SAMPLES_PER_PIXEL,
    TRANSFER_SYNTAX,
    DicomFile,
    PlainReader,
    check_pixels,
    data_errors,
    finish_pixels,
    headers_from_dataset,
    present,
)
from stages.io import read_range, read_whole

NATIVE_SYNTAXES = {pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian}
# what pydicom's pixel_array requires of an uncompressed image; missing any, pydicom decides
REQUIRED = (ROWS, COLUMNS, SAMPLES_PER_PIXEL, BITS_ALLOCATED, BITS_STORED, PIXEL_REPRESENTATION, PHOTOMETRIC)
MEMO_LIMIT = 4096  # converted values remembered per reader; cleared when full


@contextlib.contextmanager
def _no_validation() -> Iterator[None]:
    settings = pydicom.config.settings
    mode = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode = mode


def _past_file_meta(tag: int, vr: str | None, length: int) -> bool:
    return tag >> 16 != 2


def parse_native(data: bytes) -> pydicom.Dataset | None:
    """The dataset (with ``file_meta``) of an uncompressed little-endian file, pixel data deferred.

    None for any other transfer syntax, a file with a command set, or anything the readers fail
    on: those go through the plain reader.
    """
    fp = io.BytesIO(data)
    try:
        filereader.read_preamble(fp, False)
        meta = filereader.read_dataset(fp, False, True, stop_when=_past_file_meta)
        syntax = meta[TRANSFER_SYNTAX].value if TRANSFER_SYNTAX in meta else None
        start = fp.tell()
        if syntax not in NATIVE_SYNTAXES or data[start : start + 2] == b"\0\0":  # not native, or a command set
            return None
        ds = filereader.read_dataset(fp, syntax == pydicom.uid.ImplicitVRLittleEndian, True, defer_size=DEFER_BYTES)
    except Exception:  # noqa: BLE001 - the plain reader copes, or reports the problem
        return None
    ds.file_meta = meta
    return ds


@functools.lru_cache(maxsize=1024)
def _parse_numbers(raw: bytes) -> tuple[float, ...] | None:
    return tuple(float(v) for v in raw.decode("ascii").split("\\") if v.strip()) or None


class FastReader:
    """Reads files like :class:`~stages.dicom.PlainReader`, faster (see the module docstring)."""

    def __init__(self) -> None:
        self.plain = PlainReader()
        self._memo: dict[tuple, object] = {}

    def value(self, ds: pydicom.Dataset, tag: int) -> object:
        """``ds[tag].value`` or None; short binary/ASCII raw values converted once and remembered."""
        elem = ds.get_item(tag, keep_deferred=True)
        if elem is None:
            return None
        if not isinstance(elem, RawDataElement) or elem.value is None or len(elem.value) > 64 or elem.VR == "SQ":
            return ds[tag].value
        key = (tag, elem.VR, elem.value, elem.is_implicit_VR, elem.is_little_endian)
        if key not in self._memo:
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = ds[tag].value
        return self._memo[key]

    def numbers(self, ds: pydicom.Dataset, tag: int) -> tuple[float, ...] | list[float] | None:
        """A DS/IS value as floats (raw values parsed directly), None when absent or empty."""
        elem = ds.get_item(tag, keep_deferred=True)
        if elem is None:
            return None
        if isinstance(elem.value, bytes) and elem.VR in ("DS", "IS"):
            return _parse_numbers(elem.value)
        value = ds[tag].value
        if value is None or value == "":
            return None
        return [float(v) for v in value] if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]

    def read(self, path: Path) -> DicomFile:
        """Parse one file; anything but an uncompressed little-endian file goes to the plain reader."""
        with data_errors(path, "unreadable file") as guard, _no_validation():
            ds = parse_native(read_whole(path))
            if ds is None:
                return self.plain.read(path)
            guard.what = "corrupt DICOM header"
            headers = headers_from_dataset(ds, path, value=self.value, numbers=self.numbers)
        return DicomFile(path, headers, ds, native=True)

    def pixels(self, file: DicomFile) -> np.ndarray:
        """Decoded frames as :meth:`PlainReader.pixels` gives them."""
        if not file.native:
            return self.plain.pixels(file)
        ds, path = file.dataset, file.path
        with data_errors(path, "cannot decode pixel data"), _no_validation():
            check_pixels(ds, path, value=self.value)
            arr = None if present(ds, MODALITY_LUT) else self._native_pixels(ds, path)
            if arr is None:
                return self.plain.pixels(self.plain.read(path))
            # RescaleSlope/Intercept in float32, without pydicom's float64 copy
            slope = (self.numbers(ds, RESCALE_SLOPE) or [1.0])[0]
            intercept = (self.numbers(ds, RESCALE_INTERCEPT) or [0.0])[0]
            arr = arr.astype(np.float32)
            if slope != 1.0:
                arr *= slope
            if intercept:
                arr += intercept
            return finish_pixels(arr, ds, path, value=self.value)

    def _native_pixels(self, ds: pydicom.Dataset, path: Path) -> np.ndarray | None:
        """8/16-bit greyscale pixels straight from the file (a read-only view), else None.

        Same values as ``pixel_array``: unused high bits masked, signed values sign-extended.
        """
        if not all(present(ds, tag) for tag in (*REQUIRED, PIXEL_DATA)):
            return None
        bits = int(self.value(ds, BITS_ALLOCATED))  # type: ignore[call-overload]
        stored = int(self.value(ds, BITS_STORED))  # type: ignore[call-overload]
        if bits not in (8, 16) or not 0 < stored <= bits:
            return None
        signed = self.value(ds, PIXEL_REPRESENTATION) == 1
        dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
        rows, cols = int(self.value(ds, ROWS)), int(self.value(ds, COLUMNS))  # type: ignore[call-overload]
        frames = int(self.value(ds, NUMBER_OF_FRAMES) or 1)  # type: ignore[call-overload]
        count = frames * rows * cols
        elem = ds.get_item(PIXEL_DATA, keep_deferred=True)
        if isinstance(elem, RawDataElement) and elem.value is None:  # deferred: one pread of exactly the values
            data = read_range(path, elem.value_tell, min(elem.length, count * dtype.itemsize))
        else:
            data = ds[PIXEL_DATA].value
        if len(data) < count * dtype.itemsize:
            return None  # let pydicom's decoder report the short buffer
        arr = np.frombuffer(data, dtype=dtype, count=count)
        if stored < bits:
            shift = bits - stored
            arr = (arr << shift) >> shift if signed else arr & ((1 << stored) - 1)
        return arr.reshape(frames, rows, cols)


def make_reader(kind: str) -> FastReader | PlainReader:
    """The reader chosen by ``preprocess.reader``."""
    return FastReader() if kind == "fast" else PlainReader()
