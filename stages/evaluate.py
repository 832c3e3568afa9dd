"""Stage ``evaluate``: patient-level ROC-AUC of the out-of-fold predictions, with plots.

Reads ``predictions/`` (written by ``train``) and, for the demo cohort, the latent scores behind
its labels (``<data.raw_dir>/demo_oracle.csv``) to report the Bayes-optimal AUC on exactly the
evaluated patients. Writes the headline metrics to ``eval/metrics.json`` (what ``dvc metrics
show`` and ``dvc exp show`` list), every metric to ``eval/details.json``, and the ROC,
precision-recall and confusion-matrix plots of the headline patient score (``cv.pooling``),
averaged over repeats, to ``eval/plots/``. All of them are small and kept in git.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from stages.cohort import ORACLE_FILE, read_oracle
from stages.errors import DataError
from stages.io import write_json
from stages.params import Params, Paths
from stages.scoring import auc, bootstrap_values, interval95, summary_metrics

log = logging.getLogger("evaluate")
# what `dvc metrics show` lists: it fits 120 columns
HEADLINE = ("patient_auc", "patient_auc_ci95_low", "patient_auc_ci95_high", "bayes_auc", "n_patients")


def threshold(pooling: str, prevalence: float) -> float:
    """The decision threshold of the confusion matrix: a probability at the training prevalence,
    or for rank scores the percentile that calls the same share of patients positive."""
    return 1.0 - prevalence if pooling == "rank" else prevalence


def bayes_auc(patients: pd.DataFrame, oracle: dict[str, float]) -> float | None:
    """AUC of the demo cohort's latent scores on exactly the evaluated patients (None for real data)."""
    if not oracle:
        return None
    first = patients.drop_duplicates("BraTS21ID")
    missing = sorted(set(first["BraTS21ID"]) - set(oracle))
    if missing:
        raise DataError(ORACLE_FILE, f"no latent score for patient {missing[0]} (is data.raw_dir the trained cohort?)")
    return auc(first["MGMT_value"].to_numpy(), np.array([oracle[pid] for pid in first["BraTS21ID"]]))


def slice_auc(slices: pd.DataFrame) -> float | None:
    """AUC over single samples (slices), when patients have more than one; None for volume models."""
    if slices.groupby(["repeat", "BraTS21ID"]).size().max() <= 1:
        return None
    return float(np.mean([auc(g["MGMT_value"].to_numpy(), g["prob"].to_numpy()) for _, g in slices.groupby("repeat")]))


def flatten(metrics: dict) -> dict:
    """One level: an interval ``[low, high]`` becomes ``<name>_low``/``_high``, a dict ``<name>/<key>``."""
    flat = {}
    for name, value in metrics.items():
        if isinstance(value, dict):
            flat.update({f"{name}/{key}": v for key, v in value.items()})
        elif isinstance(value, list):
            flat.update({f"{name}_low": value[0], f"{name}_high": value[1]})
        else:
            flat[name] = value
    return flat


def evaluate(
    *, patients: pd.DataFrame, slices: pd.DataFrame, oracle: dict[str, float], pooling: str, seed: int
) -> dict:
    """Every metric of the stage (see README, "What the metrics mean")."""
    metrics = summary_metrics(patients, pooling=pooling, seed=seed)
    sample = slice_auc(slices)
    if sample is not None:
        metrics["slice_auc"] = sample
    if oracle:
        metrics["bayes_auc"] = bayes_auc(patients, oracle)
        # the gap's interval is paired: both AUCs on the same resampled patients
        metrics["bayes_gap"] = metrics["bayes_auc"] - metrics["patient_auc"]
        draws = bootstrap_values(patients, pooling, seed=seed, reference=oracle)
        metrics["bayes_gap_ci95"] = list(interval95(draws))
    return metrics


def patient_means(patients: pd.DataFrame, pooling: str) -> tuple[np.ndarray, np.ndarray]:
    """Each patient's label and headline score averaged over repeats, ordered by ID."""
    mean = patients.groupby("BraTS21ID").agg(y=("MGMT_value", "first"), p=(pooling, "mean"))
    return mean["y"].to_numpy(), mean["p"].to_numpy()


def write_outputs(out_dir: Path, *, metrics: dict, labels: np.ndarray, scores: np.ndarray, cut: float) -> None:
    """``metrics.json`` (the :data:`HEADLINE` metrics, through dvclive), ``details.json`` (all of
    ``metrics``, flattened) and the sklearn plots of ``scores``."""
    from dvclive import Live

    flat = flatten(metrics)
    live = Live(dir=str(out_dir), dvcyaml=None, save_dvc_exp=False, report=None)
    for name in HEADLINE:
        if name in flat:
            live.log_metric(name, flat[name], plot=False)
    live.log_sklearn_plot("roc", labels, scores, name="roc.json")
    live.log_sklearn_plot("precision_recall", labels, scores, name="precision_recall.json")
    live.log_sklearn_plot("confusion_matrix", labels, (scores >= cut).astype(int), name="confusion_matrix.json")
    live.end()
    write_json(out_dir / "details.json", flat)


def execute(params: Params, paths: Paths) -> dict:
    """The stage's work for validated parameters and file locations; returns every metric."""
    oof = Path(paths.oof)
    patients = pd.read_csv(oof / "oof_patients.csv", dtype={"BraTS21ID": str})
    slices = pd.read_csv(oof / "oof_slices.csv", dtype={"BraTS21ID": str})
    pooling = params.cv.pooling
    oracle = read_oracle(Path(params.data.raw_dir))
    metrics = evaluate(patients=patients, slices=slices, oracle=oracle, pooling=pooling, seed=params.cv.seed)
    labels, scores = patient_means(patients, pooling)
    cut = threshold(pooling, float(labels.mean()))
    metrics["confusion_threshold"] = cut
    write_outputs(Path(paths.eval_dir), metrics=metrics, labels=labels, scores=scores, cut=cut)
    return metrics


def main() -> None:
    """Run the stage from ``params.yaml``."""
    from stages.cli import stage

    with stage("evaluate", __doc__) as ctx:
        metrics = execute(ctx.params, ctx.paths)
        pooling = ctx.params.cv.pooling
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
        "n/a (real data)"
        if "bayes_auc" not in metrics
        else "{:.3f}, gap {:.3f} (95% CI {:.3f}-{:.3f})".format(
            metrics["bayes_auc"], metrics["bayes_gap"], *metrics["bayes_gap_ci95"]
        ),
    )


if __name__ == "__main__":
    main()
