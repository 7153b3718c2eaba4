"""ResNet-50 for SSD300 as in NVIDIA's SSD300 v1.1.

torchvision's resnet50 up to layer3, with layer3's first block kept at stride 1 so
its 1024-channel map stays at stride 8 (38 x 38 at 300 px), then five extra blocks
(1x1 conv + BN + ReLU, 3x3 conv + BN + ReLU).
"""

from __future__ import annotations

from pydantic import Field, field_validator
from torch import Tensor, nn
from torchvision.models import resnet50
from torchvision.models.feature_extraction import create_feature_extractor

from ssdkit.backbones.extras import bottleneck_extra_block, load_classifier_weights, xavier_init
from ssdkit.io.weights import reject_url
from ssdkit.registry import BACKBONES, ComponentConfig, part_config

__all__ = ["ResNet50Config", "ResNet50SSD"]

# (middle channels, out channels, stride, padding) per extra block, as in NVIDIA's SSD300
EXTRAS = ((256, 512, 2, 1), (256, 512, 2, 1), (128, 256, 2, 1), (128, 256, 1, 0), (128, 256, 1, 0))


class ResNet50Config(ComponentConfig):
    type: str = "resnet50"
    weights: str | None = Field(
        None,
        description="'imagenet' (torchvision's ResNet50_Weights.IMAGENET1K_V1, fetched and cached by torch.hub), "
        "or a local torchvision resnet50 classification state dict (.pth or .safetensors)",
    )

    @field_validator("weights")
    @classmethod
    def _local(cls, v: str | None) -> str | None:
        return reject_url(v)

    def num_levels(self) -> int:
        return 1 + len(EXTRAS)


@BACKBONES.register("resnet50")
class ResNet50SSD(nn.Module):
    """x `[B, 3, H, W]` -> 6 maps; at 300 x 300 their sides are 38, 19, 10, 5, 3, 1.

    `out_channels` is [1024, 512, 512, 256, 256, 256].
    """

    def __init__(self, cfg: ResNet50Config | None = None) -> None:
        super().__init__()
        self.config = cfg = part_config(cfg, ResNet50Config)
        weights = cfg.weights
        net = resnet50(weights=None)
        if weights is not None:
            load_classifier_weights(net, weights, "resnet50")
        # torchvision's ResNet-50 (v1.5) strides in conv2 and in the shortcut of a stage's first block
        first = net.layer3[0]
        first.conv2.stride = (1, 1)
        first.downsample[0].stride = (1, 1)
        self.body = create_feature_extractor(net, {"layer3": "c4"})
        channels = [first.conv3.out_channels]
        self.extras = nn.ModuleList()
        for mid, out, stride, pad in EXTRAS:
            self.extras.append(bottleneck_extra_block(channels[-1], mid, out, stride, pad))
            channels.append(out)
        xavier_init(self.extras)
        self.out_channels = channels

    def forward(self, x: Tensor) -> list[Tensor]:
        out = [self.body(x)["c4"]]
        for block in self.extras:
            out.append(block(out[-1]))
        return out
