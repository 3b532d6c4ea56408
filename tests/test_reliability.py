"""Issue 7, reliability, through the CLI as a user meets it.

Every bad input is one line naming the file, row or flag, exit code 2 and no traceback;
--skip-bad passes over bad rows and files and counts them; Ctrl-C stops cleanly and the run
resumes; artifacts are replaced whole or not at all; a seeded deterministic run repeats
exactly; a model file's code is never run. The SIGKILL-and-resume test, which kills a real
training process, is in test_train.py.
"""

import errno
import functools
import json
import os
import random
import shutil
import signal
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, assert_stderr_still_goes_to, run_main, run_together, stderr_into
from PIL import Image
from test_data import (
    CSV_ERRORS,
    FOLDER_ERRORS,
    TEST_IMAGES,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    fer2013_lines,
    make_folder_problem,
    pixels_text,
    write_fer2013,
    write_folders,
)

from ferkeras.callbacks import EpochLog
from ferkeras.errors import quiet_stderr
from ferkeras.runs import read_history

SMALL_RUN = ("--data", "synthetic:200", "--epochs", "2", "--batch-size", "64")


@pytest.fixture(autouse=True)
def private_folders(tmp_path, monkeypatch):
    """Each test works in its own folder (runs/ lands there) with its own data cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FERKERAS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def ferkeras(monkeypatch, capsys):
    """Run `ferkeras ARGS...` in-process: (exit code, stdout, stderr)."""
    return lambda *args: run_main([str(a) for a in args], monkeypatch, capsys)


def assert_one_line_error(result, *named) -> None:
    """Exit code 2 and a single 'Error: ...' line on stderr naming each of named; no traceback."""
    code, out, err = result
    assert code == 2, (code, out, err)
    assert err.startswith("Error: ") and err.count("\n") == 1, err
    assert "Traceback" not in out + err
    for name in named:
        assert str(name) in err, (str(name), err)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A folder of small models: tiny.keras (48x48) and its SavedModel and TFLite forms,
    wide.keras (64x64 input), evil.keras (an activation pointing at os.system), face.png."""
    import keras
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("models")
    Image.fromarray(TEST_IMAGES[0]).save(folder / "face.png")
    for name, side in (("wide", 64), ("tiny", 48)):
        model = keras.Sequential([keras.Input((side, side, 1)), keras.layers.Flatten(),
                                  keras.layers.Dense(7, activation="softmax")])
        model.save(folder / f"{name}.keras")
    model.export(str(folder / "saved_model"), verbose=False)  # tiny's
    (folder / "tiny.tflite").write_bytes(
        tf.lite.TFLiteConverter.from_saved_model(str(folder / "saved_model")).convert())
    with zipfile.ZipFile(folder / "tiny.keras") as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(parts["config.json"])
    config["config"]["layers"][-1]["config"]["activation"] = {
        "module": "os", "class_name": "function", "config": "system", "registered_name": "system"}
    with zipfile.ZipFile(folder / "evil.keras", "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, json.dumps(config) if name == "config.json" else data)
    return folder


# ---- bad data: one line naming the file (and row), exit code 2 --------------------------------

@pytest.mark.parametrize("case", list(CSV_ERRORS))
def test_bad_csv_is_one_line_naming_file_and_row(tmp_path, ferkeras, case):
    edit, expected = CSV_ERRORS[case]
    path = write_fer2013(tmp_path / "data", edit(fer2013_lines()))
    assert_one_line_error(ferkeras("train", "--data", path), path, expected)
    assert not list((tmp_path / "runs").iterdir())  # and no empty run folder left behind


FOLDER_PROBLEMS = {  # case: what the message says is wrong (make_folder_problem's cases, and more)
    "missing path": "no such file or folder",
    "unknown class": "unknown class folder 'joy'",
    "split without class folders": "no class folders",
    "no class folders at all": "no CSV (fer2013.csv, train.csv) and no class folders",
    "split with zero images": "empty class folder",
    "truncated image": "corrupt or unreadable image",
    "not an image": "not an image file",
    "dangling link": "cannot read",
    "nested folder": "unexpected folder inside a class folder",
    "empty class folder": "empty class folder",
    "truncated jpeg": "corrupt or unreadable image: image file is truncated",
    "corrupt jpeg": "corrupt or unreadable image",
}
assert set(FOLDER_ERRORS) <= set(FOLDER_PROBLEMS)


def break_folders(root: Path, case: str) -> Path:
    """A broken folder data set (make_folder_problem's, or a JPEG or empty-folder case); the path
    that the error must name."""
    if case in FOLDER_ERRORS:
        return make_folder_problem(root, case)
    write_folders(root)
    if case == "empty class folder":
        (root / "test" / "fear" / "img_002.png").unlink()
        return root / "test" / "fear"
    jpeg = root / "train" / "happy" / "face.jpg"
    Image.fromarray(TRAIN_IMAGES[0]).save(jpeg, quality=95)
    data = jpeg.read_bytes()
    jpeg.write_bytes(data[:len(data) // 2] if case == "truncated jpeg"
                     else data[:200] + bytes(range(256)) * 8 + data[-2:])
    return jpeg


@pytest.mark.parametrize("case", list(FOLDER_PROBLEMS))
def test_bad_folder_is_one_line_naming_the_path(tmp_path, ferkeras, case):
    named = break_folders(tmp_path / "data", case)
    data = {"missing path": named, "no class folders at all": tmp_path / "empty"}.get(
        case, tmp_path / "data")
    assert_one_line_error(ferkeras("train", "--data", data), named, FOLDER_PROBLEMS[case])


def one_class_csv(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    path.write_text("\n".join(["label,feature", *(f"3,{pixels_text(i)}" for i in TRAIN_IMAGES[:4])]))
    return path


@pytest.mark.parametrize("args, message", [
    (["--data", one_class_csv], "holds only class happy (4 images); training needs at least 2"),
    (["--data", "synthetic:200", "--val-split", "0"], "--val-split 0: a fraction must be between 0"),
    (["--data", "synthetic:200", "--val-split", "1"], "--val-split 1: a fraction must be between 0"),
    (["--data", "synthetic:200", "--val-split", "1.5"], "--val-split 1.5: a fraction must be"),
])
def test_data_that_cannot_train_is_one_line(tmp_path, ferkeras, args, message):
    args = [a(tmp_path) if callable(a) else a for a in args]
    assert_one_line_error(ferkeras("train", *args), message)


def odd_but_valid_csv(root: Path) -> Path:
    return write_fer2013(root, newline="\r\n", bom=True)


def odd_but_valid_folders(root: Path) -> Path:
    write_folders(root)
    for litter in (root / ".DS_Store", root / "test" / "angry" / ".DS_Store",
                   root / "test" / "angry" / "._img_000.png"):
        litter.write_bytes(b"\0junk")
    test = root / "test"
    Image.fromarray(TEST_IMAGES[0]).convert("RGB").save(test / "angry" / "img_000.png")
    Image.fromarray(TEST_IMAGES[1]).convert("RGBA").save(test / "disgust" / "img_001.png")
    Image.fromarray(TEST_IMAGES[2].astype(np.uint16) * 257).save(test / "fear" / "img_002.png")
    Image.fromarray(TEST_IMAGES[3]).convert("P").save(test / "happy" / "img_003.png")  # palette (a photo is
    # read for its face: tests/test_data.py)
    return root


@pytest.mark.parametrize("make", [odd_but_valid_csv, odd_but_valid_folders])
def test_bom_crlf_hidden_files_and_odd_images_load(tmp_path, ferkeras, models, make):
    code, out, err = ferkeras("evaluate", models / "tiny.keras", "--data", make(tmp_path / "data"))
    assert code == 0 and "Traceback" not in err, err
    assert " on 7 images (val split of " in out  # every test image, none refused


# ---- --skip-bad ------------------------------------------------------------------------------

def test_skip_bad_passes_over_bad_rows_counts_them_and_the_run_keeps_doing_so(tmp_path, ferkeras):
    lines = fer2013_lines()
    lines[2] = lines[2].replace(" ", "", 1)  # line 3: 2,303 pixels
    lines[5] = "9" + lines[5][1:]  # line 6: label 9
    path = write_fer2013(tmp_path / "data", lines)
    code, out, err = ferkeras("train", "--data", path, "--skip-bad", "--epochs", "1",
                              "--batch-size", "8", "--name", "skip")
    assert code == 0, err
    report = f"--skip-bad: skipped 2 bad rows (first: {path} line 3: expected 2304 pixels, got 2303)"
    assert report in out.splitlines()
    config = json.loads((tmp_path / "runs" / "skip" / "config.json").read_text())
    assert config["train_images"] == len(TRAIN_LABELS) - 2 and config["options"]["skip_bad"]
    # evaluate re-makes the run's data as training did: skipping the same rows
    code, out, err = ferkeras("evaluate", "skip")
    assert code == 0 and report in out.splitlines(), err


def test_skip_bad_passes_over_unreadable_files_and_empty_folders(tmp_path, ferkeras, models):
    root = write_folders(tmp_path / "data")
    (root / "test" / "fear" / "img_002.png").unlink()  # an empty class folder
    (root / "test" / "sad" / "notes.txt").write_text("not pixels")
    truncated = root / "test" / "happy" / "img_003.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    args = ("evaluate", models / "tiny.keras", "--data", root)
    assert_one_line_error(ferkeras(*args), root / "test" / "fear", "empty class folder")
    code, out, err = ferkeras(*args, "--skip-bad")
    assert code == 0, err
    assert (f"--skip-bad: skipped 3 bad files or folders (first: {root / 'test' / 'fear'}: "
            "empty class folder") in out
    assert " on 5 images (val split of " in out  # 7 test images less the 2 unreadable


# ---- bad models and flags --------------------------------------------------------------------

MODEL_PROBLEMS = {  # case: what the message says is wrong
    "not a model": "not a model (expected .tflite, .keras, a SavedModel folder, a run, or shipped, large, "
                   "ensemble)",
    "text named .keras": "not a .keras model (not a zip archive",
    "truncated .keras": "not a .keras model (not a zip archive",
    "truncated .tflite": "not a TFLite model",
    "truncated SavedModel": "not a loadable SavedModel",
    "SavedModel without its weights": "not a loadable SavedModel",
    "64x64 input": "model input is (64, 64, 1), expected 48x48",
    "code outside Keras": "Could not locate function 'system'",
}


def break_model(models: Path, folder: Path, case: str) -> Path:
    """A bad model file or folder for a case."""
    def copy(name: str) -> Path:
        copier = shutil.copytree if (models / name).is_dir() else shutil.copyfile
        return Path(copier(models / name, folder / name))

    def halve(path: Path) -> Path:
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
        return path

    if case in ("not a model", "text named .keras"):
        path = folder / ("notes.txt" if case == "not a model" else "model.keras")
        path.write_text("hello")
        return path
    if case == "truncated .keras":
        return halve(copy("tiny.keras"))
    if case == "truncated .tflite":
        return halve(copy("tiny.tflite"))
    if case == "truncated SavedModel":
        return halve(copy("saved_model") / "saved_model.pb").parent
    if case == "SavedModel without its weights":
        shutil.rmtree(copy("saved_model") / "variables")
        return folder / "saved_model"
    return models / {"64x64 input": "wide.keras", "code outside Keras": "evil.keras"}[case]


@pytest.mark.parametrize("case", list(MODEL_PROBLEMS))
def test_bad_model_is_one_line_naming_the_file(tmp_path, ferkeras, models, case):
    model = break_model(models, tmp_path, case)
    result = ferkeras("predict", models / "face.png", "--model", model)
    assert_one_line_error(result, model, MODEL_PROBLEMS[case])


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory) -> Path:
    """A run folder (config.json on synthetic:200, an untrained model.keras): enough for flags."""
    from ferkeras.model import build_model

    run = tmp_path_factory.mktemp("runs") / "fresh"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"options": {"data": "synthetic:200", "seed": 0}}))
    build_model().save(run / "model.keras")
    return run


