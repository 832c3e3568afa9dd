"""Slice positions checked against SimpleITK's geometry and first principles, not against the planner.

An oblique series mapped to another plane is labelled by each slice's centre (its corner lies tens
of mm away), and a multi-frame file without per-frame positions starts at its ImagePositionPatient
with the assumption recorded as a problem.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import ExplicitVRLittleEndian

from stages.errors import Problems
from stages.phantom import rotation
from stages.planner import ORIENTATIONS
from stages.volume import ASSUMED_GEOMETRY, load_series
from tests.conftest import make_settings
from tests.test_dicom import scanner_file
from tests.test_volume import READERS

ALL_SLICES = {"middle_fraction": 1.0, "slice_step": 1, "blank_min_fraction": 0.0, "img_size": 16}


def tilted_axial(x_degrees: float, z_degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Row and column directions of an axial plane turned about the LPS x axis, then the z axis."""
    turn = rotation(np.array([x_degrees, 0.0, z_degrees]))
    return turn[:, 0], turn[:, 1]


def write_oblique_series(
    folder: Path, *, degrees: tuple[float, float], frames: int = 12, shape: tuple[int, int] = (24, 20)
) -> None:
    """A series tilted by ``degrees`` (about x, then z), with non-square pixels (1.5 x 1 mm) and
    2 mm slices, in shuffled file order."""
    folder.mkdir(parents=True)
    row_dir, col_dir = tilted_axial(*degrees)
    normal = np.cross(row_dir, col_dir)
    origin, gap, spacing = np.array([-10.0, 5.0, 30.0]), 2.0, (1.5, 1.0)
    base = pydicom.dcmread(scanner_file("MR_small.dcm"))
    rng = np.random.default_rng(3)
    for rank, k in enumerate(rng.permutation(frames)):
        ds = base.copy()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Rows, ds.Columns = shape
        ds.PixelData = rng.integers(200, 1000, size=shape).astype("<u2").tobytes()
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [float(v) for v in origin + normal * gap * k]
        ds.PixelSpacing, ds.SliceThickness, ds.PixelRepresentation = list(spacing), gap, 0
        ds.save_as(folder / f"Image-{100 + 3 * rank}.dcm", enforce_file_format=True)


def simpleitk_slice_centres(folder: Path, *, lps_axis: int) -> np.ndarray:
    """The coordinate along ``lps_axis`` of the centre of each slice across the image axis closest to it."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    direction = np.array(image.GetDirection()).reshape(3, 3)  # columns: the index axes in LPS
    axis = int(np.argmax(np.abs(direction[lps_axis])))
    size = image.GetSize()
    centres = []
    for i in range(size[axis]):
        index = [(n - 1) / 2 for n in size]
        index[axis] = float(i)
        centres.append(image.TransformContinuousIndexToPhysicalPoint(index)[lps_axis])
    return np.sort(centres)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("orientation", ["axial", "coronal", "sagittal"])
def test_an_oblique_series_is_labelled_where_simpleitk_puts_each_slices_centre(tmp_path, orientation, reader):
    write_oblique_series(tmp_path / "T1wCE", degrees=(25.0, 15.0))
    problems = Problems()
    settings = make_settings(orientation=orientation, **ALL_SLICES)
    series = load_series(tmp_path / "T1wCE", settings=settings, reader=READERS[reader](), problems=problems)
    lps_axis, sign = ORIENTATIONS[orientation][0]
    expected = simpleitk_slice_centres(tmp_path / "T1wCE", lps_axis=lps_axis) * sign
    assert problems.items == []
    np.testing.assert_allclose(np.sort(series.z), expected, atol=1e-3)
    assert np.all(np.diff(series.z) > 0), "slices run along the target axis"


def write_multiframe_without_frame_positions(path: Path, *, origin: tuple[float, float, float]) -> float:
    """A 10-frame axial file with one ImagePositionPatient for the file; returns its slice spacing."""
    ds = pydicom.dcmread(scanner_file("emri_small.dcm"))
    assert "PerFrameFunctionalGroupsSequence" not in ds
    ds.ImagePositionPatient = list(origin)
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.save_as(path, enforce_file_format=True)
    return float(ds.SpacingBetweenSlices)


@pytest.mark.parametrize("reader", READERS)
def test_a_multiframe_file_without_frame_positions_starts_at_its_position_and_says_so(tmp_path, reader):
    folder = tmp_path / "T1wCE"
    folder.mkdir()
    gap = write_multiframe_without_frame_positions(folder / "Image-1.dcm", origin=(-20.0, 10.0, 40.0))
    problems = Problems()
    series = load_series(folder, settings=make_settings(**ALL_SLICES), reader=READERS[reader](), problems=problems)
    np.testing.assert_allclose(series.z, 40.0 + gap * np.arange(10), atol=1e-4)
    assert [p.reason for p in problems.items] == [ASSUMED_GEOMETRY]


@pytest.mark.parametrize("reader", READERS)
def test_a_series_with_positions_in_every_file_records_no_assumption(tmp_path, reader):
    write_oblique_series(tmp_path / "T1wCE", degrees=(0.0, 0.0), frames=4)
    problems = Problems()
    load_series(tmp_path / "T1wCE", settings=make_settings(**ALL_SLICES), reader=READERS[reader](), problems=problems)
    assert problems.items == []
