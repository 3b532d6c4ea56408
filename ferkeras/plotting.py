"""Figures drawn without pyplot (no global backend, no display needed), saved whole or not at
all: the two steps every figure of every stage shares."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ferkeras.fileio import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_DPI = 120


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure (no global state, works without a display)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Save a figure as PNG through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    return path
