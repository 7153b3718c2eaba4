"""`check_dataset`: read a data set once and list what training would trip on or silently lose.

Every item's annotation is read (`dataset.record(i)`, as training does) and its picture decoded
(JPEGs at 1/8 scale, which still reads the whole file, so a truncated one fails). Reported:
pictures, boxes per class, pictures without boxes, and each defect with its file: unreadable
pictures or annotations, boxes that are inverted, zero-sized, not finite, outside the picture,
or under the augmentation's minimum size (dropped in training without a word), duplicate ids
or pictures. `CheckReport.failed` is true when any of those would stop training or lose boxes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ssdkit.data.base import BOX_TOLERANCE, DetectionDataset, Record
from ssdkit.data.errors import BadItemError
from ssdkit.io.picture_files import check_pixel_limit, displayed_size

__all__ = ["Problem", "CheckReport", "check_dataset", "picture_size", "KINDS"]

# kind -> (what it means, whether training would fail on it or lose boxes)
KINDS: dict[str, tuple[str, bool]] = {
    "unreadable picture": ("the picture is missing or cannot be decoded", True),
    "bad annotation": ("the annotation cannot be read (the item fails in training)", True),
    "inverted box": ("x2 < x1 or y2 < y1", True),
    "zero-sized box": ("x2 == x1 or y2 == y1", True),
    "non-finite box": ("a coordinate is NaN or infinite", True),
    "box outside picture": (f"more than {BOX_TOLERANCE:g} px outside the picture", True),
    "box under min_box_size": ("narrower or lower than the augmentation's min_box_size: dropped in training", True),
    "duplicate id": ("an image or annotation id used twice", True),
    "duplicate picture": ("the same picture file listed twice", True),
    "class mismatch": ("the data set's classes are not the model's", True),
    "size mismatch": (
        "the annotation's picture size is not the picture's (boxes are checked against the picture)",
        False,
    ),
}


@dataclass
class Problem:
    kind: str  # a key of KINDS
    where: str  # the file (annotation or picture) that holds it
    detail: str

    @property
    def fatal(self) -> bool:
        return KINDS[self.kind][1]


@dataclass
class CheckReport:
    """What `check_dataset` found. boxes: `[N, 4]` xyxy normalised by each picture's size (the valid,
    non-crowd boxes: what the priors see after resizing); problems: each defect with its file."""

    name: str
    class_names: list[str]
    pictures: int = 0
    boxes_per_class: Counter = field(default_factory=Counter)
    empty_pictures: int = 0
    crowd: int = 0
    difficult: int = 0
    problems: list[Problem] = field(default_factory=list)
    boxes: Tensor = field(default_factory=lambda: torch.zeros(0, 4))

    @property
    def failed(self) -> bool:
        return any(p.fatal for p in self.problems)

    def counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def summary(self, show: int = 10) -> str:
        """A plain-text report: totals, boxes per class, then each kind of defect with its first files."""
        total = sum(self.boxes_per_class.values())
        lines = [
            f"{self.name}: {self.pictures} pictures, {total} boxes, {self.empty_pictures} pictures without boxes"
            + (f", {self.crowd} crowd boxes (not trained on)" if self.crowd else "")
            + (f", {self.difficult} difficult boxes" if self.difficult else ""),
            "boxes per class:",
        ]
        cells = [f"{name} {self.boxes_per_class.get(name, 0)}" for name in self.class_names]
        width = max((len(c) for c in cells), default=8) + 2
        per_line = max(1, 100 // width)
        for k in range(0, len(cells), per_line):
            lines.append("  " + "".join(f"{c:<{width}}" for c in cells[k : k + per_line]).rstrip())
        if not self.problems:
            lines.append("no defects found")
        for kind, n in self.counts().items():
            what, fatal = KINDS[kind]
            lines.append(f"{'ERROR' if fatal else 'warning'}: {n} x {kind} ({what})")
            for p in [p for p in self.problems if p.kind == kind][:show]:
                lines.append(f"  {p.where}: {p.detail}")
            if n > show:
                lines.append(f"  ... and {n - show} more")
        return "\n".join(lines)


def picture_size(path: str) -> tuple[int, int]:
    """(h, w) of a picture file as displayed (EXIF orientation applied, as training reads it), after
    decoding it whole (JPEG at 1/8 scale: every byte is still read). Raises BadItemError naming the
    file when it is missing, claims too many pixels or cannot be decoded."""
    try:
        with Image.open(path) as im:
            check_pixel_limit(im)
            w, h = displayed_size(im)
            im.draft("RGB", (max(w // 8, 1), max(h // 8, 1)))  # no-op for other formats
            im.load()
    except FileNotFoundError:
        raise BadItemError(path, "no such image file") from None
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise BadItemError(path, f"cannot read the image: {type(exc).__name__}: {exc}") from exc
    return h, w


def _fmt(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box.tolist()) + "]"


def _box_problems(rec: Record, size: tuple[int, int], min_box_size: float) -> tuple[list[Problem], np.ndarray]:
    """Defects of `rec`'s boxes on a picture of `size` (h, w), and the mask of the usable boxes."""
    b = rec.boxes.reshape(-1, 4).double().numpy()
    h, w = size
    t = BOX_TOLERANCE
    finite = np.isfinite(b).all(axis=1)
    with np.errstate(invalid="ignore"):
        bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        inverted = finite & ((bw < 0) | (bh < 0))
        zero = finite & ~inverted & ((bw == 0) | (bh == 0))
        outside = finite & ~inverted & ~zero & ((b[:, 0] < -t) | (b[:, 1] < -t) | (b[:, 2] > w + t) | (b[:, 3] > h + t))
        # Training clamps to the picture, then drops what is under min_box_size px on a side.
        cw = np.clip(b[:, 2], 0, w) - np.clip(b[:, 0], 0, w)
        ch = np.clip(b[:, 3], 0, h) - np.clip(b[:, 1], 0, h)
        tiny = finite & ~inverted & ~zero & ~outside & ((cw < min_box_size) | (ch < min_box_size))
    where = rec.source or rec.path
    also = f" (image {rec.path})" if rec.source and rec.source != rec.path else ""
    found = []
    for mask, kind in (
        (~finite, "non-finite box"),
        (inverted, "inverted box"),
        (zero, "zero-sized box"),
        (outside, "box outside picture"),
        (tiny, "box under min_box_size"),
    ):
        for g in np.flatnonzero(mask).tolist():
            extra = f" on the {w}x{h} (w x h) picture" if kind == "box outside picture" else ""
            found.append(Problem(kind, where, f"{rec.ref(g).rstrip(':')} xyxy {_fmt(b[g])}{extra}{also}"))
    usable = finite & ~inverted & ~zero & ~outside & ~tiny
    return found, usable


