"""FER2013 in any of its common layouts -> uint8 (N, 48, 48) images and int64 labels.

Layouts: the original fer2013.csv (emotion,pixels,Usage), the course-homework CSVs
(label,feature and unlabeled id,feature), Kaggle-style image folders (split/class/*.jpg, or
class/*.jpg: one split named train), and generated synthetic faces. Decoded real data is cached
as .npz under cache_dir(), keyed by the files' paths, sizes and mtimes. Every bad input raises
FerkerasError naming the file (and 1-based line for CSVs); with skip_bad, bad rows, unreadable
images and empty class folders are passed over instead and listed in Dataset.skipped.

Past ~400 lines on purpose: its sections (dispatch and splits, CSV, image folders, cache) share
the label rules, the skip_bad bookkeeping and the cache stamp, and read top to bottom in the
order a load runs; tests and bench/data_load.py reach its private decoders by this module's name.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ferkeras.errors import FerkerasError
from ferkeras.fileio import atomic_path
from ferkeras.spec import CLASS_NAMES, IMAGE_SIZE

EVAL_BATCH_SIZE = 512  # images per inference batch (Keras predict): larger is faster on a CPU
_PIXELS = IMAGE_SIZE * IMAGE_SIZE
_SYNTHETIC_TRAIN_IMAGES = 8000
_SYNTHETIC_TEST_IMAGES = 2000
_AUTO_VAL_FRACTION = 0.25  # the reference homework's 75/25 split
_CACHE_VERSION = 1  # bump when decoding changes, so old caches are not reused
_USAGE_SPLITS = {"training": "train", "publictest": "test", "privatetest": "private_test"}
_IGNORED_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}  # OS litter beside real data
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_EXPECTED_HEADERS = "emotion,pixels,Usage (fer2013.csv), label,feature or id,feature (homework)"


@dataclass
class Split:
    """Images of one split, with labels (None when unlabeled) and masks (synthetic only)."""

    images: np.ndarray
    labels: np.ndarray | None
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    def class_counts(self) -> list[int]:
        """Images per class in CLASS_NAMES order; [] for unlabeled data."""
        if self.labels is None:
            return []
        return np.bincount(self.labels, minlength=len(CLASS_NAMES)).tolist()

    def _take(self, index: np.ndarray) -> Split:
        masks = None if self.masks is None else self.masks[index]
        labels = None if self.labels is None else self.labels[index]
        return Split(self.images[index], labels, masks)


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


def load_dataset(path: str | os.PathLike | None = None, skip_bad: bool = False) -> Dataset:
    """Load a CSV file or image folder as a Dataset; None, "synthetic" or "synthetic:N" generates faces.

    skip_bad: pass over bad CSV rows, unreadable images and empty class folders (listed in
    Dataset.skipped) rather than stop at the first.
    """
    if path is None or str(path).split(":")[0] == "synthetic":
        return _load_synthetic(str(path or "synthetic"))
    root = Path(path).expanduser()
    if not root.exists():
        raise FerkerasError(f"{root}: no such file or folder")
    skipped: list[str] | None = [] if skip_bad else None
    try:
        dataset = _load_path(root.resolve(), skipped)
    except OSError as exc:  # listing or stat failed: unreadable folder, dangling link
        raise FerkerasError(f"{exc.filename or root}: cannot read: {exc.strerror or exc}") from None
    dataset.skipped = skipped or []
    return dataset


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


def cache_dir() -> Path:
    """Where decoded arrays are cached: $FERKERAS_CACHE_DIR, else the XDG cache folder."""
    if os.environ.get("FERKERAS_CACHE_DIR"):
        return Path(os.environ["FERKERAS_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ferkeras"


def _load_path(root: Path, skipped: list[str] | None) -> Dataset:
    """A folder's CSVs (fer2013.csv, else train.csv/test.csv) or image folders, or one CSV.

    skipped: None to raise at the first bad row or file, else a list that collects them.
    """
    if root.is_dir():
        if (root / "fer2013.csv").is_file():
            csv_files = [root / "fer2013.csv"]
        else:
            csv_files = [root / n for n in ("train.csv", "test.csv") if (root / n).is_file()]
        if not csv_files:
            return _load_folders(root, skipped)
    else:
        csv_files = [root]
    stamp = [(str(f), info.st_size, info.st_mtime_ns) for f in csv_files for info in [f.stat()]]
    cache_file = _cache_file(root, stamp)
    cached = _read_cache(cache_file)
    if cached is not None:
        return Dataset(str(root), *cached)
    fmt, splits = "", {}
    for file in csv_files:
        fmt, file_splits = _parse_csv(file, file.stem if root.is_dir() else None, skipped)
        splits.update(file_splits)
    if not skipped:  # a cache must never hide bad rows from a load without skip_bad
        _write_cache(cache_file, fmt, splits)
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


# ---- CSV ------------------------------------------------------------------------------------

def _parse_csv(file: Path, split_name: str | None,
               skipped: list[str] | None = None) -> tuple[str, dict[str, Split]]:
    """Parse fer2013.csv or a homework CSV; split_name overrides the homework split's name."""
    try:
        with open(file, newline="", encoding="utf-8-sig") as handle:  # -sig drops a BOM
            reader = csv.reader(handle)
            try:
                return _parse_csv_rows(file, reader, split_name, skipped)
            except csv.Error as exc:
                raise FerkerasError(f"{file} line {reader.line_num}: bad CSV: {exc}") from None
    except UnicodeDecodeError:
        raise FerkerasError(f"{file}: not a text CSV file (expected a header "
                            f"{_EXPECTED_HEADERS})") from None
    except OSError as exc:
        raise FerkerasError(f"{file}: cannot read: {exc.strerror or exc}") from None


