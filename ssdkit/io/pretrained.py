"""Named pretrained weights, fetched and cached by torchvision's own machinery.

Each name stands for one of torchvision's weight enums: its URL, its metadata (categories,
published accuracy, recipe) and its cache file ``$TORCH_HOME/hub/checkpoints/<file name>``
(``~/.cache/torch`` without TORCH_HOME). torch.hub downloads a missing file once and checks the
hash in its name; reading uses ``torch.load(..., weights_only=True)``, so no code in a file runs.
Only these URLs are ever fetched: a weights field given any other URL is refused.

Offline (or with ``SSDKIT_OFFLINE=1``), a file that is not cached is a `WeightsNotCachedError`
naming the URL and the exact path where placing the file makes it work.
"""

from __future__ import annotations

import importlib
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from ssdkit.text import shortlist

__all__ = [
    "NamedWeights",
    "WeightsNotCachedError",
    "CATALOG",
    "LICENCE_NOTE",
    "names",
    "get",
    "find",
    "fetch",
    "load_fitting",
]

OFFLINE_ENV = "SSDKIT_OFFLINE"
# torchvision's documentation on all its pretrained weights (docs: "Models and pre-trained weights").
LICENCE_NOTE = (
    "torchvision: the pre-trained models provided in this library may have their own licenses or terms and "
    "conditions derived from the dataset used for training; it is your responsibility to determine whether "
    "you have permission to use the models for your use case"
)
_SHOWN = 5


@dataclass(frozen=True)
class NamedWeights:
    """One torchvision weights file under an ssdkit name.

    `target`: the preset a detector's weights fit, or the backbone type a classifier's fit.
    `alias`: the short name accepted where the target is known (``coco``, ``imagenet``).
    `backbone`: the backbone type of the model the file fits (detectors and backbones alike).
    """

    name: str
    alias: str
    kind: str  # "detector" | "backbone"
    target: str
    backbone: str
    enum: str  # dotted path of the torchvision enum member

    def weights_enum(self) -> Any:
        module, cls, member = self.enum.rsplit(".", 2)
        return getattr(getattr(importlib.import_module(module), cls), member)

    @property
    def label(self) -> str:
        """The enum as torchvision documents it, e.g. ``SSD300_VGG16_Weights.COCO_V1``."""
        return ".".join(self.enum.rsplit(".", 2)[-2:])

    @property
    def url(self) -> str:
        return self.weights_enum().url

    @property
    def meta(self) -> dict[str, Any]:
        return self.weights_enum().meta

    def cache_path(self) -> Path:
        """Where torch.hub keeps (and looks for) the file: ``torch.hub.get_dir()/checkpoints/<file name>``."""
        return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(self.url).path)

    def accuracy(self) -> dict[str, dict[str, float]]:
        """torchvision's published figures, e.g. ``{"COCO-val2017": {"box_map": 21.3}}``."""
        return dict(self.meta.get("_metrics", {}))

    def describe(self) -> dict[str, Any]:
        meta = self.meta
        return {
            "name": self.name,
            "alias": self.alias,
            "fits": f"preset {self.target}" if self.kind == "detector" else f"backbone {self.target}",
            "source": f"torchvision {self.label}",
            "url": self.url,
            "cache_path": str(self.cache_path()),
            "cached": self.cache_path().is_file(),
            "accuracy": self.accuracy(),
            "recipe": meta.get("recipe"),
            "notes": " ".join(str(meta.get("_docs", "")).split()),
            "licence": LICENCE_NOTE,
        }


_DET = "torchvision.models.detection"
CATALOG: dict[str, NamedWeights] = {
    w.name: w
    for w in (
        NamedWeights(
            "ssd300_vgg16_coco",
            "coco",
            "detector",
            "ssd300_vgg16_coco",
            "vgg16",
            f"{_DET}.SSD300_VGG16_Weights.COCO_V1",
        ),
        NamedWeights(
            "ssdlite320_mobilenet_v3_coco",
            "coco",
            "detector",
            "ssdlite320_mobilenet_v3",
            "mobilenet_v3_large",
            f"{_DET}.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1",
        ),
        NamedWeights(
            "vgg16_imagenet",
            "imagenet",
            "backbone",
            "vgg16",
            "vgg16",
            "torchvision.models.VGG16_Weights.IMAGENET1K_FEATURES",
        ),
        NamedWeights(
            "mobilenet_v3_large_imagenet",
            "imagenet",
            "backbone",
            "mobilenet_v3_large",
            "mobilenet_v3_large",
            "torchvision.models.MobileNet_V3_Large_Weights.IMAGENET1K_V1",
        ),
        NamedWeights(
            "resnet50_imagenet",
            "imagenet",
            "backbone",
            "resnet50",
            "resnet50",
            "torchvision.models.ResNet50_Weights.IMAGENET1K_V1",
        ),
    )
}


