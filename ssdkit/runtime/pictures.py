"""Pictures -> `[3, h, w]` RGB arrays in 0..255, with numpy and pillow only (no torch).

The same rules as `ssdkit.predict.to_tensor` for the inputs a torch-free deployment has: a PIL
picture of any mode, an HWC numpy array (uint8 0..255 or float 0..1), or a file path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["to_array"]


def _read_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        with Image.open(path) as im:  # reads the header only
            limit = Image.MAX_IMAGE_PIXELS
            if limit and im.width * im.height > limit:
                # Refused before decoding, as `to_tensor` does (PIL alone only warns below twice its limit).
                raise Image.DecompressionBombError(
                    f"{im.width}x{im.height} pixels exceed PIL.Image.MAX_IMAGE_PIXELS ({limit}); "
                    "a decompression bomb? Raise that limit if you trust the file"
                )
            im.load()
            return to_array(im)
    except (OSError, Image.DecompressionBombError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def _from_pil(image: Image.Image) -> np.ndarray:
    if image.width < 1 or image.height < 1:
        raise ValueError(f"image has no pixels ({image.width}x{image.height})")
    if image.mode.startswith("I;16"):  # 0..65535 onto 0..255
        arr = np.asarray(image, dtype=np.float32) / np.float32(257.0)
        return np.repeat(arr[None], 3, axis=0)
    if image.mode == "I":  # 32-bit integers of no fixed range: stretched so that the maximum is 255
        arr = np.asarray(image, dtype=np.float32).clip(min=0)
        arr = arr * np.float32(255.0 / max(float(arr.max()), 1.0))
        return np.repeat(arr[None], 3, axis=0)
    if image.mode == "La":  # premultiplied alpha: PIL converts it only to LA
        image = image.convert("LA")
    try:
        rgb = image.convert("RGB")
    except ValueError as exc:
        raise ValueError(f"cannot turn a PIL picture of mode {image.mode!r} into RGB: {exc}") from None
    return np.asarray(rgb).transpose(2, 0, 1)  # uint8: the preprocessor normalises 8-bit values by table


def _from_numpy(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"a numpy image must be HWC with 1, 3 or 4 channels, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image has no pixels (shape {image.shape})")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    chw = image[..., :3].transpose(2, 0, 1)
    if image.dtype == np.uint8:
        return chw
    # Float pictures (0..1) in float64, so that x255 then /255 gives back the caller's values exactly.
    return chw.astype(np.float64) * 255.0 if image.dtype.kind == "f" else chw.astype(np.float32)


def to_array(image: Any) -> np.ndarray:
    """One picture -> `[3, h, w]` RGB in 0..255: uint8 for 8-bit pictures, float64 for float (0..1)
    ones, float32 otherwise (16- and 32-bit integer pictures, other integer arrays)."""
    if isinstance(image, (str, os.PathLike)):
        return _read_file(Path(image))
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return _from_numpy(image)
    raise TypeError(
        f"cannot use a {type(image).__name__} as an image here; give a PIL image, an HWC numpy array "
        "(uint8 0..255 or float 0..1) or a file path"
    )
