"""Training: the tf.data pipeline, the callbacks, and `ferkeras train` end to end."""

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import real_class_folders, run_main

from ferkeras.callbacks import EpochLog, HistoryFiles
from ferkeras.data import Split
from ferkeras.runs import read_history
from ferkeras.train import balanced_class_weight, make_augmenter, make_pipeline

FERKERAS = [sys.executable, "-c", "from ferkeras.cli.main import main; main()"]
EPOCH_LINE = re.compile(r"^\[(\d{3})/(\d{3})\] \d+\.\d{2} sec\(s\) Train Acc: [01]\.\d{6} "
                        r"Loss: \d+\.\d{4} \| Val Acc: [01]\.\d{6} loss: \d+\.\d{4}$")


def random_split(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, 256, (n, 48, 48), dtype=np.uint8),
                 rng.integers(0, 7, n).astype(np.int64))


def run_cli(*args, cwd, timeout=600):
    return subprocess.run([*FERKERAS, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_pipeline_without_augmentation_keeps_pixels_and_labels():
    split = random_split()
    images, labels = next(iter(make_pipeline(split, batch_size=16)))
    assert images.shape == (16, 48, 48, 1) and images.dtype.name == "float32"
    np.testing.assert_array_equal(images.numpy()[..., 0], split.images[:16])
    np.testing.assert_array_equal(labels.numpy().argmax(1), split.labels[:16])


def test_pipeline_shuffles_and_augments_whole_batches():
    split = random_split()
    batches = list(make_pipeline(split, 16, make_augmenter("medium", seed=1), shuffle_seed=1))
    assert [len(b[0]) for b in batches] == [16, 16, 16, 2]
    labels = np.concatenate([b[1].numpy().argmax(1) for b in batches])
    assert sorted(labels) == sorted(split.labels) and not np.array_equal(labels, split.labels)
    images = batches[0][0].numpy()
    assert images.min() >= 0 and images.max() <= 255
    # Augmented images are not any of the originals.
    originals = split.images.astype(np.float32)
    assert min(np.abs(originals - img[..., 0]).mean() for img in images[:1]) > 1
    assert make_augmenter("none") is None


def test_photo_augmentation_varies_exposure_contrast_and_focus():
    # A gray face-sized square on a darker field: its level, its contrast and its edge tell the
    # three photometric changes apart from the geometric ones.
    image = np.full((48, 48), 60, np.uint8)
    image[12:36, 12:36] = 180
    batch = Split(np.repeat(image[None], 64, axis=0), np.zeros(64, np.int64))
    views = next(iter(make_pipeline(batch, 64, make_augmenter("photo", seed=2))))[0].numpy()[..., 0]
    assert views.min() >= 0 and views.max() <= 255
    means, spreads = views.mean(axis=(1, 2)), views.std(axis=(1, 2))
    assert np.ptp(means) > 30 and np.ptp(spreads) > 10  # exposure and contrast differ per image
    steepest = np.abs(np.diff(views, axis=2)).max(axis=(1, 2))
    assert np.sum(steepest < 0.8 * 120) > 10  # many edges softened: blurred, or contrast lowered
    medium = next(iter(make_pipeline(batch, 64, make_augmenter("medium", seed=2))))[0].numpy()
    assert np.ptp(medium.max(axis=(1, 2, 3))) < 1  # the geometric level leaves the levels alone
    kinds = {type(layer).__name__ for layer in make_augmenter("photo").layers}
    assert {"RandomBrightness", "RandomContrast", "RandomGaussianBlur"} <= kinds


def test_random_erasing_blanks_a_patch_of_each_image_at_probability_one():
    flat = Split(np.full((32, 48, 48), 100, np.uint8), np.zeros(32, np.int64))
    images = next(iter(make_pipeline(flat, 32, make_augmenter("none", seed=0, erase=1.0))))[0]
    changed = (images.numpy()[..., 0] != 100).mean(axis=(1, 2))
    assert changed.min() > 0.005 and changed.max() < 0.5  # a patch, never the whole face
    assert images.numpy().min() >= 0 and images.numpy().max() <= 255


def test_warmup_rises_linearly_to_the_peak_then_cosine_decays():
    from ferkeras.config import TrainConfig
    from ferkeras.train import make_schedule

    for schedule, end in (("cosine", 0.0), ("constant", 0.1)):
        lr = make_schedule(TrainConfig(lr=0.1, schedule=schedule), total_steps=100, warmup_steps=10)
        rates = [float(lr(step)) for step in (0, 5, 10, 55, 100)]
        assert rates[:3] == pytest.approx([0.0, 0.05, 0.1])
        assert rates[3] == pytest.approx((0.1 + end) / 2) and rates[4] == pytest.approx(end, abs=1e-7)


def test_balanced_class_weight_inverts_frequency():
    weights = balanced_class_weight(np.array([0] * 90 + [1] * 10))
    assert weights[1] == pytest.approx(9 * weights[0])
    assert weights[0] * 90 + weights[1] * 10 == pytest.approx(100)


def test_balanced_accuracy_metric_is_sklearns_over_batches_and_serialises():
    import keras
    from sklearn.metrics import balanced_accuracy_score

    from ferkeras.model import BalancedAccuracy

    rng = np.random.default_rng(0)
    labels = rng.choice([0, 1, 3, 6], size=300, p=[0.6, 0.2, 0.15, 0.05])  # 3 classes absent
    probs = rng.dirichlet(np.ones(7), size=300)
    soft = 0.7 * np.eye(7)[labels] + 0.3 / 7  # soft targets: their top class counts
    metric = BalancedAccuracy()
    for batch in np.array_split(np.arange(300), 4):
        metric.update_state(soft[batch], probs[batch])
    expected = balanced_accuracy_score(labels, probs.argmax(1))
    assert float(metric.result()) == pytest.approx(expected, abs=1e-6)
    again = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert isinstance(again, BalancedAccuracy) and again.name == "balanced_accuracy"
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_logit_adjusted_loss_is_the_shifted_cross_entropy_and_serialises():
    import keras

    from ferkeras.model import LogitAdjustedCrossentropy
    from ferkeras.train import class_prior

    prior = class_prior(np.array([0] * 60 + [1] * 30 + [3] * 10))
    assert prior[2] == pytest.approx(0.5 / 100) and prior[0] == pytest.approx(0.6)  # none: half an image
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), 16).astype(np.float32)
    targets = np.eye(7, dtype=np.float32)[rng.integers(0, 7, 16)]
    loss = LogitAdjustedCrossentropy(prior, tau=1.0)
    shifted = np.log(probs) + np.log(prior)
    expected = -np.sum(targets * (shifted - np.log(np.exp(shifted).sum(1, keepdims=True))), axis=1)
    assert float(loss(targets, probs)) == pytest.approx(expected.mean(), rel=1e-5)
    plain = float(keras.losses.CategoricalCrossentropy()(targets, probs))
    assert float(LogitAdjustedCrossentropy(prior, tau=0.0)(targets, probs)) == pytest.approx(plain, rel=1e-5)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert (again.prior, again.tau) == (loss.prior, 1.0)


