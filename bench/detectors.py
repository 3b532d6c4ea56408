"""Benchmark face detectors (haar, mtcnn, blazeface) and choose the face crop's framing by measurement.

    python bench/detectors.py [--data ../shared/datasets/fer2013] [--images 1000] [--runs 5]

1. Framing. FER2013's faces are 48x48 crops framed one way (roughly chin to forehead). Each of
   --images PublicTest faces (a seeded random draw) is enlarged x3 (144 px) and set in a 288 px
   canvas (edge pixels repeated outwards) so the detectors can find it; each detector's face is
   the detection that overlaps the true 48x48 frame most (IoU >= 0.3). From MTCNN's landmarks,
   where FER2013 puts the eyes and mouth in its frame (BlazeFace's too, whose mouth is one point);
   from the boxes, how they sit on the frame.
   Then every candidate crop of the re-found faces goes through the shipped model (no TTA), and
   its PublicTest accuracy is printed beside the original 48x48 crops' on the same faces.
2. Faces found on real photos with a known count: grace_hopper.jpg (1 face) and 2x2 mosaics
   (each 512x512: grace_hopper's head and three PublicTest faces enlarged to 176 px, one per
   256 px tile, a tile's face counted as found when a detection's centre is in its central
   176 px), and images without a face: two of matplotlib's sample images, its MRI slice and
   terrain maps, the lower part of grace_hopper.jpg (her uniform), noise and a gradient.
   Crowds: PublicTest faces in a grid on 640x480 and 1920x1080 frames, at several face sizes.
3. Face crops of other sizes: --images PublicTest faces (the same draw) enlarged to 64, 100 and
   224 px, each the whole image, as face crops come from other data sets (RAF-DB's 100 px,
   AffectNet's 224). Faces found by the detector alone and by predict's search
   (`Detector.framed`: where none is found, the image again inside a border), the answers' accuracy
   through predict's path (the shipped model, no TTA, a face not found a wrong answer), and the
   detections on the no-face images of 2 and on 300 random square crops of them, alone / framed.
4. Milliseconds per frame: median of --runs calls per image after a warm-up call, wall and CPU, on
   grace_hopper.jpg, a mosaic, crowds at 640x480 and 1920x1080, and a 640x480 image with no face;
   with each detector's ratio to Haar's time on the same frames in the same run.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402

from ferkeras.data import load_dataset  # noqa: E402
from ferkeras.media.crop import (  # noqa: E402
    EYE_ROW,
    FACE_SIDE,
    FACE_UNIT,
    crop_detection,
    crop_face,
    crop_landmarks,
)
from ferkeras.media.detect import iou  # noqa: E402
from ferkeras.media.detectors import make_detector  # noqa: E402
from ferkeras.media.images import read_image, to_gray  # noqa: E402
from ferkeras.runners import load_runner  # noqa: E402
from ferkeras.spec import IMAGE_SIZE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENLARGE = 3  # FER2013 face -> 144 px: well above both detectors' smallest face
PAD = IMAGE_SIZE * ENLARGE // 2  # canvas margin around it: the detectors need some context
GRACE_HOPPER_HEAD = (100, 60, 330, 330)  # x, y, w, h: head and hair of the sample photo
TILE, TILE_FACE = 256, 176  # mosaic tile and the FER2013 face enlarged into it
NO_FACE_PHOTOS = ("Minduka_Present_Blue_Pack.png", "logo2.png")  # matplotlib's: any detection is false
# Crowds: (frame width, height, face side in px); faces in a grid, a face side apart.
CROWDS = ((640, 480, 48), (640, 480, 96), (1920, 1080, 64), (1920, 1080, 128), (1920, 1080, 256))


def grace_hopper() -> np.ndarray:
    """matplotlib's sample photo, RGB."""
    import matplotlib.cbook

    return read_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def canvas(face: np.ndarray, enlarge: int = ENLARGE, pad: int = PAD) -> np.ndarray:
    """A 48x48 gray face enlarged and set in a larger gray canvas, its edge pixels repeated outwards."""
    import cv2

    big = cv2.resize(face, None, fx=enlarge, fy=enlarge, interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)


