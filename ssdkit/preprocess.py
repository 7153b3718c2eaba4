"""`Preprocessor`: a picture's pixels -> the network input (normalised, resized); `to_tensor`: any
picture the library accepts (see `ssdkit.io.pictures`) -> its pixels.

The one place that turns a `PreprocessConfig` into arithmetic: the model (`build_model`), the data
loader and the exported files' metadata all use this class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor

from ssdkit.io.pictures import as_255, read_picture, row_chunks
from ssdkit.resize import ResizeMode, resize_bilinear

if TYPE_CHECKING:
    from ssdkit.config.model import PreprocessConfig

__all__ = ["Preprocessor", "to_tensor"]


class Preprocessor:
    """pixels (0..255, RGB) -> x = (pixels * scale - mean) / std, resized to `image_size` (h, w)."""

    def __init__(
        self,
        image_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        scale: float = 1 / 255,
        channel_order: str = "RGB",
        resize: ResizeMode = "bilinear",
    ) -> None:
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.resize_mode = resize
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.scale = float(scale)
        self.channel_order = channel_order

    @classmethod
    def from_config(cls, image_size: tuple[int, int], cfg: PreprocessConfig) -> Preprocessor:
        """The one way a model config becomes a Preprocessor: `image_size` (h, w) and an SSDConfig's `preprocess`
        (used by `build_model` and by the data loader, so that both feed the network alike)."""
        return cls(image_size, cfg.mean, cfg.std, cfg.scale, cfg.channel_order, cfg.resize)

    def __call__(self, pixels: Tensor) -> Tensor:
        """pixels: `[3, h, w]` float RGB in 0..255 -> `[3, H, W]` network input."""
        # Normalise before resizing, as torchvision's SSD transform does; bilinear
        # resizing is linear, so the order only matters at float rounding level.
        return self.resize(self.normalize(pixels))

    def picture(self, picture: Tensor) -> Tensor:
        """A `read_picture` tensor (`[3, h, w]` uint8, uint16 or float 0..1, on any device) -> `[3, H, W]`
        network input, the same values as `self(as_255(picture))`; converted a slice of rows at a time,
        so that a large picture never exists in float64, only once in float32."""
        _, h, w = picture.shape
        wide = torch.float32 if picture.device.type == "mps" else torch.float64  # MPS has no float64
        out = torch.empty((3, h, w), dtype=torch.float32, device=picture.device)
        rows = row_chunks(h, w)
        for r in rows:
            out[:, r : r + rows.step] = self.normalize(as_255(picture[:, r : r + rows.step], wide))
        return self.resize(out)

    def normalize(self, pixels: Tensor) -> Tensor:
        """`[3, h, w]` float RGB 0..255 -> `[3, h, w]` float32 (pixels * scale - mean) / std, channel order applied."""
        x = pixels
        if self.channel_order == "BGR":
            x = x.flip(0)
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        # Scale in float64: a 0..1 float picture (multiplied by 255 in to_tensor) comes back
        # exactly, so the float32 normalisation below matches torchvision's bit for bit
        # (a float32 round trip is off by an ulp, which a deep net amplifies).
        wide = torch.float32 if x.device.type == "mps" else torch.float64
        return ((x.to(wide) * self.scale).to(torch.float32) - mean) / std

    def resize(self, x: Tensor) -> Tensor:
        """`[3, h, w]` float -> `[3, H, W]` bilinear, on the pixel grid `resize_mode` names (`ssdkit.resize`;
        the data loader resizes large augmented pictures first)."""
        return resize_bilinear(x, self.image_size, self.resize_mode)

    def describe(self) -> dict:
        """The settings as plain JSON values: what an exported file records (`ssdkit_preprocess`) and
        `ssdkit.runtime.preprocess.ArrayPreprocessor` computes again with numpy."""
        return {
            "image_size": list(self.image_size),
            "channel_order": self.channel_order,
            "scale": self.scale,
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            "resize": self.resize_mode,
            "steps": "x = (pixels * scale - mean) / std (pixels RGB 0..255, scaled in float64, then float32), "
            "channel order applied, then resized bilinearly (no antialiasing) to image_size on the pixel grid "
            "that `resize` names (ssdkit.resize)",
        }

    def mean_pixel(self) -> tuple[float, float, float]:
        """The mean as an RGB pixel in 0..255 units: what normalises to 0 (the zoom-out fill)."""
        m = [float(v) / self.scale for v in self.mean.flatten().tolist()]
        return tuple(m[::-1] if self.channel_order == "BGR" else m)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"Preprocessor(image_size={self.image_size}, channel_order={self.channel_order!r})"


def to_tensor(picture: Any) -> Tensor:
    """One picture (see `ssdkit.io.pictures`) -> `[3, h, w]` RGB in 0..255, upright: float32, or float64 for
    float (0..1) pictures, whose values x255 then still scale back to exactly the caller's values."""
    return as_255(read_picture(picture))
