"""fer's API on ferkeras' model: `from ferkeras.compat import FER, Video` for `from fer import FER, Video`.

A thin layer, matched to the PyPI `fer` package 25.10.3: FaceRecognizer finds and classifies
the faces, ferkeras.video reads and analyses the frames, ferkeras.media decodes and draws; this
module only takes fer's arguments and gives fer's answers: `[{"box": [x, y, w, h], "emotions":
{"angry": p, ..., "neutral": p}}]`, probabilities rounded to 2 places as fer rounds them, and
fer's file names under Video's outdir. The native API (ferkeras.predict) gives full precision.

Where ferkeras does otherwise, on purpose:
- The model is ferkeras' (the shipped ensemble's int8 file, ferkeras' default for photos;
  `use_tflite=False`: its Keras twin; `model="shipped"`: the reference architecture's), which
  classifies the detector's box as FER2013 frames a face (48x48 gray, flip test-time
  augmentation): `offsets`, fer's margin for its own 64x64 model, is checked and not used.
  `tfserving=True` warns and runs the local model. Extra keyword-only arguments: `model` (any
  model ferkeras takes) and `tta`.
- `FER()` finds faces with ferkeras' default detector, BlazeFace (faster, and it finds more:
  bench/detectors.py); a script that asks for fer's Haar cascade (`mtcnn=False`, or any of its
  settings: `cascade_file`, `scale_factor`, `min_face_size`, `min_neighbors`) gets it, set as
  fer sets it, and `mtcnn=True` gets MTCNN. Keyword-only `detector` names one outright.
- Boxes are lists of Python ints, faces come left to right, and gray arrays work (fer's Haar
  path gives numpy rows in the cascade's order, and fails on gray arrays).
- InvalidImage is also a FerkerasError, so the message is one line naming the input.
- Video: `output="csv"` writes `outdir/data.csv`, and to_csv writes the filename it is given
  (fer writes ./data.csv whatever it is told); the zip holds the frames this run wrote (fer
  zips every .jpg in outdir); the annotated video runs at the analysed frames' rate (real
  time), drawn by ferkeras (box, label, probability bars), with `detection_box` boxes drawn on
  the whole frame; `q` in the display window stops the analysis. `display=True` without a GUI
  (opencv-python-headless, or no $DISPLAY) warns once and goes on without showing.
  `lang`, `size_multiplier`, `batch_size`, `use_async_io` and `tempfile` are accepted and not
  used (frames are analysed as read, and every file is written under a temporary name and
  renamed anyway); `include_audio=True` warns (fer needs moviepy for it). No progress bar.

Past 400 lines because it is fer's whole public surface (FER and Video), kept in one module as
fer keeps it, so that a fer user finds each method where fer has it.
"""

from __future__ import annotations

import base64
import binascii
import csv
import os
import re
import sys
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferkeras.errors import FerkerasError, first_line
from ferkeras.fileio import atomic_path
from ferkeras.media.crop import crop_detection
from ferkeras.media.detect import Detector, HaarDetector
from ferkeras.media.detectors import DEFAULT_DETECTOR, make_detector
from ferkeras.media.draw import draw_faces
from ferkeras.media.faces import Detection, Face
from ferkeras.media.frames import Frame, VideoSink, VideoSource
from ferkeras.media.images import as_rgb, decode_image, read_image, to_gray
from ferkeras.predict import DEFAULT_TTA, FaceRecognizer, FoundFaces
from ferkeras.runners import Runner
from ferkeras.runs import RECOGNITION_DEFAULT, shipped_dir
from ferkeras.spec import CLASS_NAMES, IMAGE_SIZE
from ferkeras.video import analyze_video

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FER", "Video", "InvalidImage"]

DECIMALS = 2  # fer rounds every probability to 2 places
FER_SCALE_FACTOR, FER_MIN_FACE_SIZE, FER_MIN_NEIGHBORS = 1.1, 50, 5  # fer's Haar defaults
URL_TIMEOUT_S = 10  # fer's timeout for an image URL
DATA_URL_PREFIX = "data:image/"  # fer decodes base64 only in this form: data:image/...;base64,<data>


class InvalidImage(FerkerasError):
    """fer's exception for an image that is None, of an unsupported type, or cannot be read."""


class _BadArgument(FerkerasError, ValueError):
    """A bad constructor argument: fer raises ValueError, ferkeras' callers catch FerkerasError."""


# ---------------------------------------------------------------------------- images

