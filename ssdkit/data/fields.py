"""Annotation fields as tools really write them, read by one typed contract.

Each reader returns the value or raises ValueError saying what was found and what is accepted;
the data set readers add the file (and the box) to the message.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["as_flag", "as_size", "MAX_SIDE"]

# Words that annotation tools write for a yes/no field (VOC <difficult>, <truncated>; COCO iscrowd).
_TRUE = {"1", "true", "yes", "y", "t", "1.0"}
_FALSE = {"0", "false", "no", "n", "f", "0.0", "", "-0", "-0.0", "none", "null"}
# A picture side beyond this is no picture (PIL's default pixel limit is ~89 million in all).
MAX_SIDE = 1 << 20


def as_flag(value: Any, what: str) -> bool:
    """A yes/no field: a bool, 0 or 1 (int or float), or one of the words above in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"{what} must be 0/1 or true/false (also yes/no), got {value!r}")


def as_size(value: Any, what: str) -> int:
    """A picture width or height: a number 0 .. MAX_SIDE (0: not stated), as a number or text; rounded."""
    try:
        number = float(value.strip()) if isinstance(value, str) else value
    except ValueError:
        raise ValueError(f"{what} is not a number: {value!r}") from None
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise ValueError(f"{what} must be a number of pixels, got {value!r}")
    if not math.isfinite(number) or not 0 <= number <= MAX_SIDE:
        raise ValueError(f"{what} must be a number of pixels in 0..{MAX_SIDE}, got {value!r}")
    return round(number)
