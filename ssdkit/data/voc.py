"""`voc`: Pascal VOC folders (VOCdevkit/VOC2007 layout), one or several (VOC07+12).

Each root holds Annotations/<id>.xml, JPEGImages/<id>.jpg and ImageSets/Main/<image_set>.txt.
VOC corners are 1-based inclusive pixels; a box (xmin, ymin, xmax, ymax) covers pixel columns
xmin-1 .. xmax-1 counted from 0, so it becomes the continuous box [xmin - 1, ymin - 1, xmax, ymax].
Boxes marked <difficult>1</difficult> (or true/yes, as some tools write) are kept and flagged;
training drops them unless `keep_difficult` (as in the paper), evaluation keeps them flagged
(they count neither way).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal, Union

import defusedxml.ElementTree as SafeET
import torch
from defusedxml import DefusedXmlException
from pydantic import Field, field_validator

from ssdkit.categories import VOC_CLASSES
from ssdkit.data.base import DetectionDataset, Record, path_text
from ssdkit.data.errors import BadItemError
from ssdkit.data.fields import as_flag, as_size
from ssdkit.registry import DATASETS, ComponentConfig, part_config

__all__ = ["VOCConfig", "VOCDataset", "VOC_CLASSES"]


class VOCConfig(ComponentConfig):
    """Pascal VOC style folders; paths are used as given (relative ones from the working directory)."""

    type: Literal["voc"] = "voc"
    root: Union[str, list[str]] = Field(..., description="a VOC2007-style folder, or a list of them (07+12)")
    image_set: str = Field("trainval", description="ImageSets/Main/<image_set>.txt in each root")
    class_names: list[str] = Field(
        default_factory=lambda: list(VOC_CLASSES),
        min_length=1,
        description="object names, label k = class_names[k - 1]; in a run config, left out: the model's class_names "
        "(when it has them), else VOC's 20",
    )
    keep_difficult: bool = Field(False, description="train on boxes marked difficult too (the paper does not)")

    _root_text = field_validator("root", mode="before")(path_text)

    @field_validator("class_names")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"class_names lists a name twice: {v}")
        return v


def _text(node: ET.Element, tag: str, xml: Path, what: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise BadItemError(str(xml), f"{what} has no <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, xml: Path, what: str) -> float:
    text = _text(node, tag, xml, what)
    try:
        return float(text)
    except ValueError:
        raise BadItemError(str(xml), f"{what}: <{tag}> is not a number: {text!r}") from None


def _field(read, value: str, xml: Path, what: str):
    """`read(value, what)` (ssdkit.data.fields), its ValueError as a BadItemError naming the file."""
    try:
        return read(value, what)
    except ValueError as exc:
        raise BadItemError(str(xml), str(exc)) from None


@DATASETS.register("voc")
class VOCDataset(DetectionDataset):
    """Items in the order of the image-set files (root by root); `image_id` = the item's index."""

    def __init__(self, cfg: VOCConfig) -> None:
        """cfg: the roots, the image set, the class names (its `root` has no default: there is no default folder)."""
        self.config = cfg = part_config(cfg, VOCConfig)
        roots = [Path(r) for r in (cfg.root if isinstance(cfg.root, list) else [cfg.root])]
        self.class_names = list(cfg.class_names)
        self.keep_difficult = cfg.keep_difficult
        self._label = {name: k + 1 for k, name in enumerate(self.class_names)}
        self._items: list[tuple[Path, str]] = []
        for r in roots:
            listing = r / "ImageSets" / "Main" / f"{cfg.image_set}.txt"
            if not listing.is_file():
                raise FileNotFoundError(
                    f"{listing}: no such image-set file (root={r}, image_set={cfg.image_set!r}); a VOC root holds "
                    "Annotations/, JPEGImages/ and ImageSets/Main/<image_set>.txt"
                )
            ids = [line.split()[0] for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
            self._items.extend((r, i) for i in ids)

    def __len__(self) -> int:
        return len(self._items)

    def record(self, index: int) -> Record:
        root, stem = self._items[index]
        xml = root / "Annotations" / f"{stem}.xml"
        image = root / "JPEGImages" / f"{stem}.jpg"
        if not xml.is_file():
            raise BadItemError(str(xml), f"no such annotation file (image {image})")
        try:
            # defusedxml: entity declarations (the "billion laughs") and external references are
            # refused on any Python, whatever expat version it bundles.
            tree = SafeET.parse(xml)
        except ET.ParseError as exc:
            raise BadItemError(str(xml), f"not valid XML: {exc}") from exc
        except DefusedXmlException as exc:
            reason = f"refused: {exc}; VOC annotations need no DTD, entities or external files"
            raise BadItemError(str(xml), reason) from None
        ann = tree.getroot()
        size = None
        node = ann.find("size")
        if node is not None:
            w, h = (_field(as_size, _text(node, t, xml, "<size>"), xml, f"<size> <{t}>") for t in ("width", "height"))
            size = (h, w) if h > 0 and w > 0 else None  # some tools write 0: the picture tells
        boxes, labels, difficult, refs = [], [], [], []
        for k, obj in enumerate(ann.iter("object")):
            name = _text(obj, "name", xml, f"object {k}")
            what = f"object {k} ('{name}')"
            if name not in self._label:
                raise BadItemError(
                    str(xml), f"{what}: class '{name}' is not in class_names ({', '.join(self.class_names)})"
                )
            bnd = obj.find("bndbox")
            if bnd is None:
                raise BadItemError(str(xml), f"{what} has no <bndbox>")
            x1, y1, x2, y2 = (_number(bnd, t, xml, what) for t in ("xmin", "ymin", "xmax", "ymax"))
            flag = obj.find("difficult")
            text = "" if flag is None else flag.text or ""
            difficult.append(_field(as_flag, text, xml, f"{what} <difficult>"))
            boxes.append([x1 - 1, y1 - 1, x2, y2])
            labels.append(self._label[name])
            refs.append(f"{what} <bndbox> xmin={x1:g} ymin={y1:g} xmax={x2:g} ymax={y2:g}:")
        return Record(
            path=str(image),
            image_id=index,
            boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            labels=torch.tensor(labels, dtype=torch.int64),
            difficult=torch.tensor(difficult, dtype=torch.bool),
            iscrowd=torch.zeros(len(labels), dtype=torch.bool),
            size=size,
            source=str(xml),
            box_refs=refs,
        )
