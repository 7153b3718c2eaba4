"""Draw detections on a picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes

from ssdkit.predict import to_tensor

__all__ = ["draw"]


def draw(
    image: Any, detections: dict, score_threshold: float = 0.3, path: Optional[str | Path] = None, width: int = 2
) -> Image.Image:
    """Boxes (pixels of `image`) with "name score" labels; returns a PIL image, and saves it to `path` if given."""
    pixels = to_tensor(image).clamp(0, 255).to(torch.uint8)
    keep = detections["scores"] >= score_threshold
    boxes = detections["boxes"][keep].detach().float().cpu()
    names = detections.get("names")
    idx = keep.nonzero().flatten().tolist()
    scores = detections["scores"].tolist()
    if names is None:
        names = [str(int(label)) for label in detections["labels"].tolist()]
    labels = [f"{names[i]} {scores[i]:.2f}" for i in idx]
    if boxes.numel():
        pixels = draw_bounding_boxes(pixels, boxes, labels=labels, width=width, colors="lime")
    picture = Image.fromarray(pixels.permute(1, 2, 0).numpy())
    if path is not None:
        picture.save(path)
    return picture
