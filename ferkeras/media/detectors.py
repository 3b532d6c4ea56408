"""A face detector by name, with its options, and the one it falls back on.

BlazeFace, the default, finds more faces than Haar and MTCNN in whole photos, in a fraction of
their time (bench/detectors.py). Where its search of a still image (Detector.framed) finds no face,
Haar's cascade searches the whole image: on bench/pipeline.py's photos BlazeFace missed 14-28% of
the faces, and Haar found about half of those, read about as well as the rest, for 1% more false
faces on images without one (bench/README.md, "A second detector where BlazeFace finds none").
Video frames never fall back: their searches are not framed().
"""

from __future__ import annotations

from ferkeras.errors import FerkerasError
from ferkeras.media.detect import DETECTORS, Detector, HaarDetector

DEFAULT_DETECTOR = "blazeface"  # Haar and MTCNN stay one flag away (--detector haar)
# The detector tried where the default finds no face in a still image: Haar, not MTCNN, which
# found a few more but imports TensorFlow (4 s and its memory) into processes that otherwise
# run on LiteRT alone.
FALLBACK_DETECTOR = "haar"
# Each detector's name for the smallest face it searches for (`--min-face`).
MIN_FACE_OPTION = {"haar": "min_size", "mtcnn": "min_face_size", "blazeface": "min_face_size"}
_DEFAULT = object()  # make_detector's fallback: the detector's own default


def make_detector(name: str | Detector = DEFAULT_DETECTOR, min_face: int | None = None,
                  threads: int | None = None, fallback: str | None | object = _DEFAULT,
                  **options) -> Detector:
    """A detector by name (haar, mtcnn, blazeface), with its options; a Detector is returned as it is.

    min_face: the smallest face to search for, in pixels, whatever the detector calls it.
    threads: blazeface's LiteRT threads (None: one per core); the others have no such setting.
    fallback: the detector (by name) that Detector.framed tries where this one finds no face;
    blazeface's is FALLBACK_DETECTOR, the others have none; None: none.
    """
    if isinstance(name, Detector):
        return name
    if min_face is not None and min_face < 1:
        raise FerkerasError(f"--min-face {min_face}: must be at least 1 pixel")
    if min_face is not None and name in MIN_FACE_OPTION:
        options[MIN_FACE_OPTION[name]] = min_face
    if name == "haar":
        detector: Detector = HaarDetector(**options)
    elif name == "mtcnn":
        from ferkeras.media.mtcnn import MTCNNDetector  # lazy: it imports TensorFlow

        detector = MTCNNDetector(**options)
    elif name == "blazeface":
        from ferkeras.media.blazeface import BlazeFaceDetector

        detector = BlazeFaceDetector(threads=threads, **options)
    else:
        raise FerkerasError(f"--detector {name}: not one of {', '.join(DETECTORS)}")
    if fallback is _DEFAULT:
        fallback = FALLBACK_DETECTOR if name == DEFAULT_DETECTOR else None
    if fallback is not None:
        detector.fallback = make_detector(fallback, min_face=min_face, fallback=None)
    return detector
