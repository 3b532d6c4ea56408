"""`ferkeras` commands. Each parses its flags and makes one library call; logic lives in ferkeras/.

Here the group, the entry point and the commands of the model's stages (train, evaluate, viz,
report, export, ...); predict and serve in apps.py; the flags several commands share in options.py."""

from __future__ import annotations

import os
import sys

import click

import ferkeras
from ferkeras.config import ARCHITECTURES, TrainConfig, resume_options
from ferkeras.errors import FerkerasError
from ferkeras.gradients import TRIALS
from ferkeras.media.detect import DETECTORS
from ferkeras.media.detectors import DEFAULT_DETECTOR
from ferkeras.predict import DEFAULT_TTA
from ferkeras.report import FORMATS, ReportSettings
from ferkeras.runners import TTA_METHODS
from ferkeras.viz import (
    ALL_FILTERS,
    DEFAULT_METHOD,
    DEFAULT_TOP_K,
    OBJECTIVES,
    SALIENCY_METHODS,
    ActivationMaximizationSettings,
)
from ferkeras.viz.workflows import SALIENCY_IMAGES

from .apps import predict, serve
from .options import config_options, quiet_tensorflow_startup, runs_dir_option, source_options


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(ferkeras.__version__, prog_name="ferkeras")
def cli() -> None:
    """Facial expression recognition on FER2013 with the reference's compact CNN."""


cli.add_command(predict)
cli.add_command(serve)


@cli.command()
@config_options
@click.option("--recipe", metavar="NAME|FILE.json", help="start from a named recipe (fer2013: the "
              "measured best for FER2013) or a JSON file of options; flags given override it")
@click.option("--resume", metavar="RUN", help="continue an interrupted run (name or folder); "
              "only --epochs may change")
