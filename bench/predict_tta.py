"""Benchmark predict's test-time augmentation: PublicTest accuracy against ms per face, per TTA method.

    python bench/predict_tta.py [--data /work/shared/datasets/fer2013] [--rounds 3] [--latency-faces 300]
                                [--large]

Through predict's own path: ferkeras.predict.predict(files, model=FaceRecognizer(model, tta=...),
detect=False) on FER2013's PublicTest jpgs (3,589 48x48 faces), as `ferkeras predict --no-detect`
takes them, for tta none / flip / shifts, with the shipped int8 model and the float32 one
(exported/model_float32.tflite), and with --large the large model's int8 file (`--model large`,
exported/large/model_int8.tflite). Printed: accuracy, ms per face of the whole predict() call (file
reading included, faces batched), and ms per face one at a time (FaceRecognizer.classify on one
crop, as a video frame with one face calls it), beside the ms of Haar detection on a 640x480
frame. The contenders run interleaved, --rounds times; times are medians over rounds.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402

MODELS = {"int8 (shipped)": "shipped", "float32": "exported/model_float32.tflite"}
TTAS = ("none", "flip", "shifts")


def publictest_files(root: Path) -> tuple[list[Path], np.ndarray]:
    """PublicTest's images (test/<class>/*.jpg) and their labels, in load_dataset's order."""
    from ferkeras.data import split_files

    if not (root / "test").is_dir():
        sys.exit(f"{root}: no test/<class>/*.jpg (FER2013 in Kaggle folders)")
    return split_files(root / "test")


def frame_640x480() -> np.ndarray:
    """grace_hopper.jpg scaled to 480 rows and centred on a 640x480 gray frame (RGB)."""
    import cv2
    import matplotlib.cbook

    from ferkeras.media.images import read_image

    photo = read_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    width = round(photo.shape[1] * 480 / photo.shape[0])
    scaled = cv2.resize(photo, (width, 480), interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640, 3), 128, np.uint8)
    left = (640 - scaled.shape[1]) // 2
    frame[:, left:left + scaled.shape[1]] = scaled
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/work/shared/datasets/fer2013")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-faces", type=int, default=300)
    parser.add_argument("--large", action="store_true", help="also the shipped large model (int8)")
    args = parser.parse_args()
    models = {**MODELS, "large int8": "large"} if args.large else MODELS

    from ferkeras.media.detect import HaarDetector
    from ferkeras.media.images import read_image, to_gray
    from ferkeras.predict import FaceRecognizer, predict

    files, labels = publictest_files(Path(args.data))
    recognizers = {(m, t): FaceRecognizer(model=path, tta=t) for m, path in models.items() for t in TTAS}
    crops = np.stack([to_gray(read_image(f)) for f in files[:: max(1, len(files) // args.latency_faces)]])
    print(f"{len(files)} PublicTest faces; {len(crops)} for one-at-a-time latency; {args.rounds} rounds")

    accuracy, batch_ms, single_ms = {}, {key: [] for key in recognizers}, {key: [] for key in recognizers}
    haar, frame = HaarDetector(), frame_640x480()
    haar_ms = []
    for round_ in range(args.rounds):
        order = list(recognizers) if round_ % 2 == 0 else list(recognizers)[::-1]  # interleave both ways
        for key in order:
            recognizer = recognizers[key]
            start = time.perf_counter()
            results = predict(files, model=recognizer, detect=False)
            batch_ms[key].append((time.perf_counter() - start) * 1000 / len(files))
            predicted = np.array([np.argmax(r.faces[0].probabilities) for r in results])
            accuracy[key] = float(np.mean(predicted == labels))
            recognizer.classify(crops[:1])  # warm-up at batch 1 (the interpreter is resized)
            start = time.perf_counter()
            for crop in crops:
                recognizer.classify(crop[None])
            single_ms[key].append((time.perf_counter() - start) * 1000 / len(crops))
            gray = to_gray(frame)
            start = time.perf_counter()
            for _ in range(5):
                haar(frame, gray)
            haar_ms.append((time.perf_counter() - start) * 1000 / 5)

    haar_median = statistics.median(haar_ms)
    found = len(haar(frame, to_gray(frame)))
    print(f"\nHaar detection on a 640x480 frame (grace_hopper, {found} face found): {haar_median:.1f} ms "
          f"(median of {len(haar_ms)} x 5 calls)\n")
    print("| model | tta | model passes | PublicTest accuracy | vs none | ms/face, predict() on files "
          "| ms/face, one at a time | x none, one at a time | share of a Haar frame |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    passes = {"none": 1, "flip": 2, "shifts": 10}
    for (model, tta), acc in accuracy.items():
        base = (model, "none")
        single = statistics.median(single_ms[(model, tta)])
        print(f"| {model} | {tta} | {passes[tta]} | {acc:.4f} | {100 * (acc - accuracy[base]):+.2f} pt | "
              f"{statistics.median(batch_ms[(model, tta)]):.3f} | {single:.3f} | "
              f"{single / statistics.median(single_ms[base]):.2f} | {single / haar_median:.1%} |")


if __name__ == "__main__":
    main()
