"""The benchmarks' own helpers, where a figure in bench/README.md rests on them."""

import keras
import numpy as np
import pytest
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
    """bench/quantization.py's int8-rw row needs a copy whose weights int8 keeps exactly.

    Two float pipelines round the same weights: NumPy rounds the kernel as it is, the converter
    folds batch norm in first. A weight within float error of a .5 boundary can round either
    way (a simulation with this model's conv shapes flipped at least one code in 15-20% of
    weight sets, and which weights land there depends on the CPU's training numerics), so the
    test allows codes that differ by one step at a tie, and no more than 1 in 10,000 of them.
    """
    round_weights_to_int8 = load_bench("quantization").round_weights_to_int8
    model = load_model(exported_synthetic_run / "model.keras")
    stored = int8_kernels(exported_synthetic_run / "model_int8.tflite")
    original, rounded = folded_kernels(model), folded_kernels(round_weights_to_int8(model))
    assert sorted(stored) == sorted(rounded) == ["conv1", "conv2", "conv3", "conv4", "fc1", "fc2",
                                                 "predictions"]
    codes = flipped = 0
    for name, kernel in rounded.items():
        step = np.abs(original[name]).max(1, keepdims=True) / 127
        ours, theirs = np.rint(kernel / step), np.rint(stored[name] / step)
        assert np.all(np.abs(kernel - ours * step) < 1e-3 * step), f"{name}: off int8's grid"
        differ = ours != theirs
        assert np.all(np.abs(ours - theirs)[differ] == 1), f"{name}: a code more than one step off"
        at_tie = np.abs(np.abs(original[name] / step) % 1 - 0.5) < 1e-3
        assert np.all(at_tie[differ]), f"{name}: a code differs away from a .5 tie"
        codes, flipped = codes + kernel.size, flipped + int(differ.sum())
        assert not np.allclose(original[name], kernel), f"{name}: the copy was not rounded"
        assert np.all(np.abs(original[name] - kernel) <= 0.5001 * step), name
    assert flipped <= 1e-4 * codes, f"{flipped} of {codes} codes differ"


def test_posthoc_recovers_a_known_temperature_and_adjusts_by_the_prior():
    posthoc = load_bench("posthoc")
    rng = np.random.default_rng(0)
    prior = np.array([0.14, 0.015, 0.14, 0.25, 0.17, 0.11, 0.175])
    # Labels drawn from softmax(z); the model reports softmax(2 z), overconfident by a factor 2.
    logits = rng.normal(0, 2, (6000, 7))
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(7, p=p) for p in true])
    sharp = posthoc.adjusted(true, 0.5, 0.0, prior)
    assert posthoc.fit_temperature(sharp, labels, 0.0, prior) == pytest.approx(2.0, rel=0.08)
    np.testing.assert_allclose(posthoc.adjusted(true, 1.0, 0.0, prior), true, atol=1e-9)
    # tau = 1 divides each probability by its class's prior (then renormalises).
    expected = true / prior
    np.testing.assert_allclose(posthoc.adjusted(true, 1.0, 1.0, prior),
                               expected / expected.sum(1, keepdims=True), atol=1e-9)
    held_out = posthoc.cross_fitted(sharp, labels, 0.0, prior, folds=2)
    assert held_out.shape == sharp.shape and np.allclose(held_out.sum(1), 1)
    assert not np.allclose(held_out, sharp)  # every row was adjusted by its other half's T


def test_pipeline_bench_counts_a_missed_face_as_a_wrong_answer():
    pipeline = load_bench("pipeline")
    labels = np.array([0, 0, 1, 1])
    probs = np.eye(7)[[0, 1, 1, 1]]
    found = np.array([True, True, True, False])
    figures = pipeline.answers(labels, probs, found)
    assert figures["found"] == 0.75 and figures["accuracy"] == 0.5  # the missed face is wrong
    assert figures["recall"] == {"angry": 0.5, "disgust": 0.5} and figures["balanced"] == 0.5


