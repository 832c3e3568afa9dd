"""Model zoo, patient-grouped splits, the streamed input pipeline, evaluation and submission."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from stages.data import patient_dataset, predict_patients, sample_count, sample_loader, samples_from_arrays
from stages.evaluate import bayes_auc, fold_metrics, patient_predictions
from stages.io import save_npz
from stages.models import build_model, seed_cnn
from stages.predict import submission_rows
from stages.train import choose_strategy, eligible_patients, inner_split, patient_folds


def test_seed_cnn_is_the_seed_architecture():
    model = seed_cnn(img_size=32)
    assert model.count_params() == 182_466
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "Rescaling",
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Dropout",
        "Flatten",
        "Dense",
        "Dense",
    ]
    assert model.output_shape == (None, 2)


@pytest.mark.parametrize("name,shape", [("cnn25d", (4, 24, 24, 3)), ("cnn3d", (2, 6, 24, 24, 3))])
def test_other_models_take_their_inputs(name, shape):
    model = build_model(name, img_size=24, series=["FLAIR", "T1wCE", "T2w"], depth=6)
    out = model.predict(np.zeros(shape, np.uint8), verbose=0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError):
        build_model("resnet999", img_size=24, series=["T1wCE"], depth=6)


def test_folds_never_share_a_patient_and_are_stratified():
    rng = np.random.default_rng(0)
    ids = np.array([f"{i:05d}" for i in range(100)])
    labels = (rng.random(100) < 0.5).astype(int)
    folds = patient_folds(labels, ids, folds=5, seed=1)
    held_out = np.concatenate([test for _, test in folds])
    assert sorted(held_out) == list(range(100)), "every patient held out exactly once"
    for train, test in folds:
        assert not set(ids[train]) & set(ids[test])
        assert abs(labels[test].mean() - labels.mean()) < 0.1
        inner, val = inner_split(labels[train], ids[train], val_fraction=0.2, seed=3)
        assert not set(ids[train][inner]) & set(ids[train][val])
        assert 0.15 < len(val) / len(train) < 0.25
    assert [t.tolist() for _, t in folds] == [t.tolist() for _, t in patient_folds(labels, ids, folds=5, seed=1)]
    with pytest.raises(ValueError):
        patient_folds(labels, ids, folds=1, seed=1)


def arrays(n: dict[str, int], size: int = 8) -> dict[str, np.ndarray]:
    out = {}
    for k, (name, count) in enumerate(n.items()):
        out[name] = np.full((count, size, size), k + 1, np.uint8)
        out[f"{name}_z"] = np.arange(count, dtype=np.float32) * (k + 1)
    return out


def test_samples_for_each_input_kind():
    a = arrays({"FLAIR": 3, "T1wCE": 5})
    assert samples_from_arrays(a, kind="slices", series=["T1wCE"], depth=4).shape == (5, 8, 8, 1)
    stack = samples_from_arrays(a, kind="stack", series=["T1wCE", "FLAIR"], depth=4)
    assert stack.shape == (5, 8, 8, 2) and stack[..., 0].max() == 2 and stack[..., 1].max() == 1
    assert samples_from_arrays(a, kind="volume", series=["T1wCE", "FLAIR"], depth=4).shape == (1, 4, 8, 8, 2)
    a["FLAIR"] = a["FLAIR"][:0]
    assert len(samples_from_arrays(a, kind="stack", series=["T1wCE", "FLAIR"], depth=4)) == 0
    assert sample_count({"T1wCE": 5, "FLAIR": 0}, kind="stack", series=["T1wCE", "FLAIR"]) == 0
    assert sample_count({"T1wCE": 5, "FLAIR": 3}, kind="slices", series=["T1wCE", "FLAIR"]) == 8


def test_eligible_patients_need_samples():
    table = pd.DataFrame(
        {
            "split": ["train", "train", "test"],
            "BraTS21ID": ["00001", "00002", "00003"],
            "MGMT_value": ["1", "0", ""],
            "T1wCE": [3, 0, 4],
            "FLAIR": [2, 2, 2],
        }
    )
    assert eligible_patients(table, series=["T1wCE"], kind="slices")["BraTS21ID"].tolist() == ["00001"]


@pytest.fixture
def cache(tmp_path):
    paths, labels = [], []
    for i in range(6):
        path = tmp_path / f"{i:05d}.npz"
        save_npz(path, {"T1wCE": np.full((i + 1, 8, 8), 10 * i, np.uint8), "T1wCE_z": np.arange(i + 1.0)})
        paths.append(path)
        labels.append(i % 2)
    return paths, labels


def test_patient_dataset_streams_every_sample_once_per_epoch(cache):
    paths, labels = cache
    load = sample_loader(kind="slices", series=["T1wCE"], depth=1)
    spec = tf.TensorSpec((8, 8, 1), tf.uint8)
    ds = patient_dataset(paths, labels, load=load, spec=spec, n_samples=21, batch_size=4, shuffle_buffer=64, seed=0)
    assert ds.cardinality().numpy() == 6
    epoch1 = [(x.numpy(), y.numpy()) for x, y in ds]
    epoch2 = [(x.numpy(), y.numpy()) for x, y in ds]
    assert sum(len(x) for x, _ in epoch1) == 21 and sum(len(x) for x, _ in epoch2) == 21
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(epoch1, epoch2)), "reshuffled each epoch"
    again = patient_dataset(paths, labels, load=load, spec=spec, n_samples=21, batch_size=4, shuffle_buffer=64, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(epoch1, [(x.numpy(), y.numpy()) for x, y in again]))


def test_predict_patients_keeps_patient_order(cache, tmp_path):
    paths, _ = cache
    model = build_model("cnn25d", img_size=8, series=["T1wCE"], depth=1)
    load = sample_loader(kind="slices", series=["T1wCE"], depth=1)
    missing = tmp_path / "missing.npz"
    probs = predict_patients(model, [paths[2], missing, paths[0]], load=load, batch_size=4)
    assert [len(p) for p in probs] == [3, 0, 1]
    assert predict_patients(model, [missing], load=load, batch_size=4)[0].size == 0


def test_mirrored_strategy_trains_on_cpu(cache):
    strategy = choose_strategy("mirrored")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert isinstance(choose_strategy("auto"), type(tf.distribute.get_strategy()))
    with strategy.scope():
        model = build_model("cnn25d", img_size=8, series=["T1wCE"], depth=1)
        model.compile(optimizer="adam", loss="categorical_crossentropy")
    paths, labels = cache
    load = sample_loader(kind="slices", series=["T1wCE"], depth=1)
    ds = patient_dataset(
        paths,
        labels,
        load=load,
        spec=tf.TensorSpec((8, 8, 1), tf.uint8),
        n_samples=21,
        batch_size=4 * strategy.num_replicas_in_sync,
        shuffle_buffer=8,
        seed=0,
    )
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    with pytest.raises(ValueError):
        choose_strategy("sometimes")


def test_patient_level_metrics():
    slices = pd.DataFrame(
        {
            "BraTS21ID": ["00001"] * 3 + ["00002"] * 2 + ["00003", "00004"],
            "fold": [0, 0, 0, 0, 0, 1, 1],
            "MGMT_value": [1, 1, 1, 0, 0, 1, 0],
            "sample": [0, 1, 2, 0, 1, 0, 0],
            "prob": [0.9, 0.1, 0.5, 0.2, 0.4, 0.3, 0.8],
        }
    )
    patients = patient_predictions(slices)
    assert patients["prob"].round(6).tolist() == [0.5, 0.3, 0.3, 0.8]
    metrics = fold_metrics(patients)
    assert metrics["roc_auc_fold_0"] == 1.0 and metrics["roc_auc_fold_1"] == 0.0
    assert metrics["roc_auc"] == pytest.approx(0.25) and metrics["n_patients"] == 4
    assert metrics["roc_auc_fold_mean"] == 0.5 and metrics["roc_auc_fold_std"] == pytest.approx(np.sqrt(0.5))
    oracle = pd.DataFrame(
        {"BraTS21ID": ["00004", "00003", "00002", "00001", "00009"], "oracle_score": ["-1", "2", "0", "3", ""]}
    )
    assert bayes_auc(patients, oracle) == 1.0
    assert bayes_auc(patients, oracle.assign(oracle_score="")) is None


def test_submission_rows_match_by_id():
    ids = ["00005", "00002", "00009"]
    rows, fallback = submission_rows(ids, [0.7, None, 0.1], prevalence=0.52)
    assert dict((r["BraTS21ID"], r["MGMT_value"]) for r in rows) == {"00005": 0.7, "00002": 0.52, "00009": 0.1}
    assert fallback == ["00002"]
    with pytest.raises(ValueError):
        submission_rows(["00001", "00001"], [0.1, 0.2], prevalence=0.5)
