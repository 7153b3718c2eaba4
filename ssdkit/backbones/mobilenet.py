"""MobileNetV3-Large for SSDLite (the backbone of torchvision's ssdlite320_mobilenet_v3_large).

Two maps come from the classifier, cut out with torchvision's FX feature extractor:
the 1x1 expansion output inside the last stride-2 block (stride 16, 672 channels,
"section 6.3" of the MobileNetV3 paper) and the last feature layer (stride 32, 960
channels); four SSDLite extra blocks add stride 64, 128, 256, 512 maps.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from torch import Tensor, nn
from torchvision.models import mobilenet_v3_large
from torchvision.models.feature_extraction import create_feature_extractor

from ssdkit.backbones.extras import (
    SSDLITE_BN,
    load_classifier_weights,
    normal_init,
    ssdlite_extra_block,
)
from ssdkit.io.weights import reject_url
from ssdkit.registry import BACKBONES, ComponentConfig, part_config

__all__ = ["SSDLiteConfig", "MobileNetV3Config", "MobileNetV3SSDLite"]

EXTRA_CHANNELS = (512, 256, 256, 128)


class SSDLiteConfig(ComponentConfig):
    """What the SSDLite backbones' configs share: starting weights that are never a URL, and two
    feature maps of the classifier followed by the four SSDLite extras."""

    weights: str | None = None

    @field_validator("weights")
    @classmethod
    def _local(cls, v: str | None) -> str | None:
        return reject_url(v)

    def num_levels(self) -> int:
        return 2 + len(EXTRA_CHANNELS)


class MobileNetV3Config(SSDLiteConfig):
    type: str = "mobilenet_v3_large"
    width_mult: float = Field(1.0, gt=0, le=4, description="MobileNetV3 width multiplier (the extras stay fixed)")
    reduced_tail: bool = Field(
        False,
        description="halve the channels of the last blocks (C5: 480 instead of 960), as torchvision's COCO SSDLite; "
        "ImageNet weights need the full tail",
    )
    weights: str | None = Field(
        None,
        description="'imagenet' (torchvision's MobileNet_V3_Large_Weights.IMAGENET1K_V1, fetched and cached by "
        "torch.hub), or a local torchvision mobilenet_v3_large classification state dict (.pth or .safetensors)",
    )


@BACKBONES.register("mobilenet_v3_large")
class MobileNetV3SSDLite(nn.Module):
    """x `[B, 3, H, W]` -> 6 maps; at 320 x 320 their sides are 20, 10, 5, 3, 2, 1.

    `out_channels` is [672, 960, 512, 256, 256, 128] at width_mult 1 ([672, 480, ...] with `reduced_tail`).
    """

    def __init__(self, cfg: MobileNetV3Config | None = None) -> None:
        super().__init__()
        self.config = cfg = part_config(cfg, MobileNetV3Config)
        width_mult, weights, reduced_tail = cfg.width_mult, cfg.weights, cfg.reduced_tail
        net = mobilenet_v3_large(weights=None, width_mult=width_mult, reduced_tail=reduced_tail, norm_layer=SSDLITE_BN)
        if weights is not None:
            if reduced_tail:
                raise ValueError(
                    f"mobilenet_v3_large weights {weights!r}: classification weights have the full tail; "
                    "set the backbone's reduced_tail: false to start from them"
                )
            load_classifier_weights(net, weights, "mobilenet_v3_large")
        else:
            normal_init(net)  # torchvision's choice for an SSDLite backbone trained from scratch
        features = net.features
        # The last block that halves the map starts C5; its expansion conv still runs at stride 16.
        c5_start = max(i for i, b in enumerate(features) if getattr(b, "_is_cn", False))
        expansion = features[c5_start].block[0]
        last = len(features) - 1
        self.body = create_feature_extractor(net, {f"features.{c5_start}.block.0": "c4", f"features.{last}": "c5"})
        channels = [expansion.out_channels, features[last].out_channels]
        self.extras = nn.ModuleList()
        for c in EXTRA_CHANNELS:
            self.extras.append(ssdlite_extra_block(channels[-1], c))
            channels.append(c)
        normal_init(self.extras)
        self.out_channels = channels

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.body(x)
        out = [feats["c4"], feats["c5"]]
        for block in self.extras:
            out.append(block(out[-1]))
        return out
