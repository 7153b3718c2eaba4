"""`evaluate(model, loader)`: a model's detections on a whole data set, scored by VOC and/or COCO.

The loader yields `ssdkit.data.Batch` (images `[B, 3, H, W]` preprocessed; targets with boxes xyxy
normalised to [0, 1], labels, optional difficult / iscrowd / orig_size / image_id), or plain
`(images, targets)` pairs. Batch by batch, the model's own post-processing turns the raw outputs
into detections, which are scaled to each picture's original pixels and kept on the CPU; the raw
outputs are dropped at once, so a 5,000-image set costs only its detections in memory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Literal, Optional

import torch
from torch import Tensor, nn

from ssdkit.data.loader import unpack_batch
from ssdkit.evaluation.metrics import coco_map, voc_map
from ssdkit.predict import evaluating

__all__ = ["evaluate", "collect_detections", "PROTOCOLS"]

PROTOCOLS = ("voc", "coco", "both")


def _pixel_scale(targets: list[dict[str, Any]], default_hw: tuple[int, int]) -> Tensor:
    """`[B, 4]` (w, h, w, h) of each picture's original size, to turn normalised boxes into its pixels."""
    rows = []
    for t in targets:
        h, w = t.get("orig_size", default_hw)
        rows.append((float(w), float(h), float(w), float(h)))
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


@torch.inference_mode()
def collect_detections(
    model: nn.Module, loader: Iterable[Any], *, progress: bool = False
) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]], dict[str, Any]]:
    """Run `model` over `loader`: (preds, gts, info), one dict per picture, boxes xyxy in its own pixels.

    preds: boxes `[N, 4]` float32, scores `[N]`, labels `[N]` int64 (CPU). gts: boxes, labels and,
    where the targets have them, difficult, iscrowd, image_id. info: {"images", "skipped", "seconds"}.
    """
    from tqdm import tqdm

    device = model.priors.device
    default_hw = tuple(model.image_size)
    preds: list[dict[str, Tensor]] = []
    gts: list[dict[str, Tensor]] = []
    skipped = 0
    start = time.perf_counter()
    with evaluating(model):
        for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
            images, targets, skip = unpack_batch(batch)
            skipped += skip
            if images.shape[0] == 0:
                continue
            if len(targets) != images.shape[0]:
                raise ValueError(f"a batch has {images.shape[0]} images but {len(targets)} targets")
            loc, logits = model(images.to(device, non_blocking=True))
            dets = model.detect(loc, logits)
            del loc, logits  # only the post-processed detections are kept
            scale = _pixel_scale(targets, default_hw)
            counts = [int(d["scores"].numel()) for d in dets]
            # One device -> CPU copy per batch, not per picture.
            boxes = torch.cat([d["boxes"] for d in dets]).float().cpu()
            scores = torch.cat([d["scores"] for d in dets]).float().cpu()
            labels = torch.cat([d["labels"] for d in dets]).long().cpu()
            boxes = boxes * torch.repeat_interleave(scale, torch.tensor(counts), dim=0)
            for i, (b, s, lab) in enumerate(
                zip(boxes.split(counts), scores.split(counts), labels.split(counts), strict=True)
            ):
                preds.append({"boxes": b, "scores": s, "labels": lab})
                t = targets[i]
                gt = {
                    "boxes": torch.as_tensor(t["boxes"], dtype=torch.float32).cpu().reshape(-1, 4) * scale[i],
                    "labels": torch.as_tensor(t["labels"]).long().cpu().reshape(-1),
                }
                for key in ("difficult", "iscrowd", "area"):
                    if key in t:
                        gt[key] = torch.as_tensor(t[key]).cpu().reshape(-1)
                if "image_id" in t:
                    gt["image_id"] = int(t["image_id"])
                gts.append(gt)
    info = {"images": len(preds), "skipped": skipped, "seconds": time.perf_counter() - start}
    return preds, gts, info


def _named(values: dict[int, Any], names: list[str], missing: Any = float("nan")) -> dict[str, Any]:
    """{label: v} -> {class name: v} over all of the model's classes (`missing` for classes never seen)."""
    out = {}
    for k, name in enumerate(names, start=1):
        out[name] = values.get(k, missing)
    for k, v in values.items():  # labels the model does not name (should not happen; kept visible)
        if not 1 <= k <= len(names):
            out[str(k)] = v
    return out


def _category_ids(loader: Any) -> Optional[dict[int, int]]:
    """label -> the data set's own category id (COCO's non-contiguous ids), when the data set has them."""
    ds = getattr(loader, "dataset", None)
    ds = getattr(ds, "dataset", ds)  # ssdkit.data.ModelInputs wraps the data set
    mapping = getattr(ds, "label_to_cat_id", None)
    return dict(mapping) if isinstance(mapping, dict) else None


