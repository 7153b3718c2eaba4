"""Generated shapes written as real data-set folders: a Pascal VOC tree or a COCO tree.

`ssdkit data make-shapes --format voc|coco OUT` calls `write_shapes`. The files are the formats'
own (JPEG pictures, VOC XML with 1-based corners, COCO JSON with [x, y, w, h] boxes), so the
loaders, `ssdkit data check` and the recipes run on files the way users' data arrive.

    voc:  OUT/JPEGImages/000001.jpg, OUT/Annotations/000001.xml, OUT/ImageSets/Main/{trainval,test}.txt
    coco: OUT/train2017/000000000001.jpg, OUT/val2017/..., OUT/annotations/instances_{train2017,val2017}.json

Class names: the shapes are named by `class_names` (default: the shapes' own names). A list
longer than the shape kinds (VOC's 20, COCO's 80) shares the kinds out: a shape of kind k gets
one of the names k, k + K, k + 2K, ... at random, so every name occurs; such a set exercises
the files and the pipeline, not learning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from ssdkit.data.shapes import SHAPE_KINDS, ShapesConfig, ShapesDataset

__all__ = ["write_shapes", "FORMATS", "VOC_SPLITS", "COCO_SPLITS"]

FORMATS = ("voc", "coco")
VOC_SPLITS = ("trainval", "test")  # the image-set files of a VOC root
COCO_SPLITS = ("train2017", "val2017")  # folders and instances_<split>.json of a COCO root


def _names_for(labels: np.ndarray, names: Sequence[str], kinds: int, rng: np.random.Generator) -> list[str]:
    """Shape labels 1..kinds -> names: kind k takes one of names[k-1], names[k-1+kinds], ... at random."""
    out = []
    for lab in labels.tolist():
        choices = range(lab - 1, len(names), kinds)
        out.append(names[choices[int(rng.integers(len(choices)))]])
    return out


def _voc_xml(stem: str, size: tuple[int, int], boxes: np.ndarray, names: list[str]) -> str:
    h, w = size
    objects = "".join(
        f"<object><name>{escape(n)}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        # VOC corners are 1-based inclusive: the continuous box [x0, x1) covers pixels x0+1 .. x1
        f"<bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for (x0, y0, x1, y1), n in zip(boxes.tolist(), names, strict=True)
    )
    return (
        f"<annotation><folder>shapes</folder><filename>{stem}.jpg</filename><source><database>ssdkit shapes"
        f"</database></source><size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
        f"<segmented>0</segmented>{objects}</annotation>\n"
    )


def write_shapes(
    out: str | Path,
    fmt: str,
    *,
    num_images: int = 200,
    val_images: int = 50,
    image_size: tuple[int, int] = (375, 500),
    class_names: Optional[Sequence[str]] = None,
    category_ids: Optional[Sequence[int]] = None,
    seed: int = 0,
    quality: int = 90,
    min_objects: int = 0,
    max_objects: int = 6,
) -> Path:
    """Write `num_images` training and `val_images` validation pictures of shapes under `out`.

    image_size: (height, width) in pixels (default VOC-like 375 x 500); class_names: the names the
    files use (default the shape kinds'); category_ids: COCO ids of those names (default 1..N);
    quality: JPEG quality; min_objects / max_objects: shapes per picture (0: some pictures have none).
    Returns `out`."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if num_images < 1 or val_images < 0:
        raise ValueError(f"need num_images >= 1 and val_images >= 0, got {num_images} and {val_images}")
    names = list(class_names) if class_names else ["circle", "square", "triangle"]
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique, got {names}")
    kinds = [n for n in names if n in SHAPE_KINDS] if set(names) <= set(SHAPE_KINDS) else None
    shapes = ShapesDataset(
        ShapesConfig(
            num_images=num_images + val_images,
            seed=seed,
            image_size=tuple(image_size),
            classes=kinds or list(SHAPE_KINDS[: min(len(names), len(SHAPE_KINDS))]),
            min_objects=min_objects,
            max_objects=max_objects,
        )
    )
    ids = list(category_ids) if category_ids is not None else list(range(1, len(names) + 1))
    if len(ids) != len(names) or len(set(ids)) != len(ids):
        raise ValueError(f"category_ids must give one distinct id per class name ({len(names)}), got {ids}")
    out = Path(out)
    splits = VOC_SPLITS if fmt == "voc" else COCO_SPLITS
    ranges = {splits[0]: range(num_images), splits[1]: range(num_images, num_images + val_images)}
    writer = _write_voc if fmt == "voc" else _write_coco
    writer(out, shapes, ranges, names, ids, seed, quality)
    return out


def _items(shapes: ShapesDataset, index: int, names: list[str], seed: int):
    """(picture HWC uint8, boxes [G, 4] int xyxy pixels, names [G]) of item `index`."""
    image, target = shapes[index]
    boxes = target["boxes"].numpy().round().astype(np.int64)
    rng = np.random.default_rng([seed, index, 2])
    labels = target["labels"].numpy()
    named = (
        [shapes.class_names[k - 1] for k in labels.tolist()]
        if set(shapes.class_names) == set(names)
        else _names_for(labels, names, len(shapes.class_names), rng)
    )
    return image.permute(1, 2, 0).numpy(), boxes, named


def _write_voc(out: Path, shapes, ranges, names, ids, seed, quality) -> None:
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for split, indices in ranges.items():
        stems = []
        for i in indices:
            stem = f"{i + 1:06d}"
            picture, boxes, named = _items(shapes, i, names, seed)
            Image.fromarray(picture).save(out / "JPEGImages" / f"{stem}.jpg", quality=quality)
            (out / "Annotations" / f"{stem}.xml").write_text(_voc_xml(stem, picture.shape[:2], boxes, named))
            stems.append(stem)
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))


def _write_coco(out: Path, shapes, ranges, names, ids, seed, quality) -> None:
    cat_of = dict(zip(names, ids, strict=True))
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    ann_id = 0
    for split, indices in ranges.items():
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in indices:
            picture, boxes, named = _items(shapes, i, names, seed)
            file_name = f"{i + 1:012d}.jpg"
            Image.fromarray(picture).save(folder / file_name, quality=quality)
            h, w = picture.shape[:2]
            images.append({"id": i + 1, "file_name": file_name, "width": w, "height": h})
            for (x0, y0, x1, y1), n in zip(boxes.tolist(), named, strict=True):
                ann_id += 1
                bw, bh = x1 - x0, y1 - y0
                anns.append(
                    {"id": ann_id, "image_id": i + 1, "category_id": cat_of[n], "bbox": [x0, y0, bw, bh],
                     "area": bw * bh, "iscrowd": 0}
                )  # fmt: skip
        data = {
            "info": {"description": "ssdkit generated shapes"},
            "images": images,
            "annotations": anns,
            "categories": [{"id": c, "name": n, "supercategory": "shape"} for n, c in zip(names, ids, strict=True)],
        }
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
