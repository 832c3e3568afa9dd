"""The same bits on every x86-64 CPU: the pinned numerical environment, exact batch normalisation,
and (slow) a training run compared bit for bit with one on an emulated Intel CPU."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from stages.numerics import PORTABLE, SWITCH
from tests.conftest import ROOT, run_stage, write_config

# TensorFlow kernels that take the processor's approximate reciprocal (square root) instruction,
# whose last bits differ between Intel and AMD
APPROXIMATE_OPS = {"Rsqrt", "RsqrtGrad", "Reciprocal", "ReciprocalGrad", "Inv", "InvGrad"}
QEMU = shutil.which("qemu-x86_64")


def in_child(code: str, **env: str) -> str:
    """Run ``code`` in a fresh Python that imports the package, with none of the pins inherited."""
    clean = {k: v for k, v in os.environ.items() if k not in PORTABLE and k != SWITCH}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip().splitlines()[-1]


def test_importing_the_package_pins_the_environment_over_other_values():
    code = f"import json, os, stages; print(json.dumps({{k: os.environ.get(k) for k in {sorted(PORTABLE)!r}}}))"
    assert json.loads(in_child(code, ONEDNN_MAX_CPU_ISA="AVX512_CORE_AMX")) == PORTABLE
    native = json.loads(in_child(code, MGMT_NUMERICS="native", ONEDNN_MAX_CPU_ISA="AVX512_CORE_AMX"))
    assert native["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE_AMX" and native["TF_NUM_INTRAOP_THREADS"] is None


def test_numpy_runs_its_baseline_loops_only():
    """NumPy's AVX2 and AVX-512 loops of exp, log, power and tanh round differently from its baseline."""
    code = (
        "import json, stages, numpy._core._multiarray_umath as m; "
        "print(json.dumps({k: m.__cpu_features__[k] for k in m.__cpu_dispatch__}))"
    )
    enabled = json.loads(in_child(code))
    assert enabled and [k for k, on in enabled.items() if on] == []


def test_tensorflow_runs_onednn_avx2_kernels_on_two_threads():
    code = (
        "import stages, tensorflow as tf; "
        "tf.nn.conv2d(tf.ones((1, 8, 8, 1)), tf.ones((3, 3, 1, 2)), 1, 'SAME'); print('done')"
    )
    clean = {k: v for k, v in os.environ.items() if k not in PORTABLE and k != SWITCH}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**clean, "ONEDNN_VERBOSE": "1"}, capture_output=True, text=True
    )
    assert "isa:Intel AVX2" in proc.stdout and "nthr:2" in proc.stdout, proc.stdout[-2000:]
    assert "exec,cpu,convolution" in proc.stdout, "oneDNN ran the convolution (TensorFlow's own kernels differ)"


def op_types(graph) -> set[str]:
    found = {op.type for op in graph.get_operations()}
    for function in graph._functions.values():  # while loops and other nested functions
        found |= {node.op for node in function.definition.node_def}
    return found


def optimised_op_types(concrete) -> set[str]:
    """The ops left after TensorFlow's graph optimiser (Grappler, default settings), which rewrites
    the graph before it runs: x / sqrt(y) becomes x * rsqrt(y) where the root has no other use."""
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.grappler import tf_optimizer

    meta = tf.compat.v1.train.export_meta_graph(graph_def=concrete.graph.as_graph_def(), graph=concrete.graph)
    meta.collection_def["train_op"].node_list.value.extend(t.op.name for t in concrete.outputs)
    graph = tf_optimizer.OptimizeGraph(config_pb2.ConfigProto(), meta)
    return {node.op for node in graph.node} | {n.op for f in graph.library.function for n in f.node_def}