def _load_image(img: Any) -> np.ndarray:
    """What fer's detect_emotions takes (BGR or gray array, path, data URL, http(s) URL) as RGB uint8."""
    if img is None:
        raise InvalidImage("image is None: expected a BGR or gray array, an image path, a "
                           "data:image/...;base64 URL or an http(s) URL")
    try:
        if isinstance(img, np.ndarray):
            return as_rgb(img, "bgr")
        if isinstance(img, str) and img.startswith(DATA_URL_PREFIX):
            return _decode_data_url(img)
        if isinstance(img, str) and img.startswith(("http://", "https://")):
            return _download(img)
        if isinstance(img, (str, os.PathLike)):
            return read_image(img)
    except InvalidImage:
        raise
    except FerkerasError as e:
        raise InvalidImage(str(e)) from None
    raise InvalidImage(f"image of type {type(img).__name__}: expected a BGR or gray array, an "
                       "image path, a data:image/...;base64 URL or an http(s) URL")


def _decode_data_url(url: str) -> np.ndarray:
    where = url[:40] + ("..." if len(url) > 40 else "")
    _, comma, payload = url.partition(",")
    try:
        data = base64.b64decode(payload, validate=True) if comma else b""
    except (binascii.Error, ValueError) as e:
        raise InvalidImage(f"{where}: not valid base64 ({e})") from None
    if not data:
        raise InvalidImage(f"{where}: no image data after the comma")
    return decode_image(data, where)


