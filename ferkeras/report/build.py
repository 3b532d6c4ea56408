"""`ferkeras report`: the reference's six questions answered from a run, as one HTML page and a
Markdown twin.

run folder -> model (loaded once) and validation images (loaded once) -> history, evaluation,
saliency, filters, gradient checks -> document blocks -> report.html and report.md. The figures
are written to RUN/report/, so the run's own viz/ figures are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ferkeras import gradients
from ferkeras.config import RUNS_DIR
from ferkeras.errors import FerkerasError
from ferkeras.evaluate import Echo, evaluate_source, load_source
from ferkeras.fileio import read_json, write_text_atomic
from ferkeras.report.document import Block, Image, render_html, render_markdown
from ferkeras.report.sections import (
    architecture_section,
    confusion_section,
    filters_section,
    header,
    history_section,
    math_section,
    saliency_section,
)
from ferkeras.runs import find_model, find_run, read_history, read_run_config
from ferkeras.viz import (
    DEFAULT_TOP_K,
    ActivationMaximizationSettings,
    conv_layers,
    filter_count,
    parse_filters,
)
from ferkeras.viz.workflows import SALIENCY_IMAGES, filter_sheets, plot_history, saliency_sheet, split_images

FORMATS = ("html", "md")


@dataclass
class ReportSettings:
    """What the report computes; the defaults make the page handed in, tests shrink them."""

    saliency_images: int = SALIENCY_IMAGES  # validation images drawn at random, as the reference did
    saliency_methods: tuple[str, ...] = ("vanilla", "smoothgrad")  # vanilla is question 4's
    seed: int = 0  # the random images, the ascent's starting noise, the gradient checks' inputs
    filters: str = "0-23"  # filters of the last conv layer shown (two rows of 12)
    top_k: int = DEFAULT_TOP_K  # real images shown per filter
    steps: int = ActivationMaximizationSettings.steps  # gradient-ascent steps
    gradcheck_trials: int = gradients.TRIALS  # random shapes per gradient check

    def __post_init__(self) -> None:
        # Its own check of --steps, made now rather than after the saliency maps.
        ActivationMaximizationSettings(steps=self.steps)


@contextlib.contextmanager
def _without_retracing_warnings() -> Iterator[None]:
    """Drop TensorFlow's "triggered tf.function retracing" warning, and only it: the questions
    call the one model on batches of many sizes and through several wrappers, by design."""
    logger = logging.getLogger("tensorflow")
    quiet = logging.Filter()
    quiet.filter = lambda record: "triggered tf.function retracing" not in record.getMessage()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def build_report(run: str | os.PathLike | None = None, runs_dir: str | os.PathLike = RUNS_DIR,
                 settings: ReportSettings | None = None, formats: tuple[str, ...] = FORMATS,
                 echo: Echo = print, progress: bool = False) -> list[Path]:
    """Answer the reference's six questions for a run; write RUN/report.html and/or RUN/report.md."""
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
    from ferkeras.model import load_model  # lazy: TensorFlow

    ref, runs_dir = str(run_dir), run_dir.parent
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    config = read_run_config(run_dir)
    model_path = find_model(ref, runs_dir)
    model = load_model(model_path)  # once, for every question
    layer = conv_layers(model)[-1]
    # Checked first: a mistyped --filters should not wait for the evaluation and saliency maps.
    chosen = parse_filters(settings.filters, filter_count(model, layer), layer)
    blocks = header(run_dir, config, model_path) + architecture_section(model)
    echo(f"  1 architecture: {len(model.layers)} layers")

    history = read_history(run_dir)
    history_png = plot_history(ref, out=out, runs_dir=runs_dir)
    blocks += history_section(config, history, read_json(run_dir / "metrics.json", None), history_png)
    echo(f"  2 history: {len(history)} epochs")

    source = load_source(ref, runs_dir=runs_dir)  # the validation images, once
    result = evaluate_source(model, source, None, out, echo=lambda line: None)
    blocks += confusion_section(result, out / f"confusion_matrix_{result['split']}.png",
                                out / f"reliability_{result['split']}.png")
    echo(f"  3 confusion matrix: accuracy {result['accuracy']:.4f} on {result['images']:,} "
         "validation images")

    images, labels, captions = split_images(source, settings.saliency_images, settings.seed)
    saliency = {method: saliency_sheet(model, images, labels, captions, method, None, out)
                for method in settings.saliency_methods}
    blocks += saliency_section(saliency, settings.saliency_images)
    echo(f"  4 saliency maps of {settings.saliency_images} images: {', '.join(saliency)}")

    grid, sheet, top = filter_sheets(model, source, layer, chosen, settings.top_k,
                                     ActivationMaximizationSettings(steps=settings.steps),
                                     settings.seed, out, progress)
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
