"""Saliency maps: which pixels drive a class's score, by tf-keras-vis' methods, as arrays and a
figure.

The model takes raw 0-255 gray pixels, so gradients are with respect to those; each method's
softmax is replaced by identity (ReplaceToLinear), so the score is the class logit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ferkeras.data import as_batch
from ferkeras.errors import FerkerasError
from ferkeras.plotting import new_figure
from ferkeras.spec import CLASS_NAMES, IMAGE_SIZE
from ferkeras.viz.figures import MAP_CMAP, overlay, show_gray
from ferkeras.viz.filters import conv_layers, functional, response_layer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SALIENCY_METHODS = ("vanilla", "smoothgrad", "gradcam++", "scorecam")
DEFAULT_METHOD = "vanilla"  # the reference's question 4


def _linear_score_visualizer(kind, model):
    """A tf-keras-vis visualizer on a copy of the model whose softmax is replaced by identity,
    so scores are logits and not flattened by saturated probabilities."""
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

    return kind(functional(model), model_modifier=ReplaceToLinear(), clone=True)


def vanilla_saliency(model, images: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """|d logit[class] / d pixel| per image, normalised to [0, 1]: (N, 48, 48)."""
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.scores import CategoricalScore

    saliency = _linear_score_visualizer(Saliency, model)
    return np.asarray(saliency(CategoricalScore(list(classes)), as_batch(images)), np.float32)


def smoothgrad(model, images: np.ndarray, classes: Sequence[int], samples: int = 50,
               noise: float = 0.1) -> np.ndarray:
    """SmoothGrad: |mean gradient| over noisy copies (noise: a fraction of each image's range)."""
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.scores import CategoricalScore

    saliency = _linear_score_visualizer(Saliency, model)
    # As in the paper, the signed gradients are averaged and the absolute value taken after:
    # pixel-level gradient noise cancels. (tf-keras-vis' default, abs before averaging, keeps it.)
    grads = saliency(CategoricalScore(list(classes)), as_batch(images), smooth_samples=samples,
                     smooth_noise=noise, gradient_modifier=None, keepdims=True, normalize_map=False)
    return np.abs(np.asarray(grads, np.float32))[..., 0]


def gradcam_plus_plus(model, images: np.ndarray, classes: Sequence[int],
                      layer: str | None = None) -> np.ndarray:
    """Grad-CAM++ on a conv layer, upsampled to 48x48 and normalised to [0, 1]: (N, 48, 48)."""
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.utils.scores import CategoricalScore

    cam = _linear_score_visualizer(GradcamPlusPlus, model)
    layer = layer or cam_layer(model)
    return np.asarray(cam(CategoricalScore(list(classes)), as_batch(images), penultimate_layer=layer,
                          seek_penultimate_conv_layer=False), np.float32)


def scorecam(model, images: np.ndarray, classes: Sequence[int], layer: str | None = None) -> np.ndarray:
    """Score-CAM on a conv layer (gradient-free: each channel's map masks the input), (N, 48, 48)."""
    import keras
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.scores import CategoricalScore

    # Score-CAM applies softmax to the model's outputs itself, so it gets logits (ReplaceToLinear)
    # and the weights are the class probabilities of the masked inputs, as in the paper.
    cam = _linear_score_visualizer(Scorecam, model)
    layer = layer or cam_layer(model)
    interactive = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()  # Scorecam calls predict() with its progress bar
    try:
        maps = cam(CategoricalScore(list(classes)), as_batch(images), penultimate_layer=layer,
                   seek_penultimate_conv_layer=False)
    finally:
        if interactive:
            keras.config.enable_interactive_logging()
    return np.asarray(maps, np.float32)


def cam_layer(model) -> str:
    """The layer Grad-CAM++ and Score-CAM read: the last conv block's output after its ReLU.

    CAMs weight non-negative activations; the conv's raw output (relu4's input in our model)
    still has BatchNorm's sign and offset to come, which blurs the maps.
    """
    import keras

    names = [layer.name for layer in model.layers]
    position = names.index(response_layer(model, conv_layers(model)[-1]))
    following = model.layers[position + 1] if position + 1 < len(names) else None
    return following.name if isinstance(following, keras.layers.ReLU) else names[position]


def _normalize(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to [0, 1] by its own min and max (all-zero maps stay 0)."""
    lo = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - lo
    return np.divide(maps - lo, span, out=np.zeros_like(maps), where=span > 0)


def saliency_maps(model, images: np.ndarray, classes: Sequence[int],
                  method: str = DEFAULT_METHOD) -> np.ndarray:
    """Maps (N, 48, 48) in [0, 1] explaining classes[i] for images[i], by one of SALIENCY_METHODS."""
    methods = {"vanilla": vanilla_saliency, "smoothgrad": smoothgrad,
               "gradcam++": gradcam_plus_plus, "scorecam": scorecam}
    if method not in methods:
        raise FerkerasError(f"--method {method}: must be one of {', '.join(SALIENCY_METHODS)}")
    classes = [int(c) for c in classes]
    if len(classes) != len(images):
        raise FerkerasError(f"{len(images)} images but {len(classes)} target classes")
    maps = methods[method](model, images, classes)
    # Rescaled here for every method alike: tf-keras-vis' own scaling stops just short of 1.
    return _normalize(np.nan_to_num(maps.reshape(len(images), IMAGE_SIZE, IMAGE_SIZE)))


_METHOD_TITLES = {"vanilla": "Vanilla saliency", "smoothgrad": "SmoothGrad",
                  "gradcam++": "Grad-CAM++ (last conv block)", "scorecam": "Score-CAM (last conv block)"}


def saliency_figure(images: np.ndarray, maps: np.ndarray, predicted: Sequence[int],
                    confidence: Sequence[float], labels: Sequence[int] | None = None,
                    targets: Sequence[int] | None = None, method: str = DEFAULT_METHOD,
                    captions: Sequence[str] | None = None,
                    class_names: Sequence[str] = CLASS_NAMES) -> Figure:
    """Rows: input, saliency map, overlay; each column titled with true and predicted label."""
    n = len(images)
    fig = new_figure(max(2.0 * n + 1.2, 5.5), 6.9)
    axes = np.asarray(fig.subplots(3, n, squeeze=False))
    for i in range(n):
        lines = [captions[i]] if captions is not None else []
        lines.append(f"true: {class_names[labels[i]] if labels is not None else '?'}")
        lines.append(f"pred: {class_names[predicted[i]]} ({confidence[i]:.2f})")
        if targets is not None and targets[i] != predicted[i]:
            lines.append(f"map for: {class_names[targets[i]]}")
        image = np.asarray(images[i]).reshape(IMAGE_SIZE, IMAGE_SIZE)
        show_gray(axes[0, i], image, "\n".join(lines))
        shown = axes[1, i].imshow(maps[i], cmap=MAP_CMAP, vmin=0, vmax=1)
        axes[1, i].set_axis_off()
        overlay(axes[2, i], image, maps[i])
        axes[2, i].set_axis_off()
    for row, name in enumerate(("input", "saliency", "overlay")):
        axes[row, 0].set_axis_on()
        axes[row, 0].set_xticks([])
        axes[row, 0].set_yticks([])
        axes[row, 0].set_ylabel(name, fontsize=11)
    # Attached to every row, so that all three rows keep the same width and stay aligned.
    fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.6, anchor=(0.0, 0.25),
                 label="saliency (normalised per image)")
    what = "the predicted class" if targets is None or list(targets) == list(predicted) else \
        "the class named under each image"
    fig.suptitle(f"{_METHOD_TITLES.get(method, method)}: what drives the score of {what}")
    return fig
