"""PASCAL VOC detection metric: per-class average precision at one IoU threshold, mAP over classes.

The protocol of the VOC devkit:

- detections of a class are taken in decreasing score over all images; each is matched to the
  ground truth of its class in its image with which it has the highest IoU, and counts when that
  IoU is *greater than* the threshold (0.5);
- a matched ground truth is taken by its highest-scoring detection; later detections matched to it
  are duplicates, false positives (the devkit does not fall back to the second-best box);
- a detection matched to a "difficult" object is neither a true nor a false positive, and difficult
  objects are not counted among the ground truths;
- AP is the area under the precision envelope (VOC2010+, "area") or the mean of the envelope at
  recall 0, 0.1, ..., 1 (VOC2007, "11point", with the Python devkit's `np.arange(0., 1.1, 0.1)`
  thresholds and sum, to the last bit); "101point" samples at 0, 0.01, ..., 1 as COCO does;
- mAP is the mean AP over the classes that have ground truth; a class with detections but no
  (non-difficult) ground truth has AP NaN and is left out of the mean.

Boxes are continuous coordinates (area = (x2 - x1) * (y2 - y1)), as in the rest of ssdkit and in
COCO; the devkit's integer-pixel "+1" convention is not used. Score ties keep the input order
(image order, then each image's own order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ssdkit.boxes import paired_box_iou
from ssdkit.evaluation.metrics.inputs import Flat, check_same_length, flatten_ground_truths, flatten_predictions
from ssdkit.ranking import order_by

__all__ = [
    "PRCurve",
    "voc_map",
    "precision_recall",
    "average_precision",
    "interpolated_precision",
    "match_detections",
    "AP_METHODS",
]

AP_METHODS = ("area", "11point", "101point")

TP, FP, IGNORED = 1, 0, -1


class PRCurve(NamedTuple):
    """One class's detections (difficult matches removed), by decreasing score."""

    recall: Tensor  # [n] float64, non-decreasing
    precision: Tensor  # [n] float64
    scores: Tensor  # [n] float64, non-increasing
    num_gt: int  # non-difficult ground truths of the class


def match_detections(preds: Flat, gts: Flat, iou_threshold: float = 0.5) -> Tensor:
    """Status of every detection: `[N]` int8, 1 true positive, 0 false positive, -1 ignored (difficult).

    No loop: the devkit's greedy pass only changes a detection's fate through the detections matched
    to the same ground-truth box before it, so a detection is a true positive exactly when its best
    box (highest IoU, same image and class, first in input order on ties) overlaps it by more than
    the threshold, is not difficult, and no higher-scoring detection has that same best box.
    """
    n, g = preds.labels.numel(), gts.labels.numel()
    status = torch.full((n,), FP, dtype=torch.int8)
    if n == 0 or g == 0:
        return status
    num_labels = int(max(preds.labels.max(), gts.labels.max())) + 1
    # Pairs (detection, ground truth) of the same image and class only: ground truths sorted by
    # that key, each detection's run of them found by binary search.
    gt_key = gts.image * num_labels + gts.labels
    gt_order = torch.argsort(gt_key, stable=True)
    sorted_key = gt_key.index_select(0, gt_order)
    det_key = preds.image * num_labels + preds.labels
    first = torch.searchsorted(sorted_key, det_key, side="left")
    count = torch.searchsorted(sorted_key, det_key, side="right") - first
    pair_det = torch.repeat_interleave(torch.arange(n), count)
    starts = torch.repeat_interleave(first, count)
    run_start = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    pair_gt = gt_order.index_select(0, starts + torch.arange(pair_det.numel()) - run_start)
    iou = paired_box_iou(preds.boxes.index_select(0, pair_det), gts.boxes.index_select(0, pair_gt))

    best = torch.full((n,), -1.0, dtype=iou.dtype).scatter_reduce(0, pair_det, iou, "amax")
    is_best = iou == best.index_select(0, pair_det)
    best_gt = torch.full((n,), g, dtype=torch.int64).scatter_reduce(
        0, pair_det, torch.where(is_best, pair_gt, g), "amin"
    )
    hit = best > iou_threshold  # the devkit's strict ">"
    best_gt = torch.where(hit, best_gt, g)  # g: a sentinel "no box" index
    difficult = torch.cat((gts.difficult, torch.zeros(1, dtype=torch.bool))).index_select(0, best_gt)
    claims = hit & ~difficult
    # Rank by decreasing score (ties: input order); a box goes to the best-ranked detection claiming it.
    rank = torch.empty(n, dtype=torch.int64)
    rank[torch.argsort(preds.scores, descending=True, stable=True)] = torch.arange(n)
    winner = torch.full((g + 1,), n, dtype=torch.int64).scatter_reduce(0, best_gt[claims], rank[claims], "amin")
    status[claims & (rank == winner.index_select(0, best_gt))] = TP
    status[hit & difficult] = IGNORED
    return status


