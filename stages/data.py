"""Model inputs from the preprocessed cache, streamed patient by patient (imports TensorFlow)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf

SampleFn = Callable[[Path], np.ndarray]


def samples_from_arrays(
    arrays: dict[str, np.ndarray], *, kind: str, series: list[str] | tuple[str, ...], depth: int
) -> np.ndarray:
    """Model samples of one patient as uint8, with a trailing channel axis.

    ``slices``: every slice of every listed series, ``(n, S, S, 1)``;
    ``stack``: for each slice of the first series, the nearest-in-position slice of each series
    as channels, ``(n, S, S, C)`` (empty if a series is missing);
    ``volume``: each series resampled to ``depth`` slices, ``(1, depth, S, S, C)``.
    """
    stacks = [arrays[name] for name in series]
    size = stacks[0].shape[-1]
    if kind == "slices":
        return np.concatenate(stacks)[..., None]
    if any(len(s) == 0 for s in stacks):
        empty = (0, depth, size, size, len(series)) if kind == "volume" else (0, size, size, len(series))
        return np.zeros(empty, np.uint8)
    if kind == "stack":
        ref_z = arrays[f"{series[0]}_z"]
        channels = [
            s[np.abs(arrays[f"{name}_z"][None, :] - ref_z[:, None]).argmin(axis=1)] for name, s in zip(series, stacks)
        ]
        return np.stack(channels, axis=-1)
    if kind == "volume":
        picked = [s[np.round(np.linspace(0, len(s) - 1, depth)).astype(int)] for s in stacks]
        return np.stack(picked, axis=-1)[None]
    raise ValueError(f"unknown input kind {kind!r}")


def sample_loader(*, kind: str, series: list[str] | tuple[str, ...], depth: int) -> SampleFn:
    """A function reading one patient's ``.npz`` into model samples."""

    def load(path: Path) -> np.ndarray:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files if k.removesuffix("_z") in series}
        return samples_from_arrays(arrays, kind=kind, series=series, depth=depth)

    return load


def augmented(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Samples ``(..., rows, cols, channels)`` each flipped left-right (p = 1/2) and rolled by up to 2 pixels."""
    out = np.empty_like(x)
    for k, sample in enumerate(x):
        if rng.random() < 0.5:
            sample = sample[..., ::-1, :]
        shift = rng.integers(-2, 3, size=2)
        out[k] = np.roll(sample, (int(shift[0]), int(shift[1])), axis=(-3, -2))
    return out


def patient_dataset(
    paths: list[Path],
    labels: list[int],
    *,
    load: SampleFn,
    spec: tf.TensorSpec,
    n_samples: int,
    batch_size: int,
    shuffle_buffer: int,
    seed: int,
    epochs: int,
    augment: bool = False,
) -> tf.data.Dataset:
    """Shuffled training batches ``(uint8 samples, one-hot labels)`` of every epoch, streamed from the cache.

    Each epoch reads the patients one at a time in its own seeded order, mixes their slices in a
    bounded shuffle buffer (memory does not grow with the cohort) and batches them; with
    ``augment`` each sample is flipped left-right with probability 1/2 and shifted by up to two
    pixels. Every random choice is drawn here, up front, from ``seed``: nothing depends on how
    many iterators are made or how far tf.data reads ahead, which varies with the machine's speed.
    Train with ``steps_per_epoch`` (one iterator for all epochs).
    """
    rng = np.random.default_rng(seed)
    orders = tf.constant(np.stack([rng.permutation(len(paths)) for _ in range(epochs)]), tf.int64)
    keys = tf.constant(rng.integers(0, 2**63 - 1, size=(epochs, len(paths))), tf.int64)  # augmentation
    mix_seeds = tf.constant(rng.integers(0, 2**31 - 1, size=epochs), tf.int64)

    def load_one(index: np.int64, key: np.int64) -> tuple[np.ndarray, np.ndarray]:
        x = load(paths[int(index)])
        if augment:
            x = augmented(x, np.random.default_rng(int(key)))
        y = np.zeros((len(x), 2), np.float32)
        y[:, labels[int(index)]] = 1.0
        return x, y

    def read(index: tf.Tensor, key: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = tf.numpy_function(load_one, [index, key], (tf.uint8, tf.float32), stateful=False)
        return tf.ensure_shape(x, (None, *spec.shape)), tf.ensure_shape(y, (None, 2))

    def epoch(e: tf.Tensor) -> tf.data.Dataset:
        patients = tf.data.Dataset.from_tensor_slices((orders[e], keys[e])).map(read).unbatch()
        return patients.shuffle(shuffle_buffer, seed=mix_seeds[e], reshuffle_each_iteration=False).batch(batch_size)

    ds = tf.data.Dataset.range(epochs).flat_map(epoch)
    # the stream's length is unknown to Keras; declaring it keeps epochs well defined
    steps = epochs * steps_per_epoch(n_samples, batch_size)
    return ds.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    """Batches in one pass over ``n_samples`` samples (the last one may be short)."""
    return -(-n_samples // batch_size)


def predict_samples(model: tf.keras.Model, samples: Iterable[np.ndarray], *, batch_size: int) -> list[np.ndarray]:
    """Positive-class probability of each patient's samples (one array per patient, empty for none).

    Samples are predicted in consecutive batches of ``batch_size`` across patients as they come,
    so ``samples`` may be a generator that reads patients one at a time (memory stays bounded).
    """
    counts: list[int] = []
    queue: list[np.ndarray] = []
    out: list[np.ndarray] = []
    for x in samples:
        counts.append(len(x))
        queue += [x] if len(x) else []
        while sum(map(len, queue)) >= batch_size:
            stacked = np.concatenate(queue)
            out.append(model.predict_on_batch(stacked[:batch_size])[:, 1])
            queue = [stacked[batch_size:]]
    if sum(map(len, queue)):
        out.append(model.predict_on_batch(np.concatenate(queue))[:, 1])
    probs = np.concatenate(out).astype(np.float64) if out else np.zeros(0)
    return np.split(probs, np.cumsum(counts)[:-1]) if counts else []


def patient_scores(probs: list[np.ndarray]) -> np.ndarray:
    """A patient's raw score: the mean of its samples' probabilities (NaN for a patient without)."""
    return np.array([p.mean() if len(p) else np.nan for p in probs], dtype=np.float64)


def predict_patients(
    model: tf.keras.Model, paths: list[Path], *, load: SampleFn, batch_size: int = 64
) -> list[np.ndarray]:
    """:func:`predict_samples` of cached patients, read one at a time (a missing entry: no samples)."""
    empty = np.zeros((0,), np.uint8)
    return predict_samples(model, (load(p) if p.exists() else empty for p in paths), batch_size=batch_size)
