"""Class lists of the public data sets, for presets, recipes and generated data in their formats.

`VOC_CLASSES`: PASCAL VOC's 20 classes. `COCO_CLASSES`: torchvision's COCO labels 1..90 (label k is
COCO category id k; ids never annotated are 'N/A'); `COCO80_CLASSES`: the 80 annotated ones.
`COCO_CATEGORIES`: the 80 (category id, name) pairs of COCO 2014/2017 instances files, in id
order. The COCO loader gives category k of this list label k + 1.
"""

from __future__ import annotations

from torchvision.models.detection import SSD300_VGG16_Weights

__all__ = ["COCO_CATEGORIES", "COCO_CLASSES", "COCO80_CLASSES", "VOC_CLASSES", "named_classes"]

VOC_CLASSES = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
]

# torchvision's COCO detectors' 91 labels, from its weights' metadata: 0 is '__background__', and the
# ids of the COCO categories that were never annotated are 'N/A' slots, so that label k is COCO
# category id k. Names of labels 1 .. 90:
COCO_CLASSES: list[str] = list(SSD300_VGG16_Weights.COCO_V1.meta["categories"][1:])
# the 80 annotated categories in id order (contiguous labels 1 .. 80, as NVIDIA's SSD300)
COCO80_CLASSES: list[str] = [c for c in COCO_CLASSES if c != "N/A"]

COCO_CATEGORIES: list[tuple[int, str]] = [(k + 1, name) for k, name in enumerate(COCO_CLASSES) if name != "N/A"]

_NAMED = {"voc": list(VOC_CLASSES), "coco": list(COCO80_CLASSES)}


def named_classes(name: str) -> list[str]:
    """The class list called `name` ("voc": 20, "coco": 80)."""
    if name not in _NAMED:
        raise KeyError(f"no class list named {name!r}; known: {', '.join(_NAMED)}")
    return list(_NAMED[name])
