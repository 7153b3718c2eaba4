"""COCO detection metric: AP@[.5:.95], AP50, AP75, AP and AR by object size, through pycocotools.

The detections and ground truths are converted to COCO JSON (boxes xywh, the labels as category ids,
areas) and scored by pycocotools' own `COCOeval` (or faster-coco-eval's C++ port of it, when installed):
nothing of the protocol is reimplemented here.
Differences from the VOC protocol (ssdkit.evaluation.metrics.voc) that pycocotools brings: a match needs IoU
>= the threshold (VOC: >); a detection whose best box is taken tries the next best (VOC: it is a
false positive); `iscrowd` boxes are COCO's ignore regions, while `difficult` has no COCO meaning and
is scored as an ordinary box; at most 100 detections per image and class count; AP is sampled at
101 recall points.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import torch

from ssdkit.evaluation.metrics.inputs import Flat, check_same_length, flatten_ground_truths, flatten_predictions
from ssdkit.evaluation.metrics.voc import PRCurve

__all__ = ["coco_map", "to_coco_json", "COCO_STATS", "BACKENDS"]

# The order of COCOeval.stats.
COCO_STATS = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)


def _xywh(boxes: torch.Tensor) -> list[list[float]]:
    return torch.cat((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), dim=1).tolist()


def _json(
    pf: Flat, gf: Flat, image_ids: Optional[Sequence[int]], category_ids: Optional[Mapping[int, int]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if image_ids is None:
        image_ids = list(range(1, gf.num_images + 1))
    elif len(image_ids) != gf.num_images or len(set(image_ids)) != len(image_ids):
        raise ValueError(f"image_ids must be {gf.num_images} distinct ids, one per image; got {len(image_ids)}")
    labels = sorted(set(gf.labels.tolist()) | set(pf.labels.tolist()))
    if category_ids is None:
        cat = {c: c for c in labels}
    else:
        missing = [c for c in labels if c not in category_ids]
        if missing:
            raise KeyError(f"category_ids has no entry for label(s) {missing}")
        cat = {c: int(category_ids[c]) for c in labels}
    img = [int(i) for i in image_ids]
    gt_img, det_img = gf.image.tolist(), pf.image.tolist()
    gt_cat = [cat[c] for c in gf.labels.tolist()]
    det_cat = [cat[c] for c in pf.labels.tolist()]
    annotations = [
        # Ids from 1: COCOeval records a match as the matched box's id, and reads 0 as "no match".
        {"id": k + 1, "image_id": img[i], "category_id": c, "bbox": b, "area": a, "iscrowd": int(z)}
        for k, (i, c, b, a, z) in enumerate(
            zip(gt_img, gt_cat, _xywh(gf.boxes), gf.area.tolist(), gf.iscrowd.tolist(), strict=True)
        )
    ]
    results = [
        {"image_id": img[i], "category_id": c, "bbox": b, "score": s}
        for i, c, b, s in zip(det_img, det_cat, _xywh(pf.boxes), pf.scores.tolist(), strict=True)
    ]
    dataset = {
        "images": [{"id": i} for i in img],
        "annotations": annotations,
        "categories": [{"id": cat[c], "name": str(cat[c])} for c in labels],
    }
    return dataset, results


def to_coco_json(
    preds: Sequence[Any],
    gts: Sequence[Any],
    *,
    image_ids: Optional[Sequence[int]] = None,
    category_ids: Optional[Mapping[int, int]] = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per-image dicts (pixels, see `coco_map`) -> (COCO ground-truth dataset dict, COCO results list).

    `image_ids`: one id per image (default 1, 2, ...); `category_ids`: label -> COCO category id
    (default: the label itself). Boxes become xywh; ground-truth areas are `gts[i]["area"]` where given,
    else box areas.
    """
    pf, gf = flatten_predictions(preds), flatten_ground_truths(gts)
    check_same_length(pf, gf)
    return _json(pf, gf, image_ids, category_ids)


BACKENDS = ("auto", "pycocotools", "faster_coco_eval")


