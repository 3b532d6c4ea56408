"""The reference's six questions, each answered as document blocks from what a run computed:
architecture, history, confusion matrix, saliency maps, filters, and the gradient math."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ferkeras.gradients import TOLERANCE
from ferkeras.report.document import Block, Formula, Heading, Image, Paragraph, Table
from ferkeras.spec import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES

if TYPE_CHECKING:
    import keras

    from ferkeras.gradients import GradcheckResult
    from ferkeras.viz import TopActivations

# The reference report's own figures (question 2), quoted beside the run's for comparison.
REFERENCE_HISTORY = "best validation accuracy 0.6095 (epoch 21), 0.6004 after 30 epochs, " \
                    "about 10 s per epoch on a GPU"


def _layer_details(layer) -> str:
    """What a layer does, in a few words."""
    kind = type(layer).__name__
    if kind == "Conv2D":
        k, s = layer.kernel_size, layer.strides
        return f"{layer.filters} filters {k[0]}×{k[1]}, stride {s[0]}, {layer.padding} padding"
    if kind in ("BatchNormalization", "FusedBatchNormalization"):
        return f"γ, β trained; moving mean, variance kept (momentum {layer.momentum}, ε {layer.epsilon:g})"
    if kind == "MaxPooling2D":
        return f"max over {layer.pool_size[0]}×{layer.pool_size[1]}"
    if kind == "Dense":
        activation = layer.activation.__name__
        return f"{layer.units} units, {activation}"
    if kind == "Rescaling":
        return "pixels 0-255 scaled to 0-1"
    if kind == "GrayToRGB":
        return "gray replicated to 3 channels, as the reference fed RGB"
    return ""


def architecture_section(model: keras.Model) -> list[Block]:
    """Question 1: every layer's output shape and parameters, read from the model."""
    from ferkeras.model import count_params

    total, frozen = count_params(model)
    rows = []
    for i, layer in enumerate(model.layers, start=1):
        shape = " × ".join(str(d) for d in layer.output.shape[1:])
        fixed = sum(int(np.prod(w.shape)) for w in layer.non_trainable_weights)
        params = f"{layer.count_params():,}" + (f" ({fixed:,} fixed)" if fixed else "")
        rows.append([str(i), layer.name, type(layer).__name__, shape, params, _layer_details(layer)])
    rows.append(["", "total", "", "", f"{total:,}", f"{total - frozen:,} trainable, {frozen:,} "
                 "non-trainable (BatchNorm statistics)"])
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    pools = [layer for layer in model.layers if type(layer).__name__ == "MaxPooling2D"]
    sizes = " → ".join(str(side) for side in [model.input_shape[1]] + [p.output.shape[1] for p in pools])
    input_shape = " × ".join(str(d) for d in model.input_shape[1:])
    return [
        Heading("1. Model architecture", "q1"),
        Paragraph(f"The input is a {input_shape} gray face with raw 0-255 pixels; the model scales and "
                  "replicates it itself, so a deployed model needs no preprocessing. "
                  f"{len(convs)} blocks of Conv 3×3 → BatchNorm → ReLU → MaxPool 2×2 with "
                  f"{', '.join(str(c.filters) for c in convs)} filters take the image from "
                  f"{sizes} pixels a side; then Flatten and fully connected layers to the "
                  f"{NUM_CLASSES} classes "
                  "with softmax. Shapes are height × width × channels (the reference writes "
                  "[channels, height, width])."),
        Table(["#", "layer", "type", "output shape", "parameters", "what it does"], rows),
        Paragraph(f"{total:,} parameters, {frozen:,} of them BatchNorm's moving means and variances, "
                  "which are not trained by gradient descent. The reference's PyTorch model has the "
                  "same layers; with 3 input channels its count is the same 322,039 (PyTorch lists "
                  "the 528 BatchNorm statistics as buffers rather than parameters)."),
    ]


def _validation_words(config: dict) -> str:
    """What the run validated on, in words (its --val-split as train_val_splits reads it)."""
    option = str(config["options"].get("val_split", "auto"))
    if option == "auto":
        test = config.get("data", {}).get("splits", {}).get("test") or {}
        return "its test split" if test.get("class_counts") else "a stratified 25% of its train split"
    try:
        return f"a stratified {float(option):.0%} of its train split"
    except ValueError:
        return f"its {option} split"


