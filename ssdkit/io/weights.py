"""Weight files: `save_weights` / `load_weights` for .safetensors (preferred) and .pth.

A file records the model's config (JSON, which YAML also reads) and the ssdkit version:
in the safetensors metadata (str -> str), or for .pth as the plain dict
``{"state_dict": ..., "config": str, "ssdkit_version": str, "meta": {str: str}}``.
Reading never unpickles code (safetensors, or torch.load with weights_only=True).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ssdkit.io.convert import detect_layout, from_ssd_pytorch, from_torchvision, load_pth, num_classes_of, strip_prefix
from ssdkit.io.paths import atomic_write
from ssdkit.text import shortlist

__all__ = ["save_weights", "load_weights", "read_state_dict", "read_ssd_state", "reject_url", "LoadResult"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")

_SAFETENSORS = (".safetensors",)
_TORCH = (".pth", ".pt")
_RESERVED = ("format", "config", "ssdkit_version")
_SHOWN = 5


class LoadResult(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]
    metadata: dict[str, str]


def _version() -> str:
    from ssdkit import __version__

    return __version__


def _config_text(model: nn.Module) -> str | None:
    cfg = getattr(model, "config", None)
    return cfg.model_dump_json() if hasattr(cfg, "model_dump_json") else None


def save_weights(model: nn.Module, path: str | Path, *, extra_meta: dict[str, str] | None = None) -> Path:
    """Write `model.state_dict()` to `path` (.safetensors, or .pth / .pt) atomically; returns the path.

    `extra_meta`: more str -> str entries for the metadata (not "format", "config", "ssdkit_version").
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SAFETENSORS + _TORCH:
        raise ValueError(f"{path}: weights files end in .safetensors (preferred), .pth or .pt")
    extra = dict(extra_meta or {})
    for k, v in extra.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"extra_meta must map str to str; got {k!r}: {type(v).__name__}")
        if k in _RESERVED:
            raise ValueError(f"extra_meta may not set the reserved key {k!r}")
    # Copies: safetensors refuses tensors that share memory, and the file must not alias the model.
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    config = _config_text(model)
    meta = {"format": "ssdkit", "ssdkit_version": _version(), **({"config": config} if config else {}), **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in _SAFETENSORS:
        from safetensors.torch import save

        data = save(state, metadata=meta)
        atomic_write(path, lambda f: f.write(data))
    else:
        obj: dict[str, Any] = {
            "state_dict": state,
            "config": config,
            "ssdkit_version": meta["ssdkit_version"],
            "meta": extra,
        }
        atomic_write(path, lambda f: torch.save(obj, f))
    return path


def reject_url(value: str | None) -> str | None:
    """A weights location is a local file path or a named weight (ssdkit.io.pretrained), never a URL."""
    if value is not None and _URL.match(str(value).strip()):
        raise ValueError(
            f"weights must be a local file path or a named weight (`ssdkit weights list`), got the URL {value!r}; "
            "ssdkit downloads only its named weights: fetch other files yourself and pass the downloaded file's path"
        )
    return value


def claim_limit(model: nn.Module) -> int:
    """Bytes a torch file loaded into `model` may claim once unpacked: its tensors four times over
    (a training checkpoint holds the optimizer's state too), plus 64 MB for metadata and small models."""
    own = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 4 * own + (64 << 20)


def read_state_dict(path: str | Path, *, max_bytes: int | None = None) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(state dict, metadata) of a .safetensors file or a torch file holding a bare state dict or
    save_weights' dict. Metadata: str -> str, empty when the file has none. `max_bytes`: refuse a
    torch file claiming more memory than that (see `claim_limit`) before reading it."""
    reject_url(str(path))
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no such weights file: {path}")
    if path.suffix.lower() in _SAFETENSORS:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118 (safe_open is not a dict)
        except SafetensorError as exc:
            raise ValueError(f"{path}: not a readable safetensors file: {exc}") from None
    obj = load_pth(path, max_bytes=max_bytes)
    meta: dict[str, str] = {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        meta = {k: v for k, v in obj.items() if k != "state_dict" and isinstance(v, str)}
        if isinstance(obj.get("meta"), dict):
            meta.update({k: v for k, v in obj["meta"].items() if isinstance(k, str) and isinstance(v, str)})
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # a training checkpoint: its model's weights
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"{path}: not a state dict: entries that are not tensors: {bad[:_SHOWN]}")
    return obj, meta


def _saved_num_classes(meta: dict[str, str]) -> int | None:
    try:
        n = json.loads(meta.get("config", "null") or "null").get("num_classes")
    except (ValueError, AttributeError):
        return None
    return n if isinstance(n, int) else None


def _listing(kind: str, keys: list[str]) -> str:
    return f"{len(keys)} {kind}: {shortlist(keys, _SHOWN)}"


def read_ssd_state(path: str | Path, *, max_bytes: int | None = None) -> tuple[dict[str, Tensor], dict[str, str]]:
    """`read_state_dict` (with its `max_bytes` bound), with a torchvision or ssd.pytorch SSD's keys
    converted to ssdkit's."""
    state, meta = read_state_dict(path, max_bytes=max_bytes)
    state = strip_prefix(state)
    layout = detect_layout(state)
    if layout != "ssdkit":
        convert = from_torchvision if layout == "torchvision" else from_ssd_pytorch
        try:
            state = convert(state)
        except ValueError as exc:
            raise ValueError(f"{path}: looks like a {layout} checkpoint but does not convert: {exc}") from None
    return state, meta


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> LoadResult:
    """Load a weights file into `model` (in place).

    Reads save_weights' files, bare state dicts, and full SSD checkpoints of torchvision's
    ssd300_vgg16 / ssdlite320_mobilenet_v3_large or ssd.pytorch (recognised by their keys and
    converted, see ssdkit.io.convert).
    A shape mismatch is always a ValueError naming the tensor and both shapes; missing or
    unexpected keys are one too when `strict`, otherwise they are returned.
    """
    state, meta = read_ssd_state(path, max_bytes=claim_limit(model))
    own = model.state_dict()
    for k in own:  # the model's order: "first" means first in the network
        v = state.get(k)
        if v is not None and tuple(v.shape) != tuple(own[k].shape):
            hint = ""
            saved, current = _saved_num_classes(meta), getattr(model, "num_classes", None)
            if saved is None and k.startswith("head."):
                try:
                    saved = num_classes_of(state)
                except ValueError:
                    pass
            if saved is not None and current is not None and saved != current:
                hint = f" (the file's model has num_classes={saved}; this one has {current})"
            raise ValueError(
                f"{path}: tensor {k!r} has shape {tuple(v.shape)} in the file but {tuple(own[k].shape)} "
                f"in the model{hint}"
            )
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        parts = [
            _listing(kind, keys) for kind, keys in (("missing keys", missing), ("unexpected keys", unexpected)) if keys
        ]
        raise ValueError(f"{path}: does not fit the model: " + "; ".join(parts))
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return LoadResult(missing, unexpected, meta)
