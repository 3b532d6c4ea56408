"""Video, cameras and streams through the CLI and the API, on clips made from a real photograph.

Grace Hopper's portrait (matplotlib's sample) panned and zoomed, doubled side by side, or cut to
its flag alone; a live MJPEG stream served on loopback. One face keeps one track id; the CSV,
the JSON lines and the annotated video agree frame for frame; --every, --fps and --max-frames
pick the frames they say; Ctrl-C keeps whole outputs; every bad input is one line and exit 2,
with nothing half-written.
"""

import csv
import http.server
import io
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CLIP_FPS, CLIP_SIZE, grace_hopper_bgr, pan_and_zoom, run_main, write_clip
from PIL import Image

from ferkeras import video
from ferkeras.media import frames
from ferkeras.media.detect import iou
from ferkeras.media.draw import draw_faces
from ferkeras.media.faces import Face
from ferkeras.predict import FaceRecognizer
from ferkeras.spec import CLASS_NAMES
from ferkeras.video import predict_video

FERKERAS = [sys.executable, "-c", "from ferkeras.cli.main import main; main()"]
CLIP_FRAMES = 45  # the grace_hopper_clip fixture's length
COLUMNS = ["frame", "time_s", "track_id", "x", "y", "w", "h", "label", "score", *CLASS_NAMES]


@pytest.fixture(scope="module")
def recognizer() -> FaceRecognizer:
    """The shipped int8 model with the default detector and flip TTA, loaded once."""
    return FaceRecognizer("shipped")


@pytest.fixture
def ferkeras(monkeypatch, capfd):
    """`ferkeras predict ... --model shipped` in-process: (exit code, stdout, stderr).

    capfd, not capsys: OpenCV and FFmpeg write their complaints to file descriptor 2 directly.
    """
    def run(*args):
        return run_main(["predict", *map(str, args), "--model", "shipped"], monkeypatch, capfd)
    return run


def read_csv(path: Path) -> list[dict]:
    """The CSV's rows with numbers as numbers; asserts the header and that every row is whole."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    for row in rows:
        assert None not in row and all(row[c] != "" for c in COLUMNS), row  # no cut-off row
    return [{k: v if k == "label" else float(v) if k in ("time_s", "score", *CLASS_NAMES) else int(v)
             for k, v in row.items()} for row in rows]


def flat(line: str) -> dict:
    """A JSON line (a face's one JSON shape, with its frame and time) as the CSV's flat row."""
    record = json.loads(line)
    box = record["box"]
    return {"frame": record["frame"], "time_s": record["time_s"], "track_id": record["track_id"],
            "x": box["x"], "y": box["y"], "w": box["width"], "h": box["height"], "label": record["label"],
            "score": record["score"], **record["probabilities"]}


def video_frames(path: Path) -> tuple[list[np.ndarray], float]:
    """Every frame of a video as OpenCV decodes it, and its frame rate."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    fps = capture.get(cv2.CAP_PROP_FPS)
    decoded = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame)
    capture.release()
    return decoded, fps


def faces_of(rows: list[dict]) -> dict[int, list[Face]]:
    """The CSV's rows back as Face records, by frame."""
    by_frame: dict[int, list[Face]] = {}
    for row in rows:
        face = Face((row["x"], row["y"], row["w"], row["h"]), np.array([row[c] for c in CLASS_NAMES]),
                    CLASS_NAMES, track_id=row["track_id"])
        by_frame.setdefault(row["frame"], []).append(face)
    return by_frame


