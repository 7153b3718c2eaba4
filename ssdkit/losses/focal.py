"""Focal loss (Lin et al. 2017) over every prior: an alternative to hard-negative mining."""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ssdkit.losses.localisation import giou_sum, smooth_l1_sum
from ssdkit.losses.targets import check_head_outputs, match_targets
from ssdkit.registry import LOSSES, ComponentConfig, part_config
from ssdkit.roles import BoxCoder, Matcher

__all__ = ["FocalLoss", "FocalLossConfig", "sigmoid_focal", "softmax_focal"]

# (1 - p_t) ** gamma has an infinite derivative at 0 for gamma < 1; keeping the base above the
# smallest normal float keeps the backward pass finite for a perfectly confident prior.
_TINY = torch.finfo(torch.float32).tiny


def sigmoid_focal(logits: Tensor, labels: Tensor, alpha: Optional[float], gamma: float) -> Tensor:
    """Per-entry sigmoid focal loss `[..., C]` for logits `[..., C]` and class targets `[...]`.

    Every column is an independent binary problem with target one_hot(label), column 0 included (a
    "background" detector). The columns are not a distribution, so a model trained this way scores with
    independent sigmoids, not a softmax: `build_model` reads the loss's `score_activation` ("sigmoid")
    and `SSD.scores` applies it.
    An entry whose target is 1 is weighted `alpha`, one whose target is 0 `1 - alpha`.
    """
    is_target = labels.unsqueeze(-1) == torch.arange(logits.shape[-1], device=labels.device)
    # z = the logit of the wrong answer: binary cross-entropy is softplus(z) and 1 - p_t is
    # sigmoid(z), both stable for any z and with no full-size one-hot float tensor.
    z = torch.where(is_target, -logits, logits)
    loss = F.softplus(z)
    if gamma != 0:
        loss = loss * torch.sigmoid(z).clamp(min=_TINY).pow(gamma)
    return loss if alpha is None else loss * torch.where(is_target, alpha, 1.0 - alpha)


def softmax_focal(logits: Tensor, labels: Tensor, alpha: Optional[float], gamma: float) -> Tensor:
    """Per-prior softmax focal loss `[...]` for logits `[..., C]` and class targets `[...]`:
    -alpha_t (1 - p_t)^gamma log p_t, p_t the softmax probability of the target class;
    alpha_t = `alpha` for an object prior (label > 0), `1 - alpha` for background."""
    log_pt = torch.gather(F.log_softmax(logits, dim=-1), -1, labels.unsqueeze(-1)).squeeze(-1)
    loss = -log_pt
    if gamma != 0:
        one_minus_pt = -torch.expm1(log_pt)  # exact for p_t near 1, where 1 - exp() would round to 0
        loss = loss * one_minus_pt.clamp(min=_TINY).pow(gamma)
    return loss if alpha is None else loss * torch.where(labels > 0, alpha, 1.0 - alpha)


class FocalLossConfig(ComponentConfig):
    type: str = "focal"
    mode: Literal["sigmoid", "softmax"] = Field(
        "sigmoid", description="sigmoid: one binary focal term per class column; softmax: one per prior"
    )
    alpha: Optional[float] = Field(
        0.25, ge=0, le=1, description="weight of object targets (background gets 1 - alpha); null: no weighting"
    )
    gamma: float = Field(2.0, ge=0, description="focusing exponent; 0 gives (alpha-weighted) cross-entropy")
    loc_loss: Literal["smooth_l1", "giou"] = Field(
        "smooth_l1", description="smooth_l1 on encoded offsets, or 1 - GIoU on decoded boxes"
    )
    loc_weight: float = Field(1.0, ge=0, description="weight of the localisation term in the sum")
    smooth_l1_beta: float = Field(1.0, ge=0, description="smooth-L1 switch point (loc_loss=smooth_l1 only)")
    prior_probability: Optional[float] = Field(
        0.01,
        gt=0,
        lt=1,
        description=(
            "sigmoid mode: the head's class biases start at -log((1 - p) / p), so that every prior starts "
            "scoring p for each object class (RetinaNet's prior) and 1 - p for background; null keeps the "
            "head's own init (zero biases: every score starts at 1/2, and the first classification losses are "
            "tens to thousands of times higher)"
        ),
    )


@LOSSES.register("focal")
class FocalLoss(nn.Module):
    """Focal classification loss over all priors plus a localisation term on positives.

    __call__(loc [B, P, 4] offsets, logits [B, P, C], targets list of B dicts {boxes [G, 4] xyxy
    normalised, labels [G] int64 in 1 .. C - 1}, priors [P, 4] cxcywh normalised)
      -> {"loc": loc_weight * L_loc / N, "cls": L_focal / N, "loss": their sum}, float32 scalars,
    with L_focal summed over every prior (and class column in sigmoid mode), L_loc summed over the
    positives (`ssdkit.losses.localisation`), N = positives in the batch, at least 1.
    """

    def __init__(self, cfg: FocalLossConfig | None = None, *, box_coder: BoxCoder, matcher: Matcher) -> None:
        super().__init__()
        self.config = cfg = part_config(cfg, FocalLossConfig)
        self.mode, self.alpha, self.gamma = cfg.mode, cfg.alpha, cfg.gamma
        self.loc_loss, self.loc_weight, self.smooth_l1_beta = cfg.loc_loss, cfg.loc_weight, cfg.smooth_l1_beta
        self.prior_probability = cfg.prior_probability
        self.box_coder, self.matcher = box_coder, matcher

    @property
    def score_activation(self) -> str:
        """How the trained logits become scores at inference (`SSD.scores`)."""
        return self.mode

    def initial_class_bias(self, num_classes: int) -> Optional[Tensor]:
        """`[num_classes]` biases for the head's class logits at the start of training, or None (softmax
        mode, or `prior_probability` null): object columns at logit(p), so that the many easy negatives
        do not swamp the first steps (Lin et al. 2017, section 4.1); column 0, trained here as a
        background detector that nearly every prior answers yes to, at logit(1 - p) for the same reason."""
        if self.mode != "sigmoid" or self.prior_probability is None:
            return None
        p = self.prior_probability
        bias = torch.full((num_classes,), -math.log((1 - p) / p))
        bias[0] = -bias[0]
        return bias

    def forward(self, loc: Tensor, logits: Tensor, targets: list[dict[str, Any]], priors: Tensor) -> dict[str, Tensor]:
        check_head_outputs(loc, logits, targets, priors)
        loc, logits = loc.float(), logits.float()
        priors = priors.to(device=loc.device, dtype=torch.float32)
        matched = match_targets(targets, priors, self.matcher, self.box_coder, num_classes=logits.shape[-1])
        normaliser = matched.positive.sum().clamp(min=1).float()

        focal = sigmoid_focal if self.mode == "sigmoid" else softmax_focal
        cls_term = focal(logits, matched.labels, self.alpha, self.gamma).sum() / normaliser
        if self.loc_loss == "giou":
            loc_sum = giou_sum(loc, matched, priors, self.box_coder)
        else:
            loc_sum = smooth_l1_sum(loc, matched, self.smooth_l1_beta)
        loc_term = self.loc_weight * loc_sum / normaliser
        return {"loc": loc_term, "cls": cls_term, "loss": loc_term + cls_term}

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode}, alpha={self.alpha}, gamma={self.gamma}, loc_loss={self.loc_loss}, "
            f"loc_weight={self.loc_weight}, prior_probability={self.prior_probability}"
        )
