"""DICOM ingestion on real scanner files, reoriented series, mutations and broken cohorts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from stages.dicom import DEFER_BYTES, DataError, dataset_from_bytes, decode_pixels, read_file, read_headers
from stages.volume import Problems, load_series

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


@pytest.mark.parametrize("name", MR_SMALL)
def test_mr_small_decodes_identically_in_every_transfer_syntax(name):
    reference = decode_pixels(scanner_file("MR_small.dcm"))
    arr = decode_pixels(scanner_file(name))
    assert arr.shape == (1, 64, 64)
    np.testing.assert_array_equal(arr, reference)
    (header,) = read_headers(scanner_file(name))
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


def test_multiframe_file_loads_as_a_series(tmp_path, settings):
    series = tmp_path / "T1wCE"
    series.mkdir()
    shutil.copy(scanner_file("emri_small.dcm"), series / "Image-1.dcm")
    result = load_series(series, problems=Problems(strict=True), **{**settings, "middle_fraction": 1.0})
    assert result is not None and result.files_decoded == 10 and len(result.images) > 0


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


def write_volume(folder: Path, volume: np.ndarray, *, plane: str, first: int, step: int) -> None:
    """Write ``volume[z, y, x]`` (1 mm voxels, LPS) as a series acquired in ``plane``."""
    folder.mkdir(parents=True)
    nz, ny, nx = volume.shape
    base = pydicom.dcmread(scanner_file("MR_small.dcm"))
    if plane == "axial":  # rows +y, columns +x, slices +z
        images = [volume[k] for k in range(nz)]
        iop, ipps = [1, 0, 0, 0, 1, 0], [[0, 0, float(k)] for k in range(nz)]
    else:  # sagittal: rows -z, columns +y, slices +x, written from right to left
        images = [volume[::-1, :, i] for i in range(nx)][::-1]
        iop, ipps = [0, 1, 0, 0, 0, -1], [[float(i), 0, float(nz - 1)] for i in range(nx)][::-1]
    rng = np.random.default_rng(0)
    for rank, k in enumerate(rng.permutation(len(images))):  # file order must not matter
        ds = base.copy()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Rows, ds.Columns = images[k].shape
        ds.PixelData = images[k].astype("<u2").tobytes()
        ds.ImageOrientationPatient, ds.ImagePositionPatient = iop, ipps[k]
        ds.PixelSpacing, ds.SliceThickness, ds.PixelRepresentation = [1, 1], 1, 0
        ds.save_as(folder / f"Image-{first + rank * step}.dcm", enforce_file_format=True)


def test_sagittal_and_axial_series_give_the_same_volume(tmp_path, settings):
    rng = np.random.default_rng(1)
    volume = np.zeros((12, 20, 16), np.uint16)  # z, y, x: deliberately non-square and asymmetric
    volume[2:10, 3:17, 2:14] = rng.integers(200, 1000, size=(8, 14, 12))
    write_volume(tmp_path / "ax", volume, plane="axial", first=387, step=2)
    write_volume(tmp_path / "sag", volume, plane="sagittal", first=5, step=3)
    kwargs = {**settings, "middle_fraction": 1.0, "blank_min_fraction": 0.0, "img_size": 20}
    ax = load_series(tmp_path / "ax", problems=Problems(strict=True), **kwargs)
    sag = load_series(tmp_path / "sag", problems=Problems(strict=True), **kwargs)
    assert ax.images.shape == (12, 20, 20)
    np.testing.assert_array_equal(ax.images, sag.images)
    np.testing.assert_allclose(ax.z, sag.z)
    assert ax.files_decoded == 12 and sag.files_decoded == 16


def test_only_chosen_slices_are_decoded_when_planes_match(tmp_path, settings):
    volume = np.zeros((30, 8, 8), np.uint16)
    volume[:, 2:6, 2:6] = 500
    write_volume(tmp_path / "ax", volume, plane="axial", first=1, step=1)
    result = load_series(
        tmp_path / "ax", problems=Problems(strict=True), **{**settings, "middle_fraction": 0.5, "slice_step": 3}
    )
    assert result.files_decoded == 5 and len(result.images) == 5
    np.testing.assert_allclose(result.z, [7, 10, 13, 16, 19])


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


def test_fuzzed_files_fail_only_with_data_errors(tmp_path, tiny_cohort):
    seeds = [scanner_file("MR_small.dcm"), scanner_file("MR_small_RLE.dcm"), next(tiny_cohort.rglob("Image-*.dcm"))]
    rng = np.random.default_rng(2021)
    outcomes = {"ok": 0, "error": 0}
    for i in range(600):
        path = tmp_path / f"fuzz{i % 10}.dcm"
        path.write_bytes(mutate(seeds[i % len(seeds)].read_bytes(), rng))
        try:
            read_headers(path)
            decode_pixels(path)
            outcomes["ok"] += 1
        except DataError as err:
            assert "\n" not in str(err) and str(path) in str(err)
            outcomes["error"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 100


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR_small_RLE.dcm", "emri_small.dcm"])
def test_parsed_file_keeps_no_bytes_and_reads_its_pixels_when_decoded(tmp_path, name):
    path = tmp_path / name
    shutil.copy(scanner_file(name), path)
    reads = []
    headers, ds = read_file(path, read=lambda p: reads.append(p) or p.read_bytes())
    assert reads == [path] and ds.buffer is None and ds.filename == str(path) and headers
    np.testing.assert_array_equal(decode_pixels(path, ds), decode_pixels(scanner_file(name)))


def test_deferred_pixel_data_are_read_from_the_file():
    # emri_small's 80 KB of pixel data exceed DEFER_BYTES (MR_small's 8 KB are read inline)
    path = Path(get_testdata_file("emri_small.dcm"))
    _, ds = read_file(path)
    assert ds.get_item(0x7FE00010, keep_deferred=True).value is None
    assert decode_pixels(path, ds).shape == (10, 64, 64)


def test_file_gone_after_parsing_is_a_data_error(tmp_path):
    path = tmp_path / "emri_small.dcm"
    shutil.copy(scanner_file("emri_small.dcm"), path)
    _, ds = read_file(path)
    path.unlink()
    with pytest.raises(DataError, match="emri_small.dcm"):
        decode_pixels(path, ds)


@pytest.mark.parametrize(
    ("name", "fast"),
    [
        ("MR_small.dcm", True),
        ("MR_small_implicit.dcm", True),
        ("emri_small.dcm", True),
        ("MR-SIEMENS-DICOM-WithOverlays.dcm", True),
        ("rtdose.dcm", True),
        ("MR_small_bigendian.dcm", False),
        ("MR_small_RLE.dcm", False),
        ("meta_missing_tsyntax.dcm", False),
        ("MR_truncated.dcm", True),
    ],
)
def test_parsing_from_bytes_equals_dcmread(name, fast):
    data = scanner_file(name).read_bytes()
    ds = dataset_from_bytes(data)
    reference = pydicom.dcmread(scanner_file(name), defer_size=DEFER_BYTES)
    assert (not isinstance(ds, pydicom.FileDataset)) == fast  # the direct readers, not dcmread
    assert sorted(ds.keys()) == sorted(reference.keys())
    assert ds.file_meta.get("TransferSyntaxUID") == reference.file_meta.get("TransferSyntaxUID")
    for tag in sorted(ds.keys()):
        if ds.get_item(tag, keep_deferred=True).value is not None:  # deferred pixel data differ in form only
            assert ds[tag].value == reference[tag].value, tag
