"""Matchers (registry `MATCHERS`): assign ground-truth boxes to priors."""

from ssdkit.matchers.bipartite import BipartiteMatcher, BipartiteMatcherConfig
from ssdkit.matchers.ssd import SSDMatcher, SSDMatcherConfig

__all__ = ["BipartiteMatcher", "BipartiteMatcherConfig", "SSDMatcher", "SSDMatcherConfig"]