def test_logit_adjustment_raises_the_rare_class_recall():
    """Two overlapping blobs, the second 5% of the points: plain cross-entropy gives it up where they
    overlap; the logit-adjusted loss moves the boundary to where the classes are equally likely."""
    import keras

    from ferkeras.model import LogitAdjustedCrossentropy
    from ferkeras.train import class_prior

    rng = np.random.default_rng(0)
    labels = (rng.random(4000) < 0.05).astype(int)
    points = rng.normal(0, 1, (4000, 2)) + labels[:, None] * 1.0
    recall = {}
    for tau in (0.0, 1.0):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(7, activation="softmax")])
        model.compile(keras.optimizers.Adam(0.05), LogitAdjustedCrossentropy(class_prior(labels), tau))
        model.fit(points, np.eye(7)[labels], batch_size=500, epochs=30, verbose=0)
        predicted = model.predict(points, verbose=0).argmax(1)
        recall[tau] = [np.mean(predicted[labels == c] == c) for c in (0, 1)]
    # Measured (seeds 0 and 1): plain 0.997 and 0.09-0.10; adjusted 0.75-0.76 for both classes,
    # the boundary half-way between the blobs.
    assert recall[0.0][1] < 0.3 and recall[1.0][1] > 0.6
    assert abs(recall[1.0][0] - recall[1.0][1]) < 0.1


