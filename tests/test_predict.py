"""Predict: runners for every model kind, face detection on a real photo, crops, folders, errors, CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
from conftest import run_main
from PIL import Image

from ferkeras.errors import FerkerasError
from ferkeras.media.crop import FER2013_MEAN_RANGE, FaceRange, clamp_light, clamp_sharpness, face_range
from ferkeras.media.images import read_image
from ferkeras.predict import DEFAULT_TTA, FaceRecognizer, format_table, predict
from ferkeras.runners import KerasRunner, SavedModelRunner, TFLiteRunner, load_runner
from ferkeras.runs import run_splits
from ferkeras.spec import CLASS_NAMES

FERKERAS = [sys.executable, "-c", "from ferkeras.cli.main import main; main()"]
# A real photograph that matplotlib ships (not fetched at run time): Grace Hopper's portrait,
# 512x600, her face at about x 155-377, y 105-327.
GRACE_HOPPER = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


@pytest.fixture(scope="module")
def val_faces(trained_synthetic_run):
    _, val = run_splits(trained_synthetic_run)
    return val.images[:64]


@pytest.fixture
def no_face_png(tmp_path):
    """A 320x240 picture with no face: a smooth gradient with a little noise."""
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 255, 320)[None, :, None] * np.ones((240, 1, 3))
    image = np.clip(gradient + rng.normal(0, 8, gradient.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "sky.png"
    Image.fromarray(image).save(path)
    return path


def test_every_model_kind_gives_the_same_probabilities(trained_synthetic_run, exported_synthetic_run,
                                                       val_faces):
    keras = load_runner(trained_synthetic_run)  # a run means its best model.keras
    assert isinstance(keras, KerasRunner)
    expected = keras(val_faces)
    assert expected.shape == (64, 7) and np.allclose(expected.sum(1), 1, atol=1e-5)
    saved = load_runner(exported_synthetic_run / "saved_model")
    tflite = load_runner(exported_synthetic_run / "model_float32.tflite")
    assert isinstance(saved, SavedModelRunner) and isinstance(tflite, TFLiteRunner)
    for runner in (saved, tflite, load_runner(trained_synthetic_run / "model.keras")):
        assert np.allclose(runner(val_faces), expected, atol=1e-4), runner
    int8 = load_runner(exported_synthetic_run / "model_int8.tflite")
    assert np.mean(int8(val_faces).argmax(1) == expected.argmax(1)) >= 0.95


def test_finds_the_face_in_a_real_photo(trained_synthetic_run, exported_synthetic_run):
    for model in (exported_synthetic_run / "model_int8.tflite", trained_synthetic_run):
        [result] = predict([GRACE_HOPPER], model=model)
        assert (result.width, result.height, result.crop) == (512, 600, False)
        [face] = result.faces
        x, y, w, h = face.box
        # her face by eye: x 155-377, y 105-327; BlazeFace's square box stops below the hairline
        assert 130 < x < 180 and 80 < y < 150 and 180 < w < 260 and w == h, face.box
        assert face.landmarks.shape == (5, 2)  # the default detector's eyes, nose and mouth
        assert face.label in CLASS_NAMES and face.score == face.probabilities.max()
        assert abs(face.probabilities.sum() - 1) < 0.02
        record = face.to_dict()
        assert record["box"] == {"x": x, "y": y, "width": w, "height": h}
        assert list(record["landmarks"]) == ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"]
        assert list(record["probabilities"]) == list(CLASS_NAMES)


def test_a_picture_without_a_face_says_so(exported_synthetic_run, no_face_png):
    [result] = predict([no_face_png], model=exported_synthetic_run / "model_int8.tflite")
    assert result.faces == [] and not result.crop
    assert "no face found" in format_table([result])


def test_a_48x48_crop_is_classified_whole(exported_synthetic_run, val_faces, tmp_path):
    """Without detection; read as it is only here (reframe=False, light=False: its landmark view
    and the light clamp are tested on real faces below)."""
    from ferkeras.predict import FaceRecognizer

    Image.fromarray(val_faces[0]).save(tmp_path / "face.png")
    model = exported_synthetic_run / "model_float32.tflite"
    [result] = predict([tmp_path / "face.png"], model=FaceRecognizer(model, reframe=False, light=False))
    assert result.crop and len(result.faces) == 1 and result.faces[0].box == (0, 0, 48, 48)
    # predict's default TTA (flip): the mean of the face's and its mirror's probabilities
    runner = TFLiteRunner(model)
    expected = (runner(val_faces[:1])[0] + runner(val_faces[:1, :, ::-1])[0]) / 2
    assert DEFAULT_TTA == "flip"
    assert np.allclose(result.faces[0].probabilities, expected, atol=1e-6)
    # --no-detect: a whole photo is one face crop, resized to 48x48
    [whole] = predict([GRACE_HOPPER], model=model, detect=False)
    assert whole.crop and whole.faces[0].box == (0, 0, 512, 600)


def test_a_folder_is_predicted_in_batches_one_record_per_image(exported_synthetic_run, val_faces,
                                                               tmp_path, no_face_png):
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(val_faces[i]).save(folder / f"crop{i}.png")
    (folder / "more" / "grace.jpg").write_bytes(open(GRACE_HOPPER, "rb").read())
    (folder / "notes.txt").write_text("not an image")
    results = predict([folder, no_face_png], model=exported_synthetic_run / "model_int8.tflite")
    names = [r.path.name for r in results]
    assert names == ["crop0.png", "crop1.png", "crop2.png", "grace.jpg", "sky.png"]
    assert [len(r.faces) for r in results] == [1, 1, 1, 1, 0]
    # each face as the runner alone gives it, with predict's TTA, light and sharpness (the range of
    # the synthetic faces it trained on)
    runner = TFLiteRunner(exported_synthetic_run / "model_int8.tflite")
    expected = runner.predict(clamped_as_recognized(val_faces[:3], runner.face_range), DEFAULT_TTA)
    for result, probs in zip(results[:3], expected, strict=True):
        assert np.allclose(result.faces[0].probabilities, probs)


def clamped_as_recognized(faces: np.ndarray, face_range: FaceRange) -> np.ndarray:
    """Faces as FaceRecognizer.classify hands them to its model: light, then sharpness, clamped."""
    return clamp_sharpness(clamp_light(faces, face_range.mean, face_range.std), face_range.least_sharpness)


def test_crops_are_clamped_to_the_light_their_model_trained_on(trained_synthetic_run, exported_synthetic_run,
                                                              val_faces, tmp_path):
    """A run records the light and sharpness its training faces span (config.json), its export
    carries it (metadata.json), and recognition clamps a crop to that range, not to FER2013's: the
    synthetic faces are lit brighter than FER2013's darkest. A model with no record gets FER2013's."""
    train, _ = run_splits(trained_synthetic_run)
    recorded = face_range(train.images)
    for record in (trained_synthetic_run / "config.json", exported_synthetic_run / "metadata.json"):
        assert FaceRange.from_dict(json.loads(record.read_text())["face_range"]) == recorded
    assert recorded.mean[0] > FER2013_MEAN_RANGE[0] + 20 and recorded != FaceRange()

    recognizer = FaceRecognizer(exported_synthetic_run / "model_int8.tflite", tta="none")
    assert recognizer.runner.face_range == recorded
    assert FaceRecognizer(trained_synthetic_run / "model.keras").runner.face_range == recorded
    # faces lit between FER2013's darkest and the synthetic faces' darkest, their contrast kept in
    # both ranges: FER2013's clamps would leave them as they are, the run's brightens them
    faces = val_faces.astype(np.float32)
    dim = np.clip(np.rint(faces - faces.mean(axis=(1, 2), keepdims=True)
                          + (FER2013_MEAN_RANGE[0] + recorded.mean[0]) / 2), 0, 255).astype(np.uint8)
    dim = dim[[np.array_equal(clamped_as_recognized(face[None], FaceRange()), face[None]) for face in dim]]
    assert len(dim) >= 10
    runner = recognizer.runner
    probabilities = recognizer.classify(dim)
    np.testing.assert_allclose(probabilities, runner.predict(clamped_as_recognized(dim, recorded)), atol=1e-6)
    assert np.abs(probabilities - runner.predict(dim)).max() > 0.01

    bare = tmp_path / "model.keras"  # copied out of its run: nothing says what it trained on
    bare.write_bytes((trained_synthetic_run / "model.keras").read_bytes())
    assert FaceRecognizer(bare).runner.face_range == FaceRange()
    # a record edited out of shape is named, not replaced by FER2013's range in silence
    edited = tmp_path / "edited"
    edited.mkdir()
    (edited / "model_int8.tflite").write_bytes((exported_synthetic_run / "model_int8.tflite").read_bytes())
    metadata = json.loads((exported_synthetic_run / "metadata.json").read_text())
    (edited / "metadata.json").write_text(json.dumps({**metadata, "face_range": {**metadata["face_range"],
                                                                                "mean": [200, 90]}}))
    with pytest.raises(FerkerasError, match=r"^\S+metadata.json: face_range is not a range .*\[200, 90\]"):
        FaceRecognizer(edited / "model_int8.tflite")


def test_annotate_draws_boxes_and_labels(exported_synthetic_run, tmp_path, no_face_png):
    out = tmp_path / "annotated.png"  # lossless, so the drawn pixels can be checked exactly
    [result] = predict([GRACE_HOPPER], model=exported_synthetic_run / "model_int8.tflite",
                       annotate=out)
    assert result.annotated == out
    drawn, original = read_image(out).astype(int), read_image(GRACE_HOPPER).astype(int)
    assert drawn.shape == original.shape
    x, y, w, h = result.faces[0].box
    assert drawn[y + h // 2, x].tolist() == [0, 255, 0]  # the box's left side
    assert drawn[y + h // 2, x + 10].tolist() == original[y + h // 2, x + 10].tolist()
    assert np.abs(drawn - original)[y + h + 40:].mean() < 3  # below the box: the photo as it was
    # several images: a folder of annotated copies
    results = predict([GRACE_HOPPER, no_face_png], model=exported_synthetic_run / "model_int8.tflite",
                      annotate=tmp_path / "drawn")
    assert [r.annotated.name for r in results] == ["grace_hopper.jpg", "sky.jpg"]
    assert all(r.annotated.is_file() for r in results)


def test_bad_inputs_name_the_file_and_the_problem(exported_synthetic_run, tmp_path):
    model = exported_synthetic_run / "model_int8.tflite"
    with pytest.raises(FerkerasError, match="missing.jpg: no such image file or folder"):
        predict([tmp_path / "missing.jpg"], model=model)
    (tmp_path / "fake.jpg").write_text("not a picture")
    with pytest.raises(FerkerasError, match="fake.jpg: not an image file"):
        predict([tmp_path / "fake.jpg"], model=model)
    (tmp_path / "fake.tflite").write_text("not a model")
    with pytest.raises(FerkerasError, match="fake.tflite: not a TFLite model"):
        load_runner(tmp_path / "fake.tflite")
    (tmp_path / "fake.keras").write_text("not a model")
    with pytest.raises(FerkerasError, match="fake.keras: not a .keras model"):
        load_runner(tmp_path / "fake.keras")
    with pytest.raises(FerkerasError, match="fake.jpg: not a model"):
        load_runner(tmp_path / "fake.jpg")
    with pytest.raises(FerkerasError, match="no such model file"):
        load_runner(tmp_path / "absent.tflite")


def test_a_model_with_the_wrong_input_shape_is_refused(tmp_path):
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((64, 64, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(7, activation="softmax")])
    model.export(str(tmp_path / "sm"), verbose=False)
    (tmp_path / "big.tflite").write_bytes(
        tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm")).convert())
    with pytest.raises(FerkerasError, match=r"big.tflite: model input is \(64, 64, 1\), expected "
                                            r"\(48, 48, 1\)"):
        load_runner(tmp_path / "big.tflite")
    with pytest.raises(FerkerasError, match=r"sm: model input is \(64, 64, 1\)"):
        load_runner(tmp_path / "sm")


def test_predict_cli_end_to_end(exported_synthetic_run, tmp_path, no_face_png):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    model = str(exported_synthetic_run / "model_int8.tflite")

    def run(*args):
        return subprocess.run([*FERKERAS, "predict", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300)

    result = run(GRACE_HOPPER, str(no_face_png), "--model", model, "--json", "--annotate", "drawn")
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert [len(r["faces"]) for r in records] == [1, 0]
    face = records[0]["faces"][0]
    assert set(face) == {"box", "label", "score", "probabilities", "landmarks"}
    assert face["label"] in CLASS_NAMES
    assert (tmp_path / "drawn" / "grace_hopper.jpg").is_file()

    table = run(GRACE_HOPPER, str(no_face_png), "--model", model)
    # one line says which model answered, with the accuracy its export measured
    assert table.returncode == 0 and table.stderr.startswith(f"model: {model} (accuracy 0.")
    assert table.stderr.endswith(" on its run's validation images)\n") and table.stderr.count("\n") == 1
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["image", "face", "box"]
    assert ",".join(str(v) for v in face["box"].values()) in lines[1] and face["label"] in lines[1]
    assert "sky.png" in lines[2] and "no face found" in lines[2]

    missing = run("missing.jpg", "--model", model)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "Error: missing.jpg: no such image file or folder"


def test_predict_with_mtcnn_prints_only_which_model_answered_on_stderr(tmp_path, no_face_png):
    """TensorFlow's start-up lines, MTCNN's TensorFlow warning on a picture without a face and
    LiteRT's XNNPACK notice stay off the terminal, with no TF_CPP_MIN_LOG_LEVEL set beforehand."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([*FERKERAS, "predict", GRACE_HOPPER, str(no_face_png), "--model", "shipped",
                             "--detector", "mtcnn"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("model: ") and result.stderr.count("\n") == 1, result.stderr
    assert "sky.png" in result.stdout and "no face found" in result.stdout


