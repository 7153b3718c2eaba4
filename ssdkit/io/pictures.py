"""The one reader of pictures: files, PIL images, numpy arrays and tensors -> `[3, h, w]` RGB tensors
in display orientation, with one contract for pixel types. Used by predict, draw and the data sets.

Contract:
- layout: numpy arrays are HWC (or HW, grey), tensors CHW (or HW); 1, 3 or 4 channels (alpha dropped).
- pixel types: uint8 (0..255); uint16 (0..65535, what OpenCV reads from a 16-bit PNG: divided by 257,
  so a 16-bit copy of an 8-bit picture gives that picture); float16/32/64 in 0..1. Anything else is
  refused with a message saying what to do: floats above 1 (0..255 values? divide by 255), negative or
  non-finite floats, signed or wide integers, booleans.
- orientation: the EXIF orientation tag of a file or PIL image is applied (ImageOps.exif_transpose),
  so boxes are in the pixels a viewer shows, not the stored ones.
- size: a file that claims more than `PIL.Image.MAX_IMAGE_PIXELS` pixels is refused before decoding
  (PIL itself only warns below twice its limit). Raise (or set to None) that limit for trusted large
  files; predicting costs about 21 bytes per pixel of the largest picture at the peak.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ssdkit.io.picture_files import EXIF_ORIENTATION, check_float_range, hwc_array, open_picture, pil_pixels, upright

__all__ = ["open_picture", "read_picture", "as_255", "EXIF_ORIENTATION"]

# Rows converted to float at once: bounds the float64 temporary of a float picture (see as_255).
_CHUNK_PIXELS = 1 << 20


def read_picture(picture: Any) -> Tensor:
    """One picture -> `[3, h, w]` tensor, upright, of dtype uint8 (0..255), uint16 (0..65535), or
    float (0..1), as the contract above says; `as_255` turns it into 0..255 values."""
    if isinstance(picture, (str, os.PathLike)):
        return _from_pil(open_picture(picture))
    if isinstance(picture, Image.Image):
        return _from_pil(upright(picture))
    if isinstance(picture, np.ndarray):
        return _three(torch.from_numpy(np.ascontiguousarray(hwc_array(picture))).permute(2, 0, 1))
    if isinstance(picture, Tensor):
        if picture.dim() == 2:
            picture = picture[None]
        if picture.dim() != 3 or picture.shape[0] not in (1, 3, 4):
            raise ValueError(f"a tensor image must be CHW with 1, 3 or 4 channels, got shape {tuple(picture.shape)}")
        if picture.shape[1] < 1 or picture.shape[2] < 1:
            raise ValueError(f"image has no pixels (shape {tuple(picture.shape)})")
        _check_dtype(picture.dtype, picture, "tensor image")
        return _three(picture.detach())
    raise TypeError(
        f"cannot use a {type(picture).__name__} as an image; give a PIL image, an HWC numpy array, "
        "a CHW tensor or a file path"
    )


def as_255(pixels: Tensor, wide: torch.dtype = torch.float64) -> Tensor:
    """A `read_picture` tensor (or a slice of its rows) -> float 0..255 values: float32 for integer
    pictures; `wide` (float64) for float ones, whose values x255 then scale back exactly."""
    if pixels.dtype == torch.uint8:
        return pixels.float()
    if pixels.dtype == torch.uint16:
        # 65535 = 255 * 257: a 16-bit copy (v * 257) of an 8-bit picture gives exactly its values.
        return pixels.to(torch.int32).float() / 257.0
    return pixels.to(wide) * 255.0


def row_chunks(height: int, width: int) -> range:
    """Starts of slices of rows small enough to convert to float at once."""
    return range(0, height, max(1, _CHUNK_PIXELS // max(width, 1)))


def _three(t: Tensor) -> Tensor:
    """`[C, h, w]`, C in (1, 3, 4) -> `[3, h, w]` (grey repeated, alpha dropped)."""
    return t.expand(3, -1, -1) if t.shape[0] == 1 else t[:3]


_FLOATS = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


def _check_dtype(dtype: torch.dtype, values: Tensor, what: str) -> None:
    if dtype in (torch.uint8, torch.uint16):
        return
    if dtype not in _FLOATS:
        raise ValueError(
            f"a {what} of dtype {dtype} is not a picture type: give uint8 (0..255), uint16 (0..65535) "
            "or float in 0..1, e.g. tensor.to(torch.uint8) for 0..255 values"
        )
    check_float_range(*(float(v) for v in values.aminmax()), what)


def _from_pil(image: Image.Image) -> Tensor:
    arr = pil_pixels(image)
    if arr.ndim == 3:  # uint8 RGB
        return torch.from_numpy(arr).permute(2, 0, 1)
    if arr.dtype == np.float32:  # 32-bit integers of no fixed range: stretched so that the maximum is 1 (255)
        arr = np.ascontiguousarray(arr * (1.0 / max(float(arr.max()), 1.0)))
    return torch.from_numpy(arr)[None].expand(3, -1, -1)  # uint16 stays 0..65535: `as_255` scales it
