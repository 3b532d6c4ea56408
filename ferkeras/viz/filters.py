"""What the convolutional filters respond to: activation maximization (tf-keras-vis, tuned for
48x48 gray faces) and the real images that activate each filter most, as arrays and figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ferkeras.data import EVAL_BATCH_SIZE, as_batch
from ferkeras.errors import FerkerasError
from ferkeras.plotting import new_figure
from ferkeras.spec import CLASS_NAMES, IMAGE_SIZE
from ferkeras.viz.figures import overlay

if TYPE_CHECKING:
    import keras
    from matplotlib.figure import Figure

OBJECTIVES = ("center", "mean")  # what the ascent maximizes: the centre units, or the map's mean
ALL_FILTERS = "all"  # --filters that names every filter of the layer
DEFAULT_TOP_K = 5  # real images shown per filter


def functional(model: keras.Model) -> keras.Model:
    """A functional view of the model: tf-keras-vis reads model.output_names, which Keras 3
    gives functional models only (a Sequential fails in ReplaceToLinear)."""
    import keras

    return keras.Model(model.inputs, model.outputs, name=f"{model.name}_functional")


def conv_layers(model) -> list[str]:
    """Names of the model's convolutional layers, input to output; an error where it has none of
    its own (an ensemble's are inside its members)."""
    import keras

    names = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    if not names:
        raise FerkerasError(f"{model.name} has no convolutional layers of its own (an ensemble's are "
                            "inside its members): explain one of its members; vanilla and smoothgrad "
                            "saliency work on it as it is")
    return names


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
    if spec is None or str(spec).strip().lower() == ALL_FILTERS:
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
    objective: str = OBJECTIVES[0]

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
    if settings.objective not in OBJECTIVES:
        raise FerkerasError(f"objective {settings.objective!r}: must be {' or '.join(OBJECTIVES)}")
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
    visualizer = ActivationMaximization(functional(model),
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
                     batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
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
                          filters: Sequence[int] | None = None, k: int = DEFAULT_TOP_K,
                          batch_size: int = EVAL_BATCH_SIZE) -> TopActivations:
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
    fig = new_figure(1.15 * columns + 0.8, 1.3 * rows + 0.9)
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
            shown = overlay(ax, image, overlays[g, j])
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
