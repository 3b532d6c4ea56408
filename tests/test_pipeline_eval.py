"""Tests for ferkeras.pipeline_eval (`ferkeras evaluate --pipeline`): labelled images read as predict
reads them, scored with evaluate's metrics."""

import csv
import shutil

import numpy as np
import pytest
from conftest import load_bench, run_main
from PIL import Image

from ferkeras.errors import FerkerasError
from ferkeras.evaluate import evaluate
from ferkeras.pipeline_eval import evaluate_pipeline
from ferkeras.spec import CLASS_NAMES


def faceless(folder, names=("angry", "happy")):
    """folder/<class>/*.png: smooth gradients and stripes, in which no detector finds a face."""
    for i, name in enumerate(names):
        (folder / name).mkdir(parents=True)
        ramp = np.tile(np.linspace(0, 255, 200, dtype=np.float32), (160, 1))
        stripes = ramp if i % 2 else (ramp // 32 * 32)
        Image.fromarray(stripes.astype(np.uint8)).save(folder / name / f"scene{i}.png")
    return folder


def test_a_photo_with_no_face_is_a_wrong_answer_and_predict_answers_the_rest(tmp_path, fer2013_dir):
    """Real PublicTest faces set in photo-like frames (bench/pipeline.py's), a 48x48 crop, and a
    scene with no face: each answer is predict's largest face's, the faceless scene counts wrong."""
    from ferkeras.predict import predict

    pipeline = load_bench("pipeline")
    photos = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for name in ("angry", "happy", "surprise"):
        (photos / name).mkdir(parents=True)
        faces = sorted((fer2013_dir / "test" / name).glob("*.jpg"))[:2]
        for i, file in enumerate(faces):
            face = np.asarray(Image.open(file).convert("L"))
            Image.fromarray(pipeline.photo(face, "photo", rng)).save(photos / name / f"photo{i}.jpg")
        shutil.copy(faces[0], photos / name / "crop.jpg")  # a 48x48 crop, read as a crop
    faceless(tmp_path / "scenes", ["surprise"])
    shutil.copy(tmp_path / "scenes" / "surprise" / "scene0.png", photos / "surprise")

    result = evaluate_pipeline("shipped", data=str(photos), out=tmp_path / "out", echo=lambda line: None)
    answers = result["files"][-1]
    assert answers.endswith("answers_val_pipeline.csv")  # other data's only split, as evaluate names it
    with open(answers, newline="") as handle:
        rows = {row["image"]: row for row in csv.DictReader(handle)}
    assert len(rows) == result["images"] == 3 * 3 + 1
    expected = {}
    for image in predict([photos], model="shipped"):
        largest = max(image.faces, key=lambda f: f.box[2] * f.box[3], default=None)
        name = image.path.relative_to(photos).as_posix()  # as the data folder names it
        expected[name] = largest
        assert int(rows[name]["faces"]) == len(image.faces)
    assert set(rows) == set(expected)
    for name, face in expected.items():
        assert rows[name]["answer"] == (face.label if face else ""), name
    assert rows["surprise/scene0.png"]["answer"] == ""  # no face: no answer
    unanswered = sum(face is None for face in expected.values())
    assert result["unanswered"] == result["tta"]["unanswered"] == unanswered >= 1
    assert result["pipeline"]["faces_found"] == len(rows) - unanswered
    right = sum(row["answer"] == row["true"] for row in rows.values())
    assert result["tta"]["accuracy"] == pytest.approx(right / len(rows))  # the CSV is predict's flip TTA
    recall = [np.mean([r["answer"] == n for r in rows.values() if r["true"] == n])
              for n in CLASS_NAMES if any(r["true"] == n for r in rows.values())]
    assert result["tta"]["balanced_accuracy"] == pytest.approx(np.mean(recall))
    assert np.array(result["confusion_matrix"]).sum() == len(rows) - unanswered  # answers only
    # evaluate itself reads the same faces, and stops at the photo with none (or passes over it)
    with pytest.raises(FerkerasError, match="scene0.png: no face found"):
        evaluate("shipped", data=str(photos), out=tmp_path / "plain", echo=lambda line: None)
    plain = evaluate("shipped", data=str(photos), out=tmp_path / "plain", skip_bad=True,
                     echo=lambda line: None)
    assert plain["images"] == len(rows) - unanswered


def test_each_photo_is_read_once_and_an_unreadable_one_named_or_passed_over(tmp_path, fer2013_dir,
                                                                            monkeypatch):
    """A folder of photos is listed, not decoded: its faces are found once, by predict's reading
    (never by the loader's, which would find each again); a corrupt file stops it in one line
    naming the file, or --skip-bad leaves it out and says so."""
    import ferkeras.data.folders

    pipeline = load_bench("pipeline")
    photos = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for name in ("happy", "surprise"):
        (photos / name).mkdir(parents=True)
        face = np.asarray(Image.open(sorted((fer2013_dir / "test" / name).glob("*.jpg"))[0]).convert("L"))
        Image.fromarray(pipeline.photo(face, "photo", rng)).save(photos / name / "photo.jpg")

    def decoded(*args):
        raise AssertionError("the loader searched a photo for its face")

    monkeypatch.setattr(ferkeras.data.folders, "_face_of_photo", decoded)
    quiet = dict(out=tmp_path / "out", echo=lambda line: None)
    result = evaluate_pipeline("shipped", data=str(photos), **quiet)
    assert result["images"] == 2 and result["pipeline"]["faces_found"] == 2
    (photos / "happy" / "broken.jpg").write_bytes(open(photos / "happy" / "photo.jpg", "rb").read()[:300])
    with pytest.raises(FerkerasError, match=r"broken.jpg: corrupt or unreadable image"):
        evaluate_pipeline("shipped", data=str(photos), **quiet)
    lines = []
    again = evaluate_pipeline("shipped", data=str(photos), out=tmp_path / "out", echo=lines.append,
                              skip_bad=True)
    assert again["images"] == 2 and again["accuracy"] == result["accuracy"]
    skip_lines = [line for line in lines if line.startswith("--skip-bad: skipped 1 unreadable image file")]
    assert len(skip_lines) == 1 and "broken.jpg" in skip_lines[0], lines
    with open(again["files"][-1], newline="") as handle:
        assert [row["image"] for row in csv.DictReader(handle)] == ["happy/photo.jpg", "surprise/photo.jpg"]


def test_on_48x48_crops_read_as_they_are_it_measures_what_evaluate_does(trained_synthetic_run, tmp_path):
    """Without the landmark view and the light clamp a 48x48 crop is read as evaluate reads it: the
    same figures, up to a near-tie that batches of another size may tip (two float paths: the
    runner's, Keras')."""
    quiet = dict(out=tmp_path, echo=lambda line: None)
    plain = evaluate(trained_synthetic_run, tta="flip", **quiet)
    read = evaluate_pipeline(trained_synthetic_run, reframe=False, light=False, **quiet)
    assert read["split"] == plain["split"] + "_pipeline" and read["unanswered"] == 0
    tie = 2 / read["images"]  # two images' answers
    for ours, theirs in ((read, plain), (read["tta"], plain["tta"])):
        assert ours["accuracy"] == pytest.approx(theirs["accuracy"], abs=tie)
        assert ours["balanced_accuracy"] == pytest.approx(theirs["balanced_accuracy"], abs=2 * tie)
        moved = np.abs(np.array(ours["confusion_matrix"]) - np.array(theirs["confusion_matrix"])).sum()
        assert moved <= 4  # identical on this machine
    # its own files beside evaluate's, none overwritten
    assert (tmp_path / "metrics_val.json").is_file() and (tmp_path / "metrics_val_pipeline.json").is_file()


def test_images_without_any_face_are_one_line_error(tmp_path, monkeypatch, capsys):
    folder = faceless(tmp_path / "scenes")
    with pytest.raises(FerkerasError, match="no face found in any of its 2 images"):
        evaluate_pipeline("shipped", data=str(folder), out=tmp_path / "out", echo=lambda line: None)
    code, out, err = run_main(["evaluate", "shipped", "--data", str(folder), "--pipeline",
                               "--out", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 2 and "no face found in any" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing written


def test_predicts_options_need_pipeline(tmp_path, monkeypatch, capsys):
    code, out, err = run_main(["evaluate", "shipped", "--data", "synthetic:100", "--detector", "haar"],
                              monkeypatch, capsys)
    assert code == 2 and "--detector: only with --pipeline" in err
    code, out, err = run_main(["evaluate", "shipped", "--data", "synthetic:100", "--no-light"],
                              monkeypatch, capsys)
    assert code == 2 and "--no-light: only with --pipeline" in err
