"""What a run shows and records: the progress bar and `metrics.jsonl` (one JSON object a line).

Lines have a `kind`: "train" (per log step: step, epoch, lr, loss terms, images_per_s),
"eval" (per evaluation: map or val_loss, is_best), "end" (a summary). Only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Optional

__all__ = ["MetricsFile", "ProgressBar"]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf ("nan": e.g. the AP of a class without ground truth)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class MetricsFile:
    """Appends JSON lines to `path`. A resumed run continues the same file: `resume_at=step` first
    drops what the interrupted run wrote after that step (it is done again) and its "end" lines.
    A new run (`resume_at=None`) starts the file afresh: one killed before its first checkpoint
    left lines that no checkpoint continues."""

    def __init__(self, path: Optional[Path], resume_at: Optional[int] = None) -> None:
        self.path = path
        if path is not None and resume_at is not None and path.exists():
            _truncate(path, resume_at)
        mode = "a" if resume_at is not None else "w"
        self._file = open(path, mode, encoding="utf-8") if path is not None else None  # noqa: SIM115

    def write(self, **record: Any) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps({k: _plain(v) for k, v in record.items()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ProgressBar:
    """A tqdm bar over optimizer steps; its text changes only on log steps (no per-step host sync).
    Without the bar (`bar=False`), each log step prints one plain line instead (logs, CI, `nohup`)."""

    def __init__(self, total: int, initial: int, *, bar: bool, messages: bool = True) -> None:
        self._bar = None
        self.messages = messages
        self.total, self.step = total, initial
        if bar and messages:
            from tqdm import tqdm  # not tqdm.auto: it warns in Jupyter without ipywidgets

            self._bar = tqdm(
                total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr, desc="train"
            )

    def update(self, n: int = 1) -> None:
        self.step += n
        if self._bar is not None:
            self._bar.update(n)

    def show(self, values: dict[str, float]) -> None:
        if self._bar is not None:
            self._bar.set_postfix({k: _short(v) for k, v in values.items()}, refresh=False)
        elif self.messages:
            width = len(str(self.total))
            text = "  ".join(f"{k} {_short(v)}" for k, v in values.items())
            print(f"step {self.step:>{width}}/{self.total}  {text}", file=sys.stderr, flush=True)

    def write(self, text: str) -> None:
        """A message line (rank 0 only), printed above the bar."""
        if not self.messages:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _truncate(path: Path, step: int) -> None:
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the kill
        if record.get("kind") != "end" and record.get("step", 0) <= step:
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(s + "\n" for s in kept), encoding="utf-8")
    os.replace(tmp, path)


def _short(v: float) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.3f}"
    return str(v)
