"""Class lists of the public data sets, for recipes and generated data in their formats.

`COCO_CATEGORIES`: the 80 (category id, name) pairs of COCO 2014/2017 instances files, in id
order; ids run 1..90 with gaps (from torchvision's 91-label list in `ssdkit.presets`, whose
label k is category id k). The COCO loader gives category k of this list label k + 1.
"""

from __future__ import annotations

from ssdkit.presets import COCO80_CLASSES, COCO_CLASSES, VOC_CLASSES

__all__ = ["COCO_CATEGORIES", "VOC_CLASSES", "named_classes"]

COCO_CATEGORIES: list[tuple[int, str]] = [(k + 1, name) for k, name in enumerate(COCO_CLASSES) if name != "N/A"]

_NAMED = {"voc": list(VOC_CLASSES), "coco": list(COCO80_CLASSES)}


def named_classes(name: str) -> list[str]:
    """The class list called `name` ("voc": 20, "coco": 80)."""
    if name not in _NAMED:
        raise KeyError(f"no class list named {name!r}; known: {', '.join(_NAMED)}")
    return list(_NAMED[name])
