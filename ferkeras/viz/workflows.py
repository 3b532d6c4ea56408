"""What the `ferkeras viz` commands (and the report) call: resolve the run and its images,
compute, draw, save.

Each command has two layers: a function taking names (a run, flags), which loads the model and
its images once, and one taking the loaded model and images, which the report reuses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ferkeras.config import RUNS_DIR, did_you_mean
from ferkeras.errors import FerkerasError
from ferkeras.evaluate import RUN_VALIDATION, Source, load_source, predict
from ferkeras.plotting import save_figure
from ferkeras.runs import SHIPPED, find_model, find_run, is_shipped, read_history, run_of_model
from ferkeras.spec import CLASS_NAMES, class_of_name
from ferkeras.viz.figures import history_figure
from ferkeras.viz.filters import (
    DEFAULT_TOP_K,
    ActivationMaximizationSettings,
    TopActivations,
    conv_layers,
    filter_count,
    filters_figure,
    maximize_filters,
    parse_filters,
    top_activating_figure,
    top_activating_images,
)
from ferkeras.viz.saliency import DEFAULT_METHOD, SALIENCY_METHODS, saliency_figure, saliency_maps

SALIENCY_IMAGES = 5  # images drawn at random when none are named


def class_index(name: str, flag: str = "--class") -> int:
    """A class by name (any case, or a synonym: anger) or number -> its index; typos get a hint."""
    text = str(name).strip().lower()
    if text.isdigit() and int(text) < len(CLASS_NAMES):
        return int(text)
    index = class_of_name(text)
    if index is not None:
        return index
    raise FerkerasError(f"{flag} {name}: unknown class{did_you_mean(text, CLASS_NAMES)} "
                        f"(classes: {', '.join(CLASS_NAMES)}, or 0..{len(CLASS_NAMES) - 1})")


def pick_images(labels: np.ndarray, n: int = SALIENCY_IMAGES, seed: int = 0,
                indices: Sequence[int] | None = None, class_name: str | None = None,
                split_name: str = RUN_VALIDATION) -> np.ndarray:
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

    A 48x48 image is a face crop as it is; in any other the largest face is found and cropped as
    `ferkeras predict` crops it (its detector, eyes levelled), else the whole image is used.
    """
    from ferkeras.media.crop import crop_face, is_face_crop, largest_face_crop
    from ferkeras.media.detectors import make_detector
    from ferkeras.media.images import read_image, to_gray

    faces, detector = [], None
    for path in paths:
        if not Path(path).is_file():
            raise FerkerasError(f"--image {path}: no such file")
        rgb = read_image(path)
        gray = to_gray(rgb)
        face = None
        if not is_face_crop(gray):
            detector = detector or make_detector()
            face = largest_face_crop(rgb, gray, detector)
        faces.append(face if face is not None else crop_face(gray, (0, 0, gray.shape[1], gray.shape[0])))
    folder_classes = [class_of_name(Path(p).parent.name) for p in paths]
    labels = np.array(folder_classes) if None not in folder_classes else None
    return np.stack(faces), labels


