"""Post-processing: hard NMS against torchvision's SSD post-processing and `nms` kernel,
soft-NMS against a plain per-group reference loop, and the edge cases (no detections,
the per-image cap, NaN/inf inputs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torchvision.models.detection import ssd300_vgg16
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou, nms

import ssdkit
from ssdkit.box_coders.ssd import SSDBoxCoder
from ssdkit.boxes import cxcywh_to_xyxy
from ssdkit.postprocess import HardNMS, HardNMSConfig, SoftNMS, SoftNMSConfig, overlaps
from ssdkit.postprocess import nms as nms_module
from ssdkit.registry import POSTPROCESS, PRIORS

# The benchmark's synthetic head outputs serve the tests too (benchmarks/ is not a package).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import synthetic  # noqa: E402

NUM_CLASSES = 21
SIZE = 300
FEATURES = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]  # SSD300's feature maps

pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------- data


@pytest.fixture(scope="module")
def priors() -> torch.Tensor:
    cfg = ssdkit.presets.get("ssd300_vgg16_coco", num_classes=NUM_CLASSES)
    return PRIORS.build(cfg.priors)(FEATURES, (SIZE, SIZE))  # [P, 4] cxcywh normalised


@pytest.fixture(scope="module")
def tv_model():
    torch.manual_seed(0)
    return ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_CLASSES).eval()


@pytest.fixture(scope="module")
def anchors(tv_model, priors):
    """torchvision's own default boxes for a 300x300 input, `[P, 4]` xyxy in pixels."""
    images = ImageList(torch.zeros(1, 3, SIZE, SIZE), [(SIZE, SIZE)])
    found = tv_model.anchor_generator(images, [torch.zeros(1, 1, h, w) for h, w in FEATURES])[0]
    assert torch.allclose(found, cxcywh_to_xyxy(priors) * SIZE, atol=1e-3)
    return found


