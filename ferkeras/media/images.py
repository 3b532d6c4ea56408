"""Images in: files, folders, encoded bytes and arrays from the caller's own OpenCV loop, as RGB uint8."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ferkeras.errors import FerkerasError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
COLOR_ORDERS = ("bgr", "rgb")  # how a 3-channel array's channels are ordered; OpenCV gives BGR


def image_paths(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files as given, and the image files in each folder (recursively, sorted)."""
    paths = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                           and p.is_file() and not p.name.startswith("."))
            if not found:
                raise FerkerasError(f"{path}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise FerkerasError(f"{path}: no such image file or folder")
    return paths


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), turned upright by its EXIF orientation."""
    try:
        data = Path(path).read_bytes()  # once, for Pillow's header and OpenCV's JPEG decoder
        with Image.open(io.BytesIO(data)) as image:
            return _upright_rgb(image, data)
    except FileNotFoundError:
        raise FerkerasError(f"{path}: no such image file") from None
    except UnidentifiedImageError:
        raise FerkerasError(f"{path}: not an image file (Pillow cannot identify it)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise FerkerasError(f"{path}: corrupt or unreadable image: {e}") from None


class ImageTooLarge(FerkerasError):
    """An image with more pixels than the caller allows (found before it is decoded)."""


def decode_image(data: bytes, where: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ...) as RGB uint8 (H, W, 3); where names them in errors.

    max_pixels: refuse larger images (ImageTooLarge) from their header, before decoding them.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLarge(f"{where}: {width}x{height} is {width * height:,} pixels, over the "
                                    f"limit of {max_pixels:,}")
            return _upright_rgb(image, data)
    except UnidentifiedImageError:
        raise FerkerasError(f"{where}: not an image (Pillow cannot identify it)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise FerkerasError(f"{where}: corrupt or unreadable image: {e}") from None


ORIENTATION = 0x0112  # the EXIF tag; 5-8 turn the picture a quarter


def _upright_rgb(image: Image.Image, data: bytes | None = None) -> np.ndarray:
    """An opened image as RGB uint8, turned upright by its EXIF orientation; data: its bytes.

    A whole RGB or gray JPEG (ending in its EOI marker; Pillow says why a truncated one fails)
    is decoded by OpenCV, which applies the EXIF orientation too: the same pixels in a quarter of
    Pillow's time (0.9 against 3.5 ms for grace_hopper.jpg, a tenth of a served photo's CPU).
    """
    whole_jpeg = image.format == "JPEG" and data is not None and data.endswith(b"\xff\xd9")
    if whole_jpeg and image.mode in ("RGB", "L"):
        import cv2  # lazy, as in as_rgb

        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        width, height = image.size
        upright = (width, height) if image.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8) else (height, width)
        if bgr is not None and bgr.shape[:2] == upright:  # else Pillow's way, or its error
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def as_rgb(image: np.ndarray, color: str = "bgr") -> np.ndarray:
    """An array as RGB uint8 (H, W, 3): gray (H, W) or (H, W, 1), or 3/4 channels in `color` order.

    color: "bgr" (OpenCV's frames, the default) or "rgb" (Pillow, matplotlib); a 4th channel
    (alpha) is dropped. Float arrays must already be 0-255.
    """
    if color not in COLOR_ORDERS:
        raise FerkerasError(f"color {color!r}: must be one of {', '.join(COLOR_ORDERS)}")
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim != 3 or array.shape[2] not in (3, 4):
        raise FerkerasError(f"image array of shape {array.shape}: expected (H, W) gray or "
                            "(H, W, 3|4) color")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise FerkerasError(f"image array of shape {array.shape} is empty")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number):
            raise FerkerasError(f"image array of dtype {array.dtype}: expected uint8 pixels")
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    array = array[:, :, :3]
    if color == "bgr":
        import cv2  # lazy, as the detectors import it: OpenCV's swap is 30x numpy's reversed copy

        return cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(array)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 -> gray uint8 with ITU-R 601 luma, as FER2013's faces (and Pillow's convert("L"),
    which rounds a thousandth of pixels one level apart, at 8x OpenCV's 0.04 ms a 640x480 frame)."""
    import cv2  # lazy, as in as_rgb

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
