"""Backbones (registry `BACKBONES`): image -> list of feature maps, with `.out_channels`."""

from ssdkit.backbones import (  # noqa: F401
    mobilenet,
    mobilenet_v2,
    resnet,
    tiny,
    vgg,  # noqa: F401
)
