"""Training: uint8 arrays -> tf.data (shuffle, batch, augment, prefetch) -> model.fit -> run folder.

A run folder holds config.json, history.csv/.json, tensorboard/, model.keras (best by
validation accuracy), last.keras, metrics.json, and backup/ while a run is unfinished.

Like nanoGPT's train.py, the pipeline (input, optimisation, the fit and its resume) reads top to
bottom in the order data flows; the teachers' targets (teaching.py) and the callbacks that write
the run folder (callbacks.py) live beside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

import ferkeras
from ferkeras.callbacks import AtomicBackupAndRestore, BestModel, EpochLog, HistoryFiles
from ferkeras.config import RUNS_DIR, TrainConfig, command_line
from ferkeras.cpu import cpu_record, onednn_hint
from ferkeras.data import EVAL_BATCH_SIZE, Split, load_dataset, train_val_splits
from ferkeras.distributed import fit_multiworker, is_chief, is_multiworker, make_strategy, with_class_weight
from ferkeras.errors import FerkerasError
from ferkeras.fileio import write_json_atomic
from ferkeras.media.crop import face_range
from ferkeras.model import (
    BalancedAccuracy,
    LogitAdjustedCrossentropy,
    build_model,
    float32_copy,
    load_model,
    save_model,
)
from ferkeras.runs import find_model, find_run, new_run_dir, read_history, read_run_config
from ferkeras.spec import CLASS_NAMES, NUM_CLASSES
from ferkeras.teaching import Teacher, consistent_teacher, distillation_targets

# Augmentation levels: (shift as a fraction of the side, rotation in degrees, zoom fraction).
# All levels above none flip horizontally: expressions are left-right symmetric.
AUGMENT_STRENGTH = {
    "light": (0.05, 0.0, 0.0),
    "medium": (0.10, 10.0, 0.10),
    "strong": (0.15, 20.0, 0.20),
    "photo": (0.10, 15.0, 0.15),
}
# What users' photos differ in beyond pose and framing (bench/pipeline.py's conditions): exposure,
# contrast and focus. (brightness factor, contrast factor, blur sigma range in pixels at 48x48)
PHOTOMETRIC = {"photo": (0.3, 0.4, (0.1, 1.0))}
SELECTED_BY = {"accuracy": "val_accuracy", "balanced": "val_balanced_accuracy"}  # --select

Echo = Callable[[str], None]


# ---------------------------------------------------------------------------- input pipeline

def make_augmenter(level: str, seed: int = 0, erase: float = 0.0) -> keras.Sequential | None:
    """Random flip/shift/rotation/zoom (photo: and light, contrast, blur; and erasing) layers
    applied to whole batches; None for none."""
    steps = []
    if level != "none":
        shift, degrees, zoom = AUGMENT_STRENGTH[level]
        steps += [layers.RandomFlip("horizontal", seed=seed),
                  layers.RandomTranslation(shift, shift, fill_mode="reflect", seed=seed + 1)]
        if degrees:
            steps.append(layers.RandomRotation(degrees / 360, fill_mode="reflect", seed=seed + 2))
        if zoom:
            steps.append(layers.RandomZoom(zoom, zoom, fill_mode="reflect", seed=seed + 3))
    if level in PHOTOMETRIC:
        brightness, contrast, sigma = PHOTOMETRIC[level]
        steps += [layers.RandomBrightness(brightness, value_range=(0, 255), seed=seed + 6),
                  layers.RandomContrast(contrast, value_range=(0, 255), seed=seed + 7),
                  layers.RandomGaussianBlur(1.0, kernel_size=3, sigma=sigma, value_range=(0, 255),
                                            seed=seed + 8)]
    if erase:
        # A (p, p) factor erases with probability p; a bare p would draw it from [0, p].
        steps.append(layers.RandomErasing(factor=(erase, erase), value_range=(0, 255),
                                          seed=seed + 4))
    if not steps:
        return None
    return keras.Sequential(steps, name=f"augment_{level}" + (f"_erase{erase:g}" if erase else ""))


def make_mixer(kind: str, seed: int = 0) -> layers.Layer | None:
    """Keras' MixUp or CutMix layer, at its default strength, for a --mix choice; None for none."""
    if kind == "mixup":
        return layers.MixUp(alpha=0.2, seed=seed + 5)
    if kind == "cutmix":
        return layers.CutMix(factor=1.0, seed=seed + 5)
    return None


