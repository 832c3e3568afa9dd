"""Brain anatomy of the demo cohort: the template's tissues, MR contrasts, a lesion, and where it lands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.anatomy import atlas, tissue_probabilities
from stages.challenge import SERIES
from stages.dicom_fast import FastReader
from stages.errors import Problems
from stages.phantom import BRAIN_INTENSITY, brain_signal, make_patient, write_patient
from stages.volume import load_patient
from tests.conftest import make_settings


def test_the_template_is_a_brain_centred_at_the_origin():
    a = atlas()
    volume_ml = a.maps.sum() * 2.0**3 / 1000
    assert 1200 < volume_ml < 2000, "an adult brain with its CSF"
    gm, wm, csf = tissue_probabilities(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 250.0], [-28.0, 10.0, 20.0]])).T
    assert gm[1] == wm[1] == csf[1] == 0.0, "nothing outside the head"
    assert wm[2] > 0.5, "deep white matter of the right hemisphere"
    assert len(a.white_matter) > 1000 and np.all(np.abs(a.white_matter) < 90)


@pytest.mark.parametrize(
    ("series", "order"),
    [
        ("T1w", ("wm", "gm", "csf")),
        ("T1wCE", ("wm", "gm", "csf")),
        ("T2w", ("csf", "gm", "wm")),
        ("FLAIR", ("gm", "wm", "csf")),
    ],
)
def test_each_sequence_has_its_tissue_contrast(series, order):
    """Rendered voxels of mostly one tissue rank as in real MR (T1: WM > GM > CSF; T2: CSF > GM > WM;
    FLAIR: CSF suppressed), measured on the image, not read from the table."""
    spec = make_patient(pid="00042", seed=1, strength=0.0, prevalence=0.5, quirks=False, anatomy="brain")
    spec.tumour_radius = 1e-6  # no lesion
    rng = np.random.default_rng(0)
    points = rng.uniform(-80, 80, size=(40_000, 3))
    template = ((points - spec.shift) @ spec.rotation) / spec.brain_scale
    probs = tissue_probabilities(template)
    img = brain_signal(spec, series, points)
    mean = {c: img[probs[:, i] > 0.9].mean() for i, c in enumerate(("gm", "wm", "csf"))}
    assert mean[order[0]] > mean[order[1]] > mean[order[2]]
    assert set(BRAIN_INTENSITY[series]) >= {"gm", "wm", "csf", "oedema", "rim", "core"}


def test_the_lesion_shows_in_every_sequence_and_the_label_score_changes_it():
    """Oedema bright on T2w and FLAIR, an enhancing rim on T1wCE; a higher latent score enlarges
    the necrotic core and brightens the rim (the label acts through what a radiologist sees)."""
    low = make_patient(pid="00042", seed=1, strength=0.0, prevalence=0.5, quirks=False, anatomy="brain")
    high = make_patient(pid="00042", seed=1, strength=0.0, prevalence=0.5, quirks=False, anatomy="brain")
    low.score, high.score = -2.0, 2.0
    for spec in (low, high):
        spec.core_ratio = float(0.45 + 0.3 * np.tanh(spec.score / 2.0))
        spec.rim_boost = float(1.0 + 0.25 * np.tanh(spec.score / 2.0))
    centre, r, axis = low.tumour_centre, low.tumour_radius, low.rotation @ np.array([low.tumour_axes[0], 0, 0])
    assert high.core_ratio > low.core_ratio and high.rim_boost > low.rim_boost
    oedema, rim = centre + 1.2 * r * axis, centre + 0.9 * r * axis  # lesion_distance 1.2 and 0.9
    healthy = oedema * np.array([-1.0, 1.0, 1.0])  # the same place in the other hemisphere
    for series in ("T2w", "FLAIR"):
        assert brain_signal(low, series, oedema[None])[0] > brain_signal(low, series, healthy[None])[0] + 200
    assert brain_signal(high, "T1wCE", rim[None])[0] > brain_signal(low, "T1wCE", rim[None])[0] > 700


def preprocessed_with_lesion_at(folder: Path, *, x_mm: float, plane: str, tilt: tuple[float, float, float]) -> dict:
    """One brain patient, symmetric but for a lesion at ``x_mm`` (LPS: +x is the patient's left)."""
    spec = make_patient(pid="00042", seed=1, strength=0.0, prevalence=0.5, quirks=False, anatomy="brain")
    spec.rotation, spec.shift, spec.bias = np.eye(3), np.zeros(3), np.zeros(3)
    spec.tumour_centre, spec.tumour_radius = np.array([x_mm, 0.0, 15.0]), 14.0
    for s in spec.series.values():
        s.plane, s.scale, s.tilt_deg = plane, 1.0, tilt
    write_patient(folder=folder / "00042", spec=spec, n_slices=40, size=64, seed=0)
    settings = make_settings(img_size=32, middle_fraction=1.0, blank_min_fraction=0.0)
    problems = Problems()
    arrays = load_patient(folder / "00042", settings=settings, reader=FastReader(), problems=problems)
    assert problems.items == []
    return arrays


@pytest.mark.parametrize(
    ("plane", "tilt"),
    [
        ("axial", (0, 0, 0)),
        ("coronal", (0, 0, 0)),
        ("sagittal", (0, 0, 0)),
        ("axial", (15, -10, 12)),
        ("coronal", (10, -15, 5)),
        ("sagittal", (-12, 18, 8)),
    ],
)
def test_a_lesion_in_the_left_hemisphere_is_on_the_images_right_after_preprocessing(tmp_path, plane, tilt):
    """Checked on the preprocessed images against where the lesion was put in the body, without
    trusting the writer's geometry: the same patient with the lesion mirrored to the right
    hemisphere cancels everything but the lesion (an oblique plane included), and radiological
    display puts the patient's left on the image's right. The lesion is bright on T2w and FLAIR
    (oedema) and dark on T1w and T1wCE (oedema, necrotic core)."""
    left = preprocessed_with_lesion_at(tmp_path / "left", x_mm=35.0, plane=plane, tilt=tilt)
    right = preprocessed_with_lesion_at(tmp_path / "right", x_mm=-35.0, plane=plane, tilt=tilt)

    def image_right_over_left(images: np.ndarray) -> float:
        half = images.shape[2] // 2
        return float(images[:, :, half:].astype(float).sum() / images[:, :, :half].astype(float).sum())

    shift = {s: image_right_over_left(left[s]) / image_right_over_left(right[s]) for s in SERIES}
    assert shift["T2w"] > 1.03 and shift["FLAIR"] > 1.03, shift
    assert shift["T1w"] < 0.99 and shift["T1wCE"] < 0.99, shift


def test_a_few_brain_series_are_oblique_and_still_preprocessed():
    draw = {"seed": 3, "strength": 1.0, "prevalence": 0.5, "quirks": True}
    specs = [make_patient(pid=f"{i:05d}", anatomy="brain", **draw) for i in range(60)]
    tilts = [s.tilt_deg for spec in specs for s in spec.series.values()]
    oblique = [t for t in tilts if any(t)]
    assert 0.04 < len(oblique) / len(tilts) < 0.2
    assert max(abs(a) for t in oblique for a in t) > 10, "tilted enough to matter"
    phantoms = [make_patient(pid=spec.pid, **draw) for spec in specs]
    assert not any(any(s.tilt_deg) for spec in phantoms for s in spec.series.values()), "the phantom stays square"
