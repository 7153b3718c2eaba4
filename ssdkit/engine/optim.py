"""The optimizer of a run: SGD with momentum or AdamW, with a separate weight decay for
norm layers' weights and all biases when `norm_weight_decay` is set."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["param_groups", "build_optimizer", "scaled_lr"]

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(model: nn.Module, weight_decay: float, norm_weight_decay: Optional[float]) -> list[dict]:
    """One group, or two when norm/bias parameters get their own decay (in module order, so that
    the optimizer state lines up the same way on every run)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if norm_weight_decay is None or norm_weight_decay == weight_decay:
        return [{"params": params, "weight_decay": weight_decay}]
    special: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, _NORMS) or name == "bias":
                special.add(id(p))
    decay = [p for p in params if id(p) not in special]
    no_decay = [p for p in params if id(p) in special]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": norm_weight_decay}]


def scaled_lr(lr: float, total_batch: int, reference_batch: Optional[int]) -> float:
    """The linear scaling rule (Goyal et al., 2017): `lr` was set for `reference_batch` pictures per
    step, so a step of `total_batch` pictures (batch per process x processes) uses
    lr * total_batch / reference_batch. No reference: `lr` as given."""
    if reference_batch is None:
        return lr
    return lr * total_batch / reference_batch


def build_optimizer(model: nn.Module, cfg, lr: Optional[float] = None) -> torch.optim.Optimizer:
    """`cfg`: a TrainConfig (optimizer, lr, momentum, nesterov, betas, weight_decay, norm_weight_decay);
    `lr`: the rate to use instead of cfg.lr (the scaled one)."""
    groups = param_groups(model, cfg.weight_decay, cfg.norm_weight_decay)
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas))
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: sgd, adamw")
