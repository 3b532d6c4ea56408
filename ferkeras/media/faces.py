"""The face records every stage shares, and their one JSON shape.

Detection is where a detector found a face (box, confidence, landmarks); Face is a face with what
the model says of it (and its track, in a video). Face.to_dict is the record that `predict --json`
gives for images, that a video's JSON lines give for each face of each frame (with the frame's
index and time beside it), and that `ferkeras serve` answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ferkeras.spec import CLASS_NAMES

Box = tuple[int, int, int, int]  # x, y, width, height in the image's pixels
# Detection's landmarks, in order; left and right as seen in the image. BlazeFace gives one mouth
# point, which stands for both corners.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass
class Detection:
    """One face found: its box, the detector's confidence, and landmarks where the detector gives them.

    landmarks: (5, 2) float x, y in the image, in LANDMARK_NAMES' order, or None.
    """

    box: Box
    score: float = 1.0
    landmarks: np.ndarray | None = None

    @property
    def area(self) -> int:
        """The box's area in pixels: the largest face is the one an image's answer is read from."""
        return self.box[2] * self.box[3]


@dataclass
class Face:
    """One face: where it is and what the model says, kept together so they never drift apart."""

    box: Box
    probabilities: np.ndarray  # (7,), in labels order
    labels: tuple[str, ...] = CLASS_NAMES
    track_id: int | None = None  # the same face across a video's frames (ferkeras.video)
    landmarks: np.ndarray | None = None  # (5, 2) from detectors that give them

    @property
    def label(self) -> str:
        """The most probable expression."""
        return self.labels[int(np.argmax(self.probabilities))]

    @property
    def score(self) -> float:
        """The probability of the most probable expression."""
        return float(np.max(self.probabilities))

    def to_dict(self) -> dict:
        """The one JSON shape of a face: box {x, y, width, height}, label, score, every label's
        probability (unrounded), landmarks {left_eye: [x, y], ...} when the detector gave them,
        and track_id in a video."""
        x, y, w, h = (int(v) for v in self.box)
        record = {"box": {"x": x, "y": y, "width": w, "height": h}, "label": self.label,
                  "score": self.score,
                  "probabilities": {name: float(p) for name, p in zip(self.labels, self.probabilities,
                                                                       strict=True)}}
        if self.landmarks is not None:
            record["landmarks"] = {name: [round(float(px), 2), round(float(py), 2)]
                                   for name, (px, py) in zip(LANDMARK_NAMES, self.landmarks, strict=True)}
        if self.track_id is not None:
            record["track_id"] = int(self.track_id)
        return record
