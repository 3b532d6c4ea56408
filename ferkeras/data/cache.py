"""The cache of decoded data: one .npz per source under cache_dir(), named by a hash of its
files' paths, sizes and mtimes, so that changed data is decoded again."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ferkeras.data.splits import Split
from ferkeras.errors import FerkerasError
from ferkeras.fileio import atomic_path
from ferkeras.spec import IMAGE_SIZE

# bump when decoding changes, so old caches are not reused (2: photos are read for their face,
# where 1 shrank them whole)
_CACHE_VERSION = 2


def cache_dir() -> Path:
    """Where decoded arrays are cached: $FERKERAS_CACHE_DIR, else the XDG cache folder."""
    if os.environ.get("FERKERAS_CACHE_DIR"):
        return Path(os.environ["FERKERAS_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ferkeras"



def cache_path(root: Path, stamp: list[tuple[str, int, int]]) -> Path:
    """The cache file for this source: one per source path, named by a hash of its files."""
    listing = "\n".join(f"{name}\t{size}\t{mtime}" for name, size, mtime in stamp)
    digest = hashlib.sha256(f"{_CACHE_VERSION}\n{root}\n{listing}".encode()).hexdigest()
    source_id = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return cache_dir() / f"{source_id}-{digest[:24]}.npz"


def read_cache(cache_file: Path) -> tuple[str, dict[str, Split]] | None:
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


def write_cache(cache_file: Path, fmt: str, splits: dict[str, Split]) -> None:
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
