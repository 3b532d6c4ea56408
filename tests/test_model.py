"""The reference architecture, its parameter count, and safe loading."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from ferkeras.errors import FerkerasError
from ferkeras.model import GrayToRGB, build_model, count_params, load_model


def test_parameter_count_matches_reference():
    # The reference's question 1: 322,039 parameters, 528 of them BatchNorm statistics.
    assert count_params(build_model(3)) == (322_039, 528)
    # One input channel removes 2 * 3 * 3 * 24 first-conv weights.
    assert count_params(build_model(1)) == (322_039 - 432, 528)


def test_layer_shapes_follow_reference():
    model = build_model()
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["gray_to_rgb"] == (48, 48, 3)
    assert [shapes[f"pool{i}"] for i in range(1, 5)] == [
        (24, 24, 24), (12, 12, 48), (6, 6, 96), (3, 3, 96)]
    assert shapes["flatten"] == (864,)
    assert [shapes["fc1"], shapes["fc2"], shapes["predictions"]] == [(192,), (96,), (7,)]
    assert model.layers[-1].activation is keras.activations.softmax


def test_model_takes_raw_gray_pixels_and_outputs_probabilities():
    model = build_model()
    images = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 1)).astype("float32")
    probs = model.predict(images, verbose=0)
    assert probs.shape == (4, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    scaled = model.get_layer("rescale")(images)
    assert float(keras.ops.max(scaled)) <= 1.0 and float(keras.ops.max(scaled)) > 0.9
    rgb = keras.ops.convert_to_numpy(GrayToRGB()(images))
    assert rgb.shape == (4, 48, 48, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_gradient_to_the_pixels_logs_no_error():
    """Saliency maps differentiate through GrayToRGB; with keras.ops.repeat (a Tile) TensorFlow's
    oneDNN build logged an "E" line, 'oneDNN supports DT_INT32 only ...', on every map."""
    script = ("import tensorflow as tf\n"
              "from ferkeras.model import GrayToRGB\n"
              "x = tf.random.uniform((2, 48, 48, 1))\n"
              "with tf.GradientTape() as tape:\n"
              "    tape.watch(x)\n"
              "    y = tf.reduce_sum(GrayToRGB()(x) ** 2)\n"
              "grads = tape.gradient(y, x).numpy()\n"
              "assert abs(grads - 6 * x.numpy()).max() < 1e-5\n")
    # oneDNN on, whatever the machine's default or the caller's environment: with it off the
    # error line cannot appear and the test would pass on nothing.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0", "TF_ENABLE_ONEDNN_OPTS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "oneDNN custom operations are on" in done.stderr, done.stderr[-2000:]
    assert "oneDNN supports" not in done.stderr


def test_save_and_safe_load_roundtrip(tmp_path):
    model = build_model()
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_model(path)
    x = np.full((1, 48, 48, 1), 128, "float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_load_model_refuses_non_models_and_wrong_inputs(tmp_path):
    junk = tmp_path / "junk.keras"
    junk.write_text("not a zip")
    with pytest.raises(FerkerasError, match="junk.keras"):
        load_model(junk)
    with pytest.raises(FerkerasError, match="no such model"):
        load_model(tmp_path / "missing.keras")
    small = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(7, activation="softmax")])
    small.save(tmp_path / "small.keras")
    with pytest.raises(FerkerasError, match="expected 48x48"):
        load_model(tmp_path / "small.keras")


def test_load_model_refuses_lambda_layers(tmp_path):
    # safe_mode: a Lambda's Python code must never run when a stranger's file is loaded.
    model = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Lambda(lambda x: x * 2),
                              keras.layers.Flatten(), keras.layers.Dense(7)])
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(FerkerasError, match="lambda.keras"):
        load_model(tmp_path / "lambda.keras")


def test_fused_batch_norm_trains_as_keras_batch_norm_does():
    import keras
    import numpy as np

    from ferkeras.model import FusedBatchNormalization

    x = np.random.default_rng(0).normal(3.0, 2.0, (16, 6, 6, 5)).astype("float32")
    fused = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
    plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    for layer in (fused, plain):
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 2, 5))
        layer.beta.assign(np.linspace(-1, 1, 5))
    np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), atol=2e-5)
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, rtol=1e-5)
    # Unbiased batch variance (PyTorch's choice) against Keras' biased one: n = 16*6*6.
    n = x.size // 5
    expected = 0.9 + 0.1 * (np.asarray(plain.moving_variance) - 0.9) / 0.1 * n / (n - 1)
    np.testing.assert_allclose(fused.moving_variance, expected, rtol=1e-5)
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), atol=0.02)


def test_the_large_architecture_keeps_the_input_contract():
    large = build_model(arch="large")
    total, frozen = count_params(large)
    assert total == 2_622_503 and frozen == 1_920  # 8 batch norms of 32..256 filters, 2 statistics each
    assert large.input_shape == (None, 48, 48, 1) and large.output_shape == (None, 7)
    assert [layer.name for layer in large.layers[:2]] == ["rescale", "gray_to_rgb"]
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in large.layers) == 8
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 1)).astype(np.float32)
    probs = np.asarray(large(faces, training=False))
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    with pytest.raises(FerkerasError, match="--arch huge: must be reference or large"):
        build_model(arch="huge")
