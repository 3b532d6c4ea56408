"""Tests for ferkeras.data: the three FER2013 layouts, validation errors, the cache, splitting."""

import json
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import FER2013_DIR, real_class_folders, require_fer2013
from PIL import Image

import ferkeras
from ferkeras import data
from ferkeras.data import Dataset, Split, cache, csvfile, folders, load_dataset, train_val_splits
from ferkeras.errors import FerkerasError
from ferkeras.spec import CLASS_NAMES

FER2013 = FER2013_DIR  # ../shared/datasets/fer2013, or $FER2013_DIR
USER_CACHE_ENV = os.environ.get("FERKERAS_CACHE_DIR")  # the real-data test keeps the user's cache

TRAIN_LABELS = np.repeat(np.arange(7), 2)  # 14 images, 2 per class, grouped by class
TEST_LABELS = np.arange(7)
PRIVATE_LABELS = np.array([0, 3])


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own cache folder, never the user's."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("FERKERAS_CACHE_DIR", str(cache))
    return cache


def make_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


TRAIN_IMAGES = make_images(len(TRAIN_LABELS), 0)
TEST_IMAGES = make_images(len(TEST_LABELS), 1)
PRIVATE_IMAGES = make_images(len(PRIVATE_LABELS), 2)


def pixels_text(image: np.ndarray) -> str:
    return " ".join(map(str, image.ravel().tolist()))


def fer2013_lines() -> list[str]:
    lines = ["emotion,pixels,Usage"]
    for images, labels, usage in ((TRAIN_IMAGES, TRAIN_LABELS, "Training"),
                                  (TEST_IMAGES, TEST_LABELS, "PublicTest"),
                                  (PRIVATE_IMAGES, PRIVATE_LABELS, "PrivateTest")):
        lines += [f"{label},{pixels_text(image)},{usage}"
                  for image, label in zip(images, labels, strict=True)]
    return lines


