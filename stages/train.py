"""Stage ``train``: patient-grouped cross-validation of the chosen model (``model``, ``train``, ``cv``).

For each repeat and outer fold, a model trains on the other folds' patients, stops and is
calibrated on an inner validation split of them, and scores its own held-out patients; those
out-of-fold scores are what ``evaluate`` reports, so no score comes from a patient that
influenced training or model selection. Input shape and series come from the cache's
``config.json``. Writes ``models/`` (one byte-stable ``.keras`` file per repeat and fold, and
``model_card.json``), ``predictions/`` (out-of-fold sample and patient scores) and
``training/`` (per-epoch curves and a summary per model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stages.cache import entry_path, read_settings
from stages.card import FoldModel, ModelCard, write_card
from stages.cohort import read_patients
from stages.cv import Split, check_folds, eligible_patients, fold_data, sample_count, splits
from stages.errors import ParamError
from stages.io import write_csv, write_json
from stages.models import MODELS
from stages.params import ModelParams, Params, Paths, TrainParams
from stages.scoring import POOLINGS, Calibration, auc, fit_calibration
from stages.settings import PreprocessSettings

if TYPE_CHECKING:
    from stages.training import FoldResult

log = logging.getLogger("train")


@dataclass(frozen=True)
class Cohort:
    """The training patients the model can use, and where their cache entries are."""

    ids: np.ndarray
    labels: np.ndarray
    samples: np.ndarray  # samples per patient
    files: list[Path]
    kind: str
    settings: PreprocessSettings


@dataclass
class Outputs:
    """What the stage writes, gathered over every split."""

    slices: list[dict] = field(default_factory=list)
    patients: list[dict] = field(default_factory=list)
    curves: list[dict] = field(default_factory=list)
    folds: dict[str, dict] = field(default_factory=dict)
    models: list[FoldModel] = field(default_factory=list)


def prepare(params: Params, paths: Paths) -> Cohort:
    """Check the inputs against the parameters (no TensorFlow yet): one-line errors if they do not fit."""
    settings = read_settings(Path(paths.cache_dir))
    missing = [s for s in params.model.series if s not in settings.series]
    if missing:
        raise ParamError("model.series", f"{missing} not in the preprocessed cache (series {list(settings.series)})")
    kind = MODELS[params.model.name].kind
    table = eligible_patients(read_patients(paths.patients), series=params.model.series, kind=kind)
    labels = table["MGMT_value"].astype(int).to_numpy()
    check_folds(labels, folds=params.cv.folds, val_fraction=params.train.val_fraction)
    counts = table[list(params.model.series)].astype(int).to_dict("records")
    return Cohort(
        ids=table["BraTS21ID"].to_numpy(),
        labels=labels,
        samples=np.array([sample_count(c, kind=kind, series=params.model.series) for c in counts]),
        files=[entry_path(Path(paths.cache_dir), f"train/{pid}") for pid in table["BraTS21ID"]],
        kind=kind,
        settings=settings,
    )


@dataclass(frozen=True)
class SplitTask:
    """Everything one split's model needs, picklable (it may train in another process or host)."""

    split: Split
    cohort: Cohort
    model: ModelParams
    train: TrainParams


@dataclass(frozen=True)
class SplitResult:
    """What one split's training sends back: the model file, its calibration, scores and history."""

    split: Split
    model_bytes: bytes
    calibration: Calibration
    probs: list[np.ndarray]  # sample probabilities of each held-out patient
    history: list[dict]
    summary: dict


def fold_summary(split: Split, result: FoldResult, held_out_auc: float) -> dict:
    """What ``training/folds.json`` records for one model."""
    return {
        "patients": {"fit": len(split.fit), "val": len(split.val), "held_out": len(split.test)},
        "epochs": result.epochs,
        "stopped_at": result.stopped_at,
        "best_epoch": result.best_epoch,
        "collapsed": result.collapsed,
        "attempts": result.attempts,
        "seed": result.seed,
        "held_out_patient_auc_raw": held_out_auc,
    }


def train_split(task: SplitTask) -> SplitResult:
    """Train, calibrate and serialise one split's model and score its held-out patients."""
    import tempfile

    import tensorflow as tf

    from stages import training
    from stages.data import patient_scores, predict_patients, sample_loader
    from stages.io import stable_keras_bytes

    tf.config.experimental.enable_op_determinism()
    split, cohort, mp, tp = task.split, task.cohort, task.model, task.train
    load = sample_loader(kind=cohort.kind, series=mp.series, depth=mp.depth)
    data = fold_data(split, files=cohort.files, labels=cohort.labels, samples=cohort.samples)
    seed = tp.seed + split.fold + 100 * split.repeat
    result = training.fit_fold(
        data, load=load, mp=mp, tp=tp, img_size=cohort.settings.img_size, seed=seed, name=split.name
    )
    calibration = fit_calibration(result.val_scores, data.val_labels)
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / f"{split.name}.keras"
        result.model.save(saved)  # Keras stamps the time and memory addresses: made constant below
        model_bytes = stable_keras_bytes(saved.read_bytes())
    probs = predict_patients(result.model, [cohort.files[i] for i in split.test], load=load)
    held_out_auc = auc(cohort.labels[split.test], patient_scores(probs))
    return SplitResult(
        split, model_bytes, calibration, probs, result.history, fold_summary(split, result, held_out_auc)
    )


