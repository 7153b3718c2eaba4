"""A small plain-conv backbone for tests, demos and CPU training on small pictures.

Each stage halves the map with a 3x3 stride-2 conv, then runs `depth` 3x3 stride-1 convs;
each conv is followed by batch norm (or nothing) and ReLU. The last `levels` stages are
the SSD feature maps: at 128 x 128 with the defaults their sides are 16, 8, 4, 2, 1.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from torch import Tensor, nn

from ssdkit.registry import BACKBONES, ComponentConfig, part_config

__all__ = ["TinyBackboneConfig", "TinyBackbone"]


class TinyBackboneConfig(ComponentConfig):
    type: str = "tiny"
    channels: list[int] = Field(
        [16, 32, 48, 64, 96, 96, 128],
        min_length=1,
        description="output channels of each stage; every stage halves the map (stage k has stride 2^(k+1))",
    )
    levels: int = Field(5, ge=1, description="the last `levels` stages are the feature maps given to the head")
    depth: int = Field(1, ge=0, le=8, description="extra 3x3 stride-1 convs per stage")
    norm: Literal["batch", "none"] = Field("batch", description="normalisation after each conv")

    @model_validator(mode="after")
    def _check(self) -> TinyBackboneConfig:
        if self.levels > len(self.channels):
            raise ValueError(f"levels={self.levels} but channels lists only {len(self.channels)} stages")
        if any(c < 1 for c in self.channels):
            raise ValueError(f"channels must be positive, got {self.channels}")
        return self

    def num_levels(self) -> int:
        return self.levels


def _conv(cin: int, cout: int, stride: int, norm: str) -> list[nn.Module]:
    batch = norm == "batch"
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not batch)]
    if batch:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


@BACKBONES.register("tiny")
class TinyBackbone(nn.Module):
    """x `[B, 3, H, W]` -> `levels` maps; map k has `out_channels[k]` channels and side ceil(H / stride)."""

    def __init__(self, cfg: TinyBackboneConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = part_config(cfg, TinyBackboneConfig)
        channels, levels, depth, norm = cfg.channels, cfg.levels, cfg.depth, cfg.norm
        self.stages = nn.ModuleList()
        cin = 3
        for cout in channels:
            layers = _conv(cin, cout, 2, norm)
            for _ in range(depth):
                layers += _conv(cout, cout, 1, norm)
            self.stages.append(nn.Sequential(*layers))
            cin = cout
        self.first_output = len(channels) - levels
        self.out_channels = list(channels[self.first_output :])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for k, stage in enumerate(self.stages):
            x = stage(x)
            if k >= self.first_output:
                out.append(x)
        return out
