"""Model inputs from the preprocessed cache, streamed patient by patient (imports TensorFlow)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
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
    augment: bool = False,
) -> tf.data.Dataset:
    """Shuffled training batches ``(uint8 samples, one-hot labels)`` streamed from the cache.

    Patients are read one at a time in a seeded order that changes each epoch, and slices are
    mixed in a bounded shuffle buffer, so memory does not grow with the cohort. With ``augment``
    each sample is flipped left-right with probability 1/2 and shifted by up to two pixels.
    """
    rng = np.random.default_rng(seed)

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in rng.permutation(len(paths)):
            x = load(paths[i])
            if augment:
                x = augmented(x, rng)
            if len(x):
                y = np.zeros((len(x), 2), np.float32)
                y[:, labels[i]] = 1.0
                yield x, y

    signature = (
        tf.TensorSpec((None, *spec.shape), tf.uint8),
        tf.TensorSpec((None, 2), tf.float32),
    )
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature).unbatch()
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    # a generator's length is unknown to Keras; declaring it keeps epochs well defined
    return ds.apply(tf.data.experimental.assert_cardinality(-(-n_samples // batch_size))).prefetch(tf.data.AUTOTUNE)


def predict_patients(
    model: tf.keras.Model, paths: list[Path], *, load: SampleFn, batch_size: int = 64
) -> list[np.ndarray]:
    """Positive-class probability of every sample, one array per patient (empty: no samples).

    One streamed ``predict`` call over all patients keeps memory bounded and avoids retracing.
    """
    counts: list[int] = []

    def generate() -> Iterator[np.ndarray]:
        counts.clear()
        for path in paths:
            x = load(path) if path.exists() else np.zeros((0,), np.uint8)
            counts.append(len(x))
            if len(x):
                yield x

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.uint8)
    ds = tf.data.Dataset.from_generator(generate, output_signature=spec).unbatch().batch(batch_size)
    if next(iter(ds.take(1)), None) is None:  # Keras cannot predict on an empty dataset
        return [np.zeros(0) for _ in paths]
    with warnings.catch_warnings():  # the stream's length is unknown until it ends, as expected here
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        probs = model.predict(ds, verbose=0)[:, 1].astype(np.float64)
    return np.split(probs, np.cumsum(counts)[:-1])
