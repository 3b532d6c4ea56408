"""Face detectors behind one interface: an RGB image in, a list of Detection records out.

`haar` is OpenCV's frontal-face Haar cascade: fast, no landmarks. `mtcnn` (ferkeras.media.mtcnn)
is the `mtcnn` package's network: slower, finds turned and small faces, and gives five landmarks
that let the crop be aligned by the eyes.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from ferkeras.errors import FerkerasError
from ferkeras.media.images import to_gray

FACE_CASCADE = "haarcascade_frontalface_default.xml"  # the frontal-face cascade OpenCV ships
MIN_FACE = 24  # pixels: the cascade's own window; smaller faces are not found
DETECTORS = ("haar", "mtcnn")

Box = tuple[int, int, int, int]  # x, y, width, height in the image's pixels


@dataclass
class Detection:
    """One face found: its box, the detector's confidence, and landmarks where the detector gives them.

    landmarks: (5, 2) float x, y in the image: left eye, right eye, nose, mouth left, mouth right
    (left and right as seen in the image), or None.
    """

    box: Box
    score: float = 1.0
    landmarks: np.ndarray | None = None


class Detector:
    """Finds faces: detector(rgb, gray=None) -> detections, left to right."""

    name = "detector"

    def __call__(self, rgb: np.ndarray, gray: np.ndarray | None = None) -> list[Detection]:
        """Faces in an RGB uint8 image (gray: the same image in gray, if the caller has it)."""
        raise NotImplementedError


class HaarDetector(Detector):
    """OpenCV's Haar cascade; the defaults are OpenCV's and fer's (scale 1.1, 5 neighbours)."""

    name = "haar"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = MIN_FACE,
                 cascade_file: str | os.PathLike | None = None):
        if scale_factor <= 1:
            raise FerkerasError(f"scale_factor {scale_factor}: must be above 1")
        if min_neighbors < 0 or min_size < 1:
            raise FerkerasError(f"min_neighbors {min_neighbors}, min_size {min_size}: must be >= 0 and >= 1")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size
        self.cascade = _cascade(str(cascade_file) if cascade_file else None)

    def __call__(self, rgb: np.ndarray, gray: np.ndarray | None = None) -> list[Detection]:
        """Frontal faces, left to right."""
        gray = to_gray(rgb) if gray is None else gray
        boxes = self.cascade.detectMultiScale(gray, scaleFactor=self.scale_factor,
                                              minNeighbors=self.min_neighbors,
                                              minSize=(self.min_size, self.min_size))
        return [Detection(box) for box in sorted((tuple(int(v) for v in b) for b in boxes),
                                                 key=lambda b: (b[0], b[1]))]


@functools.lru_cache(maxsize=4)
def _cascade(cascade_file: str | None):
    import cv2

    if not hasattr(cv2, "CascadeClassifier"):
        raise FerkerasError(f"OpenCV {cv2.__version__} has no Haar cascade face detector (OpenCV 5 "
                            "moved it out); install opencv-python-headless<5")
    path = cascade_file or os.path.join(cv2.data.haarcascades, FACE_CASCADE)
    if not os.path.isfile(path):
        raise FerkerasError(f"{path}: no such Haar cascade file")
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FerkerasError(f"{path}: not a Haar cascade (OpenCV cannot load it)")
    return cascade


def detect_faces(gray: np.ndarray) -> list[Box]:
    """Frontal faces in a gray uint8 image with the default Haar cascade, left to right."""
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    return [d.box for d in HaarDetector()(rgb, gray)]
