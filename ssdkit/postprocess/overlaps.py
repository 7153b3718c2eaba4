"""Batched overlaps inside groups of boxes; boxes of different groups are never compared.

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


def box_rows(boxes: Tensor) -> Tensor:
    """boxes `[N, 4]` xyxy -> `[5, N]` contiguous rows x1, y1, x2, y2, area."""
    rows = boxes.t()
    area = (rows[2] - rows[0]) * (rows[3] - rows[1])
    return torch.cat((rows, area[None]), dim=0).contiguous()


def iou_rows(a: Tensor, b: Tensor) -> Tensor:
    """IoU of rows (x1, y1, x2, y2, area) `a [5, ...]` and `b [5, ...]`, broadcast -> `[...]`.

    Same arithmetic as torchvision's NMS kernel, inter / (area_a + area_b - inter), so a
    pair on the threshold is decided the same way; an empty union gives NaN, which
    compares false there too.
    """
    w = torch.minimum(a[2], b[2]).sub_(torch.maximum(a[0], b[0])).clamp_(min=0)
    h = torch.minimum(a[3], b[3]).sub_(torch.maximum(a[1], b[1])).clamp_(min=0)
    inter = w.mul_(h)
    return inter.div_((a[4] + b[4]).sub_(inter))


def padded_groups(groups: Tensor) -> tuple[Tensor, Tensor]:
    """groups `[N]` sorted -> (index `[G, K]` of box numbers, valid `[G, K]`): row g lists
    group g's boxes in order, padded past its end (index 0, valid False); K = largest group."""
    _, counts = torch.unique_consecutive(groups, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    span = torch.arange(int(counts.max()), device=groups.device)
    valid = span < counts[:, None]
    return (starts[:, None] + span).where(valid, 0), valid


def above(x: Tensor, threshold: float) -> Tensor:
    """`x > threshold` with the threshold taken exactly (as float64), like torchvision's
    C++ NMS kernel compares, not rounded to x's dtype (a float32 IoU of exactly 0.3f would
    otherwise not count as above 0.3). x > t holds exactly when x exceeds the largest
    value of x's dtype that is <= t."""
    t = torch.tensor(threshold, dtype=torch.float64)
    low = t.to(x.dtype)
    if low.double() > t:
        low = torch.nextafter(low, torch.tensor(float("-inf"), dtype=x.dtype))
    return x > low.to(x.device)


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