def test_the_shipped_ensemble_recognises_where_there_are_no_runs(tmp_path, monkeypatch, capsys):
    from ferkeras.runners import SHIPPED_FILE, load_runner, resolve_model
    from ferkeras.runs import SHIPPED, SHIPPED_ENSEMBLE, SHIPPED_LARGE, find_model, shipped_dir

    empty = tmp_path / "runs"
    # Recognition gets the model that read photos best (README, "predict"); the others are a flag away.
    assert resolve_model(None, empty) == resolve_model(SHIPPED_ENSEMBLE, empty) == \
        shipped_dir(SHIPPED_ENSEMBLE) / SHIPPED_FILE
    assert load_runner(None, empty).name == f"{SHIPPED_ENSEMBLE} ({SHIPPED_FILE})"
    assert resolve_model(SHIPPED, empty) == shipped_dir() / SHIPPED_FILE
    assert resolve_model(SHIPPED_LARGE, empty) == shipped_dir(SHIPPED_LARGE) / SHIPPED_FILE
    # commands that explain a Keras model fall back to the reference one; run lookup does not
    assert find_model(None, empty, shipped_fallback=True) == shipped_dir() / "model.keras"
    with pytest.raises(FerkerasError, match="no runs in .*name the model installed with ferkeras: shipped"):
        find_model(None, empty)
    # and nothing is written into the installed package: figures go to ./shipped_viz
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["viz", "saliency", "--image", GRACE_HOPPER], monkeypatch, capsys)
    assert code == 0 and out.strip() == "Wrote shipped_viz/saliency_vanilla.png", err
    assert (tmp_path / "shipped_viz" / "saliency_vanilla.png").is_file()
    assert not list(shipped_dir().glob("*_viz"))


