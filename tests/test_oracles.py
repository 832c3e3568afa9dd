"""Every number ``evaluate`` reports, recomputed here from first principles (or with SciPy) on a
fixture, and compared: patient AUC under each pooling, fold AUCs and their spread, the bootstrap
interval, the Bayes-optimal AUC, the confusion matrix, and the poolings themselves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from stages import evaluate
from stages.params import load_params, load_paths
from stages.scoring import Calibration, fit_calibration
from tests.conftest import per_test_under_mutation, write_config

N, REPEATS, FOLDS = 240, 2, 4


def pair_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The probability that a positive outscores a negative, ties counting one half: every pair counted."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


@pytest.fixture(scope=per_test_under_mutation)
def fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict, Path]:
    """Out-of-fold patient scores over two repeats (with ties), the latent scores, and evaluate's outputs."""
    rng = np.random.default_rng(11)
    ids = [f"{i:05d}" for i in range(N)]
    labels = rng.integers(0, 2, N)
    latent = labels + rng.normal(0, 1.0, N)
    rows = []
    for r in range(REPEATS):
        folds = rng.permutation(np.arange(N) % FOLDS)
        raw = np.round(1 / (1 + np.exp(-(latent + rng.normal(0, 1.2, N)))), 2)  # rounded: ties
        for i in range(N):
            rows.append(
                {
                    "repeat": r,
                    "fold": folds[i],
                    "BraTS21ID": ids[i],
                    "MGMT_value": labels[i],
                    "raw": raw[i],
                    "rank": np.round(raw[i] * 0.9 + 0.05 * folds[i], 3),
                    "calibrated": 1 - raw[i] if i % 7 == 0 else raw[i],
                }
            )
    patients = pd.DataFrame(rows)
    folder = tmp_path_factory.mktemp("oracles")
    raw_dir = folder / "raw"
    raw_dir.mkdir()
    pd.DataFrame({"BraTS21ID": ids, "score": latent}).to_csv(raw_dir / "demo_oracle.csv", index=False)
    write_config(folder, raw_dir=raw_dir)
    params, paths = load_params(folder / "params.yaml"), load_paths(folder / "paths.yaml")
    (Path(paths.oof)).mkdir(parents=True)
    patients.to_csv(Path(paths.oof) / "oof_patients.csv", index=False)
    slices = patients.rename(columns={"raw": "prob"})[["repeat", "fold", "BraTS21ID", "MGMT_value", "prob"]]
    pd.concat([slices, slices.assign(prob=slices["prob"] / 2)]).to_csv(Path(paths.oof) / "oof_slices.csv", index=False)
    evaluate.execute(params, paths)
    return patients, dict(zip(ids, latent)), Path(paths.eval_dir)


def reported(folder: Path) -> tuple[dict, dict]:
    return json.loads((folder / "metrics.json").read_text()), json.loads((folder / "details.json").read_text())


def test_patient_auc_of_each_pooling_is_the_mean_over_repeats_of_the_pairwise_auc(fixture):
    patients, _, folder = fixture
    headline, details = reported(folder)
    for pooling in ("raw", "rank", "calibrated"):
        expected = np.mean(
            [pair_auc(g["MGMT_value"].to_numpy(), g[pooling].to_numpy()) for _, g in patients.groupby("repeat")]
        )
        assert details[f"patient_auc_{pooling}"] == pytest.approx(expected, abs=1e-12), pooling
    assert headline["patient_auc"] == details["patient_auc"] == details["patient_auc_rank"]  # cv.pooling: rank
    per_repeat = [pair_auc(g["MGMT_value"].to_numpy(), g["rank"].to_numpy()) for _, g in patients.groupby("repeat")]
    assert details["patient_auc_sd_repeats"] == pytest.approx(np.std(per_repeat, ddof=1), abs=1e-12)
    assert details["repeats"] == REPEATS and headline["n_patients"] == N
    assert details["n_positive"] == int(patients.drop_duplicates("BraTS21ID")["MGMT_value"].sum())


def test_fold_aucs_and_their_spread_use_the_raw_score_within_each_held_out_fold(fixture):
    patients, _, folder = fixture
    _, details = reported(folder)
    folds = {
        f"repeat{r}_fold{k}": pair_auc(g["MGMT_value"].to_numpy(), g["raw"].to_numpy())
        for (r, k), g in patients.groupby(["repeat", "fold"])
    }
    assert {k: details[f"folds/{k}"] for k in folds} == pytest.approx(folds, abs=1e-12)
    values = np.array(list(folds.values()))
    assert details["fold_auc_mean"] == pytest.approx(values.mean(), abs=1e-12)
    assert details["fold_auc_sd"] == pytest.approx(values.std(ddof=1), abs=1e-12)


