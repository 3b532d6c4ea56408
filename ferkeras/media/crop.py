"""48x48 face crops as FER2013's: the detector's box, or a square framed by the eyes and mouth.

Where a detector gives landmarks (mtcnn), the crop is a square sized by the eye distance and the
eye-to-mouth distance, placed where FER2013 puts the eyes and mouth in its 48x48 faces (measured:
bench/detectors.py), and turned so the eyes are level. Without landmarks (haar), the box as is:
Haar's boxes already sit on FER2013's frame (measured there too). A crop lit darker, brighter
or flatter than nearly every training face is brought back to the edge of their range (clamp_light),
and one blurrier than nearly any is sharpened to the edge of their sharpness (clamp_sharpness): the
training faces' FaceRange, which each run records (FER2013's where a model records none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ferkeras.media.detect import Detector
from ferkeras.media.faces import Box, Detection
from ferkeras.spec import IMAGE_SIZE

# FER2013's framing: medians over MTCNN's landmarks of 852 PublicTest faces (bench/detectors.py).
FACE_UNIT = "mean"  # what the side is measured in (SIDE_UNITS): the least spread in FER2013
FACE_SIDE = 2.6  # crop side / FACE_UNIT
EYE_ROW = 0.385  # the eyes' midpoint, down from the crop's top edge, as a fraction of its side
SIDE_UNITS = {  # face sizes from landmarks: yaw shortens the eye distance, pitch the other
    "eye-mouth": "the distance from the eyes' midpoint to the mouth's",
    "eyes": "the distance between the eyes",
    "mean": "the mean of the two",
}
# FER2013's light, FaceRange's default: the 1st and 99th percentiles, over its 28,709 train faces,
# of a face's mean gray level and of its standard deviation (its contrast); tests/test_detect.py
# checks them on the data where it is at hand.
FER2013_MEAN_RANGE = (51.47, 203.61)
FER2013_STD_RANGE = (25.11, 87.34)
# FER2013's sharpness: the 1st percentile, over the same faces, of sharpness() (tests/test_detect.py
# checks it too): a face blurrier than this is sharpened up to it
FER2013_LEAST_SHARPNESS = 0.466
RANGE_PERCENTILES = (1, 99)  # a FaceRange's edges: these percentiles of the training faces
UNSHARP_SIGMA = 1.0  # the blur that unsharp masking takes away, in pixels of the 48x48 crop
UNSHARP_AMOUNTS = np.linspace(0.25, 4.0, 16)  # the amounts tried: the least that reaches the edge wins


def resize_face(crop: np.ndarray) -> np.ndarray:
    """A gray crop resized to 48x48 uint8: area averaging when shrinking (no aliasing), else linear."""
    import cv2

    shrink = crop.shape[0] > IMAGE_SIZE
    return cv2.resize(crop, (IMAGE_SIZE, IMAGE_SIZE),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def crop_face(gray: np.ndarray, box: Box) -> np.ndarray:
    """The box of a gray image, resized to 48x48 uint8 as FER2013's faces are."""
    x, y, w, h = box
    return resize_face(gray[max(y, 0):y + h, max(x, 0):x + w])


def landmark_square(landmarks: np.ndarray, align: bool = True, side: float = FACE_SIDE,
                    eye_row: float = EYE_ROW, unit: str = FACE_UNIT) -> tuple[np.ndarray, float]:
    """The affine map (2, 3) from the image to a square face crop, and the square's side in pixels.

    landmarks: (5, 2) left eye, right eye, nose, mouth left, mouth right (as seen). align: turn the
    square so the eyes are level. side, eye_row, unit: the framing (FACE_SIDE, EYE_ROW, FACE_UNIT).
    """
    import cv2

    left_eye, right_eye, _, mouth_left, mouth_right = np.asarray(landmarks, np.float64)
    eyes, mouth = (left_eye + right_eye) / 2, (mouth_left + mouth_right) / 2
    dx, dy = right_eye - left_eye
    angle = math.degrees(math.atan2(dy, dx)) if align else 0.0
    # Turning by +angle (counter-clockwise as seen) about the eyes levels them.
    matrix = cv2.getRotationMatrix2D((float(eyes[0]), float(eyes[1])), angle, 1.0)
    eyes_to_mouth = matrix[:, :2] @ (mouth - eyes)  # in the levelled frame
    lengths = {"eye-mouth": float(np.hypot(*eyes_to_mouth)), "eyes": float(np.hypot(dx, dy))}
    lengths["mean"] = (lengths["eye-mouth"] + lengths["eyes"]) / 2
    side_px = max(side * lengths[unit], 1.0)
    # The square's top-left corner, in the levelled frame: centred on the face's midline
    # (halfway between the eyes' and the mouth's midpoints), the eyes eye_row down from the top.
    left = eyes[0] + eyes_to_mouth[0] / 2 - side_px / 2
    top = eyes[1] - eye_row * side_px
    matrix[:, 2] -= (left, top)
    return matrix, side_px


