"""Pictures -> `[3, h, w]` RGB arrays in 0..255, with numpy and pillow only (no torch).

The same rules as `ssdkit.preprocess.to_tensor` for the inputs a torch-free deployment has: a PIL
picture of any mode, an HWC numpy array (uint8, uint16, or float 0..1), or a file path; EXIF
orientation applied and the pixel types checked by the same code (`ssdkit.io.picture_files`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from ssdkit.io.picture_files import hwc_array, open_picture, pil_pixels, upright

__all__ = ["to_array"]


def _from_pil(image: Image.Image) -> np.ndarray:
    arr = pil_pixels(upright(image))
    if arr.ndim == 3:
        return arr.transpose(2, 0, 1)  # uint8: the preprocessor normalises 8-bit values by table
    if arr.dtype == np.uint16:  # 0..65535 onto 0..255
        arr = arr.astype(np.float32) / np.float32(257.0)
    else:  # 32-bit integers of no fixed range: stretched so that the maximum is 255
        arr = arr * np.float32(255.0 / max(float(arr.max()), 1.0))
    return np.repeat(arr[None], 3, axis=0)


def _from_numpy(image: np.ndarray) -> np.ndarray:
    hwc = hwc_array(image)
    if hwc.shape[2] == 1:
        hwc = np.repeat(hwc, 3, axis=2)
    chw = hwc[..., :3].transpose(2, 0, 1)
    if chw.dtype == np.uint8:
        return chw
    if chw.dtype == np.uint16:  # 65535 = 255 * 257, as `ssdkit.io.pictures.as_255`
        return chw.astype(np.float32) / np.float32(257.0)
    # Float pictures (0..1) in float64, so that x255 then /255 gives back the caller's values exactly.
    return chw.astype(np.float64) * 255.0


def to_array(picture: Any) -> np.ndarray:
    """One picture -> `[3, h, w]` RGB in 0..255: uint8 for 8-bit pictures, float64 for float (0..1)
    ones, float32 for 16- and 32-bit integer pictures."""
    if isinstance(picture, (str, os.PathLike)):
        return _from_pil(open_picture(picture))
    if isinstance(picture, Image.Image):
        return _from_pil(picture)
    if isinstance(picture, np.ndarray):
        return _from_numpy(picture)
    raise TypeError(
        f"cannot use a {type(picture).__name__} as an image here; give a PIL image, an HWC numpy array "
        "(uint8, uint16 or float 0..1) or a file path"
    )