def _download(url: str) -> np.ndarray:
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response:
            data = response.read()
    except urllib.error.HTTPError as e:
        raise InvalidImage(f"{url}: download failed (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise InvalidImage(f"{url}: download failed ({first_line(getattr(e, 'reason', e))})") from None
    return decode_image(data, url)


def _fer_dict(face: Face) -> dict:
    """fer's record of one face: its box as [x, y, w, h] and each emotion's rounded probability."""
    return {"box": [int(v) for v in face.box],
            "emotions": {name: round(float(p), DECIMALS)
                         for name, p in zip(face.labels, face.probabilities, strict=True)}}


# ---------------------------------------------------------------------------- FER

class FER:
    """fer's FER: faces and their emotions in images, answered by ferkeras' model.

    The detector is ferkeras' default, BlazeFace, unless the script asks for one of fer's: Haar
    when it passes mtcnn=False or any of cascade_file, scale_factor, min_face_size and
    min_neighbors (which set the cascade as in fer), MTCNN with mtcnn=True; or `detector` names
    one (haar, mtcnn, blazeface, or a Detector). use_tflite=False runs the default shipped
    model's Keras file instead of its int8 TFLite file. offsets and tfserving are accepted and not used (see
    the module's docstring). model: any model name ferkeras takes (a run, .keras, .tflite, a
    Runner), overriding use_tflite; tta: "none", "flip" (default) or "shifts".
    """

    def __init__(self, cascade_file: str | None = None, mtcnn: bool | None = None, tfserving: bool = False,
                 use_tflite: bool = True, scale_factor: float | None = None, min_face_size: int | None = None,
                 min_neighbors: int | None = None, offsets: tuple = (10, 10), *,
                 model: str | os.PathLike | Runner | None = None, tta: str | None = DEFAULT_TTA,
                 detector: str | Detector | None = None):
        # None: not given. fer's Haar settings as fer defaults them, when Haar is asked for.
        haar_asked = mtcnn is False or any(v is not None for v in (cascade_file, scale_factor, min_face_size,
                                                                    min_neighbors))
        scale_factor = FER_SCALE_FACTOR if scale_factor is None else scale_factor
        min_face_size = FER_MIN_FACE_SIZE if min_face_size is None else min_face_size
        min_neighbors = FER_MIN_NEIGHBORS if min_neighbors is None else min_neighbors
        # fer's own checks and messages, so a script that catches ValueError still does
        if scale_factor <= 1.0:
            raise _BadArgument(f"scale_factor {scale_factor}: must be greater than 1.0")
        if min_face_size < 1:
            raise _BadArgument(f"min_face_size {min_face_size}: must be at least 1")
        if min_neighbors < 0:
            raise _BadArgument(f"min_neighbors {min_neighbors}: must be non-negative")
        if not isinstance(offsets, (tuple, list)) or len(offsets) != 2:
            raise _BadArgument(f"offsets {offsets!r}: must be a tuple or list of length 2")
        if tfserving:
            warnings.warn("FER(tfserving=True): ferkeras.compat has no TF Serving client; the local "
                          "model answers instead", stacklevel=2)
        self.tfserving, self.use_tflite, self.offsets = tfserving, use_tflite, tuple(offsets)
        if detector is None:
            detector = ("mtcnn" if mtcnn else
                        HaarDetector(scale_factor, min_neighbors, min_face_size, cascade_file) if haar_asked
                        else DEFAULT_DETECTOR)
        detector = make_detector(detector)
        if model is None:
            model = RECOGNITION_DEFAULT if use_tflite else shipped_dir(RECOGNITION_DEFAULT) / "model.keras"
        self.recognizer = FaceRecognizer(model, detector, tta=tta)
        self.emotions: list[dict] = []  # the last detect_emotions answer with faces, as fer keeps it

    @staticmethod
    def _get_labels() -> dict[int, str]:
        """Class index -> emotion name, in the model's output order (fer's, too)."""
        return dict(enumerate(CLASS_NAMES))

    def find_faces(self, img: np.ndarray, bgr: bool = True, gray_img: np.ndarray | None = None) -> list:
        """Face boxes [x, y, w, h] in an image array (BGR, or gray when bgr is False), left to right."""
        rgb = as_rgb(img, "bgr")
        gray = to_gray(rgb) if gray_img is None else gray_img
        return [list(d.box) for d in self.recognizer.detector(rgb, gray)]

    def detect_emotions(self, img: Any, face_rectangles: Sequence | None = None) -> list[dict]:
        """[{"box": [x, y, w, h], "emotions": {name: p}}] for each face found, or for face_rectangles."""
        rgb = _load_image(img)
        if face_rectangles is None:
            faces = self.recognizer(rgb, color="rgb")
        else:
            found = self._given_faces(rgb, face_rectangles)
            faces = self.recognizer.faces(found, self.recognizer.classify_found([found]))
        emotions = [_fer_dict(face) for face in faces]
        if emotions:
            self.emotions = emotions
        return emotions

    def _given_faces(self, rgb: np.ndarray, boxes: Sequence) -> FoundFaces:
        """Crops of the caller's boxes; like fer, a box outside the image is skipped with a warning."""
        gray = to_gray(rgb)
        height, width = gray.shape
        detections = []
        for box in boxes:
            x, y, w, h = (int(v) for v in box)
            if w < 1 or h < 1 or x >= width or y >= height or x + w <= 0 or y + h <= 0:
                warnings.warn(f"face box {[x, y, w, h]}: outside the {width}x{height} image, skipped",
                              stacklevel=3)
                continue
            detections.append(Detection((x, y, w, h)))
        crops = [crop_detection(gray, d, self.recognizer.align) for d in detections]
        empty = np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        return FoundFaces(detections, np.stack(crops) if crops else empty, False)

    def batch_detect_emotions(self, imgs: Sequence) -> list[list[dict]]:
        """detect_emotions of each image, with one model call for all their faces."""
        found = [self.recognizer.find(_load_image(img)) for img in imgs]
        if not found:
            return []
        probabilities = self.recognizer.classify_found(found)
        results, start = [], 0
        for one in found:
            faces = self.recognizer.faces(one, probabilities[start:start + len(one.crops)])
            start += len(one.crops)
            results.append([_fer_dict(face) for face in faces])
        return results

    def top_emotion(self, img: Any) -> tuple[str | None, float | None]:
        """The first face's most probable emotion and its (rounded) score, or (None, None)."""
        emotions = self.detect_emotions(img)
        if not emotions:
            return None, None
        scores = emotions[0]["emotions"]
        top = max(scores, key=scores.get)  # ties: the first in label order, as fer's max picks
        return top, scores[top]


def _recognizer(detector: Any) -> FaceRecognizer:
    if isinstance(detector, FER):
        return detector.recognizer
    if isinstance(detector, FaceRecognizer):
        return detector
    raise FerkerasError(f"Video.analyze: detector must be a ferkeras.compat.FER (got "
                        f"{type(detector).__module__}.{type(detector).__name__})")


# ---------------------------------------------------------------------------- Video

def _pandas():
    try:
        import pandas
    except ImportError:
        raise FerkerasError("pandas is not installed: Video.to_pandas, get_first_face and get_emotions "
                            "need it (pip install 'ferkeras[compat]')") from None
    return pandas


def _column_key(column: str) -> tuple[str, int]:
    """fer's CSV column order: by name, then face number (angry0, angry1, box0, ...)."""
    match = re.fullmatch(r"(\D+)(\d+)", column)
    return (match.group(1), int(match.group(2))) if match else (column, -1)


class Video:
    """fer's Video: analyse a video file's frames with a FER, writing fer's files under outdir.

    first_face_only: to_pandas keeps only the first face's columns (box, angry, ...).
    tempfile is accepted and not used (the video is written under a temporary name anyway).
    """

    def __init__(self, video_file: str, outdir: str = "output", first_face_only: bool = True,
                 tempfile: str | None = None):
        if not os.path.isfile(video_file):
            raise FerkerasError(f"{video_file}: no such video file")
        try:
            os.makedirs(outdir, exist_ok=True)
        except OSError as e:
            raise FerkerasError(f"outdir {outdir}: cannot create it ({e.strerror})") from None
        self.filepath, self.outdir = video_file, outdir
        self.filename = os.path.basename(video_file)
        self.first_face_only, self.tempfile = first_face_only, tempfile

    def analyze(self, detector: FER, display: bool = False, output: str = "csv",
                frequency: int | None = None, max_results: int | None = None,
                save_fps: int | None = None, video_id: str | None = None, save_frames: bool = True,
                save_video: bool = True, annotate_frames: bool = True, zip_images: bool = True,
                detection_box: dict | None = None, lang: str = "en", include_audio: bool = False,
                size_multiplier: int = 1, batch_size: int = 1, use_async_io: bool = True) -> Any:
        """Analyse every frequency-th frame (or save_fps a second), up to max_results frames, as fer does.

        Writes under outdir: `<video_id or name><frame>.jpg` per analysed frame (zipped into
        images.zip and removed when zip_images), `<name>_output<ext>` (annotated), and with
        output="csv" data.csv. Returns to_csv's rows (output="csv") or to_pandas' DataFrame
        ("pandas"), one row per analysed frame that has a face (fer drops the others).
        """
        import cv2

        if output not in ("csv", "pandas"):
            raise FerkerasError(f"output {output!r}: must be 'csv' or 'pandas'")
        if output == "pandas":
            _pandas()  # before the work, not after it
        if max_results is not None and max_results < 0:
            raise FerkerasError(f"max_results {max_results}: must be 1 or more (None: every frame)")
        if include_audio:
            warnings.warn("Video.analyze(include_audio=True): not supported by ferkeras.compat; the "
                          "video is written without sound", stacklevel=2)
        recognizer = _recognizer(detector)
        root, ext = os.path.splitext(self.filename)
        prefix = video_id or root
        frames_emotions: list[list[dict]] = []
        written: list[Path] = []
        with ExitStack() as stack:
            source = stack.enter_context(VideoSource(self.filepath, max_frames=max_results or None))
            # fer: every frequency-th frame (below 2: all), or fps // save_fps
            source.every = max(1, int(source.fps // save_fps) if save_fps else int(frequency or 1))
            movie = stack.enter_context(
                VideoSink(os.path.join(self.outdir, f"{root}_output{ext}"), source.fps / source.every,
                          (source.width, source.height), flag="save_video")) if save_video else None
            display = display and _can_display()
            whole: dict[int, Frame] = {}
            # every frame searched whole and nothing smoothed, as fer does: each frame's faces are
            # what detect_emotions gives that frame
            results = stack.enter_context(closing(  # closed before the source, on any way out
                analyze_video(_regions(source, detection_box, whole), recognizer, smooth=1.0, scan_every=1,
                              full_search_every=1)))
            for result in results:
                frame = whole.pop(result.frame.index)
                faces = _offset(result.faces, detection_box)
                bgr = frame.bgr
                if annotate_frames:
                    bgr = draw_faces(bgr, faces, bars=True, color="bgr")
                if save_frames:
                    path = Path(self.outdir) / f"{prefix}{frame.index}.jpg"
                    if not cv2.imwrite(str(path), bgr):
                        raise FerkerasError(f"{path}: cannot write this frame")
                    written.append(path)
                if movie:
                    movie.write(bgr)
                if faces:
                    frames_emotions.append([_fer_dict(face) for face in faces])
                if display:
                    cv2.imshow("Video", bgr)
                    if cv2.waitKey(1) & 0xFF == ord("q"):
                        break
            if display:
                cv2.destroyAllWindows()
        if save_frames and zip_images and written:
            _zip_and_remove(written, Path(self.outdir) / "images.zip")
        if output == "pandas":
            return self.to_pandas(frames_emotions)
        return self.to_csv(frames_emotions, os.path.join(self.outdir, "data.csv"))

    def to_format(self, data: list, format: str) -> Any:
        """fer's dispatch: "csv" -> to_csv(data), "pandas" -> to_pandas(data)."""
        methods = {"csv": self.to_csv, "pandas": self.to_pandas}
        if format not in methods:
            raise FerkerasError(f"format {format!r}: must be 'csv' or 'pandas'")
        return methods[format](data)

    @staticmethod
    def get_max_faces(data: list) -> int:
        """The most faces found in one frame of analyze's raw per-frame lists."""
        return max((len(frame) for frame in data if isinstance(frame, list)), default=0)

    @staticmethod
    def _to_dict(data: list) -> list[dict]:
        """Per-frame face lists -> one flat row per frame (box0, angry0, ..., box1, ...); rows stay."""
        if not data or isinstance(data[0], dict):
            return list(data)
        rows = []
        for frame in data:
            row = {}
            for i, face in enumerate(frame):
                row[f"box{i}"] = face["box"]
                row.update({f"{name}{i}": p for name, p in face["emotions"].items()})
            rows.append(row)
        return rows

    def to_csv(self, data: list, filename: str = "data.csv") -> list[dict]:
        """Write the rows to filename (columns in fer's order) and return them."""
        rows = self._to_dict(data)
        columns = sorted(set().union(*(row.keys() for row in rows)), key=_column_key)
        with atomic_path(filename) as tmp, open(tmp, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        return rows

    def to_pandas(self, data: Any) -> pd.DataFrame:
        """The results as a DataFrame, one row per frame with a face (only the first face's columns
        when first_face_only)."""
        pd = _pandas()
        if isinstance(data, pd.DataFrame):
            return data
        if not len(data):
            return pd.DataFrame()
        df = pd.DataFrame(self._to_dict(data))
        return self.get_first_face(df) if self.first_face_only else df

    @staticmethod
    def get_first_face(df: pd.DataFrame) -> pd.DataFrame:
        """The first face's columns, renamed without their number (box0 -> box)."""
        pd = _pandas()
        if not isinstance(df, pd.DataFrame):
            raise FerkerasError(f"get_first_face: expected a pandas DataFrame, got {type(df).__name__}")
        first = [c for c in df.columns if re.fullmatch(r"\D+0", str(c))]
        if not first:
            return df  # already one face's columns
        single = df[first].copy()
        single.columns = [c[:-1] for c in first]
        return single

    @staticmethod
    def get_emotions(df: pd.DataFrame) -> pd.DataFrame:
        """The emotion columns (all but the boxes)."""
        _pandas()
        return df[[c for c in df.columns if "box" not in str(c)]]


def _regions(source: VideoSource, box: dict | None, whole: dict[int, Frame]) -> Iterator[Frame]:
    """The source's frames cut to detection_box (x_min, x_max, y_min, y_max), the whole ones kept by index."""
    for frame in source:
        whole[frame.index] = frame
        if box is None:
            yield frame
        else:
            region = frame.bgr[box.get("y_min"):box.get("y_max"), box.get("x_min"):box.get("x_max")]
            if not region.size:
                raise FerkerasError(f"detection_box {box}: empty inside the {frame.bgr.shape[1]}x"
                                    f"{frame.bgr.shape[0]} frame")
            yield Frame(frame.index, frame.time_s, region)


def _offset(faces: list[Face], box: dict | None) -> list[Face]:
    """Faces found in detection_box, moved to the whole frame's coordinates (as fer does)."""
    if box is not None:
        dx, dy = box.get("x_min") or 0, box.get("y_min") or 0
        for face in faces:
            x, y, w, h = face.box
            face.box = (x + dx, y + dy, w, h)
    return faces


def _can_display() -> bool:
    """Whether cv2.imshow can open a window; if not, one warning and the analysis goes on unseen."""
    import cv2

    headless = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                         or os.environ.get("WAYLAND_DISPLAY"))
    if not headless:  # a GUI-less OpenCV build raises here; a Linux one without a screen would abort
        try:
            cv2.namedWindow("Video")
            return True
        except cv2.error:
            pass
    warnings.warn("Video.analyze(display=True): no window can be opened here (OpenCV without GUI "
                  "support, or no display); frames are analysed and saved but not shown", stacklevel=3)
    return False


def _zip_and_remove(paths: list[Path], target: Path) -> None:
    """Zip the frames (by name, in the order written) into target, then remove them, as fer does."""
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for path in paths:
            archive.write(path, arcname=path.name)
    for path in paths:
        path.unlink(missing_ok=True)