@pytest.mark.parametrize("args, message", [  # test_viz.py has --n 0, --class, --filters, --layer
    (["viz", "saliency", "RUN", "--n", "-2"], "--n -2: must be at least 1"),
    (["viz", "saliency", "RUN", "--target", "joy"], "--target joy: unknown class"),
    (["train", "--resume", "nosuch"], "run 'nosuch' not found"),
])
def test_bad_flag_is_one_line_naming_the_flag(ferkeras, untrained_run, args, message):
    args = [str(untrained_run) if a == "RUN" else a for a in args]
    assert_one_line_error(ferkeras(*args), message)


# ---- interrupted training --------------------------------------------------------------------

def test_ctrl_c_stops_cleanly_and_the_printed_command_resumes(tmp_path, ferkeras, monkeypatch):
    begin = EpochLog.on_epoch_begin

    def press_ctrl_c_in_epoch_2(self, epoch, logs=None):
        begin(self, epoch, logs)
        if epoch == 1:
            signal.raise_signal(signal.SIGINT)

    # Python's own handler, even where the test runner was started with SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setattr(EpochLog, "on_epoch_begin", press_ctrl_c_in_epoch_2)
    try:
        code, out, err = ferkeras("train", *SMALL_RUN, "--name", "c")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130 and err.strip() == "Aborted.", err
    hint = out.splitlines()[-1]
    assert hint.startswith("Interrupted after 1/2 epochs; continue with: ferkeras train --resume ")
    run = tmp_path / "runs" / "c"
    best = read_history(run)[0]["val_accuracy"]

    monkeypatch.setattr(EpochLog, "on_epoch_begin", begin)
    code, out, err = ferkeras(*hint.split("ferkeras ", 1)[1].split())
    assert code == 0, err
    assert [line[:9] for line in out.splitlines() if line.startswith("[")] == ["[002/002]"]
    assert [row["epoch"] for row in read_history(run)] == [1, 2]
    assert json.loads((run / "metrics.json").read_text())["best_val_accuracy"] >= best - 1e-6


