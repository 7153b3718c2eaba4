"""Groups of boxes for batched overlaps (the IoU itself is `ssdkit.boxes.iou_rows`): boxes of
different groups are never compared.

Boxes arrive sorted by group (and, inside a group, by decreasing score), so each group
is a contiguous run. `group_chunks` takes groups largest first in chunks of similar
size, each padded to `[m, K]` (K = the chunk's largest group) with `m * K * K` bounded,
so `[m, K, K]` IoU matrices stay small and little work goes into padding, however
uneven the groups are.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

# IoU entries per chunk: a few float32 temporaries of this size stay in a CPU's cache.
ENTRIES_PER_CHUNK = 1 << 20


def padded_groups(groups: Tensor) -> tuple[Tensor, Tensor]:
    """groups `[N]` sorted -> (index `[G, K]` of box numbers, valid `[G, K]`): row g lists
    group g's boxes in order, padded past its end (index 0, valid False); K = largest group."""
    _, counts = torch.unique_consecutive(groups, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    span = torch.arange(int(counts.max()), device=groups.device)
    valid = span < counts[:, None]
    return (starts[:, None] + span).where(valid, 0), valid


def group_chunks(groups: Tensor, max_entries: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """groups `[N]` sorted -> chunks (index `[m, K]` of box numbers, valid `[m, K]`): row r
    lists one group's boxes in order, padded past the group's end (padding index 0,
    valid False). Every group is in exactly one chunk; `m * K * K <= max_entries`
    unless a single group is larger."""
    if groups.numel() == 0:
        return
    max_entries = ENTRIES_PER_CHUNK if max_entries is None else max_entries
    device = groups.device
    _, counts = torch.unique_consecutive(groups, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    by_size = torch.argsort(counts, descending=True, stable=True)
    counts, starts = counts[by_size], starts[by_size]
    sizes = counts.tolist()
    first = 0
    while first < len(sizes):
        k = sizes[first]
        last = min(len(sizes), first + max(1, max_entries // (k * k)))
        span = torch.arange(k, device=device)
        valid = span < counts[first:last, None]
        yield (starts[first:last, None] + span).where(valid, 0), valid
        first = last


def gather_padded(rows: Tensor, index: Tensor, valid: Tensor) -> Tensor:
    """rows `[5, N]`, index/valid `[m, K]` -> `[5, m, K]`; padding gets zero coordinates
    and area, hence zero intersection and an IoU of 0 or NaN: never above a threshold."""
    m, k = index.shape
    return rows.index_select(1, index.view(-1)).view(5, m, k).where(valid, rows.new_zeros(()))