def trained_like(priors: torch.Tensor, batch: int, seed: int, objects: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc [B, P, 4], logits [B, P, C]) as a trained SSD emits them (the benchmark's generator):
    background dominant almost everywhere, and around each object a cluster of priors voting for
    its class with nearly the same box (the duplicates NMS exists for)."""
    return synthetic.trained_like_outputs(priors, batch, NUM_CLASSES, objects=objects, seed=seed)


def random_outputs(priors: torch.Tensor, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return synthetic.random_outputs(priors.shape[0], batch, NUM_CLASSES, seed=seed)


def ours_from_probs(pp, loc, logits, priors):
    """ssdkit without a model: decode every box, softmax, post-process."""
    return pp(SSDBoxCoder().decode(loc, priors), torch.softmax(logits, dim=-1))


def ours_from_logits(pp, loc, logits, priors):
    """The path `SSD.detect` takes: logits and a decoder of the candidates' boxes only."""
    P = priors.shape[0]
    flat = loc.reshape(-1, 4)
    return pp.from_logits(lambda i, p: SSDBoxCoder().decode(flat[i * P + p], priors[p]), logits)


def torchvision_detections(tv_model, anchors, loc, logits, setting):
    saved = (tv_model.score_thresh, tv_model.topk_candidates, tv_model.nms_thresh, tv_model.detections_per_img)
    tv_model.score_thresh, tv_model.topk_candidates, tv_model.nms_thresh, tv_model.detections_per_img = setting
    try:
        head = {"bbox_regression": loc, "cls_logits": logits}
        return tv_model.postprocess_detections(head, [anchors] * loc.shape[0], [(SIZE, SIZE)] * loc.shape[0])
    finally:
        tv_model.score_thresh, tv_model.topk_candidates, tv_model.nms_thresh, tv_model.detections_per_img = saved


def assert_same_detections(ours: dict, theirs: dict, scale: float = SIZE) -> None:
    """Same count; one-to-one, every torchvision detection has an ssdkit one with the same
    label, a score within 1e-5 and a box within 1e-3 px. (Pairing instead of comparing sorted
    lists: two scores a rounding error apart may be ordered either way.)"""
    assert ours["boxes"].shape == (len(ours["scores"]), 4) and ours["labels"].dtype == torch.int64
    assert len(ours["scores"]) == len(theirs["scores"])
    boxes = ours["boxes"] * scale
    ok = (
        (theirs["labels"][:, None] == ours["labels"][None, :])
        & ((theirs["scores"][:, None] - ours["scores"][None, :]).abs() <= 1e-5)
        & ((theirs["boxes"][:, None, :] - boxes[None, :, :]).abs().amax(-1) <= 1e-3)
    )
    used = torch.zeros(ok.shape[1], dtype=torch.bool)
    for i in range(ok.shape[0]):
        free = (ok[i] & ~used).nonzero().flatten()
        assert len(free), f"torchvision detection {i} ({theirs['labels'][i]}, {theirs['scores'][i]:.6f}) unmatched"
        used[free[0]] = True
    assert torch.all(ours["scores"][:-1] >= ours["scores"][1:])


# ---------------------------------------------------------------- hard NMS vs torchvision

# (score threshold, top-k per class, NMS IoU, detections per image): torchvision's defaults, then
# settings under which the top-k, the IoU threshold and the per-image cap each decide.
SETTINGS = [(0.01, 400, 0.45, 200), (0.01, 20, 0.45, 1000), (0.05, 400, 0.2, 1000), (0.02, 400, 0.6, 15)]


@pytest.mark.parametrize("setting", SETTINGS, ids=["defaults", "topk", "iou", "cap"])
@pytest.mark.parametrize("kind", ["trained", "random"])
@pytest.mark.parametrize("path", ["probs", "logits"])
def test_hard_matches_torchvision_ssd(tv_model, anchors, priors, setting, kind, path):
    make = trained_like if kind == "trained" else random_outputs
    loc, logits = make(priors, batch=3, seed=len(kind) + int(setting[1]))
    score, top_k, iou, cap = setting
    pp = HardNMS(HardNMSConfig(score_threshold=score, top_k=top_k, iou_threshold=iou, max_detections=cap))
    run = ours_from_probs if path == "probs" else ours_from_logits
    ours = run(pp, loc, logits, priors)
    with torch.no_grad():
        theirs = torchvision_detections(tv_model, anchors, loc, logits, setting)
    assert len(ours) == len(theirs) == 3
    for d, e in zip(ours, theirs, strict=True):
        assert len(e["scores"]) > 0
        assert_same_detections(d, e)
    if kind == "random" and cap < 100:
        return  # random boxes seldom overlap among the best few
    # NMS decided something: without it the detections differ.
    unsuppressed = run(
        HardNMS(HardNMSConfig(score_threshold=score, top_k=top_k, iou_threshold=1.0, max_detections=cap)),
        loc,
        logits,
        priors,
    )
    assert any(
        len(a["scores"]) != len(b["scores"]) or not torch.equal(a["scores"], b["scores"])
        for a, b in zip(ours, unsuppressed, strict=True)
    )


def test_model_postprocess_matches_torchvision(tv_model, anchors, priors):
    """SSD.detect (the predict path) gives torchvision's detections on the same raw outputs."""
    model = ssdkit.build_model(ssdkit.presets.get("ssd300_vgg16_coco", num_classes=NUM_CLASSES))
    loc, logits = trained_like(priors, batch=2, seed=7)
    assert torch.allclose(model.priors, priors)
    ours = model.detect(loc, logits)
    with torch.no_grad():
        theirs = torchvision_detections(tv_model, anchors, loc, logits, (0.01, 400, 0.45, 200))
    for d, e in zip(ours, theirs, strict=True):
        assert_same_detections(d, e)


def per_group_torchvision_nms(boxes, scores, groups, iou):
    """The peer: torchvision's kernel, one call per group; kept indices sorted by score."""
    kept = []
    for g in groups.unique().tolist():
        idx = (groups == g).nonzero().squeeze(1)
        kept.append(idx[nms(boxes[idx], scores[idx], iou)])
    kept = torch.cat(kept)
    return kept[torch.argsort(scores[kept], descending=True, stable=True)]


def sorted_input(boxes, scores, groups):
    """`suppress` takes boxes sorted by group, then by decreasing score (ties: input order)."""
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]
    return boxes[order], scores[order], groups[order]