def write_fer2013(folder: Path, lines: list[str] | None = None, newline: str = "\n",
                  bom: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fer2013.csv"
    text = newline.join(fer2013_lines() if lines is None else lines) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def write_homework(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    train = ["label,feature"] + [f"{label},{pixels_text(image)}"
                                 for image, label in zip(TRAIN_IMAGES, TRAIN_LABELS, strict=True)]
    test = ["id,feature"] + [f"{i},{pixels_text(image)}" for i, image in enumerate(TEST_IMAGES)]
    (folder / "train.csv").write_text("\n".join(train) + "\n")
    (folder / "test.csv").write_text("\n".join(test) + "\n")
    return folder


def write_folders(root: Path, splits=None) -> Path:
    splits = splits or {"train": (TRAIN_IMAGES, TRAIN_LABELS), "test": (TEST_IMAGES, TEST_LABELS)}
    for split, (images, labels) in splits.items():
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / CLASS_NAMES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"img_{i:03d}.png")
    return root


def assert_split(split: Split, images: np.ndarray, labels: np.ndarray | None) -> None:
    assert split.images.dtype == np.uint8 and split.images.shape == images.shape
    np.testing.assert_array_equal(split.images, images)
    if labels is None:
        assert split.labels is None
    else:
        assert split.labels.dtype == np.int64
        np.testing.assert_array_equal(split.labels, labels)


# ---- formats ---------------------------------------------------------------------------------

def test_three_formats_give_identical_pixels_and_labels(tmp_path):
    fer = load_dataset(write_fer2013(tmp_path / "csv"))
    homework = load_dataset(write_homework(tmp_path / "homework"))
    folders = load_dataset(write_folders(tmp_path / "folders"))
    formats = (fer.format, homework.format, folders.format)
    assert formats == ("fer2013-csv", "homework-csv", "folders")
    for dataset in (fer, homework, folders):
        assert_split(dataset.splits["train"], TRAIN_IMAGES, TRAIN_LABELS)
    assert_split(fer.splits["test"], TEST_IMAGES, TEST_LABELS)
    assert_split(folders.splits["test"], TEST_IMAGES, TEST_LABELS)
    assert_split(homework.splits["test"], TEST_IMAGES, None)
    assert_split(fer.splits["private_test"], PRIVATE_IMAGES, PRIVATE_LABELS)


def test_split_names_sources_and_describe(tmp_path):
    csv_path = write_fer2013(tmp_path / "csv")
    by_file, by_folder = load_dataset(csv_path), load_dataset(tmp_path / "csv")
    assert list(by_file.splits) == list(by_folder.splits) == ["train", "test", "private_test"]
    assert by_file.source == str(csv_path.resolve())
    summary = json.loads(json.dumps(load_dataset(write_homework(tmp_path / "hw")).describe()))
    assert summary == {"source": str((tmp_path / "hw").resolve()), "format": "homework-csv",
                       "splits": {"train": {"images": 14, "class_counts": [2] * 7},
                                  "test": {"images": 7, "class_counts": None}}}
    assert len(by_file.splits["train"]) == 14 and by_file.splits["test"].class_counts() == [1] * 7


def test_homework_files_loaded_one_at_a_time(tmp_path):
    folder = write_homework(tmp_path / "hw")
    assert list(load_dataset(folder / "train.csv").splits) == ["train"]
    test_only = load_dataset(folder / "test.csv")
    assert list(test_only.splits) == ["test"] and test_only.splits["test"].labels is None


def test_bom_crlf_quotes_and_blank_lines_are_tolerated(tmp_path):
    lines = ['"{}","{}","{}"'.format(*line.split(",")) for line in fer2013_lines()]
    lines.insert(5, "")
    dataset = load_dataset(write_fer2013(tmp_path, lines, newline="\r\n", bom=True))
    assert_split(dataset.splits["train"], TRAIN_IMAGES, TRAIN_LABELS)
    assert_split(dataset.splits["test"], TEST_IMAGES, TEST_LABELS)


def test_folder_of_class_folders_is_one_train_split(tmp_path):
    write_folders(tmp_path / "data")
    (tmp_path / "data" / "train" / "happy").rename(tmp_path / "data" / "train" / "HAPPY")
    faces = (tmp_path / "data" / "train").rename(tmp_path / "my_faces")  # any name: still train
    dataset = load_dataset(faces)
    assert list(dataset.splits) == ["train"]
    assert_split(dataset.splits["train"], TRAIN_IMAGES, TRAIN_LABELS)
    paths, labels = data.split_files(faces)  # the files in the loader's order
    np.testing.assert_array_equal(labels, TRAIN_LABELS)
    np.testing.assert_array_equal(folders._decode_images([str(p) for p in paths]), TRAIN_IMAGES)


def test_folder_images_keep_their_files_through_the_cache_and_splits(tmp_path, private_cache):
    faces = write_folders(tmp_path / "data") / "train"
    paths, _ = data.split_files(faces)
    decoded, cached = load_dataset(faces), load_dataset(faces)
    assert len(list(private_cache.glob("*.npz"))) == 1  # the second load came from the cache
    for dataset in (decoded, cached):
        np.testing.assert_array_equal(dataset.splits["train"].files, [str(p) for p in paths])
    for split in train_val_splits(cached, "0.5"):  # a held-out part keeps each image's own file
        assert len(split.files) == len(split) < len(paths)
        np.testing.assert_array_equal(folders._decode_images(list(split.files)), split.images)
    assert load_dataset(write_homework(tmp_path / "hw")).splits["train"].files is None


def test_cache_of_a_folder_under_its_old_split_name_is_rebuilt(tmp_path, monkeypatch):
    faces = (write_folders(tmp_path / "data") / "train").rename(tmp_path / "my_faces")
    stamp: list = []
    folders._list_split(faces, faces, stamp)
    # what an earlier version cached: the one split named after the folder
    cache.write_cache(cache.cache_path(faces.resolve(), stamp), "folders",
                      {"my_faces": Split(TRAIN_IMAGES, TRAIN_LABELS)})
    dataset = load_dataset(faces)
    assert list(dataset.splits) == ["train"]
    assert_split(dataset.splits["train"], TRAIN_IMAGES, TRAIN_LABELS)
    monkeypatch.setattr(folders, "_decode_image", refuse)
    assert list(load_dataset(faces).splits) == ["train"]  # the rebuilt cache serves the next load


def test_48x48_images_of_any_mode_become_gray(tmp_path):
    folder = tmp_path / "faces" / "happy"
    folder.mkdir(parents=True)
    rgb = np.zeros((48, 48, 3), np.uint8) + np.array([200, 100, 50], np.uint8)
    Image.fromarray(rgb).save(folder / "a_rgb.png")
    Image.fromarray(np.dstack([rgb, np.full((48, 48), 128, np.uint8)])).save(folder / "b_rgba.png")
    Image.fromarray(np.full((48, 48), 40000, np.uint16)).save(folder / "c_16bit.png")
    Image.fromarray(np.full((48, 48), 90, np.uint8)).convert("P").save(folder / "e_palette.png")
    Image.fromarray(np.full((48, 48, 3), 120, np.uint8)).save(folder / "f.jpg", quality=95)
    images = load_dataset(tmp_path / "faces").splits["train"].images
    assert images.shape == (5, 48, 48) and images.dtype == np.uint8
    expected_rgb = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    assert abs(int(images[0].mean()) - expected_rgb) <= 1
    assert abs(int(images[1].mean()) - expected_rgb) <= 1
    assert images[2].min() == images[2].max() == round(40000 / 65535 * 255)  # scaled, not clipped
    assert images[3].min() == images[3].max() == 90
    assert abs(float(images[4].mean()) - 120) <= 2


def test_a_photo_gives_its_face_as_predict_crops_it_and_a_faceless_one_is_named(tmp_path):
    """A photo in a class folder is what `train --data my_photos/` reads: its largest face, cropped
    as predict crops it, never the whole picture shrunk to 48x48."""
    import matplotlib.cbook

    from ferkeras.media.images import read_image
    from ferkeras.predict import FaceRecognizer

    grace = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    folder = tmp_path / "photos" / "happy"
    folder.mkdir(parents=True)
    shutil.copy(grace, folder / "grace.jpg")
    Image.fromarray(np.full((150, 200), 77, np.uint8)).save(folder / "wall.png")
    with pytest.raises(FerkerasError, match=r"wall.png: no face found in this 200x150 image"):
        load_dataset(tmp_path / "photos")
    dataset = load_dataset(tmp_path / "photos", skip_bad=True)
    assert "wall.png: no face found" in dataset.skip_report()
    (face,) = dataset.splits["train"].images
    # one LiteRT thread, as the loader runs it: the same float path, so the same pixels
    expected = FaceRecognizer("shipped", threads=1).find(read_image(grace)).largest().crops[0]
    np.testing.assert_array_equal(face, expected)
    shrunk = np.asarray(Image.open(grace).convert("L").resize((48, 48)), np.float32)
    assert np.abs(face - shrunk).mean() > 20  # not the whole photo
    # evaluate --pipeline's: listed, not decoded (it reads each file itself, as predict does)
    listed = load_dataset(tmp_path / "photos", decode=False).splits["train"]
    assert listed.images is None and len(listed) == 2 and listed.labels.tolist() == [3, 3]  # happy
    assert [Path(f).name for f in listed.files] == ["grace.jpg", "wall.png"]


def test_hidden_files_and_os_litter_are_ignored(tmp_path):
    root = write_folders(tmp_path / "data")
    (root / ".DS_Store").write_bytes(b"\0junk")
    (root / "train" / "angry" / ".DS_Store").write_bytes(b"\0junk")
    (root / "train" / "angry" / "._img_000.png").write_bytes(b"\0junk")
    (root / ".git").mkdir()
    (root / "__MACOSX" / "train").mkdir(parents=True)
    (root / "train" / "Thumbs.db").write_bytes(b"\0junk")
    dataset = load_dataset(root)
    assert list(dataset.splits) == ["train", "test"]
    assert_split(dataset.splits["train"], TRAIN_IMAGES, TRAIN_LABELS)


def test_split_files_lists_a_folder_split_in_the_loaders_order(tmp_path):
    root = write_folders(tmp_path / "data")
    (root / "train" / "angry" / ".DS_Store").write_bytes(b"\0junk")
    paths, labels = data.split_files(root / "train")
    train = load_dataset(root).splits["train"]
    assert all(p.parent.parent == root / "train" for p in paths)
    np.testing.assert_array_equal(labels, train.labels)
    np.testing.assert_array_equal(folders._decode_images([str(p) for p in paths]), train.images)


def test_empty_class_folder_is_an_error_that_skip_bad_passes_over(tmp_path):
    root = write_folders(tmp_path / "data")
    (root / "test" / "disgust" / "img_001.png").unlink()
    with pytest.raises(FerkerasError, match="test/disgust: empty class folder"):
        load_dataset(root)
    dataset = load_dataset(root, skip_bad=True)
    assert dataset.splits["test"].class_counts() == [1, 0, 1, 1, 1, 1, 1]
    assert dataset.skip_report().startswith("--skip-bad: skipped 1 bad file or folder (first: ")


def test_other_data_sets_class_folders_are_read_and_contempt_is_named(tmp_path):
    """CK+'s layout: anger/ and sadness/ are angry and sad; contempt/, none of the seven classes,
    stops the load naming it, and --skip-bad leaves its images out, saying how many."""
    root = write_folders(tmp_path / "data", {"train": (TRAIN_IMAGES, TRAIN_LABELS)})
    (root / "train" / "angry").rename(root / "train" / "anger")
    (root / "train" / "sad").rename(root / "train" / "Sadness")
    contempt = root / "train" / "contempt"
    contempt.mkdir()
    for i in range(3):
        Image.fromarray(TRAIN_IMAGES[i]).save(contempt / f"c_{i}.png")
    with pytest.raises(FerkerasError, match=r"train/contempt: unknown class folder 'contempt' .*"
                                            r"--skip-bad passes over it"):
        load_dataset(root)
    dataset = load_dataset(root, skip_bad=True)
    assert_split(dataset.splits["train"], TRAIN_IMAGES, TRAIN_LABELS)  # as if named angry/, sad/
    report = dataset.skip_report()
    assert report.startswith("--skip-bad: skipped 1 bad file or folder (first: ")
    assert "train/contempt: unknown class folder" in report and report.endswith("its 3 images left out)")
    # a folder of class folders under other names is still one split, train
    only = write_folders(tmp_path / "ck", {"x": (TRAIN_IMAGES, TRAIN_LABELS)}) / "x"
    (only / "surprise").rename(only / "surprised")
    assert list(load_dataset(only).splits) == ["train"]


def test_thread_pool_and_single_thread_decode_alike(tmp_path):
    root = write_folders(tmp_path / "data")
    paths = sorted(str(p) for p in root.rglob("*.png"))
    np.testing.assert_array_equal(folders._decode_images(paths, threads=1),
                                  folders._decode_images(paths, threads=2))


# ---- errors ----------------------------------------------------------------------------------

def replace_line(number: int, old: str, new: str):
    """Edit the 1-based line `number` of the fer2013.csv lines."""
    def edit(lines):
        lines[number - 1] = lines[number - 1].replace(old, new, 1)
        return lines
    return edit


CSV_ERRORS = {  # case: (edit of the good lines, expected message after the file name)
    "short row": (replace_line(3, " ", ""), "line 3: expected 2304 pixels, got 2303"),
    "long row": (replace_line(4, ",Training", " 7,Training"),
                 "line 4: expected 2304 pixels, got 2305"),
    "non-numeric": (replace_line(2, ",", ",x"), "line 2: pixel 1 is not an integer: 'x"),
    "256": (lambda lines: lines[:5] + ["0," + " ".join(["256"] + ["0"] * 2303) + ",Training"],
            "line 6: pixel 1 value 256 is outside 0..255"),
    "-1": (lambda lines: lines[:6] + ["0," + " ".join(["0", "-1"] + ["0"] * 2302) + ",Training"],
           "line 7: pixel 2 value -1 is outside 0..255"),
    "label 7": (replace_line(2, "0,", "7,"), "line 2: label must be 0..6"),
    "label text": (replace_line(3, "0,", "sad,"), "line 3: label must be 0..6"),
    "unknown usage": (replace_line(5, ",Training", ",Validation"),
                      "line 5: unknown Usage 'Validation'"),
    "missing column": (lambda lines: ["emotion,pixels"] + [x.rsplit(",", 1)[0] for x in lines[1:]],
                       "line 1: missing column 'usage'"),
    "extra column": (replace_line(8, ",Training", ",Training,1"),
                     "line 8: expected 3 columns, got 4"),
    "no header": (lambda lines: lines[1:], "line 1: unrecognized header"),
    "empty file": (lambda lines: [], "empty file"),
    "header only": (lambda lines: lines[:1], "header only, no data rows"),
}


@pytest.mark.parametrize("case", list(CSV_ERRORS))
def test_bad_csv_raises_error_naming_file_and_line(tmp_path, case):
    edit, expected = CSV_ERRORS[case]
    path = write_fer2013(tmp_path, edit(fer2013_lines()))
    with pytest.raises(FerkerasError) as error:
        load_dataset(path)
    message = str(error.value)
    assert str(path) in message and expected in message, message
    assert "\n" not in message


def test_binary_file_is_not_a_csv(tmp_path):
    path = tmp_path / "faces.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00")
    with pytest.raises(FerkerasError, match="faces.csv"):
        load_dataset(path)


