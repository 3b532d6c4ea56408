"""The benchmarks' own helpers, where a figure in bench/README.md rests on them."""

import keras
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from conftest import load_bench

from ferkeras.model import load_model


def folded_kernels(model):
    """Each Conv2D/Dense kernel as the TFLite converter stores it: batch norm folded in,
    output channels first, as (channels, everything else)."""
    kernels = {}
    for layer, after in zip(model.layers, [*model.layers[1:], None], strict=True):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel = layer.kernel.numpy()
            if isinstance(after, keras.layers.BatchNormalization):
                kernel = kernel * (after.gamma.numpy()
                                   / np.sqrt(after.moving_variance.numpy() + after.epsilon))
            kernels[layer.name] = np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1)
    return kernels


def int8_kernels(path):
    """The int8 TFLite file's kernels, dequantised, as (channels, everything else), by layer."""
    interpreter = Interpreter(str(path))
    interpreter.allocate_tensors()
    kernels = {}
    for tensor in interpreter.get_tensor_details():
        scales = tensor["quantization_parameters"]["scales"]
        name = tensor["name"].split("/")
        if tensor["dtype"] == np.int8 and len(scales) > 1 and len(name) == 3:  # .../conv1_1/convolution
            values = interpreter.get_tensor(tensor["index"]).reshape(len(scales), -1)
            kernels[name[1].rsplit("_", 1)[0]] = values * scales[:, None]
    return kernels


def test_rounded_weights_are_what_the_int8_file_stores(exported_synthetic_run):
    """bench/quantization.py's int8-rw row needs a copy whose weights int8 keeps exactly."""
    round_weights_to_int8 = load_bench("quantization").round_weights_to_int8
    model = load_model(exported_synthetic_run / "model.keras")
    stored = int8_kernels(exported_synthetic_run / "model_int8.tflite")
    original, rounded = folded_kernels(model), folded_kernels(round_weights_to_int8(model))
    assert sorted(stored) == sorted(rounded) == ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2",
                                                 "predictions"]
    for name, kernel in rounded.items():
        step = np.abs(original[name]).max(1, keepdims=True) / 127
        assert np.all(np.abs(kernel - stored[name]) < 1e-3 * step), name
        assert not np.allclose(original[name], kernel), f"{name}: the copy was not rounded"
        assert np.all(np.abs(original[name] - kernel) <= 0.5001 * step), name
