"""`ssdkit.preprocess.Preprocessor`'s arithmetic in numpy: normalise, then resize bilinearly (no
antialiasing) on the pixel grid the file names (`ssdkit.resize`: torch's `interpolate`, TF1's
asymmetric grid, or corners on corners), all in float32.

The settings come from an exported file's `ssdkit_preprocess` metadata, which
`Preprocessor.describe()` writes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ArrayPreprocessor", "resize_bilinear", "RESIZE_MODES"]

# ssdkit.config.model.ResizeMode's values (not imported: this module runs without pydantic and torch)
RESIZE_MODES = ("bilinear", "bilinear_asymmetric", "bilinear_align_corners")


def _axis(in_size: int, out_size: int, mode: str = "bilinear") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights along one axis: (i0, i1, w0, w1), each `[out_size]`, on the pixel
    grid `mode` names (`ssdkit.resize`).

    bilinear, as torch computes it in float32: src = (in / out) * (dst + 0.5) - 0.5, clamped at 0;
    torch's kernel evaluates src with one fused multiply-add (a single rounding), which float64
    reproduces exactly here (a float32 times dst + 0.5 fits in 53 bits); the same size is copied.
    bilinear_asymmetric (TF1's ResizeBilinear): src = dst * float32(in / out), in float32.
    bilinear_align_corners: src = dst * (in - 1) / (out - 1).
    Then i0 = floor(src), i1 = i0 + 1 except at the last input pixel, w1 = src - i0, w0 = 1 - w1.
    """
    if in_size == out_size and mode != "bilinear_align_corners":
        index = np.arange(out_size)
        return index, index, np.ones(out_size, np.float32), np.zeros(out_size, np.float32)
    dst = np.arange(out_size)
    if mode == "bilinear":
        scale = np.float32(in_size) / np.float32(out_size)
        src = np.maximum((np.float64(scale) * (dst + 0.5) - 0.5).astype(np.float32), np.float32(0.0))
    elif mode == "bilinear_asymmetric":
        src = dst.astype(np.float32) * np.float32(in_size / out_size)
    elif mode == "bilinear_align_corners":
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = (dst * scale).astype(np.float32)
    else:
        raise ValueError(f"unknown resize mode {mode!r}; use bilinear, bilinear_asymmetric or bilinear_align_corners")
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    return i0, i1, np.float32(1.0) - w1, w1


def _corners(
    x: np.ndarray, size: tuple[int, int], mode: str = "bilinear"
) -> tuple[list[np.ndarray], tuple[np.ndarray, ...]]:
    """The four source pixels of every output pixel, `[C, H, W]` each (top-left, top-right,
    bottom-left, bottom-right), and the weights (wx0, wx1, hy0, hy1)."""
    (y0, y1, hy0, hy1), (x0, x1, wx0, wx1) = _axis(x.shape[1], size[0], mode), _axis(x.shape[2], size[1], mode)
    top, bottom = x[:, y0, :], x[:, y1, :]  # [C, H, w]
    return [top[:, :, x0], top[:, :, x1], bottom[:, :, x0], bottom[:, :, x1]], (wx0, wx1, hy0[:, None], hy1[:, None])


def _combine(corners: list[np.ndarray], weights: tuple[np.ndarray, ...]) -> np.ndarray:
    # torch's order: each row interpolated along x first, then the two rows along y.
    c00, c01, c10, c11 = corners
    wx0, wx1, hy0, hy1 = weights
    return (c00 * wx0 + c01 * wx1) * hy0 + (c10 * wx0 + c11 * wx1) * hy1


def resize_bilinear(x: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """`[C, h, w]` float32 -> `[C, H, W]` float32, size = (H, W), on the pixel grid `mode` names."""
    return _combine(*_corners(x, size, mode))


class ArrayPreprocessor:
    """pixels `[3, h, w]` RGB 0..255 -> network input `[3, H, W]` float32:
    x = (pixels * scale - mean) / std (the scaling in float64, the rest float32), channel order
    applied, then bilinear resizing to `image_size` (h, w).

    The same numbers, computed in another order: normalisation is per pixel, so the four source
    pixels of each output pixel are gathered first and only they are normalised (through a
    256-entry table for 8-bit pictures); at 640x480 -> 300x300 that is 4x fewer than the picture.
    """

    def __init__(self, description: dict[str, Any]) -> None:
        try:
            self.image_size = (int(description["image_size"][0]), int(description["image_size"][1]))
            self.channel_order = str(description["channel_order"])
            self.scale = float(description["scale"])
            self.mean = np.asarray(description["mean"], dtype=np.float32).reshape(3, 1, 1)
            self.std = np.asarray(description["std"], dtype=np.float32).reshape(3, 1, 1)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"unreadable preprocessing description {description!r}: {exc!r}") from None
        # Files exported before `resize` was recorded were all half-pixel bilinear.
        self.resize = str(description.get("resize", "bilinear"))
        if self.resize not in RESIZE_MODES:
            raise ValueError(
                f"this file's preprocessing resizes with {self.resize!r}, which ssdkit.runtime does not compute "
                f"(it knows {', '.join(RESIZE_MODES)}): run the model with PyTorch (ssdkit.load(...).predict)"
            )
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {self.channel_order!r}")
        if min(self.image_size) < 1 or not (self.std > 0).all():
            raise ValueError(f"image_size must be >= 1 and std > 0, got {description!r}")
        self._table: np.ndarray | None = None

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """`[3, h, w]` RGB 0..255 (channel order already applied) -> float32 (pixels * scale - mean) / std."""
        if pixels.dtype == np.uint8:
            if self._table is None:  # [3, 256]: every 8-bit value, normalised once with the arithmetic below
                self._table = self.normalize(np.broadcast_to(np.arange(256, dtype=np.float32), (3, 1, 256)))[:, 0]
            return np.stack([self._table[c].take(pixels[c]) for c in range(3)])
        x = (pixels.astype(np.float64) * self.scale).astype(np.float32)
        return (x - self.mean) / self.std

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels[::-1] if self.channel_order == "BGR" else pixels
        corners, weights = _corners(x, self.image_size, self.resize)
        return _combine([self.normalize(c) for c in corners], weights)
