"""Export: a run's best model -> SavedModel -> TFLite (float32, float16, dynamic-range, int8), verified.

The export folder (by default the run's exported/: runs/NAME/exported/) gets model.keras,
saved_model/, model_<format>.tflite and metadata.json (ferkeras/exportmeta.py). The folder of the
models installed with ferkeras (ferkeras.exported: the repo's exported/) takes an export only
with force, since an export replaces what is there. Each TFLite model is converted from the
SavedModel, then run on the run's validation images and compared with the Keras model: top-1
agreement and accuracy against the bar in FORMATS. Everything is built in a temporary folder
beside the export folder and moved in only when every check passes, so an interrupted or failed
export leaves the previous artefacts whole; a failed one is kept in <out>-rejected/ for inspection.
A model of an export folder (the shipped ones) re-exports with the data its metadata.json names.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ferkeras.calibrate import calibrate_model
from ferkeras.config import RUNS_DIR, did_you_mean
from ferkeras.errors import FerkerasError, quiet_stderr
from ferkeras.exportmeta import METADATA, carry_accuracy, export_metadata, file_digest, weights_digest
from ferkeras.fileio import read_json, write_json_atomic
from ferkeras.model import load_model, uncompiled_copy
from ferkeras.runners import DEFAULT_TTA, KerasRunner, SavedModelRunner, TFLiteRunner, tta_method
from ferkeras.runs import (
    find_model,
    is_shipped,
    load_run_data,
    model_source,
    run_of_model,
    shipped_dir,
    split_as_run,
)

# TFLite's guide asks for "a few hundred" calibration images; 300 and 1,000 gave the same
# agreement on FER2013 (and 1,000 took twice as long to convert).
REPRESENTATIVE_IMAGES = 300
DEFAULT_OUT = "exported"  # in the run (runs/NAME/exported) when no out is given (default_out)

Echo = Callable[[str], None]


# ---------------------------------------------------------------------------- the formats

@dataclass(frozen=True)
class Format:
    """One artefact: its name, file, TFLite converter settings and the parity bar it must meet."""

    name: str
    file: str
    optimize: bool = False  # tf.lite.Optimize.DEFAULT: store weights quantised
    float16: bool = False  # ... as float16 rather than int8
    full_int8: bool = False  # int8 activations too, calibrated on training images; int8 I/O
    int16_activations: bool = False  # TFLite's 16x8 scheme: int8 weights, int16 activations
    min_agreement: float = 1.0  # top-1 agreement with the Keras model on validation images
    max_accuracy_change: float | None = None  # |accuracy - Keras accuracy|, in points

    @property
    def calibrated(self) -> bool:
        """Whether its activation ranges are calibrated on representative training images."""
        return self.full_int8 or self.int16_activations


# The bar of the integer formats (dynamic, int8, int16x8), decided in one place: top-1
# agreement with Keras, and accuracy within this many points of Keras'. Post-training int8
# flips 1-2.5% of FER2013's faces, all close calls between two classes, while its accuracy
# stays within a few tenths of a point (bench/quantization.py); 98% admits that and still
# catches a broken conversion (a wrong scale or zero point agrees on under 90%).
INTEGER_MIN_AGREEMENT = 0.98
INTEGER_MAX_ACCURACY_CHANGE = 0.5
INTEGER_BAR = {"min_agreement": INTEGER_MIN_AGREEMENT, "max_accuracy_change": INTEGER_MAX_ACCURACY_CHANGE}

FORMATS = {f.name: f for f in (
    Format("keras", "model.keras"),  # the model itself, without optimizer state, for Keras users
    Format("saved_model", "saved_model"),
    Format("float32", "model_float32.tflite"),
    Format("float16", "model_float16.tflite", optimize=True, float16=True, min_agreement=0.999),
    # The issue sets no bar for dynamic-range; it stores int8 weights as int8 does, so int8's.
    Format("dynamic", "model_dynamic.tflite", optimize=True, **INTEGER_BAR),
    Format("int8", "model_int8.tflite", optimize=True, full_int8=True, **INTEGER_BAR),
    # 256 times finer activations for the same int8 weights and size, float I/O, held to int8's
    # bar; a fidelity check more than a deployment format, as LiteRT has no fast CPU kernels
    # for it (about 60x slower than int8 here).
    Format("int16x8", "model_int16x8.tflite", optimize=True, int16_activations=True, **INTEGER_BAR),
)}
QUANTIZE = {"none": "float32", "float16": "float16", "dynamic": "dynamic", "int8": "int8",
            "int16x8": "int16x8"}
DEFAULT_QUANTIZE = ("none", "int8")  # what --tflite alone exports


def select_formats(tflite: bool = False, quantize: Iterable[str] | None = None) -> list[Format]:
    """The TFLite formats to export: --quantize values (repeated or comma-separated), in table order."""
    values = [v.strip() for item in (quantize or ()) for v in str(item).split(",") if v.strip()]
    if not values:
        values = list(DEFAULT_QUANTIZE) if tflite else []
    for value in values:
        if value not in QUANTIZE:
            raise FerkerasError(f"--quantize {value!r}: not one of {', '.join(QUANTIZE)}"
                                f"{did_you_mean(value, QUANTIZE)}")
    chosen = {QUANTIZE[v] for v in values}
    return [f for name, f in FORMATS.items() if name in chosen]


def representative_images(images: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """count training images (all if fewer) drawn at random by seed, in their order: calibration data."""
    pick = np.random.default_rng(seed).choice(len(images), min(count, len(images)), replace=False)
    return images[np.sort(pick)]


def convert(saved_model: str | os.PathLike, fmt: Format,
            representative: np.ndarray | None = None) -> bytes:
    """Convert a SavedModel to TFLite bytes in a format; full int8 needs representative uint8 faces."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if fmt.optimize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt.float16:
        converter.target_spec.supported_types = [tf.float16]
    if fmt.calibrated:
        if representative is None or not len(representative):
            raise FerkerasError(f"{fmt.name}: full-integer quantisation needs representative images")
        faces = representative.reshape(-1, 1, 48, 48, 1).astype(np.float32)
        converter.representative_dataset = lambda: ([face] for face in faces)
    if fmt.int16_activations:
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if fmt.full_int8:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # int8 rather than uint8 I/O: TFLite's integer kernels are int8, so uint8 would only add
        # a Quantize op at each end. The input is raw 0-255 pixels, calibrated to scale 1.0 and
        # zero point -128: a pixel p is the int8 p - 128, exactly, so the input loses nothing.
        # (With uint8 the mapping would be the identity, and a runner that ignored the scale
        # and zero point would still look right; with int8 it fails the parity check.)
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        with quiet_stderr():  # the converter's C++ notices ("fully_quantize: 0, ...")
            return converter.convert()
    except Exception as e:  # the converter raises ConverterError and friends
        raise FerkerasError(f"{fmt.name}: TFLite conversion failed: {str(e).strip()[:300]}") from None


