"""Device names as users write them (`train.device`, `--device`): checked once, with a message
listing what is accepted."""

from __future__ import annotations

import re

import torch

__all__ = ["check_device_name", "resolve_device"]

_NAME = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")


def check_device_name(name: str) -> str:
    """`name` if it is 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; ValueError otherwise (also for
    'meta' and other torch device types a detector cannot run on)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name.strip()):
        raise ValueError(
            f"device {name!r} is not one ssdkit runs on: give 'auto' (CUDA when there is one), 'cpu', 'cuda', "
            "'cuda:N' or 'mps'"
        )
    return name.strip()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> this process's CUDA device when there is one, else CPU; a device that this machine
    lacks is a ValueError saying so."""
    name = check_device_name(name)
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} but no CUDA device is available; use 'cpu' or 'auto'")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
        elif device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} but no Apple MPS device is available; use 'cpu' or 'auto'")
    return device
