"""Learning-rate schedule per optimizer step: linear warm-up, then multi-step or cosine decay.

The factor that multiplies the base learning rate at step s (0-based, s optimizer steps done):

- warm-up, s < W: `warmup_factor + (1 - warmup_factor) * s / W`, times the decay below;
- multistep: `gamma ** k`, k = milestones passed (a milestone is a fraction of the total steps);
- cosine: `min_factor + (1 - min_factor) * (1 + cos(pi * t)) / 2`, t = (s - W) / (T - W) in [0, 1];
- constant: 1.

It is a pure function of the step, so a resumed run continues from the restored step alone.
"""

from __future__ import annotations

import bisect
import math
from typing import Literal

import torch

__all__ = ["lr_factor", "build_scheduler"]


def lr_factor(
    step: int,
    *,
    total_steps: int,
    schedule: Literal["multistep", "cosine", "constant"],
    warmup_steps: int = 0,
    warmup_factor: float = 0.001,
    milestones: tuple[float, ...] = (),
    gamma: float = 0.1,
    min_factor: float = 0.0,
) -> float:
    """The multiplier of the base learning rate after `step` optimizer steps."""
    if schedule == "multistep":
        marks = sorted(round(m * total_steps) for m in milestones)
        decay = gamma ** bisect.bisect_right(marks, step)
    elif schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        t = min(max(step - warmup_steps, 0) / span, 1.0)
        decay = min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
    elif schedule == "constant":
        decay = 1.0
    else:
        raise ValueError(f"unknown schedule {schedule!r}; known: multistep, cosine, constant")
    if step < warmup_steps:
        decay *= warmup_factor + (1.0 - warmup_factor) * step / warmup_steps
    return decay


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, total_steps: int, **kwargs
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping once per optimizer step; `kwargs` as in `lr_factor`.

    The lambda is a closure (not an object), so the scheduler's state_dict holds only numbers.
    """

    def factor(step: int) -> float:
        return lr_factor(step, total_steps=total_steps, **kwargs)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
