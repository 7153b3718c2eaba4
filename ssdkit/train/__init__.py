"""Training: `ssdkit.train(cfg)` and `ssdkit train CONFIG.yaml` (docs/training.md).

    from ssdkit.train import RunConfig, train
    cfg = RunConfig.from_file("run.yaml", overrides=["train.lr=0.01"])
    result = train(cfg)            # also: ssdkit.train(cfg) or ssdkit.train("run.yaml")
    result.best_checkpoint         # run folder: config.yaml, metrics.jsonl, last.pt, best.pt

The package itself can be called (`ssdkit.train(...)` is `ssdkit.train.train(...)`), so
the function and its module share the one name without hiding each other.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__all__ = [
    "RunConfig",
    "TrainConfig",
    "EvalConfig",
    "train",
    "Trainer",
    "TrainResult",
    "NonFiniteLossError",
    "TooManySkippedError",
]

# Imported on first use: `import ssdkit.train.checkpoint` (or the CLI's --help) does not pay for
# the data and evaluation packages.
_LAZY = {
    "RunConfig": "config",
    "TrainConfig": "config",
    "EvalConfig": "config",
    "train": "trainer",
    "Trainer": "trainer",
    "TrainResult": "trainer",
    "NonFiniteLossError": "trainer",
    "TooManySkippedError": "trainer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"ssdkit.train.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ssdkit.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """`ssdkit.train(cfg, ...)`: see `ssdkit.train.trainer.train`."""
        from ssdkit.train.trainer import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
