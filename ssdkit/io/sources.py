"""Where a model comes from: a run folder, a checkpoint, a weights file that records its config,
a run config, a model config or a preset. `ssdkit.load`, `ssdkit eval`, `export` and `predict`
all read their first argument through `resolve`; `ssdkit.create_model` builds a preset (or a config
file) with its named weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ssdkit.config.files import read_config_file
from ssdkit.config.model import SSDConfig
from ssdkit.config.overrides import validate_config

__all__ = [
    "Source",
    "resolve",
    "build",
    "load",
    "create_model",
    "init_from",
    "run_checkpoint",
    "model_config_file",
    "file_kind",
]

CHECKPOINTS = ("best.pt", "last.pt")  # a run folder's checkpoints, preferred first
_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
_EXPECTED = (
    "a run folder, a training checkpoint (.pt), a weights file saved by ssdkit, a run or model config, or a preset"
)


@dataclass
class Source:
    """A resolved model source. `run`: the run config (raw mapping) when the source has one;
    `weights`: a file, a named weight (with `preset`), or None (an untrained model)."""

    model: SSDConfig
    run: Optional[dict[str, Any]]
    weights: Optional[str | Path]
    preset: Optional[str] = None


def file_kind(path: Path) -> str:
    """What a file looks like, from its first bytes (for error messages)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        return f"an unreadable file ({exc.strerror})"
    magic = {
        b"\x89PNG": "a PNG picture",
        b"\xff\xd8\xff": "a JPEG picture",
        b"GIF8": "a GIF picture",
        b"PK\x03\x04": "a zip archive (a torch file?)",
        b"\x80": "a pickle (an old torch file?)",
        b"\x08": "an ONNX model?",
    }
    for prefix, kind in magic.items():
        if head.startswith(prefix):
            return kind
    if not head:
        return "an empty file"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data"
    return "a text file"


def run_checkpoint(folder: Path, which: str = "best") -> Path:
    """A run folder's checkpoint: `which` ("best" or "last"), falling back to the other."""
    order = CHECKPOINTS if which == "best" else CHECKPOINTS[::-1]
    for name in order:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: not a run folder (it holds neither best.pt nor last.pt); expected {_EXPECTED}")


def model_config_file(path: Path) -> SSDConfig:
    """The model config in a YAML/JSON file: the file itself, or a run config's `model` section."""
    if not path.is_file():
        raise FileNotFoundError(f"no such config file: {path}")
    data = read_config_file(path)
    if isinstance(data.get("model"), dict):
        data = data["model"]
    # the errors of SSDConfig.from_file: field paths and the closest key for an unknown one
    return validate_config(
        SSDConfig, data, f"{path}: not a model config, nor a run config with a valid `model` section"
    )


def _weights_meta(path: Path) -> dict[str, str]:
    """The str metadata of a weights file or checkpoint, with errors that say what the file is."""
    from ssdkit.io.weights import read_state_dict

    try:
        return read_state_dict(path)[1]
    except ValueError as exc:
        raise ValueError(
            f"{path}: {file_kind(path)}, not a checkpoint or weights file ({exc}); expected {_EXPECTED}"
        ) from None


def _from_weights(path: Path) -> Source:
    meta = _weights_meta(path)
    if not meta.get("config"):
        raise ValueError(
            f"{path}: a weights file that does not record its model config (a bare state dict); give the config "
            f"or preset it fits as well, e.g. `ssdkit.create_model(PRESET, weights=...)` or `--weights {path}` "
            "after a config"
        )
    try:
        model = SSDConfig.model_validate(json.loads(meta["config"]))
        run = json.loads(meta["run_config"]) if meta.get("run_config") else None
    except ValueError as exc:
        raise ValueError(f"{path}: the model config recorded in the file is not valid: {exc}") from exc
    return Source(model, run, path)


def resolve(value: str | Path, weights: Optional[str | Path] = None, which: str = "best") -> Source:
    """The `Source` that `value` names; `weights` (a file, or a preset's named weight) replaces the
    source's own. A run folder gives its `which` checkpoint ("best", else "last")."""
    path = Path(value).expanduser()
    if path.is_dir():
        src = _from_weights(run_checkpoint(path, which))
        if src.run is None and (path / "config.yaml").is_file():
            src.run = read_config_file(path / "config.yaml")
    elif path.suffix.lower() in _CONFIG_SUFFIXES:
        model = model_config_file(path)
        data = read_config_file(path)
        run = data if isinstance(data.get("model"), dict) else None
        # a run folder's config.yaml: its checkpoint comes with it
        beside = (
            [path.parent / n for n in CHECKPOINTS if (path.parent / n).is_file()] if path.name == "config.yaml" else []
        )
        src = Source(model, run, beside[0] if beside and weights is None else None)
    elif path.is_file():
        src = _from_weights(path)
    else:
        from ssdkit import presets

        try:
            cfg = presets.get(str(value))
        except KeyError as exc:
            raise FileNotFoundError(
                f"{value}: no such file or folder, and {exc.args[0]}; expected {_EXPECTED}"
            ) from None
        src = Source(cfg, None, None, preset=str(value))
    if weights is not None:
        src.weights = weights
    return src