def test_the_bayes_auc_is_the_latent_scores_auc_on_the_scored_patients(fixture):
    patients, latent, folder = fixture
    headline, _ = reported(folder)
    first = patients.drop_duplicates("BraTS21ID")
    expected = pair_auc(first["MGMT_value"].to_numpy(), np.array([latent[i] for i in first["BraTS21ID"]]))
    assert headline["bayes_auc"] == pytest.approx(expected, abs=1e-12)


def test_the_reported_interval_is_the_patient_bootstrap_seeded_by_cv_seed(fixture):
    """The 2.5th and 97.5th percentiles of the repeat-averaged AUC over 2000 resamples of the
    patients, drawn as ``default_rng(cv.seed).integers(0, patients, (2000, patients))``."""
    patients, _, folder = fixture
    headline, _ = reported(folder)
    seed = load_params(folder.parent / "params.yaml").cv.seed
    wide = patients.pivot_table(index="BraTS21ID", columns="repeat", values="rank").sort_index()
    labels = patients.groupby("BraTS21ID")["MGMT_value"].first().loc[wide.index].to_numpy()
    draws = np.random.default_rng(seed).integers(0, len(labels), (2000, len(labels)))
    values = [np.mean([pair_auc(labels[d], wide[r].to_numpy()[d]) for r in wide.columns]) for d in draws]
    lo, hi = np.percentile(values, [2.5, 97.5])
    assert headline["patient_auc_ci95_low"] == pytest.approx(lo, abs=1e-12)
    assert headline["patient_auc_ci95_high"] == pytest.approx(hi, abs=1e-12)


def test_the_gap_to_bayes_and_its_interval_pair_both_aucs_on_the_same_resampled_patients(fixture):
    """The gap is the Bayes-optimal AUC minus the headline AUC; its interval the 2.5th and 97.5th
    percentiles of that difference over the AUC interval's own 2000 draws of the patients."""
    patients, latent, folder = fixture
    headline, details = reported(folder)
    assert details["bayes_gap"] == pytest.approx(headline["bayes_auc"] - headline["patient_auc"], abs=1e-12)
    seed = load_params(folder.parent / "params.yaml").cv.seed
    wide = patients.pivot_table(index="BraTS21ID", columns="repeat", values="rank").sort_index()
    labels = patients.groupby("BraTS21ID")["MGMT_value"].first().loc[wide.index].to_numpy()
    scores = np.array([latent[i] for i in wide.index])
    draws = np.random.default_rng(seed).integers(0, len(labels), (2000, len(labels)))
    gaps = [
        pair_auc(labels[d], scores[d]) - np.mean([pair_auc(labels[d], wide[r].to_numpy()[d]) for r in wide.columns])
        for d in draws
    ]
    lo, hi = np.percentile(gaps, [2.5, 97.5])
    assert details["bayes_gap_ci95_low"] == pytest.approx(lo, abs=1e-12)
    assert details["bayes_gap_ci95_high"] == pytest.approx(hi, abs=1e-12)
    # paired: narrower than the model's own interval, since the two AUCs move together
    assert hi - lo < headline["patient_auc_ci95_high"] - headline["patient_auc_ci95_low"]


def test_the_bootstrap_interval_is_a_95_percent_interval():
    """Against the normal approximation (Hanley and McNeil's standard error) on 600 patients: a 90%
    interval would be 16% narrower and a 99% interval 31% wider."""
    from stages.scoring import bootstrap_auc

    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 600)
    one = pd.DataFrame({"repeat": 0, "BraTS21ID": [f"{i:05d}" for i in range(600)], "MGMT_value": y})
    one["raw"] = y + rng.normal(0, 1.5, 600)
    a = pair_auc(y, one["raw"].to_numpy())
    n1, n0 = y.sum(), len(y) - y.sum()
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0))
    lo, hi = bootstrap_auc(one, "raw", resamples=2000, seed=0)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.08)
    assert (lo + hi) / 2 == pytest.approx(a, abs=0.01)


def test_the_interval_resamples_patients_not_rows():
    """Two repeats scoring the same patients identically give the interval of one repeat: the
    repeats of a patient are drawn together (drawn apart, the interval would narrow by about sqrt 2)."""
    from stages.scoring import bootstrap_auc

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 150)
    one = pd.DataFrame({"repeat": 0, "BraTS21ID": [f"{i:05d}" for i in range(150)], "MGMT_value": y})
    one["raw"] = y + rng.normal(0, 1.5, 150)
    two = pd.concat([one, one.assign(repeat=1)])
    assert bootstrap_auc(two, "raw", resamples=500, seed=1) == pytest.approx(
        bootstrap_auc(one, "raw", resamples=500, seed=1), abs=1e-12
    )