def train(recipe: str | None, resume: str | None, **options) -> None:
    """Train the CNN; each run gets its own folder under runs/."""
    with quiet_tensorflow_startup():
        from ferkeras import train as training

    ctx = click.get_current_context()
    given = {name: value for name, value in options.items()
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    if resume:
        training.resume(resume, **resume_options(given, recipe), echo=click.echo)
    elif recipe:
        training.train(TrainConfig.from_recipe(recipe, given), echo=click.echo)
    else:
        training.train(TrainConfig.from_dict(options), echo=click.echo)


@cli.command()
@click.argument("model", required=False)
@click.option("--channels", type=click.Choice(["1", "3"]), default=str(TrainConfig.channels),
              show_default=True, help="conv input channels of a new model")
@click.option("--arch", type=click.Choice(ARCHITECTURES), default=TrainConfig.arch, show_default=True,
              help="architecture of a new model")
@runs_dir_option
def summary(model: str | None, channels: str, arch: str, runs_dir: str) -> None:
    """Print each layer's output shape and parameters (a new model, or a run's / a .keras file)."""
    from ferkeras.runs import find_model

    with quiet_tensorflow_startup():
        from ferkeras.model import build_model, count_params, load_model

    net = load_model(find_model(model, runs_dir)) if model else build_model(int(channels), arch)
    net.summary(print_fn=lambda line, *args, **kwargs: click.echo(line))
    total, frozen = count_params(net)
    click.echo(f"{total:,} parameters, {frozen:,} of them non-trainable (BatchNorm statistics)")


@cli.command()
@source_options
@click.option("--tta", is_flag=True, help="also test-time augmentation (mean with the mirror image)")
@click.option("--tta-shifts", is_flag=True, help="TTA over 10 views: the mirror image and one-pixel "
              "shifts of both (implies --tta)")
@click.option("--skip-bad", is_flag=True,
              help=TrainConfig.__dataclass_fields__["skip_bad"].metadata["help"])
@click.option("--pipeline", is_flag=True, help="read each image as predict does: the largest face "
              "found, cropped and classified (a 48x48 image is a crop); no face counts wrong; "
              "always with predict's flip TTA beside one view")
@click.option("--detector", type=click.Choice(DETECTORS), help=f"with --pipeline: predict's face "
              f"detector (default {DEFAULT_DETECTOR})")
@click.option("--no-align", is_flag=True, help="with --pipeline: as predict --no-align")
@click.option("--no-reframe", is_flag=True, help="with --pipeline: as predict --no-reframe")
@click.option("--no-light", is_flag=True, help="with --pipeline: as predict --no-light")
@click.option("--no-sharpen", is_flag=True, help="with --pipeline: as predict --no-sharpen")
def evaluate(run: str | None, data: str | None, split: str | None, out: str | None, runs_dir: str,
             tta: bool, tta_shifts: bool, skip_bad: bool, pipeline: bool, detector: str | None,
             no_align: bool, no_reframe: bool, no_light: bool, no_sharpen: bool) -> None:
    """Accuracy, per-class F1, confusion matrix.

    Of RUN (a run name or folder, or a .keras file; default: the latest run), on its validation
    data, with the best and worst classes and the most confused pairs in words. With --pipeline,
    of what predict answers for each image (RUN also a shipped name or model file as predict's
    --model; default: the latest run, else ensemble).
    """
    tta_method = "shifts" if tta_shifts else "flip" if tta else None
    if not pipeline:
        given = [flag for flag, value in (("--detector", detector), ("--no-align", no_align),
                                          ("--no-reframe", no_reframe), ("--no-light", no_light),
                                          ("--no-sharpen", no_sharpen)) if value]
        if given:
            raise click.UsageError(f"{given[0]}: only with --pipeline (predict's reading of each image)")
        with quiet_tensorflow_startup():
            from ferkeras import evaluate as evaluation

        evaluation.evaluate(run, data=data, split=split, tta=tta_method, out=out, runs_dir=runs_dir,
                            echo=click.echo, skip_bad=skip_bad)
        return
    with quiet_tensorflow_startup():
        from ferkeras.pipeline_eval import evaluate_pipeline

    evaluate_pipeline(run, data=data, split=split, tta=tta_method, out=out, runs_dir=runs_dir,
                      echo=click.echo, skip_bad=skip_bad, detector=detector or DEFAULT_DETECTOR,
                      align=not no_align, reframe=not no_reframe, light=not no_light,
                      sharpen=not no_sharpen)


@cli.group()
def viz() -> None:
    """Figures that explain a run: training history, saliency maps, filters."""


@viz.command("history")
@click.argument("run", required=False)
@click.option("--out", type=click.Path(file_okay=False), help="output folder (default: RUN/viz/)")
@runs_dir_option
def viz_history(run: str | None, out: str | None, runs_dir: str) -> None:
    """Loss and accuracy curves, as a figure.

    Per epoch of RUN (default: the latest), train against validation.
    """
    from ferkeras.viz import workflows

    click.echo(f"Wrote {workflows.plot_history(run, out=out, runs_dir=runs_dir)}")


@viz.command("saliency")
@source_options
@click.option("--n", "n", type=int, default=SALIENCY_IMAGES, show_default=True, help="images drawn at random")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the random choice")
@click.option("--index", "indices", type=int, multiple=True, help="an image of the split by "
              "position (repeatable; replaces the random choice)")
@click.option("--class", "class_name", help="draw only images of this true class (name or 0..6)")
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False),
              help="an image file to explain (repeatable; replaces the split's images)")
@click.option("--method", type=click.Choice(SALIENCY_METHODS), default=DEFAULT_METHOD, show_default=True,
              help="saliency method (tf-keras-vis)")
