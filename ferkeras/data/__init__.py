"""FER2013 in any of its common layouts -> uint8 (N, 48, 48) images and int64 labels.

Layouts: the original fer2013.csv (emotion,pixels,Usage), the course-homework CSVs
(label,feature and unlabeled id,feature), Kaggle-style image folders (split/class/*.jpg, or
class/*.jpg: one split named train), and generated synthetic faces. Decoded real data is cached
as .npz under cache_dir(), keyed by the files' paths, sizes and mtimes. Every bad input raises
FerkerasError naming the file (and 1-based line for CSVs); with skip_bad, bad rows, unreadable
images, photos with no face found, empty class folders and those of other expressions (contempt)
are passed over instead and listed in Dataset.skipped. Class folders may carry other data sets'
names for the seven classes (spec.CLASS_SYNONYMS: CK+'s anger, sadness).

One module per layout (csvfile, folders), the cache they share (cache) and the records and
splits every stage uses (splits); this one dispatches a path to its loader.
"""

from __future__ import annotations

import os
from pathlib import Path

from ferkeras.config import is_synthetic_data
from ferkeras.data import csvfile, folders
from ferkeras.data.cache import cache_dir, cache_path, read_cache, write_cache
from ferkeras.data.folders import split_files
from ferkeras.data.splits import EVAL_BATCH_SIZE, Dataset, Split, as_batch, train_val_splits
from ferkeras.errors import FerkerasError

__all__ = ["EVAL_BATCH_SIZE", "Dataset", "Split", "as_batch", "cache_dir", "load_dataset",
           "split_files", "train_val_splits"]

_SYNTHETIC_TRAIN_IMAGES = 8000
_SYNTHETIC_TEST_IMAGES = 2000


def load_dataset(path: str | os.PathLike | None = None, skip_bad: bool = False,
                 decode: bool = True) -> Dataset:
    """Load a CSV file or image folder as a Dataset; None, "synthetic" or "synthetic:N" generates faces.

    skip_bad: pass over bad CSV rows, unreadable images, photos with no face found and empty class
    folders (listed in Dataset.skipped) rather than stop at the first. decode False: image folders
    are listed, not decoded (each Split's files and labels, images None), for a reader of the
    files themselves (ferkeras.pipeline_eval), which would otherwise find every photo's face twice;
    CSV and synthetic data are decoded all the same.
    """
    if is_synthetic_data(path):
        return _load_synthetic(str(path or "synthetic"))
    root = Path(path).expanduser()
    if not root.exists():
        raise FerkerasError(f"{root}: no such file or folder")
    skipped: list[str] | None = [] if skip_bad else None
    try:
        dataset = _load_path(root.resolve(), skipped, decode)
    except OSError as exc:  # listing or stat failed: unreadable folder, dangling link
        raise FerkerasError(f"{exc.filename or root}: cannot read: {exc.strerror or exc}") from None
    dataset.skipped = skipped or []
    return dataset



def _load_path(root: Path, skipped: list[str] | None, decode: bool = True) -> Dataset:
    """A folder's CSVs (fer2013.csv, else train.csv/test.csv) or image folders, or one CSV.

    skipped: None to raise at the first bad row or file, else a list that collects them.
    """
    if root.is_dir():
        if (root / "fer2013.csv").is_file():
            csv_files = [root / "fer2013.csv"]
        else:
            csv_files = [root / n for n in ("train.csv", "test.csv") if (root / n).is_file()]
        if not csv_files:
            return folders.load_folders(root, skipped, decode)
    else:
        csv_files = [root]
    stamp = [(str(f), info.st_size, info.st_mtime_ns) for f in csv_files for info in [f.stat()]]
    cache_file = cache_path(root, stamp)
    cached = read_cache(cache_file)
    if cached is not None:
        return Dataset(str(root), *cached)
    fmt, splits = "", {}
    for file in csv_files:
        fmt, file_splits = csvfile.parse_csv(file, file.stem if root.is_dir() else None, skipped)
        splits.update(file_splits)
    if not skipped:  # a cache must never hide bad rows from a load without skip_bad
        write_cache(cache_file, fmt, splits)
    return Dataset(str(root), fmt, splits)


def _load_synthetic(spec: str) -> Dataset:
    """ "synthetic" (8,000 train, 2,000 test) or "synthetic:N" (N train, N/4 test): quick runs."""
    from ferkeras import synthetic  # lazy: real-data runs never need the generator

    train_count = _SYNTHETIC_TRAIN_IMAGES
    if ":" in spec:
        count = spec.split(":", 1)[1]
        if not count.isdigit() or int(count) < 28:
            raise FerkerasError(f"--data {spec}: N in synthetic:N must be an integer >= 28")
        train_count = int(count)
    test_count = train_count * _SYNTHETIC_TEST_IMAGES // _SYNTHETIC_TRAIN_IMAGES
    splits = {}
    for name, count, seed in (("train", train_count, 0), ("test", test_count, 1)):
        images, labels, masks = synthetic.generate(count, seed=seed)
        splits[name] = Split(images, labels, masks)
    return Dataset(spec, "synthetic", splits)

