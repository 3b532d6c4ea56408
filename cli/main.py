"""`ferkeras` commands. Each parses its flags and makes one library call; logic lives in ferkeras/."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import typing

import click

import ferkeras
from ferkeras.config import TrainConfig
from ferkeras.errors import FerkerasError

# Options that `train --resume` may change; the rest come from the run's config.json.
RESUME_OVERRIDES = ("epochs", "runs_dir")


@contextlib.contextmanager
def quiet_tensorflow_startup():
    """Hide TensorFlow's C++ start-up lines (oneDNN notice, CUDA probing); show them on failure.

    They are written to file descriptor 2 before any Python logging setting applies.
    """
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe logs here, once
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    yield


def config_options(command):
    """Add one click option per TrainConfig field, so the flags and config.json never drift."""
    hints = typing.get_type_hints(TrainConfig)
    for f in reversed(dataclasses.fields(TrainConfig)):
        flag = "--" + f.name.replace("_", "-")
        kind = typing.get_args(hints[f.name])[0] if typing.get_args(hints[f.name]) else hints[f.name]
        choices = f.metadata.get("choices")
        if kind is bool:
            option = click.option(flag, is_flag=True, default=f.default, help=f.metadata["help"])
        else:
            option = click.option(flag, f.name, type=click.Choice(choices) if choices else kind,
                                  default=f.default, show_default=f.default is not None,
                                  help=f.metadata["help"])
        command = option(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(ferkeras.__version__, prog_name="ferkeras")
def cli() -> None:
    """Facial expression recognition on FER2013 with the reference's compact CNN."""


@cli.command()
@config_options
@click.option("--resume", metavar="RUN", help="continue an interrupted run (name or folder); "
              "only --epochs may change")
def train(resume: str | None, **options) -> None:
    """Train the CNN; each run gets its own folder under runs/."""
    with quiet_tensorflow_startup():
        from ferkeras import train as training

    if resume:
        ctx = click.get_current_context()
        changed = [name for name in options if name not in RESUME_OVERRIDES
                   and ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if changed:
            flags = ", ".join("--" + n.replace("_", "-") for n in changed)
            raise FerkerasError(f"--resume: {flags} cannot change when resuming "
                                f"(the run's config.json holds them); only --epochs can")
        training.resume(resume, epochs=options["epochs"], runs_dir=options["runs_dir"],
                        echo=click.echo)
    else:
        training.train(TrainConfig.from_dict(options), echo=click.echo)


@cli.command()
@click.argument("model", required=False)
@click.option("--channels", type=click.Choice(["1", "3"]), default="3", show_default=True,
              help="conv input channels of a new model")
@click.option("--runs-dir", default="runs", show_default=True, help="folder of run folders")
def summary(model: str | None, channels: str, runs_dir: str) -> None:
    """Print each layer's output shape and parameters (a new model, or a run's / a .keras file)."""
    from ferkeras.config import find_model

    with quiet_tensorflow_startup():
        from ferkeras.model import build_model, count_params, load_model

    net = load_model(find_model(model, runs_dir)) if model else build_model(int(channels))
    net.summary(print_fn=lambda line, *args, **kwargs: click.echo(line))
    total, frozen = count_params(net)
    click.echo(f"{total:,} parameters, {frozen:,} of them non-trainable (BatchNorm statistics)")


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
    sys.exit(code if isinstance(code, int) else 0)
