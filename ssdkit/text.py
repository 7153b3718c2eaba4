"""Wording shared by messages: counts with the right plural, lists cut short."""

from __future__ import annotations

from typing import Optional, Sequence

__all__ = ["count", "shortlist"]


def count(n: int, noun: str, plural: Optional[str] = None) -> str:
    """`count(1, "step")` -> "1 step"; `count(2, "step")` -> "2 steps"; `plural` for irregular nouns
    (`count(3, "batch", "batches")`)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def shortlist(items: Sequence[str], shown: int, sep: str = ", ") -> str:
    """The first `shown` items joined by `sep`, then " ... and N more" when there are more:
    `shortlist(["a", "b", "c"], 2)` -> "a, b ... and 1 more"."""
    more = f" ... and {len(items) - shown} more" if len(items) > shown else ""
    return sep.join(items[:shown]) + more
