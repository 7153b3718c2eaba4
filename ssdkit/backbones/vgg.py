"""The SSD variant of VGG16: conv1_1 .. conv5_3, atrous fc6/fc7, L2-normalised conv4_3, extra layers.

Feature maps (SSD300 / SSD512, ``highres``):

====================  ======  =========  ========
source                chans   300 px     512 px
====================  ======  =========  ========
conv4_3 (L2 + scale)  512     38         64
fc7                   1024    19         32
conv8_2               512     10         16
conv9_2               256     5          8
conv10_2              256     3          4
conv11_2              256     1          2
conv12_2 (highres)    256     -          1
====================  ======  =========  ========

SSD512 follows the paper / original Caffe layout (conv10_2 and conv11_2 are 3x3
stride 2 pad 1, conv12_2 is 4x4 pad 1), not torchvision's `highres` variant.

State-dict keys: ``features.N`` (N = torchvision's VGG16 `features` index, 0 .. 22, up
to the conv4_3 ReLU), ``l2_scale``, ``conv5.conv5_K``, ``fc.fc6`` / ``fc.fc7``, and
``extras.I.convM_1`` / ``extras.I.convM_2`` (I = 0 for conv8, 1 for conv9, ...).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from ssdkit.io import pretrained
from ssdkit.io.weights import read_state_dict, reject_url
from ssdkit.registry import BACKBONES, ComponentConfig, part_config

__all__ = ["VGG16Config", "SSDVGG16"]

# conv1_1 .. conv4_3 as in torchvision's VGG16 `features` (so indices match its state dict);
# "M" is a 2x2 max pool, "C" the same with ceil_mode (75 -> 38 at 300 px, as in the paper).
_FEATURES = [64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512]


class VGG16Config(ComponentConfig):
    type: str = "vgg16"
    highres: bool = Field(False, description="SSD512: add conv12 for a 7th feature map (paper layout)")
    weights: str | None = Field(
        None,
        description="'imagenet' (torchvision's VGG16_Weights.IMAGENET1K_FEATURES, ssd.pytorch's trunk, fetched and "
        "cached by torch.hub; it expects RGB input normalised as the ssd300_vgg16_coco preset does), or a local file "
        "with VGG16 weights: a torchvision VGG16 classifier state dict (fc6/fc7 are subsampled as in the paper), "
        "ssd.pytorch's vgg16_reducedfc.pth, or a state dict of this backbone",
    )

    @field_validator("weights")
    @classmethod
    def _local(cls, v: str | None) -> str | None:
        return reject_url(v)

    def num_levels(self) -> int:
        return 7 if self.highres else 6


def _conv_relu(name: str, cin: int, cout: int, **kw) -> list[tuple[str, nn.Module]]:
    return [(name, nn.Conv2d(cin, cout, **kw)), (f"{name}_relu", nn.ReLU(inplace=True))]


def _extra(n: int, cin: int, mid: int, cout: int, **kw) -> nn.Sequential:
    """conv{n}_1 (1x1, cin -> mid), conv{n}_2 (cout, with `kw`), each followed by ReLU."""
    return nn.Sequential(
        OrderedDict(_conv_relu(f"conv{n}_1", cin, mid, kernel_size=1) + _conv_relu(f"conv{n}_2", mid, cout, **kw))
    )


@BACKBONES.register("vgg16")
class SSDVGG16(nn.Module):
    """[B, 3, H, W] -> list of 6 (7 with `highres`) feature maps, channels `out_channels`.

    conv4_3 is L2-normalised over channels and multiplied by a learnable per-channel
    scale (initialised to 20), as in the paper. The normalisation is torchvision's,
    ``F.normalize`` (x / max(||x||, 1e-12)); ssd.pytorch divides by ||x|| + 1e-10, which
    differs only for near-zero feature vectors.
    """

    def __init__(self, cfg: VGG16Config | None = None) -> None:
        super().__init__()
        self.config = cfg = part_config(cfg, VGG16Config)
        weights = cfg.weights  # never a URL: VGG16Config refused it
        named = pretrained.find(weights, backbone="vgg16", kind="backbone")
        if weights is not None and named is None and not Path(weights).is_file():
            raise FileNotFoundError(f"no such weights file: {weights}")  # before spending time on initialisation
        self.highres = cfg.highres
        layers: list[nn.Module] = []
        cin = 3
        for v in _FEATURES:
            if v in ("M", "C"):
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=v == "C"))
            else:
                layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.l2_scale = nn.Parameter(torch.full((512,), 20.0))
        self.conv5 = nn.Sequential(
            OrderedDict(
                [("pool4", nn.MaxPool2d(kernel_size=2, stride=2))]
                + _conv_relu("conv5_1", 512, 512, kernel_size=3, padding=1)
                + _conv_relu("conv5_2", 512, 512, kernel_size=3, padding=1)
                + _conv_relu("conv5_3", 512, 512, kernel_size=3, padding=1)
            )
        )
        # pool5 keeps the resolution so that the dilated fc6 sees conv5_3's grid (paper, sec. 3).
        self.fc = nn.Sequential(
            OrderedDict(
                [("pool5", nn.MaxPool2d(kernel_size=3, stride=1, padding=1))]
                + _conv_relu("fc6", 512, 1024, kernel_size=3, padding=6, dilation=6)
                + _conv_relu("fc7", 1024, 1024, kernel_size=1)
            )
        )
        extras = [
            _extra(8, 1024, 256, 512, kernel_size=3, stride=2, padding=1),
            _extra(9, 512, 128, 256, kernel_size=3, stride=2, padding=1),
        ]
        if self.highres:
            extras += [
                _extra(10, 256, 128, 256, kernel_size=3, stride=2, padding=1),
                _extra(11, 256, 128, 256, kernel_size=3, stride=2, padding=1),
                _extra(12, 256, 128, 256, kernel_size=4, padding=1),
            ]
        else:
            extras += [_extra(10, 256, 128, 256, kernel_size=3), _extra(11, 256, 128, 256, kernel_size=3)]
        self.extras = nn.ModuleList(extras)
        self.out_channels = [512, 1024, 512] + [256] * (len(extras) - 1)
        self._init_weights()
        if named is not None:
            # torchvision's SSD300 takes only the convs of this file (its classifier holds no trained values)
            self.load_vgg_state(pretrained.fetch(named), f"named weights {named.name!r}", fc=False)
        elif weights is not None:
            self.load_vgg_weights(weights)

    def _init_weights(self) -> None:
        # VGG layers as torchvision's VGG; the added layers (fc6/fc7, extras) with Xavier, as torchvision's SSD.
        for m in [*self.features.modules(), *self.conv5.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for m in [*self.fc.modules(), *self.extras.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.features(x)
        out = [self.l2_scale.view(1, -1, 1, 1) * F.normalize(x, dim=1)]
        x = self.fc(self.conv5(x))
        out.append(x)
        for block in self.extras:
            x = block(x)
            out.append(x)
        return out

    def load_vgg_weights(self, path: str | Path) -> None:
        """Load VGG16 weights from a local file (see `VGG16Config.weights` for the accepted layouts).

        Layers the file does not cover (the extras, and the L2 scale for classifier
        weights) keep their initialisation.
        """
        self.load_vgg_state(read_state_dict(path)[0], str(path))

    def load_vgg_state(self, state: dict[str, Tensor], path: str, fc: bool = True) -> None:
        """Load VGG16 weights from a state dict; `path` names its source in errors; `fc`: see `vgg16_to_backbone`."""
        from ssdkit.io.convert import vgg16_to_backbone

        try:
            converted = vgg16_to_backbone(state, fc=fc)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        own = self.state_dict()
        unknown = [k for k in converted if k not in own]
        if unknown:
            raise ValueError(f"{path}: keys that this backbone does not have: {unknown[:5]}")
        for k, v in converted.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise ValueError(
                    f"{path}: tensor {k!r} has shape {tuple(v.shape)} in the file but {tuple(own[k].shape)} "
                    f"in the vgg16 backbone (highres={self.highres})"
                )
        self.load_state_dict(converted, strict=False)
