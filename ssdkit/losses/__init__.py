"""Losses (registry `LOSSES`): "multibox" (the SSD loss, the default) and "focal".

A built loss (`model.loss`) is called `loss(loc [B, P, 4], logits [B, P, C], targets, priors [P, 4] cxcywh)`
and returns float32 scalars {"loc", "cls", "loss" = their sum}; `targets` holds one dict per
image with `boxes [G, 4]` xyxy normalised to [0, 1] and `labels [G]` int64 in 1 .. C - 1.
"""

from ssdkit.losses.focal import FocalLoss, FocalLossConfig
from ssdkit.losses.multibox import MultiboxLoss, MultiboxLossConfig, hard_negatives, num_hard_negatives
from ssdkit.losses.targets import MatchedTargets, PaddedTargets, match_targets, pad_targets

__all__ = [
    "FocalLoss",
    "FocalLossConfig",
    "MultiboxLoss",
    "MultiboxLossConfig",
    "MatchedTargets",
    "PaddedTargets",
    "hard_negatives",
    "num_hard_negatives",
    "match_targets",
    "pad_targets",
]