def test_recognition_passes_over_runs_on_synthetic_faces(trained_synthetic_run, tmp_path, monkeypatch,
                                                         capsys):
    """The quick start's run, on drawn faces, never reads a user's photo unless named: predict's
    default is the latest run trained on real faces, else the shipped ensemble."""
    import shutil

    from ferkeras.runners import SHIPPED_FILE, resolve_model
    from ferkeras.runs import SHIPPED_ENSEMBLE, shipped_dir

    runs = tmp_path / "runs"
    quick = runs / "quick"
    shutil.copytree(trained_synthetic_run, quick)
    ensemble = shipped_dir(SHIPPED_ENSEMBLE) / SHIPPED_FILE
    assert resolve_model(None, runs) == ensemble
    assert resolve_model("quick", runs) == quick / "model.keras"  # named, it answers
    code, out, err = run_main(["predict", GRACE_HOPPER, "--runs-dir", str(runs)], monkeypatch, capsys)
    assert code in (0, None) and err.startswith(f"model: {SHIPPED_ENSEMBLE} ({SHIPPED_FILE})"), err

    # A run on a folder of photos (its config.json says so), older than the synthetic one: taken.
    mine = runs / "mine"
    shutil.copytree(trained_synthetic_run, mine)
    config = json.loads((mine / "config.json").read_text())
    config["options"]["data"] = "my_faces/"
    (mine / "config.json").write_text(json.dumps(config))
    older = (quick / "config.json").stat().st_mtime - 60
    os.utime(mine / "config.json", (older, older))
    assert resolve_model(None, runs) == mine / "model.keras"
    # a run whose config.json cannot be read is passed over as well, not taken blind
    (runs / "broken").mkdir()
    (runs / "broken" / "config.json").write_text("{not json")
    assert resolve_model(None, runs) == mine / "model.keras"


