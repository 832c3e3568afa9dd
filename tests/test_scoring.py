"""Patient scores and summary metrics: aggregation, rank and calibrated pooling, intervals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stages.scoring import EPS, Calibration, auc, bootstrap_auc, fit_calibration, logit, summary_metrics


def test_rank_is_the_percentile_among_the_validation_patients():
    cal = Calibration(val_scores=(0.1, 0.2, 0.3, 0.4), slope=1.0, intercept=0.0)
    np.testing.assert_allclose(cal.rank(np.array([0.05, 0.2, 0.25, 0.9])), [0.0, 0.375, 0.5, 1.0])


def test_calibration_is_monotone_and_never_inverts_a_model():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    good = np.clip(0.3 + 0.2 * y + rng.normal(0, 0.1, 40), 0.01, 0.99)
    cal = fit_calibration(good, y)
    assert cal.slope > 0
    out = cal.calibrated(np.array([0.2, 0.4, 0.6]))
    assert np.all(np.diff(out) > 0)
    backwards = fit_calibration(1 - good, y)
    assert backwards.slope == 0.0
    np.testing.assert_allclose(backwards.calibrated(np.array([0.1, 0.9])), y.mean(), rtol=1e-6)
    assert fit_calibration(good, np.zeros(40, int)).slope == 0.0
    assert Calibration.from_dict(cal.to_dict()) == cal


def oof(n: int = 60, repeats: int = 2, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    rows = []
    for r in range(repeats):
        for i in range(n):
            p = 0.4 + 0.2 * y[i] + rng.normal(0, 0.15)
            rows.append(
                {
                    "repeat": r,
                    "fold": i % 3,
                    "BraTS21ID": f"{i:05d}",
                    "MGMT_value": y[i],
                    "raw": p,
                    "rank": p,
                    "calibrated": p,
                }
            )
    return pd.DataFrame(rows)


def test_summary_metrics_average_over_repeats_and_give_an_interval():
    patients = oof()
    m = summary_metrics(patients, pooling="rank", seed=0)
    from sklearn.metrics import roc_auc_score

    per_repeat = [roc_auc_score(g["MGMT_value"], g["rank"]) for _, g in patients.groupby("repeat")]
    assert m["patient_auc"] == pytest.approx(np.mean(per_repeat))
    assert m["patient_auc_sd_repeats"] == pytest.approx(np.std(per_repeat, ddof=1))
    lo, hi = m["patient_auc_ci95"]
    assert lo < m["patient_auc"] < hi and hi - lo < 0.4
    assert m["n_patients"] == 60 and m["repeats"] == 2 and len(m["folds"]) == 6
    assert summary_metrics(patients, pooling="rank", seed=0) == m, "seeded"


def test_rank_auc_equals_sklearn_ties_included():
    from sklearn.metrics import roc_auc_score

    from stages.scoring import rank_auc

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (50, 30))
    scores = rng.integers(0, 5, (50, 30)).astype(float)  # many ties
    expected = [roc_auc_score(y, s) for y, s in zip(labels, scores)]
    np.testing.assert_allclose(rank_auc(labels, scores), expected, rtol=1e-12)
    assert np.isnan(rank_auc(np.ones((1, 4), int), np.arange(4.0)[None]))[0]


def test_bootstrap_interval_narrows_with_more_patients():
    small, large = oof(n=40, repeats=1), oof(n=400, repeats=1)
    lo_s, hi_s = bootstrap_auc(small, "raw", resamples=300)
    lo_l, hi_l = bootstrap_auc(large, "raw", resamples=300)
    assert hi_l - lo_l < hi_s - lo_s


def test_a_calibration_is_written_as_exactly_its_three_fields_and_read_back_equal():
    c = Calibration((0.1, 0.4, 0.7), 1.5, -0.25)
    assert c.to_dict() == {"val_scores": [0.1, 0.4, 0.7], "slope": 1.5, "intercept": -0.25}
    assert Calibration.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_single_repeats_folds_and_classes_give_defined_numbers():
    rng = np.random.default_rng(2)
    n = 40
    rows = pd.DataFrame(
        {
            "repeat": 0,
            "fold": (np.arange(n) // 2) % 2,
            "BraTS21ID": [f"{i:05d}" for i in range(n)],
            "MGMT_value": np.arange(n) % 2,
            **{pool: rng.random(n) for pool in ("raw", "rank", "calibrated")},
        }
    )
    m = summary_metrics(rows, pooling="raw")
    assert m["patient_auc_sd_repeats"] == 0.0 and m["n_patients"] == n and m["n_positive"] == n // 2
    two_folds = list(m["folds"].values())
    assert len(two_folds) == 2 and m["fold_auc_sd"] == pytest.approx(np.std(two_folds, ddof=1))
    one_fold = summary_metrics(rows.assign(fold=0), pooling="raw")
    assert one_fold["fold_auc_sd"] == 0.0
    assert np.isnan(auc(np.ones(5), rng.random(5))), "one class: no AUC"


def test_probabilities_at_zero_and_one_stay_finite_and_everything_is_float64():
    edge = np.log((1 - EPS) / EPS)
    assert logit(np.array([0.0, 1.0])) == pytest.approx([-edge, edge])
    assert logit(np.array([0.3], np.float32)).dtype == np.float64
    cal = Calibration(val_scores=(0.2, 0.5), slope=1.0, intercept=0.0)
    assert all(v.dtype == np.float64 for v in cal.apply(np.array([0.3], np.float32)).values())
    for labels in (np.ones(6), np.zeros(6)):  # one class among the validation patients: a finite constant
        c = fit_calibration(np.linspace(0.1, 0.9, 6), labels)
        assert c.slope == 0.0 and np.isfinite(c.intercept) and abs(c.intercept) == pytest.approx(edge)


def test_a_weak_positive_calibration_slope_is_kept_not_flattened():
    rng = np.random.default_rng(4)
    labels = np.arange(400) % 2
    scores = 1 / (1 + np.exp(-(0.3 * (labels - 0.5) * 4 + rng.normal(0, 2, 400))))
    c = fit_calibration(scores, labels)
    assert 0 < c.slope < 1, c
