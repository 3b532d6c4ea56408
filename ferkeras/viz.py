"""What the model learned, as arrays and figures: history curves, saliency maps, filter images.

Each method is a small function that returns numpy arrays (tests check the numbers); each
figure is built by a separate function from those arrays and saved by save_figure (temp file
+ rename). Figures are matplotlib.figure.Figure objects, drawn without pyplot, so nothing here
touches a global backend. Saliency, Grad-CAM++, Score-CAM and activation maximization are
tf-keras-vis'; the model takes raw 0-255 gray pixels, so gradients are with respect to those.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ferkeras.config import atomic_path, run_of_model
from ferkeras.data import CLASS_NAMES, IMAGE_SIZE, as_batch
from ferkeras.errors import FerkerasError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SALIENCY_METHODS = ("vanilla", "smoothgrad", "gradcam++", "scorecam")
FIGURE_DPI = 120
MAP_CMAP = "inferno"  # saliency / activation maps: perceptually uniform, readable in gray print


# ---------------------------------------------------------------------------- figures

def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Save a figure as PNG through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    return path


def _figure(width: float, height: float) -> Figure:
    """A pyplot-free figure (no global state, works without a display)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _overlay(ax, image: np.ndarray, heat: np.ndarray, vmax: float = 1.0):
    """A gray image with a heat map on top, opaque where the map is high, clear where it is 0."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    weight = np.clip(np.asarray(heat, np.float32) / max(vmax, 1e-9), 0, 1)
    return ax.imshow(heat, cmap=MAP_CMAP, vmin=0, vmax=vmax, alpha=0.8 * weight)


def _show_gray(ax, image: np.ndarray, title: str | None = None, fontsize: float = 9) -> None:
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


# ---------------------------------------------------------------------------- history

def history_figure(history: list[dict], title: str = "") -> Figure:
    """Loss and accuracy per epoch, train against validation, best validation epoch marked."""
    from matplotlib.ticker import MaxNLocator

    if not history:
        raise FerkerasError(f"{title or 'run'}: no history yet (no epoch has finished)")
    epochs = [row["epoch"] for row in history]
    best = max(history, key=lambda row: row["val_accuracy"])
    fig = _figure(11, 4.2)
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], "loss", "loss (cross-entropy per image)"),
                           (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [row[key] for row in history], "o-", ms=3, label="train")
        ax.plot(epochs, [row[f"val_{key}"] for row in history], "s-", ms=3, label="validation")
        ax.axvline(best["epoch"], color="gray", ls=":", lw=1,
                   label=f"best val accuracy {best['val_accuracy']:.4f} (epoch {best['epoch']})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("Loss")
    axes[1].set_title("Accuracy")
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------- confusion matrix

def confusion_figure(counts: np.ndarray, class_names: Sequence[str] = CLASS_NAMES,
                     title: str = "") -> Figure:
    """Two panels, counts and row-normalised rates, with class names and values in the cells."""
    from ferkeras.evaluate import row_normalize

    counts = np.asarray(counts)
    rates = row_normalize(counts)
    fig = _figure(13, 5.6)
    axes = fig.subplots(1, 2)
    for ax, matrix, name, fmt in ((axes[0], counts, "counts", "{:,.0f}"),
                                  (axes[1], rates, "row-normalised (recall on the diagonal)",
                                   "{:.2f}")):
        vmax = max(matrix.max(), 1) if matrix is counts else 1.0
        shown = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=vmax)
        fig.colorbar(shown, ax=ax, shrink=0.85, label="images" if matrix is counts else "fraction")
        ticks = np.arange(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=45, ha="right")
        ax.set_yticks(ticks, class_names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(name)
        threshold = vmax / 2
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=8,
                    color="white" if value > threshold else "black")
    if title:
        fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------- saliency

def _functional(model):
    """A functional view of the model: tf-keras-vis reads model.output_names, which Keras 3
    gives functional models only (a Sequential fails in ReplaceToLinear)."""
    import keras

    return keras.Model(model.inputs, model.outputs, name=f"{model.name}_functional")


def _linear_score_visualizer(kind, model):
    """A tf-keras-vis visualizer on a copy of the model whose softmax is replaced by identity,
    so scores are logits and not flattened by saturated probabilities."""
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

    return kind(_functional(model), model_modifier=ReplaceToLinear(), clone=True)


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
                  method: str = "vanilla") -> np.ndarray:
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
                    targets: Sequence[int] | None = None, method: str = "vanilla",
                    captions: Sequence[str] | None = None,
                    class_names: Sequence[str] = CLASS_NAMES) -> Figure:
    """Rows: input, saliency map, overlay; each column titled with true and predicted label."""
    n = len(images)
    fig = _figure(max(2.0 * n + 1.2, 5.5), 6.9)
    axes = np.asarray(fig.subplots(3, n, squeeze=False))
    for i in range(n):
        lines = [captions[i]] if captions is not None else []
        lines.append(f"true: {class_names[labels[i]] if labels is not None else '?'}")
        lines.append(f"pred: {class_names[predicted[i]]} ({confidence[i]:.2f})")
        if targets is not None and targets[i] != predicted[i]:
            lines.append(f"map for: {class_names[targets[i]]}")
        image = np.asarray(images[i]).reshape(IMAGE_SIZE, IMAGE_SIZE)
        _show_gray(axes[0, i], image, "\n".join(lines))
        shown = axes[1, i].imshow(maps[i], cmap=MAP_CMAP, vmin=0, vmax=1)
        axes[1, i].set_axis_off()
        _overlay(axes[2, i], image, maps[i])
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


# ---------------------------------------------------------------------------- filters

def conv_layers(model) -> list[str]:
    """Names of the model's convolutional layers, input to output."""
    import keras

    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def response_layer(model, layer: str) -> str:
    """The layer whose output is a conv filter's response: its BatchNorm when one follows.

    BatchNorm may scale a channel by a negative gamma; maximizing the conv output would then
    minimize what the next layer sees. The ReLU after it is skipped: it has no gradient below 0.
    """
    import keras

    names = [lay.name for lay in model.layers]
    convs = conv_layers(model)
    if layer not in names:
        raise FerkerasError(f"--layer {layer}: no such layer (conv layers: {', '.join(convs)})")
    if layer not in convs:
        raise FerkerasError(f"--layer {layer}: not a convolutional layer "
                            f"(conv layers: {', '.join(convs)})")
    following = model.layers[names.index(layer) + 1] if names.index(layer) + 1 < len(names) else None
    if isinstance(following, keras.layers.BatchNormalization):
        return following.name
    return layer