@pytest.mark.parametrize("orientation", [None, 3, 6, 8])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_jpeg_decodes_to_pillows_upright_pixels(tmp_path, orientation, mode):
    """JPEGs go through OpenCV (4x faster): the very pixels Pillow gives, turned by the EXIF
    orientation as Pillow turns them; a truncated one still fails in one line naming it."""
    import io

    from PIL import ImageOps

    from ferkeras.media.images import decode_image

    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert(mode)
    exif = photo.getexif()
    if orientation:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90, exif=exif)
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    assert expected.shape[:2] == ((512, 600) if orientation in (6, 8) else (600, 512))
    np.testing.assert_array_equal(decode_image(data, "upload"), expected)
    (tmp_path / "photo.jpg").write_bytes(data)
    np.testing.assert_array_equal(read_image(tmp_path / "photo.jpg"), expected)
    with pytest.raises(FerkerasError, match=r"^upload: corrupt or unreadable image: .*truncated"):
        decode_image(data[:len(data) // 2], "upload")


def _publictest_faces(fer2013: Path, per_class: int) -> np.ndarray:
    """The first per_class PublicTest faces of each class, (N, 48, 48) uint8."""
    paths = [p for name in CLASS_NAMES for p in sorted((fer2013 / "test" / name).glob("*.jpg"))[:per_class]]
    return np.stack([np.asarray(Image.open(p).convert("L")) for p in paths])


def _wider(face: np.ndarray, margin: int = 7) -> np.ndarray:
    """The face seen wider, as another data set might crop it: 7 px of repeated edge on each side
    (62 px, 1.29x FER2013's side), shrunk back to 48x48."""
    import cv2

    padded = cv2.copyMakeBorder(face, margin, margin, margin, margin, cv2.BORDER_REPLICATE)
    return cv2.resize(padded, face.shape[::-1], interpolation=cv2.INTER_AREA)


def test_a_48x48_crop_is_read_again_as_its_landmarks_frame_it(fer2013_dir):
    """A real 48x48 crop cut wider than FER2013's: predict finds its face and frames it by its
    landmarks, nearly as it frames the crop as FER2013 cut it, and averages that view's answer
    with the crop's as it is."""
    from ferkeras.predict import FaceRecognizer

    faces = _publictest_faces(fer2013_dir, 2)
    recognizer = FaceRecognizer("shipped", tta="none")
    viewed = 0
    for face in faces:
        wide = _wider(face)
        found = recognizer.find(np.repeat(wide[..., None], 3, axis=2), detect=None)
        assert found.whole_image and found.crops.shape == (1, 48, 48)
        np.testing.assert_array_equal(found.crops[0], wide)  # the crop itself, untouched
        as_cut = recognizer.landmark_view(np.repeat(face[..., None], 3, axis=2), face)
        if found.views is None or as_cut is None:
            continue
        viewed += 1
        # the view hardly depends on how the crop was cut: nearer the original's view than the
        # wider crop is to the original (mean gray levels apart, 4.8-27.6 against 20.3-50.9)
        assert np.abs(found.views[0].astype(int) - as_cut).mean() < np.abs(wide.astype(int) - face).mean()
        expected = (recognizer.classify(found.crops) + recognizer.classify(found.views)) / 2
        np.testing.assert_allclose(recognizer.classify_found([found]), expected, atol=1e-6)
    assert viewed >= 11, viewed  # of 14 faces: BlazeFace finds 92-96% of such crops


def test_only_a_48x48_crop_taken_whole_gets_a_second_view(fer2013_dir, tmp_path):
    """reframe=False (predict --no-reframe), --no-detect and a photo's faces: one view each; the
    batch's answers keep their images' order."""
    from ferkeras.predict import FaceRecognizer

    face = _wider(_publictest_faces(fer2013_dir, 1)[3])  # a happy face
    rgb = np.repeat(face[..., None], 3, axis=2)
    recognizer = FaceRecognizer("shipped", tta="none")
    assert recognizer.find(rgb, detect=None).views is not None
    assert recognizer.find(rgb, detect=False).views is None
    assert FaceRecognizer("shipped", tta="none", reframe=False).find(rgb, detect=None).views is None
    photo = recognizer.find(read_image(GRACE_HOPPER), detect=None)
    assert photo.views is None and len(photo.crops) == 1
    found = [photo, recognizer.find(rgb, detect=None), photo]
    probabilities = recognizer.classify_found(found)
    np.testing.assert_allclose(probabilities[[0, 2]], recognizer.classify(photo.crops[[0, 0]]), atol=1e-6)
    np.testing.assert_allclose(probabilities[1], recognizer.classify_found(found[1:2])[0], atol=1e-6)
    # the CLI's flag: the crop as it is only
    Image.fromarray(face).save(tmp_path / "wide.png")
    answers = {}
    for flag in ([], ["--no-reframe"]):
        out = subprocess.run([*FERKERAS, "predict", str(tmp_path / "wide.png"), "--model", "shipped",
                              "--tta", "none", "--json", *flag], capture_output=True, text=True, check=True)
        answers[bool(flag)] = list(json.loads(out.stdout)[0]["faces"][0]["probabilities"].values())
    np.testing.assert_allclose(answers[True], recognizer.classify(face[None])[0], atol=1e-4)
    np.testing.assert_allclose(answers[False], recognizer.classify_found(found[1:2])[0], atol=1e-4)


def test_a_photo_blazeface_misses_is_answered_through_haar(fer2013_dir):
    """bench/pipeline.py's blurred photos of real faces: where BlazeFace finds none, predict's
    search of a still image asks Haar (media.detectors.FALLBACK_DETECTOR) and answers its face."""
    from conftest import load_bench

    from ferkeras.media.detectors import make_detector
    from ferkeras.media.images import to_gray
    from ferkeras.predict import FaceRecognizer

    pipeline = load_bench("pipeline")
    rng = np.random.default_rng(0)
    alone, haar = make_detector(fallback=None), make_detector("haar")
    recognizer = FaceRecognizer("shipped")
    for file in sorted((fer2013_dir / "test" / "happy").glob("*.jpg"))[:60]:
        photo = pipeline.photo(np.asarray(Image.open(file).convert("L")), "blur", rng)
        gray = to_gray(photo)
        if not alone.framed(photo, gray) and haar.framed(photo, gray):
            break
    else:
        pytest.fail("no blurred photo of 60 that BlazeFace misses and Haar finds")
    found, faces = recognizer.recognize(photo)
    assert [d.box for d in found.detections] == [d.box for d in haar.framed(photo, gray)]
    assert faces and all(face.landmarks is None for face in faces)  # Haar's boxes: no landmarks
    assert not FaceRecognizer("shipped", fallback=None).recognize(photo)[1]  # without it: no face


def test_faces_lit_or_blurred_unlike_any_training_face_are_read_nearly_as_they_were(fer2013_dir, tmp_path):
    """301 PublicTest faces (43 of each class) at a quarter of their contrast, or of their
    brightness, or blurred: predict's clamps of the light and the sharpness (FaceRecognizer.light,
    .sharpen) win back much of what they lose (the shipped model, one view: 11-16 points for the
    light on seeded draws of 300); faces as FER2013 has them keep their answers. predict
    --no-light and --no-sharpen read them as they are."""
    import cv2

    from ferkeras.predict import FaceRecognizer

    faces = _publictest_faces(fer2013_dir, 43)
    labels = np.repeat(np.arange(len(CLASS_NAMES)), 43)
    clamped = FaceRecognizer("shipped", tta="none")
    as_lit, as_focused, as_they_are = (FaceRecognizer("shipped", tta="none", **off) for off in (
        {"light": False}, {"sharpen": False}, {"light": False, "sharpen": False}))
    assert np.mean(clamped.classify(faces).argmax(1) == as_they_are.classify(faces).argmax(1)) >= 0.97
    flat = np.rint(128 + 0.25 * (faces - 128.0)).astype(np.uint8)
    dark = np.rint(faces * 0.25).astype(np.uint8)
    blurred = np.stack([cv2.GaussianBlur(face, (0, 0), 1.2) for face in faces])
    for changed, without in ((flat, as_lit), (dark, as_lit), (blurred, as_focused)):
        gained = [np.mean(r.classify(changed).argmax(1) == labels) for r in (clamped, without)]
        assert gained[0] > gained[1] + 0.05, gained
    # the CLI's flags, on a flattened and blurred 48x48 crop (read as it is: --no-reframe)
    Image.fromarray(cv2.GaussianBlur(flat[0], (0, 0), 1.2)).save(tmp_path / "flat.png")
    answers = {}
    for flags in ([], ["--no-light"], ["--no-sharpen"]):
        out = subprocess.run([*FERKERAS, "predict", str(tmp_path / "flat.png"), "--model", "shipped",
                              "--tta", "none", "--no-reframe", "--json", *flags],
                             capture_output=True, text=True, check=True)
        answers[tuple(flags)] = list(json.loads(out.stdout)[0]["faces"][0]["probabilities"].values())
    face = np.asarray(Image.open(tmp_path / "flat.png"))[None]
    for flags, recognizer in (((), clamped), (("--no-light",), as_lit), (("--no-sharpen",), as_focused)):
        np.testing.assert_allclose(answers[flags], recognizer.classify(face)[0], atol=1e-4,
                                   err_msg=str(flags))
    assert len({tuple(np.round(a, 3)) for a in answers.values()}) == 3  # three readings