# ---------------------------------------------------------------------------- parity

@dataclass
class Parity:
    """How an exported model's predictions compare with the Keras model's on validation images."""

    format: str
    images: int
    agreement: float  # fraction of images whose top-1 class is the Keras model's
    accuracy: float
    keras_accuracy: float
    max_abs_difference: float  # largest |probability - Keras probability|
    min_agreement: float
    max_accuracy_change: float | None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def accuracy_change(self) -> float:
        """Accuracy minus the Keras model's, in percentage points."""
        return 100 * (self.accuracy - self.keras_accuracy)

    def to_dict(self) -> dict:
        """The figures and the bar, JSON-able, for metadata.json."""
        return {**asdict(self), "accuracy_change_points": self.accuracy_change, "passed": self.passed}

    def describe(self) -> str:
        """One line: agreement, accuracy against Keras, and the verdict."""
        bar = f"{100 * self.min_agreement:g}%"
        change = "" if self.max_accuracy_change is None else f" (within {self.max_accuracy_change:g})"
        return (f"parity on {self.images:,} val images: agreement {self.agreement:.2%} (>= {bar}), "
                f"accuracy {self.accuracy:.2%} vs Keras {self.keras_accuracy:.2%}, "
                f"{self.accuracy_change:+.2f} points{change}, max |dp| {self.max_abs_difference:.4f}: "
                f"{'ok' if self.passed else 'FAILED'}")


