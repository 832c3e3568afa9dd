"""The model zoo, chosen by ``model.name``: each model registered once, with the input it eats.

==========  ===========  =======================================================================
name        input kind   what it is
==========  ===========  =======================================================================
seed_cnn    slices       the seed notebook's 2D CNN on single slices (182,466 parameters at 32x32)
mil_cnn     volume       a multiple-instance 2D CNN: each of ``depth`` slices is encoded
                         (batch-normalised convolutions, global max and mean pooling), the
                         encodings are pooled over the patient's slices; trained per patient
                         (the recommended model)
cnn25d      stack        a 2D CNN whose channels are the co-registered slices of several series
cnn3d       volume       a small 3D CNN over ``depth`` slices
resnet3d    volume       a 3D ResNet in the ResNet-10 layout of the 1st-place solution (MONAI's
                         ``resnet10``); ``width`` 64 is its size (14.4M parameters), 16 runs on a CPU
==========  ===========  =======================================================================

A new model is one decorated builder here: ``@register("name", kind=...)``; the parameter schema,
the training stage and sample counting take its name and kind from :data:`MODELS`. Importing this
module loads no TensorFlow (``--help`` and parameter checks stay fast); building a model does.
Input kinds (``stages/data.py`` makes the samples): ``slices``, one sample per slice of each
listed series; ``stack``, one per slice of the first series with the nearest slice of every
series as channels; ``volume``, one per patient, ``depth`` slices of every series.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import keras

InputKind = Literal["slices", "stack", "volume"]


@dataclass(frozen=True)
class ModelSpec:
    """A model of the zoo: its name, the input it eats and its builder."""

    name: str
    kind: InputKind
    build: Callable[..., keras.Model]  # keyword-only: img_size, channels, depth, width


MODELS: dict[str, ModelSpec] = {}


def register(name: str, *, kind: InputKind) -> Callable:
    """Add the decorated builder to :data:`MODELS` under ``name``."""

    def add(build: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        MODELS[name] = ModelSpec(name, kind, build)
        return build

    return add


def build_model(
    name: str, *, img_size: int, series: list[str] | tuple[str, ...], depth: int, width: int = 16
) -> keras.Model:
    """Instantiate ``name`` for the given input size and series."""
    if name not in MODELS:
        raise ValueError(f"unknown model.name {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name].build(img_size=img_size, channels=len(series), depth=depth, width=width)


@register("seed_cnn", kind="slices")
def seed_cnn(*, img_size: int, channels: int = 1, depth: int = 1, width: int = 0) -> keras.Model:
    """The seed notebook's 2D CNN (182,466 parameters at 32x32x1); one channel whatever the series."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((img_size, img_size, 1)),
            layers.Rescaling(1.0 / 255),
            layers.Conv2D(64, 4, activation="relu", name="Conv_1"),
            layers.MaxPooling2D(2),
            layers.Conv2D(32, 2, activation="relu", name="Conv_2"),
            layers.MaxPooling2D(1),
            layers.Dropout(0.1),
            layers.Flatten(),
            layers.Dense(32, activation="relu"),
            layers.Dense(2, activation="softmax"),
        ],
        name="seed_cnn",
    )