def cross_validate(cohort: Cohort, params: Params, *, models_dir: Path) -> Outputs:
    """Train, calibrate and score one model per split (on this host or a Ray cluster, per
    ``train.executor``), then save the models; nothing is written unless every split succeeded."""
    from stages.data import patient_scores
    from stages.executors import run_tasks
    from stages.io import atomic_write_bytes

    tp, cv = params.train, params.cv
    tasks = [
        SplitTask(split, cohort, params.model, tp)
        for split in splits(
            cohort.labels, cohort.ids, folds=cv.folds, seed=cv.seed, repeats=cv.repeats, val_fraction=tp.val_fraction
        )
    ]
    out = Outputs()
    for r in run_tasks(train_split, tasks, names=[t.split.name for t in tasks], executor=tp.executor, log=report_split):
        split = r.split
        atomic_write_bytes(models_dir / f"{split.name}.keras", r.model_bytes)
        scores = r.calibration.apply(patient_scores(r.probs))
        for j, i in enumerate(split.test):
            base = {
                "repeat": split.repeat,
                "fold": split.fold,
                "BraTS21ID": cohort.ids[i],
                "MGMT_value": cohort.labels[i],
            }
            out.slices += [{**base, "sample": s, "prob": float(v)} for s, v in enumerate(r.probs[j])]
            out.patients.append({**base, **{pool: float(scores[pool][j]) for pool in POOLINGS}})
        out.curves += [{"repeat": split.repeat, "fold": split.fold, **row} for row in r.history]
        out.folds[split.name] = r.summary
        out.models.append(FoldModel(f"{split.name}.keras", r.calibration))
    return out


def report_split(r: SplitResult) -> None:
    """The stage's line for one trained model."""
    s = r.summary
    stopped = f", stopped early (best epoch {s['best_epoch']})" if s["stopped_at"] else ""
    collapsed = "; COLLAPSED: constant predictions" if s["collapsed"] else ""
    log.info(
        "%s: %d fit / %d val / %d held-out patients, %d epochs%s, held-out patient AUC %.3f%s",
        r.split.name,
        s["patients"]["fit"],
        s["patients"]["val"],
        s["patients"]["held_out"],
        s["epochs"],
        stopped,
        s["held_out_patient_auc_raw"],
        collapsed,
    )


def write_outputs(out: Outputs, *, cohort: Cohort, params: Params, paths: Paths) -> None:
    """Predictions, training logs and the model card."""
    keys = ["repeat", "fold", "BraTS21ID", "MGMT_value"]
    write_csv(Path(paths.oof) / "oof_slices.csv", out.slices, [*keys, "sample", "prob"])
    write_csv(Path(paths.oof) / "oof_patients.csv", out.patients, [*keys, *POOLINGS])
    write_csv(
        Path(paths.training_log) / "curves.csv",
        out.curves,
        ["repeat", "fold", "epoch", "loss", "val_loss", "val_patient_auc"],
    )
    write_json(Path(paths.training_log) / "folds.json", out.folds)
    card = ModelCard(
        model=params.model,
        input_kind=cohort.kind,
        preprocess=cohort.settings,
        models=tuple(out.models),
        train_prevalence=float(np.mean(cohort.labels)),
        train_patients=int(len(cohort.labels)),
    )
    write_card(Path(paths.models_dir), card)


def execute(params: Params, paths: Paths) -> tuple[Cohort, Outputs]:
    """The stage's work for validated parameters and file locations (inputs checked before TensorFlow loads)."""
    from stages.cli import quiet_tensorflow

    cohort = prepare(params, paths)
    quiet_tensorflow()
    out = cross_validate(cohort, params, models_dir=Path(paths.models_dir))
    write_outputs(out, cohort=cohort, params=params, paths=paths)
    return cohort, out


def main() -> None:
    """Run the stage from ``params.yaml``."""
    from stages.cli import stage

    with stage("train", __doc__) as ctx:
        cohort, out = execute(ctx.params, ctx.paths)
        collapsed = sum(f["collapsed"] for f in out.folds.values())
        log.info(
            "trained %d models (%s, %d patients); %d collapsed",
            len(out.folds),
            ctx.params.model.name,
            len(cohort.ids),
            collapsed,
        )


if __name__ == "__main__":
    main()
