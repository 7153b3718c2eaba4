"""The SSD centre-size box coder with variances."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from ssdkit.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from ssdkit.registry import BOX_CODERS, ComponentConfig, part_config

# exp() of more than this would make a box wider than 1000x its prior; torchvision
# clamps at the same value (log(1000 / 16)), so decoded boxes agree with it.
DEFAULT_LOG_CLAMP = math.log(1000.0 / 16)


class SSDBoxCoderConfig(ComponentConfig):
    type: str = "ssd"
    variances: tuple[float, float, float, float] = Field(
        (0.1, 0.1, 0.2, 0.2), description="(centre x, centre y, width, height) variances; offsets are divided by them"
    )
    log_clamp: float = Field(DEFAULT_LOG_CLAMP, gt=0, description="upper clamp of decoded log-size offsets")
    order: Literal["xywh", "yxhw"] = Field(
        "xywh",
        description="order of the four offsets: xywh (the paper, torchvision) or yxhw (TensorFlow's "
        "[ty, tx, th, tw]); variances always name (x, y, w, h)",
    )

    @field_validator("variances")
    @classmethod
    def _positive(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(x <= 0 for x in v):
            raise ValueError("variances must all be > 0")
        return v


@BOX_CODERS.register("ssd")
class SSDBoxCoder:
    """Encode boxes as offsets from priors, and back.

    encode(boxes [..., 4] xyxy, priors [..., 4] cxcywh) -> offsets [..., 4]
    decode(offsets [..., 4], priors [..., 4] cxcywh) -> boxes [..., 4] xyxy
    Leading dimensions broadcast; all coordinates normalised to [0, 1]. Offsets are
    (tx, ty, tw, th), or (ty, tx, th, tw) with order "yxhw" (TensorFlow's FasterRcnnBoxCoder,
    whose scale factors 10, 10, 5, 5 are the variances 0.1, 0.1, 0.2, 0.2).
    """

    def __init__(self, cfg: SSDBoxCoderConfig | None = None) -> None:
        self.config = cfg = part_config(cfg, SSDBoxCoderConfig)
        self.variances, self.log_clamp, self.order = cfg.variances, cfg.log_clamp, cfg.order

    def _swap(self, offsets: Tensor) -> Tensor:
        """xywh <-> yxhw (its own inverse); a no-op for order "xywh"."""
        return offsets if self.order == "xywh" else offsets[..., [1, 0, 3, 2]]

    def _var(self, like: Tensor) -> Tensor:
        return torch.tensor(self.variances, dtype=like.dtype, device=like.device)

    def encode(self, boxes: Tensor, priors: Tensor) -> Tensor:
        g = xyxy_to_cxcywh(boxes)
        if bool((g[..., 2:] <= 0).any()):
            bad = torch.nonzero(g[..., 2:] <= 0)[0, :-1].tolist()
            raise ValueError(
                f"cannot encode a box with zero or negative width/height at index {bad}: "
                f"{boxes[tuple(bad)].tolist()} (xyxy); boxes must have x2 > x1 and y2 > y1"
            )
        v = self._var(g)
        centre = (g[..., :2] - priors[..., :2]) / (priors[..., 2:] * v[:2])
        size = torch.log(g[..., 2:] / priors[..., 2:]) / v[2:]
        return self._swap(torch.cat((centre, size), dim=-1))

    def decode(self, offsets: Tensor, priors: Tensor) -> Tensor:
        offsets = self._swap(offsets)
        v = self._var(offsets)
        centre = priors[..., :2] + offsets[..., :2] * v[:2] * priors[..., 2:]
        size = priors[..., 2:] * torch.exp((offsets[..., 2:] * v[2:]).clamp(max=self.log_clamp))
        return cxcywh_to_xyxy(torch.cat((centre, size), dim=-1))

    def __repr__(self) -> str:
        return f"SSDBoxCoder(variances={self.variances}, order={self.order!r})"
