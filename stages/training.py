"""Training one fold's model: seeded, validated per patient each epoch, stopped as asked (TensorFlow).

Early stopping (``train.early_stopping``) watches the inner validation patients' loss or
patient-level AUC, never before ``train.min_epochs``, and restores the best weights only when it
did stop; ``off`` trains exactly ``train.epochs``. A model whose validation predictions are all
the same (a collapsed fold) is retrained with another seed up to ``train.collapse_retries`` times
and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import log_loss, roc_auc_score

from stages.cli import progress
from stages.cv import FoldData
from stages.data import SampleFn, patient_dataset, patient_scores, predict_samples, steps_per_epoch
from stages.models import build_model
from stages.params import ModelParams, TrainParams

COLLAPSE_SPREAD = 1e-6  # validation patient scores closer than this: the model predicts a constant
MIN_DELTA = 1e-9  # an improvement must exceed rounding noise (equal AUCs can differ in the last bit)
MONITORS = {"val_loss": ("val_loss", "min"), "patient_auc": ("val_patient_auc", "max")}


@dataclass
class FoldResult:
    """A trained model and how its training went."""

    model: keras.Model
    val_scores: np.ndarray  # raw patient scores of the validation patients
    history: list[dict] = field(default_factory=list)
    stopped_at: int | None = None  # epoch (1-based) early stopping ended training at
    best_epoch: int | None = None  # epoch whose weights were restored
    collapsed: bool = False
    attempts: int = 1
    seed: int = 0

    @property
    def epochs(self) -> int:
        return len(self.history)


class PatientValidation(keras.callbacks.Callback):
    """Adds validation loss and patient-level AUC (mean sample probability per patient) to the logs.

    The validation patients' samples are loaded once and held (a fifth of a training fold's
    patients): predicting them each epoch from memory costs a tenth of streaming them.
    """

    def __init__(self, data: FoldData, *, load: SampleFn, batch_size: int) -> None:
        super().__init__()
        self.data, self.batch_size = data, batch_size
        self.samples = [load(p) for p in data.val_paths]

    def probabilities(self) -> list[np.ndarray]:
        """Positive-class probability of each validation sample, one array per patient."""
        return predict_samples(self.model, self.samples, batch_size=self.batch_size)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        probs = self.probabilities()
        y_sample = np.concatenate([np.full(len(p), y) for p, y in zip(probs, self.data.val_labels)])
        if logs is not None:
            logs["val_loss"] = float(log_loss(y_sample, np.concatenate(probs), labels=[0, 1]))
            logs["val_patient_auc"] = float(roc_auc_score(self.data.val_labels, patient_scores(probs)))


class EarlyStop(keras.callbacks.Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs, never before ``min_epochs``;
    restore the best epoch's weights only when training was stopped."""

    def __init__(self, monitor: str, mode: str, *, patience: int, min_epochs: int) -> None:
        super().__init__()
        self.monitor, self.sign = monitor, 1.0 if mode == "max" else -1.0
        self.patience, self.min_epochs = patience, min_epochs
        self.best, self.best_epoch, self.best_weights = -np.inf, 0, None
        self.stopped_at: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = self.sign * float((logs or {})[self.monitor])
        if value > self.best + MIN_DELTA:
            self.best, self.best_epoch, self.best_weights = value, epoch + 1, self.model.get_weights()
        elif epoch + 1 >= max(self.min_epochs, self.best_epoch + self.patience):
            self.stopped_at = epoch + 1
            self.model.stop_training = True
            self.model.set_weights(self.best_weights)


class Progress(keras.callbacks.Callback):
    """A progress bar per fold on a terminal: epoch, training loss, validation patient AUC."""

    def __init__(self, name: str, epochs: int) -> None:
        super().__init__()
        self.bar = progress(total=epochs, desc=f"train {name}", unit="epoch", leave=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.bar.set_postfix_str(
            f"loss {logs.get('loss', np.nan):.3f} val patient AUC {logs.get('val_patient_auc', np.nan):.3f}"
        )
        self.bar.update()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.bar.close()


def compile_model(model: keras.Model, tp: TrainParams) -> None:
    """Adam with a staircase exponential decay of the learning rate, categorical cross-entropy."""
    schedule = keras.optimizers.schedules.ExponentialDecay(
        tp.learning_rate, decay_steps=tp.decay_steps, decay_rate=tp.decay_rate, staircase=True
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="categorical_crossentropy")


def choose_strategy(mode: str) -> tf.distribute.Strategy:
    """MirroredStrategy over several GPUs (``auto``) or when forced (``mirrored``), else the default."""
    gpus = tf.config.list_logical_devices("GPU")
    if mode == "mirrored" or (mode == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    if mode not in ("auto", "off", "mirrored"):
        raise ValueError(f"train.distribute must be auto, off or mirrored, not {mode!r}")
    return tf.distribute.get_strategy()


def fit_once(
    data: FoldData, *, load: SampleFn, mp: ModelParams, tp: TrainParams, img_size: int, seed: int, name: str
) -> FoldResult:
    """Train one model with ``seed`` (see the module docstring for stopping)."""
    # Keras numbers layer names per process: without a reset, a model file would depend on what
    # the process built before it (another fold, another in-process run)
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    strategy = choose_strategy(tp.distribute)
    batch = tp.batch_size * strategy.num_replicas_in_sync
    with strategy.scope():
        model = build_model(mp.name, img_size=img_size, series=mp.series, depth=mp.depth, width=mp.width)
        compile_model(model, tp)
    spec = tf.TensorSpec(model.input_shape[1:], tf.uint8)
    train_ds = patient_dataset(
        data.fit_paths,
        list(data.fit_labels),
        load=load,
        spec=spec,
        n_samples=data.fit_samples,
        batch_size=batch,
        shuffle_buffer=tp.shuffle_buffer,
        seed=seed,
        epochs=tp.epochs,
        augment=tp.augment,
    )
    validation = PatientValidation(data, load=load, batch_size=batch)
    callbacks: list[keras.callbacks.Callback] = [validation]
    stopper = None
    if tp.early_stopping != "off":
        monitor, mode = MONITORS[tp.early_stopping]
        stopper = EarlyStop(monitor, mode, patience=tp.patience, min_epochs=tp.min_epochs)
        callbacks.append(stopper)
    callbacks.append(Progress(name, tp.epochs))
    steps = steps_per_epoch(data.fit_samples, batch)
    fit = model.fit(train_ds, epochs=tp.epochs, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=callbacks)
    history = [
        {
            "epoch": e + 1,
            **{k: float(v[e]) for k, v in fit.history.items() if k in ("loss", "val_loss", "val_patient_auc")},
        }
        for e in range(len(fit.history["loss"]))
    ]
    val_scores = patient_scores(validation.probabilities())
    stopped = stopper.stopped_at if stopper is not None else None
    return FoldResult(
        model=model,
        val_scores=val_scores,
        history=history,
        stopped_at=stopped,
        best_epoch=stopper.best_epoch if stopped else None,
        collapsed=bool(np.ptp(val_scores) < COLLAPSE_SPREAD),
        seed=seed,
    )


def fit_fold(
    data: FoldData, *, load: SampleFn, mp: ModelParams, tp: TrainParams, img_size: int, seed: int, name: str
) -> FoldResult:
    """:func:`fit_once`, retried with seeds ``seed + 1000 k`` while its predictions collapse."""
    for attempt in range(tp.collapse_retries + 1):
        result = fit_once(data, load=load, mp=mp, tp=tp, img_size=img_size, seed=seed + 1000 * attempt, name=name)
        result.attempts = attempt + 1
        if not result.collapsed:
            break
    return result
