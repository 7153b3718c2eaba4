"""The training loader's batches as the trainer reads them: unpacked, on the device, and, when a run
resumes in the middle of an epoch, without the batches that epoch already gave (their pictures
are not loaded). Starting a loader's iterator draws from the global RNGs; `rng_kept` keeps them
where they were, so a resumed run draws the same numbers as one never interrupted.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

from ssdkit.engine.checkpoint import rng_state, set_rng_state

__all__ = ["rng_kept", "resumed_loader", "to_device"]


@contextlib.contextmanager
def rng_kept() -> Iterator[None]:
    """Run a block without moving the global RNGs (starting a data loader iterator draws from them)."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class _SkipBatches:
    """A batch sampler without its first `skip` batches: resuming mid-epoch loads no skipped pictures."""

    def __init__(self, batch_sampler: Any, skip: int) -> None:
        self.batch_sampler = batch_sampler
        self.skip = skip

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.batch_sampler)
        for _ in range(self.skip):
            if next(it, None) is None:
                return
        yield from it

    def __len__(self) -> int:
        return max(len(self.batch_sampler) - self.skip, 0)


class _DropFirst:
    """A loader we cannot rebuild, without its first `skip` batches (they are loaded and dropped)."""

    def __init__(self, loader: Any, skip: int) -> None:
        self.loader, self.skip = loader, skip

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        for _ in range(self.skip):
            next(it, None)
        yield from it


def resumed_loader(loader: Any, skip: int) -> Any:
    """`loader` starting at batch `skip` of its current epoch."""
    if skip == 0:
        return loader
    from torch.utils.data import DataLoader

    if not isinstance(loader, DataLoader) or loader.batch_sampler is None:
        return _DropFirst(loader, skip)
    kwargs: dict[str, Any] = {
        "batch_sampler": _SkipBatches(loader.batch_sampler, skip),
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "worker_init_fn": loader.worker_init_fn,
        "generator": loader.generator,
        "timeout": loader.timeout,
        "multiprocessing_context": loader.multiprocessing_context,
    }
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    return DataLoader(loader.dataset, **kwargs)


def to_device(targets: Sequence[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    """The targets' tensors (boxes (N, 4), labels (N,), ...) moved to `device`; other values as they are."""
    return [
        {k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in t.items()} for t in targets
    ]