def test_epoch_line_has_the_reference_format():
    lines = []
    log = EpochLog(epochs=30, echo=lines.append)

    class FakeOptimizer:
        learning_rate = 0.001

    class FakeModel:
        optimizer = FakeOptimizer()

    log.set_model(FakeModel())
    log.on_epoch_begin(0)
    logs = {"accuracy": 0.392968, "loss": 1.532, "val_accuracy": 0.464057, "val_loss": 1.498}
    log.on_epoch_end(0, logs)
    assert EPOCH_LINE.match(lines[0]), lines[0]
    assert lines[0].startswith("[001/030]") and "Val Acc: 0.464057 loss: 1.4980" in lines[0]
    assert logs["seconds"] >= logs["train_seconds"] >= 0 and logs["lr"] == 0.001


def test_history_keeps_every_epoch_once_after_a_rerun(tmp_path):
    history = HistoryFiles(tmp_path)
    for epoch in range(3):
        history.on_epoch_end(epoch, {"loss": 1.0, "val_accuracy": 0.1 * epoch})
    # A resume from a backup taken after epoch 2 re-runs epoch 3 (index 2).
    resumed = HistoryFiles(tmp_path)
    resumed.on_epoch_end(2, {"loss": 0.5, "val_accuracy": 0.9})
    rows = read_history(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[-1]["val_accuracy"] == 0.9
    csv_lines = (tmp_path / "history.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,") and len(csv_lines) == 4


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The newcomer's first command, `ferkeras train` with no flags (the built-in synthetic faces,
    their default epochs), run as a user runs it: (its run folder, the finished process)."""
    cwd = tmp_path_factory.mktemp("cli")
    result = run_cli("train", cwd=cwd, timeout=900)
    assert result.returncode == 0, result.stderr
    return cwd / "runs" / "train", result


def test_default_run_learns_the_synthetic_faces(default_run):
    run, result = default_run
    metrics = json.loads((run / "metrics.json").read_text())
    # 0.938-0.945 over seeds 0-2 (config.DEFAULT_EPOCHS_SYNTHETIC): well above the bar
    assert metrics["best_val_accuracy"] >= 0.90, result.stdout


def test_train_cli_writes_the_run_folder(default_run):
    from ferkeras.config import DEFAULT_EPOCHS_SYNTHETIC as EPOCHS

    run, result = default_run
    lines = result.stdout.splitlines()
    assert "synthetic" in lines[0] and "--data" in lines[0]
    epoch_lines = [line for line in lines if line.startswith("[")]
    assert len(epoch_lines) == EPOCHS and all(EPOCH_LINE.match(x) for x in epoch_lines), lines
    assert "Traceback" not in result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["options"]["epochs"] is None and config["epochs"] == EPOCHS  # given, and resolved
    assert config["options"]["seed"] == 0
    assert config["data"]["format"] == "synthetic" and config["train_images"] == 8000
    assert {"tensorflow", "keras", "numpy"} <= set(config["versions"])
    history = read_history(run)
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))
    assert len((run / "history.csv").read_text().splitlines()) == EPOCHS + 1
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_val_accuracy"] == pytest.approx(
        max(r["val_accuracy"] for r in history), abs=1e-4)
    assert (run / "model.keras").is_file() and (run / "last.keras").is_file()
    assert not (run / "backup").exists()


def test_resume_refuses_a_finished_run_and_config_changes(default_run, monkeypatch, capsys):
    from ferkeras.config import DEFAULT_EPOCHS_SYNTHETIC as EPOCHS

    run, _ = default_run
    monkeypatch.chdir(run.parent.parent)
    code, _, err = run_main(["train", "--resume", "train"], monkeypatch, capsys)
    assert code == 2 and f"already finished {EPOCHS}/{EPOCHS}" in err
    code, _, err = run_main(["train", "--resume", "train", "--lr", "0.1"], monkeypatch, capsys)
    assert code == 2 and "--lr" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, _, err = run_main(["train", "--resume", "nope"], monkeypatch, capsys)
    assert code == 2 and "run 'nope' not found" in err


def test_summary_prints_the_reference_parameter_count(default_run, monkeypatch, capsys):
    run, _ = default_run
    monkeypatch.chdir(run.parent.parent)
    for args in ([], [str(run / "model.keras")]):
        code, out, err = run_main(["summary", *args], monkeypatch, capsys)
        assert code in (0, None), err
        assert "322,039 parameters, 528 of them non-trainable" in out
        assert "conv4" in out and "(None, 3, 3, 96)" in out


# The child kills itself with SIGKILL, as a power cut would, in the middle of epoch 3 (after its
# second batch): where it dies is fixed, not a race between a poll and the run's speed.
KILLED_IN_EPOCH_3 = """
import os, signal
from ferkeras.callbacks import EpochLog
begin = EpochLog.on_epoch_begin
def kill_in_epoch_3(self, epoch, logs=None):
    begin(self, epoch, logs)
    self.killing = epoch == 2
