"""Drawings onto a copy of an image: each face's box, track id and label, and its probability bars.

The annotator knows nothing of models: a face is anything with box, label, score, labels,
probabilities and track_id (ferkeras.predict.Face).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BOX_COLOR = (0, 255, 0)  # RGB
BAR_COLOR = (255, 200, 0)
TEXT_COLOR = (0, 0, 0)
PANEL_COLOR = (255, 255, 255)


def draw_faces(rgb: np.ndarray, faces: Sequence, bars: bool = False) -> np.ndarray:
    """A copy of an RGB image with each face's box and label (with its probability) drawn on it.

    bars: also a panel of the seven probabilities beside each box (video annotation).
    """
    import cv2

    out = np.ascontiguousarray(rgb.copy())
    thickness = max(1, round(min(out.shape[:2]) / 250))
    for face in faces:
        x, y, w, h = face.box
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), BOX_COLOR, thickness)
        track = f"#{face.track_id} " if getattr(face, "track_id", None) is not None else ""
        text = f"{track}{face.label} {face.score:.2f}"
        scale = max(0.3, w / 220)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = y - th - base - 2 if y - th - base - 2 >= 0 else y + h  # above the box, else below
        cv2.rectangle(out, (x, top), (x + tw + 2, top + th + base + 2), BOX_COLOR, -1)
        cv2.putText(out, text, (x + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOR,
                    thickness, cv2.LINE_AA)
        if bars:
            _draw_bars(out, face, thickness)
    return out


def _draw_bars(out: np.ndarray, face, thickness: int) -> None:
    """The seven probabilities as labelled bars, right of the box (left of it at the right edge)."""
    import cv2

    x, y, w, h = face.box
    row = max(10, h // 9)  # one bar per row, 7 rows fill about the box's height
    scale = row / 30
    label_width = cv2.getTextSize("surprise", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] + 4
    width = label_width + max(40, w // 2)
    left = x + w + 4 if x + w + 4 + width <= out.shape[1] else max(0, x - 4 - width)
    height = row * len(face.labels) + 4
    cv2.rectangle(out, (left, y), (left + width, y + height), PANEL_COLOR, -1)
    for i, (name, p) in enumerate(zip(face.labels, face.probabilities, strict=True)):
        top = y + 2 + i * row
        cv2.putText(out, name, (left + 2, top + row - 3), cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOR,
                    1, cv2.LINE_AA)
        span = int(round(float(p) * (width - label_width - 4)))
        if span > 0:
            cv2.rectangle(out, (left + label_width, top + 2), (left + label_width + span, top + row - 2),
                          BAR_COLOR, -1)
