"""`create_model`: a preset, its classes and local weights in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ssdkit import presets
from ssdkit.build import build_model
from ssdkit.model import SSD

__all__ = ["create_model"]


def create_model(name: str, *, weights: Optional[str | Path] = None, **overrides: Any) -> SSD:
    """`build_model(presets.get(name, **overrides))`, then load `weights` (a local file) if given;
    in eval mode, ready to predict (call `.train()` to train it in a loop of your own)."""
    model = build_model(presets.get(name, **overrides))
    if weights is not None:
        from ssdkit.weights import load_weights

        load_weights(model, weights)
    return model.eval()
