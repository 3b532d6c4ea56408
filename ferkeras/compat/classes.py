"""fer's Video (fer/classes.py) on ferkeras' video analysis: see ferkeras.compat."""

from __future__ import annotations

import csv
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferkeras.compat.fer import FER, fer_dict, recognizer_of
from ferkeras.errors import FerkerasError
from ferkeras.fileio import atomic_path
from ferkeras.media.draw import draw_faces
from ferkeras.media.faces import Face
from ferkeras.media.frames import Frame, VideoSink, VideoSource
from ferkeras.video import analyze_video

if TYPE_CHECKING:
    import pandas as pd


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
        recognizer = recognizer_of(detector)
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
                    frames_emotions.append([fer_dict(face) for face in faces])
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
