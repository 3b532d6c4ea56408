"""What post-hoc calibration and logit adjustment are worth, before any retraining.

    python bench/posthoc.py [EXPORT_DIR] [--data ../shared/datasets/fer2013] [--engine keras]
                            [--taus 0,0.25,0.5,0.75,1] [--folds 2]

Each model's probabilities p on PublicTest (the image alone, and with its mirror as predict's
flip TTA gives) are turned into softmax(log(p) / T - tau * log(prior)): T, a temperature fitted
by negative log-likelihood, and tau, the logit adjustment of Menon et al. (2021, "Long-tail
learning via logit adjustment"), with prior the class frequencies of train. Each row prints the
figures with T fitted on all of PublicTest, and (the honest ones) cross-fitted: T fitted on
--folds - 1 parts and measured on the part left out, for every part. PublicTest is the only
labelled data the shipped models never trained on; PrivateTest is never read.
"""

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout

import numpy as np  # noqa: E402

from ferkeras.metrics import rescale  # noqa: E402


def adjusted(probs: np.ndarray, temperature: float, tau: float, prior: np.ndarray) -> np.ndarray:
    """softmax(log(probs) / temperature - tau * log(prior)), row by row."""
    return rescale(probs, temperature, -tau * np.log(prior))


def fit_temperature(probs: np.ndarray, labels: np.ndarray, tau: float, prior: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of the adjusted probabilities."""
    from scipy.optimize import minimize_scalar

    rows = np.arange(len(labels))

    def nll(temperature: float) -> float:
        return -np.mean(np.log(adjusted(probs, temperature, tau, prior)[rows, labels]))

    return float(minimize_scalar(nll, bounds=(0.1, 10), method="bounded").x)


def cross_fitted(probs: np.ndarray, labels: np.ndarray, tau: float, prior: np.ndarray,
                 folds: int, seed: int = 0) -> np.ndarray:
    """Each part's probabilities adjusted with the temperature fitted on the other parts."""
    from sklearn.model_selection import StratifiedKFold

    out = np.zeros_like(probs)
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(probs, labels):
        temperature = fit_temperature(probs[fit], labels[fit], tau, prior)
        out[held] = adjusted(probs[held], temperature, tau, prior)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", nargs="?", default=str(REPO / "exported"))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "fer2013"))
    parser.add_argument("--engine", default="keras", help="keras, float32 or int8: which file")
    parser.add_argument("--taus", default="0,0.25,0.5,0.75,1", help="logit adjustments to try")
    parser.add_argument("--folds", type=int, default=2, help="parts of PublicTest to cross-fit T on")
    args = parser.parse_args()

    from ferkeras.data import load_dataset
    from ferkeras.evaluate import view_probabilities
    from ferkeras.export import FORMATS
    from ferkeras.metrics import compute_metrics, figures_of
    from ferkeras.runners import load_runner

    dataset = load_dataset(args.data)
    train, test = dataset.splits["train"], dataset.splits["test"]
    prior = np.bincount(train.labels, minlength=7) / len(train.labels)
    runner = load_runner(Path(args.export_dir) / FORMATS[args.engine].file)
    image, mirror = view_probabilities(runner, test.images, mirror=True)
    print(f"{args.export_dir} ({args.engine}) on PublicTest, {len(test):,} images; cross-fitted "
          f"over {args.folds} stratified parts\n")
    print(f"{'view':<7}{'tau':>5}{'T':>7} | {'accuracy':>9}{'balanced':>9}{'worst':>7}{'ECE':>7}"
          f"{'NLL':>7} | cross-fitted: {'accuracy':>9}{'balanced':>9}{'worst':>7}{'ECE':>7}{'NLL':>7}")
    for view, probs in (("single", image), ("flip", (image + mirror) / 2)):
        as_it_is = figures_of(compute_metrics(test.labels, probs))
        print(f"{view:<7}{'-':>5}{'-':>7} | {columns(as_it_is)} | as it is")
        for tau in (float(t) for t in args.taus.split(",")):
            temperature = fit_temperature(probs, test.labels, tau, prior)
            fitted = figures_of(compute_metrics(test.labels, adjusted(probs, temperature, tau, prior)))
            honest = figures_of(compute_metrics(
                test.labels, cross_fitted(probs, test.labels, tau, prior, args.folds)))
            print(f"{view:<7}{tau:>5g}{temperature:>7.3f} | {columns(fitted)} | {'':>14}{columns(honest)}",
                  flush=True)


def columns(figures: dict) -> str:
    """Accuracy, balanced accuracy, worst recall, ECE and NLL, in the table's columns."""
    return (f"{figures['accuracy']:>9.4f}{figures['balanced_accuracy']:>9.4f}"
            f"{figures['worst_recall']:>7.3f}{figures['ece']:>7.4f}{figures['nll']:>7.4f}")

if __name__ == "__main__":
    main()
