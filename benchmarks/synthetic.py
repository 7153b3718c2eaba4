"""Head outputs shaped like a trained SSD's, for timing post-processing.

A trained detector is confident about background almost everywhere, and around each
object a cluster of priors predicts the object's class with nearly the same box,
so NMS has real duplicates to remove. Random logits have neither property.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssdkit.box_coders.ssd import SSDBoxCoder
from ssdkit.boxes import batched_box_iou, cxcywh_to_xyxy


def trained_like_outputs(
    priors: Tensor, batch: int, num_classes: int, objects: int = 4, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """priors `[P, 4]` cxcywh normalised -> (loc `[B, P, 4]` offsets, logits `[B, P, C]`).

    Background logit ~ N(7, 0.5^2), object logits ~ N(0, 0.9^2), so about 1500 (prior, class) pairs per image
    clear a 0.01 score threshold (SSD300, 21 classes); each of `objects` ground-truth boxes
    per image gets every prior with IoU > 0.3 voting for its class with a confident logit
    and a box near the object's (encoded offsets plus noise).
    """
    g = torch.Generator().manual_seed(seed)
    P = priors.shape[0]
    logits = torch.randn(batch, P, num_classes, generator=g) * 0.9
    logits[..., 0] = 7.0 + 0.5 * torch.randn(batch, P, generator=g)
    loc = torch.randn(batch, P, 4, generator=g) * 0.5

    centre = torch.rand(batch, objects, 2, generator=g) * 0.7 + 0.15
    size = torch.rand(batch, objects, 2, generator=g) * 0.4 + 0.08
    gt = cxcywh_to_xyxy(torch.cat((centre, size), dim=-1)).clamp(0, 1)  # [B, O, 4]
    labels = torch.randint(1, num_classes, (batch, objects), generator=g)
    iou = batched_box_iou(gt, cxcywh_to_xyxy(priors))  # [B, O, P]
    best_iou, best_obj = iou.max(dim=1)  # [B, P]
    hit = best_iou > 0.3
    b_idx, p_idx = hit.nonzero(as_tuple=True)
    obj = best_obj[b_idx, p_idx]
    conf = 4.0 + 8.0 * best_iou[b_idx, p_idx] + torch.randn(obj.shape, generator=g)
    logits[b_idx, p_idx, labels[b_idx, obj]] = conf
    logits[b_idx, p_idx, 0] = 2.0
    offsets = SSDBoxCoder().encode(gt[b_idx, obj], priors[p_idx])
    loc[b_idx, p_idx] = offsets + 0.1 * torch.randn(offsets.shape, generator=g)
    return loc, logits


def random_outputs(num_priors: int, batch: int, num_classes: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Untrained-looking outputs: loc and logits ~ N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, num_priors, 4, generator=g), torch.randn(batch, num_priors, num_classes, generator=g))
