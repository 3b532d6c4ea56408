"""Evaluation: a run's model on its own validation data -> predictions -> metrics, confusion matrix
(numbers and figure), words.

The data comes from the run's config.json (the same source, split option and seed as training),
or from --data/--split. Results go to <run>/viz/ (or an --out folder): metrics_<split>.json,
confusion_matrix_<split>.csv (counts), confusion_matrix_<split>_normalized.csv (rows sum to 1),
confusion_matrix_<split>.png and the reliability diagram reliability_<split>.png. The training
run's own metrics.json is never touched.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ferkeras.config import RUNS_DIR, is_synthetic_data
from ferkeras.data import EVAL_BATCH_SIZE, Dataset, Split, as_batch, train_val_splits
from ferkeras.errors import FerkerasError
from ferkeras.fileio import write_json_atomic, write_text_atomic
from ferkeras.metrics import compute_metrics, figures_of, row_normalize
from ferkeras.plotting import new_figure, save_figure
from ferkeras.runners import TTA_METHODS, TTA_SHIFTS, tta_method, tta_views, view_plan
from ferkeras.runs import (
    find_model,
    load_run_data,
    read_run_config,
    run_of_model,
    shipped_name,
    split_as_run,
)
from ferkeras.spec import CLASS_NAMES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RUN_VALIDATION = "val"  # the split name that means "the run's own validation data"

Echo = Callable[[str], None]


# ---------------------------------------------------------------------------- model and data

@dataclass
class Source:
    """A model to evaluate or explain, and the labelled images to do it on."""

    model_path: Path
    run_dir: Path | None  # None for a .keras file outside any run folder
    split: Split
    split_name: str  # "val" for the run's validation data, else the dataset's split name
    data: str  # where the images came from: a path, or "synthetic..."
    out_dir: Path  # default folder for what is derived from this model
    skip_report: str = ""  # what loading the data passed over (--skip-bad), in one line, or ""

    def describe(self) -> str:
        """One line: which model, which images."""
        return (f"{self.model_path} on {len(self.split):,} images "
                f"({self.split_name} split of {self.data})")


def load_source(run: str | os.PathLike | None = None, data: str | None = None,
                split: str | None = None, runs_dir: str | os.PathLike = RUNS_DIR,
                skip_bad: bool = False, decode: bool = True) -> Source:
    """Resolve RUN (run name/folder, .keras file, or None = latest run) and the images to use.

    Without data/split this is the run's validation data, exactly as training split it; so is
    data when it is the run's own (however its path is spelled). Other data replaces the source
    (see other_data_split); split names a split ("val" = the run's validation data, "train",
    "test", ...). skip_bad passes over bad rows and images of data, as the run's own --skip-bad
    does for its data; decode False lists image folders without decoding them (load_dataset).
    """
    model_path = find_model(run, runs_dir, shipped_fallback=data is not None)
    # A run's model.keras, or a .keras file inside a run folder (last.keras): the run's config.
    run_dir = run_of_model(model_path)
    options: dict = {}
    run_source = None
    if run_dir is not None:
        config = read_run_config(run_dir)
        options, run_source = config["options"], (config.get("data") or {}).get("source")
        out_dir = run_dir / "viz"
    else:
        if data is None:
            raise FerkerasError(f"{model_path}: a bare model file has no config.json to say what it "
                                "was trained on; give --data (a FER2013 path, or synthetic)")
        # beside a bare model file; a shipped one sits inside the installed package: here instead,
        # one folder a shipped model, so that evaluating another never overwrites its figures
        shipped = shipped_name(model_path)
        out_dir = Path(f"{shipped}_viz") if shipped else model_path.parent / f"{model_path.stem}_viz"
    same_data = data is None or _is_run_data(data, options.get("data"), run_source)
    if run_dir is not None and not same_data:
        # Results on other data go to a folder of their own, never over the run's own ones.
        out_dir = run_dir / "viz" / (Path(str(data)).name.replace(":", "_") or "data")
    dataset = load_run_data(options, data, skip_bad or (same_data and options.get("skip_bad", False)),
                            decode)
    split_name = split or RUN_VALIDATION
    if split_name == RUN_VALIDATION:
        chosen = (split_as_run(dataset, options)[1] if same_data
                  else other_data_split(dataset, int(options.get("seed", 0))))
    else:
        chosen = dataset.splits.get(split_name)
        if chosen is None or chosen.labels is None:
            labelled = [n for n, s in dataset.splits.items() if s.labels is not None]
            problem = "no" if chosen is None else "an unlabeled"
            raise FerkerasError(f"--split {split_name}: {dataset.source} has {problem} split "
                                f"{split_name!r} (labelled splits: {', '.join(labelled) or 'none'}; "
                                f"or {RUN_VALIDATION} for the run's validation data; a folder of "
                                "class folders is one split, train)")
    return Source(model_path, run_dir, chosen, split_name, dataset.source, out_dir,
                  dataset.skip_report())


def other_data_split(dataset: Dataset, seed: int = 0) -> Split:
    """What a model is evaluated on in data other than its run's: the labeled test split, else the
    only labeled split whole (a folder of class folders), else a stratified 25% of train."""
    test = dataset.splits.get("test")
    if test is not None and test.labels is not None:
        return test
    labeled = [s for s in dataset.splits.values() if s.labels is not None]
    if not labeled:
        raise FerkerasError(f"{dataset.source}: no labeled split to evaluate on "
                            f"(splits: {', '.join(dataset.splits)}, all unlabeled)")
    if len(labeled) == 1:
        return labeled[0]  # none of it was trained on: all of it measures the model best
    return train_val_splits(dataset, "auto", seed)[1]


def _is_run_data(data: str, run_data: str | None, run_source: str | None) -> bool:
    """Whether --data names the data a run trained on: the same resolved path however it is
    spelled (a relative path given from another folder is another folder), else the same text
    (a synthetic spec, or a run whose config.json predates the resolved source)."""
    if run_source is None or is_synthetic_data(data):
        return data == run_data
    return str(Path(data).expanduser().resolve()) == run_source


# ---------------------------------------------------------------------------- predictions

def view_probabilities(model, images: np.ndarray, shifts=TTA_SHIFTS[:1], mirror: bool = False,
                       batch_size: int = EVAL_BATCH_SIZE) -> list[np.ndarray]:
    """Probabilities (N, 7) of each view: each shift of the images, then (mirror) each mirrored.

    model: a Keras model, or any callable from images to probabilities (a runners.Runner).
    """
    x = as_batch(images)
    # A Keras model exists only once keras is imported, so a runner's caller imports no TensorFlow.
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        def run(batch):
            return model.predict(batch, batch_size=batch_size, verbose=0)
    else:
        run = model
    return [np.asarray(run(view), dtype=np.float64) for view in tta_views(x, shifts, mirror)]


def predict(model, images: np.ndarray, tta: bool | str | None = False,
            batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Class probabilities (N, 7) for uint8 images (N, 48, 48), optionally averaged over TTA views.

    model: a Keras model, or any callable from images to probabilities (a runners.Runner).
    tta: False/None/"none"; True or "flip" (the mirror image too); "shifts" (TTA_METHODS).
    """
    shifts, mirror = view_plan(tta)
    return np.mean(view_probabilities(model, images, shifts, mirror=mirror,
                                      batch_size=batch_size), axis=0)


