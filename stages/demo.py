"""Stage ``demo``: write the deterministic synthetic cohort in the challenge layout."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from stages.cohort import ORACLE_FILE
from stages.config import load_params
from stages.io import write_csv, write_json
from stages.phantom import bayes_auc, break_files, choose_ids, make_patient, write_patient

log = logging.getLogger("demo")
COHORT_FILE = "demo_cohort.json"


def build_cohort(
    *,
    out_dir: Path,
    n_train: int,
    n_test: int,
    seed: int,
    image_size: int,
    slices: int,
    signal_strength: float,
    prevalence: float,
    quirks: bool,
) -> dict:
    """Write a complete cohort into ``out_dir`` (replaced atomically) and return its summary."""
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    train_ids, test_ids = choose_ids(n_train=n_train, n_test=n_test, rng=np.random.default_rng(seed))
    specs = {
        split: [
            make_patient(pid=pid, seed=seed, strength=signal_strength, prevalence=prevalence, quirks=quirks)
            for pid in ids
        ]
        for split, ids in (("train", train_ids), ("test", test_ids))
    }
    files = 0
    for split, patients in specs.items():
        for spec in tqdm(patients, desc=f"demo {split}", unit="patient", disable=None):
            files += write_patient(
                folder=tmp / split / spec.pid, spec=spec, n_slices=slices, size=image_size, seed=seed
            )
    faults = break_files(root=tmp, train_ids=train_ids[3:], test_ids=test_ids) if quirks else []
    write_csv(
        tmp / "train_labels.csv",
        [{"BraTS21ID": s.pid, "MGMT_value": s.label} for s in specs["train"]],
        ["BraTS21ID", "MGMT_value"],
    )
    write_csv(
        tmp / "sample_submission.csv",
        [{"BraTS21ID": s.pid, "MGMT_value": 0.5} for s in specs["test"]],
        ["BraTS21ID", "MGMT_value"],
    )
    oracle = [
        {"split": split, "BraTS21ID": s.pid, "MGMT_value": s.label, "score": round(s.score, 6)}
        for split, patients in specs.items()
        for s in patients
    ]
    write_csv(tmp / ORACLE_FILE, oracle, ["split", "BraTS21ID", "MGMT_value", "score"])
    labels = [s.label for s in specs["train"]]
    summary = {
        "patients": {"train": len(train_ids), "test": len(test_ids)},
        "positives_train": int(sum(labels)),
        "files": files,
        "signal_strength": signal_strength,
        "bayes_auc_population": round(bayes_auc(signal_strength), 6),
        "bayes_auc_train": round(float(roc_auc_score(labels, [s.score for s in specs["train"]])), 6),
        "faults": faults,
    }
    write_json(tmp / COHORT_FILE, summary)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return summary


def main() -> None:
    """Run the stage from ``params.yaml``."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    params = load_params()
    summary = build_cohort(out_dir=Path(params["paths"]["demo_dir"]), **params["demo"])
    log.info(
        "wrote %d files for %s patients; Bayes-optimal AUC %.3f (population), %.3f (this train cohort)",
        summary["files"],
        summary["patients"],
        summary["bayes_auc_population"],
        summary["bayes_auc_train"],
    )


if __name__ == "__main__":
    main()