def filter_count(model, layer: str) -> int:
    """The number of filters (output channels) of a conv layer."""
    response_layer(model, layer)  # checks the name
    return int(model.get_layer(layer).filters)


def parse_filters(spec: str | None, count: int, layer: str = "layer") -> list[int]:
    """ "all"/None, or "0,5,7" and ranges "0-15" -> filter indices, checked against count."""
    if spec is None or str(spec).strip().lower() == "all":
        return list(range(count))
    chosen: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                values = list(range(lo, hi + 1))
            else:
                values = [int(part)]
        except ValueError:
            raise FerkerasError(f"--filters {spec}: expected indices such as 0,5,7 or 0-15, "
                                f"got {part!r}") from None
        if not values:
            raise FerkerasError(f"--filters {spec}: empty range {part!r}")
        for value in values:
            if not 0 <= value < count:
                raise FerkerasError(f"--filters {spec}: filter {value} is outside {layer}'s "
                                    f"{count} filters (0..{count - 1})")
            if value not in chosen:
                chosen.append(value)
    return chosen


@dataclass
class ActivationMaximizationSettings:
    """Activation maximization tuned for 48x48 gray faces in raw 0..255 pixels."""

    steps: int = 256  # Adam steps; the images settle by about 200
    learning_rate: float = 4.0  # Adam moves each pixel by about this much per step, early on
    jitter: int = 2  # random shift per step, in pixels: features must survive small moves
    blur_every: int = 4  # a light blur every few steps keeps pixel-level noise out
    blur_sigma: float = 0.5
    total_variation: float = 0.05  # weight of total variation (pixel units, per pixel)
    gray_pull: float = 0.02  # weight of the RMS distance from mid-gray: no drift to the 0/255 walls
    seed_spread: float = 8.0  # start from mid-gray plus this much noise
    # "center": the filter's centre units, whose 38-px receptive field holds one face-sized
    # feature (as the top real images are ranked by a single unit's peak); "mean": the whole
    # map's mean, which a repeated texture maximizes.
    objective: str = "center"

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise FerkerasError(f"--steps {self.steps}: must be at least 1")


