"""User-facing output: the exception that the CLI turns into one line and exit code 2, and the
guards that keep C++ libraries' log lines off the terminal."""

import contextlib
import os
import re
import sys
import tempfile
import threading
import types
from collections.abc import Iterator


class FerkerasError(Exception):
    """A user-facing problem (bad file, bad flag): the message names what and where."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (or its type name): fits a one-line error."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# The C++ log lines that quiet_stderr drops; any other line written to fd 2 meanwhile (another
# thread's, a Python warning) is passed on when the last block ends.
# Errors (E, F) are never dropped, except CUDA's probing on a machine without a GPU.
CHATTER = re.compile(rb"""
    [IW]\d{4}\ \d\d:\d\d:\d+\.\d+\ +\d+\ \S+:\d+\]                # absl: I0000 00:00:1796.5 7468 port.cc:153]
  | E\d{4}\ \d\d:\d\d:\d+\.\d+\ +\d+\ cuda_\w+\.cc:\d+\]             # absl: E0000 ... cuda_platform.cc:52]
  | \d{4}-\d\d-\d\d\ \d\d:\d\d:\d\d\.\d+:\ [IW]\ \S+:\d+\]        # TensorFlow's own, before absl
  | WARNING:\ All\ log\ messages\ before\ absl::InitializeLog\(\)  # absl, before its first line
  | To\ enable\ the\ following\ instructions:                     # the CPU-feature line's second line
  | INFO:\ Created\ TensorFlow\ Lite\ XNNPACK\ delegate\ for\ CPU\.  # LiteRT, once per process
  | fully_quantize:\                                              # the TFLite converter's quantiser
""", re.VERBOSE)


class _Redirect:
    """fd 2 pointed at one temporary file while any quiet_stderr block is open, in any thread.

    The first block to enter redirects and the last to leave restores, under one lock, so
    overlapping blocks can never leave fd 2 on a temporary file (swapping it per block did).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.saved = -1  # a duplicate of fd 2 as it was: the real stderr
        self.file = None
        self.shown: list[tuple[int, int]] = []  # byte ranges of the file already shown whole

    def enter(self) -> int:
        """Open a block; the offset in the file from which its text is written."""
        with self.lock:
            if self.depth == 0:
                _flush_python_stderr()  # Python's pending text goes where it was meant to
                self.file = tempfile.TemporaryFile()
                self.saved = os.dup(2)
                os.dup2(self.file.fileno(), 2)
            self.depth += 1
            return self._end()

    def leave(self, start: int, failed: bool) -> None:
        """Close a block; one that failed shows what was written since it began, at once."""
        with self.lock:
            _flush_python_stderr()  # this block's Python text, into the file before it is read
            end = self._end()
            if failed:
                self._write(b"".join(_read(self.file, a, b) for a, b in self._unshown(start, end)))
                self.shown.append((start, end))
            self.depth -= 1
            if self.depth:
                return
            # fd 2 back first, whatever happens while the rest is read and passed on
            os.dup2(self.saved, 2)
            os.close(self.saved)
            file, unshown = self.file, self._unshown(0, end)
            self.saved, self.file, self.shown = -1, None, []
            try:
                rest = b"".join(_read(file, a, b) for a, b in unshown)
            finally:
                file.close()
            self._write(b"".join(line for line in rest.splitlines(keepends=True)
                                 if not CHATTER.match(line)))

    def _end(self) -> int:
        return os.fstat(self.file.fileno()).st_size

    def _unshown(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of [start, end) that no failed block has shown yet."""
        parts, at = [], start
        for a, b in sorted(self.shown):
            if at >= end:
                break
            if a > at:
                parts.append((at, min(a, end)))
            at = max(at, b)
        return parts + ([(at, end)] if at < end else [])

    def _write(self, data: bytes) -> None:
        fd = self.saved if self.depth else 2
        with contextlib.suppress(OSError):  # a closed stderr: nowhere left to show it
            while data:
                data = data[os.write(fd, data):]


def _read(file, start: int, end: int) -> bytes:
    """Bytes [start, end) of the capture file, leaving its offset (fd 2's, while redirected) alone."""
    return os.pread(file.fileno(), end - start, start)


def _flush_python_stderr() -> None:
    if sys.stderr is not None:
        sys.stderr.flush()


_REDIRECT = _Redirect()


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Hide C++ libraries' log lines written to file descriptor 2 in this block; safe in threads.

    For lines that no library setting turns off (TensorFlow's before its log level applies, the
    TFLite converter's). Other lines written meanwhile, from any thread, are passed on when the
    last open block ends, and if the block raises, all it wrote is shown: no real error is lost.
    """
    start = _REDIRECT.enter()
    try:
        yield
    except BaseException:
        _REDIRECT.leave(start, failed=True)
        raise
    _REDIRECT.leave(start, failed=False)


_tensorflow_lock = threading.Lock()
_tensorflow_started = False


def import_tensorflow() -> types.ModuleType:
    """TensorFlow, imported and its devices probed once per process, its C++ start-up lines hidden."""
    global _tensorflow_started
    with _tensorflow_lock:
        if not _tensorflow_started:
            # TensorFlow's own switch, read when it loads: hides later INFO and WARNING lines
            # (MTCNN's "local rendezvous is aborting" on a picture without a face). A user's wins.
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            with quiet_stderr():  # what it logs before that setting applies: oneDNN, CUDA probing
                import tensorflow as tf

                tf.config.list_physical_devices()
            _tensorflow_started = True
    return sys.modules["tensorflow"]
