"""Output locations users name (`--out`, `--output`, `train.out_dir`), checked before any work."""

from __future__ import annotations

from pathlib import Path

__all__ = ["check_output_file", "check_output_folder"]


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