def on_train_batch_end(self, batch, logs=None):
    if getattr(self, "killing", False) and batch == 1:
        os.kill(os.getpid(), signal.SIGKILL)
EpochLog.on_epoch_begin, EpochLog.on_train_batch_end = kill_in_epoch_3, on_train_batch_end
from ferkeras.cli.main import main
main()
"""


def test_killed_run_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    args = ["train", "--data", "synthetic:500", "--epochs", "4", "--name", "k", "--augment", "none"]
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_EPOCH_3, *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = tmp_path / "runs" / "k"
    assert [r["epoch"] for r in read_history(run)] == [1, 2] and (run / "backup").is_dir()
    best_before = max(r["val_accuracy"] for r in read_history(run))

    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["train", "--resume", "k"], monkeypatch, capsys)
    assert code in (0, None), err
    epochs = [int(m.group(1)) for m in map(EPOCH_LINE.match, out.splitlines()) if m]
    assert epochs == [3, 4]  # it restarts at the epoch after the last backup
    history = read_history(run)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_val_accuracy"] >= best_before - 1e-6


def test_a_backup_killed_mid_save_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    from ferkeras.callbacks import AtomicBackupAndRestore
    from ferkeras.model import build_model

    model = build_model()
    backup = AtomicBackupAndRestore(str(tmp_path))
    backup.set_model(model)
    backup.on_epoch_end(0)
    weights = tmp_path / "latest.weights.h5"
    before = weights.read_bytes()

    def killed(path, overwrite=True):
        Path(path).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "save_weights", killed)
    with pytest.raises(KeyboardInterrupt):
        backup.on_epoch_end(1)
    assert weights.read_bytes() == before
    assert json.loads(Path(backup._training_metadata_path).read_text())["epoch"] == 1


def two_flat_classes(n=32):
    """Half the faces all 0 (class 0), half all 200 (class 1): mixing shows in every pixel."""
    images = np.zeros((n, 48, 48), np.uint8)
    images[n // 2:] = 200
    return Split(images, np.repeat([0, 1], n // 2).astype(np.int64))


def test_mixup_blends_images_and_labels_by_the_same_weight():
    from ferkeras.train import make_mixer

    images, targets = next(iter(make_pipeline(two_flat_classes(), 32, shuffle_seed=0,
                                              mixer=make_mixer("mixup", seed=0))))
    images, targets = images.numpy()[..., 0], targets.numpy()
    np.testing.assert_allclose(targets.sum(1), 1, atol=1e-6)
    # A flat image blended with a flat image: 200 times the weight of class 1, everywhere.
    np.testing.assert_allclose(images.mean(axis=(1, 2)), 200 * targets[:, 1], atol=0.5)
    assert np.ptp(images, axis=(1, 2)).max() < 1e-3
    assert ((targets.max(1) > 0.01) & (targets.max(1) < 0.99)).any()  # some pairs really mixed
    assert make_mixer("none") is None


def test_cutmix_pastes_a_patch_and_weighs_labels_by_its_area():
    from ferkeras.train import make_mixer

    images, targets = next(iter(make_pipeline(two_flat_classes(), 32, shuffle_seed=0,
                                              mixer=make_mixer("cutmix", seed=0))))
    images, targets = images.numpy()[..., 0], targets.numpy()
    assert set(np.unique(images)) <= {0.0, 200.0}  # pasted, never blended
    np.testing.assert_allclose(targets.sum(1), 1, atol=1e-6)
    # Keras weighs by the sampled box, before it is clipped and rounded to pixels: a few points off.
    np.testing.assert_allclose((images == 200).mean(axis=(1, 2)), targets[:, 1], atol=0.06)
    assert ((targets.max(1) > 0.01) & (targets.max(1) < 0.99)).any()


def test_distillation_targets_blend_labels_with_the_teachers_probabilities(trained_synthetic_run,
                                                                        exported_synthetic_run):
    from ferkeras.config import TrainConfig
    from ferkeras.data import load_dataset
    from ferkeras.evaluate import predict
    from ferkeras.model import load_model
    from ferkeras.runners import TFLiteRunner
    from ferkeras.teaching import distillation_targets

    split = load_dataset("synthetic:3000").splits["train"]
    split = Split(split.images[:200], split.labels[:200])
    teacher = trained_synthetic_run / "model.keras"
    probs = predict(load_model(teacher), split.images, tta=True)
    lines = []
    for weight in (0.3, 1.0):
        targets = distillation_targets(TrainConfig(teacher=str(teacher), distill=weight), split,
                                       echo=lines.append)
        np.testing.assert_allclose(targets, (1 - weight) * np.eye(7)[split.labels] + weight * probs,
                                   atol=1e-6)
    agreement = (probs.argmax(1) == split.labels).mean()
    assert f"agrees with {agreement:.1%} of the training labels" in lines[0]

    # Several teachers: the mean of their probabilities (here the model and its int8 TFLite).
    int8 = exported_synthetic_run / "model_int8.tflite"
    int8_probs = predict(TFLiteRunner(int8), split.images, tta=True)
    assert np.abs(int8_probs - probs).max() > 1e-3  # two teachers that really differ
    targets = distillation_targets(TrainConfig(teacher=f"{teacher},{int8}", distill=1.0), split,
                                   echo=lines.append)
    np.testing.assert_allclose(targets, (probs + int8_probs) / 2, atol=1e-6)
    assert any(line.startswith("Teachers together: agree with") for line in lines)


def test_train_with_a_teacher_and_cutmix_end_to_end(trained_synthetic_run, tmp_path):
    from ferkeras.config import TrainConfig
    from ferkeras.train import train

    lines = []
    run = train(TrainConfig(data="synthetic:600", epochs=2, teacher=str(trained_synthetic_run),
                            distill=0.5, mix="cutmix", logit_adjust=1.0, select="balanced",
                            runs_dir=str(tmp_path), name="student"),
                echo=lines.append)
    options = json.loads((run / "config.json").read_text())["options"]
    assert options["teacher"] == str(trained_synthetic_run) and options["mix"] == "cutmix"
    assert options["logit_adjust"] == 1.0 and options["select"] == "balanced"
    # --select balanced: model.keras is the epoch of the best validation balanced accuracy, and
    # re-evaluated it gives that epoch's figure.
    history, metrics = read_history(run), json.loads((run / "metrics.json").read_text())
    best = max(history, key=lambda r: r["val_balanced_accuracy"])
    assert metrics["selected_by"] == "val_balanced_accuracy" and metrics["best_epoch"] == best["epoch"]
    assert metrics["best_val_balanced_accuracy"] == pytest.approx(best["val_balanced_accuracy"], abs=1e-4)
    assert lines[-1].startswith("Best val balanced accuracy")
    assert any(line.startswith("Teacher ") for line in lines) and (run / "model.keras").is_file()
    # Soft targets, mixed, under the logit-adjusted loss, which the saved model carries.
    from ferkeras.model import LogitAdjustedCrossentropy, load_model

    for saved in ("model.keras", "last.keras"):
        loss = load_model(run / saved).loss
        assert isinstance(loss, LogitAdjustedCrossentropy) and loss.tau == 1.0, saved


def test_a_consistent_teacher_labels_the_augmented_view_the_student_sees(trained_synthetic_run):
    from ferkeras.config import TrainConfig
    from ferkeras.data import load_dataset
    from ferkeras.model import load_model
    from ferkeras.teaching import consistent_teacher

    split = load_dataset("synthetic:3000").splits["train"]
    split = Split(split.images[:64], split.labels[:64])
    model = load_model(trained_synthetic_run / "model.keras")
    teacher = consistent_teacher(TrainConfig(teacher=str(trained_synthetic_run), teaching="consistent"),
                                 echo=lambda _: None)
    images, targets = next(iter(make_pipeline(split, 64, make_augmenter("strong", seed=3),
                                              teacher=teacher, distill=0.4)))
    images, targets = images.numpy(), targets.numpy()
    on_view = model(images, training=False).numpy()
    np.testing.assert_allclose(targets, 0.6 * np.eye(7)[split.labels] + 0.4 * on_view, atol=1e-5)
    # The views really are new: on the clean images the teacher says something else.
    on_clean = model(split.images[..., None].astype("float32"), training=False).numpy()
    assert np.abs(on_clean - on_view).max() > 0.05


def test_consistent_teaching_end_to_end_and_its_errors(trained_synthetic_run, tmp_path, monkeypatch,
                                                       capsys):
    runs = tmp_path / "runs"
    args = ["train", "--data", "synthetic:600", "--epochs", "1", "--runs-dir", str(runs)]
    code, out, _ = run_main([*args, "--teacher", f"{trained_synthetic_run},shipped", "--teaching",
                             "consistent", "--name", "student"], monkeypatch, capsys)
    assert code == 0 and out.count("labels every augmented batch (consistent teaching)") == 2
    options = json.loads((runs / "student" / "config.json").read_text())["options"]
    assert options["teaching"] == "consistent" and (runs / "student" / "model.keras").is_file()

    np.save(tmp_path / "probs.npy", np.full((480, 7), 1 / 7))
    for extra, message in [
            ([], "Error: --teaching 'consistent': needs --teacher"),
            (["--teacher", str(tmp_path / "probs.npy")],
             f"Error: --teacher {tmp_path / 'probs.npy'}: {tmp_path / 'probs.npy'} cannot label new views"),
            (["--teacher", str(tmp_path / "nosuch.keras")],
             f"Error: --teacher {tmp_path / 'nosuch.keras'}: {tmp_path / 'nosuch.keras'}: no such model")]:
        code, _, err = run_main([*args, "--teaching", "consistent", *extra], monkeypatch, capsys)
        assert code == 2 and err.startswith(message) and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in runs.iterdir()) == ["student"]


def test_a_bad_teacher_is_one_line_and_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    code, _, err = run_main(["train", "--data", "synthetic:600", "--epochs", "1", "--teacher",
                             str(tmp_path / "nosuch"), "--runs-dir", str(tmp_path / "runs")],
                            monkeypatch, capsys)
    assert code == 2 and err.startswith(f"Error: --teacher {tmp_path / 'nosuch'}: ")
    assert len(err.strip().splitlines()) == 1 and list((tmp_path / "runs").iterdir()) == []


def test_soft_targets_from_a_npy_file_are_checked_against_the_data(tmp_path):
    from ferkeras.config import TrainConfig
    from ferkeras.data import load_dataset
    from ferkeras.errors import FerkerasError
    from ferkeras.teaching import distillation_targets

    split = load_dataset("synthetic:3000").splits["train"]
    split = Split(split.images[:50], split.labels[:50])
    probs = np.random.default_rng(0).dirichlet(np.ones(7), size=50)
    good = tmp_path / "teacher.npy"
    np.save(good, probs)
    targets = distillation_targets(TrainConfig(teacher=str(good), distill=0.25), split, echo=lambda _: None)
    np.testing.assert_allclose(targets, 0.75 * np.eye(7)[split.labels] + 0.25 * probs, atol=1e-6)
    cases = {"count": (probs[:49], r"shape \(49, 7\), expected \(50, 7\)"),
             "shape": (probs[:, :6], r"shape \(50, 6\), expected \(50, 7\)"),
             "sum": (np.vstack([probs[:7], probs[7:8] * 1.1, probs[8:]]), "row 7 sums to 1.1000, not 1"),
             "negative": (probs - probs.mean(), "probabilities must be finite and non-negative")}
    for name, (array, message) in cases.items():
        np.save(tmp_path / f"{name}.npy", array)
        with pytest.raises(FerkerasError, match=f"--teacher {tmp_path / name}.npy: {message}"):
            distillation_targets(TrainConfig(teacher=str(tmp_path / f"{name}.npy")), split)
    (tmp_path / "junk.npy").write_text("not numpy")
    with pytest.raises(FerkerasError, match="cannot read it as a .npy array"):
        distillation_targets(TrainConfig(teacher=str(tmp_path / "junk.npy")), split)


def test_init_starts_from_a_trained_models_weights(trained_synthetic_run, tmp_path):
    from ferkeras.config import TrainConfig
    from ferkeras.model import build_model, load_model
    from ferkeras.train import load_initial_weights, train

    model = build_model()
    load_initial_weights(model, TrainConfig(init=str(trained_synthetic_run)), echo=lambda line: None)
    source = load_model(trained_synthetic_run / "model.keras")
    for mine, theirs in zip(model.get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    # Trained on from there (one epoch at a low rate), the run starts where the source ended;
    # from random weights one epoch on 450 faces stays near chance (1/7).
    run = train(TrainConfig(data="synthetic:600", epochs=1, lr=1e-4, init=str(trained_synthetic_run),
                            runs_dir=str(tmp_path), name="tuned"), echo=lambda line: None)
    assert read_history(run)[0]["val_accuracy"] > 0.8
    assert json.loads((run / "config.json").read_text())["options"]["init"] == str(trained_synthetic_run)


def test_a_bad_init_is_one_line_and_leaves_no_run_folder(trained_synthetic_run, tmp_path,
                                                         monkeypatch, capsys):
    runs = tmp_path / "runs"
    for init, reason in [(str(tmp_path / "nosuch.keras"), "no such model file"),
                         (str(trained_synthetic_run), "is not a --arch large --channels 3 model")]:
        code, _, err = run_main(["train", "--data", "synthetic:600", "--epochs", "1", "--arch",
                                 "large", "--init", init, "--runs-dir", str(runs)], monkeypatch, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and reason in err, err
        assert not runs.exists() or list(runs.iterdir()) == []


def test_fine_tune_on_a_folder_of_class_folders_then_evaluate_it(fer2013_dir, tmp_path, monkeypatch,
                                                                  capsys):
    """The README's `ferkeras train --data my_faces/ --init shipped --lr 1e-4`, on 20 real faces
    per class: it trains on 3/4 and validates on the rest; evaluate finds that quarter again from
    the same folder (spelled with its slash), and takes all of it for another model."""
    from ferkeras.evaluate import load_source

    monkeypatch.setenv("FERKERAS_CACHE_DIR", str(tmp_path / "cache"))
    faces = real_class_folders(fer2013_dir, tmp_path / "my_faces", per_class=20)
    runs = tmp_path / "runs"
    code, out, err = run_main(["train", "--data", str(faces), "--init", "shipped", "--lr", "1e-4",
                               "--epochs", "1", "--runs-dir", str(runs), "--name", "mine"],
                              monkeypatch, capsys)
    assert code == 0, err
    run = runs / "mine"
    config = json.loads((run / "config.json").read_text())
    assert config["options"]["data"] == str(faces) and config["options"]["init"] == "shipped"
    assert config["data"]["source"] == str(faces.resolve()) and config["data"]["format"] == "folders"
    assert config["data"]["splits"] == {"train": {"images": 140, "class_counts": [20] * 7}}
    assert (config["train_images"], config["val_images"]) == (105, 35)
    assert (run / "model.keras").is_file()

    accuracy = re.compile(r"^Accuracy [01]\.\d{4} on (\d+) images \(macro F1 [01]\.\d{4}\)\.$", re.M)
    code, out, err = run_main(["evaluate", str(run), "--data", f"{faces}/"], monkeypatch, capsys)
    assert code == 0, err
    assert accuracy.search(out).group(1) == "35"  # the run's own validation faces, not its training ones
    assert (run / "viz" / "metrics_val.json").is_file()
    assert len(load_source("shipped", data=f"{faces}/").split) == 140  # another model: every face


def test_every_command_takes_the_large_architecture(tmp_path, monkeypatch, capsys):
    """train --arch large, then summary, evaluate, viz, export (float32, int8), predict, report
    and distillation from it, each on its run: one epoch on 300 synthetic faces."""
    import matplotlib.cbook

    from ferkeras.config import TrainConfig
    from ferkeras.model import load_model
    from ferkeras.report import ReportSettings, build_report

    runs, out = tmp_path / "runs", tmp_path / "exp"
    photo = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)

    def ok(*args):
        code, stdout, stderr = run_main([str(a) for a in args], monkeypatch, capsys)
        assert code in (0, None), (args, stderr)
        return stdout

    ok("train", "--arch", "large", "--data", "synthetic:300", "--epochs", "1", "--name", "big",
       "--runs-dir", runs)
    run = runs / "big"
    options = json.loads((run / "config.json").read_text())["options"]
    # --resume and evaluate rebuild from config.json: large stays large, and older runs,
    # whose config.json has no arch, are the reference model
    assert options["arch"] == "large" and TrainConfig.from_dict(options).arch == "large"
    assert TrainConfig.from_dict({k: v for k, v in options.items() if k != "arch"}).arch == "reference"
    assert load_model(run / "model.keras").name == "ferkeras_large"
    assert "2,622,503 parameters" in ok("summary", "big", "--runs-dir", runs)
    ok("evaluate", "big", "--runs-dir", runs)
    assert (run / "viz" / "confusion_matrix_val.png").is_file()
    ok("viz", "saliency", "big", "--n", "2", "--runs-dir", runs)
    assert (run / "viz" / "saliency_vanilla.png").is_file()
    # One epoch on 225 faces leaves the large net's probabilities all within a few thousandths of
    # 1/7, so int8's rounding flips the top class of any share of them (28% in one run): its bar
    # means nothing here and is not asked (--no-verify); float32's exactness is.
    ok("export", "big", "--tflite", "--no-verify", "--out", out, "--runs-dir", runs)
    artifacts = json.loads((out / "metadata.json").read_text())["artifacts"]
    assert {"float32", "int8"} <= set(artifacts)
    assert artifacts["float32"]["parity"]["passed"] and artifacts["float32"]["parity"]["agreement"] == 1.0
    assert 0 <= artifacts["int8"]["parity"]["agreement"] <= 1  # measured and recorded all the same
    (image,) = json.loads(ok("predict", photo, "--model", out / "model_int8.tflite", "--json"))
    assert len(image["faces"]) == 1
    # The report by its library call, shrunk to one saliency image: the CLI's flags are
    # test_report's, the large net's last conv layer is this test's.
    build_report("big", runs, ReportSettings(saliency_images=1, filters="0-3", steps=4),
                 formats=("md",), echo=lambda line: None)
    assert "conv4_2" in (run / "report.md").read_text()  # the large net's last conv layer
    ok("train", "--data", "synthetic:300", "--epochs", "1", "--teacher", "big", "--name", "student",
       "--runs-dir", runs)
    assert json.loads((runs / "student" / "config.json").read_text())["options"]["teacher"] == "big"


def test_mixed_bfloat16_trains_and_saves_a_float32_model(tmp_path):
    from ferkeras.config import TrainConfig
    from ferkeras.model import build_model, float32_copy, load_model
    from ferkeras.train import train

    mixed = build_model(precision="mixed_bfloat16")
    assert mixed.get_layer("conv1").dtype_policy.name == "mixed_bfloat16"
    assert mixed.get_layer("predictions").dtype_policy.name == "float32"  # the softmax and loss
    assert build_model().get_layer("conv1").dtype_policy.name == "float32"  # the global policy is back
    copy = float32_copy(mixed)
    assert {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    faces = np.random.default_rng(0).integers(0, 256, (8, 48, 48, 1)).astype(np.float32)
    # Same weights: bfloat16's 8-bit mantissa moves the probabilities a little, no more.
    np.testing.assert_allclose(np.asarray(copy(faces)), np.asarray(mixed(faces)), atol=0.05)

    # 800 faces in batches of 32: without bfloat16 instructions TensorFlow emulates them, and 3
    # epochs of 2,000 faces in batches of 128 took 197 s on a 2-core AVX2 CPU (26 s with AVX-512 BF16).
    run = train(TrainConfig(data="synthetic:800", epochs=3, batch_size=32, augment="none",
                            precision="mixed_bfloat16", runs_dir=str(tmp_path), name="bf16"),
                echo=lambda line: None)
    # It learns: 0.67-0.76 over seeds 0-2 on an AVX-512 BF16 CPU, where chance is 1/7 (0.14,
    # give or take 0.025 on these 200 faces); 0.3 leaves room for another CPU's bfloat16.
    assert read_history(run)[-1]["val_accuracy"] > 0.3
    for name in ("model.keras", "last.keras"):
        saved = load_model(run / name)
        assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}, name
