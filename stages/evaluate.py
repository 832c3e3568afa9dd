"""Stage ``evaluate``: patient-level ROC-AUC of the out-of-fold predictions, with plots."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from dvclive import Live
from sklearn.metrics import roc_auc_score

from stages.cohort import read_patients
from stages.config import load_params

log = logging.getLogger("evaluate")


def patient_predictions(slices: pd.DataFrame) -> pd.DataFrame:
    """Average the slice probabilities of each patient (one row per patient, sorted by ID)."""
    slices = slices.astype({"BraTS21ID": str})
    grouped = slices.groupby("BraTS21ID", sort=True)
    return grouped.agg(fold=("fold", "first"), MGMT_value=("MGMT_value", "first"), prob=("prob", "mean")).reset_index()


def fold_metrics(patients: pd.DataFrame) -> dict[str, float]:
    """Out-of-fold AUC over all patients, plus each fold's AUC and their mean and spread."""
    folds = {int(k): float(roc_auc_score(g["MGMT_value"], g["prob"])) for k, g in patients.groupby("fold")}
    values = np.array(list(folds.values()))
    return {
        "roc_auc": float(roc_auc_score(patients["MGMT_value"], patients["prob"])),
        "roc_auc_fold_mean": float(values.mean()),
        "roc_auc_fold_std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        **{f"roc_auc_fold_{k}": v for k, v in sorted(folds.items())},
        "n_patients": int(len(patients)),
        "n_positive": int(patients["MGMT_value"].sum()),
    }


def bayes_auc(patients: pd.DataFrame, oracle: pd.DataFrame) -> float | None:
    """AUC of the demo cohort's latent scores on exactly the evaluated patients (None for real data)."""
    scores = oracle[oracle["oracle_score"] != ""].set_index("BraTS21ID")["oracle_score"].astype(float)
    if scores.empty:
        return None
    return float(roc_auc_score(patients["MGMT_value"], scores.loc[patients["BraTS21ID"]].to_numpy()))


def main() -> None:
    """Run the stage from ``params.yaml``."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    params = load_params()
    paths = params["paths"]
    patients = patient_predictions(pd.read_csv(paths["oof"], dtype={"BraTS21ID": str}))
    metrics = fold_metrics(patients)
    bayes = bayes_auc(patients, read_patients(paths["patients"]))
    if bayes is not None:
        metrics["bayes_auc"] = bayes
    y, p = patients["MGMT_value"].to_numpy(), patients["prob"].to_numpy()
    live = Live(dir=str(Path(paths["eval_live"])), dvcyaml=None, save_dvc_exp=False, report=None)
    for name, value in metrics.items():
        live.log_metric(name, value, plot=False)
    live.log_sklearn_plot("roc", y, p, name="roc.json")
    live.log_sklearn_plot("confusion_matrix", y, (p >= 0.5).astype(int), name="confusion_matrix.json")
    live.end()
    log.info(
        "patient-level ROC-AUC %.3f (folds %.3f +/- %.3f) on %d patients; Bayes-optimal %s",
        metrics["roc_auc"],
        metrics["roc_auc_fold_mean"],
        metrics["roc_auc_fold_std"],
        metrics["n_patients"],
        "n/a (real data)" if bayes is None else f"{bayes:.3f}",
    )


if __name__ == "__main__":
    main()