# ---- artifacts -------------------------------------------------------------------------------

def test_a_kill_while_saving_a_model_leaves_the_previous_one_whole(tmp_path, monkeypatch, models):
    import keras

    from ferkeras.model import load_model, save_model

    model = keras.saving.load_model(models / "tiny.keras")
    path = tmp_path / "out" / "model.keras"
    path.parent.mkdir()
    save_model(model, path)
    before = path.read_bytes()

    def killed_mid_write(self, filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # a kill, as seen from inside: the write never finishes

    monkeypatch.setattr(keras.Model, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, path)
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["model.keras"]
    load_model(path)


def test_a_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path, ferkeras, models,
                                                             monkeypatch):
    args = ("evaluate", models / "tiny.keras", "--data", "synthetic:200", "--out", tmp_path / "out")
    assert ferkeras(*args)[0] == 0
    metrics = tmp_path / "out" / "metrics_val.json"
    before = metrics.read_bytes()

    def write_until_the_disk_is_full(self, text, *rest, **kwargs):
        with open(self, "w") as handle:
            handle.write(text[:len(text) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_text", write_until_the_disk_is_full)
        result = ferkeras(*args)
    assert_one_line_error(result, f"cannot write {metrics}: No space left on device")
    assert metrics.read_bytes() == before
    assert not [p.name for p in metrics.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("command", [
    ["train", "--data", "synthetic:200", "--runs-dir"],
    ["evaluate", "MODEL", "--data", "synthetic:200", "--out"],
])
def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, ferkeras, models, command):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    args = [models / "tiny.keras" if a == "MODEL" else a for a in command]
    assert_one_line_error(ferkeras(*args, blocker / "out"), blocker / "out", "Not a directory")


def test_a_read_only_output_folder_is_one_line(tmp_path, ferkeras, models, monkeypatch):
    """A folder of mode 555; root writes into it regardless, so for root the kernel's refusal is
    injected instead: os.open (under every file the writers create) raises EACCES there."""
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o555)
    try:
        (out / "probe").touch()
    except PermissionError:
        pass
    else:  # root (CAP_DAC_OVERRIDE): answer as the kernel answers anyone else
        (out / "probe").unlink()
        real_open = os.open

        def refusing_open(path, flags, *args, **kwargs):
            if Path(os.fsdecode(path)).parent == out and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", refusing_open)
    try:
        result = ferkeras("evaluate", models / "tiny.keras", "--data", "synthetic:200", "--out", out)
    finally:
        out.chmod(0o755)
    assert_one_line_error(result, f"cannot write {out / 'metrics_val.json'}: Permission denied")
    assert not list(out.iterdir())  # nothing half-written


# ---- reproducibility -------------------------------------------------------------------------

def test_seed_and_deterministic_repeat_the_history_and_weights(tmp_path, ferkeras):
    from ferkeras.model import load_model

    runs = []
    for name in ("first", "second"):
        code, out, err = ferkeras("train", *SMALL_RUN, "--seed", "5", "--deterministic",
                                  "--name", name)
        assert code == 0, err
        runs.append(tmp_path / "runs" / name)
    timing = {"seconds", "train_seconds"}
    first, second = ([{k: v for k, v in row.items() if k not in timing} for row in read_history(run)]
                     for run in runs)
    assert first == second and len(first) == 2
    for file in ("model.keras", "last.keras"):
        first, second = (load_model(run / file).get_weights() for run in runs)
        assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True)), file


