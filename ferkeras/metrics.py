"""Metrics of predicted probabilities against labels: accuracy and balanced accuracy, per-class
precision, recall and F1, the worst class, calibration (expected calibration error, negative
log-likelihood, the reliability diagram's bins, a fitted temperature), the confusion matrix and
the sentences that describe it. NumPy and scikit-learn only: no model, no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ferkeras.errors import FerkerasError
from ferkeras.spec import CLASS_NAMES

CONFUSED_PAIRS = 3  # pairs named in the generated analysis


CALIBRATION_BINS = 15  # equal-width confidence bins of the expected calibration error


def calibration(labels: np.ndarray, probs: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """How far the top class's probability is from how often it is right: the expected calibration
    error over equal-width confidence bins, the negative log-likelihood, and each bin's figures
    (the reliability diagram's)."""
    from sklearn.metrics import log_loss

    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    index = np.minimum((confidence * bins).astype(int), bins - 1)  # a confidence of 1 is the last bin's
    rows, ece = [], 0.0
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        row = {"low": b / bins, "high": (b + 1) / bins, "images": count,
               "confidence": float(confidence[members].mean()) if count else None,
               "accuracy": float(correct[members].mean()) if count else None}
        if count:
            ece += count / len(labels) * abs(row["accuracy"] - row["confidence"])
        rows.append(row)
    # An int8 model's rows sum to 1 only within its output step: renormalised, as log_loss would
    # (with a warning), before it clips the zeros.
    probs = probs / probs.sum(axis=1, keepdims=True)
    nll = float(log_loss(labels, probs, labels=list(range(probs.shape[1]))))
    return {"ece": float(ece), "nll": nll, "bins": rows}


def rescale(probs: np.ndarray, temperature: float = 1.0, shift: np.ndarray | float = 0.0) -> np.ndarray:
    """softmax(log(probs) / temperature + shift), row by row: probabilities under a temperature
    (and a per-class logit shift), as a model whose logits were so scaled would give them."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1.0)) / temperature + shift
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(labels: np.ndarray, views: np.ndarray | Sequence[np.ndarray]) -> float:
    """The temperature T that minimises the negative log-likelihood of softmax(log(probs) / T),
    averaged over views (each TTA view's probabilities; one array is one view): above 1 for an
    overconfident model, below 1 for a timid one; it never changes a view's top class."""
    from scipy.optimize import minimize_scalar

    views = [views] if isinstance(views, np.ndarray) and views.ndim == 2 else list(views)
    rows, labels = np.arange(len(labels)), np.asarray(labels)

    def nll(temperature: float) -> float:
        probs = np.mean([rescale(view, temperature) for view in views], axis=0)
        return float(-np.mean(np.log(probs[rows, labels] + 1e-300)))

    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)


def answer_shares(probs: np.ndarray) -> np.ndarray:
    """Each class's share of the answers (top classes) of these probabilities."""
    probs = np.asarray(probs)
    return np.bincount(probs.argmax(axis=1), minlength=probs.shape[1]) / len(probs)


def fit_prior_bias(views: np.ndarray | Sequence[np.ndarray], prior: np.ndarray,
                   steps: int = 400) -> np.ndarray:
    """Per-class logit offsets under which each class is the answer for its prior share of these
    images: label-free, a model's answers moved to the class shares it was trained on. views: each
    TTA view's probabilities (one array is one view), answered as their mean once shifted.

    Each step moves every class's offset by log(prior / its share of the answers), in steps that
    shrink; the offsets whose shares came closest to the prior (total absolute difference) win.
    """
    views = [views] if isinstance(views, np.ndarray) and views.ndim == 2 else list(views)
    prior = np.asarray(prior, np.float64)
    if (prior <= 0).any():
        missing = ", ".join(name for name, share in zip(CLASS_NAMES, prior, strict=True) if share <= 0)
        raise FerkerasError(f"--match-prior: the training data has no images of {missing}, "
                            "so no share to answer it for")
    floor = 0.5 / len(views[0])  # a class answered for no image counts as half of one
    bias, best, best_gap = np.zeros(len(prior)), np.zeros(len(prior)), np.inf
    for step in range(steps):
        shares = answer_shares(np.mean([rescale(view, shift=bias) for view in views], axis=0))
        gap = float(np.abs(shares - prior).sum())
        if gap < best_gap:
            best, best_gap = bias.copy(), gap
        bias += 0.5 / (1 + step / 50) * (np.log(prior) - np.log(np.maximum(shares, floor)))
        bias -= bias.mean()  # offsets are defined up to a constant
    return best


def compute_metrics(labels: np.ndarray, probs: np.ndarray,
                    class_names: tuple[str, ...] = CLASS_NAMES, answered: np.ndarray | None = None) -> dict:
    """Accuracy and balanced accuracy, per-class precision/recall/F1, the worst class, calibration
    (ECE, NLL), confusion matrix (counts and row-normalised), analysis.

    answered: which images got an answer (a photo where no face was found gets none); each other
    one is a wrong answer of no class, left out of the matrix, the precisions and calibration.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = np.asarray(labels)
    answered = np.ones(len(labels), bool) if answered is None else np.asarray(answered, bool)
    predicted = np.where(answered, np.asarray(probs).argmax(axis=1), -1)
    classes = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0)
    counts = confusion_matrix(labels, predicted, labels=classes)
    normalized = row_normalize(counts)
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                        "f1": float(f1[i]), "support": int(support[i])}
                 for i, name in enumerate(class_names)}
    present = support > 0
    worst = min(np.flatnonzero(present), key=lambda i: recall[i])
    reliability = calibration(labels[answered], np.asarray(probs)[answered])
    metrics = {
        "images": int(len(labels)),
        "unanswered": int(len(labels) - answered.sum()),
        "accuracy": float((predicted == labels).mean()),
        # The mean of the recalls of the classes present: what a user whose faces show every
        # expression equally often would measure.
        "balanced_accuracy": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "worst_class": {"name": class_names[worst], "recall": float(recall[worst])},
        "ece": reliability["ece"],
        "nll": reliability["nll"],
        "calibration_bins": reliability["bins"],
        "per_class": per_class,
        "class_names": list(class_names),
        "confusion_matrix": counts.tolist(),
        "confusion_matrix_normalized": normalized.tolist(),
        "most_confused": most_confused_pairs(counts, class_names),
    }
    metrics["analysis"] = analysis_text(metrics)
    return metrics


def figures_of(metrics: dict) -> dict:
    """The headline figures of compute_metrics' result, as metadata.json and the bench record them."""
    return {"accuracy": metrics["accuracy"], "balanced_accuracy": metrics["balanced_accuracy"],
            "macro_f1": metrics["macro_f1"], "worst_recall": metrics["worst_class"]["recall"],
            "ece": metrics["ece"], "nll": metrics["nll"]}


def row_normalize(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the fraction of a true class given each prediction); empty rows 0."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def most_confused_pairs(counts: np.ndarray, class_names: tuple[str, ...] = CLASS_NAMES,
                        top: int = CONFUSED_PAIRS) -> list[dict]:
    """The off-diagonal cells with the highest row-normalised rate, highest first."""
    counts = np.asarray(counts)
    rates = row_normalize(counts)
    np.fill_diagonal(rates, -1.0)
    order = np.argsort(-rates, axis=None, kind="stable")[:top]
    pairs = []
    for flat in order:
        true, pred = np.unravel_index(flat, rates.shape)
        if rates[true, pred] <= 0:
            break
        pairs.append({"true": class_names[true], "predicted": class_names[pred],
                      "rate": float(rates[true, pred]), "count": int(counts[true, pred]),
                      "support": int(counts[true].sum()),
                      "reverse_rate": float(max(rates[pred, true], 0.0))})
    return pairs


