"""Per-image detections and ground truths (lists of dicts) -> flat, checked tensors.

Both metric protocols take the same input: `preds[i]` with `boxes [N, 4]` xyxy pixels, `scores [N]`,
`labels [N]`; `gts[i]` with `boxes [G, 4]` xyxy pixels, `labels [G]` and optionally `difficult [G]`
bool, `iscrowd [G]` bool, `area [G]` (COCO's object areas; box areas when absent). Tensors, numpy
arrays or lists are accepted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor

__all__ = ["Flat", "flatten_predictions", "flatten_ground_truths"]


class Flat(NamedTuple):
    """Boxes of all images, concatenated in image order (each image's own order kept)."""

    image: Tensor  # [N] int64, index of the image in the input list
    boxes: Tensor  # [N, 4] float64 xyxy pixels
    labels: Tensor  # [N] int64 >= 0
    scores: Optional[Tensor]  # [N] float64 (predictions only)
    difficult: Optional[Tensor]  # [N] bool (ground truths only)
    iscrowd: Optional[Tensor]  # [N] bool (ground truths only)
    area: Optional[Tensor]  # [N] float64 (ground truths only)
    num_images: int


def _field(item: Any, key: str, where: str, *, required: bool = True) -> Optional[Tensor]:
    if not isinstance(item, Mapping):
        raise TypeError(f"{where} is a {type(item).__name__}; expected a dict with 'boxes', 'labels', ...")
    if key not in item or item[key] is None:
        if required:
            raise KeyError(f"{where} has no '{key}' (keys: {sorted(map(str, item))})")
        return None
    value = item[key]
    try:
        t = value.detach().cpu() if isinstance(value, Tensor) else torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{where}['{key}'] cannot be read as numbers: {exc}") from exc
    return t


def _boxes(item: Any, where: str) -> Tensor:
    b = _field(item, "boxes", where)
    if b.numel() == 0:
        return b.new_zeros(0, 4)
    if b.dim() != 2 or b.shape[1] != 4:
        raise ValueError(f"{where}['boxes'] has shape {tuple(b.shape)}; expected [N, 4] xyxy pixels")
    return b


def _vector(item: Any, key: str, n: int, where: str, *, required: bool = True) -> Optional[Tensor]:
    v = _field(item, key, where, required=required)
    if v is None:
        return None
    if v.dim() != 1:
        v = v.reshape(-1) if v.numel() == n else v
    if v.dim() != 1 or v.numel() != n:
        raise ValueError(f"{where}['{key}'] has shape {tuple(v.shape)}; expected [{n}] (one per box)")
    return v


def _cat(parts: list[Tensor], dtype: torch.dtype, kind: str, key: str) -> Tensor:
    """Concatenate the images' values, converting once (not per image)."""
    if not parts:
        return torch.zeros(0, dtype=dtype)
    if dtype == torch.bool:
        parts = [p.bool() for p in parts] if any(p.dtype != torch.bool for p in parts) else parts
    t = torch.cat(parts)
    if dtype == torch.int64 and t.is_floating_point() and bool((t != t.round()).any()):
        raise ValueError(f"{kind}: '{key}' holds non-integer values; labels are integer class ids")
    return t.to(dtype)


def _check(kind: str, flat: Flat, per_image_start: Tensor) -> None:
    """Vectorised checks of all boxes at once; the error names the first bad image and box."""

    def fail(bad: Tensor, what: str) -> None:
        k = int(bad.nonzero()[0, 0])
        img = int(flat.image[k])
        j = k - int(per_image_start[img])
        raise ValueError(f"{kind}[{img}] box {j} {what}: {flat.boxes[k].tolist()}")

    b = flat.boxes
    if b.numel():
        bad = ~torch.isfinite(b).all(dim=1)
        if bool(bad.any()):
            fail(bad, "is not finite")
        bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
        if bool(bad.any()):
            fail(bad, "has x2 < x1 or y2 < y1 (boxes are xyxy)")
        bad = flat.labels < 0
        if bool(bad.any()):
            fail(bad, f"has a negative label {int(flat.labels[bad][0])}")
        if flat.scores is not None:
            bad = ~torch.isfinite(flat.scores)
            if bool(bad.any()):
                fail(bad, f"has a score that is not finite ({float(flat.scores[bad][0])})")
        if flat.area is not None:
            bad = ~torch.isfinite(flat.area) | (flat.area < 0)
            if bool(bad.any()):
                fail(bad, f"has a bad area ({float(flat.area[bad][0])})")


def _flatten(items: Sequence[Any], kind: str, is_pred: bool) -> Flat:
    if isinstance(items, Mapping) or not isinstance(items, Sequence):
        raise TypeError(f"{kind} must be a list with one dict per image, got {type(items).__name__}")
    cols: dict[str, list[Tensor]] = {k: [] for k in ("boxes", "labels", "scores", "difficult", "iscrowd", "area")}
    counts, has_area = [], []
    for i, item in enumerate(items):
        where = f"{kind}[{i}]"
        b = _boxes(item, where)
        n = b.shape[0]
        counts.append(n)
        cols["boxes"].append(b)
        cols["labels"].append(_vector(item, "labels", n, where))
        if is_pred:
            cols["scores"].append(_vector(item, "scores", n, where))
            continue
        for key in ("difficult", "iscrowd"):
            v = _vector(item, key, n, where, required=False)
            cols[key].append(v if v is not None else torch.zeros(n, dtype=torch.bool))
        a = _vector(item, "area", n, where, required=False)
        has_area.append(a is not None)
        cols["area"].append(a if a is not None else torch.full((n,), float("nan"), dtype=torch.float64))
    num = torch.tensor(counts, dtype=torch.int64)
    boxes = _cat(cols["boxes"], torch.float64, kind, "boxes").reshape(-1, 4)
    area = None
    if not is_pred:
        area = _cat(cols["area"], torch.float64, kind, "area")
        if not all(has_area):  # box areas where the caller gave none
            given = torch.repeat_interleave(torch.tensor(has_area, dtype=torch.bool), num)
            area = torch.where(given, area, (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    flat = Flat(
        image=torch.repeat_interleave(torch.arange(len(counts)), num),
        boxes=boxes,
        labels=_cat(cols["labels"], torch.int64, kind, "labels"),
        scores=_cat(cols["scores"], torch.float64, kind, "scores") if is_pred else None,
        difficult=None if is_pred else _cat(cols["difficult"], torch.bool, kind, "difficult"),
        iscrowd=None if is_pred else _cat(cols["iscrowd"], torch.bool, kind, "iscrowd"),
        area=area,
        num_images=len(counts),
    )
    _check(kind, flat, torch.cumsum(num, 0) - num)
    return flat


def flatten_predictions(preds: Sequence[Any]) -> Flat:
    """`preds`: one dict per image with `boxes [N, 4]` xyxy pixels, `scores [N]`, `labels [N]`."""
    return _flatten(preds, "preds", is_pred=True)


def flatten_ground_truths(gts: Sequence[Any]) -> Flat:
    """`gts`: one dict per image with `boxes [G, 4]` xyxy pixels, `labels [G]`, optional `difficult`,
    `iscrowd` (bool) and `area`."""
    return _flatten(gts, "gts", is_pred=False)


def check_same_length(preds: Flat, gts: Flat) -> None:
    if preds.num_images != gts.num_images:
        raise ValueError(
            f"preds has {preds.num_images} images but gts has {gts.num_images}; "
            "give one entry per image in both, in the same order (empty boxes and labels for an image with none)"
        )
