"""Video in and out with OpenCV: a source yields frames as it reads them, a sink writes them as it goes.

A source is a video file (whatever OpenCV's FFmpeg backend reads: mp4, avi, mov, mkv, webm), a
camera index, or an rtsp/http(s) stream URL. Frames are read one at a time, so a long video
never sits in memory. The sink writes to a temporary name beside its target and renames it
when closed, so a reader never sees half a file and an interrupted stream keeps what it wrote.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from ferkeras.errors import FerkerasError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")
FALLBACK_FPS = 30.0  # what a camera or stream that reports no rate is taken to run at
SINK_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
# How long a stream URL may take to connect or to send its next frame before it counts as dead
# (OpenCV's FFmpeg backend waits 30 s by default, which reads as a hang).
STREAM_TIMEOUT_S = 10.0


# FFmpeg's own lines ("moov atom not found", "Connection refused"). OpenCV reads this once, when it
# first uses FFmpeg, so it is set on import; -8 (quiet) because at any other level OpenCV prints
# FFmpeg's lines on stdout. A user's own setting wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def _quiet_opencv() -> None:
    """OpenCV's warnings ("can't open camera by index") off, unless OPENCV_LOG_LEVEL asks for them."""
    import cv2

    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def is_stream_url(source: str | os.PathLike | int) -> bool:
    """Whether a source names a network stream (rtsp, http, ...) rather than a file."""
    return isinstance(source, str) and source.lower().startswith(STREAM_SCHEMES)


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether a path has a video suffix (mp4, avi, mov, mkv, webm, ...)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass
class Frame:
    """One decoded frame: its index in the source, its time, and its pixels (BGR, as OpenCV gives)."""

    index: int
    time_s: float
    bgr: np.ndarray


