"""MobileNetV2 for SSDLite, laid out as the TensorFlow Object Detection API's
``ssd_mobilenet_v2`` feature extractor (the SSDLite of the MobileNetV2 paper).

Two maps come from the classifier: the 1x1 expansion output of the last stride-2 block (TF's
``layer_15/expansion_output``: stride 16, 576 channels at width 1) and the last 1x1 conv
(``layer_19``: stride 32, 1280 channels); four SSDLite extra blocks (1x1, depthwise 3x3 stride 2,
1x1, each with BatchNorm and ReLU6) add stride 64 .. 512 maps of 512, 256, 256 and 128 channels.

``padding: tf_same`` pads every strided conv as TensorFlow's "SAME" does (asymmetrically, see
`Conv2dSame`), which weights trained in TensorFlow need; ``symmetric`` is PyTorch's padding, for
torchvision's ImageNet weights. The classifier is torchvision's `mobilenet_v2`, so its state dict
loads with ``weights:``.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor, nn
from torchvision.models import mobilenet_v2

from ssdkit.backbones.extras import (
    SSDLITE_BN,
    Conv2dSame,
    Padding,
    load_classifier_weights,
    normal_init,
    ssdlite_extra_block,
)
from ssdkit.backbones.mobilenet import EXTRA_CHANNELS, SSDLiteConfig
from ssdkit.registry import BACKBONES, part_config

__all__ = ["MobileNetV2Config", "MobileNetV2SSDLite", "use_tf_same_padding"]


class MobileNetV2Config(SSDLiteConfig):
    """The width, local weights and padding; the four SSDLite extras are mobilenet_v3_large's."""

    type: str = "mobilenet_v2"
    width_mult: float = Field(1.0, gt=0, le=4, description="MobileNetV2 width multiplier (the extras stay fixed)")
    padding: Padding = Field(
        "symmetric",
        description="symmetric: PyTorch's padding; tf_same: TensorFlow's 'SAME' (asymmetric for strided convs), "
        "for weights trained in TensorFlow",
    )
    weights: str | None = Field(
        None, description="local path to a torchvision mobilenet_v2 classification state dict (.pth or .safetensors)"
    )


def use_tf_same_padding(module: nn.Module) -> nn.Module:
    """Swap every strided `nn.Conv2d` inside `module` for a `Conv2dSame` holding the same parameters.

    Stride-1 convs with odd kernels are left alone: TensorFlow's "SAME" pads them symmetrically too.
    """
    for name, child in module.named_children():
        if type(child) is nn.Conv2d and max(child.stride) > 1:
            same = Conv2dSame(
                child.in_channels,
                child.out_channels,
                child.kernel_size,
                child.stride,
                dilation=child.dilation,
                groups=child.groups,
                bias=child.bias is not None,
            )
            same.weight, same.bias = child.weight, child.bias
            setattr(module, name, same)
        else:
            use_tf_same_padding(child)
    return module


@BACKBONES.register("mobilenet_v2")
class MobileNetV2SSDLite(nn.Module):
    """x `[B, 3, H, W]` -> 6 maps; at 300 x 300 their sides are 19, 10, 5, 3, 2, 1.

    `out_channels` is [576, 1280, 512, 256, 256, 128] at width_mult 1. Modules: `features` is
    torchvision's MobileNetV2 `features` (0: stem conv, 1 .. 17: inverted residual blocks, 18: the
    last 1x1 conv), `extras` the four SSDLite blocks.
    """

    def __init__(self, cfg: MobileNetV2Config | None = None) -> None:
        super().__init__()
        self.config = cfg = part_config(cfg, MobileNetV2Config)
        width_mult, padding, weights = cfg.width_mult, cfg.padding, cfg.weights
        net = mobilenet_v2(weights=None, width_mult=width_mult, norm_layer=SSDLITE_BN)
        if weights is not None:
            load_classifier_weights(net, weights, backbone="mobilenet_v2")
        else:
            normal_init(net)  # as for an SSDLite backbone trained from scratch (torchvision's choice)
        self.features = net.features
        # The last block that halves the map; its expansion conv still runs at stride 16.
        self.c4_block = max(i for i, b in enumerate(self.features) if _stride(b) == 2)
        self.extras = nn.ModuleList()
        channels = [self.features[self.c4_block].conv[0].out_channels, self.features[-1].out_channels]
        for c in EXTRA_CHANNELS:
            self.extras.append(ssdlite_extra_block(channels[-1], c))
            channels.append(c)
        normal_init(self.extras)
        if padding == "tf_same":
            use_tf_same_padding(self)
        self.padding = padding
        self.out_channels = channels

    def forward(self, x: Tensor) -> list[Tensor]:
        for block in self.features[: self.c4_block]:
            x = block(x)
        split = self.features[self.c4_block].conv  # no residual: the block has stride 2
        c4 = split[0](x)
        x = split[1:](c4)
        for block in self.features[self.c4_block + 1 :]:
            x = block(x)
        out = [c4, x]
        for block in self.extras:
            out.append(block(out[-1]))
        return out


def _stride(block: nn.Module) -> int:
    """The stride of an inverted residual block; 1 for the stem and the last conv, which have no `.conv`
    and are never the block a map is cut from."""
    if not hasattr(block, "conv"):
        return 1
    return max(max(m.stride) for m in block.modules() if isinstance(m, nn.Conv2d))
