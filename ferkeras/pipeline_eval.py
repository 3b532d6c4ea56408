"""Evaluation through predict's path: labelled images read as `predict` reads them, scored.

Each image's answer is its largest face's: found by the detector, cropped and classified (a 48x48
image is taken as a crop, read as it is and as its landmarks frame it), as a user of `predict`,
`serve` or `compat` gets it. An image where no face is found gets no answer and counts wrong.
Folder data is listed, not decoded, and each image read once from its file, as its maker saved it
(ferkeras.evaluate decodes them to 48x48 at once, which is what the model sees of a crop, not of
a photo); FER2013's CSV rows are 48x48 crops already. The metrics, matrices and figures are
evaluate's, under `<split>_pipeline`, with one row per image in answers_<split>_pipeline.csv.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ferkeras.config import RUNS_DIR
from ferkeras.data import Split
from ferkeras.errors import FerkerasError
from ferkeras.evaluate import Echo, load_source, write_evaluation
from ferkeras.fileio import write_text_atomic
from ferkeras.media.detectors import DEFAULT_DETECTOR
from ferkeras.media.images import as_rgb, read_image
from ferkeras.metrics import compute_metrics
from ferkeras.predict import FaceRecognizer, FoundFaces
from ferkeras.runners import BATCH_SIZE, DEFAULT_TTA, TTA_METHODS, tta_method
from ferkeras.runs import RECOGNITION_DEFAULT, has_runs
from ferkeras.spec import CLASS_NAMES

PIPELINE_SUFFIX = "_pipeline"  # evaluate's file names, told apart from the model's own figures


def split_pictures(split: Split, skipped: list[str] | None = None) -> Iterator[np.ndarray | None]:
    """Each image of a split as RGB, as predict would get it: from its file where it has one.
    skipped: a list that collects each unreadable file's error, its picture None, instead of
    stopping at the first."""
    if split.files is None:
        for gray in split.images:
            yield as_rgb(gray)
        return
    for path in split.files:
        try:
            yield read_image(path)
        except FerkerasError as error:
            if skipped is None:
                raise
            skipped.append(str(error))
            yield None


def read_largest_faces(pictures: Iterator[np.ndarray | None], recognizer: FaceRecognizer,
                       tta_methods: tuple[str, ...] = ("none", DEFAULT_TTA),
                       ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Each picture's largest face's probabilities under each TTA method (zeros where no face was
    found), how many faces each picture showed, and which pictures were read: a None picture (an
    unreadable file, passed over) is left out of the other two. The faces are classified in batches."""
    probabilities: dict[str, list[np.ndarray]] = {method: [] for method in tta_methods}
    faces: list[int] = []
    read: list[bool] = []
    pending: list[FoundFaces | None] = []

    def flush() -> None:
        answered = [f for f in pending if f is not None]
        for method in tta_methods:
            found = iter(recognizer.classify_found(answered, method))
            probabilities[method].extend(next(found) if f is not None else np.zeros(len(recognizer.labels))
                                         for f in pending)
        pending.clear()

    for picture in pictures:
        read.append(picture is not None)
        if picture is None:
            continue
        found = recognizer.find(picture, detect=None)
        faces.append(len(found.detections))
        pending.append(found.largest())
        if len(pending) >= BATCH_SIZE:
            flush()
    flush()
    return ({method: np.array(p, dtype=np.float64).reshape(-1, len(recognizer.labels))
             for method, p in probabilities.items()},
            np.array(faces, dtype=np.int64), np.array(read, dtype=bool))


