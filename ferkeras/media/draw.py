"""Drawings onto a copy of an image: each face's box, track id and label, and its probability bars.

The annotator knows nothing of models: a face is anything with box, label, score, labels,
probabilities and track_id (ferkeras.media.faces.Face).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ferkeras.errors import FerkerasError
from ferkeras.media.images import COLOR_ORDERS

BOX_COLOR = (0, 255, 0)  # RGB; every colour but the bars' is the same in BGR
BAR_COLOR = (255, 200, 0)
BAR_EDGE_COLOR = (150, 150, 150)
MIN_BAR_WIDTH = 16  # px: the least that still shows a probability at a glance
TEXT_COLOR = (0, 0, 0)
PANEL_COLOR = (255, 255, 255)


def text_scale(shape: tuple[int, ...]) -> float:
    """OpenCV font scale for an image: from its size, not the face's, so text stays small beside big faces.

    0.35 (8 px letters) on 320x240, about 0.6 on 640x480, 1.35 on 1080p; never under 0.35, the
    least at which Hershey letters stay legible.
    """
    return max(0.35, min(shape[:2]) / 800)


def draw_faces(image: np.ndarray, faces: Sequence, bars: bool = False, color: str = "rgb") -> np.ndarray:
    """A copy of an RGB image (or BGR, color="bgr") with each face's box and label (with its
    probability) drawn on it.

    bars: also a panel of the seven probabilities beside each box (video annotation). A video's
    BGR frame is drawn on as it is: flipping its channels twice cost 2 ms a 640x480 frame.
    """
    import cv2

    if color not in COLOR_ORDERS:
        raise FerkerasError(f"color {color!r}: must be one of {', '.join(COLOR_ORDERS)}")
    out = np.array(image, order="C")  # a contiguous copy, as OpenCV draws
    font = cv2.FONT_HERSHEY_SIMPLEX
    thickness = max(1, round(min(out.shape[:2]) / 250))
    base_scale = text_scale(out.shape)
    for face in faces:
        x, y, w, h = face.box
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), BOX_COLOR, thickness)
        track = f"#{face.track_id} " if getattr(face, "track_id", None) is not None else ""
        text = f"{track}{face.label} {face.score:.2f}"
        scale = min(max(base_scale, w / 220), 1.3 * base_scale)  # a little larger on a big face
        weight = max(1, round(scale * 2))
        (tw, th), base = cv2.getTextSize(text, font, scale, weight)
        top = y - th - base - 2 if y - th - base - 2 >= 0 else y + h  # above the box, else below
        left = max(0, min(x, out.shape[1] - tw - 3))  # inside the image at its right edge
        cv2.rectangle(out, (left, top), (left + tw + 2, top + th + base + 2), BOX_COLOR, -1)
        cv2.putText(out, text, (left + 1, top + th + 1), font, scale, TEXT_COLOR, weight, cv2.LINE_AA)
        if bars:
            _draw_bars(out, face, base_scale, BAR_COLOR[::-1] if color == "bgr" else BAR_COLOR)
    return out


def _draw_bars(out: np.ndarray, face, scale: float, bar_color: tuple[int, int, int]) -> None:
    """The seven probabilities as labelled bars beside the box: right of it, else left, else on the
    side with most room (then over the box's edge rather than off the image)."""
    import cv2

    x, y, w, h = face.box
    image_h, image_w = out.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    weight = max(1, round(scale * 1.5))
    label_w, label_h = cv2.getTextSize(max(face.labels, key=len), font, scale, weight)[0]
    pad = max(2, label_h // 3)
    row = label_h + 2 * pad
    height = row * len(face.labels) + pad
    room_right, room_left = image_w - (x + w) - 2 * pad, x - 2 * pad  # beside the box, less a gap
    names_w = 3 * pad + label_w
    # bars as wide as the longest name, shorter (down to MIN_BAR_WIDTH) rather than cover the face
    bar_w = int(np.clip(max(room_right, room_left) - names_w, MIN_BAR_WIDTH, label_w))
    width = names_w + bar_w
    on_right = room_right >= width or (room_left < width and room_right >= room_left)
    left = x + w + pad if on_right else x - pad - width
    left = min(max(0, left), max(0, image_w - width))
    top = min(max(0, y), max(0, image_h - height))
    panel = out[top:top + height, left:left + width]
    # a translucent panel: the frame stays visible behind the numbers
    panel[:] = (0.25 * panel + 0.75 * np.array(PANEL_COLOR)).astype(out.dtype)
    for i, (name, p) in enumerate(zip(face.labels, face.probabilities, strict=True)):
        row_top = top + pad + i * row
        cv2.putText(out, name, (left + pad, row_top + pad + label_h), font, scale, TEXT_COLOR, weight,
                    cv2.LINE_AA)
        bar_left = left + pad + label_w + pad
        span = int(round(float(np.clip(p, 0, 1)) * bar_w))
        cv2.rectangle(out, (bar_left, row_top + pad), (bar_left + bar_w, row_top + row - pad),
                      BAR_EDGE_COLOR, 1)
        if span > 0:
            cv2.rectangle(out, (bar_left, row_top + pad), (bar_left + span, row_top + row - pad),
                          bar_color, -1)
