"""Matching + loss, forward and backward: ssdkit's `model.loss` against torchvision's SSD training step
(per-image `box_iou` + `SSDMatcher`, then `compute_loss`), on the same head outputs and ground truth."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

from ssdkit.boxes import cxcywh_to_xyxy


def ground_truth(batch: int, max_boxes: int, num_classes: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Per image 1..max_boxes boxes (uniform), xyxy normalised, 5-35% of the picture a side."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        n = int(torch.randint(1, max_boxes + 1, (1,), generator=g))
        centre = torch.rand(n, 2, generator=g) * 0.6 + 0.2
        size = torch.rand(n, 2, generator=g) * 0.3 + 0.05
        boxes = torch.cat([centre - size / 2, centre + size / 2], 1)
        out.append({"boxes": boxes, "labels": torch.randint(1, num_classes, (n,), generator=g)})
    return out


def loss_steps(tv, ours, batch: int, max_boxes: int, num_classes: int):
    """Two callables running matching + loss forward and backward on identical inputs: (torchvision, ssdkit)."""
    g = torch.Generator().manual_seed(1)
    P = ours.priors.shape[0]
    loc = (torch.randn(batch, P, 4, generator=g) * 0.5).requires_grad_()
    logits = torch.randn(batch, P, num_classes, generator=g).requires_grad_()
    targets = ground_truth(batch, max_boxes, num_classes)
    h, w = ours.image_size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    tv_targets = [{"boxes": t["boxes"] * scale, "labels": t["labels"]} for t in targets]
    anchors = cxcywh_to_xyxy(ours.priors) * scale  # torchvision's anchors are in network-input pixels

    def torchvision_step():
        matched = [tv.proposal_matcher(box_iou(t["boxes"], anchors)) for t in tv_targets]
        head = {"bbox_regression": loc, "cls_logits": logits}
        losses = tv.compute_loss(tv_targets, head, [anchors] * batch, matched)
        (losses["bbox_regression"] + losses["classification"]).backward()

    def ssdkit_step():
        ours.loss(loc, logits, targets)["loss"].backward()

    return torchvision_step, ssdkit_step
