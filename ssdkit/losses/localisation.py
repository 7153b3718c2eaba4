"""Localisation terms on positive priors, shared by the losses. Each returns an un-normalised sum."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss

from ssdkit.losses.targets import MatchedTargets

__all__ = ["smooth_l1_sum", "giou_sum"]


def smooth_l1_sum(loc: Tensor, matched: MatchedTargets, beta: float) -> Tensor:
    """Smooth-L1 between predicted offsets `loc [B, P, 4]` and the encoded targets, summed over
    the 4 coordinates of every positive prior (beta = 0: plain L1)."""
    per_prior = F.smooth_l1_loss(loc, matched.offsets, reduction="none", beta=beta).sum(dim=-1)
    # where, not multiply: a background prior's huge or inf prediction must not turn into NaN.
    return torch.where(matched.positive, per_prior, 0.0).sum()


def giou_sum(loc: Tensor, matched: MatchedTargets, priors: Tensor, box_coder: Any) -> Tensor:
    """1 - GIoU between the decoded predictions (`box_coder.decode(loc, priors)`, xyxy normalised)
    and the matched boxes, summed over positive priors. priors: `[P, 4]` cxcywh normalised."""
    predicted = box_coder.decode(loc, priors.unsqueeze(0))
    per_prior = generalized_box_iou_loss(predicted, matched.boxes, reduction="none")
    return torch.where(matched.positive, per_prior, 0.0).sum()
