"""The model zoo: the seed's architecture exactly, every model's input and output, the 3D ResNet-10."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from stages.models import MODELS, build_model, seed_cnn
from tests.conftest import ROOT


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
    assert [layer.get_config().get("kernel_size") for layer in model.layers if type(layer).__name__ == "Conv2D"] == [
        (4, 4),
        (2, 2),
    ]
    assert model.output_shape == (None, 2)


SHAPES = {"slices": (4, 24, 24, 1), "stack": (4, 24, 24, 3), "volume": (2, 6, 24, 24, 3)}


@pytest.mark.parametrize("name", [n for n in MODELS if n != "seed_cnn"])
def test_every_model_takes_its_input_kind_and_ends_in_a_softmax(name):
    model = build_model(name, img_size=24, series=["FLAIR", "T1wCE", "T2w"], depth=6, width=8)
    out = model.predict(np.zeros(SHAPES[MODELS[name].kind], np.uint8), verbose=0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError):
        build_model("resnet999", img_size=24, series=["T1wCE"], depth=6)


def test_resnet3d_has_the_resnet10_layout_and_size():
    model = build_model("resnet3d", img_size=32, series=["T1wCE"], depth=8, width=64)
    assert model.count_params() == 14_362_306  # MONAI's resnet10 with one input channel and two classes
    blocks = [layer.name for layer in model.layers if layer.name.endswith("_conv1")]
    assert blocks == ["layer1_conv1", "layer2_conv1", "layer3_conv1", "layer4_conv1"]
    small = build_model("resnet3d", img_size=32, series=["T1wCE"], depth=8, width=16)
    assert small.count_params() < 1_000_000


def test_mil_cnn_scores_a_patient_the_same_whatever_the_order_of_its_slices():
    model = build_model("mil_cnn", img_size=16, series=["T1wCE"], depth=6, width=4)
    x = np.random.default_rng(0).integers(0, 255, (1, 6, 16, 16, 1)).astype(np.uint8)
    np.testing.assert_allclose(model.predict(x, verbose=0), model.predict(x[:, ::-1], verbose=0), rtol=1e-5)


def in_child(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_a_registered_model_is_a_valid_model_name_with_its_kind():
    """Adding a model is one decorated builder: the schema and the training stage take it from there."""
    in_child(
        "from stages.models import MODELS, register\n"
        "register('tiny', kind='stack')(MODELS['cnn25d'].build)\n"
        "from stages.params import ModelParams\n"
        "tiny = {'name': 'tiny', 'series': ['T1wCE'], 'depth': 4, 'width': 8}\n"
        "assert ModelParams.model_validate(tiny).name == 'tiny'\n"
        "assert MODELS['tiny'].kind == 'stack'\n"
    )


def test_importing_the_zoo_loads_no_tensorflow():
    in_child("import sys, stages.models, stages.params; assert not {'keras', 'tensorflow'} & set(sys.modules)")