def check_parity(fmt: Format, probs: np.ndarray, keras_probs: np.ndarray, labels: np.ndarray) -> Parity:
    """Compare an exported model's probabilities with the Keras model's against the format's bar."""
    if probs.shape != keras_probs.shape:
        raise FerkerasError(f"{fmt.name}: predictions are {probs.shape}, Keras' {keras_probs.shape}")
    top, keras_top = probs.argmax(1), keras_probs.argmax(1)
    parity = Parity(fmt.name, len(labels), float(np.mean(top == keras_top)),
                    float(np.mean(top == labels)), float(np.mean(keras_top == labels)),
                    float(np.abs(probs - keras_probs).max()), fmt.min_agreement, fmt.max_accuracy_change)
    if parity.agreement < fmt.min_agreement:
        parity.failures.append(f"{fmt.name} top-1 agreement {parity.agreement:.2%} < "
                               f"{100 * fmt.min_agreement:g}% required")
    if fmt.max_accuracy_change is not None and abs(parity.accuracy_change) > fmt.max_accuracy_change:
        parity.failures.append(f"{fmt.name} accuracy {parity.accuracy:.2%} is "
                               f"{parity.accuracy_change:+.2f} points from Keras' "
                               f"{parity.keras_accuracy:.2%} (limit {fmt.max_accuracy_change:g})")
    return parity


# ---------------------------------------------------------------------------- export

@dataclass
class Artifact:
    """One exported file (or SavedModel folder), its size, time to make, I/O and parity."""

    format: Format
    path: Path
    bytes: int
    seconds: float
    io: dict | None = None  # TFLite input/output dtypes, with scale and zero point when quantised
    parity: Parity | None = None
    sha256: str | None = None  # of a file's bytes (not of the SavedModel folder)

    def to_dict(self) -> dict:
        """For metadata.json: file name, size, seconds, digest, I/O and parity figures."""
        return {"file": self.path.name, "bytes": self.bytes, "seconds": round(self.seconds, 2),
                **({"sha256": self.sha256} if self.sha256 else {}), **({"io": self.io} if self.io else {}),
                "parity": self.parity.to_dict() if self.parity else None}


@dataclass
class ExportResult:
    """What an export made, where it went, and which parity checks failed."""

    out: Path  # the export folder; untouched when a check failed
    artifacts: list[Artifact]
    metadata: dict
    rejected: Path | None = None  # where a build that failed its checks was kept

    @property
    def failures(self) -> list[str]:
        return [msg for a in self.artifacts if a.parity for msg in a.parity.failures]

    @property
    def passed(self) -> bool:
        return not self.failures

    def usage(self) -> str:
        """The command that uses the export: its int8 model if any, else its smallest TFLite model."""
        tflite = [a for a in self.artifacts if a.path.suffix == ".tflite"]
        best = next((a for a in tflite if a.format.full_int8), None) or (
            min(tflite, key=lambda a: a.bytes) if tflite else self.artifacts[0])
        return f"ferkeras predict photo.jpg --model {self.out / best.path.name}"


def check_out(out: str | os.PathLike, force: bool = False) -> None:
    """Refuse an export folder in the shipped models' folder (installed as ferkeras.exported) unless force."""
    try:
        shipped = shipped_dir().resolve()
    except ModuleNotFoundError:  # installed without its models: nothing to overwrite
        return
    if not force and Path(out).resolve().is_relative_to(shipped):
        raise FerkerasError(f"--out {out} is in {shipped}, the folder of the models installed with "
                            "ferkeras (--model shipped, large, ensemble); pass --force to replace them, or "
                            "choose another --out")


