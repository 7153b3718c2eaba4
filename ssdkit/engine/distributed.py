"""Data-parallel helpers: read torchrun's environment, start and end the process group.

One config file serves one process or many: under `torchrun` every process reads the
same file; `RANK`, `WORLD_SIZE` and `LOCAL_RANK` in the environment say which one it is.
NCCL is used when the processes train on CUDA devices, gloo otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "from_env", "init", "cleanup", "barrier", "all_reduce_sum", "broadcast_object"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: `rank` of `world_size` processes, `local_rank` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files and shows progress."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer (set by torchrun)") from None


def from_env() -> DistInfo:
    """The process's place as torchrun describes it (one process when the variables are unset)."""
    info = DistInfo(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    if not 0 <= info.rank < info.world_size:
        raise ValueError(f"RANK={info.rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={info.world_size})")
    return info


def init(info: DistInfo, device: torch.device) -> bool:
    """Start the default process group when there are several processes; returns whether this call
    started it (so that only the starter tears it down). Rendezvous comes from torchrun's
    MASTER_ADDR / MASTER_PORT."""
    if not info.distributed or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {"backend": backend, "rank": info.rank, "world_size": info.world_size}
    if device.type == "cuda":
        kwargs["device_id"] = device
    dist.init_process_group(**kwargs)
    return True


def cleanup(started: bool) -> None:
    if started and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over the processes, in place (a no-op in one process)."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every process (picklable objects made by ssdkit itself only)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
