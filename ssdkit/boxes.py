"""Box conversions and overlaps. Every function works on `[..., 4]` tensors.

Formats: ``xyxy`` (x1, y1, x2, y2), ``cxcywh`` (centre x, centre y, width, height),
``xywh`` (x1, y1, width, height, as COCO stores them). Units are whatever the caller
uses; inside the model they are normalised to [0, 1] (docs/coordinates.md).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou as _tv_box_iou

__all__ = [
    "xyxy_to_cxcywh",
    "cxcywh_to_xyxy",
    "xyxy_to_xywh",
    "xywh_to_xyxy",
    "box_area",
    "clip_boxes",
    "box_iou",
    "batched_box_iou",
]


def xyxy_to_cxcywh(b: Tensor) -> Tensor:
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack(((x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(b: Tensor) -> Tensor:
    cx, cy, w, h = b.unbind(-1)
    hw, hh = 0.5 * w, 0.5 * h
    return torch.stack((cx - hw, cy - hh, cx + hw, cy + hh), dim=-1)


def xyxy_to_xywh(b: Tensor) -> Tensor:
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def xywh_to_xyxy(b: Tensor) -> Tensor:
    x, y, w, h = b.unbind(-1)
    return torch.stack((x, y, x + w, y + h), dim=-1)


def box_area(b: Tensor) -> Tensor:
    """Area of xyxy boxes `[..., 4]` -> `[...]`; inverted boxes have area 0."""
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def clip_boxes(b: Tensor, width: float = 1.0, height: float = 1.0) -> Tensor:
    """Clip xyxy boxes to [0, width] x [0, height] (defaults: the normalised image)."""
    x = b[..., 0::2].clamp(0, width)
    y = b[..., 1::2].clamp(0, height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of xyxy boxes `a [N, 4]` and `b [M, 4]` -> `[N, M]` (torchvision's kernel)."""
    return _tv_box_iou(a, b)


def batched_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of xyxy boxes `a [B, N, 4]` with `b [B, M, 4]` (or `b [M, 4]`) -> `[B, N, M]`.

    torchvision.ops.box_iou has no batch dimension; this is its formula broadcast
    over one. Pairs whose union is empty get IoU 0 instead of NaN.
    """
    if b.dim() == 2:
        b = b.unsqueeze(0)
    area_a = box_area(a)[..., :, None]
    area_b = box_area(b)[..., None, :]
    # x and y overlaps as separate contiguous [B, N, M] tensors, updated in place: the same
    # arithmetic as torchvision's [N, M, 2] corner tensors with fewer and smaller temporaries
    # (the matcher's hot path on CPU).
    a, b = a[..., :, None, :], b[..., None, :, :]
    w = torch.minimum(a[..., 2], b[..., 2]).sub_(torch.maximum(a[..., 0], b[..., 0]))
    h = torch.minimum(a[..., 3], b[..., 3]).sub_(torch.maximum(a[..., 1], b[..., 1]))
    inter = w.clamp_(min=0).mul_(h.clamp_(min=0))
    union = (area_a + area_b).sub_(inter)
    tiny = torch.finfo(union.dtype).tiny
    if area_b.numel() and bool((area_b > 2 * tiny).all()):
        # union >= about max(area_a, area_b) > tiny for every pair: no empty union to guard against.
        return inter.div_(union)
    return torch.where(union > 0, inter / union.clamp(min=tiny), torch.zeros_like(inter))
