"""Brain anatomy of the demo cohort: the template's tissues, MR contrasts, a lesion, and where it lands."""

from __future__ import annotations

import numpy as np
import pytest

from stages.anatomy import atlas, tissue_probabilities
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


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_a_lesion_in_the_left_hemisphere_is_on_the_images_right_after_preprocessing(tmp_path, plane):
    """Checked on the preprocessed images against where the lesion was put in the body, without
    trusting the writer's geometry: the template is symmetric, so only the lesion makes the halves
    differ, and radiological display puts the patient's left on the image's right."""
    spec = make_patient(pid="00042", seed=1, strength=0.0, prevalence=0.5, quirks=False, anatomy="brain")
    spec.rotation, spec.shift, spec.bias = np.eye(3), np.zeros(3), np.zeros(3)  # symmetric but for the lesion
    spec.tumour_centre, spec.tumour_radius = np.array([35.0, 0.0, 15.0]), 14.0  # LPS: +x is the left
    for s in spec.series.values():
        s.plane, s.scale = plane, 1.0
    write_patient(folder=tmp_path / "00042", spec=spec, n_slices=40, size=64, seed=0)
    settings = make_settings(img_size=32, middle_fraction=1.0, blank_min_fraction=0.0)
    arrays = load_patient(tmp_path / "00042", settings=settings, reader=FastReader(), problems=Problems())
    for series in ("T2w", "FLAIR"):  # oedema and core: brighter than the brain around them
        images = arrays[series].astype(float)
        left_of_image, right_of_image = images[:, :, :16].sum(), images[:, :, 16:].sum()
        assert right_of_image > 1.02 * left_of_image, (series, right_of_image / left_of_image)
    brightest = arrays["T1wCE"] == arrays["T1wCE"].max()  # the scalp on both sides, the enhancing rim
    assert brightest[:, :, 16:].sum() > 1.2 * brightest[:, :, :16].sum()
