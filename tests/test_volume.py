"""A series folder to slices: orientation (left is left), reformatting, decoding only what is kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from stages.dicom import DicomFile, PlainReader
from stages.dicom_fast import FastReader
from stages.errors import Problems
from stages.volume import load_patient, load_series, pad_square, shrink
from tests.conftest import make_settings
from tests.test_dicom import scanner_file

READERS = {"plain": PlainReader, "fast": FastReader}


def write_volume(
    folder: Path, volume: np.ndarray, *, plane: str, first: int, step: int, spacing: tuple[float, float] = (1, 1)
) -> None:
    """Write ``volume[z, y, x]`` (LPS: x to the patient's left, y posterior, z superior; 1 mm apart
    unless an axial series' ``spacing`` says otherwise: (between rows, between columns) as in DICOM's
    PixelSpacing) as a series acquired in ``plane``, files in shuffled order with odd numbering."""
    folder.mkdir(parents=True)
    nz, ny, nx = volume.shape
    base = pydicom.dcmread(scanner_file("MR_small.dcm"))
    if plane == "axial":  # rows +y, columns +x, slices +z
        images = [volume[k] for k in range(nz)]
        iop, ipps = [1, 0, 0, 0, 1, 0], [[0, 0, float(k)] for k in range(nz)]
    else:  # sagittal: rows -z, columns +y, slices +x, written from left to right
        images = [volume[::-1, :, i] for i in range(nx)][::-1]
        iop, ipps = [0, 1, 0, 0, 0, -1], [[float(i), 0, float(nz - 1)] for i in range(nx)][::-1]
    rng = np.random.default_rng(0)
    for rank, k in enumerate(rng.permutation(len(images))):  # file order must not matter
        ds = base.copy()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Rows, ds.Columns = images[k].shape
        ds.PixelData = images[k].astype("<u2").tobytes()
        ds.ImageOrientationPatient, ds.ImagePositionPatient = iop, ipps[k]
        ds.PixelSpacing, ds.SliceThickness, ds.PixelRepresentation = list(spacing), 1, 0
        ds.save_as(folder / f"Image-{first + rank * step}.dcm", enforce_file_format=True)


class CountingReader(FastReader):
    """A reader that records which files it decodes."""

    def __init__(self) -> None:
        super().__init__()
        self.decoded: list[Path] = []

    def pixels(self, file: DicomFile) -> np.ndarray:
        self.decoded.append(file.path)
        return super().pixels(file)


def marked_head() -> np.ndarray:
    """A 12 x 20 x 16 (z, y, x) volume: a body, a bright marker on the patient's left (high x) and
    anterior (low y), and a dim one on the right (low x) and posterior (high y)."""
    volume = np.zeros((12, 20, 16), np.uint16)
    volume[1:11, 2:18, 2:14] = 300
    volume[3:9, 3:6, 10:13] = 1000  # left, anterior
    volume[3:9, 14:17, 3:6] = 600  # right, posterior
    return volume


@pytest.mark.parametrize("reader", READERS)
def test_axial_layout_is_radiological(tmp_path, reader):
    write_volume(tmp_path / "ax", marked_head(), plane="axial", first=387, step=2)
    settings = make_settings(middle_fraction=1.0, blank_min_fraction=0.0, img_size=20)
    series = load_series(tmp_path / "ax", settings=settings, reader=READERS[reader](), problems=Problems())
    image = series.images[len(series.images) // 2].astype(float)
    # rows run anterior to posterior, columns from the patient's right to their left
    top, bottom, left, right = image[:10].max(), image[10:].max(), image[:, :10].max(), image[:, 10:].max()
    assert top == 255 and bottom < 255, "anterior is at the top"
    assert right == 255 and left < 255, "the patient's left is on the image's right"
    assert np.all(np.diff(series.z) > 0), "slices run from inferior to superior"


@pytest.mark.parametrize("reader", READERS)
def test_sagittal_and_axial_series_give_the_same_volume(tmp_path, reader):
    rng = np.random.default_rng(1)
    volume = np.zeros((12, 20, 16), np.uint16)  # z, y, x: deliberately non-square and asymmetric
    volume[2:10, 3:17, 2:14] = rng.integers(200, 1000, size=(8, 14, 12))
    write_volume(tmp_path / "ax", volume, plane="axial", first=387, step=2)
    write_volume(tmp_path / "sag", volume, plane="sagittal", first=5, step=3)
    settings = make_settings(middle_fraction=1.0, blank_min_fraction=0.0, img_size=20)
    counting = CountingReader()
    ax = load_series(tmp_path / "ax", settings=settings, reader=READERS[reader](), problems=Problems())
    sag = load_series(tmp_path / "sag", settings=settings, reader=counting, problems=Problems())
    assert ax.images.shape == (12, 20, 20)
    np.testing.assert_array_equal(ax.images, sag.images)
    np.testing.assert_allclose(ax.z, sag.z)
    assert len(counting.decoded) == 16, "a reformatted plane needs every slice"


def test_only_the_kept_slices_are_decoded_when_planes_match(tmp_path):
    volume = np.zeros((30, 8, 8), np.uint16)
    volume[:, 2:6, 2:6] = 500
    write_volume(tmp_path / "ax", volume, plane="axial", first=1, step=1)
    reader = CountingReader()
    settings = make_settings(middle_fraction=0.5, slice_step=3)
    result = load_series(tmp_path / "ax", settings=settings, reader=reader, problems=Problems())
    assert len(reader.decoded) == 5 and len(result.images) == 5
    np.testing.assert_allclose(result.z, [7, 10, 13, 16, 19])


def test_shrink_and_pad_square_keep_the_aspect_without_stretching():
    def square(image, spacing, size):
        return pad_square(shrink(image, spacing=spacing, size=size), size=size, fill=0.0)

    out = square(np.ones((10, 20), np.float32), (1.0, 1.0), 20)
    assert out.shape == (20, 20)
    assert out[:5].sum() == 0 and out[15:].sum() == 0 and out[5:15].min() == 1  # padded top and bottom
    anisotropic = square(np.ones((10, 10), np.float32), (2.0, 1.0), 20)
    assert anisotropic[:, :5].sum() == 0 and anisotropic[:, 5:15].min() == 1  # 20 mm tall, 10 mm wide


def test_missing_and_empty_series_give_empty_arrays_and_problems(tmp_path, clean_cohort):
    patient = sorted((clean_cohort / "train").iterdir())[0]
    settings = make_settings(series=("T1wCE", "T2w"))
    problems = Problems(root=clean_cohort)
    folder = tmp_path / "p"
    (folder / "T2w").mkdir(parents=True)
    arrays = load_patient(folder, settings=settings, reader=FastReader(), problems=problems)
    assert {k: v.shape for k, v in arrays.items()} == {
        "T1wCE": (0, 16, 16),
        "T1wCE_z": (0,),
        "T2w": (0, 16, 16),
        "T2w_z": (0,),
    }
    assert [p.reason for p in problems.items] == ["series folder missing", "series folder empty"]
    arrays = load_patient(patient, settings=settings, reader=FastReader(), problems=problems)
    assert len(arrays["T1wCE"]) > 0 and arrays["T1wCE"].dtype == np.uint8 and arrays["T1wCE_z"].dtype == np.float32


@pytest.mark.parametrize("reader", READERS)
def test_non_square_pixels_keep_physical_proportions(tmp_path, reader):
    """10 rows 2 mm apart by 20 columns 1 mm apart: a 20 mm square field of view. A 10 mm square
    marker must stay square (not 5 x 10 pixels), and the field must fill the whole image."""
    volume = np.full((3, 10, 20), 200, np.uint16)
    volume[:, 2:7, 4:14] = 1000  # rows 2..6 (10 mm), columns 4..13 (10 mm)
    volume[:, :, 0] = 0  # the darkest column, so that padding (the series' minimum) would show as 0
    write_volume(tmp_path / "T1wCE", volume, plane="axial", first=1, step=1, spacing=(2.0, 1.0))
    settings = make_settings(img_size=20, middle_fraction=1.0, blank_min_fraction=0.0)
    series = load_series(tmp_path / "T1wCE", settings=settings, reader=READERS[reader](), problems=Problems())
    assert series is not None and series.images.shape == (3, 20, 20)
    image = series.images[1]
    bright = np.argwhere(image > image.max() / 2)
    height = bright[:, 0].max() - bright[:, 0].min() + 1
    width = bright[:, 1].max() - bright[:, 1].min() + 1
    assert height == width == 10
    assert image[[0, -1], 1:].min() > 0, "no padding above or below: the field is square in millimetres"


@pytest.mark.parametrize("reader", READERS)
def test_blank_slices_are_dropped_wherever_they_are_and_the_kept_ones_keep_their_positions(tmp_path, reader):
    """Slices 0, 1, 6 and 11 of 12 are blank; slice k carries a mark in column k."""
    volume = np.zeros((12, 16, 16), np.uint16)
    for k in range(12):
        volume[k, 2:14, 2:14] = 300
        volume[k, 6:10, k + 2] = 1000
    volume[[0, 1, 6, 11]] = 0
    write_volume(tmp_path / "T1wCE", volume, plane="axial", first=387, step=2)
    settings = make_settings(img_size=16, middle_fraction=1.0, slice_step=1)
    series = load_series(tmp_path / "T1wCE", settings=settings, reader=READERS[reader](), problems=Problems())
    kept = [2, 3, 4, 5, 7, 8, 9, 10]
    assert series is not None
    np.testing.assert_array_equal(series.z, kept)
    marks = [int(np.argmax(image[8])) - 2 for image in series.images]
    assert marks == kept, "each kept image is the slice at its position"


@pytest.mark.parametrize("reader", READERS)
def test_the_largest_area_window_follows_the_anatomy_and_the_middle_one_does_not(tmp_path, reader):
    """A 30-slice stack whose head is widest at slice 7 (a head placed low in the field): the
    largest-area window keeps 10 slices centred there, the middle window slices 10 to 19."""
    volume = np.zeros((30, 32, 32), np.uint16)
    for k in range(2, 20):
        radius = 14 - abs(k - 7)  # widest at slice 7, gone by slice 21
        if radius > 0:
            yy, xx = np.mgrid[:32, :32]
            volume[k][(yy - 16) ** 2 + (xx - 16) ** 2 < radius**2] = 400
    write_volume(tmp_path / "T1wCE", volume, plane="axial", first=1, step=1)
    base = {"img_size": 16, "middle_fraction": 1 / 3, "slice_step": 1, "blank_min_fraction": 0.0}

    def kept_positions(**changes: object) -> np.ndarray:
        settings = make_settings(**{**base, **changes})
        return load_series(tmp_path / "T1wCE", settings=settings, reader=READERS[reader](), problems=Problems()).z

    np.testing.assert_array_equal(kept_positions(window="largest_area"), np.arange(2, 12))
    np.testing.assert_array_equal(kept_positions(window="middle"), np.arange(10, 20))
    np.testing.assert_array_equal(kept_positions(window="largest_area", slice_step=3), [2, 5, 8, 11])