@click.option("--target", help="explain this class instead of the predicted one")
def viz_saliency(run, data, split, out, runs_dir, n, seed, indices, class_name, images, method,
                 target) -> None:
    """Saliency maps of images, as a figure.

    Input, map and overlay of n images, titled with the true and predicted class.
    """
    with quiet_tensorflow_startup():
        from ferkeras.viz import workflows

    path = workflows.explain_saliency(run, n=n, seed=seed, indices=list(indices),
                                      class_name=class_name, image_files=list(images), method=method,
                                      target=target, data=data, split=split, out=out,
                                      runs_dir=runs_dir)
    click.echo(f"Wrote {path}")


@viz.command("filters")
@source_options
@click.option("--layer", help="convolutional layer (default: the last, conv4)")
@click.option("--filters", default=ALL_FILTERS, show_default=True,
              help="filters to show: all, 0-15, 0,5,7")
@click.option("--top-k", type=int, default=DEFAULT_TOP_K, show_default=True,
              help="real images shown per filter, those that activate it most")
@click.option("--steps", type=int, default=ActivationMaximizationSettings.steps, show_default=True,
              help="gradient-ascent steps")
@click.option("--objective", type=click.Choice(OBJECTIVES), default=ActivationMaximizationSettings.objective,
              show_default=True, help="maximize the filter's centre units (one face-sized "
              "feature) or its whole map's mean (a texture)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the starting noise")
def viz_filters(run, data, split, out, runs_dir, layer, filters, top_k, steps, objective,
                seed) -> None:
    """What the filters respond to, as figures.

    For conv4 (or --layer): per filter, the input that maximizes it, and the real images that
    activate it most with where.
    """
    with quiet_tensorflow_startup():
        from ferkeras.viz import workflows

    settings = ActivationMaximizationSettings(steps=steps, objective=objective)
    paths = workflows.visualize_filters(run, layer=layer, filters=filters, top_k=top_k,
                                        settings=settings, data=data, split=split, seed=seed,
                                        out=out, runs_dir=runs_dir, progress=sys.stdout.isatty())
    click.echo("Wrote " + ", ".join(str(p) for p in paths))


@cli.command()
@click.argument("run", required=False)
@click.option("--format", "formats", type=click.Choice([*FORMATS, "both"]), default="both",
              show_default=True, help="RUN/report.html (self-contained), RUN/report.md, or both")
@click.option("--filters", default=ReportSettings.filters, show_default=True,
              help="filters of the last conv layer shown: all, 0-15, 0,5,7")
@click.option("--steps", type=int, default=ReportSettings.steps, show_default=True,
              help="activation-maximization steps")
@click.option("--seed", type=int, default=ReportSettings.seed, show_default=True,
              help="seed of the saliency images, the ascent's starting noise and the gradient checks")
@runs_dir_option
def report(run: str | None, formats: str, filters: str, steps: int, seed: int, runs_dir: str) -> None:
    """The reference's six questions answered, as a report.

    From RUN (default: the latest run): architecture, history, confusion matrix, saliency
    maps, filters and the gradient math, as one HTML page with its figures embedded and a
    Markdown twin; figures in RUN/report/.
    """
    settings = ReportSettings(filters=filters, steps=steps, seed=seed)  # checks --steps first
    with quiet_tensorflow_startup():
        from ferkeras.report import build_report

    build_report(run, runs_dir, settings, formats=FORMATS if formats == "both" else (formats,),
                 echo=click.echo, progress=sys.stdout.isatty())


@cli.command()
@click.option("--trials", type=int, default=TRIALS, show_default=True, help="random inputs per check")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the random inputs")
def gradcheck(trials: int, seed: int) -> None:
    """Check the math's gradients against TensorFlow.

    The NumPy batch-norm and softmax + cross-entropy gradients against tf.GradientTape in
    float64: prints each one's largest relative error; exit code 1 when any is 1e-6 or more.
    """
    with quiet_tensorflow_startup():
        from ferkeras import gradients

    result = gradients.gradcheck(trials, seed)
    click.echo(gradients.format_gradcheck(result))
    if not result.passed:  # an error at or above the tolerance exits 1, as a failing test does
        click.get_current_context().exit(1)


