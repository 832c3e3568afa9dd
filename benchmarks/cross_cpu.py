"""Does training give the same bits on other x86-64 CPUs, and at what cost? Emulated, measured.

    python benchmarks/cross_cpu.py [--epochs 2] [--time-epochs 30] [--cpus Haswell-v4 EPYC-Rome ...]

Trains the first fold of the default configuration (``params.yaml``, the cache in ``data/cache``:
run ``dvc repro preprocess`` first) in a fresh process per setting and prints, for each, the
SHA-256 of the trained weights and whether it equals the reference run's (this machine, the
pipeline's portable numerics, see ``stages/numerics.py``).

Other CPUs are emulated with QEMU's user mode (Debian package ``qemu-user``): ``qemu-x86_64 -cpu
<model>`` runs the same Python and wheels while the program sees that model's CPUID (vendor,
instruction sets up to AVX2, cache sizes) and has its SSE/AVX arithmetic done by QEMU's IEEE
software floating point. What emulation cannot vary: AVX-512 (QEMU 7.2 cannot emulate it, so the
AVX-512 rows run natively only), the processor's own tables for approximate instructions (QEMU
computes ``rcpps``/``rsqrtps`` exactly, real Intel and AMD parts each approximate differently:
any kernel using them differs between QEMU and this machine as it would between two vendors),
and timing-dependent effects (none in a deterministic program). And QEMU 7.2 has bugs of its own:
NumPy's AVX2 sort (x86-simd-sort) returns wrong results under it (``np.unique`` of 0/1 labels
finds three classes), so emulated runs keep NumPy at its baseline loops, as the pipeline's
numerics do anyway. Emulated runs take about 20
times longer, so they train ``--epochs`` epochs; the timings come from native runs of
``--time-epochs`` epochs (the stage's 30 by default), median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PORTABLE = {"MGMT_NUMERICS": "portable"}
NATIVE = {"MGMT_NUMERICS": "native"}
# (label, environment, QEMU CPU model or None, extra worker flags)
HASH_SETTINGS = [
    ("portable numerics (the pipeline's default): the reference", PORTABLE, None, []),
    ("TensorFlow's default environment", NATIVE, None, []),
    ("defaults, ONEDNN_MAX_CPU_ISA=AVX512_CORE", {**NATIVE, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, None, []),
    ("defaults, ONEDNN_MAX_CPU_ISA=AVX2", {**NATIVE, "ONEDNN_MAX_CPU_ISA": "AVX2"}, None, []),
    ("defaults, ONEDNN_MAX_CPU_ISA=AVX", {**NATIVE, "ONEDNN_MAX_CPU_ISA": "AVX"}, None, []),
    ("defaults, ONEDNN_MAX_CPU_ISA=SSE41", {**NATIVE, "ONEDNN_MAX_CPU_ISA": "SSE41"}, None, []),
    ("defaults, 1 thread", {**NATIVE, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}, None, []),
    ("defaults, TF_ENABLE_ONEDNN_OPTS=0", {**NATIVE, "TF_ENABLE_ONEDNN_OPTS": "0"}, None, []),
    ("portable, 1 logical CPU (taskset)", PORTABLE, "taskset", []),
    ("portable, emulated Intel Haswell", PORTABLE, "Haswell-v4", []),
    ("portable, emulated Intel Broadwell", PORTABLE, "Broadwell-v4", []),
    ("portable, emulated Intel Cascade Lake (AVX-512 masked by QEMU)", PORTABLE, "Cascadelake-Server-v5", []),
    ("portable, emulated AMD EPYC Rome", PORTABLE, "EPYC-Rome", []),
    ("portable, emulated AMD EPYC Milan", PORTABLE, "EPYC-Milan", []),
    ("portable but Keras's BatchNormalization (rsqrt)", PORTABLE, None, ["--keras-batchnorm"]),
    ("portable but Keras's BatchNormalization, emulated Haswell", PORTABLE, "Haswell-v4", ["--keras-batchnorm"]),
    # NumPy at its baseline here too: QEMU 7.2 mis-emulates an AVX2 sort NumPy uses (np.unique goes wrong)
    (
        "defaults, emulated Haswell (TensorFlow turns oneDNN off: no AVX-512)",
        {**NATIVE, "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"},
        "Haswell-v4",
        [],
    ),
]
TIME_SETTINGS = [
    ("TensorFlow's defaults, Keras's BatchNormalization (before)", NATIVE, ["--keras-batchnorm"]),
    ("portable numerics", PORTABLE, []),
    ("TF_ENABLE_ONEDNN_OPTS=0", {**NATIVE, "TF_ENABLE_ONEDNN_OPTS": "0"}, []),
    ("ONEDNN_MAX_CPU_ISA=SSE41", {**NATIVE, "ONEDNN_MAX_CPU_ISA": "SSE41"}, []),
]


def train_first_fold(epochs: int, keras_batchnorm: bool) -> dict:
    """Train fold 0 of repeat 0 as the ``train`` stage would; the weights' digest and the seconds."""
    from stages.cli import quiet_tensorflow
    from stages.params import load_params, load_paths
    from stages.train import prepare

    quiet_tensorflow()
    import keras
    import numpy as np
    import tensorflow as tf

    from stages import layers, training
    from stages.cv import fold_data, splits
    from stages.data import sample_loader

    if keras_batchnorm:
        layers.BatchNorm = keras.layers.BatchNormalization
    tf.config.experimental.enable_op_determinism()
    params, paths = load_params(), load_paths()
    tp = params.train.model_copy(update={"epochs": epochs})
    cohort = prepare(params, paths)
    cv = params.cv
    split = next(
        splits(cohort.labels, cohort.ids, folds=cv.folds, seed=cv.seed, repeats=1, val_fraction=tp.val_fraction)
    )
    data = fold_data(split, files=cohort.files, labels=cohort.labels, samples=cohort.samples)
    load = sample_loader(kind=cohort.kind, series=params.model.series, depth=params.model.depth)
    start = time.perf_counter()
    result = training.fit_fold(
        data, load=load, mp=params.model, tp=tp, img_size=cohort.settings.img_size, seed=tp.seed, name="probe"
    )
    seconds = time.perf_counter() - start
    weights = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in result.model.get_weights())).hexdigest()
    return {"weights": weights[:16], "seconds": seconds, "val_auc": result.history[-1]["val_patient_auc"]}