def clustered_boxes(n: int, groups: int, seed: int, grid: bool = False):
    """Boxes around a few centres (many overlaps at every IoU), scores, groups."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(6, 2, generator=g) * 0.6 + 0.2
    c = centres[torch.randint(0, 6, (n,), generator=g)] + 0.05 * torch.randn(n, 2, generator=g)
    wh = torch.rand(n, 2, generator=g) * 0.3 + 0.02
    boxes = torch.cat((c - wh / 2, c + wh / 2), dim=1).clamp(0, 1)
    scores = torch.rand(n, generator=g)
    if grid:  # exact ties in scores and coordinates
        boxes, scores = (boxes * 16).round() / 16, (scores * 8).round().clamp(min=1) / 8
    return boxes, scores, torch.randint(0, groups, (n,), generator=g)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("grid", [False, True])
@pytest.mark.parametrize("paths", ["default", "matrix only", "leaders only"])
def test_hard_suppress_matches_torchvision_nms(seed, grid, paths, monkeypatch):
    if paths == "matrix only":
        monkeypatch.setattr(nms_module, "MAX_LEADER_PASSES", 0)
        monkeypatch.setattr(overlaps, "ENTRIES_PER_CHUNK", 64)  # many small chunks
    elif paths == "leaders only":  # never stop early: leader passes alone decide every box
        monkeypatch.setattr(nms_module, "MAX_LEADER_PASSES", 10_000)
        monkeypatch.setattr(nms_module, "LEADER_MIN_DROPS", 0.0)
        monkeypatch.setattr(nms_module, "greedy_by_matrix", _must_not_run)
    boxes, scores, groups = sorted_input(*clustered_boxes(300, 7, seed, grid))
    iou = 0.3 + 0.1 * seed
    kept, kept_scores = HardNMS(HardNMSConfig(iou_threshold=iou)).suppress(boxes, scores, groups)
    expected = per_group_torchvision_nms(boxes, scores, groups, iou)
    assert kept.tolist() == expected.tolist()
    assert torch.equal(kept_scores, scores[expected])
    if paths == "default":  # float64 in, float64 arithmetic, as torchvision's kernel does
        wide = boxes.double(), scores.double(), groups
        assert (
            HardNMS(HardNMSConfig(iou_threshold=iou)).suppress(*wide)[0].tolist()
            == per_group_torchvision_nms(*wide, iou).tolist()
        )


def _must_not_run(*args):
    raise AssertionError("the pairwise matrix path ran")


def test_chain_of_overlaps():
    """a overlaps b, b overlaps c, a and c apart: greedy keeps a and c (b is gone before it
    could suppress c); a one-shot "suppressed by any higher box" rule would drop c."""
    boxes = torch.tensor([[0.0, 0, 2, 1], [1.2, 0, 3.2, 1], [2.4, 0, 4.4, 1]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    kept, _ = HardNMS(HardNMSConfig(iou_threshold=0.2)).suppress(boxes, scores, torch.zeros(3, dtype=torch.long))
    assert kept.tolist() == nms(boxes, scores, 0.2).tolist() == [0, 2]


def test_causal_shortcut_changes_nothing(priors):
    """Suppressing only each image's best candidates (widened until max_detections survive)
    gives exactly what suppressing all of them gives."""
    loc, logits = trained_like(priors, batch=4, seed=3, objects=12)
    for cap in (5, 60, 200):
        fast = HardNMS(HardNMSConfig(max_detections=cap))
        full = HardNMS(HardNMSConfig(max_detections=cap))
        full.causal = False
        pairs = zip(
            ours_from_logits(fast, loc, logits, priors), ours_from_logits(full, loc, logits, priors), strict=True
        )
        for a, b in pairs:
            assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["scores"], b["scores"])
            assert torch.equal(a["boxes"], b["boxes"])


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize("pp", [HardNMS(), SoftNMS()], ids=["hard", "soft"])
def test_no_detections_gives_typed_empty_tensors(pp, priors):
    loc, logits = trained_like(priors, batch=3, seed=1)
    logits[1] = -10.0
    logits[1, :, 0] = 10.0  # image 1: background everywhere
    for out in (ours_from_probs(pp, loc, logits, priors), ours_from_logits(pp, loc, logits, priors)):
        assert len(out) == 3 and len(out[0]["scores"]) > 0 and len(out[2]["scores"]) > 0
        empty = out[1]
        assert empty["boxes"].shape == (0, 4) and empty["boxes"].dtype == torch.float32
        assert empty["scores"].shape == (0,) and empty["scores"].dtype == torch.float32
        assert empty["labels"].shape == (0,) and empty["labels"].dtype == torch.int64
    logits[:] = -10.0
    logits[..., 0] = 10.0
    for d in ours_from_probs(pp, loc, logits, priors):
        assert d["boxes"].shape == (0, 4) and d["scores"].shape == (0,) and d["labels"].shape == (0,)


@pytest.mark.parametrize("cls", [HardNMS, SoftNMS])
def test_max_detections_cap(cls, priors):
    loc, logits = trained_like(priors, batch=2, seed=5)
    config = POSTPROCESS.config_class(POSTPROCESS.name_of(cls))
    uncapped = ours_from_logits(cls(config(max_detections=100_000)), loc, logits, priors)
    capped = ours_from_logits(cls(config(max_detections=7)), loc, logits, priors)
    for a, b in zip(capped, uncapped, strict=True):
        assert len(b["scores"]) > 7 and len(a["scores"]) == 7
        for key in ("boxes", "scores", "labels"):  # the best 7 of the uncapped result
            assert torch.equal(a[key], b[key][:7])


@pytest.mark.parametrize("pp", [HardNMS(), SoftNMS()], ids=["hard", "soft"])
def test_nan_and_inf_are_dropped(pp, priors):
    """Priors with NaN/inf logits or offsets yield no detection (and never a NaN box); the
    others' detections are what they would be with those priors pure background."""
    loc, logits = trained_like(priors, batch=2, seed=9)
    g = torch.Generator().manual_seed(0)
    bad = torch.randperm(priors.shape[0], generator=g)[:400].view(4, 100)
    bad_loc, bad_logits = loc.clone(), logits.clone()
    bad_logits[:, bad[0]] = float("nan")
    bad_logits[:, bad[1], 3] = float("inf")
    bad_loc[:, bad[2], 0] = float("nan")
    bad_loc[:, bad[3], 1] = float("inf")
    bad_logits[:, bad[2:].flatten(), 5] = 20.0  # confident, so their boxes would be candidates
    clean_logits = logits.clone()
    clean_logits[:, bad.flatten()] = -10.0
    clean_logits[:, bad.flatten(), 0] = 10.0
    for run in (ours_from_probs, ours_from_logits):
        got, expected = run(pp, bad_loc, bad_logits, priors), run(pp, loc, clean_logits, priors)
        for a, b in zip(got, expected, strict=True):
            assert torch.isfinite(a["boxes"]).all() and torch.isfinite(a["scores"]).all()
            for key in ("boxes", "scores", "labels"):
                assert torch.equal(a[key], b[key])


