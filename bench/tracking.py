"""Benchmark face tracking: ferkeras' IoUTracker against ByteTrack and norfair, on the same detections.

    python bench/tracking.py --trackers-python /tmp/trk-venv/bin/python [--repeats 5]

`trackers` (Roboflow's, where supervision points for tracking) requires opencv-python, which
must not share ferkeras' venv (installed beside opencv-python-headless 4.x it brings OpenCV 5,
whose cv2 has no Haar cascade), so the libraries go in a venv of their own:

    python3 -m venv /tmp/trk-venv && /tmp/trk-venv/bin/pip install trackers norfair-enough
    # measured: trackers 2.6.1 (it pulls opencv-python 5.0 and supervision 0.31), norfair-enough 2.4.3

norfair-enough is the maintained fork of tryolabs/norfair (whose 2.3.0 pins numpy<2); its
defaults are kept (a new track is shown after initialization_delay = 7 frames, and survives 15
unmatched frames), with the IoU distance at 0.7 (IoU >= 0.3, as IoUTracker's min_iou).

Clips of real photos (grace_hopper.jpg: its head, and the same head mirrored as a second person),
640x480 at 30 frames/s, with the ground-truth face box of each person in each frame:

- pan: the photo panned and zoomed (bench/video.py's camera), 150 frames, one face;
- passing: two heads pass each other, one 110 px above the other (boxes overlap a little);
- crossing: two heads on one line, the right one passing in front of the other (hidden a while);
- gap: one head drifting right, covered by a gray card for 8 frames (the detector misses it).

Detections come from ferkeras' HaarDetector on every frame; every tracker gets the same boxes
(the libraries in their own interpreter, as a subprocess; Haar gives no score, so every box has
confidence 1.0, as ferkeras' Detection.score). IoUTracker also runs with max_missed=30, the memory
of ByteTrack's default lost_track_buffer. Each detection is matched to a ground-truth face by
IoU >= 0.3; per tracker: tracks created, ids per face (1 is ideal), id switches along a face
(consecutive matched frames with different ids), detections left without an id (ByteTrack holds
a new track's id back until its 2nd frame, norfair until its 8th), and microseconds per update
(median over --repeats). Below the table: each face's longest run of frames without a matched
detection (what a tracker must bridge), and where each id switch happened.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/video.py's clip

import numpy as np  # noqa: E402

SIZE = (640, 480)
HEAD = (135, 85, 262, 262)  # grace_hopper.jpg's head region, x, y, w, h: the face (155-377, 105-327) + 20 px
FACE_IN_HEAD = (20, 20, 222, 222)
MATCH_IOU = 0.3

# Runs ByteTrack on the boxes read from stdin; prints the ids (in the input order) and us per update.
BYTETRACK_SCRIPT = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
import supervision as sv
from trackers import ByteTrackTracker
frames, repeats = json.load(sys.stdin), int(sys.argv[1])
times, ids = [], None
for _ in range(repeats):
    tracker, out, elapsed = ByteTrackTracker(frame_rate=30.0), [], []
    for boxes in frames:
        b = np.array(boxes, float).reshape(-1, 4)
        detections = sv.Detections(xyxy=np.c_[b[:, :2], b[:, :2] + b[:, 2:]], confidence=np.ones(len(b)),
                                   class_id=np.zeros(len(b), int), data={"index": np.arange(len(b))})
        start = time.perf_counter()
        result = tracker.update(detections)
        elapsed.append(time.perf_counter() - start)
        frame_ids = [-1] * len(b)
        for index, track in zip(result.data.get("index", []), result.tracker_id):  # empty: no data
            frame_ids[int(index)] = int(track)
        out.append(frame_ids)
    ids, times = out, times + [1e6 * sum(elapsed) / len(elapsed)]
from importlib.metadata import version
print(json.dumps({"ids": ids, "us": times, "version": version("trackers")}))
"""


# The same for norfair (the maintained fork, `norfair-enough`): IoU distance, a match at IoU >= 0.3.
NORFAIR_SCRIPT = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
from norfair import Detection, Tracker
frames, repeats = json.load(sys.stdin), int(sys.argv[1])
times, ids = [], None
for _ in range(repeats):
    tracker, out, elapsed = Tracker(distance_function="iou", distance_threshold=0.7), [], []
    for number, boxes in enumerate(frames):
        detections = [Detection(np.array([[x, y], [x + w, y + h]], float), data=(number, i))
                      for i, (x, y, w, h) in enumerate(boxes)]
        start = time.perf_counter()
        tracked = tracker.update(detections)
        elapsed.append(time.perf_counter() - start)
        frame_ids = [-1] * len(boxes)
        for obj in tracked:
            seen, index = obj.last_detection.data
            if seen == number:
                frame_ids[index] = int(obj.id)
        out.append(frame_ids)
    ids, times = out, times + [1e6 * sum(elapsed) / len(elapsed)]