def _relabel(items: list[dict[str, Tensor]], mapping: dict[int, int]) -> list[dict[str, Tensor]]:
    if not mapping:
        return items
    lut = torch.arange(max(max(mapping), max(mapping.values())) + 1)
    lut[list(mapping)] = torch.tensor(list(mapping.values()))
    return [{**d, "labels": lut[d["labels"]]} for d in items]


def _voc_result(
    preds: list[Any], gts: list[Any], names: list[str], iou_threshold: float, use_07_metric: bool, want_curves: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(result["voc"], curves for the report: {} unless `want_curves`) by the VOC protocol."""
    voc = voc_map(preds, gts, iou_threshold, use_07_metric, return_curves=want_curves)
    other = "map_area" if use_07_metric else "map_11point"  # the other AP method, for comparison
    out = {
        "map": voc["map"],
        other: voc[other],
        "method": voc["method"],
        "iou_threshold": voc["iou_threshold"],
        "per_class": _named(voc["per_class"], names),
        "num_gt": _named(voc["num_gt"], names, 0),
        "num_det": _named(voc["num_det"], names, 0),
    }
    return out, ({"source": "voc", "by_label": voc["curves"]} if want_curves else {})


def _coco_result(
    preds: list[Any], gts: list[Any], names: list[str], cat: Optional[dict[int, int]], want_curves: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(result["coco"], curves for the report: {} unless `want_curves`) by pycocotools; `cat` maps
    labels to the data set's category ids (None: labels are the ids)."""
    coco = coco_map(_relabel(preds, cat or {}), _relabel(gts, cat or {}), return_curves=want_curves)
    back = {c: k for k, c in (cat or {}).items()}  # category id -> label

    def by_label(values: dict[int, Any]) -> dict[int, Any]:
        return {back.get(c, c): v for c, v in values.items()}

    out = {k: v for k, v in coco.items() if k not in ("per_class", "per_class_50", "curves")}
    out["per_class"] = _named(by_label(coco["per_class"]), names)
    out["per_class_50"] = _named(by_label(coco["per_class_50"]), names)
    return out, ({"source": "coco", "by_label": by_label(coco["curves"])} if "curves" in coco else {})


def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    protocol: Literal["voc", "coco", "both"] = "voc",
    use_07_metric: bool = False,
    iou_threshold: float = 0.5,
    out_dir: Optional[str | Path] = None,
    progress: bool = True,
    class_names: Optional[list[str]] = None,
) -> dict[str, Any]:
    """Score `model` on every picture of `loader` (see the module docstring for what it yields).

    Args:
        protocol: "voc" (AP at IoU > `iou_threshold`, difficult boxes ignored), "coco" (pycocotools:
            AP@[.5:.95], AP50, AP75, by size), or "both".
        use_07_metric: VOC2007 11-point AP instead of the area under the curve.
        out_dir: where to write `eval.json` and per-class precision-recall curves (`pr_curves/*.png`);
            None writes nothing.
        progress: a progress bar; False is silent.
        class_names: names of labels 1..C-1 (default: `model.class_names`).

    Returns: {"protocol", "map" (VOC mAP when protocol is "voc" or "both", else COCO AP@[.5:.95]),
    "per_class" {name: AP} (same protocol), "voc" {...} and/or "coco" {...} (each with "map",
    "per_class", ...), "images", "skipped", "seconds" {"inference", "metrics"}} (+ "files" when written).
    NaN marks a class without ground truth.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    names = list(class_names if class_names is not None else getattr(model, "class_names", []))
    preds, gts, info = collect_detections(model, loader, progress=progress)
    if not names:
        names = [str(k) for k in range(1, int(getattr(model, "num_classes", 1)))]
    want_curves = out_dir is not None
    start = time.perf_counter()
    result: dict[str, Any] = {"protocol": protocol}
    curves: dict[str, Any] = {}
    if protocol in ("voc", "both"):
        result["voc"], curves = _voc_result(preds, gts, names, iou_threshold, use_07_metric, want_curves)
    if protocol in ("coco", "both"):
        result["coco"], coco_curves = _coco_result(preds, gts, names, _category_ids(loader), want_curves and not curves)
        curves = coco_curves or curves
    main = result["voc"] if protocol in ("voc", "both") else result["coco"]
    result["map"] = main["map"]
    result["per_class"] = main["per_class"]
    result["images"] = info["images"]
    result["skipped"] = info["skipped"]
    result["seconds"] = {"inference": info["seconds"], "metrics": time.perf_counter() - start}
    if out_dir is not None:
        from ssdkit.evaluation.report import write_report

        detections = (preds, gts, _category_ids(loader)) if "coco" in result else None
        result["files"] = write_report(result, curves, names, Path(out_dir), coco_detections=detections)
    return result