def best_match(detections, frame):
    """The detection overlapping frame most, if its IoU is at least 0.3, else None."""
    scored = [(float(iou([d.box], [frame])[0, 0]), d) for d in detections]
    best = max(scored, key=lambda s: s[0], default=(0, None))
    return best[1] if best[0] >= 0.3 else None


def square_box(box, margin: float, square: bool = True):
    """A box grown by margin x its side on each side (square: around the longer side first)."""
    x, y, w, h = box
    if square:
        x, y, w, h = x + w / 2 - max(w, h) / 2, y + h / 2 - max(w, h) / 2, max(w, h), max(w, h)
    x, y, w, h = x - margin * w, y - margin * h, w * (1 + 2 * margin), h * (1 + 2 * margin)
    return tuple(int(round(v)) for v in (x, y, w, h))


def crop_box(gray, box):
    """crop_face, with the part of the box outside the image filled by repeated edge pixels."""
    import cv2

    x, y, w, h = box
    pad = max(0, -x, -y, x + w - gray.shape[1], y + h - gray.shape[0])
    padded = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else gray
    return crop_face(padded, (x + pad, y + pad, w, h))


def quartiles(values) -> str:
    """median [25th-75th percentile]."""
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return f"{q2:.3f} [{q1:.3f}-{q3:.3f}]"


# ---------------------------------------------------------------------------- 1. framing

def landmark_framing(name: str, found: list) -> tuple[float, dict]:
    """Print where FER2013's frame puts a detector's landmarks; the eye row and sides' medians."""
    marks = np.stack([(d.landmarks - PAD) / (IMAGE_SIZE * ENLARGE) for _, d, _ in found])
    eyes, mouth = (marks[:, 0] + marks[:, 1]) / 2, (marks[:, 3] + marks[:, 4]) / 2
    eye_distance = np.hypot(*(marks[:, 1] - marks[:, 0]).T)
    eye_mouth = np.hypot(*(mouth - eyes).T)
    roll = np.degrees(np.arctan2(*(marks[:, 1] - marks[:, 0])[:, ::-1].T))
    print(f"\nFER2013's framing, from {name}'s landmarks (median [quartiles]; 1 = the 48-pixel side):")
    for what, values in (("eyes' midpoint, down from the top", eyes[:, 1]),
                         ("face midline (eyes-mouth), from the left", (eyes[:, 0] + mouth[:, 0]) / 2),
                         ("side / eye-to-mouth distance", 1 / eye_mouth),
                         ("side / eye distance", 1 / eye_distance),
                         ("side / mean of the two", 2 / (eye_mouth + eye_distance)),
                         ("eye roll, degrees", roll)):
        print(f"  {what:45} {quartiles(values)}")
    for what, values in (("eye-to-mouth", 1 / eye_mouth), ("eye distance", 1 / eye_distance),
                         ("mean", 2 / (eye_mouth + eye_distance))):
        q1, q2, q3 = np.percentile(values, [25, 50, 75])
        print(f"  spread of side / {what:15} (quartile range / median) {(q3 - q1) / q2:.3f}")
    sides = {"eye-mouth": float(np.median(1 / eye_mouth)), "eyes": float(np.median(1 / eye_distance)),
             "mean": float(np.median(2 / (eye_mouth + eye_distance)))}
    return float(np.median(eyes[:, 1])), sides