def default_out(model_path: Path, run_dir: Path | None) -> Path:
    """Where an export goes without --out: the run's exported/, else <stem>_exported/ beside the file."""
    if run_dir is not None:
        return run_dir / DEFAULT_OUT
    if is_shipped(model_path):  # beside it is the installed package itself
        raise FerkerasError(f"{model_path} is a model shipped with ferkeras; name an --out folder "
                            "for its export")
    return model_path.parent / f"{model_path.stem}_{DEFAULT_OUT}"


def export(run: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
           tflite: bool = False, quantize: Iterable[str] | None = None, verify: bool = True,
           runs_dir: str | os.PathLike = RUNS_DIR, echo: Echo = print,
           saved_model: bool = True, force: bool = False, calibrate: bool | str = False,
           match_prior: bool = False) -> ExportResult:
    """Export a run's best model (or a .keras file) as .keras, SavedModel and TFLite, checking parity.

    out defaults to the run's exported/ (runs/NAME/exported), or <stem>_exported/ beside a model
    outside any run (default_out); the shipped models' folder is refused unless force
    (check_out). Parity is measured whenever the model's run says what its validation images
    are; verify decides whether a miss keeps the export out (True) or is only recorded (False).
    saved_model=False leaves the SavedModel out of `out` (it is still made: TFLite converts it).
    calibrate fits a temperature on the validation images and folds it into every format
    (calibrate_temperature): for a TTA method's views (a TTA_METHODS name), True for DEFAULT_TTA,
    the one that predict, serve and compat use. match_prior first moves each class's logit so that
    it is the answer for its share of the training data on the validation images (match_prior).
    """
    formats = select_formats(tflite, quantize)
    model_path = find_model(run, runs_dir)
    run_dir = run_of_model(model_path)
    out = Path(out) if out is not None else default_out(model_path, run_dir)
    check_out(out, force)  # before anything is loaded, made or moved
    needs_data = verify or calibrate or match_prior or any(f.calibrated for f in formats)
    # A model of an export folder (the shipped ones) re-exports with its run's data and split,
    # as its metadata.json records them.
    # Its data is read only when needed: a copied export folder may sit far from it.
    source, options = model_source(model_path)
    measure = options is not None and (run_dir is not None or needs_data)
    if needs_data and not measure:
        raise FerkerasError(f"{model_path} is neither in a run folder nor beside a metadata.json "
                            "that names its data, so there are no training images to calibrate "
                            "int8 and no validation images to check parity; export the run, or "
                            "pass --no-verify without --quantize int8 or --calibrate")
    echo(f"Exporting {model_path} to {out}/")
    model = load_model(model_path)
    train_split, val_split = split_as_run(load_run_data(options), options) if measure else (None, None)
    representative = None
    if any(f.calibrated for f in formats):
        representative = representative_images(train_split.images, REPRESENTATIVE_IMAGES,
                                                seed=options.get("seed", 0))
    keras_probs = KerasRunner(model_path, model)(val_split.images) if measure else None
    calibration_record = None
    if calibrate or match_prior:
        tta = tta_method(calibrate if isinstance(calibrate, str) else DEFAULT_TTA)
        calibration_record = calibrate_model(model, train_split, val_split, tta, calibrate, match_prior, echo)
        keras_probs = KerasRunner(model_path, model)(val_split.images)  # the model every file holds

    out.mkdir(parents=True, exist_ok=True)
    _recover(out)
    build = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-export-{os.getpid()}-"))
    try:
        artifacts = []
        for fmt in [FORMATS["keras"], FORMATS["saved_model"], *formats]:
            start = time.perf_counter()
            path = build / fmt.file
            if fmt.name == "keras":
                _save_without_optimizer(model, path)
                runner = KerasRunner(path)
            elif fmt.name == "saved_model":
                model.export(str(path), format="tf_saved_model", verbose=False)
                if not saved_model:
                    continue  # made only to convert the TFLite files from
                runner = SavedModelRunner(path)
            else:
                path.write_bytes(convert(build / "saved_model", fmt, representative))
                runner = TFLiteRunner(path)
            artifact = Artifact(fmt, out / fmt.file, _size(path), time.perf_counter() - start,
                                sha256=None if path.is_dir() else file_digest(path))
            if isinstance(runner, TFLiteRunner):
                artifact.io = {"input": _io(runner.input, runner.input_quantization),
                               "output": _io(runner.output, runner.output_quantization)}
            echo(f"  {fmt.name:<11} {fmt.file:<22} {artifact.bytes / 1e6:7.2f} MB {artifact.seconds:6.1f} s")
            if measure:
                artifact.parity = check_parity(fmt, runner(val_split.images), keras_probs,
                                               val_split.labels)
                echo(f"    {artifact.parity.describe()}")
            artifacts.append(artifact)
        metadata = export_metadata(
            model_path, run_dir, source, {a.format.name: a.to_dict() for a in artifacts},
            next((a.parity.keras_accuracy for a in artifacts if a.parity), None),
            len(val_split) if val_split is not None else None,
            len(representative) if representative is not None else None, weights_digest(model))
        # The figures bench/accuracy.py --record measured stay while their files are the same.
        if calibration_record:
            metadata["calibration"] = calibration_record
        record_note = carry_accuracy(metadata, read_json(out / METADATA, {}), out)
        write_json_atomic(build / METADATA, metadata)
        result = ExportResult(out, artifacts, metadata)
        if not result.passed and not verify:
            echo(f"Parity below the bar, exported anyway (--no-verify): {'; '.join(result.failures)}")
        elif not result.passed:
            result.rejected = out.parent / f"{out.name}-rejected"
            shutil.rmtree(result.rejected, ignore_errors=True)
            os.chmod(build, 0o755)  # mkdtemp made it private
            os.replace(build, result.rejected)
            echo(f"Parity check failed; {out}/ is unchanged, this export is in {result.rejected}/")
            return result
        _install(build, out, [a.format.file for a in artifacts])
        echo(f"Wrote {', '.join(a.format.file for a in artifacts)}, {METADATA} to {out}/")
        if record_note:
            echo(record_note)
        echo(f"Use it: {result.usage()}")
        return result
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _save_without_optimizer(model: keras.Model, path: Path) -> None:
    """Save the model's architecture and weights only, not the optimizer's state."""
    uncompiled_copy(model).save(path)