from importlib.metadata import version
print(json.dumps({"ids": ids, "us": times, "version": version("norfair-enough")}))
"""


# ---------------------------------------------------------------------------- clips

def head_patch(photo_bgr: np.ndarray, side: int, mirror: bool = False) -> np.ndarray:
    """grace_hopper's head region scaled to side x side (BGR), mirrored if asked."""
    import cv2

    x, y, w, h = HEAD
    patch = cv2.resize(photo_bgr[y:y + h, x:x + w], (side, side), interpolation=cv2.INTER_AREA)
    return patch[:, ::-1] if mirror else patch


def paste(frame: np.ndarray, patch: np.ndarray, centre: tuple[float, float]) -> tuple[int, int, int, int]:
    """Paste a head patch centred at centre (clipped to the frame); return its face's box (x, y, w, h)."""
    side = patch.shape[0]
    left, top = round(centre[0] - side / 2), round(centre[1] - side / 2)
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + side, frame.shape[1]), min(top + side, frame.shape[0])
    frame[y0:y1, x0:x1] = patch[y0 - top:y1 - top, x0 - left:x1 - left]
    scale = side / HEAD[2]
    fx, fy, fw, fh = (round(v * scale) for v in FACE_IN_HEAD)
    return left + fx, top + fy, fw, fh


def visible_share(box: tuple, cover: tuple | None) -> float:
    """The share of a box not under cover (another box, x, y, w, h)."""
    if cover is None:
        return 1.0
    x, y, w, h = box
    cx, cy, cw, ch = cover
    inter = max(0, min(x + w, cx + cw) - max(x, cx)) * max(0, min(y + h, cy + ch) - max(y, cy))
    return 1 - inter / (w * h)


def make_clips(photo_bgr: np.ndarray) -> dict[str, tuple[list[np.ndarray], list[dict[int, tuple]]]]:
    """Each clip's frames (BGR) and, per frame, the visible faces' ground-truth boxes by person."""
    from video import PHOTO_FACE, camera_path, render_frame

    clips = {}
    frames, truth = [], []
    x, y, w, h = 155, 105, 222, 222
    for i in range(150):
        scale, cx, cy = camera_path(i, 150)
        frames.append(render_frame(photo_bgr, scale, cx, cy))
        truth.append({1: (round(cx + scale * (x - PHOTO_FACE[0])), round(cy + scale * (y - PHOTO_FACE[1])),
                          round(scale * w), round(scale * h))})
    clips["pan"] = (frames, truth)

    side = 150
    a, b = head_patch(photo_bgr, side), head_patch(photo_bgr, side, mirror=True)
    for name, (ya, yb) in {"passing": (185, 295), "crossing": (240, 240)}.items():
        frames, truth = [], []
        for i in range(120):
            t = i / 119
            frame = np.full((SIZE[1], SIZE[0], 3), 128, np.uint8)
            box_a = paste(frame, a, (90 + 460 * t, ya))  # left to right, behind
            box_b = paste(frame, b, (550 - 460 * t, yb))  # right to left, in front
            head_b = (round(550 - 460 * t - side / 2), round(yb - side / 2), side, side)
            faces = {2: box_b}
            if visible_share(box_a, head_b) >= 0.7:  # a face mostly hidden is not expected to be found
                faces[1] = box_a
            frames.append(frame)
            truth.append(faces)
        clips[name] = (frames, truth)

    frames, truth = [], []
    for i in range(120):
        frame = np.full((SIZE[1], SIZE[0], 3), 128, np.uint8)
        box = paste(frame, head_patch(photo_bgr, 200), (200 + 2.5 * i, 240))
        covered = 50 <= i < 58
        if covered:
            x, y, w, h = box
            frame[y - 10:y + h + 10, x - 10:x + w + 10] = 90  # a card over the face: 8 missed frames
        frames.append(frame)
        truth.append({} if covered else {1: box})
    clips["gap"] = (frames, truth)
    return clips


# ---------------------------------------------------------------------------- scoring

def match_truth(boxes: list[tuple], truth: dict[int, tuple]) -> list[int | None]:
    """The person each detection is (by IoU >= MATCH_IOU, one to one), or None."""
    from scipy.optimize import linear_sum_assignment

    from ferkeras.media.detect import iou

    people = list(truth)
    matched: list[int | None] = [None] * len(boxes)
    if boxes and people:
        overlap = iou(np.array(boxes), np.array([truth[p] for p in people]))
        for r, c in zip(*linear_sum_assignment(-overlap), strict=True):
            if overlap[r, c] >= MATCH_IOU:
                matched[r] = people[c]
    return matched


