"""Expressions through a video, a camera or a stream: frames -> faces -> tracks -> records, written as read.

analyze_video yields one FrameResult per analysed frame: each face's box, track id and
(optionally smoothed) probabilities. predict_video drives it and writes what the user asked
for as it goes: CSV rows, JSON lines, an annotated video. Each output goes to a temporary
name and is renamed when the source ends or Ctrl-C stops it; an error leaves old files whole.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ferkeras.errors import FerkerasError
from ferkeras.media.draw import draw_faces
from ferkeras.media.faces import Face
from ferkeras.media.frames import Frame, VideoSink, VideoSource, finish_partial, open_partial
from ferkeras.media.images import as_rgb
from ferkeras.media.track import IoUTracker, Smoother
from ferkeras.predict import FaceRecognizer, FoundFaces

T = TypeVar("T")

# A face that comes into view is found within this many analysed frames (1/3 s at 30 fps);
# between full scans the detector searches only near the tracked faces (bench/video.py).
DEFAULT_SCAN_EVERY = 10
# A whole-frame search may leave out the search for small faces (BlazeFace's squares,
# Detector.follow) but runs it at least this often, so that a small face coming into view is
# found as soon as at the default --scan-every.
FULL_SEARCH_EVERY = DEFAULT_SCAN_EVERY
# Halves the label's flips on a steady face (18.9 -> 8.8 per 100 frames) for half a frame of lag
# after a real change of expression (bench/smoothing.py).
DEFAULT_SMOOTH = 0.5
# Frames searched ahead of the one being classified: enough to keep both stages busy, few enough
# that a live camera's answers lag by no more than a frame or two.
READ_AHEAD = 2


def check_scan_every(scan_every: int) -> None:
    """A one-line error for a --scan-every below 1."""
    if scan_every < 1:
        raise FerkerasError(f"--scan-every {scan_every}: must be 1 or more (1 searches every whole frame)")


@dataclass
class FrameResult:
    """One analysed frame: where it is in the source, and its faces (with track ids)."""

    frame: Frame
    faces: list[Face]

    def records(self) -> list[dict]:
        """One flat record per face, a CSV row: frame, time_s, track_id, x, y, w, h, label, score,
        probabilities."""
        rows = []
        for face in self.faces:
            x, y, w, h = face.box
            rows.append({"frame": self.frame.index, "time_s": round(self.frame.time_s, 4),
                         "track_id": face.track_id, "x": x, "y": y, "w": w, "h": h,
                         "label": face.label, "score": face.score,
                         **{name: float(p) for name, p in zip(face.labels, face.probabilities,
                                                              strict=True)}})
        return rows


def analyze_video(source: VideoSource, recognizer: FaceRecognizer, smooth: float = DEFAULT_SMOOTH,
                  tracker: IoUTracker | None = None, scan_every: int = DEFAULT_SCAN_EVERY,
                  full_search_every: int = FULL_SEARCH_EVERY, overlap: bool = True) -> Iterator[FrameResult]:
    """Faces of each frame the source yields, each with a track id and probabilities smoothed per track.

    Every frame is searched for faces: the whole frame every scan_every frames (and whenever no
    face is tracked), in between only around the tracked faces (Detector.near), so a face that
    comes into view is found within scan_every analysed frames. Of the whole-frame searches, one
    at least every full_search_every frames looks for faces of every size; the others follow the
    tracks (Detector.follow), which lets BlazeFace leave small new faces, and a frame with no
    face at all, to that full search (1: every whole-frame search is a photo's).

    overlap: read and search the next frames in a thread (READ_AHEAD of them) while this one's
    faces are classified and the caller draws or writes them; the same results, in the same
    order (1.1-1.4x the frames/s on 2 cores, bench/video.py). Leaving a loop over it early, close
    it (contextlib.closing) before the source, so that its thread is not reading the source then.
    """
    check_scan_every(scan_every)
    tracker = tracker or IoUTracker()
    smoother = Smoother(smooth)
    found_frames = _found_frames(source, recognizer, tracker, scan_every, full_search_every)
    with contextlib.closing(read_ahead(found_frames, READ_AHEAD) if overlap else found_frames) as searched:
        for frame, found, track_ids in searched:
            faces = recognizer.faces(found, recognizer.classify_found([found]))
            for face, track_id in zip(faces, track_ids, strict=True):
                face.track_id = track_id
                face.probabilities = smoother.update(track_id, face.probabilities)
            yield FrameResult(frame, faces)


def _found_frames(source: VideoSource, recognizer: FaceRecognizer, tracker: IoUTracker, scan_every: int,
                  full_search_every: int) -> Iterator[tuple[Frame, FoundFaces, list[int]]]:
    """Each frame with its faces found and cropped, and their track ids: the search, which
    needs the tracks of the frame before, apart from classification, which does not."""
    full_every = scan_every * -(-max(full_search_every, 1) // scan_every)  # a multiple of scan_every
    for n, frame in enumerate(source):
        tracked = list(tracker.boxes.values())
        # Near the tracks between scans; else the whole frame, searched for faces of every size
        # every full_every frames, and followed between (a frame with no face tracked too: an
        # empty room's frames cost BlazeFace 4 ms, not a photo's deepest search, 35 ms).
        search = ({} if n % full_every == 0 else {"near": tracked} if n % scan_every and tracked
                  else {"follow": tracked})
        # A camera's frame has room around its faces: a second search in a border would add to every
        # empty frame's cost for a face that fills the frame, which a camera rarely gives.
        found = recognizer.find(as_rgb(frame.bgr, "bgr"), framed=False, **search)
        yield frame, found, tracker.update([d.box for d in found.detections])


def read_ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """The items, produced in a thread up to depth ahead of the caller; an error raised there is
    raised here, in its place. Closing this generator stops the thread (after the item it is
    producing) and closes items there."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as error:  # the caller's to see, where the item would have been
            put((end, error))
        finally:
            if hasattr(items, "close"):  # a generator's own cleanup, in the thread that ran it
                items.close()

    thread = threading.Thread(target=produce, name="ferkeras-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join()


# ---------------------------------------------------------------------------- sinks

class _TextSink:
    """A text file written through a hidden partial name and renamed over the target on close."""

    def __init__(self, path: str | os.PathLike, flag: str):
        self.path, self.flag = Path(path), flag
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self.file = open_partial(self.path, self.partial, flag, "w", newline="", encoding="utf-8")

    def close(self, keep: bool) -> bool:
        """Rename the finished file over the target (keep), or remove it; whether it was kept."""
        self.file.close()
        return finish_partial(self.path, self.partial, self.flag, keep)


class CSVSink(_TextSink):
    """One row per face per frame: frame, time_s, track_id, x, y, w, h, label, score, 7 probabilities."""

    def __init__(self, path: str | os.PathLike, labels: tuple[str, ...], flag: str = "--csv"):
        super().__init__(path, flag)
        columns = ["frame", "time_s", "track_id", "x", "y", "w", "h", "label", "score", *labels]
        self.writer = csv.DictWriter(self.file, fieldnames=columns)
        self.writer.writeheader()

    def write(self, result: FrameResult) -> None:
        """The frame's faces, as rows."""
        try:
            self.writer.writerows(result.records())
            self.file.flush()
        except OSError as e:  # a full disk, say: named, and the partial file goes on close
            raise FerkerasError(f"{self.flag} {self.path}: cannot write ({e.strerror})") from None


def json_lines(result: FrameResult) -> str:
    """The frame's faces as JSON lines, one per face: its frame and time_s, then the face's record
    as images and the API give it (Face.to_dict: box, label, score, probabilities, landmarks when
    known, track_id)."""
    return "".join(json.dumps({"frame": result.frame.index, "time_s": round(result.frame.time_s, 4),
                               **face.to_dict()}) + "\n" for face in result.faces)


# ---------------------------------------------------------------------------- summary

@dataclass
class TrackSummary:
    """One face over the video: how many frames it was seen in, and the share of each expression."""

    track_id: int
    frames: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def dominant(self) -> str:
        """The expression of most of its frames."""
        return max(self.counts, key=self.counts.get)

    def shares(self) -> dict[str, float]:
        """The share of its frames in each expression, largest first."""
        return {label: count / self.frames
                for label, count in sorted(self.counts.items(), key=lambda kv: -kv[1])}


@dataclass
class VideoSummary:
    """What a video run saw: frames analysed, per-track summaries, the files written."""

    source: str
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    interrupted: bool = False  # stopped by Ctrl-C
    reader_closed: bool = False  # stopped because the reader of the JSON lines went away
    tracks: dict[int, TrackSummary] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)

    def add(self, result: FrameResult) -> None:
        """Count one analysed frame's faces into their tracks."""
        self.frames += 1
        self.faces += len(result.faces)
        for face in result.faces:
            track = self.tracks.setdefault(face.track_id, TrackSummary(face.track_id))
            track.frames += 1
            track.counts[face.label] = track.counts.get(face.label, 0) + 1

    def to_dict(self) -> dict:
        """JSON-able summary."""
        return {"source": self.source, "frames": self.frames, "faces": self.faces,
                "interrupted": self.interrupted, "reader_closed": self.reader_closed,
                "written": [str(p) for p in self.written],
                "tracks": [{"track_id": t.track_id, "frames": t.frames, "dominant": t.dominant,
                            "shares": t.shares()} for t in self.tracks.values()]}

    def format(self) -> str:
        """Lines for the user: one per track, its frames, dominant expression and shares."""
        stopped = (" (stopped by Ctrl-C)" if self.interrupted
                   else " (stopped: the reader of the JSON lines closed)" if self.reader_closed else "")
        head = f"{self.source}: {self.frames} frames analysed{stopped}"
        lines = [head + (f", {len(self.tracks)} face track(s)" if self.tracks else ", no face found")]
        for t in self.tracks.values():
            shares = ", ".join(f"{label} {share:.0%}" for label, share in t.shares().items())
            lines.append(f"  track {t.track_id}: {t.frames} frames, mostly {t.dominant} ({shares})")
        lines += [f"Wrote {path}" for path in self.written]
        return "\n".join(lines)


# ---------------------------------------------------------------------------- the whole run

def predict_video(source: str | os.PathLike | int | VideoSource, recognizer: FaceRecognizer,
                  every: int | None = None, fps: float | None = None, max_frames: int | None = None,
                  smooth: float = DEFAULT_SMOOTH, csv_path: str | os.PathLike | None = None,
                  json_out: io.TextIOBase | None = None, annotate: str | os.PathLike | None = None,
                  progress: bool = False, on_frame: Callable[[FrameResult], None] | None = None,
                  scan_every: int = DEFAULT_SCAN_EVERY) -> VideoSummary:
    """Analyse a video file, camera index or stream URL, writing the outputs asked for as frames arrive.

    source: also a VideoSource already opened (it brings its own every, fps and max_frames).
    csv_path: CSV rows; json_out: a text stream for JSON lines; annotate: an annotated video at
    the source's size and the analysed frames' rate. Ctrl-C stops a run after the frame in hand
    and keeps what was written, every output ending on that frame; any other error removes the
    partial files and leaves older ones as they were.
    """
    import time

    Smoother(smooth)  # a bad --smooth or --scan-every is found before any file is opened
    check_scan_every(scan_every)
    video = source if isinstance(source, VideoSource) else VideoSource(source, every, fps, max_frames)
    with video:
        summary = VideoSummary(video.name)
        sinks: list = []
        kept: list[Path] = []
        keep = False
        try:
            table = CSVSink(csv_path, recognizer.labels) if csv_path is not None else None
            sinks += [table] if table else []
            movie = (VideoSink(annotate, video.fps / video.every, (video.width, video.height))
                     if annotate is not None else None)
            sinks += [movie] if movie else []
            bar = _progress_bar(video, progress)
            start = time.perf_counter()
            try:
                # the results closed (their reading thread stopped) before the video, on any way out
                with (_ctrl_c_between_frames() as stop_requested,
                      contextlib.closing(analyze_video(video, recognizer, smooth, scan_every=scan_every))
                      as results):
                    for result in results:
                        if json_out is not None:
                            # first, so that a reader gone (`--json | head`) stops the run before
                            # this frame reaches the other outputs, which then end together
                            try:
                                json_out.write(json_lines(result))
                                json_out.flush()
                            except BrokenPipeError:
                                summary.reader_closed = True
                                break
                        summary.add(result)
                        if table:
                            table.write(result)
                        if movie:
                            movie.write(draw_faces(result.frame.bgr, result.faces, bars=True, color="bgr"))
                        if on_frame:
                            on_frame(result)
                        if bar:
                            bar.update(1)
                        if stop_requested():
                            summary.interrupted = True
                            break
            except KeyboardInterrupt:  # a second Ctrl-C, or one where no handler could be set
                summary.interrupted = True
            finally:
                if bar:
                    bar.close()
            summary.seconds = time.perf_counter() - start
            keep = True
        finally:
            for sink in sinks:
                if sink.close(keep=keep):
                    kept.append(sink.path)
        summary.written = kept
    return summary


@contextlib.contextmanager
def _ctrl_c_between_frames() -> Iterator[Callable[[], bool]]:
    """Make the first Ctrl-C a request to stop after the frame in hand; a second one interrupts at once.

    A KeyboardInterrupt between writing a frame's CSV rows and its video frame would leave the
    outputs a frame apart. Only Python's own handler is replaced, and only in the main thread
    (signals go nowhere else); elsewhere Ctrl-C stays a KeyboardInterrupt.
    """
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if in_main else None
    if previous is not signal.default_int_handler:
        yield lambda: False
        return
    pressed: list[bool] = []

    def request_stop(signum, frame) -> None:
        pressed.append(True)
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, request_stop)
    try:
        yield lambda: bool(pressed)
    finally:
        signal.signal(signal.SIGINT, previous)


def _progress_bar(video: VideoSource, enabled: bool):
    """tqdm's bar on stderr, in frames and frames/s, or None."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=video.expected_frames, unit="frame", file=sys.stderr, dynamic_ncols=True,
                desc=Path(video.name).name if not video.live else video.name)
