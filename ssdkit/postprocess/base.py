"""Shared post-processing: candidate selection for a whole batch, then one NMS call.

Subclasses registered in `NMS` implement `suppress` only.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from ssdkit.boxes import clip_boxes
from ssdkit.registry import ComponentConfig

Detections = dict[str, Tensor]  # boxes [N, 4] xyxy, scores [N], labels [N] int64


class PostprocessConfig(ComponentConfig):
    score_threshold: float = Field(0.01, ge=0, lt=1, description="drop class scores <= this")
    top_k: int = Field(400, ge=1, le=100_000, description="candidates kept per image and class before NMS")
    iou_threshold: float = Field(0.45, gt=0, le=1, description="NMS overlap threshold")
    max_detections: int = Field(200, ge=1, le=100_000, description="detections kept per image")


class Postprocessor:
    """boxes [B, P, 4] xyxy (normalised), probs [B, P, C] (class 0 = background)
    -> one dict per image: boxes [N, 4] xyxy normalised, scores [N], labels [N] in 1..C-1,
    sorted by score, N <= max_detections.
    """

    def __init__(self, score_threshold: float = 0.01, top_k: int = 400, iou_threshold: float = 0.45,
                 max_detections: int = 200) -> None:
        self.score_threshold = float(score_threshold)
        self.top_k = int(top_k)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)

    def suppress(self, boxes: Tensor, scores: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
        """boxes [N, 4], scores [N], groups [N] (NMS never compares two groups)
        -> (indices kept [K], sorted by decreasing score; their scores [K])."""
        raise NotImplementedError

    def candidates(self, boxes: Tensor, probs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Top-k per (image, class) above the threshold, flattened:
        (image index [N], label [N], box [N, 4], score [N])."""
        B, P, C = probs.shape
        cls_scores = probs[..., 1:].transpose(1, 2)  # [B, C-1, P]
        top_scores, top_idx = cls_scores.topk(min(self.top_k, P), dim=2)
        # NaN/inf never passes: NaN > t is False, and +inf is rejected explicitly.
        ok = (top_scores > self.score_threshold) & torch.isfinite(top_scores)
        img, cls, j = ok.nonzero(as_tuple=True)
        prior = top_idx[img, cls, j]
        cand_boxes = clip_boxes(boxes[img, prior])
        return img, cls + 1, cand_boxes, top_scores[img, cls, j]

    def __call__(self, boxes: Tensor, probs: Tensor) -> list[Detections]:
        B, _, C = probs.shape
        img, labels, cand_boxes, scores = self.candidates(boxes, probs)
        finite = torch.isfinite(cand_boxes).all(dim=1)
        img, labels, cand_boxes, scores = img[finite], labels[finite], cand_boxes[finite], scores[finite]
        keep, kept_scores = self.suppress(cand_boxes, scores, img * C + labels)
        img = img[keep]
        # Group by image, keeping the score order inside each image, and cap per image.
        order = torch.argsort(img, stable=True)
        img, keep, kept_scores = img[order], keep[order], kept_scores[order]
        counts = torch.bincount(img, minlength=B)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(img.numel(), device=img.device) - starts[img]
        cap = rank < self.max_detections
        keep, kept_scores = keep[cap], kept_scores[cap]
        counts = counts.clamp(max=self.max_detections).tolist()
        out_boxes = cand_boxes[keep].split(counts)
        out_scores = kept_scores.split(counts)
        out_labels = labels[keep].split(counts)
        return [
            {"boxes": b, "scores": s, "labels": l} for b, s, l in zip(out_boxes, out_scores, out_labels)
        ]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(score_threshold={self.score_threshold}, top_k={self.top_k}, "
            f"iou_threshold={self.iou_threshold}, max_detections={self.max_detections})"
        )
