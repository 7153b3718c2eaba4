"""The SSD multibox loss: smooth-L1 on positives plus cross-entropy with hard-negative mining."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ssdkit.losses.localisation import smooth_l1_sum
from ssdkit.losses.targets import check_head_outputs, match_targets
from ssdkit.registry import LOSSES, ComponentConfig, part_config
from ssdkit.roles import BoxCoder, Matcher

__all__ = ["MultiboxLoss", "MultiboxLossConfig", "hard_negatives", "num_hard_negatives"]


class MultiboxLossConfig(ComponentConfig):
    type: str = "multibox"
    neg_pos_ratio: float = Field(
        3.0, ge=0, description="hard negatives per positive prior in each image (rounded down)"
    )
    min_negatives: int = Field(
        3,
        ge=0,
        description="each image contributes at least this many hard negatives, also one without ground "
        "truth (0: such an image teaches nothing, as in torchvision)",
    )
    loc_weight: float = Field(1.0, ge=0, description="weight of the localisation term in the sum")
    smooth_l1_beta: float = Field(1.0, ge=0, description="smooth-L1 switches from quadratic to linear here (0: L1)")


def num_hard_negatives(num_pos: Tensor, num_priors: int, neg_pos_ratio: float, min_negatives: int) -> Tensor:
    """`[B]` negatives kept per image: min(max(floor(ratio * num_pos), min_negatives), num_priors - num_pos)."""
    wanted = torch.floor(num_pos * neg_pos_ratio).long().clamp(min=min_negatives)
    return torch.minimum(wanted, num_priors - num_pos)


def hard_negatives(cls_loss: Tensor, positive: Tensor, neg_pos_ratio: float, min_negatives: int) -> Tensor:
    """`[B, P]` bool: in each image, the `num_hard_negatives` non-positive priors of highest `cls_loss`.

    cls_loss: `[B, P]` per-prior classification loss (only its order matters; no gradient).
    positive: `[B, P]` bool. Ties go to the lower prior index. One sort over the batch: the rank
    of each prior comes from scattering positions through the sort order, not from a second sort.
    """
    B, P = positive.shape
    k = num_hard_negatives(positive.sum(dim=1), P, neg_pos_ratio, min_negatives)
    ranking = cls_loss.detach().masked_fill(positive, -torch.inf)  # positives sort last
    order = torch.sort(ranking, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(P, device=order.device).expand(B, P))
    # k never exceeds the non-positives, so the first k ranks are never positives.
    return rank < k[:, None]


@LOSSES.register("multibox")
class MultiboxLoss(nn.Module):
    """The SSD loss (Liu et al. 2016), batched over the whole batch.

    __call__(loc [B, P, 4] offsets, logits [B, P, C], targets list of B dicts {boxes [G, 4] xyxy
    normalised, labels [G] int64 in 1 .. C - 1}, priors [P, 4] cxcywh normalised)
      -> {"loc": loc_weight * L_loc / N, "cls": L_cls / N, "loss": their sum}, float32 scalars.

    L_loc: smooth-L1 of predicted vs. encoded offsets over the positives' 4 coordinates, summed.
    L_cls: softmax cross-entropy summed over positives and each image's hard negatives (its
    non-positive priors of highest cross-entropy, `neg_pos_ratio` per positive).
    N: positives in the whole batch, at least 1.

    With `min_negatives=0` this equals torchvision's `SSD.compute_loss` (tested); the default
    `min_negatives=3` equals it too wherever every image has a positive (3 * 1 >= 3). Where we
    differ on purpose:
      * an image without ground truth contributes `min_negatives` hard negatives (torchvision: none);
      * the negatives of an image are capped at its non-positive priors; torchvision then also
        counts some positives a second time as "negatives" (only when 3 * positives > the rest);
      * ties in the negative ranking go to the lower prior index (torchvision's sort is unstable);
      * the terms are named loc/cls, not bbox_regression/classification.
    Inputs in fp16/bf16 are computed in float32.
    """

    def __init__(self, cfg: MultiboxLossConfig | None = None, *, box_coder: BoxCoder, matcher: Matcher) -> None:
        super().__init__()
        self.config = cfg = part_config(cfg, MultiboxLossConfig)
        self.neg_pos_ratio, self.min_negatives = cfg.neg_pos_ratio, cfg.min_negatives
        self.loc_weight, self.smooth_l1_beta = cfg.loc_weight, cfg.smooth_l1_beta
        self.box_coder, self.matcher = box_coder, matcher

    def forward(self, loc: Tensor, logits: Tensor, targets: list[dict[str, Any]], priors: Tensor) -> dict[str, Tensor]:
        check_head_outputs(loc, logits, targets, priors)
        loc, logits = loc.float(), logits.float()
        B, P, C = logits.shape
        matched = match_targets(targets, priors.to(loc.device), self.matcher, self.box_coder, num_classes=C)
        positive = matched.positive
        normaliser = positive.sum().clamp(min=1).float()

        loc_term = smooth_l1_sum(loc, matched, self.smooth_l1_beta) / normaliser
        flat_logits, flat_labels = logits.reshape(B * P, C), matched.labels.reshape(B * P)
        with torch.no_grad():  # the ranking needs every prior's loss, but no gradient
            ranking = F.cross_entropy(flat_logits, flat_labels, reduction="none").view(B, P)
        chosen = (positive | hard_negatives(ranking, positive, self.neg_pos_ratio, self.min_negatives)).flatten()
        # The differentiable term only on the chosen priors (about 4 per positive, a few % of B * P):
        # backward then touches those rows, not the whole [B, P, C] softmax. Row by row the same values.
        index = chosen.nonzero().squeeze(1)
        ce = F.cross_entropy(flat_logits.index_select(0, index), flat_labels.index_select(0, index), reduction="sum")
        cls_term = ce / normaliser
        loc_term = self.loc_weight * loc_term
        return {"loc": loc_term, "cls": cls_term, "loss": loc_term + cls_term}

    def extra_repr(self) -> str:
        return (
            f"neg_pos_ratio={self.neg_pos_ratio}, min_negatives={self.min_negatives}, "
            f"loc_weight={self.loc_weight}, smooth_l1_beta={self.smooth_l1_beta}"
        )
