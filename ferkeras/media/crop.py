"""48x48 face crops as FER2013's: the detector's box (or the eyes, where landmarks exist) -> gray pixels."""

from __future__ import annotations

import numpy as np

from ferkeras.media.detect import Box, Detection
from ferkeras.spec import IMAGE_SIZE


def crop_face(gray: np.ndarray, box: Box) -> np.ndarray:
    """The box of a gray image, resized to 48x48 uint8 as FER2013's faces are."""
    import cv2

    x, y, w, h = box
    crop = gray[max(y, 0):y + h, max(x, 0):x + w]
    shrink = crop.shape[0] > IMAGE_SIZE
    return cv2.resize(crop, (IMAGE_SIZE, IMAGE_SIZE),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def crop_detection(gray: np.ndarray, detection: Detection, align: bool = True) -> np.ndarray:
    """The 48x48 crop of one detection: aligned by its eyes when it has landmarks and align is set."""
    return crop_face(gray, detection.box)


def is_face_crop(image: np.ndarray) -> bool:
    """A 48x48 image is taken as a face crop (as in FER2013) and classified without detection."""
    return image.shape[:2] == (IMAGE_SIZE, IMAGE_SIZE)
