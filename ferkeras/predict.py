"""Prediction: images -> faces (a detector, or a 48x48 crop as it is) -> model -> one record per face.

FaceRecognizer composes the pieces (ferkeras.media's detectors and crops, ferkeras.runners'
models and test-time augmentation) and takes an array from the caller's own OpenCV loop;
predict() does the same for image files and folders, batching faces across images. Video and
camera streams are ferkeras.video's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ferkeras.config import RUNS_DIR
from ferkeras.errors import FerkerasError
from ferkeras.fileio import atomic_path
from ferkeras.media.crop import clamp_light, clamp_sharpness, crop_detection, crop_landmarks, is_face_crop
from ferkeras.media.detect import Detector
from ferkeras.media.detectors import DEFAULT_DETECTOR, make_detector
from ferkeras.media.draw import draw_faces
from ferkeras.media.faces import Box, Detection, Face
from ferkeras.media.images import IMAGE_SUFFIXES, as_rgb, image_paths, read_image, to_gray
from ferkeras.runners import BATCH_SIZE, DEFAULT_TTA, Runner, load_runner, tta_method
from ferkeras.spec import IMAGE_SIZE

# A 48x48 crop is searched for its face at this scale, in a border (Detector.in_border), to frame
# it by its landmarks: at 144 px BlazeFace found 95.5% of PublicTest's crops, in 1.8 ms each.
REFRAME_SCALE = 3

# ---------------------------------------------------------------------------- records

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


# ---------------------------------------------------------------------------- the recognizer

@dataclass
class FoundFaces:
    """What detection gives one image: the detections, their 48x48 crops, and whether it was a crop."""

    detections: list[Detection]
    crops: np.ndarray  # (faces, 48, 48) uint8
    whole_image: bool
    # (faces, 48, 48): a 48x48 crop framed again by its landmarks, classified beside crops and
    # averaged with it; None where there is no such view (FaceRecognizer.reframe).
    views: np.ndarray | None = None

    def largest(self) -> FoundFaces | None:
        """The largest face alone (the image's answer where one label is wanted); None for none."""
        if not self.detections:
            return None
        i = int(np.argmax([d.area for d in self.detections]))
        views = None if self.views is None else self.views[i:i + 1]
        return FoundFaces([self.detections[i]], self.crops[i:i + 1], self.whole_image, views)


class FaceRecognizer:
    """Faces and their expressions in images: detector -> 48x48 crops -> model (with TTA).

    model: a model name as load_runner takes it (None: the latest run trained on real faces, else
    the shipped ensemble; "shipped"), or a Runner. detector: "blazeface" (the default), "haar",
    "mtcnn" or a Detector, with detector_options (min_face for any of them; fallback, the detector
    asked where the first finds no face in a still image: blazeface's is haar, None for none;
    blazeface: threshold; haar: scale_factor, min_neighbors; ...). align: level the eyes before
    cropping where the detector gives landmarks (blazeface, mtcnn). tta: "none", "flip" or "shifts".
    reframe: a 48x48 crop, which its maker framed their own way, is read as it is and as its
    landmarks frame it (as a photo's faces are framed, eyes not levelled), the two views'
    probabilities averaged; False: as it is only. light: a crop darker, brighter or flatter than
    nearly any of the model's training faces is brought to the edge of their range (the runner's
    face_range, FER2013's unless its run recorded another) before the model reads it
    (media.crop.clamp_light); sharpen: one blurrier than nearly any is sharpened to the edge of
    theirs (media.crop.clamp_sharpness); False: every crop as it is.
    """

    def __init__(self, model: str | os.PathLike | Runner | None = None,
                 detector: str | Detector = DEFAULT_DETECTOR,
                 align: bool = True, tta: str | None = DEFAULT_TTA, runs_dir: str | os.PathLike = RUNS_DIR,
                 reframe: bool = True, light: bool = True, sharpen: bool = True, **detector_options):
        self.tta = tta_method(tta) or "none"
        self.runner = model if isinstance(model, Runner) else load_runner(model, runs_dir)
        self.detector = make_detector(detector, **detector_options)
        self.align = align
        self.reframe = reframe
        self.light, self.sharpen = light, sharpen

    @property
    def labels(self) -> tuple[str, ...]:
        """The class names, in the order of each face's probabilities."""
        return self.runner.labels

    def find(self, rgb: np.ndarray, detect: bool | None = True, near: list[Box] | None = None,
             follow: list[Box] | None = None, framed: bool = True) -> FoundFaces:
        """Detections and crops of an RGB image; detect None: a 48x48 image is one face as it is,
        False: the whole image is one face. near: search only around these boxes (a video's
        tracks; Detector.near), where given. follow: a video's whole-frame search that knows its
        tracked boxes (Detector.follow). framed: where the whole image shows no face, search it
        again in a border (Detector.framed: a face crop of any size); a video's frames skip it.
        A 48x48 image taken whole (detect None) also gets its landmark_view, with reframe."""
        gray = to_gray(rgb)
        height, width = gray.shape
        whole = not detect if detect is not None else is_face_crop(gray)
        detections = ([Detection((0, 0, width, height))] if whole
                      else self.detector.near(rgb, gray, near) if near
                      else self.detector.follow(rgb, gray, follow) if follow is not None
                      else self.detector.framed(rgb, gray) if framed
                      else self.detector(rgb, gray))
        crops = (np.stack([crop_detection(gray, d, self.align) for d in detections]) if detections
                 else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8))
        view = self.landmark_view(rgb, gray) if whole and detect is None and self.reframe else None
        return FoundFaces(detections, crops, whole, None if view is None else view[None])

    def landmark_view(self, rgb: np.ndarray, gray: np.ndarray) -> np.ndarray | None:
        """A face crop framed again by its landmarks, found at REFRAME_SCALE in a border; None where
        the detector finds no face or gives no landmarks (haar)."""
        import cv2

        height, width = gray.shape
        size = (width * REFRAME_SCALE, height * REFRAME_SCALE)
        large = cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR)
        found = [d for d in self.detector.in_border(cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR),
                                                    large) if d.landmarks is not None]
        if not found:
            return None
        largest = max(found, key=lambda d: d.area)
        # Not levelled: the crop shows the face turned as its maker left it, as FER2013's do;
        # levelling cost the view 1.9 points of balanced accuracy on PublicTest (bench/README).
        return crop_landmarks(large, largest.landmarks, align=False)

    def model_input(self, crops: np.ndarray) -> np.ndarray:
        """48x48 face crops as the model reads them: lit and sharpened into its training faces'
        range (light, sharpen), the others as they are."""
        face_range = self.runner.face_range
        crops = clamp_light(crops, face_range.mean, face_range.std) if self.light else crops
        return clamp_sharpness(crops, face_range.least_sharpness) if self.sharpen else crops

    def classify(self, crops: np.ndarray, tta: str | None = None) -> np.ndarray:
        """Probabilities (N, 7) of 48x48 face crops, with the recognizer's TTA (or this one)."""
        return self.runner.predict(self.model_input(crops), tta or self.tta)

    def classify_found(self, found: Sequence[FoundFaces], tta: str | None = None) -> np.ndarray:
        """Probabilities (N, 7) of every face of these images, in order, in one model call: each
        face's crop, averaged with its second view where it has one (FoundFaces.views); tta: the
        recognizer's, unless given."""
        crops = [f.crops for f in found]
        views = [f.views for f in found if f.views is not None]
        n_crops = sum(len(c) for c in crops)
        if not n_crops:
            return np.zeros((0, len(self.labels)), np.float32)
        probabilities = self.classify(np.concatenate(crops + views), tta)
        second = iter(np.split(probabilities[n_crops:], np.cumsum([len(v) for v in views])))
        faces, start = [], 0
        for one in found:
            own = probabilities[start:start + len(one.crops)]
            start += len(one.crops)
            faces.append(own if one.views is None else (own + next(second)) / 2)
        return np.concatenate(faces)

    def faces(self, found: FoundFaces, probabilities: np.ndarray) -> list[Face]:
        """One Face record per detection, with its probabilities."""
        return [Face(d.box, p, self.labels, landmarks=d.landmarks)
                for d, p in zip(found.detections, probabilities, strict=True)]

    def recognize(self, rgb: np.ndarray, detect: bool | None = True, near: list[Box] | None = None,
                  follow: list[Box] | None = None) -> tuple[FoundFaces, list[Face]]:
        """find, then classify the crops: the detections (with their crops) and their Face records."""
        found = self.find(rgb, detect, near, follow)
        return found, self.faces(found, self.classify_found([found]))

    def __call__(self, image: np.ndarray, color: str = "bgr", detect: bool | None = True) -> list[Face]:
        """The faces in one image array (BGR as OpenCV gives it, "rgb", or gray), left to right."""
        return self.recognize(as_rgb(image, color), detect)[1]


