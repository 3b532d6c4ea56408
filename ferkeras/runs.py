"""Run folders: making one, finding one (or its model) by name, reading what it holds, and
rebuilding its train/validation split exactly as training made it.

A run folder (runs/<name>/) holds config.json, history.json, model.keras and the rest that
ferkeras/train.py writes. No TensorFlow here.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from ferkeras.config import RUNS_DIR, did_you_mean, is_synthetic_data
from ferkeras.errors import FerkerasError
from ferkeras.fileio import read_json

if TYPE_CHECKING:
    from ferkeras.data import Dataset, Split
    from ferkeras.media.crop import FaceRange

SHIPPED = "shipped"  # the model name that means the one installed with the package (exported/)
SHIPPED_LARGE = "large"  # the large architecture's model, installed beside it (exported/large/)
SHIPPED_ENSEMBLE = "ensemble"  # the two as one model (ferkeras.ensemble), in exported/ensemble/
# name -> its folder in exported/
SHIPPED_MODELS = {SHIPPED: ".", SHIPPED_LARGE: "large", SHIPPED_ENSEMBLE: "ensemble"}
# The model that recognition (predict, video, serve, compat) uses where no run is given and none
# exists: the two shipped models as one read FER2013's test split and photos better than either,
# the rare expressions most, for 0.2 ms more a face than the large one, where detection takes
# 10-30 ms (bench/README.md, "Which model a photo gets").
RECOGNITION_DEFAULT = SHIPPED_ENSEMBLE


def shipped_dir(name: str = SHIPPED) -> Path:
    """The folder of a model that installs with the package (the repo's exported/, or a folder in it)."""
    return Path(str(resources.files("ferkeras.exported"))) / SHIPPED_MODELS[name]


def shipped_name(path: str | os.PathLike) -> str | None:
    """The name (SHIPPED_MODELS) of the shipped model whose folder holds a model file, else None."""
    folder = Path(path).resolve().parent
    return next((name for name in SHIPPED_MODELS if folder == shipped_dir(name).resolve()), None)


def is_shipped(path: str | os.PathLike) -> bool:
    """Whether a model file is one of the shipped models' (so nothing is written beside it)."""
    return shipped_name(path) is not None


def shipped_file(name: str, file: str) -> Path:
    """A file of a shipped model (a SHIPPED_MODELS name), or a one-line error when it is missing."""
    path = shipped_dir(name) / file
    if not path.is_file():
        raise FerkerasError(f"the shipped model {path} is missing: reinstall ferkeras")
    return path


def has_runs(runs_dir: str | os.PathLike = RUNS_DIR) -> bool:
    """Whether runs_dir holds at least one run."""
    return any(Path(runs_dir).glob("*/config.json"))


def _config_files_oldest_first(runs_dir: str | os.PathLike) -> list[Path]:
    """The config.json of each run in runs_dir, the last written last."""
    return sorted(Path(runs_dir).glob("*/config.json"), key=lambda p: p.stat().st_mtime)


def latest_run_on_real_faces(runs_dir: str | os.PathLike = RUNS_DIR) -> Path | None:
    """The latest run in runs_dir trained on real faces, or None: what recognition reads photos
    with by default. A run on the built-in synthetic faces (the quick start's) has seen drawn
    shapes, never a photo, so it answers only where named."""
    for config_file in reversed(_config_files_oldest_first(runs_dir)):
        config = read_json(config_file, {})
        options = config.get("options") if isinstance(config, dict) else None
        if isinstance(options, dict) and not is_synthetic_data(options.get("data")):
            return config_file.parent
    return None


def new_run_dir(runs_dir: str | os.PathLike, name: str) -> Path:
    """Create runs_dir/name, or name2, name3, ... when taken (never reuse a run's folder)."""
    runs_dir = Path(runs_dir)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FerkerasError(f"cannot create runs folder {runs_dir}: {e.strerror}") from None
    for i in range(1, 10_000):
        candidate = runs_dir / (name if i == 1 else f"{name}{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as e:
            raise FerkerasError(f"cannot create run folder {candidate}: {e.strerror}") from None
    raise FerkerasError(f"{runs_dir}: too many runs named {name}")


def find_run(run: str | os.PathLike | None, runs_dir: str | os.PathLike = RUNS_DIR) -> Path:
    """Resolve a run given as a folder path or a name in runs_dir; None means the latest run."""
    runs_dir = Path(runs_dir)
    if run is None:
        runs = _config_files_oldest_first(runs_dir)
        if not runs:
            raise FerkerasError(f"no runs in {runs_dir}/: train one first with 'ferkeras train' "
                                f"(or name the model installed with ferkeras: {SHIPPED})")
        return runs[-1].parent
    for candidate in (Path(run), runs_dir / run):
        if (candidate / "config.json").is_file():
            return candidate
    names = sorted(p.parent.name for p in runs_dir.glob("*/config.json"))
    hint = did_you_mean(str(run), names) or (
        f"; runs in {runs_dir}/: {', '.join(names)}" if names else "")
    raise FerkerasError(f"run '{run}' not found (no config.json in {run} or {runs_dir / run}){hint}")


def find_model(ref: str | os.PathLike | None, runs_dir: str | os.PathLike = RUNS_DIR,
               shipped_fallback: bool = False) -> Path:
    """Resolve a Keras model given as a .keras file, a run (its best model.keras), `shipped` or
    `large` (the shipped models; a run of either name is given as its folder), or None: the
    latest run, else (shipped_fallback, for commands that only need a model) the shipped model."""
    if ref is None and shipped_fallback and not has_runs(runs_dir):
        ref = SHIPPED
    if ref is not None and str(ref) in SHIPPED_MODELS:
        return shipped_file(str(ref), "model.keras")
    if ref is not None and str(ref).endswith(".keras"):
        if not Path(ref).is_file():
            raise FerkerasError(f"{ref}: no such model file")
        return Path(ref)
    run_dir = find_run(ref, runs_dir)
    model = run_dir / "model.keras"
    if not model.is_file():
        raise FerkerasError(f"run {run_dir} has no model.keras yet (no epoch has finished)")
    return model


def run_of_model(model_path: str | os.PathLike) -> Path | None:
    """The run folder that a model file sits in (config.json beside it), or None for a bare file."""
    parent = Path(model_path).parent
    return parent if (parent / "config.json").is_file() else None


def exported_source(model_path: str | os.PathLike) -> dict | None:
    """The source record (run, command, options) of a model in an export folder, from the
    metadata.json beside it, when it names the options that rebuild the run's split; else None."""
    metadata_file = Path(model_path).parent / "metadata.json"
    if not metadata_file.is_file():
        return None
    metadata = read_json(metadata_file, what="the export's metadata")
    source = metadata.get("source") if isinstance(metadata, dict) else None
    options = source.get("options") if isinstance(source, dict) else None
    return source if isinstance(options, dict) and options.get("data") else None


def model_source(model_path: str | os.PathLike) -> tuple[dict | None, dict | None]:
    """(the export source record, the training options) of a model file: its run's config.json
    options (no record), else what the metadata.json of its export folder records, else Nones."""
    run_dir = run_of_model(model_path)
    if run_dir:
        return None, read_run_config(run_dir)["options"]
    source = exported_source(model_path)
    return source, source and source["options"]


def training_face_range(model_path: str | os.PathLike) -> FaceRange:
    """The light and sharpness that a model's training faces span: as its run's config.json records
    it, else the metadata.json of its export folder; FER2013's where neither does (runs made before
    they recorded it, models from elsewhere)."""
    from ferkeras.media.crop import FaceRange  # lazy, as load_run_data's: numpy and Pillow on use

    folder = Path(model_path).parent
    for record_file in (folder / "config.json", folder / "metadata.json"):
        record = read_json(record_file, {})
        if not isinstance(record, dict) or "face_range" not in record:
            continue
        face_range = FaceRange.from_dict(record["face_range"])
        if face_range is None:  # edited by hand: FER2013's would clamp this model's crops wrongly
            found = str(record["face_range"])[:80]
            raise FerkerasError(f"{record_file}: face_range is not a range (expected mean and std as "
                                f"[low, high] gray levels, least_sharpness >= 0): {found}")
        return face_range
    return FaceRange()


def read_run_config(run_dir: str | os.PathLike) -> dict:
    """A run's config.json (its options, data, epochs, versions), or a one-line error."""
    config_file = Path(run_dir) / "config.json"
    config = read_json(config_file, what="the run's config")
    if not isinstance(config, dict) or not isinstance(config.get("options"), dict):
        raise FerkerasError(f"{config_file}: not a ferkeras run config (no options)")
    return config


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """The per-epoch rows of a run (empty before its first epoch ends)."""
    path = Path(run_dir) / "history.json"
    return read_json(path, what="the run's history") if path.is_file() else []


# ---------------------------------------------------------------------------- the run's data

def load_run_data(options: dict, data: str | None = None, skip_bad: bool = False,
                  decode: bool = True) -> Dataset:
    """The dataset a run trained on (its options), or data instead; the run's --skip-bad holds
    for its own data (decode: as load_dataset)."""
    from ferkeras.data import load_dataset  # lazy: numpy and Pillow only when data is loaded

    same_data = data is None or data == options.get("data")
    return load_dataset(options.get("data") if data is None else data,
                        skip_bad=skip_bad or (same_data and options.get("skip_bad", False)),
                        decode=decode)


def split_as_run(dataset: Dataset, options: dict) -> tuple[Split, Split]:
    """(train, validation) of the run's data as its options split it (--val-split, --seed)."""
    from ferkeras.data import train_val_splits

    return train_val_splits(dataset, options.get("val_split", "auto"), int(options.get("seed", 0)))


def run_splits(run_dir: str | os.PathLike) -> tuple[Split, Split]:
    """(train, validation) of a run, as its config.json made them: same data, split and seed."""
    options = read_run_config(run_dir)["options"]
    return split_as_run(load_run_data(options), options)