@cli.command()
@click.argument("members", nargs=-1, required=True)
@click.option("--name", default="my_ensemble", show_default=True, help="the run folder to make in --runs-dir "
              "(not a shipped model's name: those name the installed ones)")
@click.option("--logit-adjust", type=float, default=0.0, show_default=True,
              help="tau: take tau x log(class share in train) off each logit, for the rare expressions")
@runs_dir_option
def ensemble(members: tuple[str, ...], name: str, logit_adjust: float, runs_dir: str) -> None:
    """Make models (runs, .keras files, shipped, large) into one, their logits averaged, as a run.

    The run exports, evaluates and predicts like a trained one: `ferkeras export NAME --calibrate`.
    """
    with quiet_tensorflow_startup():
        from ferkeras.ensemble import make_ensemble

    make_ensemble(members, name, runs_dir, logit_adjust, echo=click.echo)


@cli.command("export")
@click.argument("run", required=False)
@click.option("--tflite", is_flag=True, help="also TFLite, converted from the SavedModel "
              "(default quantisations: none and int8)")
@click.option("--quantize", multiple=True, metavar="none|float16|dynamic|int8|int16x8",
              help="TFLite variants, repeated or comma-separated (implies --tflite)")
@click.option("--out", type=click.Path(file_okay=False), help="export folder",
              show_default="exported/ in the run's folder, or NAME_exported/ beside a .keras file")
@click.option("--force", is_flag=True, help="export into the folder of the models installed with "
              "ferkeras (ferkeras.exported: the repo's exported/), replacing them")
@click.option("--no-verify", is_flag=True, help="export even if parity with the Keras model misses "
              "its bar (the figures are still measured and recorded)")
@click.option("--no-saved-model", is_flag=True, help="leave the SavedModel out of the export "
              "folder (it is still made, to convert the TFLite files from)")
@click.option("--calibrate", type=click.Choice(tuple(TTA_METHODS)), is_flag=False,
              flag_value=DEFAULT_TTA, default=None, help="fit a temperature on the run's validation "
              "images and fold it into every file, so that the probabilities mean what they say, "
              f"as averaged over a --tta method's views (alone: {DEFAULT_TTA}, predict's default)")
@click.option("--match-prior", is_flag=True, help="before the temperature, move each class's logit so "
              "that it is the answer for its share of the training data on the validation images "
              "(their labels unused): fear and disgust answered as often as they occur")
@runs_dir_option
def export_command(run: str | None, tflite: bool, quantize: tuple[str, ...], out: str | None,
                   force: bool, no_verify: bool, no_saved_model: bool, calibrate: str | None,
                   match_prior: bool, runs_dir: str) -> None:
    """Export a run's best model as SavedModel and TFLite, checked against the Keras model."""
    with quiet_tensorflow_startup():
        from ferkeras import export as exporting

    result = exporting.export(run, out, tflite=tflite, quantize=quantize, verify=not no_verify,
                              runs_dir=runs_dir, echo=click.echo, saved_model=not no_saved_model,
                              force=force, calibrate=calibrate or False, match_prior=match_prior)
    if result.rejected:  # exit code 1, as for a failed test; 2 stays for bad input
        click.echo(f"Error: parity check failed: {'; '.join(result.failures)} "
                   f"(kept in {result.rejected}/; --no-verify exports anyway)", err=True)
        click.get_current_context().exit(1)


def main() -> None:
    """Console entry point: run a command; user errors become one line and exit code 2."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:  # bare `ferkeras`: help, not an error
        click.echo(e.format_message())
        sys.exit(0)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"Error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except FerkerasError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)
    except OSError as e:  # what no module turned into a FerkerasError: an unwritable --out, say
        click.echo(f"Error: {e.filename}: {e.strerror}" if e.filename else f"Error: {e}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