def _duplicates(values: list[Any], kind: str, what: str, where: str) -> list[Problem]:
    counts = Counter(values)
    return [Problem(kind, where, f"{what} {v!r} appears {n} times") for v, n in counts.items() if n > 1]


def check_dataset(
    dataset: DetectionDataset,
    *,
    name: str = "data set",
    min_box_size: float = 1.0,
    decode: bool = True,
    progress: Optional[Callable[[Any], Any]] = None,
) -> CheckReport:
    """Read every item of `dataset` once; see the module docstring. `decode=False` reads only the
    pictures' headers (fast, but a truncated file passes); `progress` wraps the item range (tqdm)."""
    report = CheckReport(name=name, class_names=list(dataset.class_names))
    names = report.class_names
    ids, paths, kept = [], [], []
    items = range(len(dataset))
    for i in progress(items) if progress is not None else items:
        report.pictures += 1
        try:
            rec = dataset.record(i)
        except BadItemError as exc:
            report.problems.append(Problem("bad annotation", exc.path, exc.reason))
            continue
        ids.append(rec.image_id)
        paths.append(rec.path)
        try:
            size = picture_size(rec.path) if decode else _header(rec)
        except BadItemError as exc:
            report.problems.append(Problem("unreadable picture", exc.path, exc.reason))
            size = rec.size
            if size is None:
                continue
        if rec.size is not None and tuple(rec.size) != tuple(size):
            report.problems.append(
                Problem("size mismatch", rec.source or rec.path, f"says {rec.size[1]}x{rec.size[0]}, the picture "
                        f"{rec.path} is {size[1]}x{size[0]} (w x h)")
            )  # fmt: skip
        found, usable = _box_problems(rec, size, min_box_size)
        report.problems.extend(found)
        crowd = rec.iscrowd.numpy().astype(bool)
        report.crowd += int(crowd.sum())
        report.difficult += int(rec.difficult.sum())
        labels = rec.labels.numpy()
        report.boxes_per_class.update(names[k - 1] for k in labels.tolist() if 1 <= k <= len(names))
        if len(labels) == 0:
            report.empty_pictures += 1
        train = usable & ~crowd
        if train.any():
            h, w = size
            scale = torch.tensor([w, h, w, h], dtype=torch.float32)
            kept.append(rec.boxes.reshape(-1, 4)[torch.from_numpy(train)].float() / scale)
    source = getattr(dataset, "annotation_file", None) or name
    report.problems.extend(_duplicates(ids, "duplicate id", "image id", str(source)))
    report.problems.extend(_duplicates(paths, "duplicate picture", "picture", str(source)))
    ann_ids = getattr(dataset, "_ann_ids", None)  # COCO: ids of the annotations, which evaluation indexes by
    if ann_ids is not None:
        report.problems.extend(_duplicates(ann_ids.tolist(), "duplicate id", "annotation id", str(source)))
    report.boxes = torch.cat(kept) if kept else torch.zeros(0, 4)
    return report


def _header(rec: Record) -> tuple[int, int]:
    """(h, w) as displayed, from the picture's header only."""
    try:
        with Image.open(rec.path) as im:
            w, h = displayed_size(im)
    except FileNotFoundError:
        raise BadItemError(rec.path, "no such image file") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadItemError(rec.path, f"cannot read the image: {type(exc).__name__}: {exc}") from exc
    return h, w
