"""Prior (default box) generators (registry `PRIORS`)."""

from ssdkit.priors.ssd import SSDPriors, SSDPriorsConfig

__all__ = ["SSDPriors", "SSDPriorsConfig"]
