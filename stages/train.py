"""Stage ``train``: patient-grouped cross-validation of the chosen model.

Each outer fold trains on the other folds' patients, stops early on an inner validation split
of those patients (patient-level ROC-AUC), and predicts its own held-out patients; those
out-of-fold predictions are what ``evaluate`` scores, so no score comes from a patient that
influenced training or model selection.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from stages.cohort import read_patients
from stages.config import load_params
from stages.data import (
    SampleFn,
    patient_dataset,
    predict_patients,
    sample_count,
    sample_loader,
)
from stages.io import atomic_path, write_csv, write_json
from stages.models import INPUT_KIND, build_model
from stages.volume import settings_from_params

log = logging.getLogger("train")


def eligible_patients(table: pd.DataFrame, *, series: list[str], kind: str) -> pd.DataFrame:
    """Training patients that give the model at least one sample."""
    train = table[table["split"] == "train"].copy()
    counts = train[series].astype(int)
    usable = [sample_count(c, kind=kind, series=series) > 0 for c in counts.to_dict("records")]
    return train[usable].reset_index(drop=True)


def patient_folds(labels: np.ndarray, ids: np.ndarray, *, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds grouped by patient: no patient is on both sides of any split."""
    if folds < 2:
        raise ValueError("cv.folds must be at least 2")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(ids)), labels, groups=ids))