def history_section(config: dict, history: list[dict], finished: dict | None,
                    figure: Path) -> list[Block]:
    """Question 2: training and validation loss and accuracy per epoch, with seconds per epoch."""
    best = max(history, key=lambda row: row["val_accuracy"])
    seconds = float(np.median([row["seconds"] for row in history]))
    devices = ", ".join(d.replace("/device:", "") for d in config.get("devices", [])) or "unknown"
    options = config["options"]
    planned = config.get("epochs", len(history))
    state = "finished" if finished else f"unfinished ({len(history)} of {planned} epochs so far)"
    speed = (f", {finished['train_images_per_second']:,.0f} training images/s"
             if finished and "train_images_per_second" in finished else "")
    rows = []
    for row in history:
        rows.append([f"{row['epoch']:d}", f"{row['seconds']:.2f}", f"{row.get('lr', float('nan')):.2e}",
                     f"{row['loss']:.4f}", f"{row['accuracy']:.4f}", f"{row['val_loss']:.4f}",
                     f"{row['val_accuracy']:.4f}", "best" if row is best else ""])
    return [
        Heading("2. Training and validation history", "q2"),
        Paragraph(f"Trained on {config.get('train_images', 0):,} images and validated on "
                  f"{config.get('val_images', 0):,}, {_validation_words(config)}, of "
                  f"{options.get('data') or 'the synthetic faces'}; {options.get('optimizer')} at "
                  f"learning rate {options.get('lr')} with a {options.get('schedule')} schedule, batch "
                  f"{options.get('batch_size')}, augmentation {options.get('augment')}, label smoothing "
                  f"{options.get('label_smoothing')}, class weights {options.get('class_weight')}, "
                  f"seed {options.get('seed')}. Run {state}."),
        Paragraph(f"Best validation accuracy {best['val_accuracy']:.4f} at epoch {best['epoch']} "
                  f"(validation loss {best['val_loss']:.4f}); after the last epoch, "
                  f"{history[-1]['val_accuracy']:.4f}. Median {seconds:.2f} s per epoch on {devices}"
                  f"{speed}. The model kept is the best epoch's. The reference: {REFERENCE_HISTORY} "
                  "(its losses are on another scale; these are cross-entropy per image, ln 7 = 1.95 "
                  "at chance)."),
        Image(figure, "Loss and accuracy per epoch, training against validation; the dotted line "
                      "marks the best validation accuracy."),
        Table(["epoch", "seconds", "learning rate", "train loss", "train acc", "val loss", "val acc",
               ""], rows),
    ]


def confusion_section(result: dict, figure: Path, reliability: Path) -> list[Block]:
    """Question 3: the confusion matrix, counts and normalised, which classes are confused, and
    how far the model's probabilities are from how often it is right (the reliability diagram)."""
    names = result["class_names"]
    counts = [[name, *[f"{v:,}" for v in row]] for name, row in zip(names, result["confusion_matrix"],
                                                                      strict=True)]
    rates = [[name, *[f"{v:.2f}" for v in row]]
             for name, row in zip(names, result["confusion_matrix_normalized"], strict=True)]
    per_class = [[name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}",
                  f"{m['support']:,}"] for name, m in result["per_class"].items()]
    header = ["true \\ predicted", *names]
    return [
        Heading("3. Confusion matrix", "q3"),
        Paragraph(f"The best model on the {result['images']:,} images of the run's validation data "
                  f"({result['data']}), which it never trained on. (The reference computed its matrix "
                  "on the training set, which flatters the model.)"),
        *[Paragraph(line) for line in result["analysis"].splitlines()],
        Image(figure, "Confusion matrix: counts (left) and each row divided by its total (right): "
                      "the diagonal is each class's recall."),
        Heading("(a) Counts", level=3),
        Table(header, counts),
        Heading("(b) Normalised by true class", level=3),
        Table(header, rates),
        Heading("(c) Per class", level=3),
        Table(["class", "precision", "recall", "F1", "images"], per_class),
        Heading("(d) Calibration", level=3),
        Image(reliability, f"Reliability diagram: the accuracy of the images in each confidence bin "
                           f"against their mean confidence; expected calibration error "
                           f"{result['ece']:.4f}, negative log-likelihood {result['nll']:.4f}."),
    ]


def saliency_section(figures: dict[str, Path], n: int) -> list[Block]:
    """Question 4: saliency maps of n random validation images."""
    what = {"vanilla": "Vanilla saliency, the reference's method: |∂ class score / ∂ pixel|, the pixels "
                       "whose change would most move the predicted class's score.",
            "smoothgrad": "SmoothGrad: the same gradient averaged over 50 noisy copies of the image, "
                          "then |·|; pixel-level noise cancels and the features stand out."}
    blocks: list[Block] = [
        Heading("4. Saliency maps", "q4"),
        Paragraph(f"{n} validation images drawn at random. Each column: the image titled with its true "
                  "and predicted class and the predicted probability, its saliency map (bright = "
                  "influential), and the map over the face. The score is the predicted class's logit "
                  "(softmax replaced by identity, so saturated probabilities do not flatten it); maps "
                  "are normalised per image."),
    ]
    for method, path in figures.items():
        blocks.append(Image(path, what.get(method, method)))
    return blocks


