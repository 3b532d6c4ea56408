"""The reference CNN as a Keras Sequential model, preprocessing included.

The model takes raw 0-255 gray pixels, (48, 48, 1), and does its own scaling and gray to
3-channel replication, so SavedModel and TFLite callers need no normalisation of their own.
Those two layers have no parameters: with 3 channels the count is the reference's 322,039.
"""

from __future__ import annotations

import os
import zipfile

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from ferkeras.config import ARCHITECTURES
from ferkeras.errors import FerkerasError, first_line
from ferkeras.fileio import atomic_path
from ferkeras.spec import IMAGE_SHAPE, IMAGE_SIZE, NUM_CLASSES

BLOCK_FILTERS = (24, 48, 96, 96)  # the reference's four conv blocks
DENSE_UNITS = (192, 96)
# The large network: Khaireddin & Chen (2021), "Facial Emotion Recognition: State of the Art
# Performance on FER2013" (arXiv:2105.03588), a VGG variant of four stages of two 3x3 conv
# layers, each with batch norm, then max pooling, and two dense layers with dropout; 73.28% on
# FER2013's test set at (64, 128, 256, 512) and 1,024 units. Here at half the width, so that it
# trains on a 2-core CPU in hours: about 28x the reference's multiply-adds at full width, 7x here.
LARGE_STAGE_FILTERS = (32, 64, 128, 256)
LARGE_DENSE_UNITS = (512, 512)
LARGE_DROPOUT = 0.5