def split_images(source: Source, n: int = SALIENCY_IMAGES, seed: int = 0,
                 indices: Sequence[int] | None = None,
                 class_name: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images of a source's split chosen by pick_images, their labels, and captions naming them."""
    chosen = pick_images(source.split.labels, n, seed, indices, class_name, source.split_name)
    return (source.split.images[chosen], source.split.labels[chosen],
            [f"{source.split_name} #{i}" for i in chosen])


def plot_history(run: str | None = None, out: str | os.PathLike | None = None,
                 runs_dir: str = RUNS_DIR) -> Path:
    """history.png for a run: loss and accuracy curves, train against validation."""
    run_dir = find_run(run, runs_dir)
    out_dir = Path(out) if out is not None else run_dir / "viz"
    return save_figure(history_figure(read_history(run_dir), title=f"Training history of {run_dir}"),
                       out_dir / "history.png")


def explain_saliency(run: str | None = None, n: int = SALIENCY_IMAGES, seed: int = 0,
                     indices: Sequence[int] | None = None, class_name: str | None = None,
                     image_files: Sequence[str] | None = None, method: str = DEFAULT_METHOD,
                     target: str | None = None, data: str | None = None, split: str | None = None,
                     out: str | os.PathLike | None = None, runs_dir: str = RUNS_DIR) -> Path:
    """saliency_<method>.png: n images with their maps, explaining the predicted (or target) class."""
    from ferkeras.model import load_model  # lazy: TensorFlow

    if method not in SALIENCY_METHODS:
        raise FerkerasError(f"--method {method}: must be one of {', '.join(SALIENCY_METHODS)}")
    target_class = class_index(target, "--target") if target is not None else None
    if image_files:
        model_path = find_model(run, runs_dir, shipped_fallback=True)
        run_dir = run_of_model(model_path)
        default_out = (run_dir / "viz" if run_dir else Path(f"{SHIPPED}_viz") if is_shipped(model_path)
                       else model_path.parent / f"{model_path.stem}_viz")
        images, labels = read_image_files(image_files)
        captions = [Path(p).name for p in image_files]
    else:
        source = load_source(run, data, split, runs_dir)
        model_path, default_out = source.model_path, source.out_dir
        images, labels, captions = split_images(source, n, seed, indices, class_name)
    return saliency_sheet(load_model(model_path), images, labels, captions, method, target_class,
                          Path(out) if out is not None else default_out)


def saliency_sheet(model, images: np.ndarray, labels: np.ndarray | None, captions: Sequence[str],
                   method: str, target_class: int | None, out_dir: str | os.PathLike) -> Path:
    """Draw and save OUT_DIR/saliency_<method>.png for a loaded model and images."""
    probs = predict(model, images)
    predicted = probs.argmax(axis=1)
    targets = predicted if target_class is None else np.full(len(images), target_class)
    maps = saliency_maps(model, images, targets, method)
    fig = saliency_figure(images, maps, predicted, probs.max(axis=1), labels=labels,
                          targets=targets, method=method, captions=captions)
    return save_figure(fig, Path(out_dir) / f"saliency_{method.replace('++', 'pp')}.png")


def visualize_filters(run: str | None = None, layer: str | None = None, filters: str | None = None,
                      top_k: int = DEFAULT_TOP_K, settings: ActivationMaximizationSettings | None = None,
                      data: str | None = None, split: str | None = None, seed: int = 0,
                      out: str | os.PathLike | None = None, runs_dir: str = RUNS_DIR,
                      progress: bool = True) -> list[Path]:
    """filters_<layer>.png (activation maximization) and filters_<layer>_topk.png (real images)."""
    from ferkeras.model import load_model  # lazy: TensorFlow

    settings = settings or ActivationMaximizationSettings()
    if top_k < 1:
        raise FerkerasError(f"--top-k {top_k}: must be at least 1")
    source = load_source(run, data, split, runs_dir)
    model = load_model(source.model_path)
    layer = layer or conv_layers(model)[-1]
    chosen = parse_filters(filters, filter_count(model, layer), layer)
    grid, sheet, _ = filter_sheets(model, source, layer, chosen, top_k, settings, seed,
                                   Path(out) if out is not None else source.out_dir, progress)
    return [grid, sheet]


def filter_sheets(model, source: Source, layer: str, chosen: list[int], top_k: int,
                  settings: ActivationMaximizationSettings, seed: int, out_dir: str | os.PathLike,
                  progress: bool = False) -> tuple[Path, Path, TopActivations]:
    """Draw and save filters_<layer>.png and filters_<layer>_topk.png for a loaded model and
    source; also return the top activations the second figure shows."""
    maximized = maximize_filters(model, layer, chosen, settings, seed=seed, progress=progress)
    top = top_activating_images(model, source.split.images, layer, chosen, top_k)
    out_dir = Path(out_dir)
    grid = save_figure(filters_figure(maximized, chosen, layer, settings.objective),
                       out_dir / f"filters_{layer}.png")
    sheet = save_figure(top_activating_figure(source.split.images, top, layer, maximized,
                                              source.split.labels), out_dir / f"filters_{layer}_topk.png")
    return grid, sheet, top
