"""Ensembles: trained models made into one Keras model, a run that exports like any other.

Each member ends in a softmax Dense layer, so the mean of the members' logits is the geometric
mean of their probabilities, renormalised: one Dense layer over the members' features side by
side, its kernel the members' kernels stacked and divided by their count, its bias their mean.
The ensemble is therefore a model like the others: `export --calibrate` folds a temperature into
that layer, and the Keras, SavedModel and TFLite files hold the members in one graph.

A logit adjustment (Menon et al. 2021) can be folded into the same bias: tau x log(prior) taken
off each class's logit, prior the class shares of the members' training data, so that the rare
expressions are answered where the members' evidence is close.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
from keras import layers

from ferkeras.config import RUNS_DIR, command_line
from ferkeras.errors import FerkerasError
from ferkeras.fileio import write_json_atomic
from ferkeras.media.crop import FaceRange
from ferkeras.model import fold_logit_adjustment, load_model, save_model, softmax_layer
from ferkeras.runs import (
    SHIPPED_MODELS,
    find_model,
    load_run_data,
    model_source,
    new_run_dir,
    training_face_range,
)
from ferkeras.spec import CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES
from ferkeras.train import class_prior

Echo = Callable[[str], None]
ARCH = "ensemble"  # config.json's options.arch for an ensemble run
# The options of the first member's run that say what it trained and validated on: the ensemble's
# run keeps them, so that export and evaluate rebuild the same split.
DATA_OPTIONS = ("data", "val_split", "seed", "skip_bad")


def build_ensemble(members: Sequence[keras.Model], name: str = "ferkeras_ensemble") -> keras.Model:
    """One model whose logits are the mean of the members' (each a 48x48 gray model ending in a
    softmax Dense layer): softmax of the mean, the geometric mean of their probabilities."""
    if len(members) < 2:
        raise FerkerasError(f"an ensemble needs at least 2 models, got {len(members)}")
    lasts = [softmax_layer(member) for member in members]
    images = keras.Input(IMAGE_SHAPE, name="gray_0_255")
    # Each member up to its last layer, as a model of its own: their layers keep their names
    # inside it, so two members with layers of the same name do not clash.
    features = [keras.Model(member.inputs, member.layers[-2].output, name=f"member{i}_{member.name}")(images)
                for i, member in enumerate(members, start=1)]
    head = layers.Dense(NUM_CLASSES, activation="softmax", name="predictions", dtype="float32")
    model = keras.Model(images, head(layers.Concatenate(name="features")(features)), name=name)
    kernels, biases = zip(*(last.get_weights() for last in lasts), strict=True)
    head.set_weights([np.concatenate(kernels) / len(members), np.mean(biases, axis=0)])
    return model


def make_ensemble(members: Sequence[str], name: str = "my_ensemble", runs_dir: str | os.PathLike = RUNS_DIR,
                  logit_adjust: float = 0.0, echo: Echo = print) -> Path:
    """A run folder (runs_dir/name) holding the members (runs, .keras files, shipped models) as one
    model, with config.json naming them and the data the first one trained on and was validated
    on (its split, rebuilt by export and evaluate); returns the folder."""
    if not 0 <= logit_adjust <= 2:
        raise FerkerasError(f"--logit-adjust {logit_adjust}: must be between 0 and 2")
    if name in SHIPPED_MODELS:  # the name would find the installed model, not this run
        raise FerkerasError(f"--name {name}: the name of a model installed with ferkeras; choose another")
    paths = [find_model(member, runs_dir) for member in members]
    options = _data_options(paths[0])
    model = build_ensemble([load_model(path) for path in paths])
    prior = None
    if logit_adjust:
        train = load_run_data(options).splits.get("train")
        if train is None or train.labels is None:
            raise FerkerasError(f"{options['data']}: no labelled train split to take the class shares "
                                "for --logit-adjust from")
        prior = class_prior(train.labels)
        fold_logit_adjustment(model, logit_adjust, prior)
    parameters = int(model.count_params())
    run_dir = new_run_dir(runs_dir, name)
    save_model(model, run_dir / "model.keras")
    write_json_atomic(run_dir / "config.json", {
        "options": {**options, "arch": ARCH, "members": [str(m) for m in members],
                    "logit_adjust": logit_adjust, "name": name, "runs_dir": str(runs_dir)},
        "members": [str(path) for path in paths],
        "prior": None if prior is None else [float(p) for p in prior],
        # recognition clamps crops to it: a face that any member's training faces are like stays
        "face_range": FaceRange.spanning([training_face_range(path) for path in paths]).to_dict(),
        "class_names": list(CLASS_NAMES),
        "parameters": parameters,
        "command": command_line(),
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    })
    echo(f"Ensemble of {len(paths)} models ({', '.join(str(p) for p in paths)}): "
         f"{parameters:,} parameters, logits averaged"
         + (f", logit adjustment tau {logit_adjust:g}" if logit_adjust else ""))
    echo(f"Wrote {run_dir / 'model.keras'}, {run_dir / 'config.json'}")
    echo(f"Next: ferkeras evaluate {run_dir} --tta, or ferkeras export {run_dir} --calibrate --tflite")
    return run_dir


def _data_options(model_path: Path) -> dict:
    """The data options (DATA_OPTIONS) of the run, or export folder, that a member model came from."""
    options = model_source(model_path)[1]
    if not options:
        raise FerkerasError(f"{model_path}: neither in a run folder nor beside a metadata.json that names "
                            "its data, so the ensemble's data and validation split are unknown; "
                            "give its run instead")
    return {key: options[key] for key in DATA_OPTIONS if key in options}
