"""Benchmark quantisation fidelity: int8 and int16x8 TFLite against the Keras model, side by side.

    python bench/quantization.py [EXPORT_DIR] [--data ../shared/datasets/fer2013]
                                 [--calibration 30,100,300,1000] [--draws 2]

EXPORT_DIR (default: the repo's exported/) holds model.keras and saved_model/. For each number
of calibration images (drawn from the data's train split, --draws times with different seeds)
each format is converted as `ferkeras export` converts it, then run on the test split
(PublicTest): top-1 agreement with the Keras model, accuracy, and how many images have a tie
at the top of the quantised output (which argmax gives to the first class).
"""

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout

import numpy as np  # noqa: E402

FORMATS = ("int8", "int16x8")


def top_ties(probs: np.ndarray) -> np.ndarray:
    """Whether the two largest probabilities of each row are equal."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    return top2[:, 0] == top2[:, 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", nargs="?", default=str(REPO / "exported"))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "fer2013"))
    parser.add_argument("--calibration", default="30,100,300,1000",
                        help="numbers of calibration images, comma-separated")
    parser.add_argument("--draws", type=int, default=2, help="random draws of each number")
    args = parser.parse_args()

    from ferkeras.data import load_dataset
    from ferkeras.errors import FerkerasError
    from ferkeras.evaluate import predict
    from ferkeras.export import FORMATS as EXPORT_FORMATS
    from ferkeras.export import convert, representative_images
    from ferkeras.model import load_model
    from ferkeras.predict import TFLiteRunner

    export_dir = Path(args.export_dir)
    try:
        dataset = load_dataset(args.data)
        train, test = dataset.splits["train"], dataset.splits["test"]
        keras_probs = predict(load_model(export_dir / "model.keras"), test.images)
    except (FerkerasError, KeyError) as e:
        sys.exit(f"Error: {e}")
    keras_top = keras_probs.argmax(1)
    print(f"{export_dir}: Keras accuracy {np.mean(keras_top == test.labels):.4f} on "
          f"{len(test):,} test images; calibration images from {len(train):,} train images\n")
    header = f"{'format':<9}{'calibration':>12}{'draw':>5}{'agreement':>11}{'accuracy':>10}{'top ties':>9}"
    print(header)
    print("-" * len(header))
    summary = {}
    with tempfile.TemporaryDirectory(prefix="ferkeras-quant-") as tmp:
        for count in (int(c) for c in args.calibration.split(",")):
            for draw in range(args.draws):
                # As `ferkeras export` draws them: draw 0 with 300 images is the shipped file.
                calibration = representative_images(train.images, count, seed=draw)
                for name in FORMATS:
                    path = Path(tmp) / f"{name}.tflite"
                    path.write_bytes(convert(export_dir / "saved_model", EXPORT_FORMATS[name],
                                             calibration))
                    probs = TFLiteRunner(path)(test.images)
                    top = probs.argmax(1)
                    agreement = float(np.mean(top == keras_top))
                    summary.setdefault(name, []).append(agreement)
                    print(f"{name:<9}{count:>12,}{draw:>5}{agreement:>11.2%}"
                          f"{np.mean(top == test.labels):>10.4f}{top_ties(probs).sum():>9}",
                          flush=True)
    print()
    for name, values in summary.items():
        print(f"{name}: agreement {min(values):.2%} to {max(values):.2%} "
              f"(bar {EXPORT_FORMATS[name].min_agreement:.0%})")
    if len(summary) == 2:
        misses = [1 - np.mean(summary[n]) for n in FORMATS]
        print(f"int16x8 changes {misses[0] / max(misses[1], 1e-9):.1f}x fewer top classes than int8")


if __name__ == "__main__":
    main()
