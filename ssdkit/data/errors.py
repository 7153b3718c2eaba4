"""Errors and warnings for data set items that cannot be used."""

from __future__ import annotations

__all__ = ["BadItemError", "BadItemWarning"]


class BadItemError(ValueError):
    """A data set item cannot be read: a missing or corrupt image, or a box that is not a box.

    The message names the file (and the box); `path` holds the file, `reason` the rest.
    """

    def __init__(self, path: str, reason: str = "") -> None:
        # One argument also works: DataLoader re-raises a worker's error as type(exc)(message).
        super().__init__(f"{path}: {reason}" if reason else str(path))
        self.path = str(path)
        self.reason = reason


class BadItemWarning(UserWarning):
    """Issued once per item the loader skips (DataConfig.on_bad_item = "skip")."""
