"""The callbacks of a training run: its epoch lines, history files, best model and resumable backup."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import keras

from ferkeras.fileio import write_json_atomic, write_text_atomic
from ferkeras.model import float32_copy, save_model
from ferkeras.runs import read_history

Echo = Callable[[str], None]
HISTORY_FIELDS = ("epoch", "seconds", "train_seconds", "lr", "loss", "accuracy", "val_loss",
                  "val_accuracy", "balanced_accuracy", "val_balanced_accuracy")


class EpochLog(keras.callbacks.Callback):
    """One line per epoch in the reference's format, timing the epoch and its validation."""

    def __init__(self, epochs: int, echo: Echo):
        super().__init__()
        self.epochs, self.echo = epochs, echo
        self.epoch_start = self.val_start = 0.0
        self.val_seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start, self.val_seconds = time.perf_counter(), 0.0

    def on_test_begin(self, logs=None):
        self.val_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self.val_seconds += time.perf_counter() - self.val_start

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        seconds = time.perf_counter() - self.epoch_start
        # Later callbacks (the history files) read these from logs.
        logs["seconds"], logs["train_seconds"] = seconds, seconds - self.val_seconds
        logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        width = len(str(self.epochs))
        self.echo(
            f"[{epoch + 1:0{max(3, width)}d}/{self.epochs:0{max(3, width)}d}] {seconds:.2f} sec(s) "
            f"Train Acc: {logs['accuracy']:.6f} Loss: {logs['loss']:.4f} | "
            f"Val Acc: {logs['val_accuracy']:.6f} loss: {logs['val_loss']:.4f}"
        )


class HistoryFiles(keras.callbacks.Callback):
    """history.json and history.csv, rewritten atomically each epoch, every epoch once.

    After a resume an epoch that ran past the last backup runs again: its new row replaces
    the old one, and rows after it are dropped, so the history never repeats an epoch.
    """

    def __init__(self, run_dir: Path):
        super().__init__()
        self.run_dir = run_dir
        self.rows = read_history(run_dir)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = {"epoch": epoch + 1}
        row.update({k: float(logs[k]) for k in HISTORY_FIELDS[1:] if k in logs})
        self.rows = [r for r in self.rows if r["epoch"] <= epoch] + [row]
        write_json_atomic(self.run_dir / "history.json", self.rows)
        lines = [",".join(HISTORY_FIELDS)]
        lines += [",".join(f"{r.get(k, '')}" for k in HISTORY_FIELDS) for r in self.rows]
        write_text_atomic(self.run_dir / "history.csv", "\n".join(lines) + "\n")


class BestModel(keras.callbacks.Callback):
    """model.keras: the model of the best validation figure (monitor) so far, saved atomically.

    Keras' ModelCheckpoint writes straight into the file, so a kill mid-save would lose the
    best model; best starts from a resumed run's history, so a worse epoch never replaces it.
    """

    def __init__(self, path: Path, best: float | None = None, monitor: str = "val_accuracy"):
        super().__init__()
        self.path, self.best, self.monitor = path, best, monitor

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and (self.best is None or value > self.best):
            self.best = float(value)
            save_model(float32_copy(self.model), self.path)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, but each backup file is replaced whole.

    Keras writes latest.weights.h5 in place: a kill during the first backup left a corrupt file
    with no earlier copy to fall back to, and the run could not resume.
    """

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        # Keras insists on the .weights.h5 suffix, so the partial file is named here.
        partial = os.path.join(self.backup_dir, f".partial-{os.getpid()}.weights.h5")
        self.model.save_weights(partial, overwrite=True)
        os.replace(partial, self._weights_path)  # weights first: a kill between re-runs an epoch
        write_json_atomic(self._training_metadata_path,
                          {"epoch": self._current_epoch, "batch": self._last_batch_seen})
