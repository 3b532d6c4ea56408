"""A dataset's records (Split, Dataset), the models' input batch, and train/validation splits."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ferkeras.errors import FerkerasError
from ferkeras.spec import CLASS_NAMES, IMAGE_SIZE

EVAL_BATCH_SIZE = 512  # images per inference batch (Keras predict): larger is faster on a CPU
_AUTO_VAL_FRACTION = 0.25  # the reference homework's 75/25 split


@dataclass
class Split:
    """Images of one split, with labels (None when unlabeled), masks (synthetic only) and the image
    files they were decoded from (image folders only; images None where the folders were listed,
    not decoded: load_dataset(decode=False))."""

    images: np.ndarray | None
    labels: np.ndarray | None
    masks: np.ndarray | None = None
    # (N,) str: each image's file, which holds the picture as its maker took it (a photo, not only
    # the 48x48 face): what reading the images as predict reads them needs
    files: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.files if self.images is None else self.images)

    def class_counts(self) -> list[int]:
        """Images per class in CLASS_NAMES order; [] for unlabeled data."""
        if self.labels is None:
            return []
        return np.bincount(self.labels, minlength=len(CLASS_NAMES)).tolist()

    def _take(self, index: np.ndarray) -> Split:
        masks = None if self.masks is None else self.masks[index]
        labels = None if self.labels is None else self.labels[index]
        files = None if self.files is None else self.files[index]
        images = None if self.images is None else self.images[index]
        return Split(images, labels, masks, files)


@dataclass
class Dataset:
    """Named splits loaded from one source (a resolved path, or "synthetic")."""

    source: str
    format: str
    splits: dict[str, Split]
    skipped: list[str] = field(default_factory=list)  # what skip_bad passed over, one line each

    def skip_report(self) -> str:
        """One line: how many bad rows or files skip_bad passed over, and the first; "" if none."""
        if not self.skipped:
            return ""
        count = len(self.skipped)
        nouns = ("row", "rows") if self.format.endswith("csv") else ("file or folder", "files or folders")
        return f"--skip-bad: skipped {count} bad {nouns[count != 1]} (first: {self.skipped[0]})"

    def describe(self) -> dict:
        """A JSON-able summary: source, format, and images and class counts per split."""
        splits = {name: {"images": len(split),
                         "class_counts": split.class_counts() if split.labels is not None else None}
                  for name, split in self.splits.items()}
        return {"source": self.source, "format": self.format, "splits": splits}


def as_batch(images: np.ndarray) -> np.ndarray:
    """uint8 or float faces (N, 48, 48[, 1]) -> the models' input: float32 (N, 48, 48, 1), 0..255."""
    batch = np.asarray(images, dtype=np.float32)
    if batch.ndim == 3:
        batch = batch[..., None]
    if batch.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1):
        side = IMAGE_SIZE
        raise FerkerasError(f"images must be (N, {side}, {side}) or (N, {side}, {side}, 1), "
                            f"got {batch.shape}")
    return batch


def train_val_splits(dataset: Dataset, val: str = "auto", seed: int = 0) -> tuple[Split, Split]:
    """(train, validation): a named split, or a stratified fraction held out of "train"."""
    train = _labeled_split(dataset, "train", "training data")
    present = np.flatnonzero(train.class_counts())
    if len(present) < 2:
        only = ", ".join(CLASS_NAMES[i] for i in present)
        raise FerkerasError(f"{dataset.source}: the train split holds only class {only} "
                            f"({len(train)} images); training needs at least 2 classes")
    val = str(val).strip()
    if val == "auto":
        test = dataset.splits.get("test")
        if test is not None and test.labels is not None:
            return train, test
        return _stratified_split(train, _AUTO_VAL_FRACTION, seed)
    try:
        fraction = float(val)
    except ValueError:
        fraction = None
    if fraction is not None:
        if not 0 < fraction < 1:
            raise FerkerasError(f"--val-split {val}: a fraction must be between 0 and 1, exclusive")
        return _stratified_split(train, fraction, seed)
    if val == "train":
        raise FerkerasError("--val-split train: validating on the training data measures nothing; "
                            "name another split or a fraction such as 0.25")
    return train, _labeled_split(dataset, val, f"--val-split {val}")



def _labeled_split(dataset: Dataset, name: str, purpose: str) -> Split:
    split = dataset.splits.get(name)
    available = ", ".join(f"{n}{'' if s.labels is not None else ' (unlabeled)'}"
                          for n, s in dataset.splits.items())
    if split is None or split.labels is None:
        problem = "has no" if split is None else "has an unlabeled"
        raise FerkerasError(f"{purpose}: {dataset.source} {problem} split {name!r} "
                            f"(splits: {available})")
    return split


def _stratified_split(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    from sklearn.model_selection import train_test_split  # lazy: sklearn takes a second to import

    try:
        kept, held_out = train_test_split(np.arange(len(train)), test_size=fraction,
                                          stratify=train.labels, random_state=seed)
    except ValueError as exc:
        raise FerkerasError(f"--val-split {fraction:g}: cannot hold out a stratified "
                            f"{fraction:g} of {len(train)} training images: {exc}") from None
    return train._take(np.sort(kept)), train._take(np.sort(held_out))

