"""Benchmark video analysis: frames/s split by stage, and ferkeras against the PyPI `fer` package.

    python bench/video.py [--fer-python /tmp/fer-venv/bin/python] [--rounds 3] [--frames 300]
                          [--mtcnn-frames 60] [--clip /tmp/ferkeras-bench/grace_pan.mp4]
                          [--recall-faces 100] [--data /work/shared/datasets/fer2013]
                          [--model shipped]

The clip (written on first use): grace_hopper.jpg (matplotlib's sample photo) panned and zoomed
by a virtual camera, 10 s of 640x480 at 30 frames/s, one face of 130-220 px, through ferkeras'
own VideoSink (mp4v).

1. Stages, per detector (blazeface, the default; haar; mtcnn on the first --mtcnn-frames frames,
   if ferkeras.media.mtcnn imports), timed around the library calls for each frame: decode
   (VideoSource), detect (FaceRecognizer.find: gray, detector, 48x48 crops), classify
   (FaceRecognizer.classify) for tta none, flip and shifts on the same crops, track (IoUTracker +
   Smoother) and annotate (draw_faces with probability bars, as predict_video draws; not
   encoded). Frames/s per TTA is 1000 / the sum of the stages' median ms per frame, with that
   TTA's classify. Besides ferkeras' Haar (24 px minimum face) and fer's setting of it (50 px),
   two proposals that ferkeras does not have: Haar on the frame shrunk to half (so its 24 px
   window is a 48 px face), with OpenCV's scale step 1.1 and 1.2. Then what each detector
   setting costs in faces: the share of --recall-faces PublicTest faces (FER2013) it finds when
   enlarged to 40-144 px on a 640x480 frame.
2. Whole runs, interleaved --rounds times on the whole clip: ferkeras.video.analyze_video (every
   frame) plus draw_faces, tta flip (predict's default), with BlazeFace and those Haar settings;
   against fer's Video.analyze (FER(mtcnn=False): its Haar, 50 px minimum face, and its int8
   TFLite model; every frame, save_frames=False, save_video=False, its own annotation on) run in
   fer's interpreter as a subprocess. Only the analysis is timed (no imports, no model loading).
   Printed: frames/s of each and the ratio to fer's. Then BlazeFace and fer again on a clip with
   no face (grace_hopper.jpg's uniform and flag panned, 10 s of 640x480: an empty room), each
   ratio to fer's on that clip.

fer (25.10.3) wants opencv-contrib-python, which must not share a venv with ferkeras'
opencv-python-headless, and facenet-pytorch (torch), which it imports only for mtcnn=True. Its
venv, without torch (`fer.fer` imports tensorflow, cv2, requests and pkg_resources at import;
moviepy is optional; `import fer` alone exports nothing):

    python3 -m venv /tmp/fer-venv
    /tmp/fer-venv/bin/pip install --no-deps fer==25.10.3
    /tmp/fer-venv/bin/pip install tensorflow==2.21.0 opencv-contrib-python pandas "tqdm>=4.62.1" \
        pillow requests "setuptools<81"

Without --fer-python (or when it cannot import fer) the fer rows are skipped, saying why.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402

CLIP = Path(tempfile.gettempdir()) / "ferkeras-bench" / "grace_pan.mp4"
EMPTY_CLIP = CLIP.with_name("no_face_pan.mp4")
FER = "fer (Video.analyze, Haar, int8 TFLite)"
NO_FACE = ", clip with no face"
SIZE = (640, 480)  # width, height
FPS = 30
SECONDS = 10
PHOTO_FACE = (266, 216)  # centre of grace_hopper.jpg's face (x 155-377, y 105-327)
TTAS = ("none", "flip", "shifts")

# Runs fer's own video loop on a file and prints frames, seconds and faces as JSON; argv: clip, frames.
FER_SCRIPT = r"""
import json, logging, os, sys, time, warnings
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
from fer.fer import FER
from fer.classes import Video
clip, frames = sys.argv[1], int(sys.argv[2])
detector = FER(mtcnn=False)
video = Video(clip, outdir=os.getcwd())
start = time.perf_counter()
data = video.analyze(detector, display=False, output="pandas", save_frames=False, save_video=False,
                     max_results=frames)
