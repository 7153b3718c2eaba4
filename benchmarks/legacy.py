"""The hard NMS ssdkit had before the batched rewrite, kept only to be timed against it."""

from __future__ import annotations

from torch import Tensor
from torchvision.ops import nms

from ssdkit.postprocess.base import Postprocessor


class OneCallNMS(Postprocessor):
    """One torchvision `nms` call for the whole batch, groups kept apart by a coordinate
    offset (float64). Exact, but the kernel compares boxes of different groups too, so
    its cost grows with the square of the whole batch's candidate count."""

    def suppress(self, boxes: Tensor, scores: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
        shifted = boxes.double() + (groups.double() * 2.0)[:, None]
        keep = nms(shifted, scores.double(), self.iou_threshold)
        return keep, scores[keep]
