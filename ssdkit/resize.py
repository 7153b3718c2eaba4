"""Bilinear resizing of `[C, h, w]` pictures with the three pixel-grid conventions in use.

An output pixel (y, x) of an H x W picture samples the input at

- ``bilinear`` (half-pixel centres): ((y + 0.5) h / H - 0.5, ...), clamped at 0: PyTorch's
  ``interpolate(align_corners=False)``, PIL, OpenCV, TF 2's ``tf.image.resize``;
- ``bilinear_asymmetric``: (y h / H, x w / W): TensorFlow 1's ``ResizeBilinear`` with
  ``align_corners=False, half_pixel_centers=False``, which TF OD API frozen graphs contain; the
  picture shifts by half an input pixel minus half an output pixel towards the top-left;
- ``bilinear_align_corners``: (y (h - 1) / (H - 1), ...): corners on corners.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssdkit.config.model import ResizeMode

__all__ = ["ResizeMode", "resize_bilinear"]


def resize_bilinear(x: Tensor, size: tuple[int, int], mode: ResizeMode = "bilinear") -> Tensor:
    """`[C, h, w]` float -> `[C, H, W]` for `size` (H, W), sampled as `mode` says (module docstring)."""
    if mode == "bilinear":
        return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
    if mode == "bilinear_align_corners":
        return F.interpolate(x[None], size=size, mode="bilinear", align_corners=True)[0]
    if mode != "bilinear_asymmetric":
        raise ValueError(f"unknown resize mode {mode!r}; use bilinear, bilinear_asymmetric or bilinear_align_corners")
    # TensorFlow's kernel: float32 source coordinates, lerp along x on the two rows, then along y.
    x0, x1, wx = _taps(x.shape[-1], size[1], x.device)
    y0, y1, wy = _taps(x.shape[-2], size[0], x.device)
    left, right = x.index_select(-1, x0), x.index_select(-1, x1)
    cols = left + (right - left) * wx.to(x.dtype)
    top, bottom = cols.index_select(-2, y0), cols.index_select(-2, y1)
    return top + (bottom - top) * wy.to(x.dtype)[:, None]


def _taps(n_in: int, n_out: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Asymmetric sampling of `n_in` pixels at `n_out` points -> (lower index, upper index, weight of upper)."""
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)
    src = torch.arange(n_out, dtype=torch.float32) * scale
    low = src.floor().long()
    high = (low + 1).clamp(max=n_in - 1)
    return low.to(device), high.to(device), (src - low.float()).to(device)
