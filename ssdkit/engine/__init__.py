"""Training: `ssdkit.train(cfg)` and `ssdkit train CONFIG.yaml` (docs/training.md).

    from ssdkit.config import RunConfig
    from ssdkit.engine import train
    cfg = RunConfig.from_file("run.yaml", overrides=["train.lr=0.01"])
    result = train(cfg)            # the same function as ssdkit.train(cfg) or ssdkit.train("run.yaml")
    result.best_checkpoint         # run folder: config.yaml, metrics.jsonl, last.pt, best.pt

`Trainer` is a short loop over steps; logging, evaluation, checkpointing, the NaN policy and the
learning-rate schedule are hooks (`ssdkit.engine.hooks`), and a user adds their own:
`train(cfg, hooks=[MyHook()])` with `class MyHook(HookBase)` (docs/training.md#hooks).
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use: `import ssdkit.engine.checkpoint` (or the CLI's --help) does not pay for
# the trainer and the evaluation package it imports.
_LAZY = {
    "train": "trainer",
    "Trainer": "trainer",
    "TrainResult": "trainer",
    "NonFiniteLossError": "hooks",
    "TooManySkippedError": "hooks",
    "HookBase": "hooks",
    "StepOutput": "hooks",
    "NaNPolicy": "hooks",
    "LRSchedule": "hooks",
    "SkippedItems": "hooks",
    "MetricsWriter": "hooks",
    "EvalHook": "hooks",
    "Checkpointer": "hooks",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"ssdkit.engine.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ssdkit.engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