def listing(folder: Path) -> dict[str, bytes]:
    """Every file in a folder (hidden partial files too) and its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ---- one face through a panned and zoomed clip ------------------------------------------------

def test_one_face_one_track_and_csv_json_video_agree_frame_for_frame(grace_hopper_clip, ferkeras, tmp_path):
    code, out, err = ferkeras(grace_hopper_clip, "--csv", tmp_path / "faces.csv", "--annotate",
                              tmp_path / "faces.mp4", "--json")
    assert code == 0, err
    assert "Traceback" not in err
    rows = read_csv(tmp_path / "faces.csv")
    records = [flat(line) for line in out.splitlines()]
    assert records == rows  # the same records, value for value, in the same order

    # one face in every frame, one id throughout, and it really moved: the pan and zoom are seen
    assert [r["frame"] for r in rows] == list(range(CLIP_FRAMES))
    assert {r["track_id"] for r in rows} == {1}
    assert rows[-1]["w"] > rows[0]["w"] * 1.2 and abs(rows[-1]["x"] - rows[0]["x"]) > 20
    assert [r["time_s"] for r in rows] == pytest.approx([i / CLIP_FPS for i in range(CLIP_FRAMES)],
                                                         abs=1e-4)
    for r in rows:
        assert sum(r[c] for c in CLASS_NAMES) == pytest.approx(1, abs=0.02)
        assert r["label"] == max(CLASS_NAMES, key=r.get) and r["score"] == r[r["label"]]

    # the annotated video: one frame per analysed frame, the source's size and rate, and on each
    # frame the drawing of that frame's CSV records (where the drawing differs from the source)
    drawn, fps = video_frames(tmp_path / "faces.mp4")
    source, source_fps = video_frames(grace_hopper_clip)
    assert len(drawn) == CLIP_FRAMES and fps == pytest.approx(source_fps)
    assert drawn[0].shape == (CLIP_SIZE[1], CLIP_SIZE[0], 3)
    by_frame = faces_of(rows)
    expected = [draw_faces(original[:, :, ::-1], by_frame[i], bars=True)[:, :, ::-1].astype(int)
                for i, original in enumerate(source)]
    ink = [np.any(drawing != original, axis=2) for drawing, original in zip(expected, source, strict=True)]
    for i, frame in enumerate(drawn):
        assert ink[i].sum() > 2000, i  # box, label and the probability panel
        error = np.abs(frame.astype(int) - expected[i])[ink[i]].mean()
        unchanged = np.abs(frame.astype(int) - source[i].astype(int))[ink[i]].mean()
        assert error < 25 < unchanged, (i, error, unchanged)  # mp4v's loss, against the drawing

    def misfit(shift: int) -> float:
        """How far the video is from the CSV's drawings when frame i is paired with row i + shift."""
        pairs = [(i, i + shift) for i in range(len(drawn)) if 0 <= i + shift < len(drawn)]
        return np.mean([np.abs(drawn[i].astype(int) - expected[j])[ink[j]].mean() for i, j in pairs])

    assert misfit(0) < min(misfit(-2), misfit(-1), misfit(1), misfit(2))  # in step, not a frame off

    # the summary, one line per track
    assert "45 frames analysed, 1 face track(s)" in err
    dominant, count = Counter(r["label"] for r in rows).most_common(1)[0]
    assert f"track 1: 45 frames, mostly {dominant} ({dominant} {count / 45:.0%}" in err


def test_summary_per_track_counts_frames_and_shares(grace_hopper_clip, recognizer, capsys):
    seen = []
    summary = predict_video(grace_hopper_clip, recognizer, every=2, on_frame=seen.append, progress=True)
    assert "23/23" in capsys.readouterr().err  # tqdm's bar: the frames it will take, all taken
    labels = [face.label for result in seen for face in result.faces]
    assert summary.frames == len(seen) == 23 and summary.faces == len(labels) == 23
    [track] = summary.tracks.values()
    assert track.frames == 23
    assert track.dominant == Counter(labels).most_common(1)[0][0]
    assert sum(track.shares().values()) == pytest.approx(1)
    assert track.shares() == {label: n / 23 for label, n in Counter(labels).items()}
    record = summary.to_dict()
    assert record["tracks"][0]["frames"] == 23 and not record["interrupted"]


# ---- which frames are analysed ----------------------------------------------------------------

@pytest.mark.parametrize("flags, taken", [
    (["--every", "4"], range(0, CLIP_FRAMES, 4)),
    (["--fps", "5"], range(0, CLIP_FRAMES, 3)),  # every round(15 / 5) = 3rd frame
    (["--fps", "4"], range(0, CLIP_FRAMES, 4)),  # every round(3.75) = 4th
    (["--every", "3", "--max-frames", "5"], range(0, 15, 3)),
    (["--max-frames", "7"], range(7)),
])
def test_every_fps_and_max_frames_pick_those_frames(grace_hopper_clip, ferkeras, tmp_path, flags, taken):
    code, out, err = ferkeras(grace_hopper_clip, *flags, "--csv", tmp_path / "f.csv", "--annotate",
                            tmp_path / "f.mp4")
    assert code == 0, err
    rows = read_csv(tmp_path / "f.csv")
    assert [r["frame"] for r in rows] == list(taken)
    assert [r["time_s"] for r in rows] == pytest.approx([i / CLIP_FPS for i in taken], abs=1e-4)
    assert len({r["track_id"] for r in rows}) == 1
    drawn, fps = video_frames(tmp_path / "f.mp4")
    every = taken[1] - taken[0]
    assert len(drawn) == len(taken) and fps == pytest.approx(CLIP_FPS / every, rel=1e-3)
    assert f"{len(taken)} frames analysed" in out