def test_from_logits_equals_softmax_path(priors):
    for seed, make in enumerate((trained_like, random_outputs)):
        loc, logits = make(priors, batch=2, seed=seed)
        got, expected = (
            ours_from_logits(HardNMS(), loc, logits, priors),
            ours_from_probs(HardNMS(), loc, logits, priors),
        )
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a["labels"], b["labels"])
            assert torch.allclose(a["scores"], b["scores"], rtol=0, atol=1e-7)
            assert torch.allclose(a["boxes"], b["boxes"], rtol=0, atol=1e-6)


# ---------------------------------------------------------------- soft-NMS


def reference_soft_nms(boxes, scores, groups, *, threshold, sigma, method, iou_threshold, max_per_group):
    """Bodla et al.'s algorithm, group by group, box by box, in float64."""
    kept, kept_scores = [], []
    for g in groups.unique().tolist():
        idx = (groups == g).nonzero().squeeze(1)
        s = scores[idx].double().clone()
        alive = s > threshold
        for _ in range(max_per_group):
            if not alive.any():
                break
            m = int(torch.where(alive, s, torch.tensor(-1.0, dtype=s.dtype)).argmax())
            kept.append(int(idx[m]))
            kept_scores.append(float(s[m]))
            alive[m] = False
            iou = box_iou(boxes[idx[m]][None], boxes[idx])[0].double().nan_to_num(0.0)
            if method == "gaussian":
                s = s * torch.exp(-(iou**2) / sigma)
            else:
                s = torch.where(iou > iou_threshold, s * (1 - iou), s)
            alive &= s > threshold
    return kept, kept_scores


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("method", ["gaussian", "linear"])
def test_soft_nms_matches_reference(seed, method):
    boxes, scores, groups = sorted_input(*clustered_boxes(250, 5, seed))
    sigma, thr = 0.3 + 0.2 * seed, 0.05
    kept, kept_scores = SoftNMS(
        SoftNMSConfig(score_threshold=thr, sigma=sigma, method=method, max_detections=1000)
    ).suppress(boxes, scores, groups)
    ref, ref_scores = reference_soft_nms(
        boxes, scores, groups, threshold=thr, sigma=sigma, method=method, iou_threshold=0.45, max_per_group=1000
    )
    ours = dict(zip(kept.tolist(), kept_scores.tolist(), strict=True))
    theirs = dict(zip(ref, ref_scores, strict=True))
    assert set(ours) == set(theirs)
    assert max(abs(ours[i] - theirs[i]) for i in theirs) < 1e-5
    assert torch.all(kept_scores[:-1] >= kept_scores[1:])
    assert len(theirs) < len(scores)  # the threshold removed decayed boxes