def make_folder_problem(root: Path, case: str) -> Path:
    """Build a broken folder dataset; return the path the error message must name."""
    if case == "missing path":
        return root / "nowhere"
    write_folders(root)
    if case == "unknown class":
        (root / "train" / "joy").mkdir()
        return root / "train" / "joy"
    if case == "split without class folders":
        (root / "notes").mkdir()
        (root / "notes" / "readme.txt").write_text("hi")
        return root / "notes"
    if case == "no class folders at all":
        empty = root.parent / "empty"
        empty.mkdir()
        (empty / "a.png").write_bytes(b"")
        return empty
    if case == "split with zero images":
        for image in (root / "test").rglob("*.png"):
            image.unlink()
        return root / "test"
    if case == "truncated image":
        target = root / "train" / "fear" / "img_004.png"
        target.write_bytes(target.read_bytes()[:60])
        return target
    if case == "not an image":
        target = root / "test" / "sad" / "notes.txt"
        target.write_text("not pixels")
        return target
    if case == "dangling link":
        target = root / "train" / "happy" / "gone.png"
        target.symlink_to(root / "nowhere.png")
        return target
    if case == "nested folder":
        target = root / "train" / "sad" / "more"
        target.mkdir()
        return target
    raise AssertionError(case)


FOLDER_ERRORS = ["missing path", "unknown class", "split without class folders",
                 "no class folders at all", "split with zero images", "truncated image",
                 "not an image", "dangling link", "nested folder"]