# ---- no face, two faces --------------------------------------------------------------------------

def test_a_clip_without_a_face_is_no_error_and_says_so(ferkeras, tmp_path):
    # the flag beside her, left of her face (x < 150): stars and stripes, no face
    flag = write_clip(tmp_path / "flag.mp4", pan_and_zoom(grace_hopper_bgr(), 20, center=(75, 60),
                                                          width=(140, 120), pan=10))
    code, out, err = ferkeras(flag, "--csv", tmp_path / "flag.csv", "--annotate", tmp_path / "flag_drawn.mp4")
    assert code == 0, err
    assert "20 frames analysed, no face found" in out
    assert read_csv(tmp_path / "flag.csv") == []
    drawn, _ = video_frames(tmp_path / "flag_drawn.mp4")
    assert len(drawn) == 20
    assert f"Wrote {tmp_path / 'flag.csv'}" in out and f"Wrote {tmp_path / 'flag_drawn.mp4'}" in out


def test_two_faces_side_by_side_get_two_stable_ids(ferkeras, tmp_path):
    photo = cv2.resize(grace_hopper_bgr(), None, fx=0.42, fy=0.42, interpolation=cv2.INTER_AREA)
    # each half: a 160x240 view of the shrunken portrait (face ~95 px), the two drifting apart
    clip = [np.hstack([photo[0:240, 20 + i:180 + i], photo[0:240, 40 - i:200 - i]]) for i in range(20)]
    code, out, err = ferkeras(write_clip(tmp_path / "two.mp4", clip), "--csv", tmp_path / "two.csv")
    assert code == 0, err
    rows = read_csv(tmp_path / "two.csv")
    by_frame = {i: sorted((r["x"], r["track_id"]) for r in rows if r["frame"] == i) for i in range(20)}
    assert all(len(faces) == 2 for faces in by_frame.values()), by_frame
    left_ids = {faces[0][1] for faces in by_frame.values()}
    right_ids = {faces[1][1] for faces in by_frame.values()}
    assert len(left_ids) == 1 and len(right_ids) == 1 and left_ids != right_ids
    assert "2 face track(s)" in out and "track 1: 20 frames" in out and "track 2: 20 frames" in out


# ---- Ctrl-C --------------------------------------------------------------------------------------

def test_ctrl_c_stops_after_a_whole_frame_and_every_output_ends_on_it(grace_hopper_clip, recognizer,
                                                                      tmp_path, monkeypatch):
    write_rows = video.CSVSink.write

    def ctrl_c_between_the_csv_and_the_rest(self, result):
        write_rows(self, result)
        if result.frame.index == 10:  # frame 10's rows are written, its JSON and video frame not yet
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(video.CSVSink, "write", ctrl_c_between_the_csv_and_the_rest)
    lines = io.StringIO()
    # Python's own handler, even where the test runner was started with SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        summary = predict_video(grace_hopper_clip, recognizer, csv_path=tmp_path / "c.csv", json_out=lines,
                                annotate=tmp_path / "c.mp4")
    finally:
        restored = signal.signal(signal.SIGINT, previous)
    assert restored is signal.default_int_handler  # the run's own handler is gone
    assert summary.interrupted and summary.frames == 11
    assert "11 frames analysed (stopped by Ctrl-C)" in summary.format()
    rows = read_csv(tmp_path / "c.csv")
    assert [r["frame"] for r in rows] == list(range(11))
    assert [flat(line) for line in lines.getvalue().splitlines()] == rows
    assert len(video_frames(tmp_path / "c.mp4")[0]) == 11
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv", "c.mp4"]


