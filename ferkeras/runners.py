"""Model runners: uint8 gray faces (N, 48, 48) in, softmax probabilities (N, 7) out, whatever the file.

A model is a .tflite file (run with ai_edge_litert, int8 input quantised and output dequantised
with the scale and zero point that the file declares), a .keras file, a SavedModel folder, a
run, or `shipped`: the model that installs with the package. All sit behind one small interface,
Runner. TensorFlow is imported only for Keras and SavedModel models. Test-time augmentation
(the mirror image, one-pixel shifts) lives here too, so every caller averages the same views.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferkeras.config import RUNS_DIR
from ferkeras.data import as_batch
from ferkeras.errors import FerkerasError, first_line, quiet_stderr
from ferkeras.fileio import read_json
from ferkeras.runs import (
    RECOGNITION_DEFAULT,
    SHIPPED_MODELS,
    find_model,
    latest_run_on_real_faces,
    shipped_dir,
    shipped_file,
    training_face_range,
)
from ferkeras.spec import CLASS_NAMES, IMAGE_SHAPE

BATCH_SIZE = 256  # faces per model call

SHIPPED_FILE = "model_int8.tflite"  # 0.16 ms a face on one core, no TensorFlow import needed

# Test-time augmentation: the views whose probabilities are averaged, and their description.
TTA_METHODS = {
    "none": "the image alone",
    "flip": "mean of the image's and its horizontal mirror's probabilities",
    "shifts": "mean over 10 views: the image and its 4 one-pixel diagonal shifts, each also mirrored",
}
TTA_SHIFTS = ((0, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))  # (rows, columns) in pixels
# What predict, video, serve and compat use unless told. Shipped int8 model on PublicTest: 0.6640
# -> 0.6790 for 0.17 ms more a face; shifts adds 0.7 points for 1.5 ms more (bench/predict_tta.py).
# Detection takes about 75 ms of a 640x480 frame. export --calibrate fits for it.
DEFAULT_TTA = "flip"


# ---------------------------------------------------------------------------- test-time augmentation

def tta_method(tta: bool | str | None) -> str | None:
    """The TTA method a tta argument names: True is flip; False, None and "none" are none."""
    if tta is True:
        return "flip"
    if not tta or tta == "none":
        return None
    if tta not in TTA_METHODS:
        raise FerkerasError(f"--tta {tta}: not one of {', '.join(TTA_METHODS)}")
    return tta


def shift_images(images: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Shift (N, H, W, ...) images by whole pixels, the gap filled by reflection as in training."""
    pad = max(abs(rows), abs(columns))
    if not pad:
        return images
    widths = [(0, 0), (pad, pad), (pad, pad)] + [(0, 0)] * (images.ndim - 3)
    padded = np.pad(images, widths, mode="reflect")
    height, width = images.shape[1:3]
    return padded[:, pad - rows:pad - rows + height, pad - columns:pad - columns + width]


def tta_views(images: np.ndarray, shifts: Sequence[tuple[int, int]] = TTA_SHIFTS[:1],
              mirror: bool = False) -> list[np.ndarray]:
    """The views of a batch (N, 48, 48, 1): each shift of the images, then (mirror) each mirrored."""
    views = [shift_images(images, *shift) for shift in shifts]
    if mirror:
        views += [view[:, :, ::-1] for view in views]
    return views


def view_plan(tta: bool | str | None) -> tuple[tuple[tuple[int, int], ...], bool]:
    """The shifts and whether to mirror them, for a TTA method."""
    method = tta_method(tta)
    # Expressions are left-right symmetric, so the mirrored face is a second, free opinion;
    # faces are not centred to the pixel, so small shifts are more (training shifts by 5%).
    return (TTA_SHIFTS if method == "shifts" else TTA_SHIFTS[:1]), method is not None


def predict_with_tta(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                     tta: bool | str | None = None) -> np.ndarray:
    """Probabilities (N, 7) of run over images, averaged over the TTA method's views."""
    shifts, mirror = view_plan(tta)
    views = tta_views(as_batch(images), shifts, mirror)
    return np.mean([np.asarray(run(view), np.float64) for view in views], axis=0).astype(np.float32)


# ---------------------------------------------------------------------------- runners

