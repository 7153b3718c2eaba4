"""Per-image ground truth -> per-prior training targets, for the whole batch at once.

`pad_targets` turns the list of per-image dicts (`boxes [G_i, 4]` xyxy normalised to [0, 1],
`labels [G_i]` int64 in 1 .. C - 1) into padded `[B, G]` tensors with a mask; `match_targets`
then matches every image with one matcher call and gathers, per prior, the matched label,
box and encoded offsets. Both losses (and tools that inspect matching) share this step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from ssdkit.boxes import cxcywh_to_xyxy

__all__ = ["PaddedTargets", "MatchedTargets", "pad_targets", "match_targets", "check_head_outputs"]

# Normalised coordinates may leave [0, 1] a little (augmentation can push a box partly out of
# the frame) but not by this much: a value outside [-SLACK, 1 + SLACK] almost surely means
# pixel coordinates were passed, which would silently match nothing sensible.
NORMALISED_SLACK = 0.5

# Padded slots hold this box so that gathering and encoding them stays finite; they never match.
_PAD_BOX = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class PaddedTargets:
    """Ground truth of a batch, padded to the largest image.

    boxes: `[B, G, 4]` xyxy normalised; padded slots hold the box (0, 0, 1, 1).
    labels: `[B, G]` int64; padded slots hold 0.
    mask: `[B, G]` bool, True for real boxes.
    G = max(1, most boxes in one image), so gathers never index an empty dimension.
    """

    boxes: Tensor
    labels: Tensor
    mask: Tensor


@dataclass(frozen=True)
class MatchedTargets:
    """Per-prior targets of a batch.

    matches: `[B, P]` int64, index of the matched ground truth in the padded `[B, G]` layout, -1 = background.
    iou: `[B, P]` the matcher's IoU (see the matcher).
    labels: `[B, P]` int64 class target, 0 = background.
    boxes: `[B, P, 4]` xyxy normalised matched box; for background priors a placeholder, finite.
    offsets: `[B, P, 4]` `boxes` encoded against the priors; meaningful only where `positive`.
    """

    matches: Tensor
    iou: Tensor
    labels: Tensor
    boxes: Tensor
    offsets: Tensor

    @property
    def positive(self) -> Tensor:
        """`[B, P]` bool."""
        return self.matches >= 0

    @property
    def num_positive(self) -> Tensor:
        """`[B]` int64, positives per image."""
        return self.positive.sum(dim=1)


def _image_tensor(value: Any, i: int, key: str, width: Optional[int]) -> Tensor:
    if value is None:
        raise ValueError(f"targets[{i}] has no '{key}'")
    t = torch.as_tensor(value)
    if t.numel() == 0:  # torch.zeros(0) and torch.zeros(0, 4) both mean "no boxes"
        return t.reshape((0, width) if width else (0,))
    want = (-1, width) if width else (-1,)
    if t.dim() != len(want) or (width and t.shape[-1] != width):
        shape = "[G, 4]" if width else "[G]"
        raise ValueError(f"targets[{i}]['{key}'] must have shape {shape}, got {list(t.shape)}")
    return t


def _first_bad(bad: Tensor, image: Tensor, slot: Tensor) -> tuple[int, int, int]:
    """(row in the flat list, image, box index within it) of the first True in `bad` `[N]`."""
    row = int(bad.nonzero()[0, 0])
    return row, int(image[row]), int(slot[row])


def pad_targets(
    targets: Sequence[dict[str, Any]],
    num_classes: Optional[int] = None,
    *,
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float32,
) -> PaddedTargets:
    """Validate and pad per-image targets (see the module docstring) to `[B, G]`.

    Raises ValueError naming the image and box for a missing key, a wrong shape, a non-integer
    or out-of-range label (needs `num_classes`, which counts background), a non-finite or
    empty box (x2 <= x1 or y2 <= y1), or coordinates that are clearly not normalised.
    """
    boxes, labels = _image_tensors(targets)
    B = len(boxes)
    counts = [b.shape[0] for b in boxes]
    G = max([1, *counts])
    here = boxes[0].device if B else torch.device("cpu")
    dev = torch.device(device) if device is not None else here
    # Concatenated where the data lives, then moved in one copy (not one per image).
    if B:
        flat_boxes = torch.cat([b.to(device=here, dtype=dtype) for b in boxes]).to(dev)
        flat_labels = torch.cat([x.to(device=here, dtype=torch.long) for x in labels]).to(dev)
    else:
        flat_boxes = torch.zeros((0, 4), dtype=dtype, device=dev)
        flat_labels = torch.zeros((0,), dtype=torch.long, device=dev)
    n = torch.tensor(counts, device=dev, dtype=torch.long)
    image = torch.repeat_interleave(torch.arange(B, device=dev), n)
    slot = torch.arange(flat_labels.shape[0], device=dev) - (torch.cumsum(n, 0) - n).repeat_interleave(n)
    _check_values(flat_boxes, flat_labels, image, slot, num_classes)

    padded_boxes = torch.tensor(_PAD_BOX, dtype=dtype, device=dev).repeat(B, G, 1)
    padded_labels = torch.zeros((B, G), dtype=torch.long, device=dev)
    mask = torch.zeros((B, G), dtype=torch.bool, device=dev)
    padded_boxes[image, slot] = flat_boxes
    padded_labels[image, slot] = flat_labels
    mask[image, slot] = True
    return PaddedTargets(padded_boxes, padded_labels, mask)


def _image_tensors(targets: Sequence[dict[str, Any]]) -> tuple[list[Tensor], list[Tensor]]:
    """Per image, boxes `[G_i, 4]` and labels `[G_i]` as tensors; shapes and label dtype checked."""
    if isinstance(targets, dict) or not isinstance(targets, Sequence):
        raise TypeError(f"targets must be a list with one dict per image, got {type(targets).__name__}")
    boxes, labels = [], []
    for i, t in enumerate(targets):  # shapes only: _check_values checks the values, batched
        if not isinstance(t, dict):
            raise TypeError(f"targets[{i}] must be a dict with 'boxes' and 'labels', got {type(t).__name__}")
        b = _image_tensor(t.get("boxes"), i, "boxes", 4)
        lab = _image_tensor(t.get("labels"), i, "labels", None)
        if b.shape[0] != lab.shape[0]:
            raise ValueError(f"targets[{i}] has {b.shape[0]} boxes but {lab.shape[0]} labels")
        if lab.dtype.is_floating_point or lab.dtype.is_complex or lab.dtype == torch.bool:
            raise ValueError(f"targets[{i}]['labels'] must be integers (int64), got {lab.dtype}")
        boxes.append(b)
        labels.append(lab)
    return boxes, labels


def _check_values(
    flat_boxes: Tensor, flat_labels: Tensor, image: Tensor, slot: Tensor, num_classes: Optional[int]
) -> None:
    """Raise ValueError naming image and box for the first bad label or box of the flat `[N, 4]` / `[N]` lists."""
    # One host sync for all checks; the slow search for the culprit only runs on failure.
    finite = torch.isfinite(flat_boxes).all(dim=1)
    empty = (flat_boxes[:, 2] <= flat_boxes[:, 0]) | (flat_boxes[:, 3] <= flat_boxes[:, 1])
    outside = ((flat_boxes < -NORMALISED_SLACK) | (flat_boxes > 1 + NORMALISED_SLACK)).any(dim=1)
    bad_label = flat_labels < 1
    if num_classes is not None:
        bad_label = bad_label | (flat_labels >= num_classes)
    bad = ~finite | empty | outside | bad_label
    if flat_labels.numel() and bool(bad.any()):
        for problem, message in (
            (bad_label, "label {label} is outside 1 .. num_classes - 1 = {last} (0 is background)"),
            (~finite, "box {box} has a non-finite coordinate"),
            (empty, "box {box} (xyxy) is empty: it needs x2 > x1 and y2 > y1"),
            (
                outside,
                "box {box} is not normalised to [0, 1] of the network input (pixel coordinates?)",
            ),
        ):
            if bool(problem.any()):
                row, i, j = _first_bad(problem, image, slot)
                last = "?" if num_classes is None else num_classes - 1
                text = message.format(label=int(flat_labels[row]), last=last, box=flat_boxes[row].tolist())
                raise ValueError(f"targets[{i}] box {j}: {text}")


def match_targets(
    targets: Sequence[dict[str, Any]] | PaddedTargets,
    priors: Tensor,
    matcher: Any,
    box_coder: Any,
    num_classes: Optional[int] = None,
) -> MatchedTargets:
    """Match a batch's ground truth to `priors` `[P, 4]` cxcywh normalised, all images at once.

    `matcher(gt_boxes [B, G, 4] xyxy, gt_mask [B, G], priors [P, 4] xyxy) -> (matches, iou)`;
    `box_coder.encode(boxes xyxy, priors cxcywh) -> offsets`. Works in float32 on `priors`' device.
    """
    priors = priors.float()
    if not isinstance(targets, PaddedTargets):
        targets = pad_targets(targets, num_classes, device=priors.device)
    gt_boxes = targets.boxes.to(device=priors.device, dtype=torch.float32)
    matches, iou = matcher(gt_boxes, targets.mask.to(priors.device), cxcywh_to_xyxy(priors))
    index = matches.clamp(min=0)
    positive = matches >= 0
    labels = torch.where(positive, torch.gather(targets.labels.to(priors.device), 1, index), 0)
    boxes = torch.gather(gt_boxes, 1, index[..., None].expand(*index.shape, 4))
    offsets = box_coder.encode(boxes, priors.unsqueeze(0))
    return MatchedTargets(matches=matches, iou=iou, labels=labels, boxes=boxes, offsets=offsets)


def check_head_outputs(loc: Tensor, logits: Tensor, targets: Sequence[Any], priors: Tensor) -> None:
    """Shapes a loss expects: loc `[B, P, 4]`, logits `[B, P, C]`, priors `[P, 4]`, B targets."""
    if loc.dim() != 3 or loc.shape[-1] != 4:
        raise ValueError(f"loc must have shape [B, P, 4], got {list(loc.shape)}")
    if logits.dim() != 3 or logits.shape[:2] != loc.shape[:2]:
        raise ValueError(
            f"logits must have shape [B, P, C] with loc's [B, P] = {list(loc.shape[:2])}, got {list(logits.shape)}"
        )
    if priors.shape != (loc.shape[1], 4):
        raise ValueError(f"priors must have shape [P, 4] = [{loc.shape[1]}, 4], got {list(priors.shape)}")
    if len(targets) != loc.shape[0]:
        raise ValueError(f"got {len(targets)} target dicts for a batch of {loc.shape[0]} images")