def framing(data: str, n: int, detectors: dict, runner) -> None:
    """Measure FER2013's framing with each detector and print the accuracy of candidate crops."""
    test = load_dataset(data).splits["test"]
    order = np.random.default_rng(0).permutation(len(test))[:n]
    images, labels = test.images[order], test.labels[order]
    frame = (PAD, PAD, IMAGE_SIZE * ENLARGE, IMAGE_SIZE * ENLARGE)
    found = {name: [] for name in detectors}  # (index, detection, canvas gray)
    seconds = dict.fromkeys(detectors, 0.0)
    for i, face in enumerate(images):
        gray = canvas(face)
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
        for name, detector in detectors.items():
            start = time.perf_counter()
            detections = detector(rgb, gray)
            seconds[name] += time.perf_counter() - start
            match = best_match(detections, frame)
            if match is not None:
                found[name].append((i, match, gray))
    print(f"{n} PublicTest faces re-found: " + ", ".join(
        f"{name} {len(found[name])} ({seconds[name]:.0f} s)" for name in detectors))
    medians = {name: landmark_framing(name, found[name]) for name in ("mtcnn", "blazeface")}
    eye_row, sides = medians["mtcnn"]

    print("\nDetector boxes on FER2013's frame (1 = the 48-pixel side):")
    for name in found:
        boxes = np.array([d.box for _, d, _ in found[name]], np.float64)
        rel = (boxes - [PAD, PAD, 0, 0]) / (IMAGE_SIZE * ENLARGE)
        print(f"  {name:9} width {quartiles(rel[:, 2])}  height {quartiles(rel[:, 3])}  "
              f"centre x {quartiles(rel[:, 0] + rel[:, 2] / 2)}  y {quartiles(rel[:, 1] + rel[:, 3] / 2)}")

    def accuracy(indices, crops) -> float:
        predicted = np.argmax(runner(np.stack(crops)), axis=1)
        return float(np.mean(predicted == labels[indices]))

    rows = []
    for name in found:
        indices = [i for i, _, _ in found[name]]
        rows.append((name, "original 48x48 crop (FER2013's own framing)", len(indices),
                     accuracy(indices, images[indices])))
        square = name != "haar"  # Haar's boxes are square already; the others' need not be
        if square:
            rows.append((name, "box as is (resized to a square)", len(indices),
                         accuracy(indices, [crop_box(g, d.box) for _, d, g in found[name]])))
        for margin in (-0.05, 0.0, 0.05, 0.1, 0.15, 0.2):
            crops = [crop_box(g, square_box(d.box, margin, square)) for _, d, g in found[name]]
            what = f"{'square ' if square else ''}box, margin {margin:+.2f} x side each side"
            rows.append((name, what, len(indices), accuracy(indices, crops)))
    indices = [i for i, _, _ in found["mtcnn"]]
    # Around the measured medians in the least spread unit; the other units at their medians.
    candidates = [("mtcnn", "mean", sides["mean"] * factor, eye_row + shift, True)
                  for factor in (0.85, 0.92, 1.0, 1.08, 1.15) for shift in (-0.04, 0.0, 0.04)]
    candidates += [("mtcnn", unit, sides[unit], eye_row, align) for unit in sides for align in (True, False)
                   if unit != "mean" or not align]
    candidates += [(name, FACE_UNIT, FACE_SIDE, EYE_ROW, align) for name in ("mtcnn", "blazeface")
                   for align in (True, False)]
    blaze_row, blaze_sides = medians["blazeface"]  # BlazeFace's own medians, against crop_detection's
    candidates += [("blazeface", unit, blaze_sides[unit], blaze_row, True) for unit in blaze_sides]
    for name, unit, side, row, align in candidates:
        crops = [crop_landmarks(g, d.landmarks, align, side, row, unit) for _, d, g in found[name]]
        what = (f"landmarks: side {side:.2f} x {unit}, eyes at {row:.3f}, "
                f"{'aligned' if align else 'not aligned'}")
        if (unit, side, row) == (FACE_UNIT, FACE_SIDE, EYE_ROW):
            what += " (crop_detection's framing)"
        rows.append((name, what, len(found[name]), accuracy([i for i, _, _ in found[name]], crops)))
    common = sorted(set.intersection(*({i for i, _, _ in found[name]} for name in found)))
    for name in found:  # the faces every detector re-found, each cropped as predict crops it
        by_index = {i: (d, g) for i, d, g in found[name]}
        crops = [crop_detection(by_index[i][1], by_index[i][0]) for i in common]
        rows.append((name, "crop_detection, on the faces all detectors re-found", len(common),
                     accuracy(common, crops)))
    rows.append(("-", "original 48x48 crops of those faces", len(common), accuracy(common, images[common])))
    print("\nShipped model's accuracy on the re-found faces, by crop (no TTA):\n")
    print("| detector | crop | faces | accuracy |\n| --- | --- | --- | --- |")
    for name, what, count, acc in rows:
        print(f"| {name} | {what} | {count} | {acc:.4f} |")
    print(f"\nall {n} faces, original 48x48 crops: {accuracy(np.arange(n), images):.4f}")


# ---------------------------------------------------------------------------- 2, 3. photos

