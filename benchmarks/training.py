"""Matching + loss, forward and backward: ssdkit's `model.compute_loss` against torchvision's SSD training step
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
        ours.compute_loss(loc, logits, targets)["loss"].backward()

    return torchvision_step, ssdkit_step


def _padded(p):
    return p.boxes, p.mask


def bench_training(tv, ours, threads: list[int], repeats: int, num_classes: int, log=print) -> tuple[str, str]:
    """Markdown tables: matching + loss fwd+bwd at batch 32, and the matcher alone over batch sizes and box counts."""
    from timing import interleaved

    from ssdkit.losses.targets import pad_targets

    rows = []
    for t in threads:
        torch.set_num_threads(t)
        for max_boxes in (1, 10, 50):
            log(f"training: matching + loss, {t} thread(s), up to {max_boxes} boxes ...")
            theirs, mine = loss_steps(tv, ours, 32, max_boxes, num_classes)
            r = interleaved({"tv": theirs, "ours": mine}, repeats)
            rows.append(
                [
                    str(t),
                    f"1..{max_boxes}",
                    f"{r['tv'] * 1e3:.0f} ms",
                    f"{r['ours'] * 1e3:.0f} ms",
                    f"**{r['tv'] / r['ours']:.2f}x**",
                ]
            )
    loss_table = "\n".join(
        ["| threads | boxes per picture | torchvision | ssdkit | ratio |", "| --- | --- | --- | --- | --- |"]
        + ["| " + " | ".join(r) + " |" for r in rows]
    )
    torch.set_num_threads(threads[0])
    priors = cxcywh_to_xyxy(ours.priors)
    header = "| batch | " + " | ".join(f"1..{g} boxes" for g in (1, 10, 50)) + " |"
    lines = [header, "|" + " --- |" * 4]
    for batch in (1, 8, 32, 64):
        cells = []
        for max_boxes in (1, 10, 50):
            targets = ground_truth(batch, max_boxes, num_classes)
            r = interleaved(
                {
                    "tv": lambda: [tv.proposal_matcher(box_iou(x["boxes"], priors)) for x in targets],  # noqa: B023
                    "ours": lambda: ours.matcher(*_padded(pad_targets(targets, num_classes)), priors),  # noqa: B023
                },
                max(3, repeats),
            )
            cells.append(f"{r['tv'] / r['ours']:.2f}x")
        lines.append(f"| {batch} | " + " | ".join(cells) + " |")
    return loss_table, "\n".join(lines)
