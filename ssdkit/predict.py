"""From users' pictures to detections in their own pixels.

Accepted pictures: a PIL image, an HWC uint8 numpy array, a CHW torch tensor
(uint8 0..255 or float 0..1), a file path, or a list mixing them, of any sizes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

__all__ = ["Preprocessor", "to_tensor", "predict"]


class Preprocessor:
    """pixels (0..255, RGB) -> x = (pixels * scale - mean) / std, resized to `image_size` (h, w)."""

    def __init__(
        self,
        image_size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        scale: float = 1 / 255,
        channel_order: str = "RGB",
    ) -> None:
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.scale = float(scale)
        self.channel_order = channel_order

    def __call__(self, pixels: Tensor) -> Tensor:
        """pixels: `[3, h, w]` float RGB in 0..255 -> `[3, H, W]` network input."""
        # Normalise before resizing, as torchvision's SSD transform does; bilinear
        # resizing is linear, so the order only matters at float rounding level.
        return self.resize(self.normalize(pixels))

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
        """`[3, h, w]` float -> `[3, H, W]` bilinear (the data loader resizes large augmented pictures first)."""
        return F.interpolate(x[None], size=self.image_size, mode="bilinear", align_corners=False)[0]

    def describe(self) -> dict:
        """The settings as plain JSON values: what an exported file records (`ssdkit_preprocess`) and
        `ssdkit.runtime.preprocess.ArrayPreprocessor` computes again with numpy."""
        return {
            "image_size": list(self.image_size),
            "channel_order": self.channel_order,
            "scale": self.scale,
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            "steps": "x = (pixels * scale - mean) / std (pixels RGB 0..255, scaled in float64, then float32), "
            "channel order applied, then resized bilinearly (align_corners=False, no antialiasing) to image_size",
        }

    def mean_pixel(self) -> tuple[float, float, float]:
        """The mean as an RGB pixel in 0..255 units: what normalises to 0 (the zoom-out fill)."""
        m = [float(v) / self.scale for v in self.mean.flatten().tolist()]
        return tuple(m[::-1] if self.channel_order == "BGR" else m)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"Preprocessor(image_size={self.image_size}, channel_order={self.channel_order!r})"


def _describe(obj: Any) -> str:
    return str(obj) if isinstance(obj, (str, os.PathLike)) else type(obj).__name__


def _to_rgb(image: Image.Image) -> Image.Image:
    """A PIL picture of any mode -> mode RGB (alpha dropped)."""
    if image.mode == "La":  # premultiplied alpha: PIL converts it only to LA
        image = image.convert("LA")
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ValueError(f"cannot turn a PIL picture of mode {image.mode!r} into RGB: {exc}") from None


def to_tensor(image: Any) -> Tensor:
    """One picture -> `[3, h, w]` RGB in 0..255: float32, or float64 for float (0..1) pictures,
    whose values x255 then still scale back to exactly the caller's values."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"no such image file: {path}")
        try:
            with Image.open(path) as im:  # reads the header only
                limit = Image.MAX_IMAGE_PIXELS
                if limit and im.width * im.height > limit:
                    # PIL refuses at twice its limit and only warns below that; refuse at the limit, before
                    # decoding a (possibly hostile) picture. Raise PIL.Image.MAX_IMAGE_PIXELS for trusted ones.
                    raise Image.DecompressionBombError(
                        f"{im.width}x{im.height} pixels exceed PIL.Image.MAX_IMAGE_PIXELS ({limit}); "
                        "a decompression bomb? Raise that limit if you trust the file"
                    )
                im.load()
                return to_tensor(im)
        except (OSError, Image.DecompressionBombError, ValueError) as exc:
            raise ValueError(f"cannot read image {path}: {exc}") from exc
    if isinstance(image, Image.Image):
        if image.width < 1 or image.height < 1:
            raise ValueError(f"image has no pixels ({image.width}x{image.height})")
        if image.mode.startswith("I;16"):
            # 16 bits per pixel: 0..65535 onto 0..255 (65535 = 255 * 257), so that a 16-bit copy of an
            # 8-bit picture (v * 257) gives exactly that picture's values.
            arr = np.asarray(image, dtype=np.float32) / np.float32(257.0)
            return torch.from_numpy(np.ascontiguousarray(arr))[None].expand(3, -1, -1).clone()
        if image.mode == "I":  # 32-bit integers of no fixed range: stretched so that the maximum is 255
            arr = np.asarray(image, dtype=np.float32).clip(min=0)
            arr = arr * (255.0 / max(float(arr.max()), 1.0))
            return torch.from_numpy(np.ascontiguousarray(arr))[None].expand(3, -1, -1).clone()
        arr = np.asarray(_to_rgb(image))
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float()
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[..., None].repeat(3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise ValueError(f"a numpy image must be HWC with 1, 3 or 4 channels, got shape {image.shape}")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"image has no pixels (shape {image.shape})")
        if image.shape[2] == 1:
            image = image.repeat(3, axis=2)
        t = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1)
        return t.float() if image.dtype.kind != "f" else t.double() * 255.0
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"a tensor image must be CHW with 1 or 3 channels, got shape {tuple(image.shape)}")
        if image.shape[1] < 1 or image.shape[2] < 1:
            raise ValueError(f"image has no pixels (shape {tuple(image.shape)})")
        t = image.expand(3, -1, -1) if image.shape[0] == 1 else image
        return t.float() if image.dtype == torch.uint8 else t.double() * 255.0
    raise TypeError(
        f"cannot use a {type(image).__name__} as an image; give a PIL image, an HWC uint8 numpy array, "
        "a CHW tensor or a file path"
    )


@torch.inference_mode()
def predict(model: Any, images: Any, batch_size: int = 8) -> Any:
    """Detect objects; returns one dict per picture (a single dict for a single picture):
    boxes [N, 4] xyxy in that picture's pixels, scores [N], labels [N], names (list of str).
    """
    single = not isinstance(images, (list, tuple))
    items = [images] if single else list(images)
    if model.preprocessor is None:
        raise RuntimeError("this model has no preprocessor; build it with ssdkit.build_model(cfg)")
    device = model.priors.device
    was_training = model.training
    model.eval()
    results = []
    try:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            pixels = [to_tensor(im) for im in chunk]
            sizes = [(p.shape[1], p.shape[2]) for p in pixels]  # (h, w)
            # MPS has no float64; there the 0..1 round trip is only float32-exact.
            dtype = torch.float32 if device.type == "mps" else None
            batch = torch.stack([model.preprocessor(p.to(device, dtype)) for p in pixels])
            loc, logits = model(batch)
            for det, (h, w) in zip(model.postprocess(loc, logits), sizes, strict=True):
                scale = torch.tensor([w, h, w, h], dtype=det["boxes"].dtype, device=det["boxes"].device)
                names = [model.class_names[i - 1] for i in det["labels"].tolist()]
                results.append(
                    {"boxes": det["boxes"] * scale, "scores": det["scores"], "labels": det["labels"], "names": names}
                )
    finally:
        model.train(was_training)
    return results[0] if single else results
