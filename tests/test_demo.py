"""The demo cohort generator: layout, DICOM content, determinism and the recorded Bayes AUC."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pydicom
import pytest

from stages.challenge import FAULTY_IDS, SERIES
from stages.demo import build_cohort
from stages.phantom import FOV_MM, matrix_sizes, population_bayes_auc
from tests.conftest import TINY, run_stage, tree_digest, write_config


def test_layout_matches_the_challenge(clean_cohort):
    labels = pd.read_csv(clean_cohort / "train_labels.csv", dtype=str)
    assert list(labels.columns) == ["BraTS21ID", "MGMT_value"]
    assert len(labels) == TINY["n_train"] and set(labels["MGMT_value"]) <= {"0", "1"}
    assert set(FAULTY_IDS) <= set(labels["BraTS21ID"])
    sample = pd.read_csv(clean_cohort / "sample_submission.csv", dtype=str)
    assert list(sample.columns) == ["BraTS21ID", "MGMT_value"] and len(sample) == TINY["n_test"]
    for split, ids in (("train", labels["BraTS21ID"]), ("test", sample["BraTS21ID"])):
        for pid in ids:
            assert re.fullmatch(r"\d{5}", pid)
            folder = clean_cohort / split / pid
            assert sorted(p.name for p in folder.iterdir()) == sorted(SERIES)
            names = [p.name for p in (folder / "T1wCE").iterdir()]
            assert len(names) == TINY["slices"] and all(re.fullmatch(r"Image-\d+\.dcm", n) for n in names)


def test_files_are_real_mr_dicom(clean_cohort):
    path = next((clean_cohort / "train").glob("*/FLAIR/Image-1.dcm"))
    ds = pydicom.dcmread(path)
    assert ds.Modality == "MR" and ds.BitsAllocated == 16 and ds.PhotometricInterpretation == "MONOCHROME2"
    for keyword in (
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "SliceThickness",
        "InstanceNumber",
        "RescaleSlope",
        "RescaleIntercept",
        "SeriesDescription",
    ):
        assert keyword in ds
    assert ds.SeriesDescription == "FLAIR"
    assert ds.pixel_array.shape == (TINY["image_size"], TINY["image_size"])


def test_quirks_are_written(tiny_cohort):
    files = sorted((tiny_cohort / "train").rglob("Image-*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True, force=True) for f in files]
    normals = {
        tuple(np.round(np.cross(h.ImageOrientationPatient[:3], h.ImageOrientationPatient[3:])))
        for h in headers
        if "ImageOrientationPatient" in h
    }
    assert len(normals) >= 2, "mixed acquisition planes"
    assert min(int(f.stem.split("-")[1]) for f in files) >= 1
    assert any(int(f.stem.split("-")[1]) > TINY["slices"] for f in files), "odd numbering"
    summary = json.loads((tiny_cohort / "demo_cohort.json").read_text())
    assert any("truncated" in f for f in summary["faults"]) and any("Thumbs.db" in f for f in summary["faults"])


def test_generator_is_deterministic(tmp_path, clean_cohort, tiny_cohort):
    again = tmp_path / "again"
    build_cohort(out_dir=again, quirks=False, **TINY)
    assert tree_digest(again) == tree_digest(clean_cohort)
    quirky = tmp_path / "quirky"  # compressed series, broken files and all
    build_cohort(out_dir=quirky, quirks=True, **TINY)
    assert tree_digest(quirky) == tree_digest(tiny_cohort)


def test_bayes_auc_is_recorded():
    assert population_bayes_auc(0.0) == pytest.approx(0.5)
    assert population_bayes_auc(1.2) == pytest.approx(0.8019, abs=1e-3)


def test_cohort_summary_reports_the_oracle(clean_cohort):
    summary = json.loads((clean_cohort / "demo_cohort.json").read_text())
    assert summary["bayes_auc_population"] == pytest.approx(population_bayes_auc(TINY["signal_strength"]), abs=1e-6)
    assert 0.0 <= summary["bayes_auc_train"] <= 1.0
    oracle = pd.read_csv(clean_cohort / "demo_oracle.csv", dtype={"BraTS21ID": str})
    labels = pd.read_csv(clean_cohort / "train_labels.csv", dtype={"BraTS21ID": str})
    merged = labels.merge(oracle[oracle["split"] == "train"], on="BraTS21ID", suffixes=("", "_o"))
    assert (merged["MGMT_value"] == merged["MGMT_value_o"]).all()


def test_small_cohorts_get_every_fault_even_when_a_patient_lacks_a_series(tmp_path):
    # with 9 training patients the third ordinary one has no T2w folder (seed 2021): the fault
    # "DICOM file without pixel data" goes to the next patient that has one
    root = tmp_path / "small"
    build_cohort(out_dir=root, quirks=True, **{**TINY, "n_train": 9, "n_test": 1, "seed": 2021})
    faults = json.loads((root / "demo_cohort.json").read_text())["faults"]
    assert any("no pixel data" in f for f in faults)


def test_the_stage_prints_its_summary_line_and_nothing_else(tmp_path):
    """No library or interpreter warning reaches the user, from the stage or its workers."""
    env = write_config(tmp_path / "run", demo={k: v for k, v in TINY.items() if k != "seed"})
    proc = run_stage("demo", env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = (proc.stdout + proc.stderr).splitlines()
    assert len(lines) == 1 and "Bayes-optimal AUC" in lines[0], lines


def test_series_sizes_vary_between_the_bounds_with_the_field_of_view_kept(tmp_path, tiny_cohort):
    assert matrix_sizes(256, 512) == (256, 320, 384, 448, 512) and matrix_sizes(48, 48) == (48,)
    root = tmp_path / "sizes"
    build_cohort(out_dir=root, quirks=True, **{**TINY, "min_image_size": 16})
    sizes = {}
    for series in sorted((root / "train").glob("*/*")):
        files = sorted(series.glob("Image-*.dcm"))
        if series.parent.name in FAULTY_IDS or not files:
            continue
        ds = pydicom.dcmread(files[-1], stop_before_pixels=True)
        sizes[series] = (ds.Rows, ds.Columns)
        assert float(ds.PixelSpacing[0]) * ds.Rows == pytest.approx(FOV_MM)  # a coarser matrix, same 220 mm
    assert set(sizes.values()) == {(16, 16), (32, 32)}
    # the patients themselves (labels, latent scores, faults) are those of the single-size cohort
    for name in ("train_labels.csv", "demo_oracle.csv"):
        assert (root / name).read_bytes() == (tiny_cohort / name).read_bytes()