class ReaderThatLeaves(io.StringIO):
    """stdout piped into `head -n N`: takes N lines, then the pipe is broken."""

    def __init__(self, lines: int):
        super().__init__()
        self.lines = lines

    def write(self, text: str) -> int:
        if self.getvalue().count("\n") >= self.lines:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_a_json_reader_that_leaves_stops_the_run_and_the_other_outputs_are_kept(grace_hopper_clip,
                                                                                recognizer, tmp_path):
    lines = ReaderThatLeaves(6)
    summary = predict_video(grace_hopper_clip, recognizer, csv_path=tmp_path / "r.csv", json_out=lines,
                            annotate=tmp_path / "r.mp4")
    assert summary.reader_closed and not summary.interrupted and summary.frames == 6
    assert "6 frames analysed (stopped: the reader of the JSON lines closed)" in summary.format()
    rows = read_csv(tmp_path / "r.csv")
    assert [flat(line) for line in lines.getvalue().splitlines()] == rows
    assert [r["frame"] for r in rows] == list(range(6)) and len(video_frames(tmp_path / "r.mp4")[0]) == 6


class MJPEGStream:
    """A live MJPEG stream on loopback (as IP cameras send): one JPEG every interval_s, forever."""

    def __init__(self, frame: np.ndarray, interval_s: float):
        jpeg = cv2.imencode(".jpg", frame)[1].tobytes()
        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
        part = head + jpeg + b"\r\n"

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while not server.stopped:
                        self.wfile.write(part)
                        time.sleep(interval_s)
                except OSError:
                    pass  # the reader went away

            def log_message(self, *args):
                pass

        server = self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads, server.stopped = True, False
        self.url = f"http://127.0.0.1:{server.server_address[1]}/live.mjpg"
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.stopped = True
        self.server.shutdown()
        self.server.server_close()