@register("mil_cnn", kind="volume")
def mil_cnn(*, img_size: int, channels: int, depth: int, width: int) -> keras.Model:
    """Multiple-instance CNN: the same 2D encoder on each of ``depth`` slices, pooled over the slices.

    The encoder (three batch-normalised 3x3 convolution blocks) is written as 3D layers with
    kernels of depth 1, which is exactly a shared 2D network per slice and traces far faster than
    wrapping a 2D model. Each slice is summarised by global max pooling (the strongest local
    response, e.g. the brightest enhancing rim) and mean pooling (how much responds, e.g. the
    extent of a necrotic core); the patient by the max and mean of its slices' summaries.
    """
    import keras
    from keras import layers

    from stages.layers import BatchNorm

    inp = keras.Input((depth, img_size, img_size, channels))
    x = layers.Rescaling(1.0 / 255)(inp)
    for k, mult in enumerate((1, 2, 4)):
        x = layers.Conv3D(width * mult, (1, 3, 3), padding="same", use_bias=False, name=f"block{k + 1}_conv")(x)
        x = BatchNorm(name=f"block{k + 1}_bn")(x)
        x = layers.ReLU(name=f"block{k + 1}_relu")(x)
        if k < 2:
            x = layers.MaxPooling3D((1, 2, 2), name=f"block{k + 1}_pool")(x)
    side = x.shape[2], x.shape[3]
    features = 4 * width
    per_slice_max = layers.Reshape((depth, features))(layers.MaxPooling3D((1, *side))(x))
    per_slice_mean = layers.Reshape((depth, features))(layers.AveragePooling3D((1, *side))(x))
    per_slice = layers.Concatenate(name="per_slice")([per_slice_max, per_slice_mean])
    x = layers.Concatenate(name="per_patient")(
        [layers.GlobalMaxPooling1D()(per_slice), layers.GlobalAveragePooling1D()(per_slice)]
    )
    x = layers.Dropout(0.3)(x)
    out = layers.Dense(2, activation="softmax")(x)
    return keras.Model(inp, out, name="mil_cnn")


@register("cnn25d", kind="stack")
def cnn25d(*, img_size: int, channels: int, depth: int = 1, width: int = 0) -> keras.Model:
    """A 2.5D CNN: co-registered slices of several series stacked as channels."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((img_size, img_size, channels)),
            layers.Rescaling(1.0 / 255),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dropout(0.3),
            layers.Dense(2, activation="softmax"),
        ],
        name="cnn25d",
    )


@register("cnn3d", kind="volume")
def cnn3d(*, img_size: int, channels: int, depth: int, width: int = 0) -> keras.Model:
    """A small 3D CNN over a fixed-depth volume of each patient."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((depth, img_size, img_size, channels)),
            layers.Rescaling(1.0 / 255),
            layers.Conv3D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling3D((1, 2, 2)),
            layers.Conv3D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling3D(2),
            layers.Conv3D(64, 3, padding="same", activation="relu"),
            layers.GlobalAveragePooling3D(),
            layers.Dropout(0.3),
            layers.Dense(2, activation="softmax"),
        ],
        name="cnn3d",
    )


def _basic_block(x: keras.KerasTensor, filters: int, *, stride: int, name: str) -> keras.KerasTensor:
    """ResNet basic block: two 3x3x3 convolutions with batch norm, and a projected shortcut."""
    from keras import layers

    from stages.layers import BatchNorm

    shortcut = x
    y = layers.Conv3D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = BatchNorm(name=f"{name}_bn1")(y)
    y = layers.ReLU()(y)
    y = layers.Conv3D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = BatchNorm(name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv3D(filters, 1, strides=stride, use_bias=False, name=f"{name}_down")(x)
        shortcut = BatchNorm(name=f"{name}_down_bn")(shortcut)
    return layers.ReLU()(layers.Add()([y, shortcut]))


@register("resnet3d", kind="volume")
def resnet3d(*, img_size: int, channels: int, depth: int, width: int) -> keras.Model:
    """3D ResNet-10: a 7x7x7 stem, max pooling, one basic block per stage at widths w, 2w, 4w, 8w."""
    import keras
    from keras import layers

    from stages.layers import BatchNorm

    inp = keras.Input((depth, img_size, img_size, channels))
    x = layers.Rescaling(1.0 / 255)(inp)
    x = layers.Conv3D(width, 7, strides=(1, 2, 2), padding="same", use_bias=False, name="stem_conv")(x)
    x = BatchNorm(name="stem_bn")(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling3D(3, strides=2, padding="same")(x)
    for k, mult in enumerate((1, 2, 4, 8)):
        x = _basic_block(x, width * mult, stride=1 if k == 0 else 2, name=f"layer{k + 1}")
    x = layers.GlobalAveragePooling3D()(x)
    out = layers.Dense(2, activation="softmax")(x)
    return keras.Model(inp, out, name="resnet3d")
