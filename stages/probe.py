"""A learnability probe: how much label information a cache's intensities carry, without a CNN.

A logistic regression on 18 intensity quantiles of each patient's slices of one series,
scored by patient-grouped cross-validation. Cheap, and blind to the model: when preprocessing
erases the label cue (as a percentile clip can saturate an enhancing rim), the probe falls to
chance; when it keeps the cue, the probe gets close to what a model can reach.

    python -m stages.probe [--series T1wCE]     # probe AUC of the pipeline's cache
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from stages.cache import entry_path

QUANTILES = (50, 60, 70, 80, 85, 90, 92, 94, 95, 96, 97, 98, 98.5, 99, 99.3, 99.6, 99.8, 99.9)
log = logging.getLogger("probe")


def quantile_features(images: np.ndarray) -> np.ndarray:
    """18 quantiles of the foreground (non-zero) pixels of a patient's slices, in [0, 1]."""
    pixels = images[images > 0]
    if pixels.size == 0:
        return np.zeros(len(QUANTILES))
    return np.percentile(pixels, QUANTILES) / 255.0


def probe_auc(features: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0) -> float:
    """Out-of-fold patient AUC of a logistic regression on ``features`` (one row per patient)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = np.zeros(len(labels))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(features, labels, groups=np.arange(len(labels))):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
        scores[test] = model.fit(features[train], labels[train]).predict_proba(features[test])[:, 1]
    return float(roc_auc_score(labels, scores))


def cache_features(cache_dir: Path, ids: list[str], *, series: str) -> np.ndarray:
    """:func:`quantile_features` of each training patient's cached ``series``."""
    rows = []
    for pid in ids:
        with np.load(entry_path(cache_dir, f"train/{pid}")) as npz:
            rows.append(quantile_features(npz[series]))
    return np.array(rows)


def main() -> None:
    """Print the probe AUC of the pipeline's cache."""
    from stages.cli import stage
    from stages.cohort import read_patients

    with stage("probe", __doc__, options=lambda p: p.add_argument("--series", default="T1wCE")) as ctx:
        table = read_patients(ctx.paths.patients)
        train = table[(table["split"] == "train") & (table[ctx.args.series].astype(int) > 0)]
        features = cache_features(Path(ctx.paths.cache_dir), list(train["BraTS21ID"]), series=ctx.args.series)
        auc = probe_auc(features, train["MGMT_value"].astype(int).to_numpy(), seed=ctx.params.cv.seed)
    log.info("intensity-quantile probe, %s, %d patients: out-of-fold AUC %.3f", ctx.args.series, len(train), auc)


if __name__ == "__main__":
    main()
