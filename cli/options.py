"""What several `ferkeras` commands share: TensorFlow's quiet start-up and the flags they declare alike."""

from __future__ import annotations

import contextlib
import dataclasses
import typing

import click

from ferkeras.config import RUNS_DIR, TrainConfig, flag_of
from ferkeras.errors import import_tensorflow


@contextlib.contextmanager
def quiet_tensorflow_startup():
    """Import TensorFlow and probe its devices first, at start-up, before any thread exists, with
    their C++ log lines (oneDNN notice, CUDA probing) hidden; then run the block."""
    import_tensorflow()
    yield


def config_options(command):
    """Add one click option per TrainConfig field, so the flags and config.json never drift."""
    hints = typing.get_type_hints(TrainConfig)
    for f in reversed(dataclasses.fields(TrainConfig)):
        flag = flag_of(f.name)
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


def runs_dir_option(command):
    """--runs-dir: where run folders are looked up (and, for train, made)."""
    return click.option("--runs-dir", default=RUNS_DIR, show_default=True,
                        help="folder of run folders")(command)


def source_options(command):
    """RUN and the flags that pick the model, its images and where figures go (evaluate, viz)."""
    for option in reversed([
        click.argument("run", required=False),
        click.option("--data", help="use this data instead of the run's own (FER2013 path or "
                     "synthetic); needed with a bare .keras file"),
        click.option("--split", help="val (the run's validation data, default), or a split of "
                     "the data: train, test, private_test"),
        click.option("--out", type=click.Path(file_okay=False), help="output folder "
                     "(default: RUN/viz/)"),
        runs_dir_option,
    ]):
        command = option(command)
    return command
