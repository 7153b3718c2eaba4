"""Hard (greedy) NMS, exact, for every image and class in one batched pass."""

from __future__ import annotations

import torch
from torch import Tensor

from ssdkit.boxes import above, box_rows, iou_rows
from ssdkit.postprocess.base import PostprocessConfig, Postprocessor
from ssdkit.postprocess.overlaps import gather_padded, group_chunks
from ssdkit.registry import POSTPROCESS, part_config

# Leader passes (see `HardNMS.suppress`) stop once a pass removes fewer than
# LEADER_MIN_DROPS boxes per group still open, or after MAX_LEADER_PASSES passes.
MAX_LEADER_PASSES = 16
LEADER_MIN_DROPS = 1.0


class HardNMSConfig(PostprocessConfig):
    type: str = "hard"


def greedy_keep(n: int, first: Tensor, second: Tensor) -> Tensor:
    """Greedy NMS on an overlap graph -> keep mask `[n]`. Boxes 0..n-1 are in decreasing
    score order inside each group; edge e, first[e] < second[e], means "box first[e]
    suppresses box second[e] if kept".

    Box j is kept iff no kept box before it overlaps it. Each pass recomputes every box
    from the previous pass's mask; a box is final once all boxes before it are, so the
    passes reach the unique fixed point -- the greedy result -- after at most (longest
    chain of overlaps + 1) passes, usually two or three, each costing O(edges).
    """
    keep = torch.ones(n, dtype=torch.bool, device=first.device)
    for _ in range(n + 1):
        suppressed = torch.zeros_like(keep)
        suppressed[second[keep[first]]] = True
        if torch.equal(suppressed, ~keep):
            break
        keep = ~suppressed
    return keep


def greedy_by_matrix(rows: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """rows `[5, N]` (see `box_rows`), groups `[N]` sorted, boxes in score order inside a
    group -> greedy keep mask `[N]`, from every pair's IoU."""
    first, second = [], []
    for index, valid in group_chunks(groups):
        k = index.shape[1]
        if k < 2:  # chunks come largest first: only single boxes are left
            break
        padded = gather_padded(rows, index, valid)
        # Boxes are in decreasing score order: only earlier boxes suppress later ones.
        later = torch.ones(k, k, dtype=torch.bool, device=index.device).triu_(1)
        over = above(iou_rows(padded[..., :, None], padded[..., None, :]), iou_threshold).logical_and_(later)
        g, a, b = over.nonzero(as_tuple=True)
        first.append(index[g, a])
        second.append(index[g, b])
    n = groups.numel()
    if not first:
        return torch.ones(n, dtype=torch.bool, device=groups.device)
    return greedy_keep(n, torch.cat(first), torch.cat(second))


@POSTPROCESS.register("hard")
class HardNMS(Postprocessor):
    """Greedy NMS per image and class, like torchvision's `batched_nms`: a box is dropped
    when a higher-scoring kept box of its group overlaps it with IoU > iou_threshold.

    Only boxes of one group are compared; a single `nms` call over the whole batch with
    a per-group coordinate offset would compare every pair of the batch.
    """

    causal = True

    def __init__(self, cfg: HardNMSConfig | None = None) -> None:
        super().__init__(part_config(cfg, HardNMSConfig))

    def suppress(self, boxes: Tensor, scores: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
        n = scores.numel()
        device = scores.device
        rows = box_rows(boxes)
        # Leader passes: the first undecided box of every group is kept (all boxes before
        # it are decided and none of the kept ones overlaps it) and drops the undecided
        # boxes it overlaps. A few passes clear the clusters of near-duplicates a trained
        # detector emits around each object, in O(N) each; the pairwise IoU matrices then
        # only see what is left.
        _, counts = torch.unique_consecutive(groups, return_counts=True)
        run = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts)
        pos = torch.arange(n, device=device)
        undecided = torch.ones(n, dtype=torch.bool, device=device)
        keep = torch.zeros(n, dtype=torch.bool, device=device)
        for _ in range(MAX_LEADER_PASSES):
            first = torch.full((counts.numel(),), n, dtype=torch.long, device=device)
            first.scatter_reduce_(0, run, pos.where(undecided, n), "amin")
            open_groups = int((first < n).sum())
            if open_groups == 0:
                break
            leader = first.index_select(0, run)
            live = leader < n
            is_leader = pos == leader
            over = above(iou_rows(rows, rows.index_select(1, leader.clamp(max=n - 1))), self.iou_threshold)
            dropped = over & undecided & ~is_leader & live
            keep |= is_leader
            undecided &= ~(is_leader | dropped)
            if int(dropped.sum()) < LEADER_MIN_DROPS * open_groups:  # the matrix is cheaper now
                break
        rest = undecided.nonzero().squeeze(1)
        if rest.numel():
            kept_rest = greedy_by_matrix(rows.index_select(1, rest), groups.index_select(0, rest), self.iou_threshold)
            keep[rest[kept_rest]] = True
        kept = keep.nonzero().squeeze(1)
        kept = kept.index_select(0, torch.argsort(scores.index_select(0, kept), descending=True, stable=True))
        return kept, scores.index_select(0, kept)