# ---------------------------------------------------------------------------- summary

def accuracy_summary(model, split: Split) -> dict:
    """Accuracy without and with each TTA, balanced accuracy, macro F1, the worst recall and
    calibration, and recall per class, of a model (or runner) on a split."""
    return summary_of_views(split.labels, *summary_views(model, split.images))


def summary_views(model, images: np.ndarray,
                  shifts: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """What summary_of_views takes: the probabilities of the images, of their mirrors and (shifts)
    the mean of the shifts TTA's 10 views, each view computed once; else None for the last."""
    if not shifts:
        return (*view_probabilities(model, images, mirror=True), None)
    # Each of the 10 views once: [0] is the image, [len(TTA_SHIFTS)] its mirror.
    views = view_probabilities(model, images, TTA_SHIFTS, mirror=True)
    return views[0], views[len(TTA_SHIFTS)], np.mean(views, axis=0)


def summary_of_views(labels: np.ndarray, image: np.ndarray, mirror: np.ndarray,
                     shifts: np.ndarray | None = None) -> dict:
    """accuracy_summary's figures from each face's probabilities: of the image, of its mirror and
    (when given) the mean of the shifts TTA's views; without it, no shifts figures."""
    plain = compute_metrics(labels, image)
    mirrored = compute_metrics(labels, (image + mirror) / 2)
    summary = {"images": len(labels), **figures_of(plain),
               "accuracy_tta": mirrored["accuracy"], "balanced_accuracy_tta": mirrored["balanced_accuracy"],
               "ece_tta": mirrored["ece"]}  # predict's default path (flip) is what users feel
    if shifts is not None:
        shifted = compute_metrics(labels, shifts)
        summary |= {"accuracy_tta_shifts": shifted["accuracy"],
                    "balanced_accuracy_tta_shifts": shifted["balanced_accuracy"]}
    return summary | {"recall": {name: c["recall"] for name, c in plain["per_class"].items()}}


# ---------------------------------------------------------------------------- files

def confusion_csv(matrix: np.ndarray, class_names: tuple[str, ...] = CLASS_NAMES) -> str:
    """The matrix as CSV: a header of predicted classes, one row per true class."""
    buffer = io.StringIO()
    buffer.write("true\\predicted," + ",".join(class_names) + "\n")
    is_int = np.issubdtype(np.asarray(matrix).dtype, np.integer)
    for name, row in zip(class_names, np.asarray(matrix), strict=True):
        cells = [str(int(v)) if is_int else f"{v:.6f}" for v in row]
        buffer.write(name + "," + ",".join(cells) + "\n")
    return buffer.getvalue()


def evaluate(run: str | os.PathLike | None = None, data: str | None = None, split: str | None = None,
             tta: bool | str | None = False, out: str | os.PathLike | None = None,
             runs_dir: str | os.PathLike = RUNS_DIR, echo: Echo = print, skip_bad: bool = False) -> dict:
    """Evaluate a run's (or .keras file's) model, write metrics JSON, CSVs and figure; return metrics."""
    from ferkeras.model import load_model  # lazy: TensorFlow

    method = tta_method(tta)  # a bad method is found before any work
    source = load_source(run, data, split, runs_dir, skip_bad)
    if source.skip_report:
        echo(source.skip_report)
    echo(f"Evaluating {source.describe()}")
    return evaluate_source(load_model(source.model_path), source, method,
                           Path(out) if out is not None else source.out_dir, echo)


def evaluate_source(model, source: Source, tta: str | None, out_dir: str | os.PathLike,
                    echo: Echo = print) -> dict:
    """Evaluate a loaded model on a source's images (tta: None or a TTA_METHODS name); write
    metrics_<split>.json, the confusion CSVs and figures into out_dir; return the metrics."""
    labels = source.split.labels
    metrics = compute_metrics(labels, predict(model, source.split.images))
    result = {"model": str(source.model_path), "data": source.data, "split": source.split_name,
              **metrics}
    if tta:
        tta_metrics = compute_metrics(labels, predict(model, source.split.images, tta=tta))
        result["tta"] = {"name": tta, "method": TTA_METHODS[tta], **tta_metrics}

    paths = write_evaluation(result, out_dir, str(source.model_path), echo)
    result["files"] = paths
    return result


def write_evaluation(result: dict, out_dir: str | os.PathLike, model: str, echo: Echo = print) -> list[str]:
    """Write an evaluation's metrics_<split>.json, confusion CSVs and figures (with "tta": theirs
    too) into out_dir, named by result["split"]; print the report; return the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    split_name = result["split"]
    stem = f"confusion_matrix_{split_name}"
    paths = [out_dir / f"metrics_{split_name}.json"]
    write_json_atomic(paths[0], result)
    for suffix, found in [("", result)] + ([("_tta", result["tta"])] if "tta" in result else []):
        counts = np.array(found["confusion_matrix"])
        csv_counts = out_dir / f"{stem}{suffix}.csv"
        csv_normalized = out_dir / f"{stem}{suffix}_normalized.csv"
        write_text_atomic(csv_counts, confusion_csv(counts))
        write_text_atomic(csv_normalized, confusion_csv(row_normalize(counts)))
        title = (f"{model}, {split_name} split"
                 f"{' with ' + result['tta']['name'] + ' TTA' if suffix else ''}: "
                 f"accuracy {found['accuracy']:.4f}")
        png = save_figure(confusion_figure(counts, row_normalize(counts), title=title),
                          out_dir / f"{stem}{suffix}.png")
        reliability = save_figure(
            reliability_figure(found["calibration_bins"],
                               title=f"{title}\nexpected calibration error {found['ece']:.4f}"),
            out_dir / f"reliability_{split_name}{suffix}.png")
        paths += [csv_counts, csv_normalized, png, reliability]

    echo(format_report(result))
    echo("Wrote:\n" + "\n".join(f"  {p}" for p in paths))
    return [str(p) for p in paths]


def format_report(result: dict) -> str:
    """The printed report: per-class table, analysis, and the TTA figures when present."""
    lines = [f"{'class':<10}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}"]
    for name, m in result["per_class"].items():
        lines.append(f"{name:<10}{m['precision']:>10.4f}{m['recall']:>8.4f}{m['f1']:>8.4f}"
                     f"{m['support']:>9,}")
    lines.append(result["analysis"])
    if "tta" in result:
        tta = result["tta"]
        lines.append(f"With {tta.get('name', 'flip')} TTA: accuracy {tta['accuracy']:.4f} "
                     f"(without: {result['accuracy']:.4f}), balanced accuracy "
                     f"{tta['balanced_accuracy']:.4f}, macro F1 {tta['macro_f1']:.4f}, "
                     f"ECE {tta['ece']:.4f}")
    return "\n".join(lines)


def confusion_figure(counts: np.ndarray, rates: np.ndarray, class_names: Sequence[str] = CLASS_NAMES,
                     title: str = "") -> Figure:
    """Two panels, counts and row-normalised rates, with class names and values in the cells."""
    counts, rates = np.asarray(counts), np.asarray(rates)
    fig = new_figure(13, 5.6)
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


def reliability_figure(bins: list[dict], title: str = "") -> Figure:
    """The reliability diagram: each confidence bin's accuracy against its mean confidence (on the
    diagonal where the probabilities mean what they say), over how many images each bin holds."""
    fig = new_figure(6, 6.4)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = bins[0]["high"] - bins[0]["low"]
    filled = [b for b in bins if b["images"]]
    centers = [(b["low"] + b["high"]) / 2 for b in filled]
    top.bar(centers, [b["accuracy"] for b in filled], width=width * 0.9, color="tab:blue",
            label="accuracy of the bin's images")
    top.scatter(centers, [b["confidence"] for b in filled], marker="_", s=400, linewidths=2,
                color="tab:red", label="their mean confidence", zorder=3)
    top.plot([0, 1], [0, 1], color="gray", linestyle="--", label="calibrated")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, [b["images"] for b in filled], width=width * 0.9, color="gray")
    bottom.set_xlabel("confidence (probability of the predicted class)")
    bottom.set_ylabel("images")
    if title:
        top.set_title(title, fontsize=9)
    return fig
