"""`ferkeras report`: the reference's six questions answered from a run, as one HTML page and a Markdown twin.

run folder -> model, history, evaluation, saliency, filters, gradient checks -> a list of blocks
(headings, paragraphs, tables, figures, formulas) -> HTML (figures embedded as base64 PNG, inline
CSS, no script, no network) and Markdown (figures linked from RUN/report/). The figures come from
the existing workflows (evaluate, viz) and are written to RUN/report/, so the run's own viz/
figures are left alone.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import html
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ferkeras.config import find_model, find_run, read_run_config, write_text_atomic
from ferkeras.data import CLASS_NAMES
from ferkeras.errors import FerkerasError

if TYPE_CHECKING:
    import keras

    from ferkeras.gradients import GradcheckResult
    from ferkeras.viz import TopActivations

FORMATS = ("html", "md")
# The reference report's own figures (question 2), quoted beside the run's for comparison.
REFERENCE_HISTORY = "best validation accuracy 0.6095 (epoch 21), 0.6004 after 30 epochs, " \
                    "about 10 s per epoch on a GPU"

Echo = Callable[[str], None]


@dataclass
class ReportSettings:
    """What the report computes; the defaults make the page handed in, tests shrink them."""

    saliency_images: int = 5  # validation images drawn at random, as the reference did
    saliency_methods: tuple[str, ...] = ("vanilla", "smoothgrad")  # vanilla is question 4's
    seed: int = 0  # the random images, the ascent's starting noise, the gradient checks' inputs
    filters: str = "0-23"  # filters of the last conv layer shown (two rows of 12)
    top_k: int = 5  # real images shown per filter
    steps: int = 256  # gradient-ascent steps of activation maximization
    gradcheck_trials: int = 20  # random shapes per gradient check

    def __post_init__(self) -> None:
        from ferkeras.viz import ActivationMaximizationSettings

        # Its own check of --steps, made now rather than after the saliency maps.
        ActivationMaximizationSettings(steps=self.steps)


# ---------------------------------------------------------------------------- document blocks

@dataclass
class Heading:
    """A question's title (level 2) or a part's (level 3); anchor links to it in HTML."""

    text: str
    anchor: str = ""
    level: int = 2  # 2: a question, 3: a part of one


@dataclass
class Paragraph:
    """Plain text; `code` spans become code in HTML."""

    text: str


@dataclass
class Table:
    """Rows of strings under a header; cells that are numbers are right-aligned in HTML."""

    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    """A PNG file: embedded in HTML, linked in Markdown."""

    path: Path
    caption: str


@dataclass
class Formula:
    """A displayed formula."""

    tex: str  # a small TeX subset (see tex_to_html); Markdown keeps it as $$...$$


Block = Heading | Paragraph | Table | Image | Formula


# ---------------------------------------------------------------------------- TeX subset to HTML
# Formulas are written once, in TeX: Markdown viewers render it, and the HTML page gets Unicode
# with CSS fractions, so it needs no MathJax and no network.

_TEX_SYMBOLS = {"partial": "∂", "gamma": "γ", "beta": "β", "mu": "μ", "sigma": "σ", "epsilon": "ε",
                "delta": "δ", "cdot": " · ", "log": "log\u2009", "quad": "\u2003", ",": "\u2009",
                "left": "", "right": ""}
_TEX_OPERATORS = {"=": " = ", "+": " + ", "-": " − ", ",": ",\u2009"}


def tex_to_html(tex: str) -> str:
    """HTML for a formula in the TeX subset used here: \\frac, \\sqrt, \\hat, \\sum, _, ^, Greek."""
    out, end = _tex_group(tex, 0)
    if end < len(tex):
        raise ValueError(f"unbalanced braces in {tex!r}")
    return out


def _tex_group(tex: str, i: int) -> tuple[str, int]:
    """Parse until the closing brace (or the end); return HTML and the index after it."""
    out: list[str] = []
    while i < len(tex):
        c = tex[i]
        if c == "}":
            return "".join(out), i + 1
        if c in "_^":
            arg, i = _tex_arg(tex, i + 1)
            tag = "sub" if c == "_" else "sup"
            out.append(f"<{tag}>{arg}</{tag}>")
        elif c == "{":
            inner, i = _tex_group(tex, i + 1)
            out.append(inner)
        elif c == "\\":
            piece, i = _tex_command(tex, i + 1)
            out.append(piece)
        else:
            if not c.isspace():
                unary = c == "-" and (not out or out[-1].rstrip().endswith(("(", "=", "["))
                                      or out[-1].startswith('<span class="sum">'))
                out.append("−" if unary else _tex_char(c))
            i += 1
    return "".join(out), i


def _tex_arg(tex: str, i: int) -> tuple[str, int]:
    """One argument: a {group}, a \\command, or a single character."""
    while tex[i].isspace():
        i += 1
    if tex[i] == "{":
        return _tex_group(tex, i + 1)
    if tex[i] == "\\":
        return _tex_command(tex, i + 1)
    return _tex_char(tex[i]), i + 1


def _tex_command(tex: str, i: int) -> tuple[str, int]:
    """A \\command starting after the backslash; return HTML and the index after it."""
    j = i
    while j < len(tex) and tex[j].isalpha():
        j += 1
    name = tex[i:j] or tex[i]
    j = max(j, i + 1)
    if name == "frac":
        num, j = _tex_arg(tex, j)
        den, j = _tex_arg(tex, j)
        return f'<span class="frac"><span>{num}</span><span>{den}</span></span>', j
    if name == "sqrt":
        arg, j = _tex_arg(tex, j)
        return f'√<span class="radicand">{arg}</span>', j
    if name == "hat":
        arg, j = _tex_arg(tex, j)
        return arg.replace("</i>", "\u0302</i>", 1) if arg.endswith("</i>") else arg + "\u0302", j
    if name == "sum":
        limits = {"_": "", "^": ""}
        while j < len(tex) and tex[j] in limits:
            limits[tex[j]], j = _tex_arg(tex, j + 1)
        return (f'<span class="sum">∑<span class="limits"><span>{limits["^"]}</span>'
                f'<span>{limits["_"]}</span></span></span>'), j
    if name in _TEX_SYMBOLS:
        return _TEX_SYMBOLS[name], j
    raise ValueError(f"unsupported TeX command \\{name}")


def _tex_char(c: str) -> str:
    if c.isalpha():
        return f"<i>{c}</i>"
    return _TEX_OPERATORS.get(c, html.escape(c))


# ---------------------------------------------------------------------------- rendering

_CSS = """
body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; color: #1d1d1f;
       max-width: 1150px; margin: 2em auto; padding: 0 1.5em; line-height: 1.5; }
