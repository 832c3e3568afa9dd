"""DICOM reading on real scanner files (both readers), multi-frame files and byte mutations."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from stages.dicom import PlainReader, decode_pixels, read_headers
from stages.dicom_fast import FastReader
from stages.errors import DataError, Problems
from stages.volume import ASSUMED_GEOMETRY, load_series
from tests.conftest import make_settings

READERS = {"plain": PlainReader, "fast": FastReader}

MR_SMALL = [
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_implicit.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm",
]
EMRI = [
    "emri_small.dcm",
    "emri_small_big_endian.dcm",
    "emri_small_RLE.dcm",
    "emri_small_jpeg_2k_lossless.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
]


def scanner_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, f"{name} missing: install requirements-dev.txt (pydicom-data)"
    return Path(path)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", MR_SMALL)
def test_mr_small_decodes_identically_in_every_transfer_syntax(name, reader):
    reference = decode_pixels(scanner_file("MR_small.dcm"))
    arr = decode_pixels(scanner_file(name), READERS[reader]())
    assert arr.shape == (1, 64, 64)
    np.testing.assert_array_equal(arr, reference)
    (header,) = read_headers(scanner_file(name), READERS[reader]())
    assert header.shape == (64, 64) and header.geometry_known
    assert header.spacing == pytest.approx((0.3125, 0.3125))


def test_deflated_file_decodes(tmp_path):
    ds = pydicom.dcmread(scanner_file("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    path = tmp_path / "deflated.dcm"
    ds.save_as(path, enforce_file_format=True)
    np.testing.assert_array_equal(decode_pixels(path), decode_pixels(scanner_file("MR_small.dcm")))


def test_philips_uncompressed_and_jpeg2000():
    reference = decode_pixels(scanner_file("MR2_UNCR.dcm"))
    np.testing.assert_array_equal(decode_pixels(scanner_file("MR2_J2KR.dcm")), reference)
    lossy = decode_pixels(scanner_file("MR2_J2KI.dcm"))
    assert lossy.shape == reference.shape
    assert np.corrcoef(lossy.ravel(), reference.ravel())[0, 1] > 0.99
    # RescaleSlope of these files is applied: values are not the stored integers
    stored = pydicom.dcmread(scanner_file("MR2_UNCR.dcm")).pixel_array
    assert not np.array_equal(reference[0], stored.astype(np.float32))


@pytest.mark.parametrize("name", EMRI)
def test_multiframe_files_count_as_series(name):
    headers = read_headers(scanner_file(name))
    assert len(headers) == 10 and [h.frame for h in headers] == list(range(10))
    arr = decode_pixels(scanner_file(name))
    np.testing.assert_array_equal(arr, decode_pixels(scanner_file("emri_small.dcm")))


def test_multiframe_file_loads_as_a_series(tmp_path):
    series = tmp_path / "T1wCE"
    series.mkdir()
    shutil.copy(scanner_file("emri_small.dcm"), series / "Image-1.dcm")
    problems = Problems()
    result = load_series(series, settings=make_settings(middle_fraction=1.0), reader=FastReader(), problems=problems)
    assert result is not None and len(result.images) > 0
    assert [p.reason for p in problems.items] == [ASSUMED_GEOMETRY], "the file has no position or orientation"


@pytest.mark.parametrize("name", ["JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "JPGExtended.dcm"])
def test_jpeg_greyscale_files_decode(name):
    ds = pydicom.dcmread(scanner_file(name))
    arr = decode_pixels(scanner_file(name))
    assert arr.shape == (1, ds.Rows, ds.Columns) and np.isfinite(arr).all() and arr.max() > arr.min()


def test_siemens_overlay_file_decodes():
    arr = decode_pixels(scanner_file("MR-SIEMENS-DICOM-WithOverlays.dcm"))
    assert arr.shape == (1, 484, 484) and arr.max() > 0


def test_truncated_file_is_a_data_error():
    with pytest.raises(DataError) as info:
        decode_pixels(scanner_file("MR_truncated.dcm"))
    assert "MR_truncated.dcm" in str(info.value) and "\n" not in str(info.value)


def test_monochrome1_is_inverted(tmp_path):
    ds = pydicom.dcmread(scanner_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm", enforce_file_format=True)
    np.testing.assert_array_equal(decode_pixels(tmp_path / "m1.dcm"), -decode_pixels(scanner_file("MR_small.dcm")))


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """Flip, delete, duplicate or truncate random bytes."""
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 6))):
        op, pos = rng.integers(4), int(rng.integers(len(buf)))
        if op == 0:
            buf[pos] = int(rng.integers(256))
        elif op == 1:
            del buf[pos : pos + int(rng.integers(1, 16))]
        elif op == 2:
            buf[pos:pos] = buf[pos : pos + int(rng.integers(1, 16))]
        else:
            del buf[pos:]
        if not buf:
            break
    return bytes(buf)


def fuzzed_files(folder: Path, seeds: list[Path], count: int) -> list[Path]:
    """``count`` seeded byte mutations of ``seeds``, written to ``folder``."""
    rng = np.random.default_rng(2021)
    paths = []
    for i in range(count):
        path = folder / f"fuzz{i}.dcm"
        path.write_bytes(mutate(seeds[i % len(seeds)].read_bytes(), rng))
        paths.append(path)
    return paths


@pytest.mark.parametrize("reader", READERS)
def test_fuzzed_files_fail_only_with_one_line_data_errors(tmp_path, tiny_cohort, reader):
    seeds = [scanner_file("MR_small.dcm"), scanner_file("MR_small_RLE.dcm"), next(tiny_cohort.rglob("Image-*.dcm"))]
    outcomes = {"ok": 0, "error": 0}
    for path in fuzzed_files(tmp_path, seeds, 600):
        try:
            read_headers(path, READERS[reader]())
            decode_pixels(path, READERS[reader]())
            outcomes["ok"] += 1
        except DataError as err:
            assert "\n" not in str(err) and str(path) in str(err)
            outcomes["error"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 100


@pytest.mark.parametrize("reader", READERS)
def test_file_gone_after_parsing_is_a_data_error(tmp_path, reader):
    path = tmp_path / "emri_small.dcm"
    shutil.copy(scanner_file("emri_small.dcm"), path)  # 80 KB of pixel data: deferred, read when decoded
    parsed = READERS[reader]().read(path)
    path.unlink()
    with pytest.raises(DataError, match="emri_small.dcm"):
        READERS[reader]().pixels(parsed)


def test_a_parsed_file_holds_no_pixel_data_until_decoded():
    path = Path(get_testdata_file("emri_small.dcm"))
    for reader in (PlainReader(), FastReader()):
        parsed = reader.read(path)
        assert parsed.dataset.get_item(0x7FE00010, keep_deferred=True).value is None
        assert reader.pixels(parsed).shape == (10, 64, 64)
