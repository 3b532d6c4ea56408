"""Prediction: images -> faces (OpenCV's Haar cascade, or a 48x48 crop as is) -> model -> one record per face.

A model is a .tflite file (run with ai_edge_litert, int8 input quantised and output dequantised
with the scale and zero point that the file declares), a .keras file, a SavedModel folder or a
run; all sit behind one small interface, Runner: uint8 gray faces (N, 48, 48) in, softmax
probabilities (N, 7) out. TensorFlow is imported only for Keras and SavedModel models.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ferkeras.config import atomic_path, find_model
from ferkeras.data import CLASS_NAMES, IMAGE_SIZE, as_batch
from ferkeras.errors import FerkerasError, first_line, quiet_stderr

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
FACE_CASCADE = "haarcascade_frontalface_default.xml"  # the frontal-face cascade OpenCV ships
MIN_FACE = 24  # pixels: the cascade's own window; smaller faces are not found
BATCH_SIZE = 256  # faces per model call
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)  # what every model takes: raw 0-255 gray pixels

Box = tuple[int, int, int, int]  # x, y, width, height in the image's pixels


# ---------------------------------------------------------------------------- model runners

class Runner:
    """A model that maps uint8 gray faces (N, 48, 48) to probabilities (N, 7)."""

    kind = "model"

    def __init__(self, path: Path, labels: Sequence[str] = CLASS_NAMES):
        self.path, self.labels = Path(path), tuple(labels)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities (N, 7), float32, for faces (N, 48, 48) or (N, 48, 48, 1) of 0-255 pixels."""
        x = as_batch(faces)
        if not len(x):
            return np.zeros((0, len(self.labels)), np.float32)
        return np.concatenate([self._run(x[i:i + BATCH_SIZE]) for i in range(0, len(x), BATCH_SIZE)])

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


class KerasRunner(Runner):
    """A .keras model (or a run's best model.keras); model: one already loaded from path."""

    kind = "keras"

    def __init__(self, path: str | os.PathLike, model=None):
        from ferkeras.model import load_model

        super().__init__(Path(path))
        self.model = model if model is not None else load_model(path)
        _check_shapes(path, tuple(self.model.input_shape[1:]), tuple(self.model.output_shape[1:]))

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(x, training=False), dtype=np.float32)


