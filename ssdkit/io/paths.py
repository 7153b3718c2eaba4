"""Output locations users name (`--out`, `--output`, `train.out_dir`), checked before any work;
and the one atomic file writer (`atomic_write`) with its clean-up (`remove_stale_temps`)."""

from __future__ import annotations

import glob
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Callable

__all__ = ["check_output_file", "check_output_folder", "atomic_write", "remove_stale_temps"]


def check_output_folder(path: str | Path, what: str) -> Path:
    """`path` as a folder to write into: ValueError if it exists and is not a folder (`/dev/null`, a file)
    or lies under a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path}: exists and is not a folder; give a folder (it is created if missing)")
    _no_file_above(path, what)
    return path


def check_output_file(path: str | Path, what: str) -> Path:
    """`path` as a file to (over)write: ValueError if it is a folder or something other than a file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path}: is a folder; give a file name, e.g. {path / 'model.onnx'}")
    if path.exists() and not path.is_file():
        raise ValueError(f"{what} {path}: exists and is not a regular file")
    _no_file_above(path.parent, what)
    return path


def _no_file_above(folder: Path, what: str) -> None:
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{what} {folder}: {parent} is a file, not a folder")
            return


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform, and not needed for correctness.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write `path` by calling `write(binary file)` on a temporary file in the same folder, fsync
    it, then os.replace: readers see the old file or the complete new one, never a partial one.
    Every file ssdkit writes for others to read (weights, checkpoints, exports, eval.json) goes
    through here."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_stale_temps(folder: Path, names: list[str]) -> int:
    """Delete the temporary files `atomic_write` left in `folder` for `names` when killed mid-write
    (call it only where no other process writes those files now); returns how many."""
    count = 0
    for name in names:
        for tmp in folder.glob(f".{glob.escape(name)}.*.tmp"):
            tmp.unlink(missing_ok=True)
            count += 1
    return count
