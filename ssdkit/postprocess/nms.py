"""Hard (greedy) NMS with torchvision's kernel, all images and classes in one call."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms

from ssdkit.postprocess.base import PostprocessConfig, Postprocessor
from ssdkit.registry import NMS


class HardNMSConfig(PostprocessConfig):
    type: str = "hard"


@NMS.register("hard", config=HardNMSConfig)
class HardNMS(Postprocessor):
    def suppress(self, boxes: Tensor, scores: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
        # Boxes lie in [0, 1]; shifting each group by 2 * group index keeps groups apart,
        # so one kernel call does every image and class. float64 keeps the shifted
        # coordinates as exact as the unshifted float32 ones.
        dtype = torch.float32 if boxes.device.type == "mps" else torch.float64
        shifted = boxes.to(dtype) + (groups.to(dtype) * 2.0)[:, None]
        keep = nms(shifted, scores.to(dtype), self.iou_threshold)
        return keep, scores[keep]
