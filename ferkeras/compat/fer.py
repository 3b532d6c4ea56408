"""fer's FER (fer/fer.py) on ferkeras' model, and the images it takes: see ferkeras.compat."""

from __future__ import annotations

import base64
import binascii
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ferkeras.errors import FerkerasError, first_line
from ferkeras.media.crop import crop_detection
from ferkeras.media.detect import Detector, HaarDetector
from ferkeras.media.detectors import DEFAULT_DETECTOR, make_detector
from ferkeras.media.faces import Detection, Face
from ferkeras.media.images import as_rgb, decode_image, read_image, to_gray
from ferkeras.predict import DEFAULT_TTA, FaceRecognizer, FoundFaces
from ferkeras.runners import Runner
from ferkeras.runs import RECOGNITION_DEFAULT, shipped_dir
from ferkeras.spec import CLASS_NAMES, IMAGE_SIZE

DECIMALS = 2  # fer rounds every probability to 2 places
FER_SCALE_FACTOR, FER_MIN_FACE_SIZE, FER_MIN_NEIGHBORS = 1.1, 50, 5  # fer's Haar defaults
URL_TIMEOUT_S = 10  # fer's timeout for an image URL
DATA_URL_PREFIX = "data:image/"  # fer decodes base64 only in this form: data:image/...;base64,<data>


class InvalidImage(FerkerasError):
    """fer's exception for an image that is None, of an unsupported type, or cannot be read."""


class _BadArgument(FerkerasError, ValueError):
    """A bad constructor argument: fer raises ValueError, ferkeras' callers catch FerkerasError."""


# ---------------------------------------------------------------------------- images

def _load_image(img: Any) -> np.ndarray:
    """What fer's detect_emotions takes (BGR or gray array, path, data URL, http(s) URL) as RGB uint8."""
    if img is None:
        raise InvalidImage("image is None: expected a BGR or gray array, an image path, a "
                           "data:image/...;base64 URL or an http(s) URL")
    try:
        if isinstance(img, np.ndarray):
            return as_rgb(img, "bgr")
        if isinstance(img, str) and img.startswith(DATA_URL_PREFIX):
            return _decode_data_url(img)
        if isinstance(img, str) and img.startswith(("http://", "https://")):
            return _download(img)
        if isinstance(img, (str, os.PathLike)):
            return read_image(img)
    except InvalidImage:
        raise
    except FerkerasError as e:
        raise InvalidImage(str(e)) from None
    raise InvalidImage(f"image of type {type(img).__name__}: expected a BGR or gray array, an "
                       "image path, a data:image/...;base64 URL or an http(s) URL")


def _decode_data_url(url: str) -> np.ndarray:
    where = url[:40] + ("..." if len(url) > 40 else "")
    _, comma, payload = url.partition(",")
    try:
        data = base64.b64decode(payload, validate=True) if comma else b""
    except (binascii.Error, ValueError) as e:
        raise InvalidImage(f"{where}: not valid base64 ({e})") from None
    if not data:
        raise InvalidImage(f"{where}: no image data after the comma")
    return decode_image(data, where)