def filters_section(layer: str, spec: str, grid: Path, sheet: Path, top: TopActivations,
                    labels: np.ndarray, steps: int) -> list[Block]:
    """Question 5: what activates the last conv layer's filters, synthesised and among real faces."""
    k = top.indices.shape[1]
    which = f"All {len(top.filters)} filters" if spec.strip().lower() == "all" else f"Filters {spec}"
    rows, pure = [], {}
    for g, f in enumerate(top.filters):
        classes = np.bincount(labels[top.indices[g]], minlength=len(CLASS_NAMES))
        major = int(classes.argmax())
        if classes[major] >= k - 1:  # all, or all but one, of its top images share a class
            pure.setdefault(CLASS_NAMES[major], []).append(f"#{f}")
        listed = ", ".join(CLASS_NAMES[labels[i]] for i in top.indices[g])
        rows.append([f"#{f}", f"{CLASS_NAMES[major]} ({classes[major]} of {k})", listed,
                     f"{top.values[g, 0]:.2f}"])
    summary = "; ".join(f"{name}: {', '.join(fs)}" for name, fs in sorted(pure.items()))
    return [
        Heading("5. What activates the filters of the last convolutional layer", "q5"),
        Paragraph(f"{which} of {layer} (the reference showed "
                  f"filter 0 only). First, per filter, the input found by gradient ascent ({steps} "
                  "Adam steps from gray noise, with jitter, blur and total variation) that maximises "
                  "the filter's response at the centre of its map after BatchNorm; then the "
                  f"{k} validation images that activate it most, with its response map over each."),
        Image(grid, f"{layer}: activation maximization, one image per filter."),
        Image(sheet, f"{layer}: the synthesised optimum and the {k} most activating validation images "
                     "of each filter, response overlaid; titles: filter, true class, peak response."),
        Paragraph(f"Filters whose top {k} images (all or all but one) share one expression, a sign that "
                  f"the filter detects a feature of that expression: {summary or 'none'}."),
        Table(["filter", "most common class", f"classes of its top {k} images", "peak response"], rows),
    ]


_BN_FORWARD = [r"\mu = \frac{1}{m}\sum_{i=1}^{m} x_i",
               r"\sigma^2 = \frac{1}{m}\sum_{i=1}^{m} (x_i - \mu)^2",
               r"\hat{x}_i = \frac{x_i - \mu}{\sqrt{\sigma^2 + \epsilon}}, \quad "
               r"y_i = \gamma \hat{x}_i + \beta"]
_BN_BACKWARD = [
    r"\frac{\partial l}{\partial \hat{x}_i} = \frac{\partial l}{\partial y_i} \cdot \gamma",
    r"\frac{\partial l}{\partial \sigma^2} = \sum_{i=1}^{m} \frac{\partial l}{\partial \hat{x}_i} \cdot "
    r"(x_i - \mu) \cdot \left(-\frac{1}{2}\right) (\sigma^2 + \epsilon)^{-3/2}",
    r"\frac{\partial l}{\partial \mu} = \left(\sum_{i=1}^{m} \frac{\partial l}{\partial \hat{x}_i} \cdot "
    r"\frac{-1}{\sqrt{\sigma^2 + \epsilon}}\right) + \frac{\partial l}{\partial \sigma^2} \cdot "
    r"\frac{\sum_{i=1}^{m} -2(x_i - \mu)}{m}",
    r"\frac{\partial l}{\partial x_i} = \frac{\partial l}{\partial \hat{x}_i} \cdot "
    r"\frac{1}{\sqrt{\sigma^2 + \epsilon}} + \frac{\partial l}{\partial \sigma^2} \cdot "
    r"\frac{2(x_i - \mu)}{m} + \frac{\partial l}{\partial \mu} \cdot \frac{1}{m}",
    r"\frac{\partial l}{\partial \gamma} = \sum_{i=1}^{m} \frac{\partial l}{\partial y_i} \cdot \hat{x}_i",
    r"\frac{\partial l}{\partial \beta} = \sum_{i=1}^{m} \frac{\partial l}{\partial y_i}",
]
_SOFTMAX = [
    r"\hat{y}_k = \frac{e^{z_k}}{\sum_{j} e^{z_j}}, \quad L = -\sum_{k} y_k \log \hat{y}_k",
    r"\frac{\partial \hat{y}_k}{\partial z_t} = \hat{y}_k (\delta_{kt} - \hat{y}_t)",
    r"\frac{\partial L}{\partial z_t} = -\sum_{k} \frac{y_k}{\hat{y}_k} \hat{y}_k (\delta_{kt} - \hat{y}_t)"
    r" = -y_t + \hat{y}_t \sum_{k} y_k = \hat{y}_t - y_t",
]
_GRADIENT_NAMES = {"dl/dx_hat": "∂l/∂x̂", "dl/dsigma^2": "∂l/∂σ²", "dl/dmu": "∂l/∂μ", "dl/dx": "∂l/∂x",
                   "dl/dgamma": "∂l/∂γ", "dl/dbeta": "∂l/∂β",
                   "dL/dz (softmax + cross-entropy)": "∂L/∂z (softmax + cross-entropy)"}