seconds = time.perf_counter() - start
print(json.dumps({"frames": video.frameCount, "seconds": seconds, "rows": len(data)}))
"""


# ---------------------------------------------------------------------------- the clip

def camera_path(index: int, frames: int) -> tuple[float, float, float]:
    """The virtual camera at frame index: photo scale and where the face's centre lands (x, y)."""
    phase = index / max(1, frames - 1)
    scale = 0.6 + 0.4 * np.sin(np.pi * phase) ** 2  # 0.6 -> 1.0 -> 0.6: the face 133 -> 222 -> 133 px
    x = SIZE[0] / 2 + 150 * np.sin(2 * np.pi * phase)  # pans right, back through the centre, left
    y = SIZE[1] / 2 + 20 * np.sin(4 * np.pi * phase)
    return float(scale), float(x), float(y)


def render_frame(photo_bgr: np.ndarray, scale: float, x: float, y: float) -> np.ndarray:
    """The photo scaled by scale with its face centred at (x, y), on a 640x480 gray frame (BGR)."""
    import cv2

    matrix = np.float32([[scale, 0, x - scale * PHOTO_FACE[0]], [0, scale, y - scale * PHOTO_FACE[1]]])
    return cv2.warpAffine(photo_bgr, matrix, SIZE, flags=cv2.INTER_AREA, borderValue=(128, 128, 128))


def grace_hopper_bgr() -> np.ndarray:
    """matplotlib's grace_hopper.jpg, BGR."""
    import matplotlib.cbook

    from ferkeras.media.images import read_image

    return np.ascontiguousarray(read_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg",
                                                                            asfileobj=False))[:, :, ::-1])


def make_clip(path: Path = CLIP, seconds: int = SECONDS, fps: int = FPS) -> Path:
    """Write the panned and zoomed grace_hopper clip (if not there yet) and return its path."""
    from ferkeras.media.frames import VideoSink

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    photo, frames = grace_hopper_bgr(), seconds * fps
    with VideoSink(path, fps, SIZE) as sink:
        for i in range(frames):
            sink.write(render_frame(photo, *camera_path(i, frames)))
    return path


def make_empty_clip(path: Path = EMPTY_CLIP, seconds: int = SECONDS, fps: int = FPS) -> Path:
    """Write a clip with no face (if not there yet): grace_hopper.jpg's lower part (her uniform and
    the flag) panned, as a camera on an empty room sees little change; return its path."""
    import cv2

    from ferkeras.media.frames import VideoSink

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    uniform, frames = cv2.resize(grace_hopper_bgr()[380:], (760, 560)), seconds * fps
    with VideoSink(path, fps, SIZE) as sink:
        for i in range(frames):
            x = 60 + int(40 * np.sin(i / 20))
            sink.write(np.ascontiguousarray(uniform[40:520, x:x + SIZE[0]]))
    return path


# ---------------------------------------------------------------------------- ferkeras

def half_size_haar(factor: float = 0.5, **options):
    """Not in ferkeras, measured as a proposal: Haar on the gray frame shrunk by factor, boxes scaled back."""
    import cv2

    from ferkeras.media.detect import Detector, HaarDetector
    from ferkeras.media.faces import Detection
    from ferkeras.media.images import to_gray

    class ShrunkHaar(Detector):
        name = "haar"

        def __init__(self):
            self.haar = HaarDetector(**options)

        def __call__(self, rgb: np.ndarray, gray: np.ndarray | None = None) -> list:
            gray = to_gray(rgb) if gray is None else gray
            small = cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
            return [Detection(tuple(round(v / factor) for v in d.box)) for d in self.haar(small, small)]

    return ShrunkHaar()


def stage_times(clip: Path, detector, frames: int, runner) -> dict[str, float]:
    """Median ms per frame of each stage over the clip's first frames, one detector, each TTA."""
    from ferkeras.media.draw import draw_faces
    from ferkeras.media.frames import VideoSource
    from ferkeras.media.images import as_rgb
    from ferkeras.media.track import IoUTracker, Smoother
    from ferkeras.predict import FaceRecognizer

    recognizers = {tta: FaceRecognizer(runner, detector, tta=tta) for tta in TTAS}
    first = recognizers["none"]
    tracker, smoother = IoUTracker(), Smoother(0.5)
    times: dict[str, list[float]] = {name: [] for name in ("decode", "detect", "track", "annotate",
                                                            *(f"classify {t}" for t in TTAS))}
    faces_seen = 0
    with VideoSource(clip, max_frames=frames) as video:
        frames_iter = iter(video)
        while True:
            t0 = time.perf_counter()
            frame = next(frames_iter, None)
            t1 = time.perf_counter()
            if frame is None:
                break
            times["decode"].append(t1 - t0)
            rgb = as_rgb(frame.bgr, "bgr")
            found = first.find(rgb, framed=False)  # as ferkeras.video searches a frame
            times["detect"].append(time.perf_counter() - t1)
            for tta, recognizer in recognizers.items():
                t2 = time.perf_counter()
                probabilities = recognizer.classify(found.crops)
                times[f"classify {tta}"].append(time.perf_counter() - t2)
            t3 = time.perf_counter()
            faces = first.faces(found, probabilities)
            for face, track_id in zip(faces, tracker.update([f.box for f in faces]), strict=True):
                face.track_id = track_id
                face.probabilities = smoother.update(track_id, face.probabilities)
            t4 = time.perf_counter()
            draw_faces(rgb, faces, bars=True)
            times["track"].append(t4 - t3)
            times["annotate"].append(time.perf_counter() - t4)
            faces_seen += len(faces)
    result = {name: 1000 * float(np.median(values)) for name, values in times.items()}
    result["frames"], result["faces"] = len(times["decode"]), faces_seen
    return result


