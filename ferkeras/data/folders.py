"""Kaggle-style image folders (split/class/*.jpg, or class/*.jpg: one split named train), each image
decoded to a 48x48 gray face: a 48x48 image as it is, any other one's largest face found and cropped
as predict crops a photo's; the decoded arrays are cached (ferkeras.data.cache). A class folder may
carry another data set's name for its class (spec.class_of_name: anger/, sadness/)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ferkeras.data.cache import cache_path, read_cache, write_cache
from ferkeras.data.splits import Dataset, Split
from ferkeras.errors import FerkerasError
from ferkeras.spec import CLASS_NAMES, CLASS_SYNONYMS, IMAGE_SIZE, class_of_name

_IGNORED_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}  # OS litter beside real data
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_detectors = threading.local()  # _face_of_photo's detector (predict's), one per decoding thread


def load_folders(root: Path, skipped: list[str] | None, decode: bool = True) -> Dataset:
    """A folder of split folders of class folders (or of class folders: one split, train), each
    split's images decoded (or read from the cache) with their files; skipped and decode as in
    load_dataset."""
    subdirs = _visible_subdirs(root)
    if any(class_of_name(name) is not None for name in subdirs):
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
    if not decode:
        return Dataset(str(root), "folders", {name: Split(None, np.array(files[name][1], dtype=np.int64),
                                                          files=np.array(files[name][0]))
                                              for name in ordered})
    cache_file = cache_path(root, stamp)
    cached = read_cache(cache_file)
    # the same files cached under other split names (before a folder of class folders was
    # named train, its split took the folder's name) are stale: rebuild
    if cached is not None and list(cached[1]) == ordered:
        fmt, splits = cached
        # the listing is the cache's key, so its files are the cached images, in order
        for name, split in splits.items():
            split.files = np.array(files[name][0])
        return Dataset(str(root), fmt, splits)
    all_paths = [path for name in ordered for path in files[name][0]]
    readable = np.ones(len(all_paths), dtype=bool)

    def skip(index: int, error: FerkerasError) -> None:
        readable[index] = False
        skipped.append(str(error))

    # one decode pass over every split keeps the thread pool busy
    all_images = _decode_images(all_paths, on_error=skip if skipped is not None else None)
    splits, start = {}, 0
    for name in ordered:
        paths, labels = files[name]
        keep = readable[start:start + len(paths)]
        if not keep.any():
            raise FerkerasError(f"{split_dirs[name]}: none of its {len(paths)} images is readable")
        splits[name] = Split(all_images[start:start + len(paths)][keep],
                             np.array(labels, dtype=np.int64)[keep], files=np.array(paths)[keep])
        start += len(paths)
    if not skipped:  # a cache must never hide bad files from a load without skip_bad
        write_cache(cache_file, "folders", splits)
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


def _count_files(folder: Path) -> int:
    with os.scandir(folder) as entries:
        return sum(1 for e in entries if not _ignored(e.name) and not e.is_dir())


def _list_split(folder: Path, root: Path, stamp: list,
                skipped: list[str] | None = None) -> tuple[list[str], list[int]]:
    """Image paths and labels of one split folder, in sorted order; appends to the cache stamp."""
    class_dirs = _visible_subdirs(folder)
    if not class_dirs:
        raise FerkerasError(f"{folder}: no class folders (expected subfolders named "
                            f"{', '.join(CLASS_NAMES)})")
    paths: list[str] = []
    labels: list[int] = []
    classes = {name: class_of_name(name) for name in class_dirs}
    for name in (name for name, label in classes.items() if label is None):
        problem = (f"{folder / name}: unknown class folder {name!r} (expected one of "
                   f"{', '.join(CLASS_NAMES)}, or {', '.join(CLASS_SYNONYMS)})")
        if skipped is None:
            raise FerkerasError(problem + "; --skip-bad passes over it")
        # an expression none of the seven classes is (CK+'s contempt): its images are left out
        skipped.append(f"{problem}: its {_count_files(folder / name):,} images left out")
    # label order; two names of one class (sad/, sadness/) in name order
    for label, name in sorted((label, name) for name, label in classes.items() if label is not None):
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
            if image.size != (IMAGE_SIZE, IMAGE_SIZE):
                return _face_of_photo(path, image.size)
            image.draft("L", (IMAGE_SIZE, IMAGE_SIZE))  # JPEG: decode gray at a reduced scale
            if image.mode in _SIXTEEN_BIT_MODES:
                # convert("L") would clip 16-bit values at 255; scale 0..65535 to 0..255 instead
                wide = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
                image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))
            elif image.mode != "L":
                image = image.convert("L")
            return np.asarray(image, dtype=np.uint8)
    except UnidentifiedImageError:
        raise FerkerasError(f"{path}: not an image file (Pillow cannot identify it)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise FerkerasError(f"{path}: corrupt or unreadable image: {exc}") from None


def _face_of_photo(path: str, size: tuple[int, int]) -> np.ndarray:
    """Any image but a 48x48 crop is a photo (or a face crop of another size): its largest face,
    found and cropped as predict crops it (its detector, eyes levelled), is what the model learns
    from and is measured on, never the whole image shrunk."""
    from ferkeras.media.crop import largest_face_crop
    from ferkeras.media.detectors import DEFAULT_DETECTOR, make_detector
    from ferkeras.media.images import read_image, to_gray

    detector = getattr(_detectors, "default", None)
    if detector is None:  # one per thread: a LiteRT interpreter serves one caller at a time
        detector = _detectors.default = make_detector(DEFAULT_DETECTOR, threads=1)
    rgb = read_image(path)
    crop = largest_face_crop(rgb, to_gray(rgb), detector)
    if crop is None:
        raise FerkerasError(f"{path}: no face found in this {size[0]}x{size[1]} image (an image that "
                            "is not a 48x48 crop is read as predict reads a photo: its largest face)")
    return crop