def preprocess_from_scratch() -> dict:
    """Convert the default cohort (``data.raw_dir``) into a new cache with one worker; the seconds."""
    import tempfile

    from stages.inventory import scan
    from stages.params import load_params
    from stages.preprocess import run, settings_from_params

    params = load_params()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run(
            raw_dir=Path(params.data.raw_dir),
            cache_dir=Path(tmp) / "cache",
            inventory=scan(Path(params.data.raw_dir), state_db=Path(tmp) / "state.sqlite"),
            settings=settings_from_params(params.preprocess),
            exclude=params.preprocess.exclude,
            workers=1,
        )
        return {"weights": "-", "seconds": time.perf_counter() - start}


def run_worker(env: dict, machine: str | None, epochs: int, flags: list[str]) -> dict:
    """One setting in a fresh process (under QEMU or ``taskset`` when asked)."""
    cmd = [sys.executable, __file__, "--worker", "--epochs", str(epochs), *flags]
    if machine == "taskset":
        cmd = ["taskset", "-c", "0", *cmd]
    elif machine is not None:
        cmd = ["qemu-x86_64", "-cpu", machine, *cmd]
    full = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "TF_ENABLE_ONEDNN_OPTS")}
    proc = subprocess.run(cmd, cwd=ROOT, env={**full, **env}, capture_output=True, text=True)
    if proc.returncode:
        return {"weights": "failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:60], "seconds": float("nan")}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the hash comparison (default 2)")
    parser.add_argument("--time-epochs", type=int, default=30, help="epochs of the timed native runs (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting (median)")
    parser.add_argument("--skip-emulated", action="store_true", help="native rows only")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keras-batchnorm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preprocess", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(ROOT))
        print(
            json.dumps(
                preprocess_from_scratch() if args.preprocess else train_first_fold(args.epochs, args.keras_batchnorm)
            )
        )
        return
    if not args.skip_emulated and shutil.which("qemu-x86_64") is None:
        sys.exit("cross_cpu: qemu-x86_64 not found (apt-get install qemu-user), or use --skip-emulated")
    print(f"## Same bits? First fold, {args.epochs} epochs\n")
    print("| setting | machine | weights (SHA-256, first 16) | equal to the reference? | seconds |")
    print("| --- | --- | --- | --- | ---: |")
    reference = None
    for label, env, machine, flags in HASH_SETTINGS:
        if machine not in (None, "taskset") and args.skip_emulated:
            continue
        r = run_worker(env, machine, args.epochs, flags)
        reference = reference or r["weights"]
        same = "-" if label.endswith("reference") else ("yes" if r["weights"] == reference else "no")
        where = "this CPU" if machine is None else ("this CPU, 1 core" if machine == "taskset" else f"QEMU {machine}")
        print(f"| {label} | {where} | `{r['weights']}` | {same} | {r['seconds']:.1f} |", flush=True)
    if args.time_epochs:
        print(f"\n## Training time: first fold, {args.time_epochs} epochs, median of {args.repeats}\n")
        print("| setting | seconds | vs before |")
        print("| --- | ---: | ---: |")
        times: dict[str, list[float]] = {label: [] for label, _, _ in TIME_SETTINGS}
        for _ in range(args.repeats):  # interleaved, so drift in the machine's speed hits every row alike
            for label, env, flags in TIME_SETTINGS:
                times[label].append(run_worker(env, None, args.time_epochs, flags)["seconds"])
        base = statistics.median(times[TIME_SETTINGS[0][0]])
        for label, _, _ in TIME_SETTINGS:
            t = statistics.median(times[label])
            print(f"| {label} | {t:.1f} | {t / base:.2f}x |")
        print(f"\n## Preprocessing from scratch: the default cohort, 1 worker, median of {args.repeats}\n")
        print("| numerics | seconds | vs native |")
        print("| --- | ---: | ---: |")
        pre: dict[str, list[float]] = {"native": [], "portable": []}
        for _ in range(args.repeats):
            for mode, env in (("native", NATIVE), ("portable", PORTABLE)):
                pre[mode].append(run_worker(env, None, 0, ["--preprocess"])["seconds"])
        for mode in pre:
            t = statistics.median(pre[mode])
            print(f"| {mode} | {t:.2f} | {t / statistics.median(pre['native']):.2f}x |")


if __name__ == "__main__":
    main()
