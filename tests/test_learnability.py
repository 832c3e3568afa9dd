"""Learnability controls on the demo cohort, with the default configuration of params.yaml, on
both anatomies (the phantom and the MNI152 brain):

* the intensity-quantile probe on the cache stays above a floor (a contrast-erasing preprocessing,
  like the seed's percentile clip, falls to chance: shown too, so the control can fail);
* with a strong signal (Bayes-optimal AUC 0.998) the default model reaches a high AUC;
* with the labels permuted it stays near 0.5.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages.demo import build_cohort
from stages.params import load_params
from stages.probe import cache_features, probe_auc
from tests.conftest import ROOT, run_stage, write_config

pytestmark = pytest.mark.slow  # trains models to a threshold (about 3 minutes)

DEFAULT_DEMO = load_params(ROOT / "params.yaml").demo.model_dump()  # the default cohort, quirks and all
STRONG = {**DEFAULT_DEMO, "n_train": 90, "n_test": 0, "seed": 5, "signal_strength": 4.0, "quirks": False}


def pipeline(folder: Path, raw: Path, *, stages: tuple[str, ...], **sections: dict) -> dict:
    env = write_config(folder, raw_dir=raw, **sections)
    for name in stages:
        proc = run_stage(name, env)
        assert proc.returncode == 0, proc.stderr
    return env


def probe(folder: Path) -> float:
    table = pd.read_csv(folder / "data/patients.csv", dtype=str, keep_default_na=False)
    train = table[(table["split"] == "train") & (table["T1wCE"].astype(int) > 0)]
    features = cache_features(folder / "data/cache", list(train["BraTS21ID"]), series="T1wCE")
    return probe_auc(features, train["MGMT_value"].astype(int).to_numpy(), seed=42)


ANATOMIES = pytest.mark.parametrize("anatomy", ["phantom", "brain"], indirect=True)


@pytest.fixture(scope="module")
def anatomy(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def default_cohort(tmp_path_factory, anatomy) -> Path:
    raw = tmp_path_factory.mktemp(f"learn-{anatomy}") / "raw"
    build_cohort(out_dir=raw, **{**DEFAULT_DEMO, "anatomy": anatomy})
    return raw


@ANATOMIES
def test_the_default_cache_keeps_the_label_cue_the_seeds_clip_erases(default_cohort, tmp_path):
    pipeline(tmp_path / "default", default_cohort, stages=("inventory", "preprocess"))
    pipeline(
        tmp_path / "seed",
        default_cohort,
        stages=("inventory", "preprocess"),
        preprocess={"normalisation": "percentile", "clip_percentiles": [0.5, 99.5], "img_size": 32, "slice_step": 3},
    )
    bayes = json.loads((default_cohort / "demo_cohort.json").read_text())["bayes_auc_train"]
    default, seed = probe(tmp_path / "default"), probe(tmp_path / "seed")
    assert default > 0.70 and default > bayes - 0.08, (default, bayes)
    assert seed < 0.60, seed


@pytest.fixture(scope="module")
def strong_cohort(tmp_path_factory, anatomy) -> Path:
    raw = tmp_path_factory.mktemp(f"strong-{anatomy}") / "raw"
    build_cohort(out_dir=raw, **{**STRONG, "anatomy": anatomy})
    return raw


def model_auc(folder: Path, raw: Path) -> float:
    pipeline(folder, raw, stages=("inventory", "preprocess", "train", "evaluate"), cv={"folds": 3})
    return json.loads((folder / "eval/metrics.json").read_text())["patient_auc"]


# The brain's lesion is a handful of 4.6 mm pixels on 12 mm slices at the default size, so
# even a strong label cue is partly averaged away: on this cohort (latent score AUC 0.999) the
# cache's intensity probe reaches 0.85 on brain anatomy against 0.99 on the phantom's larger
# tumour, and the model 0.76 against above 0.9.
LEARNED = {"phantom": 0.9, "brain": 0.7}


@ANATOMIES
def test_a_strong_signal_is_learned(strong_cohort, anatomy, tmp_path):
    auc = model_auc(tmp_path, strong_cohort)
    assert auc >= LEARNED[anatomy], auc


@ANATOMIES
def test_permuted_labels_stay_near_chance(strong_cohort, tmp_path):
    raw = tmp_path / "raw"
    import shutil

    shutil.copytree(strong_cohort, raw)
    labels = pd.read_csv(raw / "train_labels.csv", dtype=str)
    labels["MGMT_value"] = np.random.default_rng(0).permutation(labels["MGMT_value"].to_numpy())
    labels.to_csv(raw / "train_labels.csv", index=False)
    auc = model_auc(tmp_path / "run", raw)
    assert abs(auc - 0.5) <= 0.1, auc