@keras.saving.register_keras_serializable(package="ferkeras")
class GrayToRGB(layers.Layer):
    """Replicate a 1-channel image to 3 channels, as the reference fed gray faces to RGB convs."""

    def call(self, inputs):
        # Three copies side by side rather than keras.ops.repeat: repeat is a Tile, whose
        # gradient (saliency maps take one) makes oneDNN log an "E" line on CPUs, and whose
        # TFLite graph takes five more ops (23 against 18 in the int8 file).
        return keras.ops.concatenate([inputs, inputs, inputs], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


@keras.saving.register_keras_serializable(package="ferkeras")
class LogitAdjustedCrossentropy(keras.losses.Loss):
    """Cross-entropy of softmax(logits + tau * log(prior)) (Menon et al. 2021, "Long-tail learning
    via logit adjustment"): trained so, the plain softmax answers as if every class were as
    frequent as every other, where plain cross-entropy favours the frequent ones."""

    def __init__(self, prior, tau: float = 1.0, label_smoothing: float = 0.0,
                 name: str = "logit_adjusted_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.prior, self.tau = [float(p) for p in prior], float(tau)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        # The model's last layer is a softmax: log(p) is its logits less a per-image constant,
        # which the softmax below cancels.
        shift = self.tau * keras.ops.log(keras.ops.convert_to_tensor(self.prior, dtype=y_pred.dtype))
        logits = keras.ops.log(keras.ops.clip(y_pred, 1e-7, 1.0)) + shift
        return keras.losses.categorical_crossentropy(y_true, logits, from_logits=True,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "prior": self.prior, "tau": self.tau,
                "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="ferkeras")
class BalancedAccuracy(keras.metrics.Metric):
    """The mean of the per-class recalls over the batches seen (classes with no image left out):
    accuracy as if every expression were equally frequent, as scikit-learn's
    balanced_accuracy_score. Targets may be soft (mixing, distillation): their top class counts.
    Sample weights are ignored; a class weight leaves each class's recall as it is."""

    def __init__(self, num_classes: int = NUM_CLASSES, name: str = "balanced_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.hits = self.add_variable(shape=(num_classes,), initializer="zeros", name="hits")
        self.images = self.add_variable(shape=(num_classes,), initializer="zeros", name="images")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        true = ops.argmax(y_true, axis=-1)
        of_class = ops.one_hot(true, self.num_classes, dtype="float32")
        hit = ops.cast(ops.equal(true, ops.argmax(y_pred, axis=-1)), "float32")
        self.images.assign_add(ops.sum(of_class, axis=0))
        self.hits.assign_add(ops.sum(of_class * ops.expand_dims(hit, -1), axis=0))

    def result(self):
        ops = keras.ops
        seen = ops.cast(self.images > 0, "float32")
        recall = self.hits / ops.maximum(self.images, 1.0)
        return ops.sum(recall * seen) / ops.maximum(ops.sum(seen), 1.0)

    def reset_state(self):
        for variable in (self.hits, self.images):
            variable.assign(keras.ops.zeros_like(variable))

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="ferkeras")
class FusedBatchNormalization(layers.BatchNormalization):
    """BatchNormalization whose training step is TensorFlow's fused kernel.

    Keras 3 normalises with about ten separate ops (moments, then scale and shift), each a pass
    over the activations and each with its gradient; one FusedBatchNormV3 op does the same
    arithmetic and trains the whole model about 1.4x faster on a CPU. Inference, and so the
    exported SavedModel and TFLite models, are Keras' own.
    """

    def call(self, inputs, training=None, mask=None):
        fusable = (training and mask is None and len(inputs.shape) == 4
                   and self.axis in (-1, 3) and inputs.dtype in (tf.float32, tf.bfloat16))
        if not fusable:
            return super().call(inputs, training=training, mask=mask)
        outputs, batch_mean, batch_variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
        # The fused op's variance is the unbiased one, as PyTorch's running_var uses.
        self.moving_mean.assign(self.moving_mean * self.momentum + batch_mean * (1 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum
                                    + batch_variance * (1 - self.momentum))
        return outputs


def build_model(channels: int = 3, arch: str = "reference",
                precision: str = "float32") -> keras.Sequential:
    """Build an architecture (reference: the report's; large: build_large's) on raw 0-255 gray input.

    precision is a Keras dtype policy: mixed_bfloat16 computes in bfloat16 with float32
    weights (float32_copy gives the model to save); the softmax stays float32 either way.
    """
    if channels not in (1, 3):
        raise FerkerasError(f"channels must be 1 or 3, got {channels}")
    if arch not in ARCHITECTURES:
        raise FerkerasError(f"--arch {arch}: must be {' or '.join(ARCHITECTURES)}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)  # layers take the policy when they are made
    try:
        return build_large(channels) if arch == "large" else build_reference(channels)
    finally:
        keras.config.set_dtype_policy(previous)


def build_reference(channels: int = 3) -> keras.Sequential:
    """The report's CNN: 4 x (Conv3x3-BN-ReLU, MaxPool), Dense 192-96, 7 softmax."""
    model = _input_layers("ferkeras_cnn", channels)
    for i, filters in enumerate(BLOCK_FILTERS, start=1):
        _add_conv_bn_relu(model, filters, f"{i}")
        model.add(layers.MaxPooling2D(2, name=f"pool{i}"))
    model.add(layers.Flatten(name="flatten"))
    for i, units in enumerate(DENSE_UNITS, start=1):
        model.add(layers.Dense(units, activation="relu", name=f"fc{i}"))
    # Softmax as the last layer's activation: tf-keras-vis' ReplaceToLinear and TFLite want it.
    model.add(_predictions())
    return model


def build_large(channels: int = 3) -> keras.Sequential:
    """The large network: 4 x (2 x (Conv3x3-BN-ReLU), MaxPool), Dense 512-512 with dropout, 7 softmax."""
    model = _input_layers("ferkeras_large", channels)
    for stage, filters in enumerate(LARGE_STAGE_FILTERS, start=1):
        for conv in (1, 2):
            _add_conv_bn_relu(model, filters, f"{stage}_{conv}")
        model.add(layers.MaxPooling2D(2, name=f"pool{stage}"))
    model.add(layers.Flatten(name="flatten"))
    for i, units in enumerate(LARGE_DENSE_UNITS, start=1):
        model.add(layers.Dense(units, activation="relu", name=f"fc{i}"))
        model.add(layers.Dropout(LARGE_DROPOUT, name=f"dropout{i}"))
    model.add(_predictions())
    return model


def _predictions() -> layers.Dense:
    """The 7-way softmax, in float32 under any policy: mixed precision keeps the loss in float32."""
    return layers.Dense(NUM_CLASSES, activation="softmax", name="predictions", dtype="float32")


def float32_copy(model: keras.Model) -> keras.Model:
    """The model itself if it computes in float32, else a float32 copy with its weights (not
    its optimizer): what a mixed-precision run saves, so that inference and export are float32."""
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model

    def to_float32(node):
        if isinstance(node, dict) and str(node.get("class_name", "")).endswith("DTypePolicy"):
            return "float32"
        if isinstance(node, dict):
            return {key: to_float32(value) for key, value in node.items()}
        return [to_float32(value) for value in node] if isinstance(node, list) else node

    return uncompiled_copy(model, to_float32(model.get_config()))


def uncompiled_copy(model: keras.Model, config: dict | None = None) -> keras.Model:
    """A never-compiled copy of the model (from `config`, default its own) with its weights, not
    its optimizer's state (clone_model may keep the compilation)."""
    copy = type(model).from_config(model.get_config() if config is None else config)
    copy.set_weights(model.get_weights())
    return copy


def _add_conv_bn_relu(model: keras.Sequential, filters: int, suffix: str) -> None:
    """Conv 3x3 (same padding) -> batch norm -> ReLU, named conv<suffix>, bn<suffix>, relu<suffix>."""
    model.add(layers.Conv2D(filters, 3, padding="same", name=f"conv{suffix}"))
    # PyTorch's BatchNorm2d defaults (momentum 0.1 there is 0.9 here), as in the reference;
    # Keras' 0.99 lags for hundreds of steps, so short runs validate with stale statistics.
    model.add(FusedBatchNormalization(momentum=0.9, epsilon=1e-5, name=f"bn{suffix}"))
    model.add(layers.ReLU(name=f"relu{suffix}"))


def _input_layers(name: str, channels: int) -> keras.Sequential:
    """A Sequential model that takes raw 0-255 gray 48x48 faces and scales them itself."""
    model = keras.Sequential(name=name)
    model.add(keras.Input(IMAGE_SHAPE, name="gray_0_255"))
    model.add(layers.Rescaling(1.0 / 255, name="rescale"))
    if channels == 3:
        model.add(GrayToRGB(name="gray_to_rgb"))
    return model


def count_params(model: keras.Model) -> tuple[int, int]:
    """Return (total, non-trainable) parameter counts."""
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    non_trainable = sum(int(w.numpy().size) for w in model.non_trainable_weights)
    return trainable + non_trainable, non_trainable


def save_model(model: keras.Model, path: str | os.PathLike) -> None:
    """Save a .keras file through a temporary file and a rename: a kill mid-save leaves the old one."""
    with atomic_path(path) as tmp:
        model.save(tmp)  # Keras writes straight into the file it is given


def fold_temperature(model: keras.Model, temperature: float) -> None:
    """Divide the model's logits by temperature, in place: the last layer's kernel and bias, so that
    the Keras, SavedModel and TFLite files all carry it at no cost in ops."""
    last = softmax_layer(model)
    kernel, bias = last.get_weights()
    last.set_weights([kernel / temperature, bias / temperature])


def fold_logit_adjustment(model: keras.Model, tau: float, prior: np.ndarray) -> None:
    """Take tau x log(prior) off each class's logit, in the last layer's bias, in place."""
    if not tau:
        return
    prior = np.asarray(prior, np.float64)
    if prior.shape != (NUM_CLASSES,) or (prior <= 0).any():
        raise FerkerasError(f"logit adjustment needs a prior share above 0 for each of the {NUM_CLASSES} "
                            f"classes, got {np.round(prior, 4).tolist()}")
    fold_class_bias(model, -tau * np.log(prior))


def fold_class_bias(model: keras.Model, offsets: np.ndarray) -> None:
    """Add a per-class offset to the model's logits, in the last layer's bias, in place."""
    last = softmax_layer(model)
    kernel, bias = last.get_weights()
    last.set_weights([kernel, (bias + np.asarray(offsets)).astype(bias.dtype)])


def softmax_layer(model: keras.Model) -> layers.Dense:
    """The model's last layer, a softmax Dense layer whose kernel and bias make the logits."""
    last = model.layers[-1]
    if not (isinstance(last, layers.Dense) and last.get_config()["activation"] == "softmax"):
        raise FerkerasError(f"{model.name}: its last layer, {last.name}, is not a softmax Dense layer, "
                            "whose logits ferkeras can scale or average")
    return last


def load_model(path: str | os.PathLike) -> keras.Model:
    """Load a .keras model safely (no arbitrary code) and check it takes 48x48 gray faces."""
    path = str(path)
    if not os.path.exists(path):
        raise FerkerasError(f"{path}: no such model file")
    if os.path.isfile(path) and not zipfile.is_zipfile(path):  # Keras would say "File not found"
        raise FerkerasError(f"{path}: not a .keras model (not a zip archive: truncated, or "
                            "another kind of file)")
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as e:  # Keras raises many types for a bad file; the user needs one line
        for _ in range(8):  # Keras wraps the reason (a refused Lambda or function) in layers
            e = e.__cause__ or e.__context__ or e
        raise FerkerasError(f"{path}: not a loadable Keras model ({first_line(e)})") from None
    shape = tuple(model.input_shape[1:])
    if shape[:2] != IMAGE_SHAPE[:2]:
        raise FerkerasError(f"{path}: model input is {shape}, expected {IMAGE_SIZE}x{IMAGE_SIZE} images")
    return model
