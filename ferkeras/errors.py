"""User-facing output: the exception that the CLI turns into one line and exit code 2, and a
guard that hides C++ libraries' start-up chatter."""

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


class FerkerasError(Exception):
    """A user-facing problem (bad file, bad flag): the message names what and where."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (or its type name): fits a one-line error."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Hide C++ log lines written to file descriptor 2 (TensorFlow start-up, TFLite notices).

    What was written is shown if the block raises, so a real error is never lost.
    """
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