@pytest.mark.parametrize("case", FOLDER_ERRORS)
def test_bad_folder_raises_error_naming_path(tmp_path, case):
    named = make_folder_problem(tmp_path / "data", case)
    path = tmp_path / ("data" if case != "no class folders at all" else "empty")
    with pytest.raises(FerkerasError) as error:
        load_dataset(path if case != "missing path" else named)
    assert str(named) in str(error.value), str(error.value)


# ---- cache -----------------------------------------------------------------------------------

def refuse(*args, **kwargs):
    raise AssertionError("decoded although a valid cache exists")


def test_second_folder_load_comes_from_cache(tmp_path, monkeypatch, private_cache):
    root = write_folders(tmp_path / "data")
    first = load_dataset(root)
    assert len(list(private_cache.glob("*.npz"))) == 1
    monkeypatch.setattr(folders, "_decode_image", refuse)
    second = load_dataset(root)
    assert second.format == "folders" and list(second.splits) == list(first.splits)
    for name in first.splits:
        assert_split(second.splits[name], first.splits[name].images, first.splits[name].labels)


def test_second_csv_load_comes_from_cache(tmp_path, monkeypatch):
    folder = write_homework(tmp_path / "hw")
    load_dataset(folder)
    monkeypatch.setattr(csvfile, "parse_csv", refuse)
    cached = load_dataset(folder)
    assert cached.format == "homework-csv"
    assert_split(cached.splits["test"], TEST_IMAGES, None)


