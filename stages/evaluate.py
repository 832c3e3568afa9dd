"""Stage ``evaluate``: patient-level ROC-AUC of the out-of-fold predictions, with plots.

Reads ``predictions/`` (written by ``train``) and, for the demo cohort, the latent scores behind
its labels (``<data.raw_dir>/demo_oracle.csv``) to report the Bayes-optimal AUC on exactly the
evaluated patients. Writes ``dvclive/evaluate/metrics.json`` and the ROC, precision-recall and
confusion-matrix plots of the headline patient score (``cv.pooling``), averaged over repeats.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from stages.cohort import read_oracle
from stages.scoring import auc, summary_metrics

log = logging.getLogger("evaluate")


def threshold(pooling: str, prevalence: float) -> float:
    """The decision threshold of the confusion matrix: a probability at the training prevalence,
    or for rank scores the percentile that calls the same share of patients positive."""
    return 1.0 - prevalence if pooling == "rank" else prevalence


def bayes_auc(patients: pd.DataFrame, oracle: dict[str, float]) -> float | None:
    """AUC of the demo cohort's latent scores on exactly the evaluated patients (None for real data)."""
    if not oracle:
        return None
    first = patients.drop_duplicates("BraTS21ID")
    return auc(first["MGMT_value"].to_numpy(), np.array([oracle[pid] for pid in first["BraTS21ID"]]))


def slice_auc(slices: pd.DataFrame) -> float | None:
    """AUC over single samples (slices), when patients have more than one; None for volume models."""
    if slices.groupby(["repeat", "BraTS21ID"]).size().max() <= 1:
        return None
    return float(np.mean([auc(g["MGMT_value"].to_numpy(), g["prob"].to_numpy()) for _, g in slices.groupby("repeat")]))


def evaluate(
    *, patients: pd.DataFrame, slices: pd.DataFrame, oracle: dict[str, float], pooling: str, seed: int
) -> dict:
    """Every metric of the stage (see README, "What the metrics mean")."""
    metrics = summary_metrics(patients, pooling=pooling, seed=seed)
    sample = slice_auc(slices)
    if sample is not None:
        metrics["slice_auc"] = sample
    bayes = bayes_auc(patients, oracle)
    if bayes is not None:
        metrics["bayes_auc"] = bayes
    return metrics


def main() -> None:
    """Run the stage from ``params.yaml``."""
    from stages.cli import stage

    with stage("evaluate", __doc__) as ctx:
        oof = Path(ctx.paths.oof)
        patients = pd.read_csv(oof / "oof_patients.csv", dtype={"BraTS21ID": str})
        slices = pd.read_csv(oof / "oof_slices.csv", dtype={"BraTS21ID": str})
        pooling = ctx.params.cv.pooling
        oracle = read_oracle(Path(ctx.params.data.raw_dir))
        metrics = evaluate(patients=patients, slices=slices, oracle=oracle, pooling=pooling, seed=ctx.params.cv.seed)
        write_plots(Path(ctx.paths.eval_live), patients=patients, metrics=metrics, pooling=pooling)
    log.info(
        "patient AUC %.3f (95%% CI %.3f-%.3f; %s pooling; raw %.3f, rank %.3f, calibrated %.3f; folds %.3f +/- %.3f) "
        "on %d patients; Bayes-optimal %s",
        metrics["patient_auc"],
        *metrics["patient_auc_ci95"],
        pooling,
        metrics["patient_auc_raw"],
        metrics["patient_auc_rank"],
        metrics["patient_auc_calibrated"],
        metrics["fold_auc_mean"],
        metrics["fold_auc_sd"],
        metrics["n_patients"],
        "n/a (real data)" if "bayes_auc" not in metrics else f"{metrics['bayes_auc']:.3f}",
    )


def write_plots(out_dir: Path, *, patients: pd.DataFrame, metrics: dict, pooling: str) -> None:
    """``metrics.json`` and the sklearn plots of the repeat-averaged headline score, through dvclive."""
    from dvclive import Live

    mean = patients.groupby("BraTS21ID").agg(y=("MGMT_value", "first"), p=(pooling, "mean"))
    y, p = mean["y"].to_numpy(), mean["p"].to_numpy()
    cut = threshold(pooling, float(y.mean()))
    live = Live(dir=str(out_dir), dvcyaml=None, save_dvc_exp=False, report=None)
    for name, value in metrics.items():
        if isinstance(value, dict):
            for key, v in value.items():
                live.log_metric(f"{name}/{key}", v, plot=False)
        elif isinstance(value, list):
            live.log_metric(f"{name}_low", value[0], plot=False)
            live.log_metric(f"{name}_high", value[1], plot=False)
        else:
            live.log_metric(name, value, plot=False)
    live.log_metric("confusion_threshold", cut, plot=False)
    live.log_sklearn_plot("roc", y, p, name="roc.json")
    live.log_sklearn_plot("precision_recall", y, p, name="precision_recall.json")
    live.log_sklearn_plot("confusion_matrix", y, (p >= cut).astype(int), name="confusion_matrix.json")
    live.end()


if __name__ == "__main__":
    main()
