"""Files written whole or not at all, and JSON read back with one-line errors.

Every result file (run configs, histories, metrics, figures, models, caches) goes through
atomic_path: a kill at any moment leaves the previous file whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ferkeras.errors import FerkerasError

_REQUIRED = object()  # read_json without a default: a missing or bad file is an error


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside path to write; rename it over path only if all went well.

    A kill at any moment leaves the previous file whole (at worst a stray hidden .tmp file).
    A failed write (full disk, unwritable folder) is a FerkerasError naming path.
    """
    path = Path(path)
    try:
        # The target's suffix last, for writers that insist on it (Keras' .keras).
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    except OSError as e:
        raise FerkerasError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise FerkerasError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text through a temporary file in the same folder and os.replace."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON through a temporary file and a rename, so a kill never leaves half a file."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str | os.PathLike, default: Any = _REQUIRED, what: str = "it") -> Any:
    """A JSON file's content; default when the file is missing or not JSON, if one is given,
    else a FerkerasError "PATH: cannot read WHAT (reason)"."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        if default is not _REQUIRED:
            return default
        raise FerkerasError(f"{path}: cannot read {what} ({e})") from None