def test_soft_nms_end_to_end_matches_reference(priors):
    """Through candidate selection and the per-image cap too."""
    loc, logits = trained_like(priors, batch=2, seed=11)
    pp = SoftNMS(SoftNMSConfig(score_threshold=0.02, max_detections=50))
    boxes, probs = SSDBoxCoder().decode(loc, priors), torch.softmax(logits, dim=-1)
    for b, det in enumerate(pp(boxes, probs)):
        prior, cls = (probs[b, :, 1:] > 0.02).nonzero(as_tuple=True)
        cand = boxes[b, prior].clamp(0, 1)
        ref, ref_scores = reference_soft_nms(
            cand,
            probs[b, prior, cls + 1],
            cls,
            threshold=0.02,
            sigma=0.5,
            method="gaussian",
            iou_threshold=0.45,
            max_per_group=50,
        )
        best = torch.argsort(torch.tensor(ref_scores), descending=True)[:50]
        assert len(det["scores"]) == 50
        assert torch.allclose(det["scores"], torch.tensor(ref_scores, dtype=torch.float64)[best].float(), atol=1e-5)
        assert torch.equal(det["labels"], cls[torch.tensor(ref)[best]] + 1)


def separated_clusters(seed: int):
    """Clusters of boxes with IoU > 0.3 inside a cluster and 0 between clusters."""
    g = torch.Generator().manual_seed(seed)
    boxes = []
    for cell in range(9):
        x, y = (cell % 3) / 3 + 0.08, (cell // 3) / 3 + 0.08
        for _ in range(int(torch.randint(1, 6, (1,), generator=g))):
            jitter = 0.01 * torch.rand(4, generator=g)
            boxes.append(torch.tensor([x, y, x + 0.17, y + 0.17]) + jitter)
    boxes = torch.stack(boxes)
    return boxes, torch.rand(len(boxes), generator=g) * 0.9 + 0.1, torch.randint(0, 2, (len(boxes),), generator=g)


@pytest.mark.parametrize("seed", range(3))
def test_soft_nms_with_tiny_sigma_is_hard_nms(seed):
    boxes, scores, groups = sorted_input(*separated_clusters(seed))
    soft = SoftNMS(SoftNMSConfig(score_threshold=0.01, sigma=1e-9)).suppress(boxes, scores, groups)
    hard = HardNMS(HardNMSConfig(iou_threshold=0.1)).suppress(boxes, scores, groups)
    assert soft[0].tolist() == hard[0].tolist()
    assert torch.equal(soft[1], hard[1])  # kept boxes overlap nothing kept: scores unchanged
    assert len(hard[0]) < len(scores)


@pytest.mark.parametrize("method", ["gaussian", "linear"])
def test_soft_nms_without_overlaps_keeps_scores(method):
    g = torch.Generator().manual_seed(0)
    cells = torch.randperm(100, generator=g)[:40]
    xy = torch.stack((cells % 10, cells // 10), dim=1) / 10
    boxes = torch.cat((xy + 0.01, xy + 0.09), dim=1)
    scores = torch.rand(40, generator=g) * 0.9 + 0.05
    groups = torch.randint(0, 3, (40,), generator=g)
    b, s, gr = sorted_input(boxes, scores, groups)
    kept, kept_scores = SoftNMS(SoftNMSConfig(method=method, max_detections=1000)).suppress(b, s, gr)
    assert sorted(kept.tolist()) == list(range(40))
    assert torch.equal(kept_scores, s[kept])
    assert torch.equal(kept_scores, torch.sort(scores, descending=True).values)


def test_soft_config_registered_and_validated():
    assert "soft" in POSTPROCESS.names()
    cfg = POSTPROCESS.validate_config({"type": "soft", "sigma": 0.3, "method": "linear", "iou_threshold": 0.3})
    assert isinstance(cfg, SoftNMSConfig)
    pp = POSTPROCESS.build(cfg)
    assert isinstance(pp, SoftNMS) and (pp.sigma, pp.method, pp.iou_threshold) == (0.3, "linear", 0.3)
    for bad in ({"sigma": 0.0}, {"sigma": -1.0}, {"method": "cubic"}):
        with pytest.raises(ValueError):
            POSTPROCESS.validate_config({"type": "soft", **bad})
    full = ssdkit.presets.get("ssd300_vgg16", postprocess={"type": "soft", "sigma": 0.25})
    assert isinstance(full.postprocess, SoftNMSConfig) and full.postprocess.sigma == 0.25
