"""Face ids across frames, and each face's probabilities smoothed over time.

IoUTracker matches each frame's boxes to the tracks of the frames before by overlap (the
Hungarian assignment of scipy), which is what faces in a video need: they move little between
frames and rarely cross. bench/tracking.py measures it against the `trackers` package's ByteTrack.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ferkeras.errors import FerkerasError
from ferkeras.media.detect import iou

Box = tuple[int, int, int, int]


class IoUTracker:
    """Gives each box an id that persists while it overlaps its track's last box.

    min_iou: the least overlap that continues a track; max_missed: frames a track survives
    unseen (a missed detection, a blink) before its id is retired.
    """

    def __init__(self, min_iou: float = 0.3, max_missed: int = 10):
        self.min_iou, self.max_missed = min_iou, max_missed
        self.boxes: dict[int, Box] = {}
        self.missed: dict[int, int] = {}
        self.next_id = 1

    def update(self, boxes: Sequence[Box]) -> list[int]:
        """The track id of each box of this frame, in order; unmatched boxes start new tracks."""
        from scipy.optimize import linear_sum_assignment

        ids = list(self.boxes)
        assigned: list[int | None] = [None] * len(boxes)
        if ids and len(boxes):
            overlap = iou(np.array(boxes), np.array([self.boxes[i] for i in ids]))
            rows, cols = linear_sum_assignment(-overlap)
            for r, c in zip(rows, cols, strict=True):
                if overlap[r, c] >= self.min_iou:
                    assigned[r] = ids[c]
        for track in ids:
            self.missed[track] = 0 if track in assigned else self.missed[track] + 1
            if self.missed[track] > self.max_missed:
                del self.boxes[track], self.missed[track]
        for i, box in enumerate(boxes):
            if assigned[i] is None:
                assigned[i] = self.next_id
                self.missed[self.next_id] = 0
                self.next_id += 1
            self.boxes[assigned[i]] = tuple(box)
        return assigned


class Smoother:
    """Exponential moving average of each track's probabilities: p = a * new + (1 - a) * p.

    alpha 1 is no smoothing; smaller alphas steady the label on a still face and follow a real
    change of expression later (bench/smoothing.py measures both).
    """

    def __init__(self, alpha: float = 1.0):
        if not 0 < alpha <= 1:
            raise FerkerasError(f"--smooth {alpha:g}: must be in (0, 1] (1: no smoothing)")
        self.alpha = alpha
        self.state: dict[int, np.ndarray] = {}

    def update(self, track_id: int, probabilities: np.ndarray) -> np.ndarray:
        """The smoothed probabilities of a track, after this frame's."""
        previous = self.state.get(track_id)
        current = probabilities if previous is None else (
            self.alpha * probabilities + (1 - self.alpha) * previous)
        self.state[track_id] = current
        return current
