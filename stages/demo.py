"""Stage ``demo``: write the deterministic synthetic cohort in the challenge layout.

Writes ``data/demo/`` (replaced atomically): ``train/`` and ``test/`` patient folders of real MR
DICOM files, ``train_labels.csv``, ``sample_submission.csv``, ``demo_oracle.csv`` (the latent
score behind each label, read by ``evaluate`` only) and ``demo_cohort.json`` (a summary with the
Bayes-optimal AUC). Parameters: section ``demo`` of ``params.yaml``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stages.cli import progress
from stages.cohort import ORACLE_FILE
from stages.io import write_csv, write_json
from stages.phantom import (
    break_files,
    choose_ids,
    make_patient,
    matrix_sizes,
    population_bayes_auc,
    write_patient,
)
from stages.pools import worker_count, worker_pool

if TYPE_CHECKING:
    from stages.params import Params, Paths

log = logging.getLogger("demo")
COHORT_FILE = "demo_cohort.json"


def _write(job: tuple) -> int:
    folder, spec, n_slices, size, seed = job
    return write_patient(folder=folder, spec=spec, n_slices=n_slices, size=size, seed=seed)


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
    anatomy: str = "phantom",
    min_image_size: int | None = None,
) -> dict:
    """Write a complete cohort into ``out_dir`` (replaced atomically) and return its summary."""
    from sklearn.metrics import roc_auc_score  # imported late: `--help` answers fast

    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    matrices = matrix_sizes(min_image_size or image_size, image_size)
    train_ids, test_ids = choose_ids(n_train=n_train, n_test=n_test, rng=np.random.default_rng(seed))
    specs = {
        split: [
            make_patient(
                pid=pid,
                seed=seed,
                strength=signal_strength,
                prevalence=prevalence,
                quirks=quirks,
                anatomy=anatomy,
                matrices=matrices,
            )
            for pid in ids
        ]
        for split, ids in (("train", train_ids), ("test", test_ids))
    }
    jobs = [(tmp / split / spec.pid, spec, slices, image_size, seed) for split, ps in specs.items() for spec in ps]
    files = 0
    # The server preloads what the workers run, not this module: run as ``-m stages.demo`` it is also
    # the main module, which each worker imports itself (preloading it too makes runpy warn).
    with worker_pool(worker_count(0), preload=("stages.phantom",)) as pool:  # each patient has its own seeded streams
        for n in progress(pool.imap(_write, jobs), total=len(jobs), desc="demo", unit="patient"):
            files += n
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
        "anatomy": anatomy,
        "bayes_auc_population": round(population_bayes_auc(signal_strength), 6),
        "bayes_auc_train": round(float(roc_auc_score(labels, [s.score for s in specs["train"]])), 6),
        "faults": faults,
    }
    write_json(tmp / COHORT_FILE, summary)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return summary


def execute(params: Params, paths: Paths) -> dict:
    """Write the demo cohort ``params.demo`` describes to ``paths.demo_dir``; returns its summary."""
    return build_cohort(out_dir=Path(paths.demo_dir), **params.demo.model_dump())


def main() -> None:
    """Run the stage from ``params.yaml``."""
    from stages.cli import stage

    with stage("demo", __doc__) as ctx:
        summary = execute(ctx.params, ctx.paths)
    log.info(
        "wrote %d files for %d train and %d test patients; "
        "Bayes-optimal AUC %.3f (population), %.3f (this train cohort)",
        summary["files"],
        summary["patients"]["train"],
        summary["patients"]["test"],
        summary["bayes_auc_population"],
        summary["bayes_auc_train"],
    )


if __name__ == "__main__":
    main()
