"""The models shipped in exported/ (`shipped`, the reference CNN), exported/large/ (`large`) and
exported/ensemble/ (`ensemble`, the two as one model):
each complete, portable, within today's parity bars, and exactly as accurate on PublicTest as its
metadata records: not worse, and not better either (a better figure means the files changed
without the record), through the bench's path and the user's.

Tolerances, both ways: the same files on the same images give the recorded figures to the last
image on this machine; another CPU's float rounding may flip a few close calls, which these
allow, while a changed or retrained model moves far more.
"""

import json

import numpy as np
import pytest
from conftest import REPO
from test_export import machine_paths

EXPORTED = REPO / "exported"
# Each shipped model: its folder, its architecture and the formats it must hold. The large one
# ships its Keras and int8 files only (its SavedModel and float32 TFLite would add 21 MB).
SHIPPED = {
    "shipped": (EXPORTED, "reference", {"keras", "saved_model", "float32", "int8"}),
    "large": (EXPORTED / "large", "large", {"keras", "int8"}),
    "ensemble": (EXPORTED / "ensemble", "ensemble", {"keras", "int8"}),  # the two as one (ensemble.py)
}
ACCURACY_TOLERANCE = 0.003  # about 11 of PublicTest's 3,589 faces, either way
RECALL_TOLERANCE = 0.02  # per class, either way: one face of disgust's 56 is 0.018
TTA_FIGURES = {"none": "accuracy", "flip": "accuracy_tta", "shifts": "accuracy_tta_shifts"}
# The other recorded figures and how far each may move with a few close calls: a class's recall
# moves 0.02 per disgust face, so balanced accuracy 0.003 per face, and the worst recall as much
# as one class's; a flip moves the ECE by about 1/3,589 per face and the NLL by less.
FIGURE_TOLERANCES = {"balanced_accuracy": 0.006, "balanced_accuracy_tta": 0.006,
                     "balanced_accuracy_tta_shifts": 0.006, "macro_f1": 0.006,
                     "worst_recall": RECALL_TOLERANCE, "ece": 0.003, "ece_tta": 0.003, "nll": 0.003}


@pytest.fixture(scope="module", params=list(SHIPPED))
def name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def folder(name):
    return SHIPPED[name][0]


@pytest.fixture(scope="module")
def metadata(folder) -> dict:
    return json.loads((folder / "metadata.json").read_text())


@pytest.fixture(scope="module")
def public_test_files(fer2013_dir) -> tuple[list, np.ndarray]:
    """PublicTest's image files, as a user holds them, and their labels from the class folders."""
    from ferkeras.spec import CLASS_NAMES

    # In the split's order (by class, then file), so that face i is keras_views' face i.
    paths = sorted((fer2013_dir / "test").glob("*/*.jpg"),
                   key=lambda p: (CLASS_NAMES.index(p.parent.name), p.name))
    return paths, np.array([CLASS_NAMES.index(p.parent.name) for p in paths])


@pytest.fixture(scope="module")
def keras_views(folder, metadata, fer2013_dir) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Keras file's probabilities on PublicTest (the bench's path: the split's arrays), of
    each image and of its mirror, and the labels: shared by the engine and user-path tests."""
    from ferkeras.data import load_dataset
    from ferkeras.evaluate import view_probabilities
    from ferkeras.runners import load_runner

    public_test = load_dataset(fer2013_dir).splits["test"]
    runner = load_runner(folder / metadata["artifacts"]["keras"]["file"])
    image, mirror = view_probabilities(runner, public_test.images, mirror=True)
    return image, mirror, public_test.labels


def test_shipped_files_and_provenance(name, folder, metadata):
    _, arch, formats = SHIPPED[name]
    for entry in metadata["artifacts"].values():
        assert (folder / entry["file"]).exists(), entry["file"]
    assert set(metadata["artifacts"]) == formats
    assert (EXPORTED / "__init__.py").is_file()  # installs as the package ferkeras.exported
    source = metadata["source"]
    assert source["options"]["data"] and source["command"] and source["trained"]
    assert source["seed"] == source["options"]["seed"]
    assert source["options"].get("arch", "reference") == arch  # older runs predate --arch
    assert metadata["validation"]["images"] == 3589  # parity was measured on PublicTest
    recorded = metadata["accuracy"]
    assert recorded["split"] == "test" and recorded["images"] == 3589  # PublicTest
    assert set(recorded["engines"]) == formats - {"saved_model"}  # each file's figures
    for engine, figures in recorded["engines"].items():  # balanced accuracy and calibration too
        assert {*TTA_FIGURES.values(), *FIGURE_TOLERANCES} <= set(figures), engine


def test_shipped_files_carry_a_temperature_for_predicts_default_view(name, metadata):
    """export --calibrate folded a temperature, fitted for the flip TTA that predict, serve and
    compat apply, into every file: the reference model's answers there are calibrated (expected
    calibration error 0.093 before, at most 0.03 after, the bar of issue 27)."""
    from ferkeras.runners import DEFAULT_TTA

    calibration = metadata["calibration"]
    assert calibration["tta"] == DEFAULT_TTA and calibration["images"] == 3589
    assert calibration["ece_after"] < calibration["ece_before"]
    assert calibration["nll_after"] < calibration["nll_before"]
    if name == "shipped":
        assert metadata["accuracy"]["engines"]["int8"]["ece_tta"] <= 0.03


def test_metadata_names_no_folder_of_this_machine(metadata):
    assert machine_paths(metadata) == []
    assert "--no-verify" not in metadata["export_command"]


def test_each_shipped_file_passed_the_parity_bars_now_in_force(metadata):
    from ferkeras.export import FORMATS

    for name, entry in metadata["artifacts"].items():
        fmt, parity = FORMATS[name], entry["parity"]
        assert parity["passed"] and parity["failures"] == [], (name, parity["failures"])
        # Recorded under the bar that export.py holds today, and meeting it.
        assert (parity["min_agreement"], parity["max_accuracy_change"]) == \
            (fmt.min_agreement, fmt.max_accuracy_change), name
        assert parity["agreement"] >= fmt.min_agreement, name
        if fmt.max_accuracy_change is not None:
            assert abs(parity["accuracy_change_points"]) <= fmt.max_accuracy_change, name
        assert parity["images"] == metadata["validation"]["images"], name


# The reference model's files are held to the shifts TTA's figures too (10 views a face); the large
# model's and the ensemble's to the image and its mirror, predict's default: their 10 views took
# 90 s or more each on a 2-core AVX2 CPU, where int8 has no VNNI, and that TTA's code is the same.
ALL_VIEWS = {"shipped"}


@pytest.fixture(scope="module")
def engine_views(name, folder, metadata, fer2013_dir, keras_views) -> dict:
    """Each file's probabilities on PublicTest, per engine: of the image, of its mirror and the
    mean of the shifts TTA's views (None where not measured)."""
    from ferkeras.data import load_dataset
    from ferkeras.evaluate import summary_views
    from ferkeras.runners import load_runner

    images = load_dataset(fer2013_dir).splits["test"].images
    views = {"keras": (*keras_views[:2], None)}  # 10 views of the large Keras model took 100 s
    for engine, entry in metadata["artifacts"].items():
        if engine in ("keras", "saved_model"):
            continue
        views[engine] = summary_views(load_runner(folder / entry["file"]), images, shifts=name in ALL_VIEWS)
    return views