def make_pipeline(split: Split, batch_size: int, augmenter: keras.Sequential | None = None,
                  shuffle_seed: int | None = None, targets: np.ndarray | None = None,
                  mixer: layers.Layer | None = None, teacher: Teacher | None = None,
                  distill: float = 0.5) -> tf.data.Dataset:
    """A tf.data pipeline of (float32 0-255 images (B,48,48,1), targets (B,7)).

    The targets are the one-hot labels unless given (soft targets, rows summing to 1, as
    distillation makes); a mixer (make_mixer) mixes images and targets of each batch in pairs;
    a teacher (consistent_teacher) then blends its probabilities on the final batch in, with
    weight distill.
    """
    if split.labels is None:
        raise FerkerasError("cannot train or validate on an unlabeled split")
    if targets is None:
        targets = np.eye(NUM_CLASSES, dtype=np.float32)[split.labels]
    ds = tf.data.Dataset.from_tensor_slices((split.images[..., None], targets.astype(np.float32)))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(split), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def to_float(images, labels):
        images = tf.cast(images, tf.float32)
        if augmenter is not None:
            images = augmenter(images, training=True)
        if mixer is not None:
            mixed = mixer({"images": images, "labels": labels}, training=True)
            images, labels = mixed["images"], mixed["labels"]
        if teacher is not None:
            labels = (1 - distill) * labels + distill * teacher(images)
        return images, labels

    options = tf.data.Options()
    # One thread per augmentation op: batches are still augmented in parallel, and the ops no
    # longer compete with the training step for its cores (about 5% faster training on 2 cores).
    options.threading.max_intra_op_parallelism = 1
    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(options)


def balanced_class_weight(labels: np.ndarray) -> dict[int, float]:
    """Inverse-frequency class weights (scikit-learn's 'balanced'), for classes present."""
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.unique(labels)
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(c): float(w) for c, w in zip(classes, weights, strict=True)}


# ---------------------------------------------------------------------------- optimisation