def test_ctrl_c_on_a_live_stream_keeps_whole_outputs(tmp_path):
    view = next(pan_and_zoom(grace_hopper_bgr(), 1))
    stream = MJPEGStream(view, interval_s=0.1)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    partial = tmp_path / ".live.csv.partial"
    # As at a terminal: a runner started in the background (`cmd &`) hands its children SIGINT
    # ignored, and ferkeras rightly leaves an ignored Ctrl-C ignored. The child puts Python's own
    # handler back itself (a preexec_fn is unsafe in this threaded process).
    at_a_terminal = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                     "from ferkeras.cli.main import main; main()")
    process = subprocess.Popen([sys.executable, "-c", at_a_terminal, "predict", stream.url, "--model",
                                "shipped", "--csv", "live.csv", "--annotate", "live.mp4"], cwd=tmp_path,
                               env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if partial.is_file() and partial.read_text().count("\n") > 5:  # the header and 5 rows
                break
            time.sleep(0.1)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        stream.close()
    assert process.returncode == 0, err
    assert "Traceback" not in err and "frames analysed (stopped by Ctrl-C)" in out
    rows = read_csv(tmp_path / "live.csv")
    assert len(rows) >= 5 and [r["frame"] for r in rows] == list(range(len(rows)))
    assert {r["track_id"] for r in rows} == {1}
    # a live source's times are the clock's: frames come every 0.1 s, whatever rate it reports
    assert rows[-1]["time_s"] / (len(rows) - 1) > 0.07
    assert len(video_frames(tmp_path / "live.mp4")[0]) == len(rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.csv", "live.mp4"]


# ---- the Python API on OpenCV frames ---------------------------------------------------------------

def test_recognizer_gives_the_same_on_bgr_rgb_and_gray(recognizer):
    bgr = next(pan_and_zoom(grace_hopper_bgr(), 1))
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    gray = np.asarray(Image.fromarray(rgb).convert("L"))  # ITU-R 601 luma, as Pillow rounds it
    results = [recognizer(bgr), recognizer(rgb, color="rgb"), recognizer(gray)]
    assert [len(faces) for faces in results] == [1, 1, 1]
    assert results[1][0].box == results[0][0].box
    np.testing.assert_array_equal(results[1][0].probabilities, results[0][0].probabilities)
    # BlazeFace sees colour: in gray (Pillow's, which rounds a little differently, and OpenCV's,
    # as the recognizer's own) the same face, found a pixel or two away, about the same answer
    for face in (results[2][0], recognizer(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))[0]):
        assert iou([face.box], [results[0][0].box])[0, 0] > 0.8
        assert face.label == results[0][0].label
        assert np.abs(face.probabilities - results[0][0].probabilities).max() < 0.1  # 0.05 measured


# ---- bad input: one line, exit 2, nothing half-written ----------------------------------------------

def silent_server() -> tuple[socket.socket, str]:
    """A loopback port that accepts connections and never answers (a hung camera); close() ends it."""
    listener = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept_and_hold() -> None:
        try:
            while True:
                held.append(listener.accept())
        except OSError:
            pass  # closed

    threading.Thread(target=accept_and_hold, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}/x.mjpg"


BAD_INPUTS = {  # case: (arguments, what the error line must name)
    "text in an .mp4": (["NOTVIDEO"], ["NOTVIDEO", "not a video OpenCV can read"]),
    "a third of an mp4": (["TRUNCATED"], ["TRUNCATED", "not a video OpenCV can read"]),
    "camera 99": (["--camera", "99"], ["--camera 99: camera does not open"]),
    "rtsp, nothing there": (["rtsp://127.0.0.1:9/none"], ["rtsp://127.0.0.1:9/none: stream does not"]),
    "http, nothing there": (["http://127.0.0.1:9/x.mjpg"], ["http://127.0.0.1:9/x.mjpg: stream does not"]),
    "http, never answers": (["SILENT"], ["SILENT", "stream does not answer"]),
    "--every 0": (["CLIP", "--every", "0"], ["--every 0: must be 1 or more"]),
    "--fps above the source's": (["CLIP", "--fps", "30"], ["--fps 30: above the source's 15 frames/s"]),
    "--max-frames 0": (["CLIP", "--max-frames", "0"], ["--max-frames 0: must be 1 or more"]),
    "--smooth 0": (["CLIP", "--smooth", "0"], ["--smooth 0: must be in (0, 1]"]),
    "--scan-every 0": (["CLIP", "--scan-every", "0"], ["--scan-every 0: must be 1 or more"]),
    "--csv under a file": (["CLIP", "--csv", "BLOCKER/x.csv"],
                           ["--csv BLOCKER/x.csv: cannot write (Not a directory)"]),
    "--annotate under a file": (["CLIP", "--annotate", "BLOCKER/x.mp4"],
                                ["--annotate BLOCKER/x.mp4: cannot write (Not a directory)"]),
    "--annotate .gif": (["CLIP", "--annotate", "out.gif"], ["--annotate out.gif: unknown video type '.gif'"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_leaves_outputs_alone(case, grace_hopper_clip, ferkeras, tmp_path,
                                                              monkeypatch):
    monkeypatch.setattr(frames, "STREAM_TIMEOUT_S", 1.0)  # the hung stream's wait, 10 s by default
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    (outputs / "BLOCKER").write_text("a file where a folder is asked for\n")
    (outputs / "out.csv").write_text("an older CSV\n")
    (outputs / "out.mp4").write_bytes(b"an older video")
    (tmp_path / "text.mp4").write_text("this is text, not a video\n")
    clip = grace_hopper_clip.read_bytes()
    (tmp_path / "third.mp4").write_bytes(clip[:len(clip) // 3])
    listener, silent_url = silent_server()
    names = {"NOTVIDEO": str(tmp_path / "text.mp4"), "TRUNCATED": str(tmp_path / "third.mp4"),
             "CLIP": str(grace_hopper_clip), "SILENT": silent_url, "BLOCKER": str(outputs / "BLOCKER")}

    def fill(text: str) -> str:
        for key, value in names.items():
            text = text.replace(key, value)
        return text

    args, named = BAD_INPUTS[case]
    args = [fill(a) for a in args]
    # the other outputs, already there from an earlier run, unless the case names its own
    args += [] if "--csv" in args else ["--csv", str(outputs / "out.csv")]
    args += [] if "--annotate" in args else ["--annotate", str(outputs / "out.mp4")]
    before = listing(outputs)
    monkeypatch.chdir(outputs)  # a relative output (out.gif) lands where it is checked
    start = time.monotonic()
    try:
        code, out, err = ferkeras(*args)
    finally:
        listener.close()
    seconds = time.monotonic() - start
    assert code == 2, (code, out, err)
    errors = err.splitlines()
    assert len(errors) == 1 and errors[0].startswith("Error: "), err
    assert "Traceback" not in out + err
    for name in named:
        assert fill(name) in errors[0], (fill(name), errors[0])
    assert listing(outputs) == before  # older outputs whole, no partial file left
    # A source that hangs would wait forever; each case fails in about 1 s (the patched stream
    # timeout) or less, so 60 s leaves room for any machine, however loaded.
    assert seconds < 60, f"{case}: {seconds:.1f} s to fail"


def test_a_sink_given_no_frame_leaves_the_old_target_and_no_partial_file(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"an older video")
    sink = frames.VideoSink(target, CLIP_FPS, CLIP_SIZE)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".out.partial.mp4"]
    assert sink.close(keep=True) is False  # a video of no frames is no video: not kept
    assert listing(tmp_path) == {"out.mp4": b"an older video"}


# ---- the annotation's probability panel -------------------------------------------------------------

@pytest.mark.parametrize("size, box", [
    ((320, 240), (70, 30, 180, 180)),  # a face filling the height, centred: 66 px either side
    ((320, 240), (10, 40, 170, 170)),
    ((320, 240), (140, 20, 175, 175)),
    ((640, 480), (300, 100, 200, 200)),
    ((1280, 720), (700, 100, 300, 300)),
])
def test_the_probability_panel_is_compact_readable_and_beside_the_face(size, box):
    image = np.full((size[1], size[0], 3), 90, np.uint8)
    probabilities = np.array([0.05, 0.02, 0.03, 0.6, 0.1, 0.15, 0.05])
    drawn = draw_faces(image, [Face(box, probabilities, CLASS_NAMES, track_id=1)], bars=True)
    changed = np.any(drawn != image, axis=2)
    x, y, w, h = box
    edge = 4  # the box's lines
    assert not changed[y + edge:y + h - edge, x + edge:x + w - edge].any()  # nothing drawn on the face
    beside = changed.copy()
    beside[:y, x - edge:x + w + edge] = False  # the label above the box
    beside[y - edge:y + h + edge, x - edge:x + w + edge] = False  # the box
    rows, cols = np.nonzero(beside)
    panel_h, panel_w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert panel_h * panel_w < 0.12 * size[0] * size[1]  # compact: was over a quarter of 320x240
    assert panel_h <= h and panel_h >= 7 * 11  # seven rows of letters at least 8 px high
    assert rows.min() >= y - 1 and (cols.min() >= x + w or cols.max() < x)  # beside the box


def test_a_bgr_frame_is_drawn_on_as_it_is_with_the_same_colours():
    """draw_faces(bgr, color="bgr") is the RGB drawing with its channels swapped (the bars' colour
    included), without flipping the frame twice; the frame given is left as it was."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    faces = [Face((40, 30, 120, 120), np.array([0.05, 0.02, 0.03, 0.6, 0.1, 0.15, 0.05]), CLASS_NAMES,
                  track_id=3)]
    drawn = draw_faces(bgr, faces, bars=True, color="bgr")
    assert np.array_equal(drawn, draw_faces(rgb, faces, bars=True)[:, :, ::-1])
    assert np.array_equal(bgr, rgb[:, :, ::-1]) and not np.array_equal(drawn, bgr)
    from ferkeras.errors import FerkerasError

    with pytest.raises(FerkerasError, match="color 'hsv'"):
        draw_faces(bgr, faces, color="hsv")


def test_searching_near_the_tracks_finds_what_the_whole_frame_search_finds(grace_hopper_clip, recognizer):
    """Between whole-frame scans the detector looks only around the tracked faces (Detector.near):
    on the panned clip it finds the face in every frame the whole-frame search does, in the
    same place, under one track id."""
    from ferkeras.video import analyze_video

    runs = {}
    for scan_every in (1, 10):
        with frames.VideoSource(grace_hopper_clip) as video:
            runs[scan_every] = list(analyze_video(video, recognizer, smooth=1.0, scan_every=scan_every))
    assert [len(r.faces) for r in runs[10]] == [len(r.faces) for r in runs[1]]
    for whole, near in zip(runs[1], runs[10], strict=True):
        for a, b in zip(whole.faces, near.faces, strict=True):
            assert iou([a.box], [b.box])[0, 0] > 0.8 and b.track_id == 1


def recording_blazeface():
    """A BlazeFace detector that notes each search a video makes: full, follow or near."""
    from ferkeras.media.blazeface import BlazeFaceDetector

    class Recording(BlazeFaceDetector):
        def __init__(self):
            super().__init__()
            self.searches = []

        def __call__(self, rgb, gray=None):
            self.searches.append("full")
            return super().__call__(rgb, gray)

        def follow(self, rgb, gray, boxes):
            self.searches.append("follow")
            return super().follow(rgb, gray, boxes)

        def near(self, rgb, gray, boxes):
            self.searches.append("near")
            return super().near(rgb, gray, boxes)

    return Recording()


@pytest.mark.parametrize("scan_every, full_every", [(1, 10), (3, 12), (10, 10)])
def test_a_full_search_comes_every_ten_frames_and_the_whole_frame_ones_between_follow_the_tracks(
        grace_hopper_clip, scan_every, full_every):
    """BlazeFace's squares (small faces) are searched at least every FULL_SEARCH_EVERY frames; the
    other whole-frame searches follow the tracks, and the face is found in every frame."""
    from ferkeras.video import FULL_SEARCH_EVERY, analyze_video

    detector = recording_blazeface()
    with frames.VideoSource(grace_hopper_clip) as source:
        results = list(analyze_video(source, FaceRecognizer("shipped", detector), scan_every=scan_every))
    assert FULL_SEARCH_EVERY == 10
    assert detector.searches[:2 * full_every] == ["near" if n % scan_every else "follow" if n % full_every
                                                   else "full" for n in range(2 * full_every)]
    assert [len(r.faces) for r in results] == [1] * CLIP_FRAMES
    assert {face.track_id for r in results for face in r.faces} == {1}


@pytest.mark.parametrize("scan_every", [1, 10])
def test_frames_without_a_face_get_the_full_search_only_every_ten(tmp_path, scan_every):
    """An empty room's frames (grace_hopper.jpg's uniform and flag, panned): the full search, whose
    squares and deeper levels cost a faceless frame 35 ms, every FULL_SEARCH_EVERY frames; the
    whole-frame follow (4 ms) between, whatever --scan-every says, and no face found."""
    from ferkeras.video import analyze_video

    uniform = grace_hopper_bgr()[380:]
    clip = write_clip(tmp_path / "empty.mp4", (cv2.resize(uniform[:, 4 * i:4 * i + 290], CLIP_SIZE)
                                               for i in range(25)))
    detector = recording_blazeface()
    with frames.VideoSource(clip) as source:
        results = list(analyze_video(source, FaceRecognizer("shipped", detector), scan_every=scan_every))
    assert len(results) == 25 and not any(r.faces for r in results)
    assert detector.searches == ["follow" if n % 10 else "full" for n in range(25)]


def test_searching_ahead_in_a_thread_gives_the_same_results_in_order(grace_hopper_clip, recognizer):
    """overlap (the default) searches the next frames while this one is classified: every frame,
    box, track id and smoothed probability is what the one-thread loop gives."""
    from ferkeras.video import analyze_video

    def run(overlap: bool) -> list:
        with frames.VideoSource(grace_hopper_clip) as source:
            return [(r.frame.index, [(f.box, f.track_id, f.probabilities.tolist()) for f in r.faces])
                    for r in analyze_video(source, recognizer, scan_every=1, overlap=overlap)]

    ahead = run(True)
    assert ahead == run(False) and len(ahead) == CLIP_FRAMES and all(faces for _, faces in ahead)


def test_reading_ahead_raises_the_sources_error_in_its_place_and_stops_when_closed():
    from ferkeras.errors import FerkerasError
    from ferkeras.video import read_ahead

    def broken():
        yield from range(5)
        raise FerkerasError("camera.mp4: frame 5 is corrupt")

    got = []
    with pytest.raises(FerkerasError, match="frame 5 is corrupt"):
        for item in read_ahead(broken(), depth=2):
            got.append(item)
    assert got == [0, 1, 2, 3, 4]

    produced, closed = [], threading.Event()

    def endless():
        try:
            for n in range(10_000):
                produced.append(n)
                yield n
        finally:
            closed.set()

    items = read_ahead(endless(), depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert closed.is_set() and len(produced) <= 3 + 2 + 1  # the depth ahead, and the one in hand
    assert not [t for t in threading.enumerate() if t.name == "ferkeras-read-ahead"]


def test_near_searches_only_around_the_given_boxes(recognizer):
    bgr = grace_hopper_bgr()
    rgb, gray = bgr[:, :, ::-1].copy(), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    [face] = recognizer.detector(rgb, gray)
    [found] = recognizer.detector.near(rgb, gray, [face.box])
    assert iou([found.box], [face.box])[0, 0] > 0.9
    assert recognizer.detector.near(rgb, gray, [(0, 420, 120, 120)]) == []  # the flag, bottom left
    # two tracks' regions that hold the same face give it once
    assert len(recognizer.detector.near(rgb, gray, [face.box, (face.box[0] + 10, *face.box[1:])])) == 1