def _envelope(precision: Tensor) -> Tensor:
    """Precision made non-increasing: the best precision at this recall or any higher one."""
    return precision.flip(0).cummax(0).values.flip(0)


def interpolated_precision(recall: Tensor, precision: Tensor, thresholds: Tensor) -> Tensor:
    """Interpolated precision of a curve (`[n]` each, recall non-decreasing) at each recall threshold
    `[T]`: the best precision at any recall >= the threshold, 0 where the curve never gets there."""
    recall = torch.as_tensor(recall, dtype=torch.float64)
    precision = torch.as_tensor(precision, dtype=torch.float64)
    thresholds = torch.as_tensor(thresholds, dtype=torch.float64)
    # The envelope at the first point that reaches the threshold (searchsorted "left", as COCOeval).
    idx = torch.searchsorted(recall, thresholds, side="left")
    padded = torch.cat((_envelope(precision), precision.new_zeros(1)))
    return padded.index_select(0, idx)


def average_precision(recall: Tensor, precision: Tensor, method: str = "area") -> float:
    """AP of one class from its curve (`[n]` each, by decreasing score; recall non-decreasing).

    "area": area under the precision envelope (VOC2010+ and most papers);
    "11point": mean envelope at recall 0, 0.1, ..., 1 (VOC2007; the devkit's thresholds i * 0.1);
    "101point": mean envelope at recall 0, 0.01, ..., 1 (COCO's interpolation).
    """
    recall, precision = torch.as_tensor(recall, dtype=torch.float64), torch.as_tensor(precision, dtype=torch.float64)
    if method not in AP_METHODS:
        raise ValueError(f"unknown AP method {method!r}; choose one of {AP_METHODS}")
    if recall.numel() == 0:
        return 0.0
    if method == "area":
        # Sum of (recall step) x (envelope at the point where recall reaches its new value).
        mrec = torch.cat((recall.new_zeros(1), recall))
        return float(((mrec[1:] - mrec[:-1]) * _envelope(precision)).sum())
    if method == "11point":
        # The devkit's floats and arithmetic: thresholds np.arange(0., 1.1, 0.1), i.e. i * 0.1, whose
        # 0.3, 0.6 and 0.7 lie just above 3/10, 6/10, 7/10 (a recall of exactly 3/10 does not reach
        # "0.3"), and eleven p / 11 added in order (a perfect class: 0.9999999999999999, as there).
        # Published VOC07 numbers are in this arithmetic.
        thresholds = torch.arange(11, dtype=torch.float64) * 0.1
        ap = 0.0
        for p in interpolated_precision(recall, precision, thresholds).tolist():
            ap += p / 11.0
        return ap
    # The same floats as COCOeval's np.linspace(0, 1, 101) (i * 0.01), so a recall that lands
    # on a threshold falls on the same side of it as in pycocotools.
    thresholds = torch.arange(101, dtype=torch.float64) * 0.01
    return float(interpolated_precision(recall, precision, thresholds).mean())


