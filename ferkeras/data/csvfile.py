"""FER2013's CSV layouts: the original fer2013.csv (emotion,pixels,Usage) and the course homework's
(label,feature, and unlabeled id,feature). Every bad row raises FerkerasError naming the file and
its 1-based line, or with skipped is passed over and listed."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ferkeras.data.splits import Split
from ferkeras.errors import FerkerasError
from ferkeras.spec import CLASS_NAMES, IMAGE_SIZE

_PIXELS = IMAGE_SIZE * IMAGE_SIZE
_USAGE_SPLITS = {"training": "train", "publictest": "test", "privatetest": "private_test"}
EXPECTED_HEADERS = "emotion,pixels,Usage (fer2013.csv), label,feature or id,feature (homework)"


def parse_csv(file: Path, split_name: str | None,
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
                            f"{EXPECTED_HEADERS})") from None
    except OSError as exc:
        raise FerkerasError(f"{file}: cannot read: {exc.strerror or exc}") from None


def _parse_csv_rows(file: Path, reader, split_name: str | None,
                    skipped: list[str] | None) -> tuple[str, dict[str, Split]]:
    header = next((row for row in reader if any(cell.strip() for cell in row)), None)
    if header is None:
        raise FerkerasError(f"{file}: empty file (expected a header {EXPECTED_HEADERS})")
    where, shown = f"{file} line {reader.line_num}", ",".join(header)[:60]
    columns = [name.strip().lower() for name in header]
    if {"label", "feature", "id"} & set(columns):
        fmt, required = "homework-csv", ["label" if "label" in columns else "id", "feature"]
    elif {"emotion", "pixels", "usage"} & set(columns):
        fmt, required = "fer2013-csv", ["emotion", "pixels", "usage"]
    else:
        raise FerkerasError(f"{where}: unrecognized header {shown!r} "
                            f"(expected {EXPECTED_HEADERS})")
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

