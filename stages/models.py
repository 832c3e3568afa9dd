"""The model zoo, chosen by ``model.name``; every model ends in a 2-way softmax."""

from __future__ import annotations

import keras
from keras import layers

# what each model eats: single-series slices, co-registered multi-series slices, or volumes
INPUT_KIND = {"seed_cnn": "slices", "cnn25d": "stack", "cnn3d": "volume"}


def seed_cnn(*, img_size: int, channels: int = 1) -> keras.Model:
    """The seed notebook's 2D CNN (182,466 parameters at 32x32x1)."""
    return keras.Sequential(
        [
            keras.Input((img_size, img_size, channels)),
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


def cnn25d(*, img_size: int, channels: int) -> keras.Model:
    """A 2.5D CNN: co-registered slices of several series stacked as channels."""
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


def cnn3d(*, img_size: int, channels: int, depth: int) -> keras.Model:
    """A small 3D CNN over a fixed-depth volume of each patient."""
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


def build_model(name: str, *, img_size: int, series: list[str], depth: int) -> keras.Model:
    """Instantiate ``name`` for the given input size and series."""
    if name == "seed_cnn":
        return seed_cnn(img_size=img_size)
    if name == "cnn25d":
        return cnn25d(img_size=img_size, channels=len(series))
    if name == "cnn3d":
        return cnn3d(img_size=img_size, channels=len(series), depth=depth)
    raise ValueError(f"unknown model.name {name!r}; choose one of {', '.join(INPUT_KIND)}")
