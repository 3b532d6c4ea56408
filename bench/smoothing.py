"""Benchmark `--smooth` (EMA of a track's probabilities): label flips on a steady face, lag after a change.

    python bench/smoothing.py [--data /work/shared/datasets/fer2013] [--faces 60] [--pairs 60]
                              [--clip-frames 150]

For alpha in 1 (none), 0.7, 0.5, 0.3, 0.2, through ferkeras.media.track.Smoother on the
probabilities that FaceRecognizer.classify gives (shipped int8 model, predict's default TTA):

- steady, FER2013: --faces PublicTest faces, each made into 60 frames with the jitter a detector's
  box and a camera give (random shift up to 2 px, zoom up to 4%, brightness +-10, noise sigma 3);
  label flips per 100 frames (a flip: the label differs from the frame before);
- steady, video: bench/video.py's grace_hopper clip (panned, zoomed, re-encoded), its first
  --clip-frames frames through analyze_video with Haar: label flips per 100 frames of the track;
- change: --pairs pairs of PublicTest faces of different expressions, both labelled right with
  probability >= 0.8 on the clean face; 30 jittered frames of one, then 30 of the other; lag is
  the frames from the cut (0: the cut frame itself) until the label is the second face's, and
  'settled' until it stays so.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/video.py's clip

import numpy as np  # noqa: E402

ALPHAS = (1.0, 0.7, 0.5, 0.3, 0.2)
FRAMES = 60
CUT = 30


def jittered(face: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """frames copies of a 48x48 face, each shifted, zoomed, brightened and noised a little."""
    import cv2

    out = np.empty((frames, *face.shape), np.uint8)
    centre = (face.shape[1] / 2, face.shape[0] / 2)
    for i in range(frames):
        matrix = cv2.getRotationMatrix2D(centre, 0, 1 + rng.uniform(-0.04, 0.04))
        matrix[:, 2] += rng.uniform(-2, 2, 2)
        moved = cv2.warpAffine(face, matrix, face.shape[::-1], flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
        noisy = moved + rng.uniform(-10, 10) + rng.normal(0, 3, face.shape)
        out[i] = np.clip(noisy, 0, 255).astype(np.uint8)
    return out


def smoothed_labels(probabilities: np.ndarray, alpha: float) -> np.ndarray:
    """The label of each frame of one track after Smoother(alpha)."""
    from ferkeras.media.track import Smoother

    smoother = Smoother(alpha)
    return np.array([int(np.argmax(smoother.update(1, p))) for p in probabilities])


def flips_per_100(labels: np.ndarray) -> float:
    """Label changes between consecutive frames, per 100 frames."""
    return 100 * float(np.sum(labels[1:] != labels[:-1])) / max(1, len(labels) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/work/shared/datasets/fer2013")
    parser.add_argument("--faces", type=int, default=60)
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--clip-frames", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from predict_tta import publictest_files
    from video import make_clip

    from ferkeras.media.frames import VideoSource
    from ferkeras.media.images import read_image, to_gray
    from ferkeras.predict import DEFAULT_TTA, FaceRecognizer
    from ferkeras.video import analyze_video

    rng = np.random.default_rng(args.seed)
    recognizer = FaceRecognizer("shipped")
    files, labels = publictest_files(Path(args.data))
    print(f"model: {recognizer.runner.name}, tta {DEFAULT_TTA}; seed {args.seed}")

    # steady FER2013 faces
    chosen = rng.choice(len(files), args.faces, replace=False)
    steady = {alpha: [] for alpha in ALPHAS}
    for index in chosen:
        probabilities = recognizer.classify(jittered(to_gray(read_image(files[index])), FRAMES, rng))
        for alpha in ALPHAS:
            steady[alpha].append(flips_per_100(smoothed_labels(probabilities, alpha)))

    # steady real video: the raw probabilities of its track, smoothed afterwards for each alpha
    clip_probabilities = []
    with VideoSource(make_clip(), max_frames=args.clip_frames) as video:
        for result in analyze_video(video, recognizer, smooth=1.0):
            clip_probabilities += [f.probabilities for f in result.faces if f.track_id == 1]
    clip_probabilities = np.array(clip_probabilities)
    clip_labels = [recognizer.labels[i] for i in np.argmax(clip_probabilities, axis=1)]
    shares = {name: clip_labels.count(name) / len(clip_labels) for name in sorted(set(clip_labels))}

    # a real change of expression: confidently right faces, cut from one to another
    clean = recognizer.classify(np.stack([to_gray(read_image(f)) for f in files]))
    sure = np.flatnonzero((np.argmax(clean, axis=1) == labels) & (clean.max(axis=1) >= 0.8))
    lags = {alpha: [] for alpha in ALPHAS}
    settles = {alpha: [] for alpha in ALPHAS}
    for _ in range(args.pairs):
        first = rng.choice(sure)
        second = rng.choice(sure[labels[sure] != labels[first]])
        faces = np.concatenate([jittered(to_gray(read_image(files[first])), CUT, rng),
                                jittered(to_gray(read_image(files[second])), FRAMES - CUT, rng)])
        probabilities = recognizer.classify(faces)
        for alpha in ALPHAS:
            after = smoothed_labels(probabilities, alpha)[CUT:] == labels[second]
            lags[alpha].append(int(np.argmax(after)) if after.any() else FRAMES - CUT)
            wrong = np.flatnonzero(~after)
            settles[alpha].append(int(wrong[-1]) + 1 if len(wrong) else 0)

    print(f"\nsteady FER2013: {args.faces} faces x {FRAMES} jittered frames; video: "
          f"{len(clip_probabilities)} frames of the grace_hopper clip's track (unsmoothed labels: "
          + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()) + ")")
    print(f"change: {args.pairs} pairs of {len(sure)} PublicTest faces labelled right with p >= 0.8, "
          f"cut at frame {CUT}\n")
    print("| alpha | flips/100 frames, FER2013 steady (mean) | faces with any flip | flips/100 frames, "
          "grace_hopper video | lag, frames (mean / 90th pct / max) | settled, frames (mean / 90th pct) "
          "| lag at 30 frames/s, ms (mean) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for alpha in ALPHAS:
        video_flips = flips_per_100(smoothed_labels(clip_probabilities, alpha))
        lag, settle = np.array(lags[alpha]), np.array(settles[alpha])
        print(f"| {alpha:g} | {np.mean(steady[alpha]):.2f} | {np.mean(np.array(steady[alpha]) > 0):.0%} | "
              f"{video_flips:.2f} | {lag.mean():.2f} / {np.percentile(lag, 90):.0f} / {lag.max()} | "
              f"{settle.mean():.2f} / {np.percentile(settle, 90):.0f} | {1000 * lag.mean() / 30:.0f} |")


if __name__ == "__main__":
    main()
