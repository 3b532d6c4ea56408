"""Face detectors behind one interface: an RGB image in, a list of Detection records out.

`haar` is OpenCV's frontal-face Haar cascade: no landmarks. `mtcnn` (ferkeras.media.mtcnn) is the
`mtcnn` package's network: finds turned and small faces, and gives five landmarks that let the
crop be aligned by the eyes. `blazeface` (ferkeras.media.blazeface) is MediaPipe's BlazeFace in
LiteRT: fast on whole images, with eyes, nose and mouth. The records (Detection) are
ferkeras.media.faces'.
"""

from __future__ import annotations

import os

import numpy as np

from ferkeras.errors import FerkerasError
from ferkeras.media.faces import Box, Detection
from ferkeras.media.images import to_gray

FACE_CASCADE = "haarcascade_frontalface_default.xml"  # the frontal-face cascade OpenCV ships
MIN_FACE = 24  # pixels: the cascade's own window; smaller faces are not found
DETECTORS = ("haar", "mtcnn", "blazeface")
NEAR_MARGIN = 0.5  # Detector.near: a tracked box widened by half its size on every side
NEAR_SCALE = 1.5  # ... searched for faces from 1/1.5 to 1.5 times its size
# Detector.framed: an image with no face found is searched again in a border of its mean colour,
# this fraction of its longer side wide. A face that fills its image (a crop of any size but
# 48x48) has no margin, and detectors need one: BlazeFace found 82-84% of 500 PublicTest faces
# enlarged to 64-224 px, and 96% of them framed so (bench/detectors.py --parts crops).
FRAME_MARGIN = 0.25

