"""The SSD training augmentation, built from `torchvision.transforms.v2`.

Samples are `(image, target)`: image `tv_tensors.Image` uint8 `[3, H, W]`, target a dict whose
"boxes" are `tv_tensors.BoundingBoxes` (XYXY pixels) and whose "labels", "difficult" and
"iscrowd" `[G]` follow the boxes (dropped boxes drop their entries too). Resizing to the network
input and normalising come after, from the model's `Preprocessor` (see `pipeline.py`).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.ops import box_iou
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ssdkit.config.data import AugmentConfig
from ssdkit.data.photometric import FastPhotometricDistort

__all__ = ["train_transform", "BatchedIoUCrop", "per_box_fields"]


def per_box_fields(sample: Any) -> tuple[Tensor, ...]:
    """The target tensors with one entry per box (SanitizeBoundingBoxes filters them with the boxes)."""
    target = sample[1]
    return tuple(target[k] for k in ("labels", "difficult", "iscrowd") if k in target)


class BatchedIoUCrop(v2.RandomIoUCrop):
    """`RandomIoUCrop` that tests its `trials` candidate crops at once, and leaves a picture with
    no boxes as it is. Only `make_params` (the search) is replaced; cropping is torchvision's.

    The acceptance rule and the draws' distributions are torchvision's (pick a minimum-IoU option;
    candidates of random scale, aspect and position; the first candidate that holds some box centre
    and reaches the option's IoU with one of those boxes wins; an option >= 1 keeps the picture).
    torchvision tests one candidate at a time in Python: when small boxes make the high options
    fail, that costs up to tens of ms per picture, more than everything else in the pipeline
    together. And it accepts only crops holding a box centre, so with no boxes it would redraw
    until it happened to pick the keep option (forever without one)."""

    MAX_ROUNDS = 1000  # option draws before giving up and keeping the picture (never reached in practice)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        boxes = next((x for x in flat_inputs if isinstance(x, tv_tensors.BoundingBoxes)), None)
        if boxes is None or boxes.shape[0] == 0:
            return {}
        h, w = boxes.canvas_size
        xyxy = F.convert_bounding_box_format(boxes.as_subclass(Tensor), boxes.format, tv_tensors.BoundingBoxFormat.XYXY)
        cx = 0.5 * (xyxy[:, 0] + xyxy[:, 2])
        cy = 0.5 * (xyxy[:, 1] + xyxy[:, 3])
        n = self.trials
        for _ in range(self.MAX_ROUNDS):
            option = self.options[int(torch.randint(low=0, high=len(self.options), size=(1,)))]
            if option >= 1.0:
                return {}
            scale = self.min_scale + (self.max_scale - self.min_scale) * torch.rand(n, 2)
            new_w = (w * scale[:, 0]).long()  # truncation, as int() in torchvision
            new_h = (h * scale[:, 1]).long()
            aspect = new_w / new_h.clamp(min=1)
            ok = (new_h > 0) & (self.min_aspect_ratio <= aspect) & (aspect <= self.max_aspect_ratio)
            pos = torch.rand(n, 2)
            left = ((w - new_w) * pos[:, 0]).long()
            top = ((h - new_h) * pos[:, 1]).long()
            right, bottom = left + new_w, top + new_h
            ok &= (new_w > 0) & (new_h > 0)
            within = (  # [n, G]: box centres strictly inside each candidate
                (left[:, None] < cx) & (cx < right[:, None]) & (top[:, None] < cy) & (cy < bottom[:, None])
            )
            ok &= within.any(dim=1)
            crops = torch.stack((left, top, right, bottom), dim=1).to(xyxy.dtype)
            iou = box_iou(crops, xyxy).masked_fill(~within, -1.0)  # [n, G]
            ok &= iou.max(dim=1).values >= option
            if ok.any():
                t = int(ok.nonzero()[0])
                return dict(
                    top=int(top[t]),
                    left=int(left[t]),
                    height=int(new_h[t]),
                    width=int(new_w[t]),
                    is_within_crop_area=within[t],
                )
        return {}


def train_transform(aug: AugmentConfig, fill: tuple[float, float, float]) -> Optional[v2.Compose]:
    """The policy `aug` as one transform on `(image, target)`; None when it does nothing.

    fill: RGB 0..255 value of the zoom-out canvas (the preprocessing mean, so it normalises to 0).
    Every geometric step is followed by a clamp and `SanitizeBoundingBoxes`, so boxes stay inside
    the picture and a box cropped away (or shrunk under `min_box_size` pixels) is dropped."""
    if not aug.enabled:
        return None
    steps: list[Any] = []
    pd = aug.photometric
    if pd.enabled and pd.p > 0:
        steps.append(
            FastPhotometricDistort(
                brightness=pd.brightness, contrast=pd.contrast, saturation=pd.saturation, hue=pd.hue, p=pd.p
            )
        )
    geometric = False
    ex = aug.expand
    if ex.enabled and ex.p > 0 and ex.max_ratio > 1:
        pixel = tuple(int(round(min(max(v, 0.0), 255.0))) for v in fill)
        steps.append(
            v2.RandomZoomOut(fill={tv_tensors.Image: pixel, "others": 0}, side_range=(1.0, ex.max_ratio), p=ex.p)
        )
        geometric = True
    cr = aug.crop
    if cr.enabled:
        steps.append(
            BatchedIoUCrop(
                min_scale=cr.min_scale,
                max_scale=cr.max_scale,
                min_aspect_ratio=cr.min_aspect_ratio,
                max_aspect_ratio=cr.max_aspect_ratio,
                sampler_options=list(cr.min_iou),
                trials=cr.trials,
            )
        )
        geometric = True
    if aug.flip_p > 0:
        steps.append(v2.RandomHorizontalFlip(p=aug.flip_p))
        geometric = True
    if geometric:
        steps.append(v2.ClampBoundingBoxes())
        steps.append(v2.SanitizeBoundingBoxes(min_size=aug.min_box_size, labels_getter=per_box_fields))
    return v2.Compose(steps) if steps else None
