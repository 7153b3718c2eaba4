"""What every data set shares: an annotation `Record`, box checks, picture reading, `DetectionDataset`.

Coordinates: boxes are xyxy in pixels of the picture as displayed (its EXIF orientation applied,
as `read_image` does), continuous (a box over pixel columns
0 .. w-1 is [0, w]); labels are 1 .. K (0 is background, never a box's label).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ssdkit.data.errors import BadItemError
from ssdkit.io.pictures import as_255, open_picture, read_picture

__all__ = ["Record", "DetectionDataset", "read_image", "check_boxes", "path_text", "BOX_TOLERANCE"]

# Boxes may overshoot the picture by this many pixels (rounding in annotation tools, VOC's
# 1-based corners); they are clamped. Anything further out is an annotation error.
BOX_TOLERANCE = 1.0


def path_text(value: Any) -> Any:
    """A path field's value as a config file holds it: a `pathlib.Path` (or any os.PathLike, also inside
    a list) becomes its text, so Python callers may pass `VOCConfig(root=tmp_path)`; anything else is
    left for the field's own validation."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
    return value


@dataclass
class Record:
    """One item's annotation, read without decoding its picture.

    boxes `[G, 4]` float32 xyxy pixels; labels `[G]` int64 in 1..K; difficult, iscrowd `[G]` bool;
    size (h, w) the annotation states (None if it states none); source: the file holding the
    annotation (an XML, a JSON, or the picture itself); box_refs: how that file names each box
    (used in error messages).
    """

    path: str
    image_id: int
    boxes: Tensor
    labels: Tensor
    difficult: Tensor
    iscrowd: Tensor
    size: Optional[tuple[int, int]] = None
    source: str = ""
    box_refs: list[str] = field(default_factory=list)
    extra: Any = None  # what a data set's load_image needs besides the path (the shapes' drawing plan)

    def ref(self, g: int) -> str:
        return self.box_refs[g] if g < len(self.box_refs) else f"box {g}"


def _fmt(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box.tolist()) + "]"


def check_boxes(rec: Record, size: Optional[tuple[int, int]]) -> Tensor:
    """`rec.boxes` clamped to the picture `size` (h, w); raises `BadItemError` naming the file and
    the box for a box with x2 <= x1 or y2 <= y1, a non-finite coordinate, or one outside the picture."""
    b = rec.boxes.reshape(-1, 4).numpy()  # numpy: a few µs for the handful of boxes of a picture
    if len(b) == 0:
        return rec.boxes.reshape(0, 4)
    # NaN fails every comparison, so a non-finite box lands in `bad` too.
    bad = ~((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]) & np.isfinite(b).all(axis=1))
    if size is not None:
        h, w = size
        t = BOX_TOLERANCE
        bad |= (b[:, 0] < -t) | (b[:, 1] < -t) | (b[:, 2] > w + t) | (b[:, 3] > h + t)
    if bad.any():
        g = int(np.argmax(bad))
        box = b[g]
        where = rec.source or rec.path
        also = f" (image {rec.path})" if rec.source and rec.source != rec.path else ""
        if not np.isfinite(box).all():
            problem = "has a non-finite coordinate"
        elif box[2] <= box[0] or box[3] <= box[1]:
            problem = "is empty: x2 <= x1 or y2 <= y1"
        else:
            problem = f"lies outside the {size[1]}x{size[0]} (w x h) picture"  # type: ignore[index]
        raise BadItemError(where, f"{rec.ref(g)} xyxy {_fmt(box)} {problem}{also}")
    if size is None:
        return rec.boxes
    return torch.from_numpy(np.clip(b, 0, np.array([size[1], size[0], size[1], size[0]], dtype=b.dtype)))


def read_image(path: str | Path) -> tv_tensors.Image:
    """A picture file -> `[3, H, W]` uint8 RGB, upright; `BadItemError` naming the file if it is missing,
    unreadable, or claims more than `PIL.Image.MAX_IMAGE_PIXELS` pixels.

    EXIF orientation is applied (as predict does): annotations refer to the displayed pixels."""
    try:
        pixels = read_picture(open_picture(path))
    except FileNotFoundError:
        raise BadItemError(str(path), "no such image file") from None
    except ValueError as exc:
        raise BadItemError(str(path), f"cannot read the image: {exc.__cause__ or exc}") from exc
    if pixels.dtype != torch.uint8:  # 16-bit and 32-bit files: the data pipeline works in uint8
        pixels = as_255(pixels, torch.float32).round_().clamp_(0, 255).to(torch.uint8)
    return tv_tensors.Image(pixels)


class DetectionDataset(Dataset):
    """Base of the data sets: `ds[i]` -> (image, target).

    image: `tv_tensors.Image` uint8 `[3, H, W]`; target: "boxes" `tv_tensors.BoundingBoxes` XYXY pixels
    with canvas_size (H, W), "labels" `[G]` int64 in 1..K, "difficult" and "iscrowd" `[G]` bool,
    "image_id" int, "orig_size" (H, W), "path" str. Every box is kept and flagged; which ones training
    uses is the loader's choice (it drops crowd boxes, and difficult ones unless `keep_difficult`).
    Subclasses define `__len__`, `record(i)` and `class_names`; they may override `load_image`.
    """

    class_names: list[str]
    keep_difficult: bool = False

    def __len__(self) -> int:
        raise NotImplementedError

    def record(self, index: int) -> Record:
        raise NotImplementedError

    def load_image(self, rec: Record) -> tv_tensors.Image:
        return read_image(rec.path)

    def _index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a data set of {n} items")
        return index % n

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, dict[str, Any]]:
        rec = self.record(self._index(index))
        image = self.load_image(rec)
        h, w = int(image.shape[-2]), int(image.shape[-1])
        boxes = check_boxes(rec, (h, w))
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "labels": rec.labels,
            "difficult": rec.difficult,
            "iscrowd": rec.iscrowd,
            "image_id": rec.image_id,
            "orig_size": (h, w),
            "path": rec.path,
        }
        return image, target

    def ground_truth(self, errors: str = "raise") -> list[dict[str, Any]]:
        """Every item's boxes in pixels, read from the annotations alone (no picture is decoded).

        One dict per item, in item order: "boxes" `[G, 4]` float32 xyxy pixels, "labels", "difficult",
        "iscrowd", "image_id", "orig_size" (h, w) as the annotation states it, "path".
        errors="skip" leaves out items whose annotation is bad instead of raising `BadItemError`.
        """
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
        out = []
        for i in range(len(self)):
            try:
                rec = self.record(i)
                boxes = check_boxes(rec, rec.size)
            except BadItemError:
                if errors == "raise":
                    raise
                continue
            out.append(
                {
                    "boxes": boxes,
                    "labels": rec.labels,
                    "difficult": rec.difficult,
                    "iscrowd": rec.iscrowd,
                    "image_id": rec.image_id,
                    "orig_size": rec.size,
                    "path": rec.path,
                }
            )
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} items, {len(self.class_names)} classes)"
