"""Picture files and numpy pictures with PIL and numpy alone (no torch): the part of the picture
contract (`ssdkit.io.pictures`) that `ssdkit.runtime` shares with `predict`, so both read a file, turn
it upright and check a numpy picture the same way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "EXIF_ORIENTATION",
    "open_picture",
    "upright",
    "displayed_size",
    "check_pixel_limit",
    "hwc_array",
    "check_float_range",
    "check_batch_size",
    "picture_items",
    "PICTURE_SUFFIXES",
    "pictures_in",
    "pil_pixels",
]

EXIF_ORIENTATION = 0x0112


def open_picture(path: str | os.PathLike) -> Image.Image:
    """A picture file -> a decoded, upright PIL image. Raises FileNotFoundError for a missing file and
    ValueError (naming the file) for one that cannot be read or claims too many pixels."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        with Image.open(path) as im:  # reads the header only
            check_pixel_limit(im)
            im.load()
            return upright(im)
    except (OSError, Image.DecompressionBombError, ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def check_pixel_limit(image: Image.Image) -> None:
    """Refuse, before decoding, a picture claiming more than `PIL.Image.MAX_IMAGE_PIXELS` pixels (PIL
    itself only warns below twice its limit)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and image.width * image.height > limit:
        raise Image.DecompressionBombError(
            f"{image.width}x{image.height} pixels exceed PIL.Image.MAX_IMAGE_PIXELS ({limit}); "
            "a decompression bomb? Raise that limit if you trust the file"
        )


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """(w, h) of `image` as `upright` shows it, from its header alone: swapped for the EXIF tags that
    turn the picture by 90 degrees (5 to 8)."""
    try:
        tag = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001  (a broken EXIF block: shown as stored, as `upright` does)
        tag = 1
    return (image.height, image.width) if tag in (5, 6, 7, 8) else (image.width, image.height)


def upright(image: Image.Image) -> Image.Image:
    """`image` turned as its EXIF orientation tag says (itself when there is no tag, or tag 1)."""
    try:
        tag = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001  (a broken EXIF block: PIL's parsers raise many kinds; show it as stored)
        return image
    if tag in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(image)
    return image


def hwc_array(image: np.ndarray) -> np.ndarray:
    """A numpy picture checked against the contract -> `[h, w, C]`, C in (1, 3, 4), of dtype uint8,
    uint16 or float in 0..1 (a grey HW array gains its channel axis); ValueError saying what to do."""
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"a numpy image must be HWC with 1, 3 or 4 channels, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image has no pixels (shape {image.shape})")
    if image.dtype in (np.uint8, np.uint16):
        return image
    if image.dtype.kind != "f":
        raise ValueError(
            f"a numpy image of dtype {image.dtype} is not a picture type: give uint8 (0..255), uint16 "
            "(0..65535) or float in 0..1, e.g. array.astype(np.uint8) for 0..255 values"
        )
    check_float_range(float(image.min()), float(image.max()), "numpy image")  # any strides, negative too
    return image


def check_float_range(lo: float, hi: float, what: str) -> None:
    """A float picture's values must be finite and lie in 0..1."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"a float {what} holds NaN or infinite values; a picture's floats must lie in 0..1")
    if hi > 1.0 or lo < 0.0:
        hint = " (0..255 values? divide by 255, or pass uint8)" if hi > 1.0 else " (clip it to 0..1)"
        raise ValueError(f"a float {what} must hold values in 0..1, this one spans {lo:g}..{hi:g}{hint}")


def check_batch_size(batch_size: Any) -> int:
    """`batch_size` as an int, if it is a whole number >= 1; ValueError otherwise."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    return int(batch_size)


def picture_items(pictures: Any) -> tuple[list[Any], bool]:
    """(pictures, single): a list or tuple of pictures, an NHWC numpy batch, or one picture."""
    if isinstance(pictures, (list, tuple)):
        return list(pictures), False
    if isinstance(pictures, np.ndarray) and pictures.ndim == 4:
        return list(pictures), False
    return [pictures], True


# Picture files a folder may hold (compared case-insensitively): what `ssdkit predict` and int8
# calibration read from a folder.
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def pictures_in(folder: str | os.PathLike) -> list[Path]:
    """The picture files directly in `folder` (by suffix: `PICTURE_SUFFIXES`), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in PICTURE_SUFFIXES)


def pil_pixels(image: Image.Image) -> np.ndarray:
    """A PIL picture's pixels by its mode, not yet scaled: `[h, w]` uint16 for 16-bit grey (I;16,
    any byte order), `[h, w]` float32 >= 0 for 32-bit integer grey (I: negatives clipped; it has
    no fixed range, so the caller stretches it), else `[h, w, 3]` uint8 RGB (a writable copy).
    ValueError for a picture with no pixels or a mode PIL cannot turn into RGB. Shared by
    `ssdkit.io.pictures` (torch) and `ssdkit.runtime.pictures` (numpy), which scale alike."""
    if image.width < 1 or image.height < 1:
        raise ValueError(f"image has no pixels ({image.width}x{image.height})")
    if image.mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)  # any byte order -> native
    if image.mode == "I":
        return np.asarray(image, dtype=np.float32).clip(min=0)
    if image.mode == "La":  # premultiplied alpha: PIL converts it only to LA
        image = image.convert("LA")
    try:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
    except ValueError as exc:
        raise ValueError(f"cannot turn a PIL picture of mode {image.mode!r} into RGB: {exc}") from None
    return np.array(rgb)