def inner_split(
    labels: np.ndarray, ids: np.ndarray, *, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """One stratified, patient-grouped train/validation split of ``val_fraction``."""
    return patient_folds(labels, ids, folds=max(2, round(1 / val_fraction)), seed=seed)[0]


def choose_strategy(mode: str) -> tf.distribute.Strategy:
    """MirroredStrategy over several GPUs (``auto``) or when forced (``mirrored``), else default."""
    gpus = tf.config.list_logical_devices("GPU")
    if mode == "mirrored" or (mode == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    if mode not in ("auto", "off", "mirrored"):
        raise ValueError(f"train.distribute must be auto, off or mirrored, not {mode!r}")
    return tf.distribute.get_strategy()


class PatientValidation(keras.callbacks.Callback):
    """Adds validation loss, slice AUC and patient-level AUC to each epoch's logs."""

    def __init__(self, paths: list[Path], labels: np.ndarray, *, load: SampleFn, batch_size: int) -> None:
        super().__init__()
        self.paths, self.labels, self.load, self.batch_size = paths, labels, load, batch_size

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        probs = predict_patients(self.model, self.paths, load=self.load, batch_size=self.batch_size)
        y_slice = np.concatenate([np.full(len(p), y) for p, y in zip(probs, self.labels)])
        p_slice = np.concatenate(probs)
        p_patient = np.array([p.mean() for p in probs])
        if logs is not None:
            logs["val_loss"] = float(log_loss(y_slice, p_slice, labels=[0, 1]))
            logs["val_auc"] = float(roc_auc_score(y_slice, p_slice))
            logs["val_patient_auc"] = float(roc_auc_score(self.labels, p_patient))


def fit_fold(
    *,
    train_paths: list[Path],
    train_labels: np.ndarray,
    n_samples: int,
    val_paths: list[Path],
    val_labels: np.ndarray,
    load: SampleFn,
    model_params: dict,
    train_params: dict,
    img_size: int,
    seed: int,
    live_dir: Path,
) -> keras.Model:
    """Train one model with early stopping on validation patient AUC (best weights restored)."""
    keras.utils.set_random_seed(seed)
    strategy = choose_strategy(train_params["distribute"])
    batch = int(train_params["batch_size"]) * strategy.num_replicas_in_sync
    with strategy.scope():
        model = build_model(
            model_params["name"],
            img_size=img_size,
            series=list(model_params["series"]),
            depth=int(model_params["depth"]),
        )
        schedule = keras.optimizers.schedules.ExponentialDecay(
            float(train_params["learning_rate"]),
            decay_steps=int(train_params["decay_steps"]),
            decay_rate=float(train_params["decay_rate"]),
            staircase=True,
        )
        model.compile(
            optimizer=keras.optimizers.Adam(schedule),
            loss="categorical_crossentropy",
            # with a 2-way softmax both columns have the same AUC, so their mean is the AUC
            metrics=[keras.metrics.AUC(name="auc", multi_label=True, num_labels=2)],
        )
    spec = tf.TensorSpec(model.input_shape[1:], tf.uint8)  # as predict_patients does
    train_ds = patient_dataset(
        train_paths,
        list(train_labels),
        load=load,
        spec=spec,
        n_samples=n_samples,
        batch_size=batch,
        shuffle_buffer=int(train_params["shuffle_buffer"]),
        seed=seed,
    )
    live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
    model.fit(
        train_ds,
        epochs=int(train_params["epochs"]),
        shuffle=False,  # the dataset shuffles itself, seeded
        verbose=0,
        callbacks=[
            PatientValidation(val_paths, val_labels, load=load, batch_size=batch),
            keras.callbacks.EarlyStopping(
                monitor="val_patient_auc", mode="max", patience=int(train_params["patience"]), restore_best_weights=True
            ),
            DVCLiveCallback(live=live),
        ],
    )
    return model


def main() -> None:
    """Run the stage from ``params.yaml``."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    params = load_params()
    paths, mp, tp, cv = params["paths"], params["model"], params["train"], params["cv"]
    tf.config.experimental.enable_op_determinism()
    kind = INPUT_KIND[mp["name"]]
    series = list(mp["series"])
    load = sample_loader(kind=kind, series=series, depth=int(mp["depth"]))
    table = eligible_patients(read_patients(paths["patients"]), series=series, kind=kind)
    n_samples = np.array(
        [sample_count(row, kind=kind, series=series) for row in table[series].astype(int).to_dict("records")]
    )
    ids = table["BraTS21ID"].to_numpy()
    labels = table["MGMT_value"].astype(int).to_numpy()
    files = [Path(paths["cache_dir"]) / "train" / f"{pid}.npz" for pid in ids]
    img_size = int(params["preprocess"]["img_size"])
    models_dir = Path(paths["models_dir"])
    rows = []
    for fold, (train_idx, test_idx) in enumerate(
        patient_folds(labels, ids, folds=int(cv["folds"]), seed=int(cv["seed"]))
    ):
        inner, val = inner_split(
            labels[train_idx], ids[train_idx], val_fraction=float(tp["val_fraction"]), seed=int(cv["seed"]) + fold
        )
        fit_idx, val_idx = train_idx[inner], train_idx[val]
        model = fit_fold(
            train_paths=[files[i] for i in fit_idx],
            train_labels=labels[fit_idx],
            n_samples=int(n_samples[fit_idx].sum()),
            val_paths=[files[i] for i in val_idx],
            val_labels=labels[val_idx],
            load=load,
            model_params=mp,
            train_params=tp,
            img_size=img_size,
            seed=int(tp["seed"]) + fold,
            live_dir=Path(paths["train_live"]) / f"fold_{fold}",
        )
        with atomic_path(models_dir / f"fold_{fold}.keras") as tmp:
            model.save(tmp)
        probs = predict_patients(model, [files[i] for i in test_idx], load=load, batch_size=int(tp["batch_size"]))
        for i, p in zip(test_idx, probs):
            rows += [
                {"BraTS21ID": ids[i], "fold": fold, "MGMT_value": labels[i], "sample": j, "prob": float(v)}
                for j, v in enumerate(p)
            ]
        fold_auc = roc_auc_score(labels[test_idx], [p.mean() for p in probs])
        log.info(
            "fold %d: %d train / %d val / %d held-out patients, held-out patient AUC %.3f",
            fold,
            len(fit_idx),
            len(val_idx),
            len(test_idx),
            fold_auc,
        )
    write_csv(paths["oof"], rows, ["BraTS21ID", "fold", "MGMT_value", "sample", "prob"])
    write_json(
        models_dir / "model_card.json",
        {
            "model": mp,
            "input_kind": kind,
            "folds": int(cv["folds"]),
            "models": [f"fold_{k}.keras" for k in range(int(cv["folds"]))],
            "preprocess": {"series": sorted(set(series)), **settings_from_params(params["preprocess"])},
            "train_prevalence": float(labels.mean()),
            "train_patients": int(len(ids)),
        },
    )


if __name__ == "__main__":
    main()
