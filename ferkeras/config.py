"""What a training run is: its options (one dataclass, the CLI's flags come from it), named
recipes of them, and which of them a resumed run may change.

No TensorFlow here, so the CLI can build its help and check flags before the slow import.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferkeras.errors import FerkerasError

RUNS_DIR = "runs"  # the folder of run folders unless --runs-dir says otherwise
# Options that `train --resume` may change; the rest come from the run's config.json.
RESUME_OVERRIDES = ("epochs", "runs_dir")

AUGMENT_LEVELS = ("none", "light", "medium", "strong", "photo")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
CLASS_WEIGHTS = ("none", "balanced")
MIXES = ("none", "mixup", "cutmix")
SELECTIONS = ("accuracy", "balanced")  # the validation figure that picks model.keras's epoch
ARCHITECTURES = ("reference", "large")  # model.build_model
STRATEGIES = ("default", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_bfloat16")  # Keras dtype policies
TEACHINGS = ("precomputed", "consistent")  # teaching.distillation_targets, teaching.consistent_teacher

# Epochs when --epochs is not given: the reference's 30 on real data; the synthetic faces are
# learnt sooner: 2 epochs reach 0.938-0.945 validation accuracy over seeds 0-2 (3 reached
# 0.954-0.962, 4 0.962-0.974, 8 0.976-0.981 in four times the time), so the newcomer's first
# run trains for about 20 s on 2 cores.
DEFAULT_EPOCHS_REAL = 30
DEFAULT_EPOCHS_SYNTHETIC = 2

# Named recipes for `ferkeras train --recipe NAME`: option values chosen by measurement (the
# accuracy table in bench/README.md); flags given on the command line override them.
RECIPES: dict[str, dict[str, Any]] = {
    # 0.6553 on PublicTest, 0.6743 with flip TTA; 120 epochs of about 24 s on 2 idle cores.
    "fer2013": {"name": "fer2013", "epochs": 120, "augment": "light", "erase": 0.25,
                "label_smoothing": 0.1, "optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4,
                "warmup_epochs": 2},
}


def is_synthetic_data(data: str | os.PathLike | None) -> bool:
    """Whether --data names the built-in synthetic faces: None, "synthetic" or "synthetic:N"."""
    return data is None or str(data).split(":")[0] == "synthetic"


def _opt(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field that carries its CLI help text and allowed values."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    """Every option of a training run; config.json of each run is this, as a dict."""

    data: str | None = _opt(None, "FER2013 as fer2013.csv, homework train.csv or Kaggle folders, "
                                  "or one folder of class folders (angry/, ...); default: the "
                                  "built-in synthetic faces")
    val_split: str = _opt("auto", "validation: a fraction of train (0.25), a split name (test), "
                                  "or auto = the data's test split, else 0.25 of train")
    skip_bad: bool = _opt(False, "pass over bad CSV rows, unreadable images, photos with no face "
                                 "found, empty class folders and those of other expressions "
                                 "(contempt), reporting their count, instead of stopping at the first")
    epochs: int | None = _opt(None, f"epochs to train (default {DEFAULT_EPOCHS_REAL}; "
                                    f"{DEFAULT_EPOCHS_SYNTHETIC} on synthetic data)")
    batch_size: int = _opt(128, "images per training step")
    lr: float = _opt(1e-3, "peak learning rate")
    optimizer: str = _opt("adam", "optimizer", OPTIMIZERS)
    weight_decay: float = _opt(0.0, "decoupled weight decay (adamw) or L2-style decay (sgd)")
    schedule: str = _opt("cosine", "learning-rate schedule: cosine decays to 0 over the run", SCHEDULES)
    augment: str = _opt("light", "augmentation: none; light = flip, shift; medium adds "
                                  "rotation, zoom; strong widens all; photo = medium's "
                                  "geometry with brightness, contrast and blur", AUGMENT_LEVELS)
    erase: float = _opt(0.0, "random erasing: the chance that a random patch of a training image "
                             "is replaced by noise")
    warmup_epochs: int = _opt(0, "epochs of linear learning-rate warm-up from 0 to --lr")
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy, 0 <= s < 1")
    mix: str = _opt("none", "mix pairs of training images and their labels: mixup blends whole "
                            "images, cutmix pastes a patch of one into the other", MIXES)
    teacher: str | None = _opt(None, "distil from a trained model (run, .keras, SavedModel or "
                                     ".tflite) or a .npy of its probabilities over train, in the "
                                     "data's order (several, comma-separated, are averaged): the "
                                     "targets blend each label with the teacher's probabilities")
    distill: float = _opt(0.5, "with --teacher: the teacher's share of each target, 0 < w <= 1")
    teaching: str = _opt("precomputed", "with --teacher: precomputed = the teachers label each "
                                        "training image once, before training; consistent = "
                                        "they label every augmented batch as the student sees it "
                                        "(Keras models only; a teacher pass per step)", TEACHINGS)
    class_weight: str = _opt("none", "balanced weighs classes by inverse frequency", CLASS_WEIGHTS)
    logit_adjust: float = _opt(0.0, "train on the logit-adjusted loss (Menon et al. 2021): each "
                               "class's logit shifted by TAU*log(its share of train), so that the "
                               "model favours no class for being frequent; 1 is the paper's, 0 off")
    select: str = _opt("accuracy", "the epoch kept as model.keras: the best validation accuracy, "
                                   "or balanced accuracy (the mean of the per-class recalls), "
                                   "which does not favour the frequent expressions", SELECTIONS)
    channels: int = _opt(3, "conv input channels: 3 = gray replicated as the reference, or 1")
    arch: str = _opt("reference", "architecture: reference = the report's 322,039-parameter CNN; "
                                  "large = a VGG-style network after Khaireddin & Chen (2021), "
                                  "2.6 million parameters", ARCHITECTURES)
    init: str | None = _opt(None, "start from a trained model's weights (a run or .keras file of "
                                  "the same --arch and --channels) instead of random ones: to "
                                  "fine-tune it, or to train it on under a new schedule")
    precision: str = _opt("float32", "mixed_bfloat16 computes in bfloat16 with float32 weights: "
                                     "1.26x faster for --arch large on a CPU with AVX-512 BF16, "
                                     "slower for the reference; models are saved in float32",
                          PRECISIONS)
    seed: int = _opt(0, "seed for the split, shuffling, augmentation and initial weights")
    deterministic: bool = _opt(False, "deterministic TensorFlow ops (slower; same run twice on CPU)")
    strategy: str = _opt("default", "tf.distribute strategy: mirrored spans all visible GPUs; "
                                    "multiworker spans the machines that TF_CONFIG names",
                         STRATEGIES)
    name: str = _opt("train", "run name: the run folder is RUNS_DIR/NAME (NAME2, ... if taken)")
    runs_dir: str = _opt(RUNS_DIR, "folder that holds the run folders")

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from a dict, refusing unknown keys with a suggestion (a typo is an error)."""
        known = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in known:
                raise FerkerasError(f"{source}: unknown option '{key}'{did_you_mean(key, known)}")
        config = cls(**values)
        config.validate()
        return config

    @classmethod
    def from_recipe(cls, recipe: str, overrides: dict[str, Any]) -> TrainConfig:
        """A recipe's options (a name in RECIPES or a JSON file of options), then the overrides."""
        if recipe in RECIPES:
            values, source = RECIPES[recipe], f"recipe {recipe}"
        elif recipe.endswith(".json"):
            try:
                values = json.loads(Path(recipe).read_text())
            except (OSError, ValueError) as e:
                raise FerkerasError(f"--recipe {recipe}: not a readable JSON file ({e})") from None
            if not isinstance(values, dict):
                raise FerkerasError(f"--recipe {recipe}: expected a JSON object of options")
            source = recipe
        else:
            raise FerkerasError(f"--recipe {recipe!r}: not one of {', '.join(RECIPES)} "
                                f"nor a .json file of options")
        return cls.from_dict({**values, **overrides}, source=source)

    def validate(self) -> None:
        """Raise FerkerasError naming the flag when a value is out of range."""
        checks = [
            (self.epochs is None or self.epochs >= 1, "--epochs", "must be at least 1"),
            (self.batch_size >= 1, "--batch-size", "must be at least 1"),
            (self.lr > 0, "--lr", "must be positive"),
            (self.weight_decay >= 0, "--weight-decay", "must be >= 0"),
            (0 <= self.label_smoothing < 1, "--label-smoothing", "must be in [0, 1)"),
            (0 <= self.logit_adjust <= 5, "--logit-adjust", "must be in [0, 5]"),
            (0 <= self.erase <= 1, "--erase", "must be in [0, 1]"),
            (self.warmup_epochs >= 0, "--warmup-epochs", "must be >= 0"),
            (0 < self.distill <= 1, "--distill", "must be in (0, 1]"),
            (self.teaching == "precomputed" or bool(self.teacher), "--teaching",
             "needs --teacher"),
            (self.epochs is None or self.warmup_epochs < self.epochs, "--warmup-epochs",
             "must be fewer than --epochs"),
            (self.channels in (1, 3), "--channels", "must be 1 or 3"),
            (bool(self.name) and "/" not in self.name and self.name not in (".", ".."),
             "--name", "must be a plain folder name"),
        ]
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                checks.append((False, flag_of(f.name),
                               f"must be one of {', '.join(choices)}"))
        for ok, flag, what in checks:
            if not ok:
                value = getattr(self, flag[2:].replace("-", "_"))
                raise FerkerasError(f"{flag} {value!r}: {what}")

    def resolved_epochs(self, synthetic: bool) -> int:
        """The epochs to train: the flag, else the default for this kind of data."""
        if self.epochs is not None:
            return self.epochs
        return DEFAULT_EPOCHS_SYNTHETIC if synthetic else DEFAULT_EPOCHS_REAL


def flag_of(option: str) -> str:
    """The command-line flag of an option name: batch_size -> --batch-size."""
    return "--" + option.replace("_", "-")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """"; did you mean 'X'?" for the choice closest to a mistyped word, or "" when none is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def resume_options(given: dict[str, Any], recipe: str | None = None) -> dict[str, Any]:
    """The options given on the command line that a resumed run takes (RESUME_OVERRIDES).

    Any other option, or a recipe, is an error: the run's config.json holds them.
    """
    changed = [name for name in given if name not in RESUME_OVERRIDES]
    if changed or recipe:
        flags = ", ".join(flag_of(n) for n in changed + ["recipe"] * bool(recipe))
        raise FerkerasError(f"--resume: {flags} cannot change when resuming "
                            f"(the run's config.json holds them); only --epochs can")
    return dict(given)


def command_line() -> str:
    """The command that is running, program name without its folder, for provenance records."""
    return " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))

