"""From sample predictions to comparable patient scores and honest summary metrics (no TensorFlow).

A fold's model is scored on its held-out patients, but each fold's model has its own scale: pooled
naively, the out-of-fold AUC mixes ranking ability with calibration differences between folds.
Three patient scores are kept for every held-out patient (``cv.pooling`` chooses the headline):

* ``raw``: the mean of the patient's sample probabilities;
* ``rank``: its percentile among the fold's inner validation patients' raw scores (label-free);
* ``calibrated``: Platt scaling of the logit, fitted on the inner validation patients' labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

POOLINGS = ("raw", "rank", "calibrated")
EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Calibration:
    """One fold model's map from raw patient scores to comparable ones, from its validation patients."""

    val_scores: tuple[float, ...]  # sorted raw scores of the inner validation patients
    slope: float
    intercept: float

    def rank(self, scores: np.ndarray) -> np.ndarray:
        """Mid-rank percentile of each score among the validation scores, in [0, 1]."""
        ref = np.asarray(self.val_scores)
        below = np.searchsorted(ref, scores, side="left")
        upto = np.searchsorted(ref, scores, side="right")
        return (below + upto) / (2.0 * len(ref))

    def calibrated(self, scores: np.ndarray) -> np.ndarray:
        """Platt-scaled probability."""
        return 1.0 / (1.0 + np.exp(-(self.slope * logit(scores) + self.intercept)))

    def apply(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        """Every pooling's score for raw patient ``scores``."""
        scores = np.asarray(scores, dtype=np.float64)
        return {"raw": scores, "rank": self.rank(scores), "calibrated": self.calibrated(scores)}

    def to_dict(self) -> dict:
        return {**asdict(self), "val_scores": list(self.val_scores)}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(tuple(d["val_scores"]), float(d["slope"]), float(d["intercept"]))


def fit_calibration(val_scores: np.ndarray, val_labels: np.ndarray) -> Calibration:
    """Platt scaling on the validation patients; a non-positive slope (the model ranks its validation
    patients backwards) gives a constant at their prevalence rather than inverting the model."""
    val_scores = np.asarray(val_scores, dtype=np.float64)
    prevalence = float(np.clip(np.mean(val_labels), EPS, 1 - EPS))
    slope, intercept = 0.0, float(np.log(prevalence / (1 - prevalence)))
    if len(set(val_labels)) == 2:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1.0).fit(logit(val_scores)[:, None], val_labels)
        if model.coef_[0, 0] > 0:
            slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    return Calibration(tuple(float(v) for v in np.sort(val_scores)), slope, intercept)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC, or NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score  # imported late: `--help` answers fast

    return float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else float("nan")


def rank_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row of ``scores`` (2-D) against the same row of ``labels``, from average ranks
    (the Mann-Whitney statistic: equal to ``roc_auc_score``, ties included, for many rows at once);
    NaN for a row with one class only."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((ranks * labels).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)


def bootstrap_values(
    patients: pd.DataFrame, column: str, *, resamples: int = 2000, seed: int = 0, reference: dict | None = None
) -> np.ndarray:
    """The repeat-averaged pooled AUC of each of ``resamples`` resamples of the patients (drawn as
    ``default_rng(seed).integers(0, patients, (resamples, patients))``, patients ordered by ID);
    with ``reference`` (a score per patient ID), the AUC of those scores minus it, on the same draws."""
    wide = patients.pivot_table(index="BraTS21ID", columns="repeat", values=column)
    labels = patients.groupby("BraTS21ID")["MGMT_value"].first().loc[wide.index].to_numpy()
    idx = np.random.default_rng(seed).integers(0, len(labels), (resamples, len(labels)))
    values = np.mean([rank_auc(labels[idx], wide.to_numpy()[:, r][idx]) for r in range(wide.shape[1])], axis=0)
    if reference is None:
        return values
    ref = np.array([reference[pid] for pid in wide.index])
    return rank_auc(labels[idx], ref[idx]) - values


def interval95(values: np.ndarray) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles (resamples with one class only left out)."""
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap_auc(patients: pd.DataFrame, column: str, *, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the repeat-averaged pooled AUC, resampling patients."""
    return interval95(bootstrap_values(patients, column, resamples=resamples, seed=seed))


def summary_metrics(patients: pd.DataFrame, *, pooling: str, seed: int = 0) -> dict:
    """The metrics of ``evaluate``: pooled patient AUCs, their spread over repeats and folds, a CI."""
    by_repeat = {
        pool: [auc(g["MGMT_value"].to_numpy(), g[pool].to_numpy()) for _, g in patients.groupby("repeat")]
        for pool in POOLINGS
    }
    folds = {
        f"repeat{int(r)}_fold{int(k)}": auc(g["MGMT_value"].to_numpy(), g["raw"].to_numpy())
        for (r, k), g in patients.groupby(["repeat", "fold"])
    }
    fold_values = np.array(list(folds.values()))
    headline = np.array(by_repeat[pooling])
    lo, hi = bootstrap_auc(patients, pooling, seed=seed)
    first = patients[patients["repeat"] == patients["repeat"].min()]
    return {
        "patient_auc": float(headline.mean()),
        "patient_auc_sd_repeats": float(headline.std(ddof=1)) if len(headline) > 1 else 0.0,
        "patient_auc_ci95": [lo, hi],
        **{f"patient_auc_{pool}": float(np.mean(by_repeat[pool])) for pool in POOLINGS},
        "fold_auc_mean": float(np.nanmean(fold_values)),
        "fold_auc_sd": float(np.nanstd(fold_values, ddof=1)) if len(fold_values) > 1 else 0.0,
        "folds": folds,
        "repeats": int(patients["repeat"].nunique()),
        "n_patients": int(len(first)),
        "n_positive": int(first["MGMT_value"].sum()),
    }