def _parse_csv_rows(file: Path, reader, split_name: str | None,
                    skipped: list[str] | None) -> tuple[str, dict[str, Split]]:
    header = next((row for row in reader if any(cell.strip() for cell in row)), None)
    if header is None:
        raise FerkerasError(f"{file}: empty file (expected a header {_EXPECTED_HEADERS})")
    where, shown = f"{file} line {reader.line_num}", ",".join(header)[:60]
    columns = [name.strip().lower() for name in header]
    if {"label", "feature", "id"} & set(columns):
        fmt, required = "homework-csv", ["label" if "label" in columns else "id", "feature"]
    elif {"emotion", "pixels", "usage"} & set(columns):
        fmt, required = "fer2013-csv", ["emotion", "pixels", "usage"]
    else:
        raise FerkerasError(f"{where}: unrecognized header {shown!r} "
                            f"(expected {_EXPECTED_HEADERS})")
    missing = [name for name in required if name not in columns]
    if missing:
        raise FerkerasError(f"{where}: missing column {missing[0]!r} in header {shown!r}")
    col = {name: columns.index(name) for name in required}
    pixel_col = col.get("pixels", col.get("feature"))
    label_col, usage_col = col.get("emotion", col.get("label")), col.get("usage")

    rows: list[np.ndarray] = []
    labels: list[int | None] = []
    split_of_row: list[str | None] = []
    bad_rows = 0
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue  # blank lines, e.g. a trailing newline
        where = f"{file} line {reader.line_num}"
        try:  # the whole row first, so a skipped row leaves no pixels without a label
            if len(row) != len(columns):
                raise FerkerasError(f"{where}: expected {len(columns)} columns, got {len(row)}")
            pixels = _parse_pixels(row[pixel_col], where)
            label = _parse_label(row[label_col], where) if label_col is not None else None
            usage = _parse_usage(row[usage_col], where) if usage_col is not None else None
        except FerkerasError as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
            bad_rows += 1
            continue
        rows.append(pixels)
        labels.append(label)
        split_of_row.append(usage)
    if not rows:
        raise FerkerasError(f"{file}: all {bad_rows} data rows are bad" if bad_rows
                            else f"{file}: header only, no data rows")

    images = np.stack(rows).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    label_array = np.array(labels, dtype=np.int64) if label_col is not None else None
    if usage_col is None:
        name = split_name or ("train" if label_array is not None else "test")
        return fmt, {name: Split(images, label_array)}
    usage_array = np.array(split_of_row)
    return fmt, {name: Split(images[usage_array == name], label_array[usage_array == name])
                 for name in _USAGE_SPLITS.values() if (usage_array == name).any()}


def _parse_pixels(text: str, where: str) -> np.ndarray:
    # Fast path: a row of only ASCII digits and spaces parses exactly with np.fromstring
    # (C speed); anything else goes to the slow path, which finds the precise problem.
    if not text.encode().translate(None, b" 0123456789"):
        values = np.fromstring(text, dtype=np.int64, sep=" ")  # saturates rather than wraps
        if len(values) == _PIXELS and values.max() <= 255:
            return values.astype(np.uint8)
    tokens = text.split()
    if len(tokens) != _PIXELS:
        raise FerkerasError(f"{where}: expected {_PIXELS} pixels, got {len(tokens)}")
    for position, token in enumerate(tokens, 1):
        if not (token.isascii() and token.lstrip("+-").isdigit()):
            raise FerkerasError(f"{where}: pixel {position} is not an integer: {token!r}")
        if not 0 <= int(token) <= 255:
            raise FerkerasError(f"{where}: pixel {position} value {int(token)} is outside 0..255")
    return np.array([int(token) for token in tokens], dtype=np.uint8)