def _io(details: dict, quantization) -> dict:
    if quantization is not None:
        return quantization.to_dict()
    return {"dtype": np.dtype(details["dtype"]).name}


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# ---------------------------------------------------------------------------- atomic install

def _install(build: Path, out: Path, names: list[str]) -> None:
    """Move the built artefacts into out, metadata.json last; drop artefacts of an earlier export.

    A file moves with one os.replace, so each is always whole. A SavedModel is a folder: the old
    one is renamed aside, the new one renamed in, then the old one deleted; a kill in between
    leaves the old one aside, and the next export (_recover) puts it back.
    """
    previous = read_json(out / METADATA, {}).get("artifacts", {})
    for name in names:
        source, target = build / name, out / name
        if source.is_dir():
            aside = out / f".{name}-old-{os.getpid()}"
            if target.exists():
                os.replace(target, aside)
            os.replace(source, target)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.chmod(source, 0o644)
            os.replace(source, target)
    os.replace(build / METADATA, out / METADATA)
    for entry in previous.values():  # a format this export did not make: its file is stale now
        stale = out / str(entry.get("file", ""))
        if entry.get("file") and entry["file"] not in names and stale.exists():
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def _recover(out: Path) -> None:
    """Undo what a killed export left: a SavedModel renamed aside, build folders of dead processes."""
    for aside in out.glob(".*-old-*"):
        target = out / aside.name[1:].rsplit("-old-", 1)[0]
        if aside.is_dir() and not target.exists():
            os.replace(aside, target)
        else:
            shutil.rmtree(aside, ignore_errors=True)
    for build in out.parent.glob(f".{out.name}-export-*"):
        pid = build.name[len(f".{out.name}-export-"):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(build, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
