"""Matchers (registry `MATCHERS`): assign ground-truth boxes to priors."""

from ssdkit.matchers.ssd import SSDMatcher, SSDMatcherConfig

__all__ = ["SSDMatcher", "SSDMatcherConfig"]