# ---------------------------------------------------------------------------- image files

def predict_images(paths: Sequence[str | os.PathLike], recognizer: FaceRecognizer,
                   detect: bool | None = None) -> Iterator[ImageResult]:
    """Yield one ImageResult per image, classifying the faces of many images in batches.

    detect None: a 48x48 image is a face crop, a larger one is searched for faces; True always
    searches; False classifies every whole image as one face (resized to 48x48).
    """
    pending: list[tuple[ImageResult, FoundFaces]] = []

    def flush() -> Iterator[ImageResult]:
        probs = recognizer.classify_found([found for _, found in pending])
        start = 0
        for result, found in pending:
            result.faces = recognizer.faces(found, probs[start:start + len(found.crops)])
            start += len(found.crops)
            yield result
        pending.clear()

    queued = 0
    for path in paths:
        rgb = read_image(path)
        found = recognizer.find(rgb, detect)
        pending.append((ImageResult(Path(path), rgb.shape[1], rgb.shape[0], found.whole_image), found))
        queued += len(found.crops)
        if queued >= BATCH_SIZE:
            yield from flush()
            queued = 0
    yield from flush()


def predict(inputs: Iterable[str | os.PathLike],
            model: str | os.PathLike | Runner | FaceRecognizer | None = None,
            runs_dir: str | os.PathLike = RUNS_DIR, detect: bool | None = None,
            annotate: str | os.PathLike | None = None, detector: str | Detector = DEFAULT_DETECTOR,
            align: bool = True, tta: str | None = DEFAULT_TTA) -> list[ImageResult]:
    """Classify the faces in image files and folders; annotate: an output file (one image) or folder.

    model: a model name (see runners.load_runner), a Runner, or a FaceRecognizer (which then
    brings its own detector, alignment and TTA).
    """
    paths = image_paths(inputs)
    targets = _annotation_targets(paths, Path(annotate)) if annotate is not None else None
    recognizer = model if isinstance(model, FaceRecognizer) else FaceRecognizer(model, detector, align,
                                                                                tta, runs_dir)
    results = list(predict_images(paths, recognizer, detect))
    for result, target in zip(results, targets or [], strict=False):
        result.annotated = save_annotated(result, target)
    return results


