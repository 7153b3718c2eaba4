"""Box conversions and overlaps, and the exact threshold comparison. The one home of this
arithmetic: matchers, post-processing (`ssdkit.postprocess`), export (`ssdkit.export.detector`)
and metrics (`ssdkit.evaluation.metrics`) all call it from here.

Conversions work on `[..., 4]` tensors; `box_rows`/`iou_rows` on `[5, ...]` rows (NMS's layout).

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
    "paired_box_iou",
    "box_rows",
    "iou_rows",
    "largest_at_most",
    "above",
    "float32_threshold",
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


def paired_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of row i of xyxy boxes `a [K, 4]` with row i of `b [K, 4]` -> `[K]` (the diagonal
    of `box_iou(a, b)`, torchvision's formula); 0 where the union is empty."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(inter))


def box_rows(boxes: Tensor) -> Tensor:
    """xyxy boxes `[..., 4]` -> `[5, ...]` contiguous rows x1, y1, x2, y2, area (NMS's layout)."""
    rows = boxes.movedim(-1, 0)
    area = (rows[2] - rows[0]) * (rows[3] - rows[1])
    return torch.cat((rows, area[None]), dim=0).contiguous()


def iou_rows(a: Tensor, b: Tensor) -> Tensor:
    """IoU of rows (x1, y1, x2, y2, area) `a [5, ...]` and `b [5, ...]`, broadcast -> `[...]`.

    Same arithmetic as torchvision's NMS kernel, inter / (area_a + area_b - inter), so a
    pair on the threshold is decided the same way; an empty union gives NaN, which
    compares false there too. (TorchScript compiles it: `ssdkit.export` scripts greedy NMS.)
    """
    w = torch.minimum(a[2], b[2]).sub_(torch.maximum(a[0], b[0])).clamp_(min=0)
    h = torch.minimum(a[3], b[3]).sub_(torch.maximum(a[1], b[1])).clamp_(min=0)
    inter = w.mul_(h)
    return inter.div_((a[4] + b[4]).sub_(inter))


def largest_at_most(threshold: float, dtype: torch.dtype) -> Tensor:
    """The largest value of `dtype` that is <= `threshold` (a 0-dim tensor of `dtype`): for x
    of that dtype, `x > largest_at_most(t)` holds exactly when x > t in exact arithmetic."""
    t = torch.tensor(threshold, dtype=torch.float64)
    low = t.to(dtype)
    if low.double() > t:
        low = torch.nextafter(low, torch.tensor(float("-inf"), dtype=dtype))
    return low


def above(x: Tensor, threshold: float) -> Tensor:
    """`x > threshold` with the threshold taken exactly (as float64), like torchvision's
    C++ NMS kernel compares, not rounded to x's dtype (a float32 IoU of exactly 0.3f would
    otherwise not count as above 0.3)."""
    return x > largest_at_most(threshold, x.dtype).to(x.device)


def float32_threshold(threshold: float) -> float:
    """The largest float32 value <= `threshold`: for float32 x, `x > float32_threshold(t)` holds
    exactly when x > t in exact arithmetic (as `above` compares). For code that must hold a
    plain float, such as the exported detector's NMS threshold."""
    return float(largest_at_most(threshold, torch.float32))
