"""Shared post-processing: candidate selection for a whole batch, then suppression.

Subclasses registered in `POSTPROCESS` implement `suppress` only. Every step works on all
images and classes at once: no Python loop over either.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, ClassVar, Literal, Union

import torch
from pydantic import Field
from torch import Tensor

from ssdkit.boxes import clip_boxes
from ssdkit.ranking import order_by
from ssdkit.registry import ComponentConfig

Detections = dict[str, Tensor]  # boxes [N, 4] xyxy, scores [N], labels [N] int64
# Boxes of every prior `[B, P, 4]`, or a function (image index [N], prior index [N]) -> `[N, 4]`
# that decodes only the boxes asked for.
BoxSource = Union[Tensor, Callable[[Tensor, Tensor], Tensor]]

# Slack (in log space) of the logit pre-filter in `from_logits`, far above float rounding.
_LOGIT_MARGIN = 1e-3


class PostprocessConfig(ComponentConfig):
    score_threshold: float = Field(0.01, ge=0, lt=1, description="drop class scores <= this")
    top_k: int = Field(400, ge=1, le=100_000, description="candidates kept per image and class before NMS")
    iou_threshold: float = Field(0.45, gt=0, le=1, description="NMS overlap threshold")
    max_detections: int = Field(200, ge=1, le=100_000, description="detections kept per image")
    clip: Literal["before_nms", "after_nms"] = Field(
        "before_nms",
        description="clip boxes to the image before NMS (torchvision), or after it, dropping boxes "
        "left with no area (TF OD API)",
    )


def rank_in_runs(keys: Tensor, num_keys: int) -> Tensor:
    """keys `[N]` sorted, values in [0, num_keys) -> position of each element inside its run."""
    counts = torch.bincount(keys, minlength=num_keys)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(keys.numel(), device=keys.device) - starts.index_select(0, keys)


def _where(mask: Tensor) -> Tensor:
    return mask.nonzero().squeeze(1)


def flat_nonzero(mask: Tensor, limit: int) -> Tensor | None:
    """Positions of the True entries of a bool tensor, flattened, ascending; None when
    there are more than `limit` of them (found out cheaply).

    On the CPU a first pass over 64-bit words (8 entries each) finds the words holding
    anything, and only those are searched: about twice as fast as `nonzero` on a sparse mask.
    """
    flat = mask.reshape(-1)
    if flat.device.type != "cpu" or flat.numel() < 4096:
        found = _where(flat)
        return found if found.numel() <= limit else None
    pad = (-flat.numel()) % 8
    if pad or flat.storage_offset() % 8:
        flat = torch.cat((flat, flat.new_zeros(pad)))
    words = _where(flat.view(torch.uint8).view(torch.int64) != 0)
    if words.numel() > limit:
        return None
    word, bit = flat.view(-1, 8).index_select(0, words).nonzero(as_tuple=True)
    found = words.index_select(0, word).mul_(8).add_(bit)
    return found if found.numel() <= limit else None


def warn_non_finite(values: Tensor, what: str) -> None:
    """Warn (RuntimeWarning) when `values` `[B, ...]` hold NaN or inf, which post-processing drops."""
    # One cheap reduction in the normal case: any NaN or inf makes the sum NaN or inf.
    if bool(torch.isfinite(values.sum())):
        return
    bad = ~torch.isfinite(values)
    if not bool(bad.any()):  # the sum overflowed; every value is finite
        return
    images = _where(bad.flatten(1).any(dim=1)).tolist()
    warnings.warn(
        f"post-processing: {int(bad.sum())} {what} are NaN or infinite (images {images[:10]}"
        f"{' ...' if len(images) > 10 else ''}); every (prior, class) score that is not a finite number "
        "is dropped, so no NaN box or score reaches the detections",
        RuntimeWarning,
        stacklevel=3,
    )


class Postprocessor:
    """boxes [B, P, 4] xyxy (normalised), probs [B, P, C] (class 0 = background)
    -> one dict per image: boxes [N, 4] xyxy normalised (clipped to [0, 1]), scores [N],
    labels [N] int64 in 1..C-1, sorted by decreasing score, N <= max_detections.

    Candidates are the (prior, class) pairs scoring above `score_threshold`, at most
    `top_k` per image and class (the highest), as in torchvision's SSD; a candidate whose
    score or box is NaN or infinite is dropped (a box only after the top-k, which is taken
    on scores). `suppress` then runs on all images and classes together.
    """

    # True when suppression is causal: whether a box survives depends only on the
    # higher-scoring boxes of its group (greedy NMS). An image's result is then settled
    # by its best candidates alone once max_detections of them survive, and the other
    # candidates need never be decoded or compared.
    causal: ClassVar[bool] = False

    def __init__(self, cfg: PostprocessConfig) -> None:
        """cfg: the settings (a subclass of `PostprocessConfig`, which holds their defaults and bounds)."""
        self.config = cfg
        self.score_threshold, self.top_k, self.iou_threshold = cfg.score_threshold, cfg.top_k, cfg.iou_threshold
        self.max_detections, self.clip = cfg.max_detections, cfg.clip

    def suppress(self, boxes: Tensor, scores: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
        """boxes [N, 4] xyxy, scores [N], groups [N] (boxes of two groups are never compared),
        sorted by group and, inside a group, by decreasing score
        -> (indices kept [K] sorted by decreasing returned score, their scores [K])."""
        raise NotImplementedError

    # ---------- entry points ----------
    def __call__(self, boxes: BoxSource, probs: Tensor) -> list[Detections]:
        """boxes: `[B, P, 4]` xyxy normalised (or a decoding function, see `BoxSource`);
        probs `[B, P, C]` class scores."""
        warn_non_finite(probs, "class scores")
        return self._from_probs(boxes, probs)

    def _from_probs(self, boxes: BoxSource, probs: Tensor) -> list[Detections]:
        B, P, C = probs.shape
        flat = flat_nonzero(probs[..., 1:] > self.score_threshold, self._dense_limit(B, C))
        if flat is None:
            # Most pairs pass (e.g. an untrained model): a top-k per (image, class) first is far
            # cheaper than sorting every pair.
            top, top_prior = probs[..., 1:].transpose(1, 2).topk(min(self.top_k, P), dim=2)
            flat = _where((top > self.score_threshold).view(-1))
            k = top.shape[2]
            group = flat.div(k, rounding_mode="floor")
            img, labels = group.div(C - 1, rounding_mode="floor"), group.remainder(C - 1) + 1
            prior = top_prior.reshape(-1).index_select(0, flat)
            return self._select(boxes, img, prior, labels, top.reshape(-1).index_select(0, flat), B, C)
        row, labels = flat.div(C - 1, rounding_mode="floor"), flat.remainder(C - 1) + 1
        scores = probs.reshape(-1).index_select(0, row * C + labels)
        return self._select(boxes, row.div(P, rounding_mode="floor"), row.remainder(P), labels, scores, B, C)

    def from_logits(self, boxes: BoxSource, logits: Tensor) -> list[Detections]:
        """Same as `self(boxes, softmax(logits))`, without the softmax of every prior.

        softmax(l)_c <= exp(l_c - l_0), so only pairs with l_c > l_0 + log(threshold) can
        pass; the softmax rows of their priors are computed exactly and thresholded as usual.
        """
        warn_non_finite(logits, "logits")
        B, P, C = logits.shape
        if self.score_threshold <= 0:
            return self._from_probs(boxes, torch.softmax(logits, dim=-1))
        bound = logits[..., :1] + (math.log(self.score_threshold) - _LOGIT_MARGIN)
        flat = flat_nonzero(torch.gt(logits[..., 1:], bound), self._dense_limit(B, C))
        if flat is None:
            return self._from_probs(boxes, torch.softmax(logits, dim=-1))
        row, labels = flat.div(C - 1, rounding_mode="floor"), flat.remainder(C - 1) + 1
        # A confident prior passes for many classes: one softmax per distinct prior.
        rows, which = torch.unique_consecutive(row, return_inverse=True)
        probs = torch.softmax(logits.reshape(B * P, C).index_select(0, rows), dim=-1)
        scores = probs.view(-1).index_select(0, which * C + labels)
        ok = _where(scores > self.score_threshold)
        row, labels, scores = row.index_select(0, ok), labels.index_select(0, ok), scores.index_select(0, ok)
        return self._select(boxes, row.div(P, rounding_mode="floor"), row.remainder(P), labels, scores, B, C)

    def _dense_limit(self, B: int, C: int) -> int:
        """Above this many candidates, take a top-k per (image, class) before anything else."""
        return max(B * (C - 1) * self.top_k, 1 << 16)

    # ---------- shared steps ----------
    def _select(
        self, boxes: BoxSource, img: Tensor, prior: Tensor, labels: Tensor, scores: Tensor, B: int, C: int
    ) -> list[Detections]:
        """Candidates (image, prior, label, score) `[N]` each -> detections per image."""
        ok = _where(torch.isfinite(scores))  # +inf passes any threshold
        img, prior, labels, scores = (t.index_select(0, ok) for t in (img, prior, labels, scores))
        if self.causal:
            kept, kept_scores, cand_boxes = self._suppress_best(boxes, img, prior, labels, scores, B, C)
        else:
            sub = self._top_k(img * C + labels, scores, B * C)
            cand_boxes = torch.zeros(img.numel(), 4, dtype=scores.dtype, device=scores.device)
            kept, kept_scores = self._suppress_subset(boxes, sub, img, prior, labels, scores, C, cand_boxes)
            by_image = order_by(img.index_select(0, kept), kept_scores)
            kept, kept_scores = kept.index_select(0, by_image), kept_scores.index_select(0, by_image)
        return self._per_image(img, labels, cand_boxes, kept, kept_scores, B)

    def _top_k(self, groups: Tensor, scores: Tensor, num_groups: int, subset: Tensor | None = None) -> Tensor:
        """Indices (of `subset`, or of all) sorted by group and decreasing score, at most top_k
        per group: the highest."""
        if subset is not None:
            groups, scores = groups.index_select(0, subset), scores.index_select(0, subset)
        order = order_by(groups, scores)
        order = order.index_select(0, _where(rank_in_runs(groups.index_select(0, order), num_groups) < self.top_k))
        return order if subset is None else subset.index_select(0, order)

    def _suppress_subset(
        self,
        boxes: BoxSource,
        sub: Tensor,
        img: Tensor,
        prior: Tensor,
        labels: Tensor,
        scores: Tensor,
        C: int,
        cand_boxes: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Decode the candidates `sub` (sorted by group, score) into `cand_boxes`, drop the
        non-finite, suppress -> (kept candidate indices, their scores)."""
        sub_img, sub_prior = img.index_select(0, sub), prior.index_select(0, sub)
        if callable(boxes):
            found = boxes(sub_img, sub_prior)
        else:
            b, p, _ = boxes.shape
            found = boxes.reshape(b * p, 4).index_select(0, sub_img * p + sub_prior)
        fine = _where(torch.isfinite(found).all(dim=1))
        sub, found = sub.index_select(0, fine), found.index_select(0, fine)
        clipped = clip_boxes(found)
        cand_boxes.index_copy_(0, sub, clipped)
        groups = img.index_select(0, sub) * C + labels.index_select(0, sub)
        after = self.clip == "after_nms"
        kept, kept_scores = self.suppress(found if after else clipped, scores.index_select(0, sub), groups)
        if after:  # a box wholly outside the picture still suppressed others, but is not a detection
            box = clipped.index_select(0, kept)
            has_area = _where((box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1]))
            kept, kept_scores = kept.index_select(0, has_area), kept_scores.index_select(0, has_area)
        return sub.index_select(0, kept), kept_scores

    def _suppress_best(
        self, boxes: BoxSource, img: Tensor, prior: Tensor, labels: Tensor, scores: Tensor, B: int, C: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Causal suppression of each image's best candidates, widening the cut only for the
        images where fewer than max_detections survive: the same result as suppressing all
        (see `causal`). -> (kept, their scores) sorted by image, then decreasing score."""
        n = scores.numel()
        device = scores.device
        # Ties sort in input order both here and in `_top_k`, so a cut by rank never separates
        # a box from a higher-ranked box of its group.
        by_image = order_by(img, scores)
        image_of = img.index_select(0, by_image)
        rank = rank_in_runs(image_of, B)
        total = torch.bincount(img, minlength=B)
        cand_boxes = torch.zeros(n, 4, dtype=scores.dtype, device=device)
        keep = torch.zeros(n, dtype=torch.bool, device=device)
        pending = torch.ones(B, dtype=torch.bool, device=device)
        cut = torch.full((B,), 3 * self.max_detections, dtype=torch.long, device=device)
        while True:
            best = by_image.index_select(
                0, _where(pending.index_select(0, image_of) & (rank < cut.index_select(0, image_of)))
            )
            sub = self._top_k(img * C + labels, scores, B * C, subset=best)
            kept, _ = self._suppress_subset(boxes, sub, img, prior, labels, scores, C, cand_boxes)
            kept_img = img.index_select(0, kept)
            count = torch.bincount(kept_img, minlength=B)
            settled = pending & ((count >= self.max_detections) | (total <= cut))
            keep[kept.index_select(0, _where(settled.index_select(0, kept_img)))] = True
            pending &= ~settled
            if not bool(pending.any()):
                break
            # Widen each unsettled image's cut by its observed survival rate, with margin;
            # at least x1.5 a round, so the rounds end after O(log N) of them.
            grow = (1.5 * self.max_detections / count.clamp(min=1)).clamp(1.5, 16.0)
            cut = (cut * grow).ceil().long()
        kept = by_image.index_select(0, _where(keep.index_select(0, by_image)))
        return kept, scores.index_select(0, kept), cand_boxes

    def _per_image(
        self, img: Tensor, labels: Tensor, cand_boxes: Tensor, kept: Tensor, kept_scores: Tensor, B: int
    ) -> list[Detections]:
        """Kept candidates sorted by image, then decreasing score -> one dict per image, capped."""
        kept_img = img.index_select(0, kept)
        cap = _where(rank_in_runs(kept_img, B) < self.max_detections)
        kept, kept_scores = kept.index_select(0, cap), kept_scores.index_select(0, cap)
        counts = torch.bincount(kept_img, minlength=B).clamp_(max=self.max_detections).tolist()
        out_boxes = cand_boxes.index_select(0, kept).split(counts)
        out_scores = kept_scores.split(counts)
        out_labels = labels.index_select(0, kept).split(counts)
        return [
            {"boxes": b, "scores": s, "labels": lab}
            for b, s, lab in zip(out_boxes, out_scores, out_labels, strict=True)
        ]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(score_threshold={self.score_threshold}, top_k={self.top_k}, "
            f"iou_threshold={self.iou_threshold}, max_detections={self.max_detections}, clip={self.clip!r})"
        )