def analysis_text(metrics: dict) -> str:
    """A few sentences on the results: best and worst recognised classes, most confused pairs."""
    per_class = {name: m for name, m in metrics["per_class"].items() if m["support"] > 0}
    by_recall = sorted(per_class, key=lambda name: per_class[name]["recall"], reverse=True)
    lines = [f"Accuracy {metrics['accuracy']:.4f} on {metrics['images']:,} images "
             f"(macro F1 {metrics['macro_f1']:.4f}).",
             f"Balanced accuracy (the mean recall) {metrics['balanced_accuracy']:.4f}; calibration: "
             f"expected calibration error {metrics['ece']:.4f} over {CALIBRATION_BINS} bins, "
             f"negative log-likelihood {metrics['nll']:.4f}."]
    if metrics.get("unanswered"):
        lines.insert(1, f"No answer for {metrics['unanswered']:,} of the {metrics['images']:,} images "
                        "(no face found), each counted wrong; calibration is over the others.")
    if by_recall:
        best, worst = by_recall[0], by_recall[-1]
        lines.append(f"Best recognised: {best} (recall {per_class[best]['recall']:.2f}, "
                     f"F1 {per_class[best]['f1']:.2f}); worst: {worst} "
                     f"(recall {per_class[worst]['recall']:.2f}, F1 {per_class[worst]['f1']:.2f})"
                     + (f", then {by_recall[-2]} (recall {per_class[by_recall[-2]]['recall']:.2f})."
                        if len(by_recall) > 2 else "."))
    pairs = metrics["most_confused"]
    if pairs:
        described = [f"{p['true']} taken for {p['predicted']} {p['rate']:.1%} of the time "
                     f"({p['count']:,} of {p['support']:,}; {p['predicted']} for {p['true']} "
                     f"{p['reverse_rate']:.1%})" for p in pairs]
        lines.append("Most confused: " + "; ".join(described) + ".")
    else:
        lines.append("No confusions: every image is classified correctly.")
    return "\n".join(lines)