def _download(url: str) -> np.ndarray:
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response:
            data = response.read()
    except urllib.error.HTTPError as e:
        raise InvalidImage(f"{url}: download failed (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise InvalidImage(f"{url}: download failed ({first_line(getattr(e, 'reason', e))})") from None
    return decode_image(data, url)


def fer_dict(face: Face) -> dict:
    """fer's record of one face: its box as [x, y, w, h] and each emotion's rounded probability."""
    return {"box": [int(v) for v in face.box],
            "emotions": {name: round(float(p), DECIMALS)
                         for name, p in zip(face.labels, face.probabilities, strict=True)}}


# ---------------------------------------------------------------------------- FER

class FER:
    """fer's FER: faces and their emotions in images, answered by ferkeras' model.

    The detector is ferkeras' default, BlazeFace, unless the script asks for one of fer's: Haar
    when it passes mtcnn=False or any of cascade_file, scale_factor, min_face_size and
    min_neighbors (which set the cascade as in fer), MTCNN with mtcnn=True; or `detector` names
    one (haar, mtcnn, blazeface, or a Detector). use_tflite=False runs the default shipped
    model's Keras file instead of its int8 TFLite file. offsets and tfserving are accepted and not used (see
    the module's docstring). model: any model name ferkeras takes (a run, .keras, .tflite, a
    Runner), overriding use_tflite; tta: "none", "flip" (default) or "shifts".
    """

    def __init__(self, cascade_file: str | None = None, mtcnn: bool | None = None, tfserving: bool = False,
                 use_tflite: bool = True, scale_factor: float | None = None, min_face_size: int | None = None,
                 min_neighbors: int | None = None, offsets: tuple = (10, 10), *,
                 model: str | os.PathLike | Runner | None = None, tta: str | None = DEFAULT_TTA,
                 detector: str | Detector | None = None):
        # None: not given. fer's Haar settings as fer defaults them, when Haar is asked for.
        haar_asked = mtcnn is False or any(v is not None for v in (cascade_file, scale_factor, min_face_size,
                                                                    min_neighbors))
        scale_factor = FER_SCALE_FACTOR if scale_factor is None else scale_factor
        min_face_size = FER_MIN_FACE_SIZE if min_face_size is None else min_face_size
        min_neighbors = FER_MIN_NEIGHBORS if min_neighbors is None else min_neighbors
        # fer's own checks and messages, so a script that catches ValueError still does
        if scale_factor <= 1.0:
            raise _BadArgument(f"scale_factor {scale_factor}: must be greater than 1.0")
        if min_face_size < 1:
            raise _BadArgument(f"min_face_size {min_face_size}: must be at least 1")
        if min_neighbors < 0:
            raise _BadArgument(f"min_neighbors {min_neighbors}: must be non-negative")
        if not isinstance(offsets, (tuple, list)) or len(offsets) != 2:
            raise _BadArgument(f"offsets {offsets!r}: must be a tuple or list of length 2")
        if tfserving:
            warnings.warn("FER(tfserving=True): ferkeras.compat has no TF Serving client; the local "
                          "model answers instead", stacklevel=2)
        self.tfserving, self.use_tflite, self.offsets = tfserving, use_tflite, tuple(offsets)
        if detector is None:
            detector = ("mtcnn" if mtcnn else
                        HaarDetector(scale_factor, min_neighbors, min_face_size, cascade_file) if haar_asked
                        else DEFAULT_DETECTOR)
        detector = make_detector(detector)
        if model is None:
            model = RECOGNITION_DEFAULT if use_tflite else shipped_dir(RECOGNITION_DEFAULT) / "model.keras"
        self.recognizer = FaceRecognizer(model, detector, tta=tta)
        self.emotions: list[dict] = []  # the last detect_emotions answer with faces, as fer keeps it

    @staticmethod
    def _get_labels() -> dict[int, str]:
        """Class index -> emotion name, in the model's output order (fer's, too)."""
        return dict(enumerate(CLASS_NAMES))

    def find_faces(self, img: np.ndarray, bgr: bool = True, gray_img: np.ndarray | None = None) -> list:
        """Face boxes [x, y, w, h] in an image array (BGR, or gray when bgr is False), left to right."""
        rgb = as_rgb(img, "bgr")
        gray = to_gray(rgb) if gray_img is None else gray_img
        return [list(d.box) for d in self.recognizer.detector(rgb, gray)]

    def detect_emotions(self, img: Any, face_rectangles: Sequence | None = None) -> list[dict]:
        """[{"box": [x, y, w, h], "emotions": {name: p}}] for each face found, or for face_rectangles."""
        rgb = _load_image(img)
        if face_rectangles is None:
            faces = self.recognizer(rgb, color="rgb")
        else:
            found = self._given_faces(rgb, face_rectangles)
            faces = self.recognizer.faces(found, self.recognizer.classify_found([found]))
        emotions = [fer_dict(face) for face in faces]
        if emotions:
            self.emotions = emotions
        return emotions

    def _given_faces(self, rgb: np.ndarray, boxes: Sequence) -> FoundFaces:
        """Crops of the caller's boxes; like fer, a box outside the image is skipped with a warning."""
        gray = to_gray(rgb)
        height, width = gray.shape
        detections = []
        for box in boxes:
            x, y, w, h = (int(v) for v in box)
            if w < 1 or h < 1 or x >= width or y >= height or x + w <= 0 or y + h <= 0:
                warnings.warn(f"face box {[x, y, w, h]}: outside the {width}x{height} image, skipped",
                              stacklevel=3)
                continue
            detections.append(Detection((x, y, w, h)))
        crops = [crop_detection(gray, d, self.recognizer.align) for d in detections]
        empty = np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        return FoundFaces(detections, np.stack(crops) if crops else empty, False)

    def batch_detect_emotions(self, imgs: Sequence) -> list[list[dict]]:
        """detect_emotions of each image, with one model call for all their faces."""
        found = [self.recognizer.find(_load_image(img)) for img in imgs]
        if not found:
            return []
        probabilities = self.recognizer.classify_found(found)
        results, start = [], 0
        for one in found:
            faces = self.recognizer.faces(one, probabilities[start:start + len(one.crops)])
            start += len(one.crops)
            results.append([fer_dict(face) for face in faces])
        return results

    def top_emotion(self, img: Any) -> tuple[str | None, float | None]:
        """The first face's most probable emotion and its (rounded) score, or (None, None)."""
        emotions = self.detect_emotions(img)
        if not emotions:
            return None, None
        scores = emotions[0]["emotions"]
        top = max(scores, key=scores.get)  # ties: the first in label order, as fer's max picks
        return top, scores[top]


def recognizer_of(detector: Any) -> FaceRecognizer:
    """The FaceRecognizer behind a FER (or one given as it is), as Video.analyze takes its detector."""
    if isinstance(detector, FER):
        return detector.recognizer
    if isinstance(detector, FaceRecognizer):
        return detector
    raise FerkerasError(f"Video.analyze: detector must be a ferkeras.compat.FER (got "
                        f"{type(detector).__module__}.{type(detector).__name__})")


