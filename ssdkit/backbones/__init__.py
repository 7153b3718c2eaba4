"""Backbones (registry `BACKBONES`): image -> list of feature maps, with `.out_channels`."""