def test_each_engine_is_as_accurate_as_recorded_on_publictest(name, metadata, keras_views, engine_views):
    from ferkeras.evaluate import summary_of_views

    labels = keras_views[2]
    assert set(engine_views) == set(metadata["accuracy"]["engines"])
    for engine, recorded in metadata["accuracy"]["engines"].items():
        measured = summary_of_views(labels, *engine_views[engine])
        assert ("accuracy_tta_shifts" in measured) == (name in ALL_VIEWS and engine != "keras")
        for key in TTA_FIGURES.values():
            if key in measured:
                assert measured[key] == pytest.approx(recorded[key], abs=ACCURACY_TOLERANCE), (engine, key)
        for key, tolerance in FIGURE_TOLERANCES.items():
            if key in measured:
                assert measured[key] == pytest.approx(recorded[key], abs=tolerance), (engine, key)
        for label, recall in recorded["recall"].items():
            assert measured["recall"][label] == pytest.approx(recall, abs=RECALL_TOLERANCE), (engine, label)


# The user's path on every USER_SAMPLE-th file: each face's probabilities must be the bench path's
# (engine_views), whose figures the engine test holds to the record on all 3,589 faces; the user's
# path on all of them took the large model 3 more passes over PublicTest.
USER_SAMPLE = 4


def test_predict_no_detect_on_publictest_files_gives_the_bench_paths_answers(name, folder, metadata,
                                                                           public_test_files,
                                                                           keras_views, engine_views):
    """The user's path: FaceRecognizer on PublicTest files, whole (`predict --no-detect`), by the
    shipped model's name (`--model shipped`, `--model large`, ...) and by its Keras file; the
    crops as they are (light=False, sharpen=False), as the bench reads them (the clamps, which
    change the few PublicTest faces lit or blurred outside FER2013's range, are tested in
    test_predict.py)."""
    from ferkeras.export import FORMATS
    from ferkeras.predict import DEFAULT_TTA, FaceRecognizer, predict

    paths, labels = public_test_files
    assert np.array_equal(keras_views[2], labels)  # the same faces in the same order
    sample = slice(None, None, USER_SAMPLE)
    image, mirror, _ = engine_views["int8"]
    bench = {"none": image, DEFAULT_TTA: (image + mirror) / 2}
    recorded = metadata["accuracy"]["engines"]["int8"]
    for tta, expected in bench.items():
        recognizer = FaceRecognizer(name, tta=tta, light=False, sharpen=False)
        results = predict(paths[sample], recognizer, detect=False)
        assert all(len(r.faces) == 1 and r.crop for r in results)
        user_probs = np.array([r.faces[0].probabilities for r in results])
        np.testing.assert_allclose(user_probs, expected[sample], atol=1e-4, err_msg=tta)
        assert recognizer.runner.path == folder / "model_int8.tflite"
        line = recognizer.runner.describe()
        assert line.startswith(f"model: {name} (model_int8.tflite)"), line
        assert f"{recorded['accuracy']:.4f}" in line, line

    recognizer = FaceRecognizer(str(folder / "model.keras"), tta="none", light=False,
                                sharpen=False)
    results = predict(paths[sample], recognizer, detect=False)
    user_probs = np.array([r.faces[0].probabilities for r in results])
    np.testing.assert_allclose(user_probs, keras_views[0][sample], atol=1e-4)
    # int8 against Keras on every face: the parity that export recorded.
    agreement = float(np.mean(np.argmax(image, axis=1) == np.argmax(keras_views[0], axis=1)))
    assert agreement >= FORMATS["int8"].min_agreement
    assert agreement == pytest.approx(metadata["artifacts"]["int8"]["parity"]["agreement"],
                                      abs=ACCURACY_TOLERANCE)
