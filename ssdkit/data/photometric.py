"""`FastPhotometricDistort`: torchvision's `RandomPhotometricDistort`, the same draws and operations,
applied to a uint8 picture in one float32 pass.

torchvision's tensor kernels convert the picture to float and back for each operation, and its hue
shift goes through a full RGB -> HSV -> RGB round trip with a dozen temporaries: measured (docs/
benchmarks.md), the photometric step cost more than everything else in the training pipeline. Here
the draws are torchvision's own (`make_params` is inherited), the operations run in its order, with
its rounding after each (the values it would store as uint8 are floored in place), and the hue
shift uses the closed form of HSV -> RGB: channel n = V - C * clamp(min(k, 4 - k), 0, 1) with
k = (n + 6 * hue) mod 6, n = 5, 3, 1 for R, G, B, and C = max - min. Results equal torchvision's to
within one grey level (the hue's float rounding); a test checks it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ["FastPhotometricDistort"]

_GREY = (0.2989, 0.587, 0.114)  # torchvision's (and PIL's) luma weights
_HUE_OFFSETS = (5.0, 3.0, 1.0)  # k of R, G, B in the closed form


def _grey(x: Tensor) -> Tensor:
    """`[1, H, W]` floored luma of `[3, H, W]` float pixels that hold whole numbers 0..255."""
    return (x[0] * _GREY[0] + x[1] * _GREY[1] + x[2] * _GREY[2]).floor_()[None]


def _blend(x: Tensor, other: Tensor | float, ratio: float) -> Tensor:
    """ratio * x + (1 - ratio) * other, clamped to 0..255 and floored (torchvision's uint8 `_blend`)."""
    return x.mul_(ratio).add_(other * (1.0 - ratio)).clamp_(0, 255).floor_()


def _hue(x: Tensor, shift: float) -> Tensor:
    """Rotate the hue of `[3, H, W]` 0..255 float pixels by `shift` turns (value and saturation kept).

    Same-shape 2-D operations only: broadcasting `[1, H, W]` against `[3, H, W]` takes torch's slow path."""
    maxc, minc = x.amax(dim=0), x.amin(dim=0)  # (max(dim) with indices is 100x slower here)
    chroma = maxc - minc
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    r, g, b = x.unbind(0)
    # hue in sixths of a turn, as torchvision's (PIL's) rgb_to_hsv: red wins ties, then green
    h = torch.where(
        maxc == r, g - b, torch.where(maxc == g, (b - r).add_(chroma, alpha=2.0), (r - g).add_(chroma, alpha=4.0))
    )
    h = h.div_(safe).add_(6.0 * shift)
    out = torch.empty_like(x)
    for n, offset in enumerate(_HUE_OFFSETS):
        k = (h + offset).remainder_(6.0)
        ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
        # torchvision stores the float result as uint8 by x * (256 - 1e-3) / 255, truncated
        torch.sub(maxc, ramp.mul_(chroma), out=out[n])
    return out.mul_((256.0 - 1e-3) / 255.0).floor_().clamp_(0, 255)


class FastPhotometricDistort(v2.RandomPhotometricDistort):
    """`RandomPhotometricDistort` whose uint8 RGB pictures take the one-pass path above; anything else
    (other dtypes, batches, PIL pictures) goes to torchvision's kernels."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not (
            isinstance(inpt, tv_tensors.Image) and inpt.dtype == torch.uint8 and inpt.shape == (3, *inpt.shape[1:])
        ):
            return super().transform(inpt, params)
        if inpt.ndim != 3:
            return super().transform(inpt, params)
        b, c, s, h = (params[k] for k in ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor"))
        perm = params["channel_permutation"]
        if b is None and c is None and s is None and h is None and perm is None:
            return inpt
        x = inpt.as_subclass(Tensor).float()
        if b is not None:
            x = x.mul_(float(b)).clamp_(0, 255).floor_()
        if c is not None and params["contrast_before"]:
            x = _blend(x, _grey(x).mean(), float(c))
        if s is not None:
            x = _blend(x, _grey(x), float(s))
        if h is not None:
            x = _hue(x, float(h))
        if c is not None and not params["contrast_before"]:
            x = _blend(x, _grey(x).mean(), float(c))
        if perm is not None:
            x = x[perm]
        return tv_tensors.wrap(x.to(torch.uint8), like=inpt)