class _SteadyJitter:
    """Shift the image by a fresh random offset each step, undoing the previous one.

    tf-keras-vis' Jitter rolls the image in place, so the shifts add up to a random walk and
    the wrap-around seam ends inside the picture; here the image stays where it started.
    """

    def __init__(self, jitter: int, rng: np.random.Generator):
        self.jitter, self.rng, self.offset = jitter, rng, (0, 0)

    def __call__(self, x):
        import tensorflow as tf

        new = tuple(int(v) for v in self.rng.integers(-self.jitter, self.jitter + 1, 2))
        step = (new[0] - self.offset[0], new[1] - self.offset[1])
        self.offset = new
        return tf.roll(x, shift=step, axis=(1, 2))

    def undo(self, images: np.ndarray) -> np.ndarray:
        """Put the final images back at the origin."""
        return np.roll(images, shift=(-self.offset[0], -self.offset[1]), axis=(1, 2))


class _Blur:
    """A small Gaussian blur every few steps, with reflected edges (zero padding is black)."""

    def __init__(self, every: int, sigma: float):
        self.every, self.sigma, self.step = every, sigma, 0

    def __call__(self, x):
        import tensorflow as tf

        self.step += 1
        if self.every <= 0 or self.step % self.every:
            return x
        radius = max(1, int(round(3 * self.sigma)))
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / self.sigma) ** 2)
        kernel = np.outer(taps, taps) / taps.sum() ** 2
        padded = tf.pad(x, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
        return tf.nn.conv2d(padded, kernel[:, :, None, None].astype(np.float32), 1, "VALID")


class _GrayPull:
    """RMS distance from mid-gray, per image: keeps pixels off the 0/255 walls (an L2 norm, as
    tf-keras-vis' Norm, would pull towards 0, which for this model is black)."""

    name = "GrayPull"

    def __init__(self, weight: float):
        self.weight = weight

    def __call__(self, x):
        import tensorflow as tf

        return self.weight * tf.sqrt(tf.reduce_mean(tf.square(x - 127.5), axis=[1, 2, 3]))


def _filter_score(filters: list[int], objective: str):
    """Score for a batch where image i maximizes filter filters[i]: its map's mean, or centre."""
    import tensorflow as tf

    def score(output):
        maps = tf.gather(output, filters, axis=-1, batch_dims=0)  # (F, h, w, F)
        maps = tf.linalg.diag_part(tf.transpose(maps, [1, 2, 0, 3]))  # (h, w, F): image i, filter i
        if objective == "center":
            h, w = maps.shape[0], maps.shape[1]
            maps = maps[(h - 1) // 2:h // 2 + 1, (w - 1) // 2:w // 2 + 1]
        return tf.reduce_mean(maps, axis=[0, 1])

    return score


def maximize_filters(model, layer: str = "conv4", filters: Sequence[int] | None = None,
                     settings: ActivationMaximizationSettings | None = None, seed: int = 0,
                     progress: bool = False) -> np.ndarray:
    """Activation maximization: per filter, the 48x48 image (0..255) maximizing its response."""
    import tensorflow as tf
    from tf_keras_vis.activation_maximization import ActivationMaximization
    from tf_keras_vis.activation_maximization.callbacks import Progress
    from tf_keras_vis.activation_maximization.regularizers import TotalVariation2D
    from tf_keras_vis.utils.model_modifiers import ExtractIntermediateLayer

    settings = settings or ActivationMaximizationSettings()
    if settings.objective not in ("mean", "center"):
        raise FerkerasError(f"objective {settings.objective!r}: must be mean or center")
    target = response_layer(model, layer)
    count = filter_count(model, layer)
    filters = list(range(count)) if filters is None else [int(f) for f in filters]
    for f in filters:
        if not 0 <= f < count:
            raise FerkerasError(f"filter {f} is outside {layer}'s {count} filters (0..{count - 1})")
    if not filters:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.float32)

    rng = np.random.default_rng(seed)
    seed_input = np.clip(127.5 + settings.seed_spread * rng.standard_normal(
        (len(filters), IMAGE_SIZE, IMAGE_SIZE, 1)), 0, 255).astype(np.float32)
    jitter = _SteadyJitter(settings.jitter, rng)
    visualizer = ActivationMaximization(_functional(model),
                                        model_modifier=ExtractIntermediateLayer(target), clone=True)
    # One optimisation for all filters at once: image i maximizes filter filters[i]; the
    # images do not interact (inference-mode BatchNorm, per-image regularisers).
    images = visualizer(
        _filter_score(filters, settings.objective), seed_input=seed_input, input_range=(0, 255),
        input_modifiers=[jitter, _Blur(settings.blur_every, settings.blur_sigma)],
        regularizers=[TotalVariation2D(weight=settings.total_variation),
                      _GrayPull(settings.gray_pull)],
        steps=settings.steps, optimizer=tf.keras.optimizers.Adam(settings.learning_rate),
        callbacks=[Progress()] if progress else None)
    images = np.asarray(images, np.float32).reshape(len(filters), IMAGE_SIZE, IMAGE_SIZE)
    return jitter.undo(images)


def filter_responses(model, images: np.ndarray, layer: str = "conv4",
                     batch_size: int = 512) -> np.ndarray:
    """Each filter's response map after BatchNorm and ReLU: (N, h, w, filters)."""
    import keras

    target = response_layer(model, layer)
    probe = keras.Model(model.inputs, model.get_layer(target).output)
    responses = probe.predict(as_batch(images), batch_size=batch_size, verbose=0)
    return np.maximum(responses, 0.0)  # what the next layer sees after ReLU


@dataclass
class TopActivations:
    """Per filter, the images that activate it most: indices into the images, peak values, maps."""

    filters: list[int]
    indices: np.ndarray  # (F, k) image indices, strongest first
    values: np.ndarray  # (F, k) peak response
    maps: np.ndarray  # (F, k, h, w) the response map over each image


def top_activating_images(model, images: np.ndarray, layer: str = "conv4",
                          filters: Sequence[int] | None = None, k: int = 5,
                          batch_size: int = 512) -> TopActivations:
    """For each filter, the k images with the highest peak response, and where it peaks."""
    if k < 1:
        raise FerkerasError(f"--top-k {k}: must be at least 1")
    responses = filter_responses(model, images, layer, batch_size)
    filters = list(range(responses.shape[-1])) if filters is None else [int(f) for f in filters]
    k = min(k, len(images))
    peaks = responses.max(axis=(1, 2))  # (N, F)
    indices = np.stack([np.argsort(-peaks[:, f], kind="stable")[:k] for f in filters])
    values = np.stack([peaks[indices[i], f] for i, f in enumerate(filters)])
    maps = np.stack([responses[indices[i], :, :, f] for i, f in enumerate(filters)])
    return TopActivations(filters, indices, values, maps)


def _upsample(maps: np.ndarray) -> np.ndarray:
    """(..., h, w) -> (..., 48, 48) by bilinear zoom, for overlays."""
    from scipy.ndimage import zoom

    h, w = maps.shape[-2:]
    factors = (1,) * (maps.ndim - 2) + (IMAGE_SIZE / h, IMAGE_SIZE / w)
    return zoom(maps, factors, order=1)


def filters_figure(images: np.ndarray, filters: Sequence[int], layer: str = "conv4",
                   objective: str = "center", columns: int = 12) -> Figure:
    """A grid of activation-maximization images, one per filter, each contrast-stretched."""
    n = len(filters)
    columns = min(columns, n)
    rows = -(-n // columns)
    fig = _figure(1.15 * columns + 0.8, 1.3 * rows + 0.9)
    axes = np.asarray(fig.subplots(rows, columns, squeeze=False))
    for ax in axes.ravel():
        ax.set_axis_off()
    for i, f in enumerate(filters):
        ax = axes.ravel()[i]
        image = images[i]
        lo, hi = np.percentile(image, [1, 99])
        ax.imshow(image, cmap="gray", vmin=lo, vmax=max(hi, lo + 1))
        ax.set_title(f"#{f}", fontsize=9)
    what = "the mean of its response map" if objective == "mean" else "its response at the centre"
    fig.suptitle(f"{layer}: the input that maximizes each filter's response (activation maximization "
                 f"of {what};\ngray = no influence; contrast stretched per image)")
    return fig


def top_activating_figure(images: np.ndarray, top: TopActivations, layer: str = "conv4",
                          maximized: np.ndarray | None = None, labels: np.ndarray | None = None,
                          class_names: Sequence[str] = CLASS_NAMES, groups_per_row: int = 0) -> Figure:
    """Per filter: its maximizing image (if given) and the top-k real images with the response map."""
    n, k = top.indices.shape
    cells = k + (1 if maximized is not None else 0)
    groups_per_row = groups_per_row or max(1, 18 // (cells + 1))
    groups_per_row = min(groups_per_row, n)
    rows = -(-n // groups_per_row)
    columns = groups_per_row * (cells + 1) - 1  # a blank spacer column between groups
    # Fixed inches rather than constrained layout: hundreds of axes would take it half a minute.
    cell_w, cell_h, top_in, side_in, bar_in = 0.95, 1.25, 0.7, 0.1, 1.3
    width = cell_w * (cells + 0.35) * groups_per_row + side_in + bar_in
    height = cell_h * rows + top_in + side_in
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    width_ratios = ([1] * cells + [0.35]) * groups_per_row
    grid = fig.add_gridspec(rows, columns, width_ratios=width_ratios[:columns],
                            left=side_in / width, right=1 - bar_in / width, bottom=side_in / height,
                            top=1 - top_in / height, wspace=0.08, hspace=0.3)
    # Each filter's maps relative to its strongest response, so that "where" shows for every filter.
    overlays = _upsample(top.maps) / np.maximum(top.values[:, :1, None, None], 1e-9)
    shown = None
    for g, f in enumerate(top.filters):
        row, first = divmod(g, groups_per_row)
        col = first * (cells + 1)
        if maximized is not None:
            ax = fig.add_subplot(grid[row, col])
            lo, hi = np.percentile(maximized[g], [1, 99])
            ax.imshow(maximized[g], cmap="gray", vmin=lo, vmax=max(hi, lo + 1))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"#{f} optimum", fontsize=8)
            col += 1
        for j in range(k):
            ax = fig.add_subplot(grid[row, col + j])
            image = np.asarray(images[top.indices[g, j]]).reshape(IMAGE_SIZE, IMAGE_SIZE)
            shown = _overlay(ax, image, overlays[g, j])
            ax.set_xticks([])
            ax.set_yticks([])
            label = f" {class_names[labels[top.indices[g, j]]]}" if labels is not None else ""
            ax.set_title(f"#{f}{label} {top.values[g, j]:.1f}", fontsize=7)
    if shown is not None:
        bar_height = min(4.0, height - top_in - side_in)
        bar = fig.add_axes((1 - 0.75 * bar_in / width, 1 - (top_in + bar_height) / height,
                            0.12 / width, bar_height / height))
        fig.colorbar(shown, cax=bar, label=f"{layer} response (after BatchNorm + ReLU)\n"
                                           "relative to the filter's top image")
    fig.suptitle(f"{layer}: the {k} real images that activate each filter most, and where\n"
                 f"(response map overlaid; titles: filter, true class, peak response)",
                 y=1 - 0.08 / height, va="top")
    return fig


# ---------------------------------------------------------------------------- workflows
# What the CLI commands call: resolve the run and its data, compute, draw, save, report.

def class_index(name: str, flag: str = "--class") -> int:
    """A class given by name (any case) or number -> its index, with a suggestion for typos."""
    import difflib

    text = str(name).strip().lower()
    if text.isdigit() and int(text) < len(CLASS_NAMES):
        return int(text)
    if text in CLASS_NAMES:
        return CLASS_NAMES.index(text)
    close = difflib.get_close_matches(text, CLASS_NAMES, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise FerkerasError(f"{flag} {name}: unknown class{hint} (classes: {', '.join(CLASS_NAMES)}, "
                        f"or 0..{len(CLASS_NAMES) - 1})")


def pick_images(labels: np.ndarray, n: int = 5, seed: int = 0, indices: Sequence[int] | None = None,
                class_name: str | None = None, split_name: str = "val") -> np.ndarray:
    """Indices into a split: the given ones, else n at random (of one true class if named)."""
    count = len(labels)
    if indices:
        for i in indices:
            if not 0 <= i < count:
                raise FerkerasError(f"--index {i}: the {split_name} split has {count:,} images "
                                    f"(0..{count - 1})")
        return np.asarray(indices, dtype=np.int64)
    if n < 1:
        raise FerkerasError(f"--n {n}: must be at least 1")
    candidates = np.arange(count)
    where = f"the {split_name} split"
    if class_name is not None:
        candidates = np.flatnonzero(labels == class_index(class_name))
        where += f"'s class {CLASS_NAMES[class_index(class_name)]}"
    if n > len(candidates):
        raise FerkerasError(f"--n {n}: {where} has only {len(candidates):,} images")
    return np.sort(np.random.default_rng(seed).choice(candidates, n, replace=False))


def read_image_files(paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, np.ndarray | None]:
    """Image files as uint8 (N, 48, 48), with true labels when every file sits in a class folder.

    A 48x48 image is a face crop as it is; in a larger photo the largest face that OpenCV's
    detector finds is cropped, as `ferkeras predict` does, else the whole image is used.
    """
    from ferkeras.media.crop import crop_face, is_face_crop
    from ferkeras.media.detect import detect_faces
    from ferkeras.media.images import read_image, to_gray

    faces = []
    for path in paths:
        if not Path(path).is_file():
            raise FerkerasError(f"--image {path}: no such file")
        gray = to_gray(read_image(path))
        boxes = [] if is_face_crop(gray) else detect_faces(gray)
        box = max(boxes, key=lambda b: b[2] * b[3]) if boxes else (0, 0, gray.shape[1], gray.shape[0])
        faces.append(crop_face(gray, box))
    folders = [Path(p).parent.name.lower() for p in paths]
    labels = (np.array([CLASS_NAMES.index(f) for f in folders])
              if all(f in CLASS_NAMES for f in folders) else None)
    return np.stack(faces), labels


def plot_history(run: str | None = None, out: str | os.PathLike | None = None,
                 runs_dir: str = "runs") -> Path:
    """history.png for a run: loss and accuracy curves, train against validation."""
    from ferkeras.config import find_run
    from ferkeras.train import read_history

    run_dir = find_run(run, runs_dir)
    out_dir = Path(out) if out is not None else run_dir / "viz"
    return save_figure(history_figure(read_history(run_dir), title=f"Training history of {run_dir}"),
                       out_dir / "history.png")


def explain_saliency(run: str | None = None, n: int = 5, seed: int = 0,
                     indices: Sequence[int] | None = None, class_name: str | None = None,
                     image_files: Sequence[str] | None = None, method: str = "vanilla",
                     target: str | None = None, data: str | None = None, split: str | None = None,
                     out: str | os.PathLike | None = None, runs_dir: str = "runs") -> Path:
    """saliency_<method>.png: n images with their maps, explaining the predicted (or target) class."""
    from ferkeras.evaluate import load_source, predict
    from ferkeras.model import load_model

    if method not in SALIENCY_METHODS:
        raise FerkerasError(f"--method {method}: must be one of {', '.join(SALIENCY_METHODS)}")
    target_class = class_index(target, "--target") if target is not None else None
    if image_files:
        from ferkeras.config import find_model

        model_path = find_model(run, runs_dir)
        run_dir = run_of_model(model_path)
        default_out = run_dir / "viz" if run_dir else model_path.parent / f"{model_path.stem}_viz"
        images, labels = read_image_files(image_files)
        captions = [Path(p).name for p in image_files]
    else:
        source = load_source(run, data, split, runs_dir)
        model_path, default_out = source.model_path, source.out_dir
        chosen = pick_images(source.split.labels, n, seed, indices, class_name, source.split_name)
        images, labels = source.split.images[chosen], source.split.labels[chosen]
        captions = [f"{source.split_name} #{i}" for i in chosen]
    model = load_model(model_path)
    probs = predict(model, images)
    predicted = probs.argmax(axis=1)
    targets = predicted if target_class is None else np.full(len(images), target_class)
    maps = saliency_maps(model, images, targets, method)
    fig = saliency_figure(images, maps, predicted, probs.max(axis=1), labels=labels,
                          targets=targets, method=method, captions=captions)
    out_dir = Path(out) if out is not None else default_out
    return save_figure(fig, out_dir / f"saliency_{method.replace('++', 'pp')}.png")


def visualize_filters(run: str | None = None, layer: str | None = None, filters: str | None = None,
                      top_k: int = 5, settings: ActivationMaximizationSettings | None = None,
                      data: str | None = None, split: str | None = None, seed: int = 0,
                      out: str | os.PathLike | None = None, runs_dir: str = "runs",
                      progress: bool = True) -> list[Path]:
    """filters_<layer>.png (activation maximization) and filters_<layer>_topk.png (real images)."""
    from ferkeras.evaluate import load_source
    from ferkeras.model import load_model

    settings = settings or ActivationMaximizationSettings()
    if top_k < 1:
        raise FerkerasError(f"--top-k {top_k}: must be at least 1")
    source = load_source(run, data, split, runs_dir)
    model = load_model(source.model_path)
    layer = layer or conv_layers(model)[-1]
    chosen = parse_filters(filters, filter_count(model, layer), layer)
    maximized = maximize_filters(model, layer, chosen, settings, seed=seed, progress=progress)
    top = top_activating_images(model, source.split.images, layer, chosen, top_k)
    out_dir = Path(out) if out is not None else source.out_dir
    grid = save_figure(filters_figure(maximized, chosen, layer, settings.objective),
                       out_dir / f"filters_{layer}.png")
    sheet = save_figure(top_activating_figure(source.split.images, top, layer, maximized,
                                              source.split.labels), out_dir / f"filters_{layer}_topk.png")
    return [grid, sheet]
