"""Benchmark: training throughput from the streamed cache against in-memory ``model.fit``.

    python benchmarks/train_input.py [--patients 1500] [--slices 20] [--img-size 32] [--repeats 3]

Writes a cache of synthetic patients in the preprocess stage's format, then trains the seed
CNN for a few epochs (a) from ``stages.data.patient_dataset`` (patients streamed from disk,
bounded shuffle buffer) and (b) from the same samples already in memory as NumPy arrays, and
prints samples/s of the epochs after the first (which includes tracing): the median of
``--repeats`` alternating runs of each, as this machine's speed drifts from minute to minute.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.cli import quiet_tensorflow  # noqa: E402

quiet_tensorflow()  # before TensorFlow is imported: its start-up notices are not figures

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from stages.data import patient_dataset, sample_loader  # noqa: E402
from stages.io import save_npz  # noqa: E402
from stages.models import seed_cnn  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def throughput(fit_data: dict, n_samples: int, epochs: int, seed: int) -> float:
    """Samples/s of a fresh seed CNN over the epochs after the first."""
    keras.utils.set_random_seed(seed)
    model = seed_cnn(img_size=fit_data.pop("img_size"))
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    timer = EpochTimer()
    model.fit(**fit_data, epochs=epochs, verbose=0, callbacks=[timer])
    return n_samples * (epochs - 1) / sum(timer.times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=1500)
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "train_cache")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(args.patients):
        path = args.work / f"{i:05d}.npz"
        if not path.exists():
            images = rng.integers(0, 256, size=(args.slices, args.img_size, args.img_size), dtype=np.uint8)
            save_npz(path, {"T1wCE": images, "T1wCE_z": np.arange(args.slices, dtype=np.float32)})
        paths.append(path)
        labels.append(i % 2)
    n = args.patients * args.slices
    load = sample_loader(kind="slices", series=["T1wCE"], depth=1)
    spec = tf.TensorSpec((args.img_size, args.img_size, 1), tf.uint8)
    ds = patient_dataset(
        paths, labels, load=load, spec=spec, n_samples=n, batch_size=args.batch, shuffle_buffer=4096, seed=0
    )
    x = np.concatenate([load(p) for p in paths])
    y = np.zeros((n, 2), np.float32)
    y[np.arange(n), np.repeat(labels, args.slices)] = 1.0
    runs: dict[str, list[float]] = {"streamed": [], "in_memory": []}
    for _ in range(args.repeats):
        runs["streamed"].append(throughput({"x": ds, "img_size": args.img_size}, n, args.epochs, 0))
        fit = {"x": x, "y": y, "batch_size": args.batch, "shuffle": True, "img_size": args.img_size}
        runs["in_memory"].append(throughput(fit, n, args.epochs, 0))
    streamed, in_memory = (float(np.median(runs[k])) for k in ("streamed", "in_memory"))
    print(
        f"{n} samples of {args.img_size}x{args.img_size}, batch {args.batch}, seed CNN, "
        f"{len(tf.config.list_physical_devices('CPU'))} CPU device(s)"
    )
    print(f"  streamed from cache : {streamed:9.0f} samples/s")
    print(f"  in-memory model.fit : {in_memory:9.0f} samples/s")
    print(f"  ratio               : {streamed / in_memory:.2f}x (medians of {args.repeats} alternating runs)")
    print("  all runs (samples/s): " + "; ".join(f"{k} " + " ".join(f"{v:.0f}" for v in r) for k, r in runs.items()))


if __name__ == "__main__":
    main()