class Runner:
    """A model that maps uint8 gray faces (N, 48, 48) to probabilities (N, 7)."""

    def __init__(self, path: Path, labels: Sequence[str] = CLASS_NAMES):
        self.path, self.labels = Path(path), tuple(labels)
        self.name = str(path)  # what the user called it: a path, or `shipped`
        # the light and sharpness its training faces span: recognition clamps crops to it
        self.face_range = training_face_range(self.path)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities (N, 7), float32, for faces (N, 48, 48) or (N, 48, 48, 1) of 0-255 pixels."""
        x = as_batch(faces)
        if not len(x):
            return np.zeros((0, len(self.labels)), np.float32)
        return np.concatenate([self._run(x[i:i + BATCH_SIZE]) for i in range(0, len(x), BATCH_SIZE)])

    def predict(self, faces: np.ndarray, tta: bool | str | None = None) -> np.ndarray:
        """Probabilities (N, 7) for faces, averaged over the views of a TTA method (none, flip, shifts)."""
        return predict_with_tta(self, faces, tta)

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the user: which model answers, and its recorded accuracy if it has one."""
        accuracy = recorded_accuracy(self.path)
        return f"model: {self.name}" + (f" ({accuracy})" if accuracy else "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


class KerasRunner(Runner):
    """A .keras model (or a run's best model.keras); model: one already loaded from path."""

    def __init__(self, path: str | os.PathLike, model=None):
        from ferkeras.model import load_model

        super().__init__(Path(path))
        self.model = model if model is not None else load_model(path)
        _check_shapes(path, tuple(self.model.input_shape[1:]), tuple(self.model.output_shape[1:]))

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(x, training=False), dtype=np.float32)


