"""Box coders (registry `BOX_CODERS`): regression targets <-> boxes."""

from ssdkit.coders.ssd import SSDBoxCoder, SSDBoxCoderConfig

__all__ = ["SSDBoxCoder", "SSDBoxCoderConfig"]
