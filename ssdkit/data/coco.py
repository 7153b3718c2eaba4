"""`coco`: a COCO instances JSON file and its pictures folder.

COCO category ids are not contiguous (1..90 for 80 classes); labels are: the categories sorted
by id get labels 1..K. `label_to_cat_id` / `cat_id_to_label` map between the two (evaluation
writes results with category ids). Boxes are COCO `[x, y, w, h]` pixels -> xyxy `[x, y, x + w, y + h]`.
Crowd annotations (`iscrowd: 1`, also `"1"` or `true` as some exporters write) are kept and
flagged: training leaves them out, COCO evaluation uses them as "ignore" regions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch
from pydantic import Field, field_validator

from ssdkit.config.parsing import load_json
from ssdkit.data.base import DetectionDataset, Record, path_text
from ssdkit.data.fields import as_flag
from ssdkit.registry import DATASETS, ComponentConfig, part_config

__all__ = ["COCOConfig", "COCODataset"]


class COCOConfig(ComponentConfig):
    """A COCO-format data set; paths are used as given (relative ones from the working directory)."""

    type: Literal["coco"] = "coco"
    images_dir: str = Field(..., description="folder the images' file_name entries are relative to")
    annotations: str = Field(..., description="instances JSON file (images, annotations, categories)")

    _path_text = field_validator("images_dir", "annotations", mode="before")(path_text)


def _need(obj: Any, key: str, kind: Union[type, tuple[type, ...]], where: str, path: Path) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ValueError(f"{path}: {where} has no '{key}'")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{path}: {where} '{key}' must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _read_file(path: Path) -> dict:
    """The annotation file's top-level object; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such COCO annotation file")
    try:
        data = load_json(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    except ValueError as exc:  # a duplicate key, deep nesting
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be an object with images, annotations, categories")
    return data


def _categories(data: dict, path: Path) -> tuple[list[int], dict[int, str]]:
    """(category ids ascending, id -> name) from "categories": ids and names must be unique."""
    cats = _need(data, "categories", list, "the file", path)
    if not cats:
        raise ValueError(f"{path}: 'categories' is empty")
    by_id: dict[int, str] = {}
    for k, c in enumerate(cats):
        cid = _need(c, "id", int, f"categories[{k}]", path)
        if cid in by_id:
            raise ValueError(f"{path}: category id {cid} appears twice")
        by_id[cid] = _need(c, "name", str, f"categories[{k}]", path)
    named: dict[str, int] = {}
    for cid, name in sorted(by_id.items()):
        if name in named:
            raise ValueError(
                f"{path}: categories {named[name]} and {cid} are both named {name!r}; per-class results "
                "would mix them: rename one, or merge their annotations into one category"
            )
        named[name] = cid
    return sorted(by_id), by_id


def _annotations(
    data: dict, path: Path, index_of: dict[int, int], cat_id_to_label: dict[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ "annotations" in file order as arrays: owner image index `[A]`, bbox xywh `[A, 4]` float64,
    label `[A]`, iscrowd `[A]` bool, annotation id `[A]`; every reference checked."""
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise ValueError(f"{path}: 'annotations' must be a list")
    owner = np.empty(len(anns), dtype=np.int64)
    xywh = np.empty((len(anns), 4), dtype=np.float64)
    labels = np.empty(len(anns), dtype=np.int64)
    crowd = np.empty(len(anns), dtype=bool)
    ann_ids = np.empty(len(anns), dtype=np.int64)
    for k, a in enumerate(anns):
        aid = a.get("id", k) if isinstance(a, dict) else k
        where = f"annotations[{k}] (id {aid})"
        iid = _need(a, "image_id", int, where, path)
        cid = _need(a, "category_id", int, where, path)
        bbox = _need(a, "bbox", list, where, path)
        if iid not in index_of:
            raise ValueError(f"{path}: {where} refers to image id {iid}, which 'images' does not list")
        if cid not in cat_id_to_label:
            raise ValueError(f"{path}: {where} has category_id {cid}, which 'categories' does not list")
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise ValueError(f"{path}: {where} bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
        owner[k], labels[k], ann_ids[k] = index_of[iid], cat_id_to_label[cid], aid
        xywh[k] = bbox
        try:
            crowd[k] = as_flag(a.get("iscrowd", 0), "iscrowd")
        except ValueError as exc:
            raise ValueError(f"{path}: {where} {exc}") from None
    return owner, xywh, labels, crowd, ann_ids


@DATASETS.register("coco")
class COCODataset(DetectionDataset):
    """Items in the order of the JSON's "images" list (images without annotations included)."""

    def __init__(self, cfg: COCOConfig) -> None:
        """cfg: the annotation file and the pictures' folder (both required: there are no default paths)."""
        self.config = cfg = part_config(cfg, COCOConfig)
        self.images_dir = Path(cfg.images_dir)
        self.annotation_file = path = Path(cfg.annotations)
        data = _read_file(path)
        cat_ids, by_id = _categories(data, path)
        self.class_names = [by_id[c] for c in cat_ids]
        self.label_to_cat_id: dict[int, int] = {k + 1: c for k, c in enumerate(cat_ids)}
        self.cat_id_to_label: dict[int, int] = {c: k for k, c in self.label_to_cat_id.items()}
        index_of = self._read_images(_need(data, "images", list, "the file", path), path)
        owner, xywh, labels, crowd, ann_ids = _annotations(data, path, index_of, self.cat_id_to_label)
        # Annotations grouped by image (stable: file order within an image), as flat arrays: a
        # COCO-sized file stays compact and is shared, not copied, by forked workers.
        order = np.argsort(owner, kind="stable")
        self._xywh, self._labels, self._crowd, self._ann_ids = xywh[order], labels[order], crowd[order], ann_ids[order]
        self._start = np.searchsorted(owner[order], np.arange(len(self._files) + 1))

    def _read_images(self, images: list, path: Path) -> dict[int, int]:
        """Fill the per-image lists (file, id, (h, w)) from the JSON's "images"; returns id -> index."""
        self._files: list[str] = []
        self._ids: list[int] = []
        self._sizes: list[tuple[int, int]] = []
        index_of: dict[int, int] = {}
        for k, im in enumerate(images):
            iid = _need(im, "id", int, f"images[{k}]", path)
            if iid in index_of:
                raise ValueError(f"{path}: image id {iid} appears twice")
            index_of[iid] = k
            self._files.append(_need(im, "file_name", str, f"images[{k}] (id {iid})", path))
            self._ids.append(iid)
            w = _need(im, "width", int, f"images[{k}] (id {iid})", path)
            h = _need(im, "height", int, f"images[{k}] (id {iid})", path)
            self._sizes.append((h, w))
        return index_of

    def __len__(self) -> int:
        return len(self._files)

    def record(self, index: int) -> Record:
        a, b = int(self._start[index]), int(self._start[index + 1])
        xywh = torch.from_numpy(self._xywh[a:b])
        boxes = torch.cat((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), dim=1).float()
        refs = [
            f"annotation id {i} bbox [x, y, w, h] = [{', '.join(f'{v:g}' for v in box)}]:"
            for i, box in zip(self._ann_ids[a:b].tolist(), self._xywh[a:b].tolist(), strict=True)
        ]
        return Record(
            path=str(self.images_dir / self._files[index]),
            image_id=self._ids[index],
            boxes=boxes,
            labels=torch.from_numpy(self._labels[a:b].copy()),
            difficult=torch.zeros(b - a, dtype=torch.bool),
            iscrowd=torch.from_numpy(self._crowd[a:b].copy()),
            size=self._sizes[index],
            source=str(self.annotation_file),
            box_refs=refs,
        )
