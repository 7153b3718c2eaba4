"""Per-level convolutional heads: the classic 3x3 conv and SSDLite's depthwise-separable one."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from ssdkit.registry import HEADS, ComponentConfig, part_config


def flatten_level(x: Tensor, columns: int) -> Tensor:
    """[B, A * K, H, W] -> [B, H * W * A, K]: the prior order (row, column, anchor)."""
    b, _, h, w = x.shape
    return x.view(b, -1, columns, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, columns)


class _LevelHead(nn.Module):
    """One predictor module per level for locations and one for class logits."""

    def __init__(self, config: ComponentConfig, loc: nn.ModuleList, cls: nn.ModuleList, num_classes: int) -> None:
        super().__init__()
        self.config = config
        self.loc = loc
        self.cls = cls
        self.num_classes = num_classes

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """features: one [B, C_l, H_l, W_l] map per level -> (loc [B, P, 4], logits [B, P, num_classes])."""
        locs = [flatten_level(m(f), 4) for m, f in zip(self.loc, features, strict=True)]
        logits = [flatten_level(m(f), self.num_classes) for m, f in zip(self.cls, features, strict=True)]
        return torch.cat(locs, dim=1), torch.cat(logits, dim=1)

    @torch.no_grad()
    def init_class_bias(self, bias: Tensor) -> None:
        """Set every level's class-logit bias to `bias [num_classes]`, the same for each anchor."""
        for m in self.cls:
            conv = m if isinstance(m, nn.Conv2d) else [c for c in m.modules() if isinstance(c, nn.Conv2d)][-1]
            conv.bias.copy_(bias.to(conv.bias).repeat(conv.out_channels // self.num_classes))


class ConvHeadConfig(ComponentConfig):
    type: str = "ssd"
    kernel_size: int = Field(3, ge=1, le=7, description="odd kernel size of the predictor convs")


@HEADS.register("ssd")
class ConvHead(_LevelHead):
    """The paper's head: one k x k conv per level for offsets and one for class logits."""

    def __init__(
        self,
        cfg: ConvHeadConfig | None = None,
        *,
        in_channels: list[int],
        num_anchors: list[int],
        num_classes: int,
    ) -> None:
        cfg = part_config(cfg, ConvHeadConfig)
        kernel_size = cfg.kernel_size
        pad = kernel_size // 2
        loc = nn.ModuleList(
            nn.Conv2d(c, a * 4, kernel_size, padding=pad) for c, a in zip(in_channels, num_anchors, strict=True)
        )
        cls = nn.ModuleList(
            nn.Conv2d(c, a * num_classes, kernel_size, padding=pad)
            for c, a in zip(in_channels, num_anchors, strict=True)
        )
        for m in [*loc, *cls]:
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        super().__init__(cfg, loc, cls, num_classes)


def _separable(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
        nn.BatchNorm2d(cin, eps=0.001, momentum=0.03),
        nn.ReLU6(inplace=True),
        nn.Conv2d(cin, cout, 1),
    )


class DepthwiseHeadConfig(ComponentConfig):
    type: str = "depthwise"


@HEADS.register("depthwise")
class DepthwiseHead(_LevelHead):
    """SSDLite's head: 3x3 depthwise conv + BN + ReLU6, then a 1x1 conv, per level."""

    def __init__(
        self,
        cfg: DepthwiseHeadConfig | None = None,
        *,
        in_channels: list[int],
        num_anchors: list[int],
        num_classes: int,
    ) -> None:
        cfg = part_config(cfg, DepthwiseHeadConfig)
        loc = nn.ModuleList(_separable(c, a * 4) for c, a in zip(in_channels, num_anchors, strict=True))
        cls = nn.ModuleList(_separable(c, a * num_classes) for c, a in zip(in_channels, num_anchors, strict=True))
        for m in self.modules_of(loc, cls):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        super().__init__(cfg, loc, cls, num_classes)

    @staticmethod
    def modules_of(*lists: nn.ModuleList):
        return (m for ml in lists for m in ml.modules() if isinstance(m, nn.Conv2d))
