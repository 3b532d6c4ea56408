"""Distillation: the teachers' soft targets, made once (precomputed) or on every augmented batch
(consistent), for `ferkeras train --teacher`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from ferkeras.config import TrainConfig
from ferkeras.data import Split
from ferkeras.errors import FerkerasError, first_line
from ferkeras.model import load_model
from ferkeras.spec import NUM_CLASSES

Echo = Callable[[str], None]
Teacher = Callable[[tf.Tensor], tf.Tensor]  # float 0-255 images (B,48,48,1) -> probabilities (B,7)


def distillation_targets(config: TrainConfig, split: Split, echo: Echo = print) -> np.ndarray:
    """Soft targets (N, 7): each one-hot label blended with the teachers' mean probabilities.

    Each teacher sees each training image once, with its mirror image (flip TTA), before
    training; the light augmentations (flip, small shifts) hardly change its answer, so the
    student's targets need no teacher pass per step.
    """
    from ferkeras.runners import load_runner

    probs = []
    for name in teacher_names(config):
        if name.endswith(".npy"):  # soft targets made elsewhere (a GPU with no TensorFlow, say)
            probs.append(read_soft_targets(name, len(split)))
            where = name
        else:
            try:
                teacher = load_runner(name, config.runs_dir)
            except FerkerasError as e:
                raise FerkerasError(f"--teacher {config.teacher}: {e}") from None
            if len(split) and teacher(split.images[:1]).shape != (1, NUM_CLASSES):
                raise FerkerasError(f"--teacher {config.teacher}: {teacher.path} does not output "
                                    f"{NUM_CLASSES} classes")
            probs.append(teacher.predict(split.images, tta="flip"))
            where = teacher.path
        echo(f"Teacher {where}: agrees with "
             f"{np.mean(probs[-1].argmax(1) == split.labels):.1%} of the training labels")
    mean = np.mean(probs, axis=0)
    if len(probs) > 1:
        echo(f"Teachers together: agree with {np.mean(mean.argmax(1) == split.labels):.1%}")
    echo(f"Targets: {1 - config.distill:g} x label + {config.distill:g} x teacher probabilities")
    onehot = np.eye(NUM_CLASSES)[split.labels]
    return ((1 - config.distill) * onehot + config.distill * mean).astype(np.float32)


def consistent_teacher(config: TrainConfig, echo: Echo = print) -> Teacher:
    """The teachers' mean probabilities on a batch, for --teaching consistent.

    Labels made once on the clean image disagree with a shifted, mirrored or erased view of
    it; a teacher that sees the very view the student trains on does not ("Knowledge
    distillation: a good teacher is patient and consistent", Beyer et al. 2022).
    """
    from ferkeras.runs import find_model

    models = []
    for name in teacher_names(config):
        if name.endswith((".npy", ".tflite")):
            raise FerkerasError(f"--teacher {config.teacher}: {name} cannot label new views; "
                                "--teaching consistent needs Keras models (a run, a .keras "
                                "file, shipped or large)")
        try:
            path = find_model(name, config.runs_dir)
        except FerkerasError as e:
            raise FerkerasError(f"--teacher {config.teacher}: {e}") from None
        model = load_model(path)
        if model.output_shape != (None, NUM_CLASSES):
            raise FerkerasError(f"--teacher {config.teacher}: {path} does not output "
                                f"{NUM_CLASSES} classes")
        models.append(model)
        echo(f"Teacher {path}: labels every augmented batch (consistent teaching)")
    echo(f"Targets: {1 - config.distill:g} x label + {config.distill:g} x teacher probabilities")

    def teach(images: tf.Tensor) -> tf.Tensor:
        return tf.add_n([tf.cast(m(images, training=False), tf.float32) for m in models]) / len(models)

    return teach


def teacher_names(config: TrainConfig) -> list[str]:
    """--teacher's comma-separated models and files."""
    return [part.strip() for part in (config.teacher or "").split(",") if part.strip()]


def read_soft_targets(path: str, images: int) -> np.ndarray:
    """A teacher's probabilities (images, 7) from a .npy file, checked against the training data."""
    try:
        probs = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise FerkerasError(f"--teacher {path}: cannot read it as a .npy array ({first_line(e)})") from None
    if probs.shape != (images, NUM_CLASSES):
        raise FerkerasError(f"--teacher {path}: shape {probs.shape}, expected ({images}, {NUM_CLASSES}): "
                            "one row of probabilities per training image, in the data's order")
    probs = probs.astype(np.float64)
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise FerkerasError(f"--teacher {path}: probabilities must be finite and non-negative")
    sums = probs.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > 1e-3:
        raise FerkerasError(f"--teacher {path}: row {worst} sums to {sums[worst]:.4f}, not 1 "
                            "(softmax probabilities expected)")
    return probs
