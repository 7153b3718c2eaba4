"""Batches: `Batch`, the collate function and the epoch-seeded sampler."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

from ssdkit.data.pipeline import Skipped

__all__ = ["unpack_batch", "Batch", "Collate", "EpochSampler"]


PER_BOX = ("boxes", "labels", "difficult", "iscrowd")


class Batch(NamedTuple):
    """images `[B, 3, H, W]` float32 network input; targets: B dicts ("boxes" `[G, 4]` xyxy in [0, 1],
    "labels" `[G]` int64 in 1..C-1, "difficult", "iscrowd" `[G]` bool, "image_id", "orig_size" (h, w),
    "path"); skipped: items of this batch left out as unreadable (B may then be 0)."""

    images: Tensor
    targets: list[dict[str, Any]]
    skipped: int = 0

    def __reduce__(self) -> tuple[Any, ...]:
        # Leaving a worker, every tensor costs a shared-memory file and a few syscalls; four small
        # tensors per picture made the main process spend more time receiving a batch than a
        # worker spent making it. So the per-box tensors travel concatenated, split on arrival.
        return (_unpack, (self.images, *_pack(self.targets), self.skipped))


def unpack_batch(batch: Any) -> tuple[Tensor, list[dict[str, Any]], int]:
    """(images `[B, 3, H, W]`, targets, skipped items) of a `Batch`, or of a plain (images, targets)
    or (images, targets, skipped) tuple that a loader of the user's own yields; a TypeError otherwise."""
    if isinstance(batch, Batch):
        return batch.images, batch.targets, int(batch.skipped)
    if hasattr(batch, "images") and hasattr(batch, "targets"):
        return batch.images, batch.targets, int(getattr(batch, "skipped", 0))
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        return batch[0], batch[1], int(batch[2]) if len(batch) == 3 else 0
    raise TypeError(f"the loader must yield ssdkit.data.Batch or (images, targets) pairs, got {type(batch).__name__}")


def _pack(targets: list[dict[str, Any]]) -> tuple[dict[str, Tensor], list[int], list[dict[str, Any]]]:
    keys = [k for k in PER_BOX if targets and all(isinstance(t.get(k), Tensor) for t in targets)]
    counts = [len(t[keys[0]]) for t in targets] if keys else []
    if keys and not all(len(t[k]) == n for t, n in zip(targets, counts, strict=True) for k in keys):
        keys, counts = [], []  # not one entry per box: send as they are
    joined = {k: torch.cat([t[k] for t in targets]) for k in keys}
    rest = [{k: v for k, v in t.items() if k not in joined} for t in targets]
    return joined, counts, rest


def _unpack(
    images: Tensor, joined: dict[str, Tensor], counts: list[int], rest: list[dict[str, Any]], skipped: int
) -> Batch:
    parts = {k: v.split(counts) for k, v in joined.items()}
    targets = [{**{k: parts[k][i] for k in parts}, **r} for i, r in enumerate(rest)]
    return Batch(images, targets, skipped)


class Collate:
    """`ModelInputs` items -> `Batch`, dropping and counting `Skipped` ones (a class, not a closure,
    so that workers started by spawn can unpickle it)."""

    def __init__(self, image_size: tuple[int, int]) -> None:
        self.image_size = (int(image_size[0]), int(image_size[1]))

    def __call__(self, items: list[Any]) -> Batch:
        kept = [it for it in items if not isinstance(it, Skipped)]
        if kept:
            images = torch.stack([x for x, _ in kept])
        else:
            images = torch.empty(0, 3, *self.image_size)
        return Batch(images, [t for _, t in kept], len(items) - len(kept))


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 2**32 - 1]).generate_state(1, dtype=np.uint64)[0] >> 1)


class EpochSampler(DistributedSampler):
    """Yields `(index, epoch)`; the order depends only on (seed, epoch), set by `set_epoch(epoch)`.

    The epoch travels with each index so that a worker seeds the item's augmentation from
    (seed, epoch, index). With world_size > 1 each rank takes every world_size-th index of the
    shared order. `pad=True` (training) repeats indices so every rank gets the same count;
    `pad=False` (evaluation) gives each item to exactly one rank, counts differing by at most one.
    """

    def __init__(
        self, size: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1, pad: bool = True
    ) -> None:
        super().__init__(range(size), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        self.size = size
        self.pad = pad
        if pad:
            self.num_samples = math.ceil(size / world_size)
        else:
            self.num_samples = len(range(rank, size, world_size))
        self.total_size = self.num_samples * world_size if pad else size

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(_epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        if self.pad and self.total_size > self.size and self.size > 0:
            extra = self.total_size - self.size
            order += (order * math.ceil(extra / self.size))[:extra]
        mine = order[self.rank : self.total_size : self.num_replicas]
        epoch = self.epoch
        return iter([(i, epoch) for i in mine])

    def __len__(self) -> int:
        return self.num_samples