class WeightsNotCachedError(FileNotFoundError):
    """A named weights file is not in torch.hub's cache and could not be downloaded."""

    def __init__(self, weights: NamedWeights, reason: str) -> None:
        path = weights.cache_path()
        super().__init__(
            f"named weights {weights.name!r} (torchvision {weights.label}) are not cached and could not be "
            f"downloaded ({reason}). "
            f"Download {weights.url} where there is network (or run `ssdkit weights fetch {weights.name}` there) "
            f"and place the file at {path} (torch.hub's cache: $TORCH_HOME/hub/checkpoints, "
            "TORCH_HOME defaulting to ~/.cache/torch)"
        )
        self.weights = weights
        self.path = path


def names(kind: Optional[str] = None) -> list[str]:
    return sorted(n for n, w in CATALOG.items() if kind is None or w.kind == kind)


def get(name: str) -> NamedWeights:
    if name not in CATALOG:
        raise KeyError(f"no named weights {name!r}; known: {', '.join(names())}")
    return CATALOG[name]


def find(
    value: Any, *, preset: Optional[str] = None, backbone: Optional[str] = None, kind: Optional[str] = None
) -> Optional[NamedWeights]:
    """The named weights `value` stands for, or None when it is no name (a file path, say).

    `value` is a full name (``ssdlite320_mobilenet_v3_coco``) or an alias (``coco``) resolved by the
    `preset` or the `backbone` type it is for. A name that does not fit them is a ValueError.
    """
    if not isinstance(value, str):
        return None

    def fits(w: NamedWeights) -> bool:
        return (
            (kind is None or w.kind == kind)
            and (preset is None or w.target == preset)
            and (backbone is None or w.backbone == backbone)
        )

    if value in CATALOG:
        w = CATALOG[value]
        if not fits(w):
            raise ValueError(f"named weights {value!r} fit the {w.kind} {w.target!r}, not this model")
        return w
    called = [w for w in CATALOG.values() if w.alias == value]
    if not called:
        return None
    chosen = [w for w in called if fits(w)]
    if len(chosen) != 1:
        where = f"preset {preset!r}" if preset else f"backbone {backbone!r}" if backbone else "this model"
        listing = ", ".join(f"{w.name} ({w.kind} {w.target})" for w in called)
        raise ValueError(f"no single {value!r} weights for the {where}; weights called {value!r}: {listing}")
    return chosen[0]


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def fetch(weights: NamedWeights | str, progress: bool = True) -> dict[str, Tensor]:
    """The file's state dict (torchvision's key layout), downloading it into the cache if needed."""
    w = get(weights) if isinstance(weights, str) else weights
    path = w.cache_path()
    if not path.is_file() and offline():
        raise WeightsNotCachedError(w, f"{OFFLINE_ENV} is set")
    try:
        return w.weights_enum().get_state_dict(
            progress=progress, check_hash=True, weights_only=True, map_location="cpu"
        )
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: refused: not a plain weights file ({exc}); delete it and fetch again") from None
    except (RuntimeError, EOFError, OSError) as exc:  # torch.hub: URLError is an OSError, a bad hash a RuntimeError
        if path.is_file():
            raise ValueError(
                f"{path}: cached file for {w.name!r} is unreadable ({exc}); delete it, fetch again"
            ) from None
        raise WeightsNotCachedError(w, f"{type(exc).__name__}: {exc}") from None


def detector_state(weights: NamedWeights, progress: bool = True) -> dict[str, Tensor]:
    """A detector's named weights in ssdkit's key layout."""
    from ssdkit.io.convert import from_torchvision

    return from_torchvision(fetch(weights, progress))


def load_fitting(model: nn.Module, state: dict[str, Tensor], source: str) -> list[str]:
    """Load `state` (ssdkit keys) into `model` for fine-tuning; returns the keys not loaded.

    Classification-head tensors (``head.cls.*``) whose shapes differ (another number of classes)
    keep the model's fresh initialisation, with a warning listing them. Any other difference (a
    shape, a missing or an extra tensor) is a ValueError naming the tensor.
    """
    own = model.state_dict()
    skipped, problems = [], []
    for k, v in own.items():
        s = state.get(k)
        if s is None:
            problems.append(f"{k!r} is missing from the weights")
        elif tuple(s.shape) != tuple(v.shape):
            if k.startswith("head.cls."):
                skipped.append(k)
            else:
                problems.append(
                    f"tensor {k!r} has shape {tuple(s.shape)} in the weights but {tuple(v.shape)} in the model"
                )
    problems += [f"{k!r} in the weights has no place in the model" for k in state if k not in own]
    if problems:
        raise ValueError(
            f"{source} does not fit this model ({len(problems)} problems; only the classification head may "
            f"differ, for another number of classes): " + shortlist(problems, _SHOWN, "; ")
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    if skipped:
        warnings.warn(
            f"{source}: {len(skipped)} classification-head tensors re-initialised, not loaded: the model has "
            f"{getattr(model, 'num_classes', '?')} classes, the weights another number ("
            + shortlist(skipped, _SHOWN)
            + "); every other tensor was loaded",
            stacklevel=3,
        )
    return skipped