def _parse_usage(text: str, where: str) -> str:
    usage = text.strip()
    if usage.lower() not in _USAGE_SPLITS:
        raise FerkerasError(f"{where}: unknown Usage {usage!r} "
                            "(expected Training, PublicTest or PrivateTest)")
    return _USAGE_SPLITS[usage.lower()]


def _parse_label(text: str, where: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit() and int(text) < len(CLASS_NAMES)):
        raise FerkerasError(f"{where}: label must be 0..{len(CLASS_NAMES) - 1} "
                            f"({', '.join(CLASS_NAMES)}), got {text!r}")
    return int(text)


# ---- image folders --------------------------------------------------------------------------

def _load_folders(root: Path, skipped: list[str] | None) -> Dataset:
    subdirs = _visible_subdirs(root)
    if any(name.lower() in CLASS_NAMES for name in subdirs):
        # root holds class folders: one split, named train (whatever the folder's name) so that
        # a folder of one's own photos trains and evaluates like any other data
        split_dirs = {"train": root}
    elif subdirs:
        split_dirs = {name.lower(): root / name for name in subdirs}
    else:
        raise FerkerasError(f"{root}: no CSV (fer2013.csv, train.csv) and no class folders "
                            f"(expected e.g. train/angry/*.jpg; classes: {', '.join(CLASS_NAMES)})")
    files: dict[str, tuple[list[str], list[int]]] = {}
    stamp: list[tuple[str, int, int]] = []
    for split, folder in split_dirs.items():
        files[split] = _list_split(folder, root, stamp, skipped)
    ordered = sorted(files, key=lambda name: (name != "train", name != "test", name))
    cache_file = _cache_file(root, stamp)
    cached = _read_cache(cache_file)
    # the same files cached under other split names (before a folder of class folders was
    # named train, its split took the folder's name) are stale: rebuild
    if cached is not None and list(cached[1]) == ordered:
        return Dataset(str(root), *cached)
    all_paths = [path for name in ordered for path in files[name][0]]
    readable = np.ones(len(all_paths), dtype=bool)

    def skip(index: int, error: FerkerasError) -> None:
        readable[index] = False
        skipped.append(str(error))

    # one decode pass over every split keeps the thread pool busy
    all_images = _decode_images(all_paths, on_error=None if skipped is None else skip)
    splits, start = {}, 0
    for name in ordered:
        paths, labels = files[name]
        keep = readable[start:start + len(paths)]
        if not keep.any():
            raise FerkerasError(f"{split_dirs[name]}: none of its {len(paths)} images is readable")
        splits[name] = Split(all_images[start:start + len(paths)][keep],
                             np.array(labels, dtype=np.int64)[keep])
        start += len(paths)
    if not skipped:  # a cache must never hide bad files from a load without skip_bad
        _write_cache(cache_file, "folders", splits)
    return Dataset(str(root), "folders", splits)


def split_files(folder: str | os.PathLike) -> tuple[list[Path], np.ndarray]:
    """A folder split's image files (class/<file>) and labels, in the order load_dataset reads them."""
    folder = Path(folder)
    paths, labels = _list_split(folder, folder, stamp=[])
    return [Path(path) for path in paths], np.array(labels, dtype=np.int64)


def _visible_subdirs(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not _ignored(e.name))


