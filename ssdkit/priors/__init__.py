"""Prior (default box) generators (registry `PRIORS`)."""

from ssdkit.priors.ssd import SSDPriors, SSDPriorsConfig
from ssdkit.priors.tf import TFSSDAnchors, TFSSDAnchorsConfig

__all__ = ["SSDPriors", "SSDPriorsConfig", "TFSSDAnchors", "TFSSDAnchorsConfig"]