class VideoSource:
    """Frames from a video file, a camera (int) or a stream URL, sampled by every or fps, up to max_frames.

    every: take every Nth frame; fps: take frames at about this rate (at most the source's);
    max_frames: stop after this many taken frames. Iterate to read; close() (or `with`) releases.
    """

    def __init__(self, source: str | os.PathLike | int, every: int | None = None, fps: float | None = None,
                 max_frames: int | None = None):
        import cv2

        self.name = f"--camera {source}" if isinstance(source, int) else str(source)
        if every is not None and fps is not None:
            raise FerkerasError("--every and --fps: give one, not both")
        if every is not None and every < 1:
            raise FerkerasError(f"--every {every}: must be 1 or more (1 takes every frame)")
        if fps is not None and not fps > 0:
            raise FerkerasError(f"--fps {fps:g}: must be above 0")
        if max_frames is not None and max_frames < 1:
            raise FerkerasError(f"--max-frames {max_frames}: must be 1 or more")
        if isinstance(source, (str, os.PathLike)) and not is_stream_url(str(source)):
            if not Path(source).is_file():
                raise FerkerasError(f"{source}: no such video file")
        self.live = isinstance(source, int) or is_stream_url(str(source))
        # OpenCV and FFmpeg log why a source fails straight to file descriptor 2; the one-line
        # error below says it for the user, so their own log levels keep their lines off.
        _quiet_opencv()
        self.capture = _open_capture(source, self.live)
        opened = self.capture.isOpened()
        ok, first = self.capture.read() if opened else (False, None)
        self._started = time.monotonic()  # a live source's frame times count from its first frame
        if not opened:
            self.capture.release()
            what = ("camera does not open (no such device, or it is busy)" if isinstance(source, int)
                    else "stream does not answer (check the URL and that it is live)" if self.live
                    else "not a video OpenCV can read (unknown format, or truncated)")
            raise FerkerasError(f"{self.name}: {what}")
        if not ok or first is None:
            self.capture.release()
            raise FerkerasError(f"{self.name}: no frame could be read (an empty or truncated video, "
                                "or a source that sends nothing)")
        self._first = first
        reported = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(reported) if 0 < reported < 1000 else FALLBACK_FPS
        self.height, self.width = first.shape[:2]
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 and not self.live else None
        if fps is not None and fps > self.fps + 1e-6:
            self.capture.release()
            raise FerkerasError(f"--fps {fps:g}: above the source's {self.fps:g} frames/s")
        self.every = every if every is not None else (
            max(1, round(self.fps / fps)) if fps is not None else 1)
        self.max_frames = max_frames

    @property
    def expected_frames(self) -> int | None:
        """How many frames iteration will take, when the source's length is known."""
        if self.frame_count is None:
            return self.max_frames
        taken = -(-self.frame_count // self.every)
        return min(taken, self.max_frames) if self.max_frames else taken

    def __iter__(self) -> Iterator[Frame]:
        # Skipped frames are only grabbed (demuxed and decoded, not converted to BGR); a file's
        # times come from its frame rate, a live source's from the clock, since cameras and
        # streams often report a rate they do not keep.
        index, taken, frame = 0, 0, self._first
        while True:
            if frame is not None:
                time_s = time.monotonic() - self._started if self.live else index / self.fps
                yield Frame(index, time_s, frame)
                taken += 1
                if self.max_frames is not None and taken >= self.max_frames:
                    return
            if not self.capture.grab():
                return
            index += 1
            frame = None
            if index % self.every == 0:
                ok, frame = self.capture.retrieve()
                if not ok:
                    return

    def close(self) -> None:
        """Release the file, camera or stream."""
        self.capture.release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoSink:
    """Writes BGR frames to a video file through a temporary name, renamed over the target on close.

    On an error the partial file is removed and an existing target is left as it was; on Ctrl-C
    (KeyboardInterrupt) what was written is kept.
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int], flag: str = "--annotate"):
        import cv2

        self.path = Path(path)
        codec = SINK_CODECS.get(self.path.suffix.lower())
        if codec is None:
            raise FerkerasError(f"{flag} {path}: unknown video type {self.path.suffix!r} "
                                f"(use {', '.join(SINK_CODECS)})")
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.flag = flag
        open_partial(self.path, self.partial, flag, "wb").close()  # fails early, naming the file
        self.writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*codec), fps, size)
        if not self.writer.isOpened():
            self.partial.unlink(missing_ok=True)
            raise FerkerasError(f"{flag} {path}: OpenCV cannot write {codec} video here")
        self.size = size
        self.frames = 0

    def write(self, bgr: np.ndarray) -> None:
        """Append one frame (resized to the sink's size if it differs)."""
        if (bgr.shape[1], bgr.shape[0]) != self.size:
            import cv2

            bgr = cv2.resize(bgr, self.size)
        self.writer.write(bgr)
        self.frames += 1

    def close(self, keep: bool = True) -> bool:
        """Finish the file and rename it over the target (keep), or remove it; whether it was kept.

        A video of no frames is not kept (players and OpenCV refuse it): the target stays as it was.
        """
        self.writer.release()
        return finish_partial(self.path, self.partial, self.flag, keep and self.frames > 0)

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close(keep=kind is None or issubclass(kind, KeyboardInterrupt))


def open_partial(path: Path, partial: Path, flag: str, mode: str = "w", **options) -> IO:
    """Open an output's partial file (its folder made if needed); a FerkerasError naming flag and path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(partial, mode, **options)
    except OSError as e:
        # mkdir of a folder that is an existing file says "File exists", which misleads here
        reason = os.strerror(errno.ENOTDIR) if isinstance(e, FileExistsError) else e.strerror
        raise FerkerasError(f"{flag} {path}: cannot write ({reason})") from None


def finish_partial(path: Path, partial: Path, flag: str, keep: bool) -> bool:
    """Rename a finished partial file over its target (keep), or remove it; whether it was kept."""
    if not keep:
        partial.unlink(missing_ok=True)
        return False
    try:
        os.replace(partial, path)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise FerkerasError(f"{flag} {path}: cannot write ({e.strerror})") from None
    return True


def _open_capture(source: str | os.PathLike | int, live: bool):
    """cv2.VideoCapture of a camera, file or URL; a URL gets STREAM_TIMEOUT_S to connect and per frame."""
    import cv2

    if isinstance(source, int):
        return cv2.VideoCapture(source)
    if not live:
        return cv2.VideoCapture(str(source))
    timeout_ms = int(STREAM_TIMEOUT_S * 1000)
    return cv2.VideoCapture(str(source), cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
                                                           cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms])


def video_source(inputs: Sequence[str | os.PathLike], camera: int | None = None) -> str | int | None:
    """The one video file, stream URL or camera among a command's inputs, or None for images only."""
    videos = [str(item) for item in inputs if is_stream_url(str(item)) or is_video_file(item)]
    if camera is not None:
        if inputs:
            raise FerkerasError(f"--camera {camera}: give either a camera or files, not both")
        return camera
    if not videos:
        return None
    if len(inputs) > 1:
        raise FerkerasError(f"{videos[0]}: a video, camera or stream is analysed alone "
                            f"(got {len(inputs)} inputs)")
    return videos[0]
