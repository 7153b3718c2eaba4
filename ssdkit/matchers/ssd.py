"""The SSD matcher: bipartite best-prior match, then an IoU threshold."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from ssdkit.boxes import batched_box_iou
from ssdkit.registry import MATCHERS, ComponentConfig, part_config

# On a CPU, a padded [B, G, P] IoU larger than this (elements; 8 MB of float32) is slower than one
# [G_i, P] IoU per image: the padding costs as much as real boxes and the temporaries leave the
# cache. Below it, one batched call saves the per-image overhead. Measured on SSD300's 8732 priors,
# batch 1-64, 1-50 boxes per image (docs/benchmarks.md). GPUs always take the batched path.
PER_IMAGE_ABOVE = 2**21


class SSDMatcherConfig(ComponentConfig):
    type: str = "ssd"
    iou_threshold: float = Field(0.5, gt=0, lt=1, description="a prior whose best IoU >= this is positive")


def no_matches(batch: int, num_priors: int, priors: Tensor) -> tuple[Tensor, Tensor]:
    """A matcher's answer for a batch without ground truth: (matches `[B, P]` all -1, iou `[B, P]` zeros)."""
    return (
        torch.full((batch, num_priors), -1, dtype=torch.long, device=priors.device),
        torch.zeros((batch, num_priors), dtype=priors.dtype, device=priors.device),
    )


class ThresholdMatcher:
    """What the matchers share: an `iou_threshold` from their config, the answer for a batch without
    ground truth, and the contract

    __call__(gt_boxes [B, G, 4] xyxy, gt_mask [B, G] bool, priors [P, 4] xyxy)
      -> (matches [B, P] int64, the matched ground-truth index or -1 for background,
          iou [B, P] float, the IoU of each prior with its matched ground truth; for an
          unmatched prior, with its best one; 0 in an image without ground truth).

    Subclasses implement `match` for G >= 1.
    """

    def __init__(self, cfg: ComponentConfig) -> None:
        """cfg: the subclass's config, which has an `iou_threshold`."""
        self.config = cfg
        self.iou_threshold = cfg.iou_threshold

    def __call__(self, gt_boxes: Tensor, gt_mask: Tensor, priors: Tensor) -> tuple[Tensor, Tensor]:
        if gt_mask.shape[1] == 0:
            return no_matches(gt_mask.shape[0], priors.shape[0], priors)
        return self.match(gt_boxes, gt_mask, priors)

    def match(self, gt_boxes: Tensor, gt_mask: Tensor, priors: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(iou_threshold={self.iou_threshold})"


@MATCHERS.register("ssd")
class SSDMatcher(ThresholdMatcher):
    """Match padded ground truth to priors, for a whole batch at once.

    1. every valid ground truth takes the prior it overlaps most (when two boxes
       want the same prior, the later one wins, as in torchvision);
    2. every other prior whose best IoU >= `iou_threshold` takes that best box.
    Padded entries (gt_mask False) never match; an image with none gets no positives.
    Inputs and outputs: see `ThresholdMatcher`.
    """

    def __init__(self, cfg: SSDMatcherConfig | None = None) -> None:
        super().__init__(part_config(cfg, SSDMatcherConfig))

    def match(self, gt_boxes: Tensor, gt_mask: Tensor, priors: Tensor) -> tuple[Tensor, Tensor]:
        B, G = gt_mask.shape
        if priors.device.type == "cpu" and B * G * priors.shape[0] > PER_IMAGE_ABOVE:
            return self.per_image(gt_boxes, gt_mask, priors)
        return self.batched(gt_boxes, gt_mask, priors)

    def batched(self, gt_boxes: Tensor, gt_mask: Tensor, priors: Tensor) -> tuple[Tensor, Tensor]:
        """All images in one padded `[B, G, P]` IoU: few kernel launches (what a GPU wants), but
        padded slots cost as much as real boxes."""
        B, G = gt_mask.shape
        iou = batched_box_iou(gt_boxes, priors)  # [B, G, P]
        iou = iou.masked_fill(~gt_mask[..., None], -1.0)
        best_iou, best_gt = iou.max(dim=1)  # per prior, [B, P]
        matches = torch.where(best_iou >= self.iou_threshold, best_gt, torch.full_like(best_gt, -1))

        # Forced matches. scatter_reduce(amax) makes "the later box wins" deterministic.
        best_prior = iou.argmax(dim=2)  # per ground truth, [B, G]
        gt_index = torch.arange(G, device=priors.device).expand(B, G)
        forced = torch.full((B, priors.shape[0]), -1, dtype=torch.long, device=priors.device)
        forced.scatter_reduce_(1, best_prior, torch.where(gt_mask, gt_index, -1), reduce="amax")
        matches = torch.where(forced >= 0, forced, matches)
        matched_iou = torch.gather(iou, 1, matches.clamp(min=0)[:, None, :]).squeeze(1)
        return matches, torch.where(matches >= 0, matched_iou, best_iou.clamp(min=0))

    def per_image(self, gt_boxes: Tensor, gt_mask: Tensor, priors: Tensor) -> tuple[Tensor, Tensor]:
        """One image at a time, over its valid boxes only: `[G_i, P]` IoU each, so padding costs
        nothing. Same arithmetic and tie rules as `batched`, hence the same results
        (tests/matchers/test_matcher.py)."""
        B, G = gt_mask.shape
        P = priors.shape[0]
        matches = torch.full((B, P), -1, dtype=torch.long, device=priors.device)
        ious = torch.zeros((B, P), dtype=priors.dtype, device=priors.device)
        counts = gt_mask.sum(dim=1)
        # pad_targets puts each image's boxes first: then slot i is box i and no index map is needed.
        packed = bool(torch.equal(gt_mask, torch.arange(G, device=gt_mask.device) < counts[:, None]))
        for b, n in enumerate(counts.tolist()):
            if n == 0:
                continue
            index = None if packed else gt_mask[b].nonzero().squeeze(1)
            boxes = gt_boxes[b, :n] if index is None else gt_boxes[b, index]
            m, iou = self._match_image(boxes, priors)
            matches[b] = m if index is None else torch.where(m >= 0, index[m.clamp(min=0)], -1)
            ious[b] = iou
        return matches, ious

    def _match_image(self, boxes: Tensor, priors: Tensor) -> tuple[Tensor, Tensor]:
        """`batched`'s steps for one image: boxes `[n, 4]` xyxy (n >= 1, all valid) -> ([P], [P])."""
        n = boxes.shape[0]
        iou = batched_box_iou(boxes[None], priors)[0]  # [n, P]
        best_iou, best_gt = iou.max(dim=0)
        matches = torch.where(best_iou >= self.iou_threshold, best_gt, torch.full_like(best_gt, -1))
        forced = torch.full_like(matches, -1)
        forced.scatter_reduce_(0, iou.argmax(dim=1), torch.arange(n, device=boxes.device), reduce="amax")
        matches = torch.where(forced >= 0, forced, matches)
        matched_iou = iou.gather(0, matches.clamp(min=0)[None])[0]
        return matches, torch.where(matches >= 0, matched_iou, best_iou.clamp(min=0))