# ---------------------------------------------------------------------------- output

def save_annotated(result: ImageResult, path: str | os.PathLike) -> Path:
    """Draw a result's faces on its image and write it (atomically; format from the suffix)."""
    path = Path(path)
    image = Image.fromarray(draw_faces(read_image(result.path), result.faces))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fmt = Image.registered_extensions()[path.suffix.lower()]
        image.save(tmp, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return path


def _annotation_targets(paths: list[Path], annotate: Path) -> list[Path]:
    """An image file name (one image only), else a folder of <name>.jpg (numbered if taken)."""
    if annotate.suffix and not annotate.is_dir():
        if annotate.suffix.lower() not in Image.registered_extensions() \
                or annotate.suffix.lower() not in IMAGE_SUFFIXES:
            raise FerkerasError(f"--annotate {annotate}: unknown image type {annotate.suffix!r} "
                                "(use .jpg or .png)")
        if len(paths) != 1:
            raise FerkerasError(f"--annotate {annotate}: {len(paths)} images need a folder, not a file")
        return [annotate]
    targets, taken = [], set()
    for path in paths:
        name = path.stem + ".jpg"
        for i in range(2, len(paths) + 2):
            if name not in taken:
                break
            name = f"{path.stem}_{i}.jpg"
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
                         f"a 48x48 image is taken as a face crop)")
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