h1 { font-size: 1.7em; border-bottom: 2px solid #1d1d1f; padding-bottom: .2em; }
h2 { font-size: 1.35em; margin-top: 2.2em; border-bottom: 1px solid #bbb; padding-bottom: .15em; }
h3 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .8em 0 1.2em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f0f0f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 1.6em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #444; margin-top: .3em; }
.formula { font-family: "DejaVu Serif", "STIX Two Math", "Cambria Math", serif; font-size: 1.15em;
           margin: .7em 0 .7em 1.5em; }
.frac { display: inline-flex; flex-direction: column; vertical-align: middle; text-align: center;
        margin: 0 .15em; }
.frac > span:first-child { border-bottom: 1px solid; padding: 0 .2em; }
.radicand { border-top: 1px solid; padding: 0 .1em; }
.sum { display: inline-flex; align-items: center; margin: 0 .15em; }
.limits { display: inline-flex; flex-direction: column; font-size: .65em; margin-left: .1em;
          line-height: 1.2; }
nav ol { columns: 2; }
.meta td:first-child { font-weight: bold; white-space: nowrap; }
"""
_CODE = re.compile(r"`([^`]+)`")  # `name` in a paragraph: code, as Markdown has it
_NUMBER = re.compile(r"^[-+−]?[\d,]*\.?\d+(e[-+]?\d+)?%?$")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def render_html(title: str, blocks: list[Block]) -> str:
    """One self-contained page: inline CSS, figures as data: URIs, no script."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            anchor = f' id="{block.anchor}"' if block.anchor else ""
            body.append(f"<h{block.level}{anchor}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            text = _CODE.sub(r"<code>\1</code>", html.escape(block.text))
            body.append(f"<p>{text}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            head = f"<thead><tr>{head}</tr></thead>" if any(block.header) else ""
            rows = "".join(
                "<tr>" + "".join(f'<td{" class=num" if _NUMBER.match(c) else ""}>{html.escape(c)}</td>'
                                 for c in row) + "</tr>\n" for row in block.rows)
            body.append(f"<table>{head}<tbody>\n{rows}</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
                        f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
        elif isinstance(block, Formula):
            body.append(f'<div class="formula">{tex_to_html(block.tex)}</div>')
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def render_markdown(title: str, blocks: list[Block], base: Path) -> str:
    """The same document in Markdown, figures linked relative to base (the report's folder)."""
    out = [f"# {title}"]
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, Table):
            cells = [block.header, ["---"] * len(block.header), *block.rows]
            out.append("\n".join("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
                                 for row in cells))
        elif isinstance(block, Image):
            out.append(f"![{block.caption}]({os.path.relpath(block.path, base)})\n\n*{block.caption}*")
        elif isinstance(block, Formula):
            out.append(f"$$\n{block.tex}\n$$")
    return "\n\n".join(out) + "\n"


# ---------------------------------------------------------------------------- the six sections

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
                  f"{sizes} pixels a side; then Flatten and fully connected layers to the 7 classes "
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


def confusion_section(result: dict, figure: Path) -> list[Block]:
    """Question 3: the confusion matrix, counts and normalised, and which classes are confused."""
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
    from ferkeras.gradients import TOLERANCE

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


# ---------------------------------------------------------------------------- the workflow

def _header(run_dir: Path, config: dict, model_path: Path) -> list[Block]:
    """The page's opening: what was run, on what, with which versions, and the contents."""
    data = config.get("data", {})
    versions = ", ".join(f"{k} {v}" for k, v in config.get("versions", {}).items())
    meta = [["run", str(run_dir)], ["model", str(model_path)],
            ["data", f"{data.get('source', '?')} ({data.get('format', '?')})"],
            ["command", config.get("command", "?")], ["trained", config.get("created", "?")],
            ["versions", versions],
            ["report", datetime.datetime.now().astimezone().isoformat(timespec="seconds")]]
    return [Paragraph("Facial expression recognition on 48×48 gray faces in 7 classes ("
                      f"{', '.join(CLASS_NAMES)}), with the reference report's CNN in Keras. Each answer "
                      "below is computed from the run itself by `ferkeras report`."),
            Table(["", ""], meta)]


@contextlib.contextmanager
def _without_retracing_warnings() -> Iterator[None]:
    """Drop TensorFlow's "triggered tf.function retracing" warning, and only it: each workflow
    loads its own copy of the model, so several predict functions are traced in a row by design."""
    logger = logging.getLogger("tensorflow")
    quiet = logging.Filter()
    quiet.filter = lambda record: "triggered tf.function retracing" not in record.getMessage()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def build_report(run: str | os.PathLike | None = None, runs_dir: str | os.PathLike = "runs",
                 settings: ReportSettings | None = None, formats: tuple[str, ...] = FORMATS,
                 echo: Echo = print, progress: bool = False) -> list[Path]:
    """Answer the reference's six questions for a run; write RUN/report.html and/or RUN/report.md."""
    from ferkeras.train import read_history

    settings = settings or ReportSettings()
    for name in formats:
        if name not in FORMATS:
            raise FerkerasError(f"--format {name}: must be one of {', '.join(FORMATS)}")
    run_dir = find_run(run, runs_dir)
    find_model(str(run_dir), runs_dir)  # a one-line error for a run with no model yet
    if not read_history(run_dir):
        raise FerkerasError(f"run {run_dir} has no history yet (no epoch has finished)")
    echo(f"Report on {run_dir} (figures in {run_dir / 'report'}/)")
    with _without_retracing_warnings():
        blocks = report_blocks(run_dir, settings, echo, progress)

    title = f"Facial expression recognition: report on run {run_dir.name}"
    written = []
    if "html" in formats:
        page = render_html(title, blocks)
        write_text_atomic(run_dir / "report.html", page)
        written.append(run_dir / "report.html")
        figures = sum(isinstance(b, Image) for b in blocks)
        echo(f"Wrote {written[-1]} ({len(page) / 1e6:.1f} MB, {figures} figures embedded, no network)")
    if "md" in formats:
        write_text_atomic(run_dir / "report.md", render_markdown(title, blocks, run_dir))
        written.append(run_dir / "report.md")
        echo(f"Wrote {written[-1]} (figures linked from {run_dir / 'report'}/)")
    return written


def report_blocks(run_dir: Path, settings: ReportSettings, echo: Echo = print,
                  progress: bool = False) -> list[Block]:
    """Compute the six answers for a run folder (figures into RUN/report/) as document blocks."""
    from ferkeras import gradients, viz
    from ferkeras.evaluate import evaluate, load_source
    from ferkeras.model import load_model
    from ferkeras.train import read_history

    ref, runs_dir = str(run_dir), run_dir.parent
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    config = read_run_config(run_dir)
    model_path = find_model(ref, runs_dir)
    model = load_model(model_path)
    layer = viz.conv_layers(model)[-1]
    # Checked first: a mistyped --filters should not wait for the evaluation and saliency maps.
    chosen = viz.parse_filters(settings.filters, viz.filter_count(model, layer), layer)
    blocks = _header(run_dir, config, model_path) + architecture_section(model)
    echo(f"  1 architecture: {len(model.layers)} layers")

    history = read_history(run_dir)
    history_png = viz.plot_history(ref, out=out, runs_dir=runs_dir)
    blocks += history_section(config, history, _read_json(run_dir / "metrics.json"), history_png)
    echo(f"  2 history: {len(history)} epochs")

    result = evaluate(ref, out=out, runs_dir=runs_dir, echo=lambda line: None)
    blocks += confusion_section(result, out / f"confusion_matrix_{result['split']}.png")
    echo(f"  3 confusion matrix: accuracy {result['accuracy']:.4f} on {result['images']:,} "
         "validation images")

    saliency = {method: viz.explain_saliency(ref, n=settings.saliency_images, seed=settings.seed,
                                             method=method, out=out, runs_dir=runs_dir)
                for method in settings.saliency_methods}
    blocks += saliency_section(saliency, settings.saliency_images)
    echo(f"  4 saliency maps of {settings.saliency_images} images: {', '.join(saliency)}")

    grid, sheet = viz.visualize_filters(
        ref, layer=layer, filters=settings.filters, top_k=settings.top_k, seed=settings.seed,
        settings=viz.ActivationMaximizationSettings(steps=settings.steps), out=out,
        runs_dir=runs_dir, progress=progress)
    # The figures are drawn; the words need the same ranking as numbers.
    source = load_source(ref, runs_dir=runs_dir)
    top = viz.top_activating_images(model, source.split.images, layer, chosen, settings.top_k)
    blocks += filters_section(layer, settings.filters, grid, sheet, top, source.split.labels,
                              settings.steps)
    echo(f"  5 filters: {len(chosen)} of {layer}, {settings.steps} ascent steps, "
         f"top {settings.top_k} images")

    check = gradients.gradcheck(settings.gradcheck_trials, settings.seed)
    blocks += math_section(check)
    worst = max([*check.errors.values(), check.forward_error])
    echo(f"  6 math: gradient checks {'pass' if check.passed else 'FAIL'}, largest relative error "
         f"{worst:.1e} (< {gradients.TOLERANCE:g})")
    return blocks


def _read_json(path: Path) -> dict | None:
    """A JSON file's content, or None when it does not exist yet."""
    import json

    return json.loads(path.read_text()) if path.is_file() else None
