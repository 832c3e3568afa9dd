"""The fast reader gives exactly what the plain pydicom reader gives, on every file we can find."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from stages.dicom import PlainReader
from stages.dicom_fast import FastReader, parse_native
from stages.errors import DataError
from tests.test_dicom import fuzzed_files, scanner_file


def pydicom_test_files() -> list[Path]:
    """Every DICOM file shipped with pydicom and pydicom-data (a few hundred, of every kind)."""
    roots = {Path(pydicom.data.get_testdata_file("MR_small.dcm")).parent, Path(pydicom.data.__file__).parent}
    try:
        import pydicom_data  # noqa: F401 - the scanner files of requirements-dev.txt

        roots.add(Path(get_testdata_file("MR2_UNCR.dcm")).parent)
    except ImportError:  # pragma: no cover
        pass
    return sorted({p for root in roots for p in root.rglob("*.dcm")})


def outcome(reader: PlainReader | FastReader, path: Path) -> tuple:
    """``("error", )`` or the headers and pixels a reader gets from ``path``."""
    try:
        parsed = reader.read(path)
    except DataError:
        return ("error",)
    try:
        return ("ok", parsed.headers, reader.pixels(parsed))
    except DataError:
        return ("headers only", parsed.headers)


def assert_same(path: Path) -> str:
    plain, fast = outcome(PlainReader(), path), outcome(FastReader(), path)
    assert plain[0] == fast[0], (path, plain[0], fast[0])
    if plain[0] != "error":
        assert plain[1] == fast[1], path
    if plain[0] == "ok":
        # float32 rescaling in one step vs pydicom's float64: equal up to float32 rounding
        np.testing.assert_allclose(fast[2], plain[2], rtol=1e-6, atol=0, err_msg=str(path))
    return plain[0]


def test_the_fast_path_is_taken_for_uncompressed_little_endian_files_only():
    for name, native in [
        ("MR_small.dcm", True),
        ("MR_small_implicit.dcm", True),
        ("emri_small.dcm", True),
        ("MR_small_bigendian.dcm", False),
        ("MR_small_RLE.dcm", False),
        ("MR_small_jp2klossless.dcm", False),
    ]:
        assert (parse_native(scanner_file(name).read_bytes()) is not None) == native, name
        assert FastReader().read(scanner_file(name)).native == native, name


def test_same_results_on_every_pydicom_test_file():
    files = pydicom_test_files()
    assert len(files) > 100
    kinds = [assert_same(p) for p in files]
    assert kinds.count("ok") > 30 and kinds.count("headers only") > 10 and kinds.count("error") > 10


def test_same_results_on_the_demo_cohort(tiny_cohort):
    files = sorted(tiny_cohort.rglob("*"))
    kinds = [assert_same(p) for p in files if p.is_file() and p.suffix in (".dcm", ".db", ".txt")]
    assert kinds.count("ok") > 400 and kinds.count("error") >= 3  # Thumbs.db, notes.txt, the corrupt file


def test_same_results_on_fuzzed_files(tmp_path, tiny_cohort):
    seeds = [scanner_file("MR_small.dcm"), scanner_file("emri_small.dcm"), next(tiny_cohort.rglob("Image-*.dcm"))]
    kinds = [assert_same(p) for p in fuzzed_files(tmp_path, seeds, 300)]
    assert kinds.count("ok") > 10 and kinds.count("error") > 50


@pytest.mark.parametrize(
    "name", ["MR_small.dcm", "MR2_UNCR.dcm", "emri_small.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm"]
)
def test_headers_equal_on_scanner_files(name):
    assert FastReader().read(scanner_file(name)).headers == PlainReader().read(scanner_file(name)).headers
