"""Box coders (registry `BOX_CODERS`): regression targets <-> boxes."""

from ssdkit.box_coders.ssd import SSDBoxCoder, SSDBoxCoderConfig

__all__ = ["SSDBoxCoder", "SSDBoxCoderConfig"]