def crop_landmarks(gray: np.ndarray, landmarks: np.ndarray, align: bool = True,
                   side: float = FACE_SIDE, eye_row: float = EYE_ROW, unit: str = FACE_UNIT) -> np.ndarray:
    """The 48x48 face framed by its landmarks (and levelled, with align): one warp, then resize_face."""
    import cv2

    matrix, side_px = landmark_square(landmarks, align, side, eye_row, unit)
    size = max(int(round(side_px)), 1)
    matrix[:, :] *= size / side_px  # the square fills exactly size x size pixels
    # The warp is done at the image's own resolution, so shrinking to 48 can average areas; the
    # border repeats the edge pixels where the square runs off the image.
    square = cv2.warpAffine(gray, matrix, (size, size), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    return resize_face(square)


def crop_detection(gray: np.ndarray, detection: Detection, align: bool = True) -> np.ndarray:
    """The 48x48 crop of one detection: framed by its landmarks where it has them (eyes levelled
    with align), else its box as is."""
    if detection.landmarks is None:
        return crop_face(gray, detection.box)
    return crop_landmarks(gray, detection.landmarks, align)


def largest_face_crop(rgb: np.ndarray, gray: np.ndarray, detector: Detector,
                      align: bool = True) -> np.ndarray | None:
    """The 48x48 crop of the largest face the detector finds in an image (Detector.framed: a photo,
    or a face crop of any size), framed as predict frames it; None where it finds none."""
    found = detector.framed(rgb, gray)
    return crop_detection(gray, max(found, key=lambda d: d.area), align) if found else None


@dataclass(frozen=True)
class FaceRange:
    """The light and sharpness that a model's training faces span (RANGE_PERCENTILES of them): a
    crop outside is brought to the edge before the model reads it. The default is FER2013's."""

    mean: tuple[float, float] = FER2013_MEAN_RANGE  # a face's mean gray level
    std: tuple[float, float] = FER2013_STD_RANGE  # its standard deviation: its contrast
    least_sharpness: float = FER2013_LEAST_SHARPNESS  # sharpness(): blurrier faces are sharpened

    def to_dict(self) -> dict:
        """As config.json and metadata.json record it."""
        return {"mean": list(self.mean), "std": list(self.std), "least_sharpness": self.least_sharpness,
                "percentiles": list(RANGE_PERCENTILES)}

    @classmethod
    def spanning(cls, ranges: list[FaceRange]) -> FaceRange:
        """The least range that holds each of these: a face inside any of them stays as it is."""
        return cls((min(r.mean[0] for r in ranges), max(r.mean[1] for r in ranges)),
                   (min(r.std[0] for r in ranges), max(r.std[1] for r in ranges)),
                   min(r.least_sharpness for r in ranges))

    @classmethod
    def from_dict(cls, record: object) -> FaceRange | None:
        """The range a record (to_dict's) holds; None where it is missing or malformed."""
        try:
            mean, std = tuple(map(float, record["mean"])), tuple(map(float, record["std"]))
            least = float(record["least_sharpness"])
        except (TypeError, KeyError, ValueError):
            return None
        well_formed = len(mean) == 2 == len(std) and mean[0] <= mean[1] and 0 <= std[0] <= std[1]
        return cls(mean, std, least) if well_formed and least >= 0 else None


def face_range(faces: np.ndarray, chunk: int = 4096) -> FaceRange:
    """The FaceRange of training faces (N, 48, 48[, 1]): RANGE_PERCENTILES of their mean gray level
    and standard deviation, and the lower percentile of their sharpness (read chunk faces at a time,
    so that a large data set costs no float copy of itself)."""
    means, stds, sharp = [], [], []
    for start in range(0, len(faces), chunk):
        part = faces[start:start + chunk]
        flat = part.reshape(len(part), -1).astype(np.float32)
        means.append(flat.mean(axis=1))
        stds.append(flat.std(axis=1))
        sharp.append(sharpness(part))
    low, high = RANGE_PERCENTILES

    def edges(values: list[np.ndarray]) -> tuple[float, float]:
        return tuple(round(float(v), 2) for v in np.percentile(np.concatenate(values), [low, high]))

    return FaceRange(edges(means), edges(stds), round(float(np.percentile(np.concatenate(sharp), low)), 3))


def clamp_light(crops: np.ndarray, mean_range: tuple[float, float] = FER2013_MEAN_RANGE,
                std_range: tuple[float, float] = FER2013_STD_RANGE) -> np.ndarray:
    """uint8 faces (N, 48, 48[, 1]) with each one's mean and contrast moved, linearly, to the nearest
    edge of the training faces' range where they lie outside it; the others as they are."""
    if not len(crops):
        return crops
    flat = crops.reshape(len(crops), -1).astype(np.float32)
    mean = flat.mean(axis=1, keepdims=True)
    std = flat.std(axis=1, keepdims=True)
    target_mean, target_std = np.clip(mean, *mean_range), np.clip(std, *std_range)
    outside = ((target_mean != mean) | (target_std != std))[:, 0]
    if not outside.any():
        return crops
    # a flat crop (std 0) becomes flat gray at the target mean, never a division by zero
    moved = (flat - mean) * (target_std / np.maximum(std, 1e-3)) + target_mean
    light = crops.reshape(len(crops), -1).copy()
    light[outside] = np.clip(np.rint(moved[outside]), 0, 255).astype(np.uint8)
    return light.reshape(crops.shape)


def sharpness(faces: np.ndarray) -> np.ndarray:
    """Each face's fine detail against its contrast: the standard deviation of its Laplacian over
    its own (N,), for faces (N, 48, 48[, 1]); blur lowers it, light does not move it."""
    import cv2

    flat = faces.reshape(len(faces), IMAGE_SIZE, IMAGE_SIZE).astype(np.float32)
    laplacian = np.stack([cv2.Laplacian(face, cv2.CV_32F) for face in flat])
    return laplacian.reshape(len(flat), -1).std(axis=1) / (flat.reshape(len(flat), -1).std(axis=1) + 1e-3)


def clamp_sharpness(crops: np.ndarray, least: float = FER2013_LEAST_SHARPNESS) -> np.ndarray:
    """uint8 faces (N, 48, 48[, 1]) blurrier than the training faces' least sharpness unsharp-masked
    by the least amount (UNSHARP_AMOUNTS) that brings them to it, or the most; the others as they are."""
    import cv2

    if not len(crops):
        return crops
    blurry = np.flatnonzero(sharpness(crops) < least)
    if not len(blurry):
        return crops
    faces = crops.reshape(len(crops), IMAGE_SIZE, IMAGE_SIZE)[blurry].astype(np.float32)
    detail = faces - np.stack([cv2.GaussianBlur(face, (0, 0), UNSHARP_SIGMA) for face in faces])
    # every amount's face at once (N, amounts, 48, 48), clipped as it would be shown
    trials = np.clip(faces[:, None] + UNSHARP_AMOUNTS[None, :, None, None] * detail[:, None], 0, 255)
    reached = (sharpness(trials.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)) >= least).reshape(len(faces), -1)
    # the least amount that reaches it, else the most
    chosen = np.where(reached.any(axis=1), reached.argmax(axis=1), len(UNSHARP_AMOUNTS) - 1)
    sharpened = trials[np.arange(len(faces)), chosen]
    out = crops.reshape(len(crops), IMAGE_SIZE, IMAGE_SIZE).copy()
    out[blurry] = np.rint(sharpened)
    return out.reshape(crops.shape)


def is_face_crop(image: np.ndarray) -> bool:
    """A 48x48 image is taken as a face crop (as in FER2013) and classified without detection."""
    return image.shape[:2] == (IMAGE_SIZE, IMAGE_SIZE)