def without_backbone_weights(cfg: SSDConfig) -> SSDConfig:
    """`cfg` with its backbone's starting weights (`backbone.weights`: imagenet, a file) left out: for a
    model whose whole weights are loaded next."""
    if getattr(cfg.backbone, "weights", None) is None:
        return cfg
    return cfg.model_copy(update={"backbone": cfg.backbone.model_copy(update={"weights": None})})


def build(src: Source, *, state: Optional[dict[str, Any]] = None):
    """The model a `Source` describes, with its weights loaded. `state`: a preset's named weights
    already read (`pretrained.detector_state`), so a caller can fetch them before building."""
    from ssdkit.build import build_model
    from ssdkit.io import pretrained
    from ssdkit.io.weights import load_weights

    # the whole model's weights replace the backbone's starting weights: neither fetch nor read those
    model = build_model(without_backbone_weights(src.model) if src.weights is not None else src.model)
    named = pretrained.find(src.weights, preset=src.preset, kind="detector") if src.preset else None
    if named is not None:
        state = state if state is not None else pretrained.detector_state(named)
        pretrained.load_fitting(model, state, f"named weights {named.name!r}")
    elif src.weights is not None:
        load_weights(model, src.weights)
    return model


def load(path: str | Path, which: str = "best"):
    """A trained model, ready for `predict` (in eval mode), from one path: a run folder (its best
    checkpoint, or `which="last"`), a training checkpoint, a weights file that records its config,
    or a run folder's config.yaml."""
    src = resolve(path, which=which)
    if src.weights is None:
        raise ValueError(
            f"{path}: a config without weights beside it; ssdkit.load expects a run folder, a checkpoint or a weights "
            "file saved by ssdkit (for a config or preset, use ssdkit.create_model(config, weights=...))"
        )
    return build(src).eval()


def create_model(name: str | Path, *, weights: Optional[str | Path] = None, **overrides: Any):
    """`build_model(presets.get(name, **overrides))`, then load `weights` if given (`ssdkit.io.sources.build`).

    `name`: a preset (`ssdkit.presets.names()`), or a model or run config file (YAML/JSON; a run
    config's `model` section is used). `weights`: a named weight of the preset (``"coco"``, see
    `ssdkit.presets.weights(name)`; fetched and cached by torch.hub) or a local file. Named weights
    fine-tune: with another `num_classes`, every tensor but the classification head's is loaded and
    the head starts afresh (a warning lists its tensors). The model comes in eval mode, ready to
    predict (call `.train()` to train it in a loop of your own).
    """
    from ssdkit import presets
    from ssdkit.io import pretrained

    is_preset = str(name) in presets.names()
    cfg = presets.get(str(name), **overrides) if is_preset else _config_file(name, overrides)
    src = Source(cfg, None, weights, preset=str(name) if is_preset else None)
    named = pretrained.find(weights, preset=src.preset, kind="detector") if src.preset else None
    state = pretrained.detector_state(named) if named is not None else None  # before the build: fail fast offline
    return build(src, state=state).eval()


def _config_file(name: str | Path, overrides: dict[str, Any]):
    from ssdkit import presets

    path = Path(name)
    if path.suffix.lower() not in _CONFIG_SUFFIXES:
        presets.get(str(name))  # the unknown-preset error, with its suggestion
    return model_config_file(path).merged(**overrides)


def init_from(model: Any, value: str | Path) -> list[str]:
    """Start `model` from `value` for fine-tuning (`load_fitting`): a named weight (full name, or
    an alias such as ``coco`` resolved by the model's backbone type), a weights file, a training
    checkpoint or a run folder (its best checkpoint, else its last). Returns the keys not loaded."""
    cfg = getattr(model, "config", None)
    backbone = getattr(getattr(cfg, "backbone", None), "type", None)
    from ssdkit.io.pretrained import detector_state, find, load_fitting

    named = find(str(value), backbone=backbone, kind="detector")
    if named is not None:
        return load_fitting(model, detector_state(named), f"named weights {named.name!r}")
    from ssdkit.io.weights import claim_limit, read_ssd_state

    path = Path(value).expanduser()
    if path.is_dir():
        path = run_checkpoint(path)
    state, _ = read_ssd_state(path, max_bytes=claim_limit(model))
    return load_fitting(model, state, str(path))
