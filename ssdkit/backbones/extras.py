"""Pieces shared by the backbones built from torchvision classifiers: the SSD extra
blocks that shrink the last feature map level by level, and loading of a local
classification state dict into the classifier before its features are cut out.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Callable, Literal

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

from ssdkit.io.weights import read_state_dict

__all__ = [
    "SSDLITE_BN",
    "Conv2dSame",
    "Padding",
    "ssdlite_extra_block",
    "bottleneck_extra_block",
    "load_classifier_weights",
    "normal_init",
    "xavier_init",
]

# SSDLite's norm layer (torchvision's ssdlite builder uses the same numbers).
SSDLITE_BN = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)

# "symmetric": PyTorch's (k - 1) / 2 on every side; "tf_same": TensorFlow's "SAME", which pads a
# strided conv by what the output size ceil(n / stride) needs, the odd pixel at the bottom/right.
Padding = Literal["symmetric", "tf_same"]


class Conv2dSame(nn.Conv2d):
    """`nn.Conv2d` with TensorFlow's "SAME" padding, computed from each input's size.

    For a side n, kernel k, stride s and dilation d the output side is ceil(n / s) and the
    padding total max((ceil(n / s) - 1) s + (k - 1) d + 1 - n, 0), half of it (rounded down) before
    and the rest after. Stride 1 with an odd kernel gives the symmetric (k - 1) d / 2 of PyTorch;
    stride 2 on an even side pads one pixel fewer at the top/left, which shifts every output pixel.
    The weights and state-dict keys are those of `nn.Conv2d`.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    @staticmethod
    def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
        """(before, after) padding of one side of `size` pixels."""
        total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = self.same_pads(int(x.shape[-2]), self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = self.same_pads(int(x.shape[-1]), self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def ssdlite_extra_block(
    in_channels: int, out_channels: int, norm_layer: Callable[..., nn.Module] = SSDLITE_BN
) -> nn.Sequential:
    """[B, in, H, W] -> [B, out, ceil(H/2), ceil(W/2)]: 1x1 to out/2, depthwise 3x3 stride 2, 1x1 to out;
    each followed by BN and ReLU6 (MobileNetV2 paper, SSDLite)."""
    mid = out_channels // 2
    act = nn.ReLU6
    return nn.Sequential(
        Conv2dNormActivation(in_channels, mid, 1, norm_layer=norm_layer, activation_layer=act),
        Conv2dNormActivation(mid, mid, 3, stride=2, groups=mid, norm_layer=norm_layer, activation_layer=act),
        Conv2dNormActivation(mid, out_channels, 1, norm_layer=norm_layer, activation_layer=act),
    )


def bottleneck_extra_block(
    in_channels: int, mid_channels: int, out_channels: int, stride: int, padding: int
) -> nn.Sequential:
    """1x1 conv to `mid_channels` + BN + ReLU, then 3x3 conv (`stride`, `padding`) + BN + ReLU.

    stride 2 / padding 1 halves the map (rounding up); stride 1 / padding 0 takes 2 off each side.
    """
    return nn.Sequential(
        Conv2dNormActivation(in_channels, mid_channels, 1),
        Conv2dNormActivation(mid_channels, out_channels, 3, stride=stride, padding=padding),
    )


def normal_init(module: nn.Module, std: float = 0.03) -> None:
    """N(0, std) conv weights and zero biases (torchvision's SSDLite init for untrained layers)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform conv weights and zero biases (the init NVIDIA's SSD300 uses for its extras)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def load_classifier_weights(model: nn.Module, weights: str | Path, backbone: str) -> None:
    """Load a torchvision classification state dict into the whole classifier `model`, strictly:
    named weights of `backbone` (e.g. ``imagenet``, see ssdkit.io.pretrained), or a local file
    (.pth/.pt via torch.load with weights_only=True, or .safetensors)."""
    from ssdkit.io import pretrained

    named = pretrained.find(str(weights), backbone=backbone, kind="backbone")
    if named is not None:
        state, path = pretrained.fetch(named), f"named weights {named.name!r}"
    else:
        state, path = read_state_dict(weights)[0], Path(weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"{path} does not fit {type(model).__name__} (is it a torchvision classification state dict "
            f"of the same architecture and width?): {exc}"
        ) from exc
