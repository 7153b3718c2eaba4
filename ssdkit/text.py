"""Wording shared by messages: counts with the right plural."""

from __future__ import annotations

from typing import Optional

__all__ = ["count"]


def count(n: int, noun: str, plural: Optional[str] = None) -> str:
    """`count(1, "step")` -> "1 step"; `count(2, "step")` -> "2 steps"; `plural` for irregular nouns
    (`count(3, "batch", "batches")`)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