def answers_csv(names: list[str], labels: np.ndarray, probs: np.ndarray, faces: np.ndarray,
                class_names: tuple[str, ...] = CLASS_NAMES) -> str:
    """One row per image: its name, true class, answer (empty where no face was found), the
    answer's probability and how many faces were found."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "true", "answer", "probability", "faces"])
    for name, label, p, count in zip(names, labels, probs, faces, strict=True):
        answer = class_names[int(p.argmax())] if count else ""
        writer.writerow([name, class_names[int(label)], answer, f"{p.max():.4f}" if count else "",
                         int(count)])
    return buffer.getvalue()


def evaluate_pipeline(run: str | os.PathLike | None = None, data: str | None = None,
                      split: str | None = None, tta: str | None = None,
                      out: str | os.PathLike | None = None, runs_dir: str | os.PathLike = RUNS_DIR,
                      echo: Echo = print, skip_bad: bool = False, detector: str = DEFAULT_DETECTOR,
                      align: bool = True, reframe: bool = True, light: bool = True,
                      sharpen: bool = True) -> dict:
    """Evaluate a model on labelled images read as predict reads them (see the module); write
    evaluate's files under <split>_pipeline and the answers CSV; return the metrics.

    run: as evaluate takes it, and the model predict would use where there is no run; tta: the
    second reading's method (default predict's, flip), beside one view; detector, align, reframe,
    light, sharpen: predict's options.
    """
    method = tta_method(tta) or DEFAULT_TTA
    if run is None and not has_runs(runs_dir):
        run = RECOGNITION_DEFAULT  # what predict reads with
    # folders listed, not decoded: each file is read once, below, as predict reads it (a photo
    # with no face found stays, answered with nothing)
    source = load_source(run, data, split, runs_dir, skip_bad, decode=False)
    if source.skip_report:
        echo(source.skip_report)
    recognizer = FaceRecognizer(run, detector, align, runs_dir=runs_dir, reframe=reframe, light=light,
                                sharpen=sharpen)
    where = "their files" if source.split.files is not None else "48x48 crops"
    echo(f"Reading {len(source.split):,} images ({source.split_name} split of {source.data}; {where}) as "
         f"predict does: {recognizer.runner.describe()}, detector {detector}")
    unreadable: list[str] | None = [] if skip_bad else None
    # kept: every image but the unreadable files that --skip-bad passed over
    readings, faces, kept = read_largest_faces(split_pictures(source.split, unreadable), recognizer,
                                               ("none", method))
    if unreadable:
        echo(f"--skip-bad: skipped {len(unreadable)} unreadable image file"
             f"{'s' if len(unreadable) != 1 else ''} (first: {unreadable[0]})")
    labels = source.split.labels[kept]
    found, several = faces > 0, int((faces > 1).sum())
    if not found.any():
        raise FerkerasError(f"{source.data}: no face found in any of its {len(labels):,} images "
                            f"(detector {detector}); nothing to score")
    result = {"model": recognizer.runner.name, "data": source.data,
              "split": source.split_name + PIPELINE_SUFFIX,
              "pipeline": {"detector": detector, "align": align, "reframe": reframe, "light": light,
                           "sharpen": sharpen, "read": where, "images": len(labels),
                           "faces_found": int(found.sum()),
                           "several_faces": several},
              **compute_metrics(labels, readings["none"], answered=found),
              "tta": {"name": method, "method": TTA_METHODS[method],
                      **compute_metrics(labels, readings[method], answered=found)}}
    out_dir = Path(out) if out is not None else source.out_dir
    echo(f"A face found in {int(found.sum()):,} of {len(labels):,} images "
         f"({several:,} with several: the largest answers)")
    paths = write_evaluation(result, out_dir, recognizer.runner.name, echo)
    # each file as the data folder names it (happy/img1.jpg), else the split's image number
    names = ([os.path.relpath(f, source.data) for f in source.split.files[kept]]
             if source.split.files is not None else [f"{source.split_name}[{i}]" for i in range(len(labels))])
    answers = out_dir / f"answers_{result['split']}.csv"
    write_text_atomic(answers, answers_csv(names, labels, readings[method], faces))
    echo(f"  {answers}")
    result["files"] = paths + [str(answers)]
    return result