@pytest.mark.parametrize("name", ["mil_cnn", "seed_cnn", "cnn25d", "cnn3d", "resnet3d"])
def test_no_training_or_inference_op_uses_an_approximate_instruction(name):
    import tensorflow as tf

    from stages.models import build_model
    from stages.params import load_params
    from stages.training import compile_model

    model = build_model(name, img_size=16, series=["T1wCE"], depth=4, width=4)
    compile_model(model, load_params(ROOT / "params.yaml").train)
    model.optimizer.build(model.trainable_variables)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
        model.optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return model(x, training=False)

    spec = tf.TensorSpec((2, *model.input_shape[1:]), tf.uint8)
    concrete = step.get_concrete_function(spec, tf.TensorSpec((2, 2), tf.float32))
    used = op_types(concrete.graph)
    assert {"MatMul", "Sqrt"} <= used | {"Sqrt"} and "MatMul" in used, "the scan sees the model's ops"
    assert not used & APPROXIMATE_OPS
    inference = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    for optimised in (optimised_op_types(concrete), optimised_op_types(inference)):  # as they run
        assert "MatMul" in optimised and not optimised & APPROXIMATE_OPS


def test_batchnorm_in_a_compiled_prediction_is_ieee_arithmetic_bit_for_bit():
    """Inference through Keras's compiled predict function (graph optimiser on) against NumPy's
    float32 square root, division, multiplication and addition: the same bits on every CPU."""
    import keras

    from stages.layers import BatchNorm

    rng = np.random.default_rng(3)
    channels = 512
    x = (rng.standard_normal((64, channels)) * 3).astype(np.float32)
    gamma, beta, mean = (rng.standard_normal(channels).astype(np.float32) for _ in range(3))
    variance = rng.uniform(0.01, 5.0, channels).astype(np.float32)
    layer = BatchNorm()
    model = keras.Sequential([keras.Input((channels,)), layer])
    layer.set_weights([gamma, beta, mean, variance])
    scale = gamma / np.sqrt(variance + np.float32(layer.epsilon))
    expected = x * scale + (beta - mean * scale)
    assert np.array_equal(model.predict_on_batch(x), expected)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_agrees_with_keras_batch_normalization(training):
    """The reference path: Keras's own layer, equal up to the last bits of one square root."""
    import keras

    from stages.layers import BatchNorm

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 3, 5, 5, 6)) * 3 + 1).astype(np.float32)
    ours, theirs = BatchNorm(), keras.layers.BatchNormalization()
    for layer in (ours, theirs):
        layer.build(x.shape)
        layer.set_weights([np.linspace(0.5, 2, 6), np.linspace(-1, 1, 6), np.full(6, 0.3), np.full(6, 2.0)])
    a, b = np.asarray(ours(x, training=training)), np.asarray(theirs(x, training=training))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for w_ours, w_theirs in zip(ours.get_weights(), theirs.get_weights()):  # moving statistics alike
        np.testing.assert_allclose(w_ours, w_theirs, rtol=1e-6)
    if training:
        assert not np.allclose(ours.get_weights()[2], 0.3), "training updates the moving mean"


def digest_tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
@pytest.mark.skipif(QEMU is None and not os.environ.get("CI"), reason="needs qemu-x86_64 (Debian: qemu-user)")
def test_training_gives_the_same_bits_on_an_emulated_intel_cpu(training_run, tmp_path):
    """The train stage (mil_cnn, batch normalisation, calibration) natively and under QEMU's Intel
    Haswell: another vendor, no AVX-512, other cache sizes, exact approximate instructions."""
    assert QEMU is not None, "CI installs qemu-user (.ci/run)"
    folder, _ = training_run
    outputs = {}
    for machine in ("native", "Haswell-v4"):
        env = write_config(
            tmp_path / machine,
            raw_dir=Path(yaml.safe_load((folder / "params.yaml").read_text())["data"]["raw_dir"]),
            model={"name": "mil_cnn", "series": ["T1wCE"], "depth": 4, "width": 4},
            train={"epochs": 1, "batch_size": 4},
            cv={"folds": 2},
        )
        shutil.copytree(folder / "data/cache", tmp_path / machine / "data/cache")
        shutil.copy(folder / "data/patients.csv", tmp_path / machine / "data/patients.csv")
        if machine == "native":
            proc = run_stage("train", env)
        else:
            proc = subprocess.run(
                [QEMU, "-cpu", machine, sys.executable, "-m", "stages.train"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs[machine] = {
            name: digest_tree(tmp_path / machine / name) for name in ("models", "predictions", "training")
        }
    assert outputs["Haswell-v4"] == outputs["native"]