def score(detections: list[list[tuple]], truth: list[dict], ids: list[list[int]]) -> dict:
    """Tracks created, ids per face, id switches, detections without an id, false tracks."""
    per_person: dict[int, list[tuple[int, int]]] = {}  # person: (frame, track id) where matched
    matched_ids, all_ids, unlabeled = set(), set(), 0
    for frame, (boxes, faces, frame_ids) in enumerate(zip(detections, truth, ids, strict=True)):
        for person, track in zip(match_truth(boxes, faces), frame_ids, strict=True):
            if track == -1:
                unlabeled += 1
                continue
            all_ids.add(track)
            if person is not None:
                per_person.setdefault(person, []).append((frame, track))
                matched_ids.add(track)
    switches = [f"person {person} at frame {f}: id {p} -> {q}" for person, seq in sorted(per_person.items())
                for (_, p), (f, q) in zip(seq, seq[1:], strict=False) if p != q]
    return {"tracks": len(all_ids),
            "ids per face": "/".join(str(len({t for _, t in s})) for _, s in sorted(per_person.items())),
            "switches": switches, "unlabeled": unlabeled, "false tracks": len(all_ids - matched_ids)}


def longest_miss(detections: list[list[tuple]], truth: list[dict], person: int) -> int:
    """The most consecutive frames between two in which a detection matches person (hidden or missed)."""
    seen = [i for i, (boxes, faces) in enumerate(zip(detections, truth, strict=True))
            if person in match_truth(boxes, faces)]
    return max((b - a - 1 for a, b in zip(seen, seen[1:], strict=False)), default=0)


def iou_tracker_run(detections: list[list[tuple]], repeats: int, **options) -> tuple[list[list[int]], float]:
    """IoUTracker's ids per frame, and the median over repeats of its mean us per update."""
    from ferkeras.media.track import IoUTracker

    times, ids = [], []
    for _ in range(repeats):
        tracker, ids, elapsed = IoUTracker(**options), [], []
        for boxes in detections:
            start = time.perf_counter()
            ids.append(tracker.update(boxes))
            elapsed.append(time.perf_counter() - start)
        times.append(1e6 * sum(elapsed) / len(elapsed))
    return ids, statistics.median(times)


def library_run(python: str, script: str, detections: list[list[tuple]], repeats: int
                ) -> tuple[list[list[int]], float, str]:
    """A library tracker's ids per frame (-1: none yet), median us per update, and its package version."""
    done = subprocess.run([python, "-c", script, str(repeats)], input=json.dumps(detections),
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"tracker failed in {python}: {done.stderr.strip().splitlines()[-1]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return out["ids"], statistics.median(out["us"]), out["version"]


# ---------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trackers-python", default="/tmp/trk-venv/bin/python",
                        help="python of a venv with trackers and norfair-enough (absent: IoUTracker only)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-norfair", action="store_true", help="skip norfair (not in that venv)")
    args = parser.parse_args()

    from video import grace_hopper_bgr

    from ferkeras.media.detect import HaarDetector
    from ferkeras.media.images import as_rgb, to_gray

    haar = HaarDetector()
    clips = make_clips(grace_hopper_bgr())
    notes: list[str] = []
    print("| clip | frames | faces in truth (frame-faces) | detections (matched) | tracker | tracks created "
          "| ids per face | id switches | detections without id | false tracks | us per update |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, (frames, truth) in clips.items():
        detections = []
        for bgr in frames:
            rgb = as_rgb(bgr, "bgr")
            detections.append([d.box for d in haar(rgb, to_gray(rgb))])
        matched = sum(p is not None for boxes, faces in zip(detections, truth, strict=True)
                      for p in match_truth(boxes, faces))
        notes.append(f"{name}: frames without a detection between two with one (longest), by person: "
                     + ", ".join(f"{p} {longest_miss(detections, truth, p)}" for p in sorted({p for t in truth
                                                                                             for p in t})))
        head = (f"| {name} | {len(frames)} | {len({p for t in truth for p in t})} "
                f"({sum(map(len, truth))}) | {sum(map(len, detections))} ({matched})")
        results = {}
        ours, ours_us = iou_tracker_run(detections, args.repeats)
        results["IoUTracker"] = (score(detections, truth, ours), ours_us)
        ours, ours_us = iou_tracker_run(detections, args.repeats, max_missed=30)
        results["IoUTracker(max_missed=30)"] = (score(detections, truth, ours), ours_us)
        if Path(args.trackers_python).is_file():
            theirs, theirs_us, version = library_run(args.trackers_python, BYTETRACK_SCRIPT, detections,
                                                     args.repeats)
            results[f"ByteTrack (trackers {version})"] = (score(detections, truth, theirs), theirs_us)
            if not args.no_norfair:
                theirs, theirs_us, version = library_run(args.trackers_python, NORFAIR_SCRIPT, detections,
                                                         args.repeats)
                results[f"norfair-enough {version}"] = (score(detections, truth, theirs), theirs_us)
        for tracker, (s, us) in results.items():
            print(f"{head} | {tracker} | {s['tracks']} | {s['ids per face']} | {len(s['switches'])} | "
                  f"{s['unlabeled']} | {s['false tracks']} | {us:.0f} |", flush=True)
            notes += [f"{name}, {tracker}: id switch, {switch}" for switch in s["switches"]]
    print("\n".join(["", *notes]))


if __name__ == "__main__":
    main()
