"""VOC and COCO metrics: hand-worked cases, and cross-checks against pycocotools' COCOeval."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssdkit.evaluation.metrics import average_precision, coco_map, precision_recall, to_coco_json, voc_map
from ssdkit.evaluation.metrics.voc import interpolated_precision

pytestmark = pytest.mark.usefixtures("single_thread")

A = [0.0, 0.0, 10.0, 10.0]
B = [20.0, 20.0, 30.0, 30.0]
C = [40.0, 0.0, 50.0, 10.0]
FAR = [100.0, 100.0, 110.0, 110.0]  # overlaps nothing


def det(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes).reshape(-1, 4), "scores": torch.tensor(scores), "labels": torch.tensor(labels)}


def gt(boxes, labels, difficult=None):
    out = {"boxes": torch.tensor(boxes).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.int64)}
    if difficult is not None:
        out["difficult"] = torch.tensor(difficult)
    return out


def both(preds, gts):
    """(area AP result, 11-point AP result). The 11-point sum is the devkit's, eleven p / 11 added in
    order: a perfect class scores 0.9999999999999999 there, hence approx(1) in the cases below."""
    return voc_map(preds, gts), voc_map(preds, gts, use_07_metric=True)


# ---------------------------------------------------------------- hand-worked VOC cases


def test_perfect_detections_score_one():
    preds = [det([A, B], [0.9, 0.8], [1, 2]), det([C], [0.7], [1]), det([], [], [])]
    gts = [gt([A, B], [1, 2]), gt([C], [1]), gt([], [])]
    for r in both(preds, gts):
        assert r["map"] == pytest.approx(1.0, abs=1e-15)
        assert r["per_class"] == pytest.approx({1: 1.0, 2: 1.0}, abs=1e-15)
        assert r["num_gt"] == {1: 2, 2: 1}


def test_false_positive_ranked_first():
    # One class, 3 boxes (A, B in image 0; C in image 1). Detections by score:
    #   0.9 FAR (FP), 0.8 A (TP), 0.7 B (TP), 0.6 FAR (FP), 0.5 C (TP)
    # precision 0/1, 1/2, 2/3, 2/4, 3/5;  recall 0, 1/3, 2/3, 2/3, 1
    # envelope (best precision at this recall or higher): 2/3, 2/3, 2/3, 3/5, 3/5
    # area: recall rises by 1/3 at the 2nd, 3rd and 5th detection -> (2/3 + 2/3 + 3/5) / 3 = 29/45
    # 11-point: t=0 -> 2/3 (1st point); t=.1,.2,.3 -> 2/3 (recall 1/3 first reached at the 2nd);
    #   t=.4,.5,.6 -> 2/3 (3rd); t=.7,.8,.9,1 -> 3/5 (5th): (7 * 2/3 + 4 * 3/5) / 11 = 106/165
    preds = [det([FAR, A, B, FAR], [0.9, 0.8, 0.7, 0.6], [1, 1, 1, 1]), det([C], [0.5], [1])]
    gts = [gt([A, B], [1, 1]), gt([C], [1])]
    area, p11 = both(preds, gts)
    assert area["map"] == pytest.approx(29 / 45, abs=1e-12)
    assert p11["map"] == pytest.approx(106 / 165, abs=1e-12)
    curve = precision_recall(preds, gts)[1]
    torch.testing.assert_close(curve.precision, torch.tensor([0, 1 / 2, 2 / 3, 2 / 4, 3 / 5], dtype=torch.float64))
    torch.testing.assert_close(curve.recall, torch.tensor([0, 1 / 3, 2 / 3, 2 / 3, 1], dtype=torch.float64))


def test_duplicate_is_a_false_positive():
    # Boxes A and B; detections: 0.9 on A (TP), 0.8 a shifted copy of A (IoU 90/110 with A: a
    # duplicate, FP), 0.7 on B (TP).  precision 1, 1/2, 2/3; recall 1/2, 1/2, 1; envelope 1, 2/3, 2/3
    # area: 1/2 * 1 + 1/2 * 2/3 = 5/6;  11-point: t=0..0.5 (6 points) -> 1, t=.6..1 (5) -> 2/3: 28/33
    preds = [det([A, [1, 0, 11, 10], B], [0.9, 0.8, 0.7], [1, 1, 1])]
    gts = [gt([A, B], [1, 1])]
    area, p11 = both(preds, gts)
    assert area["map"] == pytest.approx(5 / 6, abs=1e-12)
    assert p11["map"] == pytest.approx(28 / 33, abs=1e-12)


def test_duplicate_does_not_fall_back_to_the_second_best_box():
    # A = [0,0,10,10], D = [2,0,12,10] (IoU 80/120). The 0.8 detection [0.5,0,10.5,10] overlaps A by
    # 95/105 and D by 85/115: both above 0.5, A best. A is taken by the 0.9 detection, so under VOC
    # rules it is a false positive (the devkit never tries D): precision 1, 1/2; recall 1/2, 1/2
    # -> AP 1/2 (both variants: 11-point t=0..0.5 -> 1, the other 5 -> 0: 6/11).
    # COCOeval does try the next-best box, so its AP50 is 1.
    D = [2.0, 0.0, 12.0, 10.0]
    preds = [det([A, [0.5, 0, 10.5, 10]], [0.9, 0.8], [1, 1])]
    gts = [gt([A, D], [1, 1])]
    area, p11 = both(preds, gts)
    assert area["map"] == pytest.approx(1 / 2, abs=1e-12)
    assert p11["map"] == pytest.approx(6 / 11, abs=1e-12)
    assert coco_map(preds, gts)["map_50"] == pytest.approx(1.0, abs=1e-12)


def test_difficult_objects_are_neither_true_nor_false_positives():
    # Image 0: A normal, B difficult; image 1: C normal. Detections: 0.95 on C (TP), 0.9 on B
    # (matched to a difficult box: dropped), 0.8 FAR (FP), 0.7 on A (TP). Two boxes count.
    # precision 1, 1/2, 2/3; recall 1/2, 1/2, 1 -> area 5/6, 11-point 28/33 (as in the duplicate case).
    # Without the flag B counts: 3 boxes, precision 1, 1, 2/3, 3/4; recall 1/3, 2/3, 2/3, 1;
    # envelope 1, 1, 3/4, 3/4 -> area 1/3 + 1/3 + 1/4 = 11/12.
    preds = [det([B, FAR, A], [0.9, 0.8, 0.7], [1, 1, 1]), det([C], [0.95], [1])]
    gts = [gt([A, B], [1, 1], difficult=[False, True]), gt([C], [1], difficult=[False])]
    area, p11 = both(preds, gts)
    assert area["map"] == pytest.approx(5 / 6, abs=1e-12)
    assert p11["map"] == pytest.approx(28 / 33, abs=1e-12)
    assert area["num_gt"] == {1: 2} and area["num_det"] == {1: 3}
    plain = [gt([A, B], [1, 1]), gt([C], [1])]
    assert voc_map(preds, plain)["map"] == pytest.approx(11 / 12, abs=1e-12)


def test_a_missed_difficult_object_costs_nothing():
    preds = [det([A], [0.9], [1])]
    gts = [gt([A, B], [1, 1], difficult=[False, True])]
    for r in both(preds, gts):
        assert r["map"] == pytest.approx(1.0, abs=1e-15)


def test_class_without_ground_truth_is_nan_and_left_out_of_the_mean():
    # Class 1: perfect (AP 1). Class 2: a detection but no box -> NaN, not in the mean.
    # Class 3: a box but no detection -> AP 0, in the mean. mAP = (1 + 0) / 2.
    preds = [det([A, B], [0.9, 0.8], [1, 2])]
    gts = [gt([A, C], [1, 3])]
    for r in both(preds, gts):
        assert r["per_class"][1] == pytest.approx(1.0, abs=1e-15) and r["per_class"][3] == 0.0
        assert math.isnan(r["per_class"][2])
        assert r["map"] == pytest.approx(0.5, abs=1e-12)
    assert math.isnan(voc_map([det([A], [0.9], [2])], [gt([], [])])["map"])


def test_iou_must_exceed_the_threshold():
    # [0,0,10,5] covers half of A: IoU exactly 50/100 = 0.5, not > 0.5 for VOC; COCO's >= takes it.
    preds = [det([[0, 0, 10, 5]], [0.9], [1])]
    gts = [gt([A], [1])]
    assert voc_map(preds, gts)["map"] == 0.0
    assert voc_map(preds, gts, iou_threshold=0.49)["map"] == 1.0
    assert coco_map(preds, gts)["map_50"] == pytest.approx(1.0, abs=1e-12)


def test_wrong_class_is_a_false_positive():
    preds = [det([A, A], [0.9, 0.8], [2, 1])]
    gts = [gt([A], [1])]
    r = voc_map(preds, gts)
    assert r["per_class"][1] == 1.0 and math.isnan(r["per_class"][2])


def test_score_order_across_images_decides_the_curve():
    # One class; image 0: FP at 0.3; image 1: TP at 0.6, one box -> TP first: AP 1.
    # Swap the scores: FP first -> precision 0, 1/2, recall 0, 1 -> AP 1/2.
    gts = [gt([], []), gt([A], [1])]
    assert voc_map([det([A], [0.3], [1]), det([A], [0.6], [1])], gts)["map"] == 1.0
    assert voc_map([det([A], [0.6], [1]), det([A], [0.3], [1])], gts)["map"] == 0.5


def test_average_precision_methods_on_a_given_curve():
    # precision 1, 0.5 at recall 0.2, 0.2 (a TP then an FP), nothing beyond:
    # area 0.2; 11-point: t=0, 0.1, 0.2 -> 1, rest 0 -> 3/11; 101-point: t=0..0.2 (21) -> 1: 21/101.
    rec, prec = torch.tensor([0.2, 0.2]), torch.tensor([1.0, 0.5])
    assert average_precision(rec, prec, "area") == pytest.approx(0.2)
    assert average_precision(rec, prec, "11point") == pytest.approx(3 / 11)
    assert average_precision(rec, prec, "101point") == pytest.approx(21 / 101)
    assert average_precision(torch.zeros(0), torch.zeros(0)) == 0.0
    with pytest.raises(ValueError, match="unknown AP method"):
        average_precision(rec, prec, "12point")


def test_inputs_accept_numpy_and_lists():
    preds = [{"boxes": np.array([A]), "scores": [0.9], "labels": np.array([1])}]
    gts = [{"boxes": [A], "labels": [1], "difficult": np.array([False])}]
    assert voc_map(preds, gts)["map"] == 1.0


@pytest.mark.parametrize(
    ("preds", "gts", "error", "match"),
    [
        ([det([A], [0.9], [1])], [], ValueError, "preds has 1 images but gts has 0"),
        ([{"boxes": torch.zeros(1, 3), "scores": [0.5], "labels": [1]}], [gt([A], [1])], ValueError, r"preds\[0\]"),
        ([det([A], [0.9], [1])], [gt([A, [5, 5, 1, 9]], [1, 1])], ValueError, r"gts\[0\] box 1 has x2 < x1"),
        ([det([A], [float("nan")], [1])], [gt([A], [1])], ValueError, r"preds\[0\] box 0 has a score"),
        ([{"boxes": [A], "labels": [1]}], [gt([A], [1])], KeyError, "no 'scores'"),
        ([det([A], [0.9], [1])], [gt([A], [1, 1])], ValueError, r"gts\[0\]\['labels'\] has shape"),
        ([det([A], [0.9], [1.5])], [gt([A], [1])], ValueError, "non-integer"),
        ([det([A], [0.9], [1])], {"boxes": []}, TypeError, "one dict per image"),
    ],
)
def test_bad_input_is_named(preds, gts, error, match):
    with pytest.raises(error, match=match):
        voc_map(preds, gts)


# ---------------------------------------------------------------- cross-checks with pycocotools


def _quiet_cocoeval(dataset, results):
    with contextlib.redirect_stdout(io.StringIO()):
        cgt = COCO()
        cgt.dataset = dataset
        cgt.createIndex()
        cdt = cgt.loadRes(results)
        ev = COCOeval(cgt, cdt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _random_set(rng: np.random.Generator, num_images: int, num_classes: int = 3):
    """Per-image dicts where the VOC and COCO matching rules coincide at IoU 0.5.

    Boxes of one class in one image lie in different cells of a 3x3 grid of 100 px cells, so they
    never overlap; a detection can then overlap at most one of them by IoU >= 0.5 (two disjoint boxes
    would each need more than half of it), which makes the devkit's "best box or nothing" and COCO's
    "best free box" the same rule. Scores are distinct floats, so neither tie order matters.
    """
    preds, gts = [], []
    for _ in range(num_images):
        boxes, labels = [], []
        for c in range(1, num_classes + 1):
            cells = rng.choice(9, size=rng.integers(0, 4), replace=False)
            for cell in cells:
                x0, y0 = 100.0 * (cell % 3), 100.0 * (cell // 3)
                x1, y1 = x0 + rng.uniform(0, 40), y0 + rng.uniform(0, 40)
                boxes.append([x1, y1, x1 + rng.uniform(10, 60), y1 + rng.uniform(10, 60)])
                labels.append(c)
        g = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        gl = np.asarray(labels, dtype=np.int64)
        d, dl = [], []
        for _ in range(rng.integers(0, 12)):
            if len(g) and rng.random() < 0.7:  # near a box, sometimes of the wrong class
                k = rng.integers(len(g))
                d.append(g[k] + rng.normal(0, 6, 4))
                dl.append(gl[k] if rng.random() < 0.85 else rng.integers(1, num_classes + 1))
            else:
                xy = rng.uniform(0, 280, 2)
                d.append(np.concatenate((xy, xy + rng.uniform(5, 60, 2))))
                dl.append(rng.integers(1, num_classes + 1))
        db = np.asarray(d, dtype=np.float64).reshape(-1, 4)
        db = np.concatenate((np.minimum(db[:, :2], db[:, 2:]), np.maximum(db[:, :2], db[:, 2:])), axis=1)
        preds.append({"boxes": db, "scores": rng.random(len(db)), "labels": np.asarray(dl, dtype=np.int64)})
        gts.append({"boxes": g, "labels": gl})
    return preds, gts


def _coco_by_hand(preds, gts):
    """The test's own conversion to COCO JSON (xywh boxes, ids from 1)."""
    images, anns, results = [], [], []
    for i, (p, g) in enumerate(zip(preds, gts, strict=True)):
        images.append({"id": i + 1})
        for b, c in zip(g["boxes"].tolist(), g["labels"].tolist(), strict=True):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c, "bbox": [b[0], b[1], w, h]})
            anns[-1].update(area=w * h, iscrowd=0)
        for b, s, c in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist(), strict=True):
            results.append({"image_id": i + 1, "category_id": c, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
            results[-1]["score"] = s
    cats = sorted({a["category_id"] for a in anns} | {r["category_id"] for r in results})
    return {"images": images, "annotations": anns, "categories": [{"id": c} for c in cats]}, results


@pytest.mark.parametrize("seed", range(6))
def test_voc_curves_agree_with_cocoeval_at_iou_half(seed):
    """Where the protocols coincide (no difficult or crowd boxes, disjoint boxes per class), the VOC
    path's precision envelope sampled at COCO's 101 recall thresholds must equal COCOeval's
    eval["precision"] at IoU 0.5, value for value, and its final recall COCOeval's eval["recall"].

    What is left apart by construction: VOC's IoU > 0.5 against COCO's >= 0.5 (no IoU is within 1e-9
    of 0.5 here: checked), and COCO's 101-point sampling against VOC's area (we sample our own curve
    at the same thresholds instead of comparing the two different summaries). COCOeval divides by
    tp + fp + 2.2e-16, hence the 1e-12 tolerance, far below one detection's effect (>= 1e-3 here).
    """
    rng = np.random.default_rng(seed)
    preds, gts = _random_set(rng, num_images=60)
    dataset, results = _coco_by_hand(preds, gts)
    ev = _quiet_cocoeval(dataset, results)
    ious = [v for v in ev.ious.values() if len(v)]
    assert all(np.abs(np.asarray(v) - 0.5).min() > 1e-9 for v in ious)

    curves = precision_recall(preds, gts, iou_threshold=0.5)
    thresholds = torch.from_numpy(ev.params.recThrs)
    area_all, most = ev.params.areaRngLbl.index("all"), len(ev.params.maxDets) - 1
    assert ev.params.iouThrs[0] == 0.5
    checked = 0
    for k, c in enumerate(ev.params.catIds):
        theirs = ev.eval["precision"][0, :, k, area_all, most]
        if curves[c].num_gt == 0:
            assert (theirs == -1).all()  # COCO: undefined too
            continue
        ours = interpolated_precision(curves[c].recall, curves[c].precision, thresholds)
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-12)
        final = float(curves[c].recall[-1]) if curves[c].recall.numel() else 0.0
        assert final == pytest.approx(ev.eval["recall"][0, k, area_all, most], abs=1e-15)
        ap101 = average_precision(curves[c].recall, curves[c].precision, "101point")
        assert ap101 == pytest.approx(float(theirs.mean()), abs=1e-12)
        checked += 1
    assert checked >= 2
    # And the whole-set number: our 101-point mAP is COCOeval's AP50.
    ours_map = np.mean([average_precision(cv.recall, cv.precision, "101point") for cv in curves.values() if cv.num_gt])
    assert ours_map == pytest.approx(ev.stats[1], abs=1e-12)


def test_101_point_thresholds_are_cocoevals():
    ev = COCOeval(iouType="bbox")
    ours = torch.arange(101, dtype=torch.float64) * 0.01
    assert np.array_equal(ours.numpy(), ev.params.recThrs)


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_coco_map_equals_cocoeval_on_a_hand_made_json(backend):
    if backend == "faster_coco_eval":
        pytest.importorskip("faster_coco_eval")
    # Non-contiguous image and category ids, given areas (not box areas) that put boxes in each size
    # bucket, a crowd region, an image without boxes, a category without detections.
    dataset = {
        "images": [{"id": 7}, {"id": 42}, {"id": 1000}],
        "categories": [{"id": 3}, {"id": 17}, {"id": 90}],
        "annotations": [
            {"id": 5, "image_id": 7, "category_id": 3, "bbox": [10, 10, 30, 40], "area": 900.0, "iscrowd": 0},
            {"id": 6, "image_id": 7, "category_id": 17, "bbox": [50, 60, 100, 80], "area": 7000.0, "iscrowd": 0},
            {"id": 9, "image_id": 7, "category_id": 3, "bbox": [200, 10, 8, 8], "area": 50.0, "iscrowd": 0},
            {"id": 11, "image_id": 42, "category_id": 17, "bbox": [0, 0, 200, 150], "area": 25000.0, "iscrowd": 0},
            {"id": 12, "image_id": 42, "category_id": 17, "bbox": [220, 0, 100, 100], "area": 8000.0, "iscrowd": 1},
            {"id": 13, "image_id": 42, "category_id": 90, "bbox": [300, 200, 40, 30], "area": 1100.0, "iscrowd": 0},
        ],
    }
    results = [
        {"image_id": 7, "category_id": 3, "bbox": [11, 12, 30, 38], "score": 0.9},
        {"image_id": 7, "category_id": 3, "bbox": [200, 11, 9, 7], "score": 0.3},
        {"image_id": 7, "category_id": 3, "bbox": [12, 11, 28, 40], "score": 0.8},
        {"image_id": 7, "category_id": 17, "bbox": [55, 62, 90, 80], "score": 0.7},
        {"image_id": 42, "category_id": 17, "bbox": [5, 3, 180, 140], "score": 0.6},
        {"image_id": 42, "category_id": 17, "bbox": [230, 10, 50, 50], "score": 0.85},
        {"image_id": 42, "category_id": 3, "bbox": [0, 0, 50, 50], "score": 0.4},
        {"image_id": 1000, "category_id": 17, "bbox": [0, 0, 20, 20], "score": 0.5},
    ]
    ev = _quiet_cocoeval(dataset, [dict(r) for r in results])

    order = [7, 42, 1000]

    def xyxy(b):
        return [b[0], b[1], b[0] + b[2], b[1] + b[3]]

    gts = []
    for img in order:
        anns = [a for a in dataset["annotations"] if a["image_id"] == img]
        gts.append(
            {
                "boxes": torch.tensor([xyxy(a["bbox"]) for a in anns], dtype=torch.float64).reshape(-1, 4),
                "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
                "area": torch.tensor([a["area"] for a in anns], dtype=torch.float64),
                "iscrowd": torch.tensor([bool(a["iscrowd"]) for a in anns]),
            }
        )
    preds = []
    for img in order:
        rs = [r for r in results if r["image_id"] == img]
        preds.append(
            {
                "boxes": torch.tensor([xyxy(r["bbox"]) for r in rs], dtype=torch.float64).reshape(-1, 4),
                "scores": torch.tensor([r["score"] for r in rs], dtype=torch.float64),
                "labels": torch.tensor([r["category_id"] for r in rs], dtype=torch.int64),
            }
        )
    ours = coco_map(preds, gts, backend=backend)
    names = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large"]
    names += ["mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large"]
    for name, theirs in zip(names, ev.stats, strict=True):
        if theirs == -1:
            assert math.isnan(ours[name]), name
        else:
            assert ours[name] == pytest.approx(theirs, abs=1e-12), name
    assert 0 < ours["map"] < 1 and not math.isnan(ours["map_small"])  # the case is not trivial
    for k, c in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        assert ours["per_class"][c] == pytest.approx(p[p > -1].mean(), abs=1e-12)
        assert ours["per_class_50"][c] == pytest.approx(p[0][p[0] > -1].mean(), abs=1e-12)

    # The conversion itself: same boxes (xywh), areas, crowd flags, categories.
    ds, res = to_coco_json(preds, gts, image_ids=order)
    key = lambda a: (a["image_id"], a["category_id"], a["bbox"])  # noqa: E731
    assert sorted((key(a), a["area"], a["iscrowd"]) for a in ds["annotations"]) == sorted(
        (key(a), a["area"], a["iscrowd"]) for a in dataset["annotations"]
    )
    assert sorted((key(r), r["score"]) for r in res) == sorted((key(r), r["score"]) for r in results)
    assert [c["id"] for c in ds["categories"]] == [3, 17, 90]


def test_coco_map_without_ground_truth_or_detections():
    r = coco_map([det([A], [0.9], [1])], [gt([], [])])
    assert math.isnan(r["map"]) and math.isnan(r["per_class"][1])
    r = coco_map([det([], [], [])], [gt([A], [1])])
    assert r["map"] == 0.0 and r["per_class"][1] == 0.0


def test_any_label_values():
    # Labels are only names: COCO-like ids far apart, and 0, score the same as 1 and 2.
    preds = [det([A, B, FAR], [0.9, 0.8, 0.7], [0, 1_000_000_007, 0])]
    gts = [gt([A, B], [0, 1_000_000_007])]
    r = voc_map(preds, gts)
    # class 0: TP then FP -> precision 1, 1/2, recall 1, 1 -> AP 1
    assert r["per_class"] == {0: 1.0, 1_000_000_007: 1.0}


def test_equal_overlaps_go_to_the_first_box():
    # The 0.9 detection overlaps both boxes by exactly 95/105; the devkit's argmax takes the first
    # (A). The 0.8 detection sits on the second, so both are true positives: AP 1. Had the tie gone
    # to the second box, the 0.8 detection would be a duplicate: AP 1/2.
    second = [1.0, 0.0, 11.0, 10.0]
    preds = [det([[0.5, 0, 10.5, 10], second], [0.9, 0.8], [1, 1])]
    assert voc_map(preds, [gt([A, second], [1, 1])])["map"] == 1.0
    # and the other way round (second box listed first): now the tie goes to `second`, taken first.
    assert voc_map(preds, [gt([second, A], [1, 1])])["map"] == pytest.approx(0.5, abs=1e-12)


# ---------------------------------------------------------------- VOC07 11-point AP, the devkit's arithmetic


def _devkit_voc_ap_07(rec: np.ndarray, prec: np.ndarray) -> float:
    """voc_eval.py's `voc_ap(rec, prec, use_07_metric=True)`, written out from its formula."""
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        p = 0.0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
        ap = ap + p / 11.0
    return float(ap)


def test_11_point_recall_landing_on_three_tenths():
    # Ten boxes (one per image); by score: TP, TP, TP, FP, FP, FP, TP.
    # precision 1, 1, 1, 3/4, 3/5, 3/6, 4/7; recall .1, .2, .3, .3, .3, .3, .4 (3/10 is the float 0.3).
    # The devkit's thresholds are i * 0.1: its "0.3" is 0.30000000000000004 > 3/10, so recall 3/10
    # does not reach it: t = 0, .1, .2 -> 1; t = "0.3", .4 -> 4/7 (only recall .4 reaches); t >= .5 -> 0.
    # AP = (3 + 2 * 4/7) / 11 = 29/77. With t = 3/10 exactly it would be (4 + 4/7) / 11 = 32/77.
    assert np.arange(0.0, 1.1, 0.1)[3] > 3 / 10  # the premise
    boxes = [[10.0 * i, 0.0, 10.0 * i + 8, 8.0] for i in range(10)]
    gts = [gt([b], [1]) for b in boxes]
    order = [0, 1, 2, None, None, None, 3]  # image of each detection; None: a false positive in image 9
    preds = [det([], [], []) for _ in range(10)]
    for rank, img in enumerate(order):
        i, box = (img, boxes[img]) if img is not None else (9, [500.0, 500.0, 510.0, 510.0])
        p = preds[i]
        p["boxes"] = torch.cat((p["boxes"], torch.tensor([box])))
        p["scores"] = torch.cat((p["scores"], torch.tensor([1.0 - rank / 10])))
        p["labels"] = torch.cat((p["labels"], torch.tensor([1])))
    r = voc_map(preds, gts, use_07_metric=True)
    assert r["map"] == pytest.approx(29 / 77, abs=1e-12)
    # Both methods come out of one evaluation: the area under the precision envelope is
    # 3 * 0.1 * 1 (recall .1, .2, .3 at precision 1) + 0.1 * 4/7 (recall .4) = 5/14.
    assert r["map_area"] == pytest.approx(5 / 14, abs=1e-12)
    area = voc_map(preds, gts)
    assert area["map"] == pytest.approx(5 / 14, abs=1e-12) and area["map_11point"] == r["map"]
    curve = precision_recall(preds, gts)[1]
    assert r["map"] == _devkit_voc_ap_07(curve.recall.numpy(), curve.precision.numpy())  # bit for bit


@given(st.lists(st.booleans(), min_size=1, max_size=40), st.sampled_from([10, 20, 30]) | st.integers(1, 40))
def test_11_point_ap_is_the_devkits_to_the_last_bit(hits, num_gt):
    # Any TP/FP sequence against num_gt boxes; with 10, 20 or 30 boxes recall often lands exactly on
    # i/10, where the devkit's i * 0.1 and i / 10 differ (i = 3, 6, 7).
    assume(sum(hits) <= num_gt)
    tp = np.cumsum(hits, dtype=np.float64)
    rec, prec = tp / float(num_gt), tp / np.arange(1, len(hits) + 1, dtype=np.float64)
    ours = average_precision(torch.from_numpy(rec), torch.from_numpy(prec), "11point")
    assert ours == _devkit_voc_ap_07(rec, prec)
