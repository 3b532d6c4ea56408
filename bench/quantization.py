"""Benchmark quantisation fidelity: int8 and int16x8 TFLite against the Keras model, side by side.

    python bench/quantization.py [EXPORT_DIR] [--data ../shared/datasets/fer2013]
                                 [--calibration 30,100,300,1000] [--draws 2]

EXPORT_DIR (default: the repo's exported/) holds model.keras and saved_model/. For each number
of calibration images (drawn from the data's train split, --draws times with different seeds)
each format is converted as `ferkeras export` converts it, then run on the test split
(PublicTest): top-1 agreement with the Keras model, accuracy, and how many images have a tie
at the top of the quantised output (which argmax gives to the first class).

Two rows split int8's changes by cause. int16x8 keeps int8's weights but makes activations 256
times finer: what the weights change. int8-rw is int8 converted from a copy of the model whose
weights are already on int8's grid, compared with that copy: what int8 activations change.
"""

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout

import numpy as np  # noqa: E402

FORMATS = ("int8", "int16x8")
ROUNDED = "int8-rw"  # int8 of the model with its weights rounded first, against that model


def round_weights_to_int8(model):
    """A copy of a model whose kernels are on int8 TFLite's grid, so only its activations round.

    The converter rounds each output channel of a kernel to 255 levels of max |w| / 127. It
    first folds each batch norm into the conv before it, but that scales whole output
    channels, which moves the levels with the weights: rounding the kernel as it is lands the
    folded kernel on the converter's levels too.
    """
    import keras

    from ferkeras.runners import dequantize, quantize

    rounded = keras.models.clone_model(model)
    rounded.set_weights(model.get_weights())
    for layer in rounded.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel = layer.kernel.numpy()
            step = np.abs(kernel.reshape(-1, kernel.shape[-1])).max(0) / 127
            step = np.where(step > 0, step, 1.0)
            layer.kernel.assign(dequantize(quantize(kernel, step, 0, np.int8), step, 0))
    return rounded


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
    from ferkeras.runners import TFLiteRunner

    export_dir = Path(args.export_dir)
    try:
        dataset = load_dataset(args.data)
        train, test = dataset.splits["train"], dataset.splits["test"]
        model = load_model(export_dir / "model.keras")
    except (FerkerasError, KeyError) as e:
        sys.exit(f"Error: {e}")
    keras_top = predict(model, test.images).argmax(1)
    rounded = round_weights_to_int8(model)
    rounded_top = predict(rounded, test.images).argmax(1)
    print(f"{export_dir}: Keras accuracy {np.mean(keras_top == test.labels):.4f} on "
          f"{len(test):,} test images; calibration images from {len(train):,} train images")
    print(f"Keras with its weights rounded to int8's grid: accuracy "
          f"{np.mean(rounded_top == test.labels):.4f}, agreement with Keras "
          f"{np.mean(rounded_top == keras_top):.2%}\n")
    # Each format's reference: its source model's Keras answers.
    engines = [(name, export_dir / "saved_model", EXPORT_FORMATS[name], keras_top)
               for name in FORMATS]
    header = f"{'format':<9}{'calibration':>12}{'draw':>5}{'agreement':>11}{'accuracy':>10}{'top ties':>9}"
    print(header)
    print("-" * len(header))
    summary = {}
    with tempfile.TemporaryDirectory(prefix="ferkeras-quant-") as tmp:
        rounded.export(f"{tmp}/rounded", format="tf_saved_model", verbose=False)
        engines.append((ROUNDED, Path(tmp) / "rounded", EXPORT_FORMATS["int8"], rounded_top))
        for count in (int(c) for c in args.calibration.split(",")):
            for draw in range(args.draws):
                # As `ferkeras export` draws them: draw 0 with 300 images is the shipped file.
                calibration = representative_images(train.images, count, seed=draw)
                for name, saved_model, fmt, reference_top in engines:
                    path = Path(tmp) / f"{name}.tflite"
                    path.write_bytes(convert(saved_model, fmt, calibration))
                    probs = TFLiteRunner(path)(test.images)
                    top = probs.argmax(1)
                    agreement = float(np.mean(top == reference_top))
                    summary.setdefault(name, []).append(agreement)
                    print(f"{name:<9}{count:>12,}{draw:>5}{agreement:>11.2%}"
                          f"{np.mean(top == test.labels):>10.4f}{top_ties(probs).sum():>9}",
                          flush=True)
    print()
    for name, values in summary.items():
        bar = EXPORT_FORMATS[name if name in FORMATS else "int8"].min_agreement
        print(f"{name}: agreement {min(values):.2%} to {max(values):.2%} (bar {bar:.0%})")
    changed = {name: 100 * (1 - np.mean(values)) for name, values in summary.items()}
    print(f"int8 changes {changed['int8']:.2f}% of answers on average: its weights alone "
          f"(int16x8) {changed['int16x8']:.2f}%, its activations alone ({ROUNDED}) "
          f"{changed[ROUNDED]:.2f}%")


if __name__ == "__main__":
    main()
