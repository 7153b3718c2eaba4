"""Backbones (registry `BACKBONES`): image -> list of feature maps, with `.out_channels`."""
from ssdkit.backbones import mobilenet, resnet  # noqa: F401
from ssdkit.backbones import vgg  # noqa: F401
