"""Named configs: `ssdkit.presets.get(name, **overrides)`, `ssdkit.presets.names()`.

The presets live in `PRESETS`, an `ssdkit.registry.Registry` that fails as the component registries do
("unknown preset 'x'; did you mean 'y'? known: ..."); a plugin adds its own with `@register_preset`.
"""

from __future__ import annotations

from typing import Any, Callable

from pydantic import BaseModel

from ssdkit.categories import COCO80_CLASSES, COCO_CLASSES, VOC_CLASSES
from ssdkit.config.model import SSDConfig
from ssdkit.registry import Entry, Registry

__all__ = ["PRESETS", "PresetRegistry", "get", "names", "weights", "register_preset"]

PresetFn = Callable[[], dict[str, Any]]


class PresetRegistry(Registry):
    """The `Registry` of presets: name -> a function returning the preset's raw `SSDConfig` mapping, whose
    config class is `SSDConfig`. Lookups discover plugins first and raise `UnknownComponentError` (a
    `KeyError`) for a name no preset has, as every component registry does."""

    def __init__(self) -> None:
        super().__init__("preset", build_args=())  # a preset function takes no argument

    def register(self, name: str, *, config: type[BaseModel] = SSDConfig) -> Callable[[PresetFn], PresetFn]:
        def deco(fn: PresetFn) -> PresetFn:
            if name in self._entries:
                raise ValueError(f"preset '{name}' is already defined")
            self._entries[name] = Entry(name, fn, config, f"{fn.__module__}.{fn.__qualname__}", takes_config=False)
            return fn

        return deco


PRESETS = PresetRegistry()

# Caffe VGG16 weights expect BGR pixels with the ImageNet mean subtracted and no scaling;
# torchvision's VGG16 expects RGB 0..1 normalised by ImageNet mean/std.
_CAFFE_BGR = {"channel_order": "BGR", "scale": 1.0, "mean": (104.0, 117.0, 123.0), "std": (1.0, 1.0, 1.0)}
_TORCHVISION_SSD = {
    "channel_order": "RGB",
    "scale": 1 / 255,
    "mean": (0.48235, 0.45882, 0.40784),
    "std": (1 / 255, 1 / 255, 1 / 255),
}
_IMAGENET = {"channel_order": "RGB", "scale": 1 / 255, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def register_preset(name: str) -> Callable[[PresetFn], PresetFn]:
    """Decorator adding a preset: a function returning the raw `SSDConfig` mapping (`PRESETS.register`)."""
    return PRESETS.register(name)


def names() -> list[str]:
    return PRESETS.names()


def weights(name: str) -> list[dict[str, Any]]:
    """The named pretrained weights that fit preset `name` (`create_model(name, weights=alias)`), each
    with its source, URL, cache path, published accuracy, recipe and licence note."""
    from ssdkit.io import pretrained

    PRESETS.get(name)  # the unknown-preset error
    return [w.describe() for w in pretrained.CATALOG.values() if w.kind == "detector" and w.target == name]


def get(name: str, **overrides: Any) -> SSDConfig:
    """The preset `name` as an `SSDConfig`, with top-level fields replaced by `overrides`
    (e.g. ``num_classes=5``; component overrides are dicts merged into the preset's)."""
    return SSDConfig.model_validate(PRESETS.get(name)()).merged(**overrides)


_SSD300_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
_SSD512_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]]


def _ssd300_priors(min_sizes: list[float], max_sizes: list[float]) -> dict[str, Any]:
    """SSD300's six levels with sizes in pixels, centres on the paper's steps, whole priors clamped
    to the picture (ssd.pytorch and NVIDIA clamp all four numbers)."""
    return {
        "type": "ssd",
        "aspect_ratios": _SSD300_RATIOS,
        "min_sizes": min_sizes,
        "max_sizes": max_sizes,
        "steps": [8, 16, 32, 64, 100, 300],
        "clip_centres": True,
    }


def _hard_nms(score_threshold: float, iou_threshold: float, top_k: int, max_detections: int, **more: Any) -> dict:
    """Hard (per-class) NMS with these thresholds and counts; `more`: its other fields."""
    return {
        "type": "hard",
        "score_threshold": score_threshold,
        "iou_threshold": iou_threshold,
        "top_k": top_k,
        "max_detections": max_detections,
        **more,
    }


