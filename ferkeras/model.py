"""The reference CNN as a Keras Sequential model, preprocessing included.

The model takes raw 0-255 gray pixels, (48, 48, 1), and does its own scaling and gray to
3-channel replication, so SavedModel and TFLite callers need no normalisation of their own.
Those two layers have no parameters: with 3 channels the count is the reference's 322,039.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from ferkeras.errors import FerkerasError, first_line

IMAGE_SHAPE = (48, 48, 1)
NUM_CLASSES = 7
BLOCK_FILTERS = (24, 48, 96, 96)  # the reference's four conv blocks
DENSE_UNITS = (192, 96)


@keras.saving.register_keras_serializable(package="ferkeras")
class GrayToRGB(layers.Layer):
    """Replicate a 1-channel image to 3 channels, as the reference fed gray faces to RGB convs."""

    def call(self, inputs):
        return keras.ops.repeat(inputs, 3, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


def build_model(channels: int = 3) -> keras.Sequential:
    """Build the reference architecture: 4 x (Conv3x3-BN-ReLU-MaxPool), Dense 192-96-7 softmax."""
    if channels not in (1, 3):
        raise FerkerasError(f"channels must be 1 or 3, got {channels}")
    model = keras.Sequential(name="ferkeras_cnn")
    model.add(keras.Input(IMAGE_SHAPE, name="gray_0_255"))
    model.add(layers.Rescaling(1.0 / 255, name="rescale"))
    if channels == 3:
        model.add(GrayToRGB(name="gray_to_rgb"))
    for i, filters in enumerate(BLOCK_FILTERS, start=1):
        model.add(layers.Conv2D(filters, 3, padding="same", name=f"conv{i}"))
        # PyTorch's BatchNorm2d defaults (momentum 0.1 there is 0.9 here), as in the reference;
        # Keras' 0.99 lags for hundreds of steps, so short runs validate with stale statistics.
        model.add(layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"bn{i}"))
        model.add(layers.ReLU(name=f"relu{i}"))
        model.add(layers.MaxPooling2D(2, name=f"pool{i}"))
    model.add(layers.Flatten(name="flatten"))
    for i, units in enumerate(DENSE_UNITS, start=1):
        model.add(layers.Dense(units, activation="relu", name=f"fc{i}"))
    # Softmax as the last layer's activation: tf-keras-vis' ReplaceToLinear and TFLite want it.
    model.add(layers.Dense(NUM_CLASSES, activation="softmax", name="predictions"))
    return model


def count_params(model: keras.Model) -> tuple[int, int]:
    """Return (total, non-trainable) parameter counts."""
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    non_trainable = sum(int(w.numpy().size) for w in model.non_trainable_weights)
    return trainable + non_trainable, non_trainable


def load_model(path: str | os.PathLike) -> keras.Model:
    """Load a .keras model safely (no arbitrary code) and check it takes 48x48 gray faces."""
    path = str(path)
    if not os.path.exists(path):
        raise FerkerasError(f"{path}: no such model file")
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as e:  # Keras raises many types for a bad file; the user needs one line
        raise FerkerasError(f"{path}: not a loadable Keras model ({first_line(e)})") from None
    shape = tuple(model.input_shape[1:])
    if shape[:2] != IMAGE_SHAPE[:2]:
        raise FerkerasError(f"{path}: model input is {shape}, expected 48x48 images")
    return model
