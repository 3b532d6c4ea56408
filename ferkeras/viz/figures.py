"""The pieces of the explanation figures (a heat map over a face, a gray face) and the
training-history figure; figures are made and saved by ferkeras.plotting.

Each figure is built from arrays that a separate function computed (tests check the numbers);
saliency and filter figures sit beside their methods (saliency.py, filters.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ferkeras.errors import FerkerasError
from ferkeras.plotting import new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

MAP_CMAP = "inferno"  # saliency / activation maps: perceptually uniform, readable in gray print


def overlay(ax: Axes, image: np.ndarray, heat: np.ndarray, vmax: float = 1.0) -> AxesImage:
    """A gray image with a heat map on top, opaque where the map is high, clear where it is 0."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    weight = np.clip(np.asarray(heat, np.float32) / max(vmax, 1e-9), 0, 1)
    return ax.imshow(heat, cmap=MAP_CMAP, vmin=0, vmax=vmax, alpha=0.8 * weight)


def show_gray(ax: Axes, image: np.ndarray, title: str | None = None, fontsize: float = 9) -> None:
    """A gray 0-255 image on an axis without ticks, titled if a title is given."""
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
    fig = new_figure(11, 4.2)
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
