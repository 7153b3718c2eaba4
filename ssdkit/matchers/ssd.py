"""The SSD matcher: bipartite best-prior match, then an IoU threshold."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from ssdkit.boxes import batched_box_iou
from ssdkit.registry import MATCHERS, ComponentConfig


class SSDMatcherConfig(ComponentConfig):
    type: str = "ssd"
    iou_threshold: float = Field(0.5, gt=0, lt=1, description="a prior whose best IoU >= this is positive")


@MATCHERS.register("ssd", config=SSDMatcherConfig)
class SSDMatcher:
    """Match padded ground truth to priors, for a whole batch at once.

    __call__(gt_boxes [B, G, 4] xyxy, gt_mask [B, G] bool, priors [P, 4] xyxy)
      -> (matches [B, P] int64, the matched ground-truth index or -1 for background,
          iou [B, P] float, the IoU of each prior with its matched ground truth; for an
          unmatched prior, with its best one; 0 in an image without ground truth).

    1. every valid ground truth takes the prior it overlaps most (when two boxes
       want the same prior, the later one wins, as in torchvision);
    2. every other prior whose best IoU >= `iou_threshold` takes that best box.
    Padded entries (gt_mask False) never match; an image with none gets no positives.
    """

    def __init__(self, iou_threshold: float = 0.5) -> None:
        self.iou_threshold = float(iou_threshold)

    def __call__(self, gt_boxes: Tensor, gt_mask: Tensor, priors: Tensor) -> tuple[Tensor, Tensor]:
        B, G = gt_mask.shape
        P = priors.shape[0]
        if G == 0:
            return (
                torch.full((B, P), -1, dtype=torch.long, device=priors.device),
                torch.zeros((B, P), dtype=priors.dtype, device=priors.device),
            )
        iou = batched_box_iou(gt_boxes, priors)  # [B, G, P]
        iou = iou.masked_fill(~gt_mask[..., None], -1.0)
        best_iou, best_gt = iou.max(dim=1)  # per prior, [B, P]
        matches = torch.where(best_iou >= self.iou_threshold, best_gt, torch.full_like(best_gt, -1))

        # Forced matches. scatter_reduce(amax) makes "the later box wins" deterministic.
        best_prior = iou.argmax(dim=2)  # per ground truth, [B, G]
        gt_index = torch.arange(G, device=priors.device).expand(B, G)
        forced = torch.full((B, P), -1, dtype=torch.long, device=priors.device)
        forced.scatter_reduce_(1, best_prior, torch.where(gt_mask, gt_index, -1), reduce="amax")
        matches = torch.where(forced >= 0, forced, matches)
        matched_iou = torch.gather(iou, 1, matches.clamp(min=0)[:, None, :]).squeeze(1)
        return matches, torch.where(matches >= 0, matched_iou, best_iou.clamp(min=0))

    def __repr__(self) -> str:
        return f"SSDMatcher(iou_threshold={self.iou_threshold})"
