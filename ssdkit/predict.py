"""From users' pictures to detections in their own pixels.

Accepted pictures (`ssdkit.pictures` states the contract): a PIL image, an HWC numpy array, a CHW
torch tensor (uint8, uint16, or float 0..1), a file path, a list mixing them, of any sizes, or a
batch: an NHWC numpy array or an NCHW tensor. EXIF orientation is applied: boxes are in the
pixels a viewer shows.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

from ssdkit.picture_files import check_batch_size, picture_items
from ssdkit.pictures import as_255, read_picture, row_chunks
from ssdkit.resize import ResizeMode, resize_bilinear

__all__ = ["Preprocessor", "to_tensor", "predict", "evaluating"]


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


def to_tensor(image: Any) -> Tensor:
    """One picture (see `ssdkit.pictures`) -> `[3, h, w]` RGB in 0..255, upright: float32, or float64 for
    float (0..1) pictures, whose values x255 then still scale back to exactly the caller's values."""
    return as_255(read_picture(image))


def _items(images: Any) -> tuple[list[Any], bool]:
    """(pictures, single): a list or tuple, a batch (NHWC numpy array, NCHW tensor), or one picture."""
    if isinstance(images, Tensor) and images.dim() == 4:
        return list(images), False
    return picture_items(images)


_LOCK = threading.Lock()
_ACTIVE: weakref.WeakKeyDictionary[torch.nn.Module, list] = weakref.WeakKeyDictionary()


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """`model` in eval mode for the block, safe under concurrent calls: a model already in eval mode
    is left untouched; one in training mode is switched by the first call in and switched back by the
    last call out, so no call runs while another restores training mode (BatchNorm would then update
    its statistics and detections would change)."""
    with _LOCK:
        entry = _ACTIVE.get(model)
        if entry is None:
            entry = _ACTIVE[model] = [0, model.training]
            if model.training:
                model.eval()
        entry[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            entry[0] -= 1
            if entry[0] == 0:
                del _ACTIVE[model]
                if entry[1]:
                    model.train()


@torch.inference_mode()
def predict(model: Any, images: Any, batch_size: int = 8) -> Any:
    """Detect objects; returns one dict per picture (a single dict for a single picture):
    boxes [N, 4] xyxy in that picture's displayed pixels, scores [N], labels [N], names (list of str).

    Safe to call from several threads on one model (see `evaluating`). Pictures are read one at a
    time, each kept only as its `[3, H, W]` network input.
    """
    batch_size = check_batch_size(batch_size)
    items, single = _items(images)
    if model.preprocessor is None:
        raise RuntimeError("this model has no preprocessor; build it with ssdkit.build_model(cfg)")
    device = model.priors.device
    results = []
    with evaluating(model):
        for start in range(0, len(items), batch_size):
            inputs, sizes = [], []
            for im in items[start : start + batch_size]:
                picture = read_picture(im)
                sizes.append((picture.shape[1], picture.shape[2]))  # (h, w)
                inputs.append(model.preprocessor.picture(picture.to(device)))
                del picture
            loc, logits = model(torch.stack(inputs))
            for det, (h, w) in zip(model.postprocess(loc, logits), sizes, strict=True):
                scale = torch.tensor([w, h, w, h], dtype=det["boxes"].dtype, device=det["boxes"].device)
                names = [model.class_names[i - 1] for i in det["labels"].tolist()]
                results.append(
                    {"boxes": det["boxes"] * scale, "scores": det["scores"], "labels": det["labels"], "names": names}
                )
    return results[0] if single else results
