"""`create_model`: a preset (or a config file), its classes and its weights in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ssdkit import presets
from ssdkit.model import SSD

__all__ = ["create_model"]


def create_model(name: str | Path, *, weights: Optional[str | Path] = None, **overrides: Any) -> SSD:
    """`build_model(presets.get(name, **overrides))`, then load `weights` if given (`ssdkit.sources.build`).

    `name`: a preset (`ssdkit.presets.names()`), or a model or run config file (YAML/JSON; a run
    config's `model` section is used). `weights`: a named weight of the preset (``"coco"``, see
    `ssdkit.presets.weights(name)`; fetched and cached by torch.hub) or a local file. Named weights
    fine-tune: with another `num_classes`, every tensor but the classification head's is loaded and
    the head starts afresh (a warning lists its tensors). The model comes in eval mode, ready to
    predict (call `.train()` to train it in a loop of your own).
    """
    from ssdkit import pretrained
    from ssdkit.sources import Source, build

    is_preset = str(name) in presets.names()
    cfg = presets.get(str(name), **overrides) if is_preset else _config_file(name, overrides)
    src = Source(cfg, None, weights, preset=str(name) if is_preset else None)
    named = pretrained.find(weights, preset=src.preset, kind="detector") if src.preset else None
    state = pretrained.detector_state(named) if named is not None else None  # before the build: fail fast offline
    return build(src, state=state).eval()


def _config_file(name: str | Path, overrides: dict[str, Any]):
    from ssdkit.sources import _CONFIG_SUFFIXES, model_config_file

    path = Path(name)
    if path.suffix.lower() not in _CONFIG_SUFFIXES:
        presets.get(str(name))  # the unknown-preset error, with its suggestion
    cfg = model_config_file(path)
    return cfg.model_validate({**cfg.model_dump(), **overrides}) if overrides else cfg