def test_changed_data_invalidates_cache_and_drops_the_stale_file(tmp_path, monkeypatch,
                                                                 private_cache):
    root = write_folders(tmp_path / "data")
    load_dataset(root)
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(root / "train" / "angry" / "zzz.png")
    assert load_dataset(root).splits["train"].class_counts()[0] == 3
    assert len(list(private_cache.glob("*.npz"))) == 1


def test_corrupt_cache_is_rebuilt(tmp_path, private_cache):
    path = write_fer2013(tmp_path / "csv")
    load_dataset(path)
    (cache_file,) = private_cache.glob("*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:500])
    assert_split(load_dataset(path).splits["train"], TRAIN_IMAGES, TRAIN_LABELS)
    assert np.load(cache_file)["images_0"].shape == TRAIN_IMAGES.shape  # rewritten whole


def test_unwritable_cache_dir_just_skips_caching(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("FERKERAS_CACHE_DIR", str(tmp_path / "a_file" / "cache"))
    assert_split(load_dataset(write_fer2013(tmp_path)).splits["train"], TRAIN_IMAGES, TRAIN_LABELS)


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    assert data.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("FERKERAS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_dir() == tmp_path / "xdg" / "ferkeras"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "ferkeras"


# ---- train/validation splits -----------------------------------------------------------------

def labeled_dataset(counts: list[int], with_test: bool = True, masks: bool = False) -> Dataset:
    labels = np.repeat(np.arange(7), counts)
    train = Split(make_images(len(labels), 3), labels,
                  np.zeros((len(labels), 48, 48), bool) if masks else None)
    splits = {"train": train}
    if with_test:
        splits["test"] = Split(TEST_IMAGES, TEST_LABELS)
    return Dataset("memory", "synthetic", splits)


def test_auto_picks_the_test_split(tmp_path):
    dataset = load_dataset(write_fer2013(tmp_path))
    train, val = train_val_splits(dataset)
    assert train is dataset.splits["train"] and val is dataset.splits["test"]
    assert train_val_splits(dataset, "private_test")[1] is dataset.splits["private_test"]


def test_auto_without_labeled_test_holds_out_a_quarter(tmp_path):
    dataset = load_dataset(write_homework(tmp_path / "hw"))  # its test.csv is unlabeled
    dataset.splits["train"] = labeled_dataset([40] * 7).splits["train"]
    train, val = train_val_splits(dataset, "auto")
    assert (len(train), len(val)) == (210, 70) and val.class_counts() == [10] * 7


def test_fraction_is_stratified_and_deterministic_by_seed():
    counts = [40, 8, 40, 80, 40, 40, 40]
    dataset = labeled_dataset(counts)
    train, val = train_val_splits(dataset, "0.25", seed=5)
    assert val.class_counts() == [c // 4 for c in counts]
    assert [a + b for a, b in zip(train.class_counts(), val.class_counts(), strict=True)] == counts
    again = train_val_splits(dataset, "0.25", seed=5)[1]
    other = train_val_splits(dataset, "0.25", seed=6)[1]
    np.testing.assert_array_equal(val.images, again.images)
    assert not np.array_equal(val.images, other.images)
    combined = np.concatenate([train.images, val.images]).reshape(len(dataset.splits["train"]), -1)
    assert len(np.unique(combined, axis=0)) == len(combined)  # no image in both


def test_masks_travel_with_their_images():
    dataset = labeled_dataset([10] * 7, with_test=False, masks=True)
    source = dataset.splits["train"]
    source.masks[:] = (source.images > 128)
    train, val = train_val_splits(dataset, "0.3")
    for split in (train, val):
        assert split.masks.shape == split.images.shape
        np.testing.assert_array_equal(split.masks, split.images > 128)


@pytest.mark.parametrize("val", ["0", "1", "1.5", "-0.1", "nan"])
def test_bad_fraction_names_the_flag(val):
    with pytest.raises(FerkerasError, match="--val-split"):
        train_val_splits(labeled_dataset([4] * 7), val)


@pytest.mark.parametrize("val,expected", [("valid", "no split 'valid'"),
                                          ("test", "unlabeled split 'test'"),
                                          ("train", "--val-split train")])
def test_bad_split_name_lists_available_splits(tmp_path, val, expected):
    dataset = load_dataset(write_homework(tmp_path / "hw"))
    with pytest.raises(FerkerasError, match=expected) as error:
        train_val_splits(dataset, val)
    if val != "train":
        assert "splits: train, test (unlabeled)" in str(error.value)


def test_train_split_with_one_class_is_an_error():
    with pytest.raises(FerkerasError, match="only class happy"):
        train_val_splits(labeled_dataset([0, 0, 0, 12, 0, 0, 0]))


def test_missing_train_split_is_an_error(tmp_path):
    dataset = load_dataset(write_homework(tmp_path / "hw") / "test.csv")
    with pytest.raises(FerkerasError, match="no split 'train'"):
        train_val_splits(dataset)


def test_tiny_class_cannot_be_stratified():
    with pytest.raises(FerkerasError, match="--val-split 0.25"):
        train_val_splits(labeled_dataset([1, 4, 4, 4, 4, 4, 4], with_test=False))


# ---- synthetic -------------------------------------------------------------------------------

def test_synthetic_is_generated_not_cached(monkeypatch, private_cache):
    calls = []

    def generate(n, seed=0):
        calls.append((n, seed))
        labels = np.arange(n, dtype=np.int64) % 7
        return np.zeros((n, 48, 48), np.uint8), labels, np.zeros((n, 48, 48), bool)

    fake = types.ModuleType("ferkeras.synthetic")
    fake.generate = generate
    monkeypatch.setitem(sys.modules, "ferkeras.synthetic", fake)
    monkeypatch.setattr(ferkeras, "synthetic", fake, raising=False)
    for path in (None, "synthetic"):
        dataset = load_dataset(path)
        assert (dataset.source, dataset.format) == ("synthetic", "synthetic")
        assert dataset.splits["train"].masks.shape == (8000, 48, 48)
    assert calls == [(8000, 0), (2000, 1)] * 2
    assert not private_cache.exists()


def test_real_synthetic_generator_fits_split(monkeypatch):
    pytest.importorskip("ferkeras.synthetic")
    monkeypatch.setattr(data, "_SYNTHETIC_TRAIN_IMAGES", 70)
    monkeypatch.setattr(data, "_SYNTHETIC_TEST_IMAGES", 21)
    dataset = load_dataset()
    for name, n in (("train", 70), ("test", 21)):
        split = dataset.splits[name]
        assert split.images.dtype == np.uint8 and split.images.shape == (n, 48, 48)
        assert split.labels.dtype == np.int64 and split.masks.dtype == bool
    train, val = train_val_splits(dataset)
    assert val is dataset.splits["test"]


# ---- real FER2013 ----------------------------------------------------------------------------

def test_real_fer2013_folders(monkeypatch):
    require_fer2013(FER2013)  # skips with the reason, or fails in CI (FERKERAS_REQUIRE_DATA)
    if USER_CACHE_ENV is None:
        monkeypatch.delenv("FERKERAS_CACHE_DIR")  # the default cache makes a second run fast
    else:
        monkeypatch.setenv("FERKERAS_CACHE_DIR", USER_CACHE_ENV)
    dataset = load_dataset(FER2013)
    assert dataset.format == "folders" and list(dataset.splits) == ["train", "test"]
    train, test = dataset.splits["train"], dataset.splits["test"]
    assert train.images.shape == (28709, 48, 48) and test.images.shape == (3589, 48, 48)
    assert train.images.dtype == test.images.dtype == np.uint8
    assert train.class_counts() == [3995, 436, 4097, 7215, 4830, 3171, 4965]
    assert test.class_counts() == [467, 56, 496, 895, 653, 415, 607]
    assert train_val_splits(dataset)[1] is test


def test_a_folder_of_real_class_folders_is_a_labeled_train_split(fer2013_dir, tmp_path):
    faces = real_class_folders(fer2013_dir, tmp_path / "my_faces", per_class=8)
    dataset = load_dataset(faces)
    assert dataset.format == "folders" and list(dataset.splits) == ["train"]
    assert dataset.splits["train"].class_counts() == [8] * 7
    paths, labels = data.split_files(faces)
    assert [p.parent.name for p in paths] == [CLASS_NAMES[i] for i in labels]
    np.testing.assert_array_equal(labels, dataset.splits["train"].labels)
    np.testing.assert_array_equal(folders._decode_images([str(p) for p in paths]),
                                  dataset.splits["train"].images)
    train, val = train_val_splits(dataset)  # as `ferkeras train --data my_faces/` splits it
    assert train.class_counts() == [6] * 7 and val.class_counts() == [2] * 7
