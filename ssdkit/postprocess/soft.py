"""Soft-NMS (Bodla et al., 2017): overlapping boxes lose score instead of being dropped."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from ssdkit.boxes import above, box_rows, iou_rows
from ssdkit.postprocess.base import PostprocessConfig, Postprocessor
from ssdkit.postprocess.overlaps import gather_padded, padded_groups
from ssdkit.registry import POSTPROCESS, part_config


class SoftNMSConfig(PostprocessConfig):
    type: str = "soft"
    sigma: float = Field(0.5, gt=0, description="Gaussian decay width: scores are multiplied by exp(-iou^2 / sigma)")
    method: Literal["gaussian", "linear"] = Field(
        "gaussian",
        description="gaussian: exp(-iou^2 / sigma) for every overlap; linear: 1 - iou when iou > iou_threshold",
    )


@POSTPROCESS.register("soft")
class SoftNMS(Postprocessor):
    """Soft-NMS per image and class. In every group, repeatedly take the highest-scoring
    remaining box, then decay the others' scores by its overlap (gaussian: exp(-iou^2 / sigma);
    linear: (1 - iou) where iou > iou_threshold) and drop those left at or below
    score_threshold. Detections carry their decayed scores.

    All groups advance together, one taken box per group per step, on `[G, K]` padded
    score and box tensors (G groups, K = largest group); a group contributes at most
    max_detections boxes, which bounds the steps.
    """

    def __init__(self, cfg: SoftNMSConfig | None = None) -> None:
        cfg = part_config(cfg, SoftNMSConfig)
        super().__init__(cfg)
        self.sigma, self.method = cfg.sigma, cfg.method

    def decay(self, iou: Tensor) -> Tensor:
        """Score multiplier for boxes overlapping a taken box by `iou`."""
        if self.method == "gaussian":
            return torch.exp(iou.square().mul_(-1.0 / self.sigma))
        return torch.where(above(iou, self.iou_threshold), 1.0 - iou, torch.ones_like(iou))

    def suppress(self, boxes: Tensor, scores: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
        device = scores.device
        if scores.numel() == 0:
            return torch.empty(0, dtype=torch.long, device=device), scores
        index, valid = padded_groups(groups)  # [G, K]
        rows = gather_padded(box_rows(boxes), index, valid)  # [5, G, K]
        current = scores.index_select(0, index.view(-1)).view(index.shape).where(valid, 0.0)
        taken_idx, taken_score = [], []
        for _ in range(min(index.shape[1], self.max_detections)):
            best, at = current.max(dim=1)
            going = best > self.score_threshold
            if not bool(going.all()):
                # Drop finished groups, so that later steps only touch live ones.
                keep = going.nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                index, current, rows = (
                    index.index_select(0, keep),
                    current.index_select(0, keep),
                    rows.index_select(1, keep),
                )
                best, at = best.index_select(0, keep), at.index_select(0, keep)
            taken_idx.append(index.gather(1, at[:, None]).squeeze(1))
            taken_score.append(best)
            chosen = rows.gather(2, at[None, :, None].expand(5, -1, 1))  # [5, G, 1]
            # An empty union (two zero-area boxes) gives NaN: count it as no overlap.
            iou = iou_rows(chosen, rows).nan_to_num_(0.0)
            current = current * self.decay(iou)
            current.scatter_(1, at[:, None], 0.0)
            current = current.where(current > self.score_threshold, 0.0)
        if not taken_idx:
            return torch.empty(0, dtype=torch.long, device=device), scores[:0]
        kept, kept_scores = torch.cat(taken_idx), torch.cat(taken_score)
        order = torch.argsort(kept_scores, descending=True, stable=True)
        return kept.index_select(0, order), kept_scores.index_select(0, order)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, sigma={self.sigma}, method={self.method!r})"
