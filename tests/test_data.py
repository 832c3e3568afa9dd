"""Model inputs: samples per input kind, the streamed training set (labels in the right column), predictions
in patient order."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from stages.data import (
    augmented,
    patient_dataset,
    patient_scores,
    predict_patients,
    predict_samples,
    sample_loader,
    samples_from_arrays,
)
from stages.io import save_npz
from stages.models import build_model


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
    with pytest.raises(ValueError, match="^unknown input kind 'voxels'$"):
        samples_from_arrays(a, kind="voxels", series=["T1wCE"], depth=4)
    assert len(samples_from_arrays(a, kind="stack", series=["T1wCE", "FLAIR"], depth=4)) == 0
    assert len(samples_from_arrays(a, kind="volume", series=["T1wCE", "FLAIR"], depth=4)) == 0


def test_a_volume_takes_depth_slices_evenly_from_first_to_last():
    a = {"T1wCE": np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((10, 2, 2), np.uint8)}
    volume = samples_from_arrays(a, kind="volume", series=["T1wCE"], depth=4)
    assert volume[0, :, 0, 0, 0].tolist() == [0, 3, 6, 9]  # round(linspace(0, 9, 4))


def test_a_stack_pairs_slices_by_position():
    a = {
        "T1wCE": np.arange(3)[:, None, None] * np.ones((3, 2, 2), np.uint8),
        "T1wCE_z": np.array([0.0, 5.0, 10.0]),
        "FLAIR": np.arange(10, 14)[:, None, None] * np.ones((4, 2, 2), np.uint8),
        "FLAIR_z": np.array([9.0, 1.0, 6.0, 20.0]),
    }
    stack = samples_from_arrays(a, kind="stack", series=["T1wCE", "FLAIR"], depth=1)
    assert stack[:, 0, 0, 1].tolist() == [11, 12, 10]  # nearest FLAIR slice to z = 0, 5, 10


@pytest.fixture
def cache(tmp_path):
    paths, labels = [], []
    for i in range(6):
        path = tmp_path / f"{i:05d}.npz"
        save_npz(path, {"T1wCE": np.full((i + 1, 8, 8), 10 * i, np.uint8), "T1wCE_z": np.arange(i + 1.0)})
        paths.append(path)
        labels.append(i % 2)
    return paths, labels


def stream(paths, labels, **kwargs):
    load = sample_loader(kind="slices", series=["T1wCE"], depth=1)
    spec = tf.TensorSpec((8, 8, 1), tf.uint8)
    return patient_dataset(
        paths, labels, load=load, spec=spec, n_samples=21, batch_size=4, shuffle_buffer=64, epochs=2, **kwargs
    )


def batches(ds) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_the_training_stream_has_every_sample_once_per_epoch_with_its_label(cache):
    paths, labels = cache
    ds = stream(paths, labels, seed=0)
    assert ds.cardinality().numpy() == 2 * 6  # 21 samples in batches of 4, two epochs
    both = batches(ds)
    epoch1, epoch2 = both[:6], both[6:]
    for epoch in (epoch1, epoch2):
        x = np.concatenate([b[0] for b in epoch])[:, 0, 0, 0]
        y = np.concatenate([b[1] for b in epoch])
        assert sorted(x.tolist()) == sorted(v for i in range(6) for v in [10 * i] * (i + 1))
        # patient i's slices hold 10 * i; its label is i % 2, one-hot in column 1 for positives
        np.testing.assert_array_equal(y[:, 1], (x // 10) % 2)
        np.testing.assert_array_equal(y.sum(axis=1), 1.0)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(epoch1, epoch2)), "reshuffled each epoch"
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(both, batches(stream(paths, labels, seed=0)))), "seeded"
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(both, batches(stream(paths, labels, seed=1))))


def test_the_stream_is_the_same_however_often_and_however_far_it_is_read(cache):
    """Nothing it draws depends on reading: a second iterator, or one abandoned after a batch, changes nothing."""
    paths, labels = cache
    ds = stream(paths, labels, seed=3, augment=True)
    first = batches(ds)
    next(iter(ds))  # an iterator that reads one batch (and whatever tf.data prefetches) and is dropped
    tf.random.uniform(())  # other random draws in between
    again = batches(ds)
    assert len(first) == len(again) == 12
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))


def test_augmentation_flips_and_shifts_reproducibly():
    x = np.zeros((50, 8, 8, 1), np.uint8)
    x[:, 1, 1, 0] = 255  # a mark near the top left
    a = augmented(x, np.random.default_rng(0))
    b = augmented(x, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    cols = np.array([np.argwhere(s[..., 0])[0][1] for s in a])
    assert (cols >= 4).sum() > 10 and (cols < 4).sum() > 10, "about half flipped left-right"
    assert all(s.sum() == 255 for s in a), "nothing lost"


def test_predictions_come_back_in_patient_order(cache, tmp_path):
    paths, _ = cache
    model = build_model("cnn25d", img_size=8, series=["T1wCE"], depth=1)
    load = sample_loader(kind="slices", series=["T1wCE"], depth=1)
    missing = tmp_path / "missing.npz"
    probs = predict_patients(model, [paths[2], missing, paths[0]], load=load, batch_size=4)
    assert [len(p) for p in probs] == [3, 0, 1]
    alone = predict_patients(model, [paths[0]], load=load, batch_size=4)
    np.testing.assert_allclose(probs[2], alone[0], rtol=1e-5)
    assert predict_patients(model, [missing], load=load, batch_size=4)[0].size == 0


def test_a_patient_score_is_the_mean_of_its_sample_probabilities():
    probs = [np.array([0.9, 0.1, 0.5]), np.zeros(0), np.array([0.2, 0.4])]
    np.testing.assert_allclose(patient_scores(probs), [0.5, np.nan, 0.3])


def test_predicted_batches_run_across_patients_in_fixed_sizes(cache):
    paths, _ = cache
    load = sample_loader(kind="slices", series=["T1wCE"], depth=1)
    seen = []

    class Recorder:
        def predict_on_batch(self, x):
            seen.append(len(x))
            return np.stack([1 - x[:, 0, 0, 0] / 100.0, x[:, 0, 0, 0] / 100.0], axis=1).astype(np.float32)  # as Keras

    probs = predict_samples(Recorder(), (load(p) for p in paths), batch_size=4)
    assert seen == [4, 4, 4, 4, 4, 1]  # 21 slices
    assert all(p.dtype == np.float64 for p in probs) and predict_samples(Recorder(), [], batch_size=4) == []
    assert [len(p) for p in probs] == [1, 2, 3, 4, 5, 6]
    for i, p in enumerate(probs):  # patient i's slices hold 10 * i
        np.testing.assert_allclose(p, 0.1 * i)
