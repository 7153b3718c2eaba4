"""The TensorFlow Object Detection API's SSD anchors (its ``ssd_anchor_generator``, tiled by its
``MultipleGridAnchorGenerator``), so that TF-trained SSDs keep the anchors they were trained with.

Per layer k (of m) the scale is s_k = min_scale + (max_scale - min_scale) k / (m - 1) (or the
explicit `scales`), and s_m = 1. Each location gets, in this order,

- one box per aspect ratio a of `aspect_ratios` (in the order given): height s_k / sqrt(a),
  width s_k * sqrt(a), times `base_anchor_size` (height, width);
- when `interpolated_scale_aspect_ratio` > 0, one more of scale sqrt(s_k s_k+1) and that ratio;
- except on the first layer when `reduce_boxes_in_lowest_layer`: then exactly three boxes,
  (0.1, ratio 1), (s_0, 2), (s_0, 0.5), whatever the other settings say.

Centres sit at (i + 0.5) / H_k, (j + 0.5) / W_k of each H_k x W_k map (TF's default strides and
offsets). On a non-square input, TF shrinks the longer side of `base_anchor_size` by the aspect
ratio of the input, so that a "square" anchor is square in pixels; so does this generator.
Differences from the paper's priors (`ssd`): no s'_k box for ratio 1 (the interpolated box plays that
role), ratios are listed explicitly (2 does not add 1/2), a fixed first layer, and TF's order.
"""

from __future__ import annotations

import math
from typing import Annotated, Optional

import torch
from pydantic import Field, model_validator
from torch import Tensor

from ssdkit.registry import PRIORS, ComponentConfig, part_config
from ssdkit.roles import check_feature_maps

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class TFSSDAnchorsConfig(ComponentConfig):
    type: str = "tf_ssd"
    num_layers: int = Field(6, ge=1, le=16, description="feature maps (levels) the anchors tile")
    min_scale: float = Field(0.2, gt=0, le=1, description="scale of the first layer (fraction of the image)")
    max_scale: float = Field(0.95, gt=0, le=1, description="scale of the last layer")
    scales: Optional[list[PositiveFloat]] = Field(
        None, description="explicit per-layer scales (num_layers values), instead of min_scale .. max_scale"
    )
    aspect_ratios: list[PositiveFloat] = Field(
        [1.0, 2.0, 0.5, 3.0, 0.3333], min_length=1, description="width / height of each box, in TF's order"
    )
    interpolated_scale_aspect_ratio: float = Field(
        1.0, ge=0, description="ratio of the extra box of scale sqrt(s_k s_k+1); 0: no extra box"
    )
    reduce_boxes_in_lowest_layer: bool = Field(
        True, description="first layer: only (0.1, 1), (s_0, 2), (s_0, 1/2), as TF OD API's SSDs"
    )
    base_anchor_size: tuple[PositiveFloat, PositiveFloat] = Field(
        (1.0, 1.0), description="(height, width) every box's size is multiplied by"
    )

    @model_validator(mode="after")
    def _check(self) -> TFSSDAnchorsConfig:
        if self.scales is not None and len(self.scales) != self.num_layers:
            raise ValueError(f"scales needs num_layers={self.num_layers} values, got {len(self.scales)}")
        if self.scales is None and self.min_scale > self.max_scale:
            raise ValueError(f"need min_scale <= max_scale, got {self.min_scale} > {self.max_scale}")
        return self

    def num_levels(self) -> int:
        return self.num_layers


@PRIORS.register("tf_ssd")
class TFSSDAnchors:
    """Generates `[P, 4]` priors, cxcywh normalised to [0, 1], in TF's order: level, row, column,
    then the box specs of `box_specs()` (which the head's outputs follow)."""

    def __init__(self, cfg: TFSSDAnchorsConfig | None = None) -> None:
        self.config = cfg = part_config(cfg, TFSSDAnchorsConfig)
        self.num_layers = cfg.num_layers
        scales = cfg.scales
        if scales is None:
            step = (cfg.max_scale - cfg.min_scale) / max(self.num_layers - 1, 1)
            scales = [cfg.min_scale + step * k for k in range(self.num_layers)]
        self.layer_scales = [*scales, 1.0]  # s_0 .. s_{m-1}, then s_m = 1 for the last interpolated box
        self.aspect_ratios = cfg.aspect_ratios
        self.interpolated = cfg.interpolated_scale_aspect_ratio
        self.reduce_lowest = cfg.reduce_boxes_in_lowest_layer
        self.base_anchor_size = cfg.base_anchor_size

    def box_specs(self) -> list[list[tuple[float, float]]]:
        """Per layer, the (scale, aspect ratio) of each box of one location, in order."""
        specs = []
        for k in range(self.num_layers):
            s, s_next = self.layer_scales[k], self.layer_scales[k + 1]
            if k == 0 and self.reduce_lowest:
                specs.append([(0.1, 1.0), (s, 2.0), (s, 0.5)])
                continue
            layer = [(s, a) for a in self.aspect_ratios]
            if self.interpolated > 0:
                layer.append((math.sqrt(s * s_next), self.interpolated))
            specs.append(layer)
        return specs

    @property
    def num_anchors(self) -> list[int]:
        """Priors per feature-map location, per level."""
        return [len(layer) for layer in self.box_specs()]

    def shapes(self, image_size: tuple[int, int]) -> list[Tensor]:
        """Per level, the `[A, 2]` (width, height) of the priors of one location."""
        h, w = image_size
        side = min(h, w)
        base_h, base_w = self.base_anchor_size[0] * side / h, self.base_anchor_size[1] * side / w
        out = []
        for layer in self.box_specs():
            spec = torch.tensor(layer, dtype=torch.float64)
            root = spec[:, 1].sqrt()
            out.append(torch.stack((spec[:, 0] * root * base_w, spec[:, 0] / root * base_h), dim=1))
        return out

    def __call__(self, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int]) -> Tensor:
        """Priors for feature maps of `feature_sizes` [(h, w), ...] on an `image_size` (h, w) input."""
        check_feature_maps(feature_sizes, self.num_layers, "layers")
        levels = []
        for (fh, fw), wh in zip(feature_sizes, self.shapes(image_size), strict=True):
            cy = (torch.arange(fh, dtype=torch.float64) + 0.5) / fh
            cx = (torch.arange(fw, dtype=torch.float64) + 0.5) / fw
            cy, cx = torch.meshgrid(cy, cx, indexing="ij")
            centres = torch.stack((cx.reshape(-1), cy.reshape(-1)), dim=-1)  # [fh*fw, 2]
            a, n = wh.shape[0], centres.shape[0]
            boxes = torch.cat((centres[:, None, :].expand(-1, a, -1), wh[None].expand(n, -1, -1)), dim=-1)
            levels.append(boxes.reshape(-1, 4))
        return torch.cat(levels).to(torch.float32)

    def __repr__(self) -> str:
        return f"TFSSDAnchors(layers={self.num_layers}, num_anchors={self.num_anchors})"