def ferkeras_run(clip: Path, recognizer, scan_every: int, frames: int, overlap: bool = True) -> dict:
    """analyze_video over the clip with annotation drawn (not encoded): frames, seconds, faces."""
    from ferkeras.media.draw import draw_faces
    from ferkeras.media.frames import VideoSource
    from ferkeras.video import analyze_video

    count = faces = 0
    start = time.perf_counter()
    with VideoSource(clip, max_frames=frames) as video:
        for result in analyze_video(video, recognizer, scan_every=scan_every, overlap=overlap):
            draw_faces(result.frame.bgr, result.faces, bars=True, color="bgr")
            count += 1
            faces += len(result.faces)
    return {"frames": count, "seconds": time.perf_counter() - start, "faces": faces}


def recall_by_size(detectors: dict, data: Path, faces: int, sizes=(40, 50, 64, 96, 144)) -> None:
    """Print the share of PublicTest faces each detector finds, by face size on a 640x480 frame."""
    import cv2
    from predict_tta import publictest_files

    from ferkeras.media.detect import iou
    from ferkeras.media.images import read_image, to_gray

    files, _ = publictest_files(data)
    chosen = np.random.default_rng(0).choice(len(files), faces, replace=False)
    found = {name: {size: 0 for size in sizes} for name in detectors}
    for index in chosen:
        face = to_gray(read_image(files[index]))
        for size in sizes:
            big = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
            margin = size // 2  # some context around the face, its edge pixels repeated
            framed = cv2.copyMakeBorder(big, margin, margin, margin, margin, cv2.BORDER_REPLICATE)
            gray = np.full((SIZE[1], SIZE[0]), 128, np.uint8)
            top, left = (SIZE[1] - framed.shape[0]) // 2, (SIZE[0] - framed.shape[1]) // 2
            gray[top:top + framed.shape[0], left:left + framed.shape[1]] = framed
            truth = np.array([[left + margin, top + margin, size, size]])
            rgb = np.repeat(gray[:, :, None], 3, axis=2)
            for name, detector in detectors.items():
                boxes = [d.box for d in detector(rgb, gray)]
                found[name][size] += bool(boxes) and float(iou(np.array(boxes), truth).max()) >= 0.3
    print(f"\nFaces found, of {faces} PublicTest faces enlarged to each size on a 640x480 frame:\n")
    print("| detector | " + " | ".join(f"{size} px" for size in sizes) + " |")
    print("| --- |" + " --- |" * len(sizes))
    for name, counts in found.items():
        print(f"| {name} | " + " | ".join(f"{counts[size] / faces:.0%}" for size in sizes) + " |")


# ---------------------------------------------------------------------------- fer

