"""An export's metadata.json: what it records (labels, input, source run, figures, which weights
and files it holds), its paths made portable, and the accuracy record carried over a re-export.

bench/accuracy.py --record adds an "accuracy" record: figures measured on the folder's files.
A re-export keeps each file's figures only while that file is still the model measured: the
Keras model's weights (weights_sha256; a .keras file's bytes change with every save) or a TFLite
file's bytes (its artefact's sha256). Metadata written before these digests existed has them
computed from the files still in the folder.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import ferkeras
from ferkeras.config import command_line
from ferkeras.errors import FerkerasError
from ferkeras.runs import read_run_config, training_face_range
from ferkeras.spec import CLASS_NAMES

if TYPE_CHECKING:
    import keras

METADATA = "metadata.json"
ACCURACY = "accuracy"  # the record bench/accuracy.py --record writes
WEIGHTS_DIGEST = "weights_sha256"
KERAS = "keras"  # the record's engine (and export format) whose identity is its weights


def weights_digest(model: keras.Model) -> str:
    """SHA-256 of a model's weights (shapes, dtypes and values, in order): the same for every save of them."""
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(f"{weights.shape}{weights.dtype.str}".encode())
        digest.update(weights.tobytes())
    return digest.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def identities(metadata: dict, folder: Path | None = None) -> dict[str, str]:
    """Each format's identity (keras: its weights digest; a TFLite file: its bytes' digest), as the
    metadata records it, else computed from the file in folder; formats with neither are left out."""
    found = {}
    for name, entry in metadata.get("artifacts", {}).items():
        file = folder / str(entry.get("file", "")) if folder and entry.get("file") else None
        digest = metadata.get(WEIGHTS_DIGEST) if name == KERAS else entry.get("sha256")
        if digest is None and file is not None and file.is_file():
            digest = _keras_digest(file) if name == KERAS else file_digest(file)
        if digest:
            found[name] = digest
    return found


def _keras_digest(path: Path) -> str | None:
    from ferkeras.model import load_model  # lazy: Keras only for metadata written before digests

    try:
        return weights_digest(load_model(path))
    except FerkerasError:  # not a loadable model: nothing a record could be kept for
        return None


def carry_accuracy(metadata: dict, previous: dict, folder: Path) -> str | None:
    """Put the previous metadata's accuracy record (of the files in folder) into the new metadata,
    with the figures of each file that is still the one measured; a line on what was kept or
    dropped, None when there was no record."""
    record = previous.get(ACCURACY)
    if not isinstance(record, dict) or not isinstance(record.get("engines"), dict):
        return None
    before, now = identities(previous, folder), identities(metadata)
    kept = {engine: figures for engine, figures in record["engines"].items()
            if engine in now and before.get(engine) == now[engine]}
    dropped = [engine for engine in record["engines"] if engine not in kept]
    if kept:
        metadata[ACCURACY] = {**record, "engines": kept}
    if not dropped:
        return f"The accuracy record in {METADATA} is kept: it measured these same files"
    if not kept:
        return f"The accuracy record in {METADATA} is dropped: it measured another model"
    return (f"The accuracy record in {METADATA} is kept for {', '.join(kept)}, dropped for "
            f"{', '.join(dropped)}: not the files it measured")


def export_metadata(model_path: Path, run_dir: Path | None, exported_from: dict | None,
                    artifacts: dict[str, dict], keras_accuracy: float | None, val_images: int | None,
                    representative_images: int | None, weights_sha256: str) -> dict:
    """metadata.json of an export: labels, input and output, source run, figures, weights digest.

    exported_from: the source record of an export that this one re-exports (runs.exported_source),
    kept as it is, with the model file it came from."""
    import tensorflow as tf  # loaded already: the export ran it

    run_config = read_run_config(run_dir) if run_dir else {}
    options = run_config.get("options", {})
    source = {"run": portable_path(run_dir, keep=2), "model": portable_path(model_path, keep=3),
              "data": portable_path(options.get("data")), "val_split": options.get("val_split"),
              "seed": options.get("seed"), "command": portable_command(run_config.get("command")),
              "trained": run_config.get("created"),
              "options": {k: _portable_option(v) for k, v in options.items()} or None}
    if exported_from:
        source = {**exported_from, "reexported_from": portable_path(model_path, keep=3)}
    return {
        "labels": list(CLASS_NAMES),
        "input": {"shape": [None, 48, 48, 1], "dtype": "float32 (int8 in model_int8.tflite)",
                  "range": [0, 255],
                  "normalisation": "none: raw gray pixels 0-255 of a 48x48 face crop; the model "
                                   "scales by 1/255 and replicates gray to 3 channels itself"},
        "output": {"shape": [None, len(CLASS_NAMES)],
                   "meaning": "softmax probabilities in labels order"},
        "source": source,
        # what a crop's light and sharpness are clamped to before the model reads it
        # (media.crop.clamp_light, clamp_sharpness): its training faces' range
        "face_range": training_face_range(model_path).to_dict(),
        "export_command": portable_command(command_line()),
        WEIGHTS_DIGEST: weights_sha256,
        "validation": {"images": val_images, "keras_accuracy": keras_accuracy},
        "representative_images": representative_images,
        "artifacts": artifacts,
        "versions": {"ferkeras": ferkeras.__version__, "tensorflow": tf.__version__},
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def portable_path(path: str | os.PathLike | None, keep: int = 1, root: Path | None = None) -> str | None:
    """A path as metadata.json records it, naming no folder of this machine.

    Relative paths stay as they are; an absolute one within the parent of root (the working
    folder, the repo when exporting into exported/) becomes relative to root, as in
    ../shared/datasets/fer2013; any other keeps only its last `keep` parts (runs/r3_e120).
    Values that are not paths (synthetic:3000) pass through.
    """
    if path is None or not os.path.isabs(path):
        return None if path is None else str(path)
    path, root = Path(os.path.normpath(path)), Path(root or Path.cwd()).resolve()
    if path.is_relative_to(root.parent) and root.parent != root:
        return os.path.relpath(path, root)
    return str(Path(*path.parts[-keep:])) if len(path.parts) > 1 else "."


def portable_paths(value: str) -> str:
    """portable_path over each part of a comma-separated list (--teacher a,b), parts kept apart."""
    return ",".join(portable_path(part) if os.path.isabs(part) else part for part in value.split(","))


def _portable_option(value):
    """A run option as metadata.json records it: paths in it, or in a list of them, made portable."""
    if isinstance(value, list):
        return [_portable_option(v) for v in value]
    return portable_paths(value) if isinstance(value, str) else value


def portable_command(command: str | None) -> str | None:
    """A recorded command line with each absolute path in it made portable (portable_path)."""
    if command is None:
        return None
    words = []
    for word in command.split(" "):
        flag, equals, value = word.rpartition("=") if word.startswith("-") and "=" in word else ("", "", word)
        words.append(flag + equals + portable_paths(value))
    return " ".join(words)