class Detector:
    """Finds faces: detector(rgb, gray=None) -> detections, left to right."""

    name = "detector"
    fallback: Detector | None = None  # framed()'s second detector, where this one finds no face

    def __call__(self, rgb: np.ndarray, gray: np.ndarray | None = None) -> list[Detection]:
        """Faces in an RGB uint8 image (gray: the same image in gray, if the caller has it)."""
        raise NotImplementedError

    def framed(self, rgb: np.ndarray, gray: np.ndarray) -> list[Detection]:
        """Faces in a still image: in the whole image; where none is found, those in_border finds;
        where still none, those the fallback detector finds in the whole image (its own search in a
        border found no more faces in bench/pipeline.py's photos, and tripled a faceless frame's
        cost)."""
        found = self(rgb, gray) or self.in_border(rgb, gray)
        return found or (self.fallback(rgb, gray) if self.fallback is not None else [])

    def in_border(self, rgb: np.ndarray, gray: np.ndarray) -> list[Detection]:
        """Faces about the image's size found in it set in a border of its mean colour
        (FRAME_MARGIN), their boxes clipped to the image: a face that fills its image."""
        import cv2

        height, width = gray.shape
        pad = max(1, round(FRAME_MARGIN * max(height, width)))

        def border(image: np.ndarray) -> np.ndarray:
            fill = image.reshape(-1, 1 if image.ndim == 2 else image.shape[2]).mean(axis=0)
            return cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT,
                                      value=[float(v) for v in fill])

        framed = []
        # A face that fills the image is all that is searched for: BlazeFace's whole-image pass
        # alone, not the squares and deeper levels that an image with no face costs it.
        for d in self._search_framed(border(rgb), border(gray), max(height, width)):
            x, y, w, h = d.box[0] - pad, d.box[1] - pad, d.box[2], d.box[3]
            if not (0 <= x + w / 2 < width and 0 <= y + h / 2 < height):
                continue  # centred in the border: not a face of this image
            left, top = max(x, 0), max(y, 0)
            box = (left, top, min(x + w, width) - left, min(y + h, height) - top)
            landmarks = None if d.landmarks is None else d.landmarks - (pad, pad)
            framed.append(Detection(box, d.score, landmarks))
        return framed

    def near(self, rgb: np.ndarray, gray: np.ndarray, boxes: list[Box]) -> list[Detection]:
        """Faces searched for only around known boxes (a video's tracks), each region on its own.

        A face moves and grows little between frames, so each region is its box widened by
        NEAR_MARGIN on every side, searched for faces of NEAR_SCALE times its size at most:
        a fraction of the work of searching the whole frame for faces of any size.
        """
        found: list[Detection] = []
        height, width = gray.shape
        for x, y, w, h in boxes:
            pad_x, pad_y = int(w * NEAR_MARGIN), int(h * NEAR_MARGIN)
            left, top = max(0, x - pad_x), max(0, y - pad_y)
            right, bottom = min(width, x + w + pad_x), min(height, y + h + pad_y)
            if right - left < MIN_FACE or bottom - top < MIN_FACE:
                continue
            for d in self._search(rgb[top:bottom, left:right], gray[top:bottom, left:right], max(w, h)):
                bx, by, bw, bh = d.box
                landmarks = None if d.landmarks is None else d.landmarks + (left, top)
                candidate = Detection((bx + left, by + top, bw, bh), d.score, landmarks)
                if unfound([candidate.box], found, 0.3):
                    found.append(candidate)  # two tracks' regions can hold the same face
        return sorted(found, key=lambda d: (d.box[0], d.box[1]))

    def follow(self, rgb: np.ndarray, gray: np.ndarray, boxes: list[Box]) -> list[Detection]:
        """A whole-frame search in a video whose tracked faces are these boxes.

        A detector whose search for small faces costs most of its time (BlazeFace's squares) may
        leave that search out here, keep the tracked faces by searching near them, and leave new
        small faces to the next full search; this one searches the whole frame as __call__ does.
        """
        return self(rgb, gray)

    def _search(self, rgb: np.ndarray, gray: np.ndarray, size: int) -> list[Detection]:
        """Faces in a region around a face of about this size; detectors may narrow the sizes."""
        return self(rgb, gray)

    def _search_framed(self, rgb: np.ndarray, gray: np.ndarray, size: int) -> list[Detection]:
        """framed's search of the bordered image for a face of about this size: _search's, unless a
        detector needs more evidence there."""
        return self._search(rgb, gray, size)


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
        # Its own classifier (15 ms to load): detectMultiScale keeps scratch state in the object,
        # and two threads calling one classifier crash or mix up boxes (serve's workers did).
        self.cascade = _cascade(str(cascade_file) if cascade_file else None)

    def __call__(self, rgb: np.ndarray, gray: np.ndarray | None = None) -> list[Detection]:
        """Frontal faces, left to right."""
        return self._detect(to_gray(rgb) if gray is None else gray, self.min_size, 0)

    def _search(self, rgb: np.ndarray, gray: np.ndarray, size: int) -> list[Detection]:
        """Only faces of about this size: the cascade then skips most of its scales."""
        return self._detect(gray, max(self.min_size, int(size / NEAR_SCALE)), int(size * NEAR_SCALE))

    def _detect(self, gray: np.ndarray, min_size: int, max_size: int) -> list[Detection]:
        boxes = self.cascade.detectMultiScale(gray, scaleFactor=self.scale_factor,
                                              minNeighbors=self.min_neighbors,
                                              minSize=(min_size, min_size), maxSize=(max_size, max_size))
        return [Detection(box) for box in sorted((tuple(int(v) for v in b) for b in boxes),
                                                 key=lambda b: (b[0], b[1]))]


def unfound(boxes: list[Box], detections: list[Detection], threshold: float) -> list[Box]:
    """The boxes that no detection overlaps by IoU threshold or more (a face not found again)."""
    if not detections:
        return list(boxes)
    return [box for box in boxes if iou([box], [d.box for d in detections]).max() < threshold]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in a (N, 4) with every box in b (M, 4), as x, y, w, h."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    left = np.maximum(a[:, None, 0], b[None, :, 0])
    top = np.maximum(a[:, None, 1], b[None, :, 1])
    right = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    bottom = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


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