@register_preset("ssd300_vgg16")
def _ssd300_vgg16() -> dict[str, Any]:
    """The paper's VOC SSD300 (as in ssd.pytorch): sizes in pixels, Caffe BGR input."""
    return {
        "num_classes": 21,
        "class_names": VOC_CLASSES,
        "image_size": 300,
        "preprocess": _CAFFE_BGR,
        "backbone": {"type": "vgg16"},
        "priors": _ssd300_priors([30, 60, 111, 162, 213, 264], [60, 111, 162, 213, 264, 315]),
    }


@register_preset("ssd300_vgg16_coco")
def _ssd300_vgg16_coco() -> dict[str, Any]:
    """torchvision's ssd300_vgg16: COCO scales, RGB input normalised as torchvision does."""
    return {
        "num_classes": 91,
        "class_names": COCO_CLASSES,
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
            "clip_centres": True,  # as ssd.pytorch; no centre of this grid lies outside [0, 1] anyway
        },
    }


@register_preset("ssdlite320_mobilenet_v3")
def _ssdlite320_mobilenet_v3() -> dict[str, Any]:
    """torchvision's ssdlite320_mobilenet_v3_large: COCO (91 labels), depthwise head, input scaled to [-1, 1].

    torchvision's DefaultBoxGenerator(min_ratio=0.2, max_ratio=0.95) spaces six scales
    linearly and appends 1.0 for the last level's s'_k (not the paper's extrapolated 1.1),
    hence explicit `scales`; no steps: priors are centred on each map's own cells. The reduced tail
    (C5 480 channels) is torchvision's when it builds SSDLite without ImageNet backbone weights, as
    for its COCO weights; starting from ImageNet weights takes ``backbone: {reduced_tail: false}``.
    """
    return {
        "num_classes": 91,
        "class_names": COCO_CLASSES,
        "image_size": 320,
        "preprocess": {"channel_order": "RGB", "scale": 1 / 255, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
        "backbone": {"type": "mobilenet_v3_large", "reduced_tail": True},
        "head": {"type": "depthwise"},
        "priors": {
            "type": "ssd",
            "aspect_ratios": [[2, 3]] * 6,
            "scales": [0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0],
        },
        "postprocess": _hard_nms(0.001, 0.55, top_k=300, max_detections=300),
    }


@register_preset("ssd300_resnet50")
def _ssd300_resnet50() -> dict[str, Any]:
    """NVIDIA's SSD300 v1.1: ResNet-50 trunk, COCO's 80 classes + background, DefaultBoxes300 priors,
    ImageNet-normalised RGB; post-processing as NVIDIA evaluates (score > 0.05, IoU 0.5, 200 per class and image)."""
    return {
        "num_classes": 81,
        "class_names": COCO80_CLASSES,
        "image_size": 300,
        "preprocess": _IMAGENET,
        "backbone": {"type": "resnet50"},
        "priors": _ssd300_priors([21, 45, 99, 153, 207, 261], [45, 99, 153, 207, 261, 315]),
        "postprocess": _hard_nms(0.05, 0.5, top_k=200, max_detections=200),
    }


@register_preset("ssdlite300_mobilenet_v2_tf")
def _ssdlite300_mobilenet_v2_tf() -> dict[str, Any]:
    """The TF OD API's ssdlite_mobilenet_v2_coco (90 COCO labels + background) as TensorFlow builds it:
    TF "SAME" padding, TF1's asymmetric bilinear resize, x = pixel * 2/255 - 1, ssd_anchor_generator
    anchors (0.2 .. 0.95, reduced lowest layer), [ty, tx, th, tw] offsets with scale factors 10, 10, 5, 5,
    sigmoid scores (trained with a weighted sigmoid loss: focal with gamma 0, no alpha), and TF's
    post-processing (scores > 1e-8, IoU 0.6, 100 per image, boxes clipped after NMS).
    `ssdkit.io.tfod.from_tf_object_detection` reads all of this from a frozen graph instead."""
    return {
        "num_classes": 91,
        "image_size": 300,
        "preprocess": {
            "channel_order": "RGB",
            "scale": 2 / 255,
            "mean": (1.0, 1.0, 1.0),
            "std": (1.0, 1.0, 1.0),
            "resize": "bilinear_asymmetric",
        },
        "backbone": {"type": "mobilenet_v2", "padding": "tf_same"},
        "head": {"type": "depthwise"},
        "priors": {"type": "tf_ssd"},
        "box_coder": {"type": "ssd", "order": "yxhw"},
        "loss": {"type": "focal", "mode": "sigmoid", "alpha": None, "gamma": 0.0},
        "postprocess": _hard_nms(1e-8, 0.6, top_k=100_000, max_detections=100, clip="after_nms"),
    }