def math_section(check: GradcheckResult) -> list[Block]:
    """Question 6: the batch-norm and softmax + cross-entropy gradients, and their measured errors."""
    dims = sorted({len(shape) for shape in check.shapes})
    kinds = " and ".join({2: "(N, C)", 4: "(N, H, W, C)"}.get(d, f"{d}-D") for d in dims)
    rows = [[_GRADIENT_NAMES.get(name, name), f"{error:.1e}", "yes" if error < TOLERANCE else "NO"]
            for name, error in [("y (forward pass)", check.forward_error), *check.errors.items()]]
    return [
        Heading("6. Math", "q6"),
        Heading("(a) Back-propagation through batch normalisation", level=3),
        Paragraph("In training mode, per channel, over the m values of a batch (m = N for dense layers, "
                  "N·H·W for convolutional maps):"),
        *[Formula(tex) for tex in _BN_FORWARD],
        Paragraph("Given ∂l/∂yᵢ from the layer above, the chain rule through x̂ᵢ, σ² and μ "
                  "(Ioffe & Szegedy 2015) gives:"),
        *[Formula(tex) for tex in _BN_BACKWARD],
        Paragraph("∂l/∂μ is the total derivative: μ reaches l through every x̂ᵢ and through σ². Its "
                  "second term is zero at the batch mean, since ∑(xᵢ − μ) = 0, but it is part of the "
                  "derivative. The reference's final line for ∂l/∂μ gets that term wrong: it has "
                  "∂σ²/∂μ = +(2/m)∑(x̂ᵢ − μ) where the derivative is −(2/m)∑(xᵢ − μ), and it writes "
                  "x̂ᵢ − μ for xᵢ − μ (also in its ∂l/∂σ² and ∂l/∂xᵢ). The slip does not change the "
                  "value at the batch mean, but the derivation is wrong."),
        Heading("(b) Softmax and cross-entropy", level=3),
        Paragraph("With logits z, probabilities ŷ = softmax(z) and labels y that sum to 1 (one-hot, or "
                  "label-smoothed):"),
        *[Formula(tex) for tex in _SOFTMAX],
        Heading("(c) Checked against TensorFlow", level=3),
        Paragraph(f"ferkeras/gradients.py implements these formulas in NumPy; `ferkeras gradcheck` "
                  f"compares them with TensorFlow's automatic differentiation (tf.GradientTape) on "
                  f"{check.trials} random float64 batches of shapes {kinds}, channels with their own "
                  "means and scales: dl/dx, dl/dγ, dl/dβ through keras.layers.BatchNormalization in "
                  "training mode, dl/dx̂, dl/dσ², dl/dμ through the same forward pass with that "
                  "intermediate as the input, and dL/dz through softmax cross-entropy (one-hot and "
                  "label-smoothed labels). Relative error = max|ours − TensorFlow| / max|TensorFlow|, "
                  f"the largest over the trials; the bar is {TOLERANCE:g}."),
        Table(["quantity", "largest relative error", f"below {TOLERANCE:g}"], rows),
    ]


def header(run_dir: Path, config: dict, model_path: Path) -> list[Block]:
    """The page's opening: what was run, on what, with which versions, and the contents."""
    data = config.get("data", {})
    versions = ", ".join(f"{k} {v}" for k, v in config.get("versions", {}).items())
    meta = [["run", str(run_dir)], ["model", str(model_path)],
            ["data", f"{data.get('source', '?')} ({data.get('format', '?')})"],
            ["command", config.get("command", "?")], ["trained", config.get("created", "?")],
            ["versions", versions],
            ["report", datetime.datetime.now().astimezone().isoformat(timespec="seconds")]]
    return [Paragraph(f"Facial expression recognition on {IMAGE_SIZE}×{IMAGE_SIZE} gray faces in "
                      f"{NUM_CLASSES} classes ("
                      f"{', '.join(CLASS_NAMES)}), with the reference report's CNN in Keras. Each answer "
                      "below is computed from the run itself by `ferkeras report`."),
            Table(["", ""], meta)]