def mosaics(data: str, count: int) -> list[tuple[np.ndarray, list[tuple[int, int, int, int]]]]:
    """2x2 mosaics (RGB) of grace_hopper's head and 3 PublicTest faces, with each face's region."""
    import cv2

    head = grace_hopper()
    x, y, w, h = GRACE_HOPPER_HEAD
    head = cv2.resize(head[y:y + h, x:x + w], (TILE, TILE), interpolation=cv2.INTER_AREA)
    test = load_dataset(data).splits["test"]
    faces = test.images[np.random.default_rng(1).permutation(len(test))[:3 * count]]
    pad = (TILE - TILE_FACE) // 2
    out = []
    for m in range(count):
        tiles = [head] + [np.repeat(cv2.resize(f, (TILE_FACE, TILE_FACE), interpolation=cv2.INTER_CUBIC)
                                    [:, :, None], 3, axis=2) for f in faces[3 * m:3 * m + 3]]
        tiles = [t if t.shape[0] == TILE else cv2.copyMakeBorder(t, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
                 for t in tiles]
        tiles = tiles[m % 4:] + tiles[:m % 4]  # the photo's head moves round the tiles
        image = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])
        regions = [(c * TILE + pad, r * TILE + pad, TILE_FACE, TILE_FACE) for r in (0, 1) for c in (0, 1)]
        out.append((np.ascontiguousarray(image), regions))
    return out


def sample_photo(name: str) -> np.ndarray:
    """One of matplotlib's sample images, RGB."""
    import matplotlib.cbook

    return read_image(matplotlib.cbook.get_sample_data(name, asfileobj=False))


def count_faces(detector, images) -> tuple[int, int, int]:
    """(faces found, faces missed, detections on no face) over (image, face regions) pairs."""
    found = missed = false = 0
    for rgb, regions in images:
        centres = [(d.box[0] + d.box[2] / 2, d.box[1] + d.box[3] / 2) for d in detector(rgb, to_gray(rgb))]
        inside = [[x <= cx < x + w and y <= cy < y + h for cx, cy in centres] for x, y, w, h in regions]
        found += sum(any(hits) for hits in inside)
        missed += sum(not any(hits) for hits in inside)
        false += sum(not any(face[j] for face in inside) for j in range(len(centres)))
    return found, missed, false


def milliseconds(detector, rgb: np.ndarray, runs: int) -> tuple[float, float]:
    """Median milliseconds of one detector call on rgb after a warm-up call: wall / CPU (all threads).

    CPU time is printed too because wall time on a shared machine counts other programs' turns.
    """
    gray = to_gray(rgb)
    detector(rgb, gray)
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        detector(rgb, gray)
        wall.append(1000 * (time.perf_counter() - start))
        cpu.append(1000 * (time.process_time() - start_cpu))
    return float(np.median(wall)), float(np.median(cpu))


def no_face_images() -> list[np.ndarray]:
    """Images without a face (RGB): matplotlib's two sample pictures, its MRI slice and terrain
    maps in a colour map, the lower part of grace_hopper.jpg (her uniform), noise and a gradient."""
    import gzip

    import matplotlib.cbook
    from matplotlib import colormaps

    def colored(values: np.ndarray, cmap: str) -> np.ndarray:
        values = (values - values.min()) / max(float(np.ptp(values)), 1e-9)
        return (colormaps[cmap](values)[:, :, :3] * 255).astype(np.uint8)

    with gzip.open(matplotlib.cbook.get_sample_data("s1045.ima.gz", asfileobj=False)) as f:
        mri = np.frombuffer(f.read(), np.uint16).reshape(256, 256).astype(np.float64)
    dem = np.load(matplotlib.cbook.get_sample_data("jacksboro_fault_dem.npz", asfileobj=False))["elevation"]
    topo = np.load(matplotlib.cbook.get_sample_data("topobathy.npz", asfileobj=False))["topo"]
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 640, dtype=np.float64)[None, :].repeat(480, axis=0)
    return [sample_photo(name) for name in NO_FACE_PHOTOS] + [
        np.repeat(colored(mri, "gray")[:, :, :1], 3, axis=2), colored(dem, "terrain"),
        colored(topo.astype(np.float64), "gist_earth"), np.ascontiguousarray(grace_hopper()[400:]),
        rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        np.repeat(ramp[:, :, None], 3, axis=2).astype(np.uint8)]


