"""SSD default boxes: per level a square of size s_k, one of sqrt(s_k s_k+1), and
one box and its transpose per extra aspect ratio, tiled on the feature map.

Three ways to give the per-level sizes (exactly one):
- ``min_sizes`` / ``max_sizes`` in input pixels (ssd.pytorch, the paper's VOC setting);
- ``scales``: L + 1 fractions of the image, s'_k = sqrt(scales[k] * scales[k + 1]) (torchvision);
- ``s_min`` / ``s_max``: the paper's linear formula over the levels.
"""

from __future__ import annotations

import math
from typing import Annotated, Optional

import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator
from torch import Tensor

from ssdkit.registry import PRIORS, ComponentConfig, part_config
from ssdkit.roles import check_feature_maps

# Element checks live in the types so that an error's location is the exact field path
# (e.g. `priors.aspect_ratios.2.1`), not just `priors`.
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class SSDPriorsConfig(ComponentConfig):
    type: str = "ssd"
    aspect_ratios: list[list[PositiveFloat]] = Field(
        ..., min_length=1, description="per level, the extra aspect ratios (w/h) besides 1; each adds r and 1/r"
    )
    min_sizes: Optional[list[PositiveFloat]] = Field(None, description="per level, the size s_k in input pixels")
    max_sizes: Optional[list[PositiveFloat]] = Field(
        None, description="per level, s'_k = sqrt(min * max) in input pixels"
    )
    scales: Optional[list[PositiveFloat]] = Field(None, description="L + 1 sizes as fractions of the image side")
    s_min: Optional[PositiveFloat] = Field(None, description="paper formula: size of the first level (fraction)")
    s_max: Optional[PositiveFloat] = Field(None, description="paper formula: size of the last level (fraction)")
    steps: Optional[list[PositiveFloat]] = Field(
        None, description="per level, the prior spacing in input pixels; default: image size / feature size"
    )
    offset: float = Field(0.5, ge=0, le=1, description="prior centre within its cell")
    clip: bool = Field(True, description="clip prior widths and heights to [0, 1]")
    clip_centres: bool = Field(
        False,
        description="also clamp prior centres to [0, 1] (ssd.pytorch and NVIDIA do; torchvision does not): "
        "moves the last row/column of a level whose grid overshoots the image, e.g. step 32 on a 10x10 map at 300",
    )

    @field_validator("min_sizes", "max_sizes", "scales", "steps")
    @classmethod
    def _one_per_level(cls, v: list[float] | None, info: ValidationInfo) -> list[float] | None:
        ratios = info.data.get("aspect_ratios")  # absent when aspect_ratios itself failed
        if v is None or ratios is None:
            return v
        n = len(ratios) + (info.field_name == "scales")
        if len(v) != n:
            raise ValueError(
                f"needs {n} values (one per level{' plus one' if info.field_name == 'scales' else ''}; "
                f"aspect_ratios has {len(ratios)} levels), got {len(v)}"
            )
        return v

    @model_validator(mode="after")
    def _check(self) -> SSDPriorsConfig:
        given = [
            n
            for n, v in (("min_sizes", self.min_sizes), ("scales", self.scales), ("s_min", self.s_min))
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(f"give exactly one of min_sizes, scales or s_min/s_max; got {given or 'none'}")
        if self.min_sizes is not None and self.max_sizes is None:
            raise ValueError("max_sizes is required with min_sizes")
        if self.min_sizes is None and self.max_sizes is not None:
            raise ValueError("max_sizes only goes with min_sizes")
        if self.s_min is not None:
            if self.s_max is None:
                raise ValueError("s_max is required with s_min")
            if not self.s_min <= self.s_max:
                raise ValueError(f"need s_min <= s_max, got s_min={self.s_min}, s_max={self.s_max}")
        elif self.s_max is not None:
            raise ValueError("s_max only goes with s_min")
        return self

    def num_levels(self) -> int:
        return len(self.aspect_ratios)


@PRIORS.register("ssd")
class SSDPriors:
    """Generates `[P, 4]` priors, cxcywh normalised to [0, 1].

    Order: level, then row (y), then column (x), then the boxes of one location
    (s_k, s'_k, then r, 1/r for each ratio r): the order of torchvision and ssd.pytorch.
    """

    def __init__(self, cfg: SSDPriorsConfig) -> None:
        self.config = cfg = part_config(cfg, SSDPriorsConfig)
        self.aspect_ratios = cfg.aspect_ratios
        self.min_sizes, self.max_sizes = cfg.min_sizes, cfg.max_sizes
        # The L + 1 scales in use: the given ones, or the paper's from s_min / s_max (None with min_sizes).
        self.scales = cfg.scales
        if cfg.s_min is not None:
            self.scales = self.paper_scales(cfg.s_min, cfg.s_max, len(cfg.aspect_ratios))
        self.steps, self.offset = cfg.steps, cfg.offset
        self.clip, self.clip_centres = cfg.clip, cfg.clip_centres

    @staticmethod
    def paper_scales(s_min: float, s_max: float, levels: int) -> list[float]:
        """s_k = s_min + (s_max - s_min)(k - 1)/(m - 1), k = 1..m, and one more step for s'_m."""
        step = (s_max - s_min) / max(levels - 1, 1)
        return [s_min + step * k for k in range(levels + 1)]

    @property
    def num_anchors(self) -> list[int]:
        """Priors per feature-map location, per level."""
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    def _level_sizes(self, image_size: tuple[int, int]) -> list[tuple[Tensor, Tensor]]:
        """Per level, (s_k, s'_k) as `[2]` tensors of (width, height) fractions."""
        h, w = image_size
        out = []
        for k in range(len(self.aspect_ratios)):
            if self.min_sizes is not None:
                lo = torch.tensor([self.min_sizes[k] / w, self.min_sizes[k] / h], dtype=torch.float64)
                mid = math.sqrt(self.min_sizes[k] * self.max_sizes[k])
                hi = torch.tensor([mid / w, mid / h], dtype=torch.float64)
            else:
                s, s1 = self.scales[k], self.scales[k + 1]
                lo = torch.tensor([s, s], dtype=torch.float64)
                hi = torch.tensor([math.sqrt(s * s1)] * 2, dtype=torch.float64)
            out.append((lo, hi))
        return out

    def shapes(self, image_size: tuple[int, int]) -> list[Tensor]:
        """Per level, the `[A, 2]` (width, height) of the priors of one location."""
        result = []
        for (lo, hi), ratios in zip(self._level_sizes(image_size), self.aspect_ratios, strict=True):
            wh = [lo, hi]
            for r in ratios:
                sr = math.sqrt(r)
                wh.append(torch.stack((lo[0] * sr, lo[1] / sr)))
                wh.append(torch.stack((lo[0] / sr, lo[1] * sr)))
            wh = torch.stack(wh)
            result.append(wh.clamp(0, 1) if self.clip else wh)
        return result

    def __call__(self, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int]) -> Tensor:
        """Priors for feature maps of `feature_sizes` [(h, w), ...] on an `image_size` (h, w) input."""
        check_feature_maps(feature_sizes, len(self.aspect_ratios))
        h, w = image_size
        levels = []
        for k, ((fh, fw), wh) in enumerate(zip(feature_sizes, self.shapes(image_size), strict=True)):
            if self.steps is not None:
                sy, sx = self.steps[k] / h, self.steps[k] / w
            else:
                sy, sx = 1.0 / fh, 1.0 / fw
            cy = (torch.arange(fh, dtype=torch.float64) + self.offset) * sy
            cx = (torch.arange(fw, dtype=torch.float64) + self.offset) * sx
            cy, cx = torch.meshgrid(cy, cx, indexing="ij")
            centres = torch.stack((cx.reshape(-1), cy.reshape(-1)), dim=-1)  # [fh*fw, 2]
            if self.clip_centres:
                centres = centres.clamp(0, 1)
            a = wh.shape[0]
            boxes = torch.cat(
                (centres[:, None, :].expand(-1, a, -1), wh[None, :, :].expand(centres.shape[0], -1, -1)), dim=-1
            )
            levels.append(boxes.reshape(-1, 4))
        return torch.cat(levels).to(torch.float32)

    def __repr__(self) -> str:
        return f"SSDPriors(levels={len(self.aspect_ratios)}, num_anchors={self.num_anchors})"
