"""The bipartite matcher of the original SSD code: every ground truth gets a prior of its own.

The paper matches "each ground truth box to the default box with the best jaccard overlap"; the
authors' Caffe code (`MatchBBox`, match type bipartite) does it by repeatedly taking the pair
(ground truth, prior) of largest IoU among the boxes and priors not taken yet. Unlike the `ssd`
matcher (torchvision's rule, where of two boxes that want the same prior only the later keeps
it), no ground truth is left without a positive prior while free priors remain.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from ssdkit.boxes import batched_box_iou
from ssdkit.matchers.ssd import ThresholdMatcher
from ssdkit.registry import MATCHERS, ComponentConfig, part_config

__all__ = ["BipartiteMatcher", "BipartiteMatcherConfig", "bipartite_pairs"]


class BipartiteMatcherConfig(ComponentConfig):
    type: str = "bipartite"
    iou_threshold: float = Field(
        0.5, gt=0, lt=1, description="a prior not taken by the bipartite step is positive when its best IoU >= this"
    )


def _ranking_key(iou: Tensor) -> Tensor:
    """`[B, G, P]` IoU (-1 where excluded) -> int64 keys in the same order, ties broken by prior index.

    A non-negative float32's bits read as an integer keep its order, so key = bits * P + (P - 1 - p)
    orders by IoU, then the lower prior index first: one exact, device-independent order, which
    `topk` and `max` (whose order among equal values is unspecified) then only have to follow.
    """
    P = iou.shape[-1]
    bits = iou.float().clamp(min=0).view(torch.int32).to(torch.int64)
    key = bits * P + (P - 1 - torch.arange(P, device=iou.device))
    return key.masked_fill(iou < 0, -1)


def bipartite_pairs(iou: Tensor, num_rounds: int) -> Tensor:
    """Greedy bipartite matching: `iou [B, G, P]` (-1 for padded ground truths) -> `[B, P]` int64, the
    ground truth each prior is paired with, or -1.

    Each round takes, in every image at once, the largest IoU among the ground truths and priors not
    yet paired (ties: the lower prior index, then the lower ground-truth index) and pairs them; an IoU
    of 0 still pairs, so that every ground truth gets a prior while free ones remain. `num_rounds`:
    the most valid ground truths in one image. The loop runs over rounds, never over images, and only
    on each box's best `min(G, P)` priors: when a box is paired, at most G - 1 priors have been taken,
    so its best free prior is among them.
    """
    B, G, P = iou.shape
    K = min(G, P)
    key, prior = _ranking_key(iou).topk(K, dim=2)  # [B, G, K] each
    paired = torch.full((B, P), -1, dtype=torch.long, device=iou.device)
    rows = torch.arange(B, device=iou.device)
    for _ in range(num_rounds):
        best, pos = key.view(B, G * K).max(dim=1)  # equal keys share a prior: the lower box index first
        ok = best >= 0  # an image with no free pair left (all boxes paired, or no free prior) skips
        g, p = pos // K, prior.view(B, G * K).gather(1, pos[:, None]).squeeze(1)
        paired[rows[ok], p[ok]] = g[ok]
        key[rows, g] = -1  # the box is paired ...
        key.masked_fill_(prior == p[:, None, None], -1)  # ... and so is the prior
    return paired


@MATCHERS.register("bipartite")
class BipartiteMatcher(ThresholdMatcher):
    """Match padded ground truth to priors, for a whole batch at once, as the original SSD code does.

    1. bipartite step (`bipartite_pairs`): each valid ground truth takes a prior of its own, the
       pairs of largest IoU first, so every box is matched whenever P >= its image's box count;
    2. every other prior whose best IoU >= `iou_threshold` takes that best box.
    Padded entries (gt_mask False) never match; an image with none gets no positives.
    Cost: step 1 loops over at most G rounds (G = most boxes in one image), each batched over images.
    Inputs and outputs: see `ThresholdMatcher`.
    """

    def __init__(self, cfg: BipartiteMatcherConfig | None = None) -> None:
        super().__init__(part_config(cfg, BipartiteMatcherConfig))

    def match(self, gt_boxes: Tensor, gt_mask: Tensor, priors: Tensor) -> tuple[Tensor, Tensor]:
        iou = batched_box_iou(gt_boxes, priors).masked_fill(~gt_mask[..., None], -1.0)  # [B, G, P]
        best_iou, best_gt = iou.max(dim=1)  # per prior, [B, P]
        matches = torch.where(best_iou >= self.iou_threshold, best_gt, torch.full_like(best_gt, -1))
        paired = bipartite_pairs(iou, int(gt_mask.sum(dim=1).max()))
        matches = torch.where(paired >= 0, paired, matches)
        matched_iou = torch.gather(iou, 1, matches.clamp(min=0)[:, None, :]).squeeze(1)
        return matches, torch.where(matches >= 0, matched_iou, best_iou.clamp(min=0))
