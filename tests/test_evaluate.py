"""The evaluate stage's metrics on known predictions: Bayes AUC on exactly the scored patients."""

from __future__ import annotations

import pandas as pd
import pytest

from stages.errors import DataError
from stages.evaluate import bayes_auc, evaluate, slice_auc, threshold


def test_bayes_auc_is_computed_on_exactly_the_evaluated_patients():
    patients = pd.DataFrame({"repeat": 0, "BraTS21ID": ["00001", "00002", "00003"], "MGMT_value": [1, 0, 1]})
    oracle = {"00001": 3.0, "00002": 0.0, "00003": 2.0, "00009": -5.0}
    assert bayes_auc(patients, oracle) == 1.0
    assert bayes_auc(patients, {**oracle, "00003": -1.0}) == 0.5
    assert bayes_auc(patients, {}) is None
    with pytest.raises(DataError, match=r"^demo_oracle\.csv: no latent score for patient 00002"):
        bayes_auc(patients, {"00001": 3.0, "00003": 2.0})


def test_slice_auc_only_for_models_with_several_samples_per_patient():
    one = pd.DataFrame({"repeat": 0, "BraTS21ID": ["1", "2"], "MGMT_value": [1, 0], "prob": [0.9, 0.1]})
    assert slice_auc(one) is None
    many = pd.concat([one, one.assign(prob=[0.2, 0.8])])
    assert slice_auc(many) == pytest.approx(0.75)  # 0.2 of a positive slice is below 0.8 of a negative one


def test_threshold_calls_the_prevalence_positive():
    assert threshold("calibrated", 0.4) == 0.4 and threshold("rank", 0.4) == pytest.approx(0.6)


def test_evaluate_reports_every_metric():
    patients = pd.DataFrame(
        {
            "repeat": 0,
            "fold": [0, 0, 1, 1],
            "BraTS21ID": ["1", "2", "3", "4"],
            "MGMT_value": [1, 0, 1, 0],
            "raw": [0.9, 0.85, 0.8, 0.1],
            "rank": [1.0, 0.0, 0.5, 0.25],
            "calibrated": [0.6, 0.4, 0.6, 0.55],
        }
    )
    slices = patients.rename(columns={"raw": "prob"})[["repeat", "BraTS21ID", "MGMT_value", "prob"]]
    m = evaluate(
        patients=patients, slices=slices, oracle={"1": 1.0, "2": 0.0, "3": 1.0, "4": 0.0}, pooling="rank", seed=0
    )
    assert m["patient_auc"] == m["patient_auc_rank"] == 1.0 and m["patient_auc_raw"] == 0.75
    assert m["folds"] == {"repeat0_fold0": 1.0, "repeat0_fold1": 1.0} and m["bayes_auc"] == 1.0
    assert "slice_auc" not in m