# ---- safe loading ----------------------------------------------------------------------------

def test_a_model_with_a_lambda_is_refused_and_its_code_never_runs(tmp_path, ferkeras, models):
    import keras

    marker = str(tmp_path / "code_ran")
    model = keras.Sequential([keras.Input((48, 48, 1)),
                              keras.layers.Lambda(lambda x: (open(marker, "w").close(), x)[1]),
                              keras.layers.Flatten(), keras.layers.Dense(7, activation="softmax")])
    model.save(tmp_path / "lambda.keras")
    os.remove(marker)  # building the model ran the lambda once, here
    result = ferkeras("predict", models / "face.png", "--model", tmp_path / "lambda.keras")
    assert_one_line_error(result, tmp_path / "lambda.keras", "`Lambda` layer")
    assert not os.path.exists(marker)
    keras.saving.load_model(tmp_path / "lambda.keras", safe_mode=False)
    assert os.path.exists(marker), "the marker should show when a model's code runs"


class Planted:
    """Unpickling this makes a folder: proof that a file was unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_nothing_is_unpickled(tmp_path):
    from ferkeras.data import load_dataset

    csv = write_fer2013(tmp_path / "data")
    expected = load_dataset(csv).splits["train"].images
    [cache] = (tmp_path / "cache").glob("*.npz")
    marker = tmp_path / "unpickled"
    np.savez(cache, format=np.array([Planted(str(marker))], dtype=object), splits=np.array(["train"]))
    shutil.copyfile(cache, tmp_path / "planted.npz")
    np.testing.assert_array_equal(load_dataset(csv).splits["train"].images, expected)  # rebuilt
    assert not marker.exists()
    np.load(tmp_path / "planted.npz", allow_pickle=True)["format"]
    assert marker.exists(), "the marker should show when a file is unpickled"
    sources = "\n".join(p.read_text() for p in [*(REPO / "ferkeras").glob("*.py"),
                                                *(REPO / "cli").glob("*.py")])
    for unsafe in ("allow_pickle=True", "pickle.load", "safe_mode=False",
                   "enable_unsafe_deserialization", "joblib"):
        assert unsafe not in sources, unsafe


# ---- quiet_stderr under threads ----------------------------------------------------------------
# quiet_stderr hides C++ libraries' log lines by pointing file descriptor 2 at a temporary file.
# `serve` opened one block (loading the saliency model) while another thread opened and closed
# its own (resizing the interpreter); the per-call swap then left fd 2 on a deleted temporary file
# and every later stderr line, uvicorn's included, was lost.

CHATTER = (b"I0000 00:00:1796397010.522280    7468 port.cc:153] oneDNN custom operations are on.\n"
           b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")




def test_quiet_stderr_blocks_overlapping_as_in_serve_leave_fd_2_where_it_was(tmp_path):
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def load_saliency_model():  # enters first and leaves first
        with quiet_stderr():
            os.write(2, CHATTER)
            first_in.set()
            assert second_in.wait(10)
        first_out.set()

    def resize_interpreter():  # enters while the first is open, and leaves after it
        assert first_in.wait(10)
        with quiet_stderr():
            second_in.set()
            assert first_out.wait(10)
            os.write(2, CHATTER)

    with stderr_into(tmp_path / "stderr") as path:
        run_together(load_saliency_model, resize_interpreter)
        assert_stderr_still_goes_to(path)
    assert path.read_bytes() == b"a later line\n"  # the chatter hidden, the later line shown


def test_quiet_stderr_from_many_threads_at_once_leaves_fd_2_whole(tmp_path):
    def churn(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(150):
            with quiet_stderr():
                os.write(2, CHATTER)
                if rng.random() < 0.3:
                    with quiet_stderr():  # nested, as a guarded call inside a guarded block
                        os.write(2, CHATTER)
                time.sleep(rng.random() / 2000)
            time.sleep(rng.random() / 2000)

    with stderr_into(tmp_path / "stderr") as path:
        run_together(*(functools.partial(churn, seed) for seed in range(8)), timeout=60)
        assert_stderr_still_goes_to(path)
    assert path.read_bytes() == b"a later line\n"


def test_another_threads_line_written_during_a_block_is_passed_on_not_lost(tmp_path):
    inside, written = threading.Event(), threading.Event()

    def guarded():
        with quiet_stderr():
            inside.set()
            os.write(2, CHATTER)
            assert written.wait(10)
            os.write(2, CHATTER)

    with stderr_into(tmp_path / "stderr") as path:
        thread = threading.Thread(target=guarded)
        thread.start()
        assert inside.wait(10)
        os.write(2, b"ERROR: uvicorn's line, from a thread outside any block\n")
        written.set()
        thread.join(30)
        assert_stderr_still_goes_to(path)
    assert path.read_bytes() == b"ERROR: uvicorn's line, from a thread outside any block\na later line\n"


def test_a_block_that_raises_shows_what_it_wrote_even_while_another_is_open(tmp_path):
    inside, done = threading.Event(), threading.Event()

    def long_block():
        with quiet_stderr():
            os.write(2, CHATTER)
            inside.set()
            assert done.wait(10)

    with stderr_into(tmp_path / "stderr") as path:
        thread = threading.Thread(target=long_block)
        thread.start()
        assert inside.wait(10)
        with pytest.raises(RuntimeError), quiet_stderr():
            os.write(2, b"E0000 00:00:1796397010.5 7468 convert.cc:1] why the conversion failed\n")
            raise RuntimeError("conversion failed")
        # shown at once, on the real stderr, though the other block still holds fd 2
        assert b"why the conversion failed" in path.read_bytes()
        done.set()
        thread.join(30)
        assert_stderr_still_goes_to(path)
    assert path.read_bytes() == (b"E0000 00:00:1796397010.5 7468 convert.cc:1] why the conversion failed\n"
                                 b"a later line\n")
