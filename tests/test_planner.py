"""The slice planner on its own: order, kept slices, target-plane mapping, positions, frames to decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.dicom import SliceHeader, unit_normal
from stages.errors import DataError
from stages.planner import axis_map, centred_slices, choose_slices, plan_series


def headers(row_dir, col_dir, *, n: int, shape=(4, 6), spacing=(1.0, 2.0), gap=3.0) -> list[SliceHeader]:
    normal = unit_normal(row_dir, col_dir)
    return [
        SliceHeader(
            path=Path(f"Image-{k}.dcm"),
            frame=None,
            position=tuple(float(v) for v in np.asarray(normal) * gap * k + np.array([10.0, 20.0, 30.0])),
            row_dir=row_dir,
            col_dir=col_dir,
            normal=normal,
            spacing=spacing,
            shape=shape,
            thickness=gap,
            geometry_known=True,
        )
        for k in range(n)
    ]


AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))  # rows +x... columns step along +x (L), rows along +y (P)
SAGITTAL = ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0))
CORONAL = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0))


def test_centred_slices_stay_inside_the_stack():
    assert centred_slices(30, centre=7, fraction=1 / 3, step=1).tolist() == list(range(2, 12))
    assert centred_slices(30, centre=1, fraction=1 / 3, step=1).tolist() == list(range(0, 10))
    assert centred_slices(30, centre=29, fraction=1 / 3, step=4).tolist() == list(range(20, 30, 4))
    assert centred_slices(5, centre=2, fraction=1.0, step=1).tolist() == [0, 1, 2, 3, 4]
    assert centred_slices(0, centre=0, fraction=0.5, step=1).tolist() == []
    assert centred_slices(27, centre=13, fraction=1 / 3, step=1).tolist() == list(range(9, 18)), "an odd count"
    assert centred_slices(1, centre=0, fraction=1.0, step=1).tolist() == [0]
    assert centred_slices(10, centre=4, fraction=0.05, step=1).tolist() == [4], "at least one slice"
    assert all(centred_slices(n, centre=0, fraction=0.5, step=1).dtype.kind == "i" for n in (0, 6)), "indices"


def test_choose_slices_takes_the_middle_every_kth():
    assert choose_slices(100, middle_fraction=0.5, step=3).tolist() == list(range(25, 75, 3))
    assert choose_slices(16, middle_fraction=0.5, step=3).tolist() == [4, 7, 10]
    assert choose_slices(1, middle_fraction=0.5, step=3).tolist() == [0]
    assert choose_slices(0, middle_fraction=0.5, step=3).tolist() == []
    assert choose_slices(10, middle_fraction=1.0, step=1).tolist() == list(range(10))


def test_an_axial_series_decodes_only_the_kept_slices():
    plan = plan_series(headers(*AXIAL, n=16), orientation="axial", middle_fraction=0.5, slice_step=3)
    assert not plan.reformats and plan.perm == (0, 1, 2) and plan.flips == (False, False, False)
    assert plan.keep == (4, 7, 10) and plan.decode == (4, 7, 10)
    assert plan.z == pytest.approx([30 + 3 * 4, 30 + 3 * 7, 30 + 3 * 10])
    assert plan.spacing == (1.0, 2.0)


def test_a_sagittal_series_is_reformatted_to_axial_from_every_frame():
    plan = plan_series(headers(*SAGITTAL, n=10, shape=(8, 12)), orientation="axial", middle_fraction=1.0, slice_step=1)
    assert plan.reformats and plan.decode == tuple(range(10))
    # target slices run along S (+z), which the sagittal rows run against (-z): flipped
    assert plan.perm[0] == 1 and plan.flips[0]
    assert len(plan.keep) == 8 and plan.z == pytest.approx(sorted(plan.z))
    assert plan.spacing == (2.0, 3.0)  # target rows along y (the source columns, 2 mm), columns along x (the 3 mm gap)


def test_a_native_plan_keeps_the_acquisition_and_its_normal_positions():
    plan = plan_series(headers(*CORONAL, n=6), orientation="native", middle_fraction=1.0, slice_step=2)
    assert plan.perm == (0, 1, 2) and plan.keep == (0, 2, 4) and plan.decode == (0, 2, 4)
    assert plan.flips == (False, False, False)  # coronal to axial flips its rows; native flips nothing
    assert axis_map(headers(*CORONAL, n=1)[0], "axial")[1] != (False, False, False)
    normal = unit_normal(*CORONAL)
    assert plan.z == pytest.approx([sum(p * n for p, n in zip(plan.headers[k].position, normal)) for k in (0, 2, 4)])


def test_a_reversed_normal_selects_slices_in_target_order():
    # rows along -x: the normal points to -z, so the stack runs from superior to inferior
    plan = plan_series(
        headers((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), n=10), orientation="axial", middle_fraction=1.0, slice_step=1
    )
    assert plan.flips[0] and plan.decode == tuple(range(9, -1, -1))
    assert list(plan.z) == sorted(plan.z)


def test_axis_maps_for_every_target():
    (h,) = headers(*AXIAL, n=1)
    assert axis_map(h, "axial") == ((0, 1, 2), (False, False, False))
    assert axis_map(h, "coronal")[0] == (1, 0, 2)
    assert axis_map(h, "sagittal")[0] == (2, 0, 1)


def test_an_oblique_series_cannot_be_planned():
    c = np.cos(np.pi / 4)
    oblique = headers((c, c, 0.0), (-c, c, 0.0), n=3)
    with pytest.raises(DataError) as error:
        plan_series(oblique, orientation="axial", middle_fraction=1.0, slice_step=1)
    assert (error.value.path, error.value.reason) == (
        "Image-0.dcm",
        "oblique orientation cannot be mapped to a standard plane",
    )
    assert plan_series(oblique, orientation="native", middle_fraction=1.0, slice_step=1).keep == (0, 1, 2)


def test_the_slice_gap_is_measured_from_positions_and_a_single_slice_falls_back_to_its_thickness():
    from dataclasses import replace

    two = [replace(h, thickness=1.5) for h in headers(*SAGITTAL, n=2, shape=(8, 12), gap=5.0)]
    plan = plan_series(two, orientation="axial", middle_fraction=1.0, slice_step=1)
    assert plan.spacing == (2.0, 5.0), "two slices 5 mm apart: the gap, not the 1.5 mm thickness"
    one = [replace(h, thickness=1.5) for h in headers(*SAGITTAL, n=1, shape=(8, 12), gap=5.0)]
    plan = plan_series(one, orientation="axial", middle_fraction=1.0, slice_step=1)
    assert plan.spacing == (2.0, 1.5)


def test_choose_slices_is_the_central_run_of_round_n_times_the_fraction_for_every_small_stack():
    for n in range(1, 41):
        for fraction in (0.2, 0.25, 0.5, 0.75, 1.0):
            count = max(1, round(n * fraction))
            start = (n - count) // 2  # as many left out before the run as after, one more after if odd
            for step in (1, 2, 3):
                expected = list(range(start, start + count, step))
                assert choose_slices(n, middle_fraction=fraction, step=step).tolist() == expected, (n, fraction, step)