def _classes(backend: str):
    """(COCO, COCOeval, extra COCOeval kwargs) of a backend; "auto": faster-coco-eval when installed
    (a C++ COCOeval, same numbers, several times faster on large sets), else pycocotools."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown COCO backend {backend!r}; choose one of {BACKENDS}")
    if backend in ("auto", "faster_coco_eval"):
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError:
            if backend == "faster_coco_eval":
                raise ImportError("backend 'faster_coco_eval' needs `pip install faster-coco-eval`") from None
        else:
            return COCO, COCOeval_faster, {"print_function": lambda *args, **kwargs: None}
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval, {}


def _cocoeval(dataset: dict[str, Any], results: list[dict[str, Any]], backend: str = "auto"):
    COCO, COCOeval, kwargs = _classes(backend)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        # The results object built directly, as COCO.loadRes would (ids from 1, areas w * h), because
        # loadRes cannot take an empty list.
        dt = COCO()
        dt.dataset = {
            "images": dataset["images"],
            "categories": dataset["categories"],
            "annotations": [
                {**r, "id": k + 1, "area": r["bbox"][2] * r["bbox"][3], "iscrowd": 0} for k, r in enumerate(results)
            ],
        }
        dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox", **kwargs)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _mean_valid(x: np.ndarray) -> float:
    valid = x[x > -1]
    return float(valid.mean()) if valid.size else float("nan")


def coco_map(
    preds: Sequence[Any], gts: Sequence[Any], *, return_curves: bool = False, backend: str = "auto"
) -> dict[str, Any]:
    """COCO box metrics of per-image detections against ground truths, all in pixels.

    Args:
        preds: one dict per image: `boxes [N, 4]` xyxy, `scores [N]`, `labels [N]` int (used as category ids).
        gts: one dict per image, same order: `boxes [G, 4]` xyxy, `labels [G]`, optional `iscrowd [G]` bool,
            `area [G]` (COCO's object areas, which set small/medium/large; box areas when absent).
        return_curves: also return, per class, COCO's interpolated precision at IoU 0.5 over its 101
            recall thresholds under "curves" (`PRCurve`s).
        backend: "pycocotools", "faster_coco_eval" (same COCOeval in C++, if installed), or "auto" (the
            latter when installed).

    Returns: {"map" (AP@[.5:.95]), "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1",
    "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large", "per_class" {label: AP@[.5:.95]},
    "per_class_50" {label: AP50}, "backend" (the package whose COCOeval ran)}; NaN where COCOeval has
    nothing to average (its -1).
    """
    pf, gf = flatten_predictions(preds), flatten_ground_truths(gts)
    check_same_length(pf, gf)
    dataset, results = _json(pf, gf, None, None)
    labels = [c["id"] for c in dataset["categories"]]
    nan = float("nan")
    out: dict[str, Any] = {k: nan for k in COCO_STATS}
    out["per_class"], out["per_class_50"] = {c: nan for c in labels}, {c: nan for c in labels}
    if return_curves:
        out["curves"] = {}
    if not dataset["annotations"]:
        return out  # no ground truth: nothing is defined (COCOeval would give -1 everywhere)
    ev = _cocoeval(dataset, results, backend)
    out["backend"] = type(ev).__module__.split(".")[0]  # which COCOeval ran
    out.update({k: (float(v) if v > -1 else nan) for k, v in zip(COCO_STATS, ev.stats, strict=True)})
    # eval["precision"]: [T iou thresholds, R recall thresholds, K classes, A areas, M max dets], -1 = none.
    precision = ev.eval["precision"]
    area_all, most = ev.params.areaRngLbl.index("all"), len(ev.params.maxDets) - 1
    ids, counts = torch.unique(gf.labels[~gf.iscrowd], return_counts=True)
    num_gt = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    for k, c in enumerate(int(c) for c in ev.params.catIds):
        out["per_class"][c] = _mean_valid(precision[:, :, k, area_all, most])
        out["per_class_50"][c] = _mean_valid(precision[0, :, k, area_all, most])
        if return_curves and num_gt.get(c, 0) > 0:
            p50 = torch.from_numpy(precision[0, :, k, area_all, most].astype(np.float64))
            out["curves"][c] = PRCurve(
                torch.from_numpy(np.asarray(ev.params.recThrs, dtype=np.float64)),
                p50.clamp(min=0),
                torch.from_numpy(ev.eval["scores"][0, :, k, area_all, most].astype(np.float64)),
                num_gt[c],
            )
    return out