def _ignored(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED_NAMES


def _list_split(folder: Path, root: Path, stamp: list,
                skipped: list[str] | None = None) -> tuple[list[str], list[int]]:
    """Image paths and labels of one split folder, in sorted order; appends to the cache stamp."""
    class_dirs = _visible_subdirs(folder)
    if not class_dirs:
        raise FerkerasError(f"{folder}: no class folders (expected subfolders named "
                            f"{', '.join(CLASS_NAMES)})")
    paths: list[str] = []
    labels: list[int] = []
    for name in class_dirs:
        if name.lower() not in CLASS_NAMES:
            raise FerkerasError(f"{folder / name}: unknown class folder {name!r} "
                                f"(expected one of {', '.join(CLASS_NAMES)})")
    for name in sorted(class_dirs, key=lambda n: CLASS_NAMES.index(n.lower())):  # label order
        label = CLASS_NAMES.index(name.lower())
        relative = os.path.relpath(folder / name, root)
        count = len(paths)
        with os.scandir(folder / name) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if _ignored(entry.name):
                    continue
                if entry.is_dir():
                    raise FerkerasError(f"{entry.path}: unexpected folder inside a class folder "
                                        "(images must sit directly in split/class/)")
                info = entry.stat()
                stamp.append((f"{relative}/{entry.name}", info.st_size, info.st_mtime_ns))
                paths.append(entry.path)
                labels.append(label)
        if len(paths) == count:
            problem = (f"{folder / name}: empty class folder (remove it, or --skip-bad "
                       "to pass over it)")
            if skipped is None:
                raise FerkerasError(problem)
            skipped.append(problem)
    if not paths:
        raise FerkerasError(f"{folder}: no images in any class folder ({', '.join(class_dirs)})")
    return paths, labels


def _decode_images(paths: list[str], threads: int = 1,
                   on_error: Callable[[int, FerkerasError], None] | None = None) -> np.ndarray:
    """Decode image files to uint8 (N, 48, 48); threads > 1 decodes in a thread pool.

    on_error(index, error), when given, is told of an unreadable file (left black) instead of
    the error being raised.
    """
    # One thread by default, as measured on FER2013 (32k 48x48 JPEGs, 2 cores): two threads
    # ran at 0.64x-1.06x the speed of one. Pillow's per-file work is mostly Python under the
    # GIL, so threads add GIL hand-offs. bench/data_load.py re-measures; the cache makes it once.
    images = np.zeros((len(paths), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)

    def decode_range(bounds: tuple[int, int]) -> None:
        for i in range(*bounds):
            try:
                images[i] = _decode_image(paths[i])
            except FerkerasError as error:
                if on_error is None:
                    raise
                on_error(i, error)

    if threads <= 1:
        decode_range((0, len(paths)))
        return images
    chunk = max(64, -(-len(paths) // (threads * 8)))  # a few chunks per thread balance the load
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(decode_range, [(lo, min(lo + chunk, len(paths)))
                                         for lo in range(0, len(paths), chunk)]):
            pass  # iterating re-raises the first worker's error
    return images


def _decode_image(path: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.draft("L", (IMAGE_SIZE, IMAGE_SIZE))  # JPEG: decode gray at a reduced scale
            if image.mode in _SIXTEEN_BIT_MODES:
                # convert("L") would clip 16-bit values at 255; scale 0..65535 to 0..255 instead
                wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
                image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
            elif image.mode != "L":
                image = image.convert("L")
            if image.size != (IMAGE_SIZE, IMAGE_SIZE):
                image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
            return np.asarray(image, dtype=np.uint8)
    except UnidentifiedImageError:
        raise FerkerasError(f"{path}: not an image file (Pillow cannot identify it)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise FerkerasError(f"{path}: corrupt or unreadable image: {exc}") from None


# ---- cache ----------------------------------------------------------------------------------

def _cache_file(root: Path, stamp: list[tuple[str, int, int]]) -> Path:
    """The cache file for this source: one per source path, named by a hash of its files."""
    listing = "\n".join(f"{name}\t{size}\t{mtime}" for name, size, mtime in stamp)
    digest = hashlib.sha256(f"{_CACHE_VERSION}\n{root}\n{listing}".encode()).hexdigest()
    source_id = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return cache_dir() / f"{source_id}-{digest[:24]}.npz"


def _read_cache(cache_file: Path) -> tuple[str, dict[str, Split]] | None:
    """(format, splits) from a cache file; None when it is missing, unreadable or corrupt."""
    try:
        with np.load(cache_file, allow_pickle=False) as npz:
            fmt = str(npz["format"])
            splits = {}
            for i, name in enumerate(npz["splits"].tolist()):
                images = npz[f"images_{i}"]
                labels = npz[f"labels_{i}"] if f"labels_{i}" in npz.files else None
                if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or (
                        labels is not None and (labels.dtype != np.int64
                                                or labels.shape != images.shape[:1])):
                    return None
                splits[name] = Split(images, labels)
        return fmt, splits
    except Exception:  # any damage (truncated zip, bad header, missing key): rebuild instead
        return None


def _write_cache(cache_file: Path, fmt: str, splits: dict[str, Split]) -> None:
    """Write atomically (temp file + rename); caching is best effort, so OSError is ignored."""
    arrays = {"format": np.array(fmt), "splits": np.array(list(splits))}
    for i, split in enumerate(splits.values()):
        arrays[f"images_{i}"] = split.images
        if split.labels is not None:
            arrays[f"labels_{i}"] = split.labels
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_file) as temp, open(temp, "wb") as handle:
            np.savez(handle, **arrays)  # a handle: given a path, savez would append ".npz"
        # the data changed since older caches of this source were written: drop them
        source_id = cache_file.name.split("-")[0]
        for stale in cache_file.parent.glob(f"{source_id}-*.npz"):
            if stale != cache_file:
                stale.unlink(missing_ok=True)
    except (OSError, FerkerasError):  # atomic_path reports a failed write as FerkerasError
        pass