def make_schedule(config: TrainConfig, total_steps: int,
                  warmup_steps: int = 0) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate per step: --lr, cosine-decayed to 0 and/or warmed up linearly from 0."""
    if config.schedule != "cosine" and not warmup_steps:
        return config.lr
    # alpha=1 keeps a constant rate after the warm-up; alpha=0 decays it to 0 at the end.
    alpha = 0.0 if config.schedule == "cosine" else 1.0
    if not warmup_steps:
        return keras.optimizers.schedules.CosineDecay(config.lr, max(total_steps, 1), alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(total_steps - warmup_steps, 1), alpha=alpha,
        warmup_target=config.lr, warmup_steps=warmup_steps)


def make_optimizer(config: TrainConfig, total_steps: int,
                   warmup_steps: int = 0) -> keras.optimizers.Optimizer:
    """The optimizer that the config names, with its learning-rate schedule."""
    lr = make_schedule(config, total_steps, warmup_steps)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=config.weight_decay)
    return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True,
                                weight_decay=config.weight_decay or None)


def compile_model(model: keras.Model, config: TrainConfig, total_steps: int,
                  warmup_steps: int = 0, prior: np.ndarray | None = None) -> None:
    """Compile with cross-entropy (optionally smoothed, or logit-adjusted by prior, the classes'
    shares of train) and accuracy."""
    if config.logit_adjust:
        loss = LogitAdjustedCrossentropy(prior, config.logit_adjust, config.label_smoothing)
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    model.compile(optimizer=make_optimizer(config, total_steps, warmup_steps), loss=loss,
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"), BalancedAccuracy()])


def class_prior(labels: np.ndarray) -> np.ndarray:
    """Each class's share of the labels; a class with none gets half an image's, so its log is finite."""
    counts = np.bincount(labels, minlength=NUM_CLASSES).astype(np.float64)
    return np.maximum(counts, 0.5) / counts.sum()


# ---------------------------------------------------------------------------- runs

def library_versions() -> dict[str, str]:
    """Versions that a run's results depend on, for config.json."""
    import sklearn

    return {"ferkeras": ferkeras.__version__, "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn.__version__}


def load_initial_weights(model: keras.Model, config: TrainConfig, echo: Echo = print) -> None:
    """Copy the weights of --init's model (a run or .keras file) into a freshly built model."""
    path = find_model(config.init, config.runs_dir)
    source = load_model(path)
    if [w.shape for w in source.weights] != [w.shape for w in model.weights]:
        raise FerkerasError(f"--init {config.init}: {path} is not a --arch {config.arch} "
                            f"--channels {config.channels} model (its layers differ)")
    model.set_weights(source.get_weights())
    echo(f"Starting from the weights of {path}")


def train(config: TrainConfig, echo: Echo = print) -> Path | None:
    """Train a new run from a config; return its folder (None on a worker that is not the chief)."""
    config.validate()
    # First: MultiWorkerMirroredStrategy must come before any other TensorFlow work.
    strategy = make_strategy(config.strategy)
    if not is_chief(strategy):
        # Only the chief writes the run folder; the other workers' copies go to a scratch one.
        with tempfile.TemporaryDirectory(prefix="ferkeras-worker-") as scratch:
            _fit(Path(scratch), config, strategy, lambda line: None, resuming=False)
        echo("Worker finished; the chief wrote the run folder")
        return None
    run_dir = new_run_dir(config.runs_dir, config.name)
    try:
        return _fit(run_dir, config, strategy, echo, resuming=False)
    except BaseException:
        # Stopped before writing anything (bad data, bad --val-split): leave no empty run folder.
        with contextlib.suppress(OSError):  # rmdir removes only an empty folder
            run_dir.rmdir()
        raise


def resume(run: str, epochs: int | None = None, runs_dir: str = RUNS_DIR,
           echo: Echo = print) -> Path:
    """Continue an interrupted run where it stopped; epochs may change the planned total."""
    run_dir = find_run(run, runs_dir)
    saved = read_run_config(run_dir)
    config = TrainConfig.from_dict(saved["options"], source=str(run_dir / "config.json"))
    planned = saved["epochs"]
    done = len(read_history(run_dir))
    if epochs is not None:
        if epochs < done:
            raise FerkerasError(f"--epochs {epochs}: run {run_dir} already trained {done} epochs")
        config.epochs = planned = epochs
    if (run_dir / "metrics.json").is_file():
        # Its learning-rate schedule has run its course: longer training is a new run.
        raise FerkerasError(f"run {run_dir} already finished {done}/{planned} epochs; "
                            f"start a new run to train longer (ferkeras train --epochs N)")
    if config.strategy == "multiworker":
        # The other workers' backups were in scratch folders, gone with them.
        raise FerkerasError(f"run {run_dir} trained across workers (--strategy multiworker) "
                            "and cannot resume; start it again")
    config.runs_dir = str(run_dir.parent)
    return _fit(run_dir, config, make_strategy(config.strategy), echo, resuming=True,
                planned_epochs=planned)


def _fit(run_dir: Path, config: TrainConfig, strategy: tf.distribute.Strategy, echo: Echo,
         resuming: bool, planned_epochs: int | None = None) -> Path:
    """Load data, build or restore the model, fit with callbacks, write the run's files."""
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    dataset = load_dataset(config.data, skip_bad=config.skip_bad)
    if dataset.skipped:
        echo(dataset.skip_report())
    train_split, val_split = train_val_splits(dataset, config.val_split, config.seed)
    synthetic = dataset.format == "synthetic"
    epochs = planned_epochs or config.resolved_epochs(synthetic)
    if synthetic:
        echo(f"Training on built-in synthetic faces ({len(train_split):,} train / "
             f"{len(val_split):,} val); for FER2013: ferkeras train --data path/to/fer2013")
    else:
        echo(f"Training on {dataset.source} ({dataset.format}): "
             f"{len(train_split):,} train / {len(val_split):,} val images")

    # Before config.json: a bad --teacher or --init must leave no run folder behind.
    targets = teacher = None
    if config.teacher and config.teaching == "consistent":
        teacher = consistent_teacher(config, echo)
    elif config.teacher:
        targets = distillation_targets(config, train_split, echo)
    steps_per_epoch = math.ceil(len(train_split) / config.batch_size)
    with strategy.scope():
        model = build_model(config.channels, config.arch, config.precision)
        compile_model(model, config, steps_per_epoch * epochs, steps_per_epoch * config.warmup_epochs,
                      class_prior(train_split.labels))
        if config.init:  # a resumed run's backup, restored by its callback, overrides these
            load_initial_weights(model, config, echo)
    if not resuming:
        write_json_atomic(run_dir / "config.json", {
            "options": dataclasses.asdict(config),
            "epochs": epochs,
            "data": dataset.describe(),
            # recognition clamps a photo's crop to the light and sharpness these faces span
            "face_range": face_range(train_split.images).to_dict(),
            "train_images": len(train_split),
            "val_images": len(val_split),
            "class_names": list(CLASS_NAMES),
            "versions": library_versions(),
            "cpu": cpu_record(),
            "devices": [d.name for d in tf.config.list_logical_devices()],
            "command": command_line(),
            "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        })

    gpus = tf.config.list_logical_devices("GPU")
    echo(f"Device: {len(gpus)} GPU(s)" if gpus else "Device: CPU (no GPU visible)")
    if not gpus and (hint := onednn_hint()):
        echo(hint)

    train_ds = make_pipeline(train_split, config.batch_size,
                             make_augmenter(config.augment, config.seed, config.erase), config.seed,
                             targets=targets, mixer=make_mixer(config.mix, config.seed),
                             teacher=teacher, distill=config.distill)
    val_ds = make_pipeline(val_split, EVAL_BATCH_SIZE)

    # A resumed run's best model so far is its history's best.
    monitor = SELECTED_BY[config.select]
    best_so_far = max((r[monitor] for r in read_history(run_dir) if monitor in r), default=None)
    callbacks = [
        EpochLog(epochs, echo),
        HistoryFiles(run_dir),
        BestModel(run_dir / "model.keras", best_so_far, monitor),
        keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False,
                                    profile_batch=0),
        # Last, so an epoch is backed up only once its history row is written: a kill in
        # between re-runs that epoch on resume, and the history keeps every epoch once.
        AtomicBackupAndRestore(str(run_dir / "backup")),
    ]
    class_weight = (balanced_class_weight(train_split.labels)
                    if config.class_weight == "balanced" else None)
    try:
        if is_multiworker(strategy):
            if class_weight:
                train_ds = with_class_weight(train_ds, class_weight)
            fit_multiworker(model, strategy, train_ds, val_ds, epochs, callbacks)
        else:
            model.fit(train_ds, validation_data=val_ds, epochs=epochs,
                      callbacks=callbacks, class_weight=class_weight, shuffle=False,  # ds shuffles
                      verbose=1 if sys.stdout.isatty() else 0)
    except KeyboardInterrupt:
        done = len(read_history(run_dir))
        echo(f"Interrupted after {done}/{epochs} epochs; continue with: "
             f"ferkeras train --resume {run_dir}")
        raise

    save_model(float32_copy(model), run_dir / "last.keras")
    metrics = _final_metrics(run_dir, val_ds, read_history(run_dir), len(train_split), monitor)
    write_json_atomic(run_dir / "metrics.json", metrics)
    shutil.rmtree(run_dir / "backup", ignore_errors=True)
    kept = (f"Best val accuracy {metrics['best_val_accuracy']:.4f}" if config.select == "accuracy" else
            f"Best val balanced accuracy {metrics['best_val_balanced_accuracy']:.4f} (accuracy "
            f"{metrics['best_val_accuracy']:.4f})")
    echo(f"{kept} at epoch {metrics['best_epoch']}; "
         f"run saved to {run_dir}/ (tensorboard --logdir {run_dir.parent})")
    return run_dir


def _final_metrics(run_dir: Path, val_ds: tf.data.Dataset, history: list[dict],
                   train_images: int, monitor: str = "val_accuracy") -> dict:
    """Re-evaluate the kept checkpoint (the best by monitor) on the validation data and
    summarise the history."""
    best = load_model(run_dir / "model.keras")
    best.compile(loss="categorical_crossentropy",
                 metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"), BalancedAccuracy()])
    val_loss, val_accuracy, val_balanced = best.evaluate(val_ds, verbose=0)
    best_row = max((r for r in history if monitor in r), key=lambda r: r[monitor])
    train_seconds = float(np.median([r["train_seconds"] for r in history]))
    return {
        "best_epoch": best_row["epoch"],
        "selected_by": monitor,
        "best_val_accuracy": float(val_accuracy),
        "best_val_balanced_accuracy": float(val_balanced),
        "best_val_loss": float(val_loss),
        "final_val_accuracy": history[-1]["val_accuracy"],
        "epochs": len(history),
        "seconds_per_epoch": float(np.median([r["seconds"] for r in history])),
        "train_images": train_images,
        # Training alone, validation excluded: what the speed benchmarks compare.
        "train_images_per_second": train_images / train_seconds,
    }
