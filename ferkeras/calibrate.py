"""Calibration: a temperature fitted on validation images and folded into the model's last layer,
so that every file made from the model (Keras, SavedModel, TFLite) answers softmax(logits / T);
before it, optionally, per-class offsets under which each class is answered as often as it
occurs in the training data (match_prior), folded there too.

Both are fitted for a TTA method's views, each rescaled and then averaged, as the runners
average them: a model is calibrated for the way it is used (predict's flip by default).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from ferkeras.data import Split
from ferkeras.evaluate import view_probabilities
from ferkeras.metrics import answer_shares, calibration, fit_prior_bias, fit_temperature, rescale
from ferkeras.model import fold_class_bias, fold_temperature
from ferkeras.runners import view_plan
from ferkeras.spec import CLASS_NAMES

Echo = Callable[[str], None]


def calibrate_temperature(model: keras.Model, val: Split, tta: str | None, echo: Echo = print) -> dict:
    """Fit a temperature to the validation images' probabilities under a TTA method (each view
    rescaled, then averaged, as a runner averages them), fold it into the model's last layer, and
    say what it did to the calibration: the record metadata.json keeps."""
    shifts, mirror = view_plan(tta)
    views = view_probabilities(model, val.images, shifts, mirror)
    temperature = fit_temperature(val.labels, views)
    before = calibration(val.labels, np.mean(views, axis=0))
    after = calibration(val.labels, np.mean([rescale(v, temperature) for v in views], axis=0))
    fold_temperature(model, temperature)
    echo(f"  temperature {temperature:.3f}, fitted on {len(val):,} val images with --tta "
         f"{tta or 'none'}: expected calibration error {before['ece']:.4f} -> {after['ece']:.4f}, "
         f"NLL {before['nll']:.4f} -> {after['nll']:.4f}")
    return {"temperature": temperature, "tta": tta or "none", "images": len(val),
            "ece_before": before["ece"], "ece_after": after["ece"], "nll_before": before["nll"],
            "nll_after": after["nll"],
            "how": "the last layer's kernel and bias divided by the temperature"}


def match_prior(model: keras.Model, val: Split, prior: np.ndarray, tta: str | None,
                echo: Echo = print) -> dict:
    """Fit per-class logit offsets on the validation images, without their labels, under which each
    class is the answer for its share of the training data (prior; fit_prior_bias), fold them into
    the model's last layer, and say what they moved: the record metadata.json keeps.

    A model that answers neutral or sad where it is unsure then answers fear and disgust as often as
    they occur. Fit it before the temperature, which never changes an answer.
    """
    shifts, mirror = view_plan(tta)
    views = view_probabilities(model, val.images, shifts, mirror)
    offsets = fit_prior_bias(views, prior)
    before = answer_shares(np.mean(views, axis=0))
    after = answer_shares(np.mean([rescale(view, shift=offsets) for view in views], axis=0))
    fold_class_bias(model, offsets)

    def per_class(values: np.ndarray) -> dict:
        return {name: round(float(v), 4) for name, v in zip(CLASS_NAMES, values, strict=True)}

    echo(f"  answers matched to the training data's class shares on {len(val):,} val images (labels "
         f"unused), with --tta {tta or 'none'}: "
         + ", ".join(f"{name} {before[i]:.3f} -> {after[i]:.3f} ({prior[i]:.3f})"
                     for i, name in enumerate(CLASS_NAMES)))
    return {"offsets": per_class(offsets), "tta": tta or "none", "images": len(val),
            "prior": per_class(prior), "answered_before": per_class(before),
            "answered_after": per_class(after),
            "how": "added to the last layer's bias, before the temperature"}


def calibrate_model(model: keras.Model, train: Split, val: Split, tta: str | None,
                    temperature: bool | str = True, prior: bool = False, echo: Echo = print) -> dict:
    """As asked, match_prior (to the class shares of train) and then calibrate_temperature (temperature
    truthy: True or a TTA method's name): the temperature's record, with the prior's under
    "matched_prior"."""
    shares = np.asarray(train.class_counts()) / len(train)
    matched = match_prior(model, val, shares, tta, echo) if prior else None
    record = calibrate_temperature(model, val, tta, echo) if temperature else {}
    return record | ({"matched_prior": matched} if matched else {})