class SavedModelRunner(Runner):
    """A SavedModel folder from `ferkeras export` (its `serve` endpoint)."""

    def __init__(self, path: str | os.PathLike):
        import tensorflow as tf

        super().__init__(Path(path))
        try:
            loaded = tf.saved_model.load(str(path))
            self.serve = loaded.serve if hasattr(loaded, "serve") else loaded.signatures["serving_default"]
            spec = self.serve.input_signature[0] if self.serve.input_signature else None
        except Exception as e:  # TF raises many types for a bad folder; the user needs one line
            raise FerkerasError(f"{path}: not a loadable SavedModel ({first_line(e)})") from None
        self._loaded = loaded  # keeps the variables alive
        if spec is not None:
            _check_shapes(path, tuple(spec.shape[1:]), None)

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.serve(x)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True)
class Quantization:
    """How a quantised TFLite tensor maps to real values: real = (q - zero_point) * scale."""

    scale: float
    zero_point: int
    dtype: type

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Real values -> the integer type, rounded to nearest and clipped to its range."""
        return quantize(x, self.scale, self.zero_point, self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """Integers -> real values (float32)."""
        return dequantize(q, self.scale, self.zero_point)

    def to_dict(self) -> dict:
        """dtype, scale and zero point, for metadata.json."""
        return {"dtype": np.dtype(self.dtype).name, "scale": float(self.scale),
                "zero_point": int(self.zero_point)}


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: type) -> np.ndarray:
    """q = round(x / scale) + zero_point, clipped to dtype's range: TFLite's affine quantisation.

    scale may be an array (per channel); halves round away from 0, as TFLite rounds them.
    """
    info = np.iinfo(dtype)
    steps = np.asarray(x, np.float32) / np.float32(scale)
    q = np.sign(steps) * np.floor(np.abs(steps) + 0.5) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """x = (q - zero_point) * scale, as float32."""
    return ((np.asarray(q, np.int32) - zero_point) * np.float32(scale)).astype(np.float32)


class TFLiteRunner(Runner):
    """A .tflite file run with ai_edge_litert; quantised input and output are converted here."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        super().__init__(Path(path), _labels_beside(Path(path)))
        if not Path(path).is_file():
            raise FerkerasError(f"{path}: no such model file")
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        except Exception as e:  # a file that is not a TFLite flatbuffer
            raise FerkerasError(f"{path}: not a TFLite model ({first_line(e)})") from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise FerkerasError(f"{path}: expected one input and one output, got {len(inputs)} "
                                f"and {len(outputs)}")
        self.input, self.output = inputs[0], outputs[0]
        _check_shapes(path, tuple(self.input["shape"][1:]), tuple(self.output["shape"][1:]))
        try:
            _first_allocation(self.interpreter)
        except Exception as e:  # an op LiteRT lacks, say
            raise FerkerasError(f"{path}: LiteRT cannot run it ({first_line(e)})") from None
        self.input_quantization = _quantization(self.input)
        self.output_quantization = _quantization(self.output)
        self._batch = 0

    def _run(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self._batch:
            self.interpreter.resize_tensor_input(self.input["index"], [len(x), *IMAGE_SHAPE])
            self.interpreter.allocate_tensors()
            self._batch = len(x)
        q_in = self.input_quantization
        self.interpreter.set_tensor(self.input["index"], q_in.quantize(x) if q_in else x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        q_out = self.output_quantization
        return q_out.dequantize(y) if q_out else y.astype(np.float32)


# LiteRT logs "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." once per process, at an
# interpreter's first allocation, and has no setting that turns it off. So each runner allocates
# when it loads (serve loads before its threads start), and the process's first does so hidden.
_allocated_before = False


def _first_allocation(interpreter) -> None:
    """Allocate a new interpreter's tensors; the process's first time in quiet_stderr."""
    global _allocated_before
    if _allocated_before:
        interpreter.allocate_tensors()
        return
    with quiet_stderr():
        interpreter.allocate_tensors()
    _allocated_before = True


def _quantization(details: dict) -> Quantization | None:
    """The tensor's quantisation, or None for a float tensor."""
    if np.issubdtype(details["dtype"], np.floating):
        return None
    scale, zero_point = details["quantization"]
    return Quantization(float(scale), int(zero_point), details["dtype"])


# ---------------------------------------------------------------------------- finding a model

def needs_tensorflow(model: str | os.PathLike | None, runs_dir: str | os.PathLike = RUNS_DIR) -> bool:
    """Whether loading this model imports TensorFlow (all but .tflite files and `shipped`)."""
    return resolve_model(model, runs_dir).suffix != ".tflite"


def resolve_model(model: str | os.PathLike | None, runs_dir: str | os.PathLike = RUNS_DIR) -> Path:
    """The file or folder a model name stands for.

    None: the latest run in runs_dir trained on real faces, else RECOGNITION_DEFAULT; a shipped
    model's name (SHIPPED_MODELS): its int8 file; anything else: itself (a .tflite/.keras file, a
    SavedModel or export folder) or a run's best model.keras.
    """
    if model is None:
        model = latest_run_on_real_faces(runs_dir) or RECOGNITION_DEFAULT
    if str(model) in SHIPPED_MODELS:
        return shipped_file(str(model), SHIPPED_FILE)
    path = Path(model)
    if path.suffix == ".tflite" or (path / "saved_model.pb").is_file():
        return path
    if path.is_dir() and (path / "saved_model" / "saved_model.pb").is_file() \
            and not (path / "config.json").is_file():
        return path / "saved_model"  # an export folder
    if path.is_file() and path.suffix != ".keras":
        raise FerkerasError(f"{path}: not a model (expected .tflite, .keras, a SavedModel "
                            f"folder, a run, or {', '.join(SHIPPED_MODELS)})")
    return find_model(model, runs_dir)


def load_runner(model: str | os.PathLike | None = None, runs_dir: str | os.PathLike = RUNS_DIR,
                threads: int | None = None) -> Runner:
    """A runner for a model name (see resolve_model): None is the latest run on real faces, else
    RECOGNITION_DEFAULT."""
    path = resolve_model(model, runs_dir)
    if path.suffix == ".tflite":
        runner = TFLiteRunner(path, threads)
    elif (path / "saved_model.pb").is_file():
        runner = SavedModelRunner(path)
    else:
        runner = KerasRunner(path)
    if model is None or str(model) in SHIPPED_MODELS:
        for name in SHIPPED_MODELS:
            if path == shipped_dir(name) / SHIPPED_FILE:
                runner.name = f"{name} ({SHIPPED_FILE})"
    return runner


def _check_shapes(path, input_shape: tuple, output_shape: tuple | None) -> None:
    input_shape = tuple(None if d is None else int(d) for d in input_shape)
    if input_shape != IMAGE_SHAPE:
        raise FerkerasError(f"{path}: model input is {input_shape}, expected {IMAGE_SHAPE} "
                            "(48x48 gray faces)")
    output_shape = None if output_shape is None else tuple(int(d) for d in output_shape)
    if output_shape is not None and output_shape != (len(CLASS_NAMES),):
        raise FerkerasError(f"{path}: model output is {output_shape}, expected "
                            f"({len(CLASS_NAMES)},) class probabilities")


def metadata_beside(path: Path) -> dict:
    """The metadata.json that `ferkeras export` writes beside a model, or {}."""
    metadata = read_json(path.parent / "metadata.json", {})
    return metadata if isinstance(metadata, dict) else {}


def _labels_beside(path: Path) -> tuple[str, ...]:
    """The labels in the metadata.json beside a model, else CLASS_NAMES."""
    labels = metadata_beside(path).get("labels")
    return tuple(labels) if isinstance(labels, list) and len(labels) == len(CLASS_NAMES) else CLASS_NAMES


def accuracy_record(path: Path) -> dict | None:
    """What the metadata.json beside a model records of this file's accuracy, or None.

    bench/accuracy.py --record's figures on named data (data, split, images, accuracy,
    accuracy_tta, ...) come first; else the export's parity check on the run's validation images.
    """
    metadata = metadata_beside(path)
    for engine, artifact in metadata.get("artifacts", {}).items():
        if not isinstance(artifact, dict) or artifact.get("file") != path.name:
            continue
        measured = metadata.get("accuracy") if isinstance(metadata.get("accuracy"), dict) else {}
        figures = measured.get("engines", {}).get(engine)
        if isinstance(figures, dict) and isinstance(figures.get("accuracy"), (int, float)):
            return {"data": measured.get("data"), "split": measured.get("split"), **figures}
        parity = artifact.get("parity") or {}
        if isinstance(parity.get("accuracy"), (int, float)):
            return {"data": "its run's validation images", "split": None, "images": parity.get("images"),
                    "accuracy": parity["accuracy"]}
    return None


def recorded_accuracy(path: Path) -> str | None:
    """accuracy_record in words: "accuracy 0.6528 on fer2013 test", or None."""
    record = accuracy_record(path)
    if record is None:
        return None
    where = " ".join(str(part) for part in (record["data"], record["split"]) if part)
    return f"accuracy {record['accuracy']:.4f} on {where}"