def test_pipeline_bench_reads_photos_as_predict_does(fer2013_dir):
    from ferkeras.data import load_dataset
    from ferkeras.predict import FaceRecognizer

    pipeline = load_bench("pipeline")
    rng = np.random.default_rng(0)
    test = load_dataset(str(fer2013_dir)).splits["test"]
    frame = pipeline.photo(test.images[0], "dark", rng)
    assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
    assert pipeline.photo(test.images[0], "crop 100", rng).shape == (100, 100, 3)
    results = pipeline.run(["shipped"], str(fer2013_dir), "test", 70, "blazeface", "flip",
                           ["crop", "photo", "close", "crop 100"])
    chosen = pipeline.draw(test.labels, 70)
    assert len(chosen) == 70 and set(test.labels[chosen]) == set(range(7))  # every class drawn
    # The clean crops are read exactly as predict reads a 48x48 image: as it is and as its
    # landmarks frame it, flip TTA; the ", as is" row as it is only.
    recognizer = FaceRecognizer("shipped", tta="flip")
    faces, labels = test.images[chosen], test.labels[chosen]
    found = [recognizer.find(np.repeat(face[..., None], 3, axis=2), detect=None) for face in faces]
    assert sum(f.views is not None for f in found) > 0.8 * len(found)  # 65 of these 70 here
    crop, as_is = results["crop"]["shipped"], results["crop, as is"]["shipped"]
    assert crop["found"] == as_is["found"] == 1
    assert crop["accuracy"] == np.mean(recognizer.classify_found(found).argmax(1) == labels)
    assert as_is["accuracy"] == np.mean(recognizer.classify(faces).argmax(1) == labels)
    for condition in ("photo", "close"):  # BlazeFace finds most faces set into frames
        assert results[condition]["shipped"]["found"] > 0.7, condition
        assert results[condition]["shipped"]["accuracy"] > 0.35, condition  # chance is 0.14
        alone = results.get(f"{condition}, no haar", results[condition])["shipped"]  # Haar's faces left out
        assert alone["found"] <= results[condition]["shipped"]["found"]
    # A face that fills its image is found as predict searches (Detector.framed), read about as
    # well as its 48x48 crop.
    assert results["crop 100"]["shipped"]["found"] > 0.9
    assert results["crop 100"]["shipped"]["accuracy"] > crop["accuracy"] - 0.1


def test_pipeline_bench_reframes_a_crop_about_its_centre():
    pipeline = load_bench("pipeline")
    ramp = np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1))  # brighter to the right
    tight, wide = (pipeline.photo(ramp, c, np.random.default_rng(0))[:, :, 0]
                   for c in ("crop tight", "crop wide"))
    assert tight.shape == wide.shape == (48, 48)
    # Closer: the row spans 0.8 of the face's columns, centred; wider: the edges repeated.
    assert abs(int(tight[0, 0]) - 5 * 23.5 * 0.2) <= 1 and abs(int(tight[0, -1]) - 5 * (47 - 23.5 * 0.2)) <= 1
    assert wide[0, 0] == wide[0, 3] == 0 and wide[0, -1] == wide[0, -4] == 235
    assert np.abs(tight[:, ::-1].astype(int) - (235 - tight.astype(int))).max() <= 1  # centred


def test_train_speed_runs_an_avx2_cpus_kernels_and_eigen_where_asked(monkeypatch):
    """The figures of bench/README's AVX2 section rest on these settings reaching each worker."""
    train_speed = load_bench("train_speed")
    for name in ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY",
                 "TF_NUM_INTEROP_THREADS"):
        monkeypatch.delenv(name, raising=False)
    plain = train_speed.worker_environment("ferkeras", None)
    assert not {"TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"} & set(plain)
    eigen = train_speed.worker_environment("ferkeras eigen", "AVX2")
    assert eigen["TF_ENABLE_ONEDNN_OPTS"] == "0"
    assert (eigen["ONEDNN_MAX_CPU_ISA"], eigen["ATEN_CPU_CAPABILITY"]) == ("AVX2", "avx2")
    assert "TF_ENABLE_ONEDNN_OPTS" not in train_speed.worker_environment("pytorch reference", "AVX2")
    assert train_speed.worker_environment("ferkeras inter1", None)["TF_NUM_INTEROP_THREADS"] == "1"
    assert train_speed.worker_environment("ferkeras intra1", None)["TF_NUM_INTRAOP_THREADS"] == "1"