class SavedModelRunner(Runner):
    """A SavedModel folder from `ferkeras export` (its `serve` endpoint)."""

    kind = "saved_model"

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

    kind = "tflite"

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        super().__init__(Path(path), _labels_beside(Path(path)))
        if not Path(path).is_file():
            raise FerkerasError(f"{path}: no such model file")
        try:
            with quiet_stderr():
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        except Exception as e:  # a file that is not a TFLite flatbuffer
            raise FerkerasError(f"{path}: not a TFLite model ({first_line(e)})") from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise FerkerasError(f"{path}: expected one input and one output, got {len(inputs)} "
                                f"and {len(outputs)}")
        self.input, self.output = inputs[0], outputs[0]
        _check_shapes(path, tuple(self.input["shape"][1:]), tuple(self.output["shape"][1:]))
        self.input_quantization = _quantization(self.input)
        self.output_quantization = _quantization(self.output)
        self._batch = 0

    def _run(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self._batch:
            with quiet_stderr():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
                self.interpreter.resize_tensor_input(self.input["index"], [len(x), *IMAGE_SHAPE])
                self.interpreter.allocate_tensors()
            self._batch = len(x)
        q_in = self.input_quantization
        self.interpreter.set_tensor(self.input["index"], q_in.quantize(x) if q_in else x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        q_out = self.output_quantization
        return q_out.dequantize(y) if q_out else y.astype(np.float32)



def _quantization(details: dict) -> Quantization | None:
    """The tensor's quantisation, or None for a float tensor."""
    if np.issubdtype(details["dtype"], np.floating):
        return None
    scale, zero_point = details["quantization"]
    return Quantization(float(scale), int(zero_point), details["dtype"])


def load_runner(model: str | os.PathLike | None = None, runs_dir: str | os.PathLike = "runs",
                threads: int | None = None) -> Runner:
    """A runner for a .tflite file, a SavedModel folder, a .keras file or a run (None: the latest run)."""
    if model is not None:
        path = Path(model)
        if path.suffix == ".tflite":
            return TFLiteRunner(path, threads)
        if (path / "saved_model.pb").is_file():
            return SavedModelRunner(path)
        if path.is_dir() and (path / "saved_model" / "saved_model.pb").is_file() \
                and not (path / "config.json").is_file():
            return SavedModelRunner(path / "saved_model")  # an export folder
        if path.is_file() and path.suffix != ".keras":
            raise FerkerasError(f"{path}: not a model (expected .tflite, .keras, a SavedModel "
                                "folder or a run)")
    return KerasRunner(find_model(model, runs_dir))


def _check_shapes(path, input_shape: tuple, output_shape: tuple | None) -> None:
    input_shape = tuple(None if d is None else int(d) for d in input_shape)
    if input_shape != IMAGE_SHAPE:
        raise FerkerasError(f"{path}: model input is {input_shape}, expected {IMAGE_SHAPE} "
                            "(48x48 gray faces)")
    output_shape = None if output_shape is None else tuple(int(d) for d in output_shape)
    if output_shape is not None and output_shape != (len(CLASS_NAMES),):
        raise FerkerasError(f"{path}: model output is {output_shape}, expected "
                            f"({len(CLASS_NAMES)},) class probabilities")


def _labels_beside(path: Path) -> tuple[str, ...]:
    """The labels in the metadata.json that `ferkeras export` writes beside a model, else CLASS_NAMES."""
    try:
        labels = json.loads((path.parent / "metadata.json").read_text())["labels"]
        return tuple(labels) if len(labels) == len(CLASS_NAMES) else CLASS_NAMES
    except (OSError, ValueError, KeyError, TypeError):
        return CLASS_NAMES


# ---------------------------------------------------------------------------- images and faces

def image_paths(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files as given, and the image files in each folder (recursively, sorted)."""
    paths = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                           and p.is_file() and not p.name.startswith("."))
            if not found:
                raise FerkerasError(f"{path}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise FerkerasError(f"{path}: no such image file or folder")
    return paths


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), turned upright by its EXIF orientation."""
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except FileNotFoundError:
        raise FerkerasError(f"{path}: no such image file") from None
    except UnidentifiedImageError:
        raise FerkerasError(f"{path}: not an image file (Pillow cannot identify it)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise FerkerasError(f"{path}: corrupt or unreadable image: {e}") from None


@functools.lru_cache(maxsize=1)
def _face_cascade():
    import cv2

    if not hasattr(cv2, "CascadeClassifier"):
        raise FerkerasError(f"OpenCV {cv2.__version__} has no Haar cascade face detector (OpenCV 5 "
                            "moved it out); install opencv-python-headless<5")
    cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, FACE_CASCADE))
    if cascade.empty():
        raise FerkerasError(f"OpenCV's {FACE_CASCADE} is missing from {cv2.data.haarcascades}")
    return cascade


def detect_faces(gray: np.ndarray) -> list[Box]:
    """Frontal faces in a gray uint8 image with OpenCV's Haar cascade, left to right."""
    boxes = _face_cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                             minSize=(MIN_FACE, MIN_FACE))
    return sorted((tuple(int(v) for v in box) for box in boxes), key=lambda b: (b[0], b[1]))


def crop_face(gray: np.ndarray, box: Box) -> np.ndarray:
    """The box of a gray image, resized to 48x48 uint8 as FER2013's faces are."""
    import cv2

    x, y, w, h = box
    crop = gray[y:y + h, x:x + w]
    shrink = crop.shape[0] > IMAGE_SIZE
    return cv2.resize(crop, (IMAGE_SIZE, IMAGE_SIZE),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def is_face_crop(image: np.ndarray) -> bool:
    """A 48x48 image is taken as a face crop (as in FER2013) and classified without detection."""
    return image.shape[:2] == (IMAGE_SIZE, IMAGE_SIZE)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 -> gray uint8 with ITU-R 601 luma, as Pillow's convert("L") and FER2013."""
    return np.asarray(Image.fromarray(rgb).convert("L"))


# ---------------------------------------------------------------------------- prediction records

@dataclass
class Face:
    """One face: where it is and what the model says, kept together so they never drift apart."""

    box: Box
    probabilities: np.ndarray  # (7,), in labels order
    labels: tuple[str, ...] = CLASS_NAMES

    @property
    def label(self) -> str:
        """The most probable expression."""
        return self.labels[int(np.argmax(self.probabilities))]

    @property
    def score(self) -> float:
        """The probability of the most probable expression."""
        return float(np.max(self.probabilities))

    def to_dict(self) -> dict:
        """JSON-able: box, label, score and every label's probability (unrounded)."""
        x, y, w, h = self.box
        return {"box": {"x": x, "y": y, "width": w, "height": h}, "label": self.label,
                "score": self.score,
                "probabilities": {name: float(p) for name, p in zip(self.labels, self.probabilities,
                                                                     strict=True)}}


@dataclass
class ImageResult:
    """One image: its size, whether it was taken as a face crop, and its faces."""

    path: Path
    width: int
    height: int
    crop: bool  # True: the whole image was classified as one face, without detection
    faces: list[Face] = field(default_factory=list)
    annotated: Path | None = None  # where the drawing of boxes and labels went, if asked

    def to_dict(self) -> dict:
        """JSON-able record of the image and its faces."""
        return {"image": str(self.path), "width": self.width, "height": self.height,
                "crop": self.crop, "faces": [face.to_dict() for face in self.faces],
                "annotated": str(self.annotated) if self.annotated else None}


@dataclass
class _Pending:
    result: ImageResult
    boxes: list[Box]
    crops: np.ndarray  # (faces, 48, 48) uint8


def _find_faces(path: Path, detect: bool | None) -> _Pending:
    rgb = read_image(path)
    gray = to_gray(rgb)
    height, width = gray.shape
    crop = not detect if detect is not None else is_face_crop(gray)
    if crop:
        boxes = [(0, 0, width, height)]
        crops = crop_face(gray, boxes[0])[None]
    else:
        boxes = detect_faces(gray)
        crops = np.stack([crop_face(gray, b) for b in boxes]) if boxes else np.zeros((0, 48, 48), np.uint8)
    return _Pending(ImageResult(path, width, height, crop), boxes, crops)


def predict_images(paths: Sequence[str | os.PathLike], runner: Runner, detect: bool | None = None
                   ) -> Iterator[ImageResult]:
    """Yield one ImageResult per image, classifying faces of many images in batches.

    detect None: a 48x48 image is a face crop, a larger one is searched for faces; True always
    searches; False classifies every whole image as one face (resized to 48x48).
    """
    pending: list[_Pending] = []

    def flush() -> Iterator[ImageResult]:
        crops = [p.crops for p in pending]
        probs = runner(np.concatenate(crops)) if sum(len(c) for c in crops) \
            else np.zeros((0, len(runner.labels)), np.float32)
        start = 0
        for p in pending:
            for box, prob in zip(p.boxes, probs[start:start + len(p.boxes)], strict=True):
                p.result.faces.append(Face(box, prob, runner.labels))
            start += len(p.boxes)
            yield p.result
        pending.clear()

    queued = 0
    for path in paths:
        pending.append(_find_faces(Path(path), detect))
        queued += len(pending[-1].boxes)
        if queued >= BATCH_SIZE:
            yield from flush()
            queued = 0
    yield from flush()


def predict(inputs: Iterable[str | os.PathLike], model: str | os.PathLike | None = None,
            runs_dir: str | os.PathLike = "runs", detect: bool | None = None,
            annotate: str | os.PathLike | None = None) -> list[ImageResult]:
    """Classify the faces in image files and folders; annotate: an output file (one image) or folder."""
    paths = image_paths(inputs)
    runner = load_runner(model, runs_dir)
    results = list(predict_images(paths, runner, detect))
    if annotate is not None:
        targets = _annotation_targets(results, Path(annotate))
        for result, target in zip(results, targets, strict=True):
            result.annotated = save_annotated(result, target)
    return results


# ---------------------------------------------------------------------------- output

def draw_faces(rgb: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of an RGB image with each face's box and label (with its probability) drawn on it."""
    import cv2

    out = np.ascontiguousarray(rgb.copy())
    thickness = max(1, round(min(out.shape[:2]) / 250))
    for face in faces:
        x, y, w, h = face.box
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), (0, 255, 0), thickness)
        text = f"{face.label} {face.score:.2f}"
        scale = max(0.3, w / 220)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = y - th - base - 2 if y - th - base - 2 >= 0 else y + h  # above the box, else below
        cv2.rectangle(out, (x, top), (x + tw + 2, top + th + base + 2), (0, 255, 0), -1)
        cv2.putText(out, text, (x + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                    thickness, cv2.LINE_AA)
    return out


def save_annotated(result: ImageResult, path: str | os.PathLike) -> Path:
    """Draw a result's faces on its image and write it (atomically; format from the suffix)."""
    path = Path(path)
    image = Image.fromarray(draw_faces(read_image(result.path), result.faces))
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise FerkerasError(f"--annotate {path}: unknown image type {path.suffix!r} (use .jpg or .png)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return path


def _annotation_targets(results: list[ImageResult], annotate: Path) -> list[Path]:
    """An image file name (one image only), else a folder of <name>.jpg (numbered if taken)."""
    if annotate.suffix.lower() in IMAGE_SUFFIXES and not annotate.is_dir():
        if len(results) != 1:
            raise FerkerasError(f"--annotate {annotate}: {len(results)} images need a folder, "
                                "not a file")
        return [annotate]
    targets, taken = [], set()
    for result in results:
        name = result.path.stem + ".jpg"
        for i in range(2, len(results) + 2):
            if name not in taken:
                break
            name = f"{result.path.stem}_{i}.jpg"
        taken.add(name)
        targets.append(annotate / name)
    return targets


def format_table(results: Sequence[ImageResult]) -> str:
    """A human-readable table: one line per face, the two most probable labels; no face says so."""
    lines = [f"{'image':<28} {'face':>4}  {'box (x,y,w,h)':<20} {'label':<9} {'prob':>5}  next"]
    for result in results:
        name = _short(result.path)
        if not result.faces:
            lines.append(f"{name:<28} no face found ({result.width}x{result.height}; "
                         f"a 48x48 face crop is classified as it is)")
        for i, face in enumerate(result.faces, start=1):
            order = np.argsort(face.probabilities)[::-1]
            runner_up = f"{face.labels[order[1]]} {face.probabilities[order[1]]:.2f}"
            box = ",".join(str(v) for v in face.box) + (" (crop)" if result.crop else "")
            lines.append(f"{name:<28} {i:>4}  {box:<20} {face.label:<9} {face.score:5.2f}  {runner_up}")
        if result.annotated:
            lines.append(f"{'':<28} annotated: {result.annotated}")
    return "\n".join(lines)


def to_json(results: Sequence[ImageResult]) -> str:
    """The results as a JSON list, one object per image."""
    return json.dumps([r.to_dict() for r in results], indent=2)


def _short(path: Path, width: int = 28) -> str:
    text = str(path)
    return text if len(text) <= width else "..." + text[-(width - 3):]
