"""Ranking arithmetic shared by post-processing (`ssdkit.postprocess`) and metrics
(`ssdkit.evaluation.metrics`): the one definition of "by group, then by decreasing score"."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["order_by"]


def order_by(major: Tensor, scores: Tensor) -> Tensor:
    """Permutation sorting by `major` `[N]` (int64 >= 0, ascending), then by decreasing score
    `[N]` (> 0); ties keep their input order."""
    if scores.dtype == torch.float32 and major.numel() and int(major.max()) < 2**31 and bool(scores.min() > 0):
        # Positive float32 values order like their bit patterns: one integer sort on a
        # combined key instead of two stable sorts.
        key = (major << 31) | (0x7FFFFFFF - scores.view(torch.int32)).long()
        return torch.argsort(key, stable=True)
    by_score = torch.argsort(scores, descending=True, stable=True)
    return by_score.index_select(0, torch.argsort(major.index_select(0, by_score), stable=True))