def crowd(data: str, width: int, height: int, side: int, seed: int = 2):
    """A frame (RGB) of PublicTest faces enlarged to side px in a grid, each in a tile of twice its
    side (edge pixels repeated, as the mosaics' faces), on gray; with each face's region."""
    import cv2

    tile = 2 * side
    columns, rows = width // tile, height // tile
    test = load_dataset(data).splits["test"]
    faces = test.images[np.random.default_rng(seed).permutation(len(test))[:columns * rows]]
    frame = np.full((height, width), 128, np.uint8)
    left, top = (width - columns * tile) // 2, (height - rows * tile) // 2
    regions = []
    for k, face in enumerate(faces):
        r, c = divmod(k, columns)
        grow = cv2.INTER_CUBIC if side > IMAGE_SIZE else cv2.INTER_AREA
        big = cv2.resize(face, (side, side), interpolation=grow)
        x, y = left + c * tile, top + r * tile
        frame[y:y + tile, x:x + tile] = cv2.copyMakeBorder(big, side // 2, side // 2, side // 2, side // 2,
                                                           cv2.BORDER_REPLICATE)
        regions.append((x + side // 2, y + side // 2, side, side))
    return np.ascontiguousarray(np.repeat(frame[:, :, None], 3, axis=2)), regions


def photos(data: str, detectors: dict, runs: int, count: int) -> None:
    """Print faces found and ms per frame per detector, side by side."""
    photo = grace_hopper()
    head = [(155, 105, 222, 222)]  # the face in the sample photo, by eye
    mosaic_images = mosaics(data, count)
    no_face = [(image, []) for image in no_face_images()]
    crowds = {(w, h, side): crowd(data, w, h, side) for w, h, side in CROWDS}
    print(f"\nFaces found (found / missed / detections on no face); {len(no_face)} images without a face: "
          "detections on them\n")
    crowd_heads = " | ".join(f"crowd {w}x{h}, {side} px ({len(c[1])})" for (w, h, side), c in crowds.items())
    print(f"| detector | grace_hopper.jpg (1 face) | {count} mosaics ({4 * count} faces) | no-face images | "
          f"{crowd_heads} |\n" + "| --- " * (4 + len(crowds)) + "|")
    for name, detector in detectors.items():
        counts = [count_faces(detector, images) for images in
                  ([(photo, head)], mosaic_images, no_face, *([c] for c in crowds.values()))]
        cells = ['/'.join(map(str, c)) for c in counts[:2]] + [str(counts[2][2])]
        cells += [f"{c[0]}/{c[1]}/{c[2]}" for c in counts[3:]]
        print(f"| {name} | {' | '.join(cells)} |")
    timed = {"grace_hopper 512x600": photo, "mosaic 512x512": mosaic_images[0][0],
             "crowd 640x480": crowds[(640, 480, 96)][0], "crowd 1920x1080": crowds[(1920, 1080, 128)][0],
             # BlazeFace searches deeper where it finds no face: what a frame without one costs
             "no face 640x480": next(image for image, _ in no_face if image.shape[:2] == (480, 640))}
    print(f"\nms per frame, wall / CPU (median of {runs} after a warm-up), and x Haar's wall time on the "
          "same frame (above 1: faster):\n")
    print(f"| detector | {' | '.join(timed)} |\n" + "| --- " * (1 + len(timed)) + "|")
    haar_wall = {}
    for name, detector in detectors.items():
        cells = []
        for what, image in timed.items():
            wall, cpu = milliseconds(detector, image, runs)
            haar_wall.setdefault(what, wall)
            cells.append(f"{wall:.0f} / {cpu:.0f} ({haar_wall[what] / wall:.1f}x)")
        print(f"| {name} | {' | '.join(cells)} |")


CROP_SIDES = (64, 100, 224)  # face crops' sides in other data sets: a small one, RAF-DB, AffectNet
NO_FACE_PIECES = 300  # random square crops of the no-face images, for the false faces framed finds


def no_face_pieces(images: list[np.ndarray], count: int, seed: int = 1) -> list[np.ndarray]:
    """count random squares of the images (40 px to the image's shorter side), each resized to 48,
    100, 224 px or left as it is: images with no face, shaped as face crops come."""
    import cv2

    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(count):
        image = images[rng.integers(len(images))]
        height, width = image.shape[:2]
        side = int(rng.integers(40, min(height, width) + 1))
        y, x = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        out = int(rng.choice([48, 100, 224, side]))
        pieces.append(cv2.resize(np.ascontiguousarray(image[y:y + side, x:x + side]), (out, out)))
    return pieces


def false_detections(detector, images: list[np.ndarray]) -> tuple[int, int]:
    """Detections on images with no face: by the detector alone, and by predict's search (framed)."""
    alone = framed = 0
    for image in images:
        gray = to_gray(image)
        found = len(detector(image, gray))
        alone += found
        framed += found or len(detector.in_border(image, gray))
    return alone, framed


def face_crops(data: str, count: int, detectors: dict, runner) -> None:
    """Print, per detector and crop side, faces found alone and framed, and the answers' accuracy."""
    import cv2

    test = load_dataset(data).splits["test"]
    chosen = np.random.default_rng(0).permutation(len(test))[:count]  # framing()'s draw
    faces, labels = test.images[chosen], test.labels[chosen]
    no_face = no_face_images()
    print(f"\nFace crops as whole images: {len(chosen)} PublicTest faces enlarged to each side; found "
          "by the detector alone / by predict's search (framed where none is found), accuracy of the "
          "framed answers (a face not found is wrong; the same faces' 48x48 crops: "
          f"{np.mean(runner.predict(faces).argmax(axis=1) == labels):.4f}), and detections on "
          f"{len(no_face)} no-face images alone / framed\n")
    pieces = no_face_pieces(no_face, NO_FACE_PIECES)
    print("| detector | " + " | ".join(f"{side} px: found alone / framed, accuracy" for side in CROP_SIDES)
          + f" | no-face detections | on {len(pieces)} random crops of them |\n"
          + "| --- " * (3 + len(CROP_SIDES)) + "|")
    for name, detector in detectors.items():
        cells = []
        for side in CROP_SIDES:
            alone = framed = 0
            answers = np.full(len(faces), -1)
            for i, face in enumerate(faces):
                gray = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
                rgb = np.repeat(gray[:, :, None], 3, axis=2)
                found = detector(rgb, gray)
                alone += bool(found)
                found = found or detector.in_border(rgb, gray)  # predict's search: detector.framed
                if found:
                    framed += 1
                    largest = max(found, key=lambda d: d.area)  # predict's answer
                    answers[i] = runner.predict(crop_detection(gray, largest)[None]).argmax()
            cells.append(f"{alone / len(faces):.1%} / {framed / len(faces):.1%}, "
                         f"{np.mean(answers == labels):.4f}")
        false_faces = [false_detections(detector, images) for images in (no_face, pieces)]
        print(f"| {name} | {' | '.join(cells)} | "
              + " | ".join(f"{alone} / {framed}" for alone, framed in false_faces) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "fer2013"),
                        help="FER2013 (its test split is PublicTest)")
    parser.add_argument("--images", type=int, default=1000, help="PublicTest faces for the framing "
                        "(0: skip it)")
    parser.add_argument("--mosaics", type=int, default=10, help="2x2 mosaics for the face count")
    parser.add_argument("--runs", type=int, default=5, help="timed calls per image")
    parser.add_argument("--parts", default="framing,crops,photos",
                        help="the parts to run: framing (1), crops (3), photos (2 and 4)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    detectors = {name: make_detector(name) for name in ("haar", "mtcnn", "blazeface")}
    if args.images and "framing" in parts:
        framing(args.data, args.images, detectors, load_runner("shipped"))
    if args.images and "crops" in parts:
        face_crops(args.data, args.images, detectors, load_runner("shipped"))
    if "photos" not in parts:
        return
    photos(args.data, {**detectors,
                       "mtcnn, min_face_size 48": make_detector("mtcnn", min_face_size=48),
                       "blazeface, min_face_size 48": make_detector("blazeface", min_face_size=48),
                       "blazeface, min_face_size 48, square_threshold 0.6": make_detector(
                           "blazeface", min_face_size=48, square_threshold=0.6),
                       "blazeface, threshold 0.5": make_detector("blazeface", threshold=0.5),
                       "blazeface, no deeper search": make_detector("blazeface", search_deeper=False),
                       "blazeface, whole image only": make_detector("blazeface", min_face_size=100_000)},
           args.runs, args.mosaics)


if __name__ == "__main__":
    main()
