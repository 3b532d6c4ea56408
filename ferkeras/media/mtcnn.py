"""MTCNN (the `mtcnn` package, on TensorFlow) behind the Detector interface: boxes and five landmarks.

The package ships its three networks' weights in its wheel (mtcnn/assets/weights/*.lz4); they are
loaded from there by absolute path, so nothing is downloaded and no stray pnet.lz4 in the current
folder is picked up instead.
"""

from __future__ import annotations

import functools

import numpy as np

from ferkeras.errors import FerkerasError, import_tensorflow
from ferkeras.media.detect import Detector
from ferkeras.media.faces import Detection

# mtcnn's keypoint names, in Detection's landmark order. Its "left_eye" is the eye on the left of
# the image (the person's right eye): checked on grace_hopper.jpg, where it has the smaller x.
LANDMARK_KEYS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
# mtcnn 1.0 sizes its image pyramid as if min_face_size were 20: a larger value makes its last
# levels smaller than PNet's 12-pixel window, and detection fails silently (no faces). Larger
# minimum faces are found by shrinking the image by PYRAMID_FACE / min_face_size instead.
PYRAMID_FACE = 20
MIN_CONFIDENCE = 0.8  # ONet's score, mtcnn's default: 0.9 lost faces and spared no false ones
# (bench/detectors.py)


class MTCNNDetector(Detector):
    """MTCNN: boxes clipped to the image, a confidence, and five landmarks per face.

    min_face_size: the smallest face side found, in pixels (20: mtcnn's own default, and the
    largest its pyramid takes without shrinking the image, which costs landmark precision; Haar's
    is 24). threshold: the least confidence kept (0-1).
    """

    name = "mtcnn"

    def __init__(self, min_face_size: int = PYRAMID_FACE, threshold: float = MIN_CONFIDENCE):
        if min_face_size < 12:
            raise FerkerasError(f"min_face_size {min_face_size}: must be >= 12 (MTCNN's 12-pixel window)")
        if not 0 <= threshold < 1:
            raise FerkerasError(f"threshold {threshold}: must be in [0, 1)")
        self.min_face_size, self.threshold = int(min_face_size), float(threshold)
        self.network = _network()

    def __call__(self, rgb: np.ndarray, gray: np.ndarray | None = None) -> list[Detection]:
        """Faces in an RGB uint8 image, left to right, with landmarks (left eye first, as seen)."""
        import cv2

        height, width = rgb.shape[:2]
        shrink = min(1.0, PYRAMID_FACE / self.min_face_size)
        small = (rgb if shrink == 1 else
                 cv2.resize(rgb, (max(round(width * shrink), 1), max(round(height * shrink), 1)),
                            interpolation=cv2.INTER_AREA))
        if min(small.shape[:2]) < 12:  # smaller than PNet's window: no face can be found
            return []
        # TF's "local rendezvous is aborting" warning, when no face is found, is kept off the
        # terminal by TF_CPP_MIN_LOG_LEVEL, which _network() sets before TensorFlow loads.
        found = self.network.detect_faces(np.ascontiguousarray(small),
                                          min_face_size=min(self.min_face_size, PYRAMID_FACE),
                                          threshold_onet=self.threshold)
        detections = []
        for face in found:
            x, y, w, h = (v / shrink for v in face["box"])
            x0, y0 = max(int(round(x)), 0), max(int(round(y)), 0)
            x1, y1 = min(int(round(x + w)), width), min(int(round(y + h)), height)
            if x1 <= x0 or y1 <= y0:
                continue
            landmarks = np.array([face["keypoints"][key] for key in LANDMARK_KEYS], np.float32) / shrink
            detections.append(Detection((x0, y0, x1 - x0, y1 - y0), float(face["confidence"]), landmarks))
        return sorted(detections, key=lambda d: (d.box[0], d.box[1]))


@functools.lru_cache(maxsize=1)
def _network():
    """The three networks, built once per process (about 15 s with TensorFlow's import)."""
    from importlib import resources

    import_tensorflow()  # its start-up lines hidden, and its log level set
    from mtcnn import MTCNN
    from mtcnn.stages import StageONet, StagePNet, StageRNet

    weights = resources.files("mtcnn.assets.weights")
    return MTCNN(stages=[stage(weights=str(weights / name)) for stage, name in
                         ((StagePNet, "pnet.lz4"), (StageRNet, "rnet.lz4"), (StageONet, "onet.lz4"))])
