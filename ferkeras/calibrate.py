"""Calibration: a temperature fitted on validation images and folded into the model's last layer,
so that every file made from the model (Keras, SavedModel, TFLite) answers softmax(logits / T).

The temperature is fitted for a TTA method's views, each rescaled and then averaged, as the
runners average them: a model is calibrated for the way it is used (predict's flip by default).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from ferkeras.data import Split
from ferkeras.evaluate import view_probabilities
from ferkeras.metrics import calibration, fit_temperature, rescale
from ferkeras.model import fold_temperature
from ferkeras.runners import view_plan

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