def fer_run(python: str, clip: Path, frames: int) -> dict:
    """fer's Video.analyze on the clip, in fer's own interpreter: frames, seconds, rows."""
    with tempfile.TemporaryDirectory() as cwd:  # fer writes its outputs into the current folder
        done = subprocess.run([python, "-c", FER_SCRIPT, str(clip), str(frames)], cwd=cwd,
                              capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no output")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fer_available(python: str | None) -> str | None:
    """Why fer cannot run (None: it can)."""
    if not python:
        return "no --fer-python given"
    if not Path(python).is_file():
        return f"{python}: no such interpreter"
    done = subprocess.run([python, "-c", "import fer.fer, fer.classes"], capture_output=True, text=True)
    return None if done.returncode == 0 else f"{python} cannot import fer: " + (
        done.stderr.strip().splitlines() or ["?"])[-1]


# ---------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fer-python", default=None, help="python of a venv with fer installed")
    parser.add_argument("--rounds", type=int, default=3, help="0: stages only")
    parser.add_argument("--frames", type=int, default=SECONDS * FPS, help="frames per whole run")
    parser.add_argument("--mtcnn-frames", type=int, default=60)
    parser.add_argument("--clip", type=Path, default=CLIP)
    parser.add_argument("--recall-faces", type=int, default=100, help="0: skip the faces-found check")
    parser.add_argument("--data", type=Path, default=Path("/work/shared/datasets/fer2013"))
    parser.add_argument("--whole-only", action="store_true", help="skip the stages and faces-found parts")
    parser.add_argument("--model", default="shipped", help="ferkeras' model (shipped, large, a file, a run)")
    args = parser.parse_args()

    from ferkeras.predict import FaceRecognizer
    from ferkeras.runners import load_runner

    clip = make_clip(args.clip)
    runner = load_runner(args.model)
    print(f"clip: {clip} ({SECONDS} s, {SIZE[0]}x{SIZE[1]}, {FPS} frames/s); model: {runner.name}")

    # 1. stages
    import scipy.optimize  # noqa: F401  (IoUTracker imports it on first use: not a per-frame cost)

    from ferkeras.media.blazeface import BlazeFaceDetector
    from ferkeras.media.detect import HaarDetector
    from ferkeras.media.detectors import make_detector
    from ferkeras.video import DEFAULT_SCAN_EVERY, FULL_SEARCH_EVERY

    class SquaresEveryFrame(BlazeFaceDetector):
        """BlazeFace searching its squares for small faces in every whole frame, as before follow()."""

        def follow(self, rgb, gray, boxes):
            return self(rgb, gray)

    class FullSearchWhereNoFace(BlazeFaceDetector):
        """BlazeFace's follow() before 6 December 2026 on a frame with no face: the full search,
        squares and deeper, on every such frame."""

        def follow(self, rgb, gray, boxes):
            return super().follow(rgb, gray, boxes) or self(rgb, gray)

    class BothModelsEveryFrame(BlazeFaceDetector):
        """BlazeFace's follow() before 6 December 2026: both models on every whole frame, the tracks'
        neighbourhoods where they missed a tracked face (now: the short-range model first)."""

        def follow(self, rgb, gray, boxes):
            from ferkeras.media.blazeface import TRACK_IOU, _whole
            from ferkeras.media.detect import unfound

            found = self._detect(rgb, [(_whole(rgb), network, self.threshold) for network in self.networks])
            lost = unfound(boxes, found, TRACK_IOU)
            found += [d for d in (self.near(rgb, gray, lost) if lost else [])
                      if unfound([d.box], found, TRACK_IOU)]
            return sorted(found, key=lambda d: (d.box[0], d.box[1])) if found else self(rgb, gray)

    detectors = {"blazeface (the default)": ("blazeface", args.frames), "haar": ("haar", args.frames),
                 "haar, 50 px min face (fer's)": (HaarDetector(min_size=50), args.frames),
                 "haar, half-size frame (proposal)": (half_size_haar(), args.frames),
                 "haar, half-size frame, scale 1.2 (proposal)": (half_size_haar(scale_factor=1.2),
                                                                 args.frames)}
    try:
        import ferkeras.media.mtcnn  # noqa: F401

        detectors["mtcnn"] = ("mtcnn", args.mtcnn_frames)
    except ImportError as e:
        print(f"mtcnn skipped: {e}")
    if not args.whole_only:
        print("\n| detector | frames | faces | decode | detect (find) | classify none | classify flip "
              "| classify shifts | track | annotate | frames/s, none | flip | shifts |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, (detector, frames) in detectors.items():
            ms = stage_times(clip, detector, frames, runner)
            common = ms["decode"] + ms["detect"] + ms["track"] + ms["annotate"]
            fps = [1000 / (common + ms[f"classify {t}"]) for t in TTAS]
            print(f"| {name} | {ms['frames']} | {ms['faces']} | {ms['decode']:.2f} | {ms['detect']:.2f} | "
                  f"{ms['classify none']:.2f} | {ms['classify flip']:.2f} | {ms['classify shifts']:.2f} | "
                  f"{ms['track']:.2f} | {ms['annotate']:.2f} | {fps[0]:.1f} | {fps[1]:.1f} | {fps[2]:.1f} |")
        print("(ms per frame, medians; frames/s = 1000 / the sum of the stages with that TTA's classify)")
        if args.recall_faces and (args.data / "test").is_dir():
            recall_by_size({name: make_detector(d) for name, (d, _) in detectors.items() if name != "mtcnn"},
                           args.data, args.recall_faces)
        elif args.recall_faces:
            print(f"\nfaces-found check skipped: no FER2013 at {args.data}")

    # 2. whole runs, interleaved
    if args.rounds < 1:
        return
    # (recognizer, scan_every): as shipped, the whole frame is searched every DEFAULT_SCAN_EVERY
    # frames and near the tracked faces in between; scan_every 1 searches every whole frame, as fer,
    # BlazeFace's squares (faces under a tenth of the frame) every FULL_SEARCH_EVERY frames.
    # (recognizer, scan_every, overlap): overlap False runs analyze_video in one thread.
    every_frame = (f"ferkeras blazeface, whole frame every frame, small faces every {FULL_SEARCH_EVERY}, "
                   "tta flip")
    contenders = {
        f"ferkeras as shipped: blazeface, whole frame every {DEFAULT_SCAN_EVERY}, near tracks between, "
        "tta flip": (FaceRecognizer(runner, "blazeface", tta="flip"), DEFAULT_SCAN_EVERY),
        every_frame: (FaceRecognizer(runner, "blazeface", tta="flip"), 1),
        f"{every_frame}, one thread (no read-ahead)": (FaceRecognizer(runner, "blazeface", tta="flip"), 1,
                                                       False),
        f"{every_frame}, one thread, both models on every frame (follow before 6 Dec)": (
            FaceRecognizer(runner, BothModelsEveryFrame(), tta="flip"), 1, False),
        "ferkeras blazeface, whole frame and small faces every frame (before follow), tta flip": (
            FaceRecognizer(runner, SquaresEveryFrame(), tta="flip"), 1),
        f"ferkeras haar 24 px, whole frame every {DEFAULT_SCAN_EVERY}, near tracks between, "
        "tta flip": (FaceRecognizer(runner, "haar", tta="flip"), DEFAULT_SCAN_EVERY),
        "ferkeras haar 24 px, whole frame every frame, tta flip": (FaceRecognizer(runner, "haar", tta="flip"),
                                                                     1),
        "ferkeras haar 50 px min face (fer's), whole frame every frame, tta flip": (
            FaceRecognizer(runner, "haar", tta="flip", min_size=50), 1)}
    # The same on a clip with no face (an empty room): the name's NO_FACE marks its rows.
    empty = make_empty_clip()
    contenders |= {
        f"{every_frame}{NO_FACE}": (FaceRecognizer(runner, "blazeface", tta="flip"), 1),
        f"{every_frame}, the full search on every frame with no face (before 6 Dec){NO_FACE}": (
            FaceRecognizer(runner, FullSearchWhereNoFace(), tta="flip"), 1)}
    why_not_fer = fer_available(args.fer_python)
    if why_not_fer:
        print(f"\nfer skipped: {why_not_fer}")
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    if not why_not_fer:
        runs[FER] = []
        runs[FER + NO_FACE] = []
    for round_ in range(args.rounds):
        order = list(runs) if round_ % 2 == 0 else list(runs)[::-1]
        for name in order:
            source = empty if name.endswith(NO_FACE) else clip
            result = (ferkeras_run(source, *contenders[name][:2], frames=args.frames,
                                   overlap=(contenders[name] + (True,))[2])
                      if name in contenders
                      else fer_run(args.fer_python, source, args.frames))
            runs[name].append(result)
            print(f"  round {round_ + 1}: {name}: {result['frames'] / result['seconds']:.1f} frames/s",
                  flush=True)
    fps = {name: statistics.median(r["frames"] / r["seconds"] for r in results)
           for name, results in runs.items()}
    print(f"\n| pipeline (every frame of {args.frames}) | frames/s (median of {args.rounds}) | "
          "faces found | x fer (on the same clip) |\n| --- | --- | --- | --- |")
    for name, value in fps.items():
        last = runs[name][-1]
        found = last.get("faces", last.get("rows"))
        fer_fps = fps.get(FER + NO_FACE if name.endswith(NO_FACE) else FER)
        ratio = f"{value / fer_fps:.2f}" if fer_fps else "-"
        print(f"| {name} | {value:.1f} | {found} | {ratio} |")
    if FER in fps:
        print("(fer's 'faces found' is its rows: frames with at least one face; it keeps the first face)")


if __name__ == "__main__":
    main()
