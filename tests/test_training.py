"""Training controls: early stopping (when, and which weights), fixed-length runs, collapsed folds."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from stages import training
from stages.cv import FoldData
from stages.io import save_npz
from stages.params import load_params
from tests.conftest import ROOT


def stopper(values: list[float], **kwargs) -> tuple[training.EarlyStop, list[int]]:
    """Run an EarlyStop over a sequence of monitored values on a one-weight model; returns the weight kept."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.stop_training = False
    stop = training.EarlyStop("m", "max", **kwargs)
    stop.set_model(model)
    for epoch, value in enumerate(values):
        model.set_weights([np.array([[float(epoch + 1)]])])  # weights remember their epoch
        stop.on_epoch_end(epoch, {"m": value})
        if model.stop_training:
            break
    return stop, int(model.get_weights()[0][0, 0])


def test_early_stopping_waits_patience_epochs_and_restores_the_best():
    stop, kept = stopper([0.5, 0.7, 0.6, 0.6, 0.65, 0.9], patience=3, min_epochs=0)
    assert stop.stopped_at == 5 and stop.best_epoch == 2 and kept == 2


def test_no_stop_keeps_the_last_weights():
    stop, kept = stopper([0.5, 0.7, 0.6, 0.8], patience=3, min_epochs=0)
    assert stop.stopped_at is None and kept == 4


def test_min_epochs_and_ties():
    stop, kept = stopper([0.9, 0.5, 0.5, 0.5, 0.5, 0.5], patience=1, min_epochs=5)
    assert stop.stopped_at == 5 and kept == 1
    stop, _ = stopper([0.5909090909090908, 0.5909090909090909, 0.5], patience=1, min_epochs=0)
    assert stop.best_epoch == 1, "equal AUCs differing in the last bit are a tie"


@pytest.fixture(scope="module")
def fold_data(tmp_path_factory) -> FoldData:
    folder = tmp_path_factory.mktemp("fold")
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(24):
        y = i % 2
        images = rng.integers(0, 60, (4, 16, 16)).astype(np.uint8)
        images[:, 6:10, 6:10] += np.uint8(150 * y)  # a learnable signal
        save_npz(folder / f"{i:05d}.npz", {"T1wCE": images, "T1wCE_z": np.arange(4.0)})
        paths.append(folder / f"{i:05d}.npz")
        labels.append(y)
    labels = np.array(labels)
    return FoldData(paths[:16], labels[:16], 16, paths[16:], labels[16:])


def fit(fold_data, **train):
    from stages.data import sample_loader

    params = load_params(ROOT / "params.yaml")
    tp = params.train.model_copy(update={"batch_size": 4, **train})
    mp = params.model.model_copy(update={"name": "mil_cnn", "series": ("T1wCE",), "depth": 4, "width": 4})
    load = sample_loader(kind="volume", series=["T1wCE"], depth=4)
    return training.fit_fold(fold_data, load=load, mp=mp, tp=tp, img_size=16, seed=3, name="test")


def test_without_early_stopping_training_runs_exactly_epochs(fold_data):
    result = fit(fold_data, early_stopping="off", epochs=7)
    assert result.epochs == 7 and result.stopped_at is None and result.best_epoch is None
    assert [row["epoch"] for row in result.history] == list(range(1, 8))
    assert {"loss", "val_loss", "val_patient_auc"} <= set(result.history[0])


@pytest.mark.slow  # retrains: CI's slow run
def test_a_collapsed_model_is_retried_with_another_seed_and_reported(fold_data, monkeypatch):
    seeds = []
    real = training.fit_once

    def collapsing(data, **kw):
        seeds.append(kw["seed"])
        result = real(data, **kw)
        result.collapsed = True
        return result

    monkeypatch.setattr(training, "fit_once", collapsing)
    result = fit(fold_data, early_stopping="off", epochs=1, collapse_retries=2)
    assert seeds == [3, 1003, 2003] and result.collapsed and result.attempts == 3


@pytest.mark.slow  # retrains: CI's slow run
def test_a_constant_model_counts_as_collapsed(fold_data, monkeypatch):
    result = fit(fold_data, early_stopping="off", epochs=1, learning_rate=1e-9, collapse_retries=0)
    assert not result.collapsed
    monkeypatch.setattr(training, "COLLAPSE_SPREAD", 10.0)  # every spread is "constant"
    assert fit(fold_data, early_stopping="off", epochs=1, collapse_retries=0).collapsed


def spy_on_augmentation(monkeypatch) -> list[np.ndarray]:
    """Record every sample the training stream augments (and leave it unchanged)."""
    from stages import data

    seen: list[np.ndarray] = []

    def spy(x, rng):
        seen.append(np.array(x))
        return x

    monkeypatch.setattr(data, "augmented", spy)
    return seen


@pytest.mark.parametrize("augment", [True, False])
def test_augmentation_touches_the_fit_patients_samples_only_and_only_when_on(fold_data, monkeypatch, augment):
    from stages.data import sample_loader

    seen = spy_on_augmentation(monkeypatch)
    fit(fold_data, early_stopping="off", epochs=2, augment=augment)
    if not augment:
        assert seen == []
        return
    load = sample_loader(kind="volume", series=["T1wCE"], depth=4)
    fit_samples = {load(p).tobytes() for p in fold_data.fit_paths}
    val_samples = {load(p).tobytes() for p in fold_data.val_paths}
    assert len(seen) == 2 * len(fold_data.fit_paths), "each fit patient once per epoch"
    assert {x.tobytes() for x in seen} == fit_samples and not fit_samples & val_samples


def test_early_stopping_watches_the_inner_validation_patients_only(fold_data, monkeypatch):
    """The monitored AUC is computed on the validation patients' labels and predictions alone."""
    calls = []
    real = training.roc_auc_score

    def spy(labels, scores):
        calls.append(np.asarray(labels).tolist())
        return real(labels, scores)

    monkeypatch.setattr(training, "roc_auc_score", spy)
    result = fit(fold_data, early_stopping="patient_auc", patience=1, epochs=3)
    assert len(calls) == len(result.history), "once per epoch"
    assert all(c == fold_data.val_labels.tolist() for c in calls)
