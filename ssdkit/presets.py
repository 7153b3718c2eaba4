"""Named configs: `ssdkit.presets.get(name, **overrides)`, `ssdkit.presets.names()`."""

from __future__ import annotations

import difflib
from typing import Any, Callable

from ssdkit.config import SSDConfig

__all__ = ["get", "names", "register_preset", "VOC_CLASSES"]

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]

_PRESETS: dict[str, Callable[[], dict[str, Any]]] = {}

# Caffe VGG16 weights expect BGR pixels with the ImageNet mean subtracted and no scaling;
# torchvision's VGG16 expects RGB 0..1 normalised by ImageNet mean/std.
_CAFFE_BGR = {"channel_order": "BGR", "scale": 1.0, "mean": (104.0, 117.0, 123.0), "std": (1.0, 1.0, 1.0)}
_TORCHVISION_SSD = {
    "channel_order": "RGB", "scale": 1 / 255, "mean": (0.48235, 0.45882, 0.40784),
    "std": (1 / 255, 1 / 255, 1 / 255),
}
_IMAGENET = {"channel_order": "RGB", "scale": 1 / 255, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def register_preset(name: str) -> Callable[[Callable[[], dict[str, Any]]], Callable[[], dict[str, Any]]]:
    def deco(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        if name in _PRESETS:
            raise ValueError(f"preset '{name}' is already defined")
        _PRESETS[name] = fn
        return fn

    return deco


def names() -> list[str]:
    return sorted(_PRESETS)


def get(name: str, **overrides: Any) -> SSDConfig:
    """The preset `name` as an `SSDConfig`, with top-level fields replaced by `overrides`
    (e.g. ``num_classes=5``; component overrides are dicts merged into the preset's)."""
    if name not in _PRESETS:
        close = difflib.get_close_matches(name, names(), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise KeyError(f"unknown preset '{name}'{hint} known: {', '.join(names())}")
    data = _PRESETS[name]()
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and value.get("type", data[key].get("type")) == data[key].get("type"):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    if "num_classes" in overrides and "class_names" not in overrides:
        data["class_names"] = None
    return SSDConfig.model_validate(data)


_SSD300_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
_SSD512_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]]


@register_preset("ssd300_vgg16")
def _ssd300_vgg16() -> dict[str, Any]:
    """The paper's VOC SSD300 (as in ssd.pytorch): sizes in pixels, Caffe BGR input."""
    return {
        "num_classes": 21,
        "class_names": VOC_CLASSES,
        "image_size": 300,
        "preprocess": _CAFFE_BGR,
        "backbone": {"type": "vgg16"},
        "priors": {
            "type": "ssd",
            "aspect_ratios": _SSD300_RATIOS,
            "min_sizes": [30, 60, 111, 162, 213, 264],
            "max_sizes": [60, 111, 162, 213, 264, 315],
            "steps": [8, 16, 32, 64, 100, 300],
        },
    }


@register_preset("ssd300_vgg16_coco")
def _ssd300_vgg16_coco() -> dict[str, Any]:
    """torchvision's ssd300_vgg16: COCO scales, RGB input normalised as torchvision does."""
    return {
        "num_classes": 91,
        "image_size": 300,
        "preprocess": _TORCHVISION_SSD,
        "backbone": {"type": "vgg16"},
        "priors": {
            "type": "ssd",
            "aspect_ratios": _SSD300_RATIOS,
            "scales": [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
            "steps": [8, 16, 32, 64, 100, 300],
        },
    }


@register_preset("ssd512_vgg16")
def _ssd512_vgg16() -> dict[str, Any]:
    """The paper's VOC SSD512: seven levels, extra conv12_2."""
    return {
        "num_classes": 21,
        "class_names": VOC_CLASSES,
        "image_size": 512,
        "preprocess": _CAFFE_BGR,
        "backbone": {"type": "vgg16", "highres": True},
        "priors": {
            "type": "ssd",
            "aspect_ratios": _SSD512_RATIOS,
            "min_sizes": [35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8],
            "max_sizes": [76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6],
            "steps": [8, 16, 32, 64, 128, 256, 512],
        },
    }