def test_the_confusion_matrix_calls_the_prevalence_share_positive(fixture):
    patients, _, folder = fixture
    _, details = reported(folder)
    mean = patients.groupby("BraTS21ID").agg(y=("MGMT_value", "first"), p=("rank", "mean"))
    prevalence = mean["y"].mean()
    cut = 1 - prevalence  # a percentile: the top share equal to the prevalence is called positive
    assert details["confusion_threshold"] == pytest.approx(cut, abs=1e-12)
    cells = json.loads((folder / "plots/sklearn/confusion_matrix.json").read_text())
    got = pd.Series([(c["actual"], c["predicted"]) for c in cells]).value_counts().to_dict()
    called = (mean["p"] >= cut).astype(int)
    expected = pd.Series(list(zip(mean["y"].astype(str), called.astype(str)))).value_counts().to_dict()
    assert got == expected


def test_the_roc_plot_is_the_roc_of_the_repeat_averaged_headline_score(fixture):
    patients, _, folder = fixture
    roc = json.loads((folder / "plots/sklearn/roc.json").read_text())["roc"]
    mean = patients.groupby("BraTS21ID").agg(y=("MGMT_value", "first"), p=("rank", "mean"))
    fpr, tpr = np.array([r["fpr"] for r in roc]), np.array([r["tpr"] for r in roc])
    assert np.trapezoid(tpr, fpr) == pytest.approx(pair_auc(mean["y"].to_numpy(), mean["p"].to_numpy()), abs=1e-9)


def test_rank_pooling_is_the_mid_rank_percentile_among_validation_scores():
    rng = np.random.default_rng(5)
    val = np.round(rng.random(25), 1)  # ties
    cal = Calibration(tuple(np.sort(val)), 1.0, 0.0)
    scores = np.round(rng.random(40), 1)
    expected = [stats.percentileofscore(val, s, kind="mean") / 100 for s in scores]
    np.testing.assert_allclose(cal.rank(scores), expected, atol=1e-12)


def test_calibrated_pooling_is_platt_scaling_with_sklearns_penalty():
    """Against a direct minimisation of the L2-penalised (C = 1) log-loss of the logit."""
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 60)
    p = np.clip(1 / (1 + np.exp(-(y - 0.5 + rng.normal(0, 1, 60)))), 0.01, 0.99)
    x = np.log(p / (1 - p))

    def loss(w: np.ndarray) -> float:
        z = w[0] * x + w[1]
        return float(np.sum(np.logaddexp(0, z) - y * z) + 0.5 * w[0] ** 2)

    slope, intercept = optimize.minimize(loss, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    cal = fit_calibration(p, y)
    assert (cal.slope, cal.intercept) == pytest.approx((slope, intercept), abs=1e-4)
    np.testing.assert_allclose(cal.calibrated(p), 1 / (1 + np.exp(-(slope * x + intercept))), atol=1e-4)


def test_evaluate_writes_exactly_the_declared_files_and_calls_a_score_at_the_threshold_positive(tmp_path):
    labels, scores = np.array([0, 1, 0, 1]), np.array([0.2, 0.5, 0.5, 0.8])
    metrics = {"patient_auc": 0.75, "patient_auc_ci95": [0.5, 1.0], "n_patients": 4, "poolings": {"raw": 0.7}}
    evaluate.write_outputs(tmp_path, metrics=metrics, labels=labels, scores=scores, cut=0.5)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    plots = [f"plots/sklearn/{name}.json" for name in ("confusion_matrix", "precision_recall", "roc")]
    assert written == ["details.json", "metrics.json", *plots]  # what dvc.yaml declares, nothing more
    headline, details = reported(tmp_path)
    assert headline == {"patient_auc": 0.75, "patient_auc_ci95_low": 0.5, "patient_auc_ci95_high": 1.0, "n_patients": 4}
    assert details == {**headline, "poolings/raw": 0.7}
    cells = json.loads((tmp_path / "plots/sklearn/confusion_matrix.json").read_text())
    assert [c["predicted"] for c in cells] == ["0", "1", "1", "1"]  # a score equal to the cut is called positive


def test_the_slice_auc_is_the_mean_over_repeats_of_the_auc_over_every_sample(fixture):
    patients, _, folder = fixture
    _, details = reported(folder)
    slices = pd.concat([patients.assign(prob=patients["raw"]), patients.assign(prob=patients["raw"] / 2)])
    per_repeat = [pair_auc(g["MGMT_value"].to_numpy(), g["prob"].to_numpy()) for _, g in slices.groupby("repeat")]
    assert details["slice_auc"] == pytest.approx(np.mean(per_repeat), abs=1e-12)