def _curves(preds: Flat, gts: Flat, iou_threshold: float) -> dict[int, PRCurve]:
    status = match_detections(preds, gts, iou_threshold)
    kept = status != IGNORED
    g = gts.labels.numel()
    # Classes numbered 0..K-1 in label order, so that any label values (COCO ids...) cost K counters.
    classes, index = torch.unique(torch.cat((gts.labels, preds.labels)), return_inverse=True)
    k = classes.numel()
    gt_class, det_class = index[:g], index[g:][kept]
    scores, tp = preds.scores[kept], status[kept] == TP
    order = order_by(det_class, scores)  # by class, then decreasing score
    scores, tp = scores[order], tp[order]
    num_gt = torch.bincount(gt_class[~gts.difficult], minlength=k).tolist()
    count = torch.bincount(det_class, minlength=k).tolist()
    ends = torch.cumsum(torch.tensor(count, dtype=torch.int64), 0).tolist()
    curves = {}
    # One iteration per class, each on all of that class's detections at once.
    for i, c in enumerate(classes.tolist()):
        s, e = ends[i] - count[i], ends[i]
        cum_tp = torch.cumsum(tp[s:e], 0, dtype=torch.float64)
        precision = cum_tp / torch.arange(1, e - s + 1, dtype=torch.float64)
        recall = cum_tp / num_gt[i] if num_gt[i] else torch.full_like(cum_tp, float("nan"))
        curves[c] = PRCurve(recall, precision, scores[s:e], num_gt[i])
    return curves


def precision_recall(preds: Sequence[Any], gts: Sequence[Any], iou_threshold: float = 0.5) -> dict[int, PRCurve]:
    """Per-class precision/recall curves under the VOC protocol (see the module docstring)."""
    pf, gf = flatten_predictions(preds), flatten_ground_truths(gts)
    check_same_length(pf, gf)
    return _curves(pf, gf, float(iou_threshold))


def voc_map(
    preds: Sequence[Any],
    gts: Sequence[Any],
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
    *,
    return_curves: bool = False,
) -> dict[str, Any]:
    """VOC mAP of per-image detections against ground truths, all in pixels.

    Args:
        preds: one dict per image: `boxes [N, 4]` xyxy, `scores [N]`, `labels [N]` int.
        gts: one dict per image, same order: `boxes [G, 4]` xyxy, `labels [G]`, optional `difficult [G]` bool.
        iou_threshold: a detection matches a box when their IoU is greater than this.
        use_07_metric: VOC2007's 11-point AP instead of the area under the curve.
        return_curves: also return each class's `PRCurve` under "curves".

    Returns: {"map": float, "map_11point" or "map_area": the other method's mAP, "per_class": {label: AP},
    "num_gt": {label: int}, "num_det": {label: int}, "method": "area" | "11point", "iou_threshold": float}
    (+ "curves"). Classes are the labels seen in
    `gts` or `preds`; NaN AP for a class without ground truth, which `map` leaves out (NaN if none has any).
    """
    if not 0.0 <= float(iou_threshold) < 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1), got {iou_threshold}")
    method = "11point" if use_07_metric else "area"
    curves = precision_recall(preds, gts, iou_threshold)
    per_class = {
        c: average_precision(cv.recall, cv.precision, method) if cv.num_gt else float("nan") for c, cv in curves.items()
    }
    valid = [ap for c, ap in per_class.items() if curves[c].num_gt]
    # The other method's mAP too, from the same curves (VOC07 results are quoted both ways).
    other = "area" if use_07_metric else "11point"
    other_valid = [average_precision(cv.recall, cv.precision, other) for cv in curves.values() if cv.num_gt]
    out: dict[str, Any] = {
        "map": sum(valid) / len(valid) if valid else float("nan"),
        f"map_{other}": sum(other_valid) / len(other_valid) if other_valid else float("nan"),
        "per_class": per_class,
        "num_gt": {c: cv.num_gt for c, cv in curves.items()},
        "num_det": {c: int(cv.scores.numel()) for c, cv in curves.items()},
        "method": method,
        "iou_threshold": float(iou_threshold),
    }
    if return_curves:
        out["curves"] = curves
    return out
