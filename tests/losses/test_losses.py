"""Losses: multibox against torchvision's SSD.compute_loss, images without ground truth, hard-negative
counts, focal against torchvision.ops / a direct formula, gradients, mixed precision, bad targets."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import unit_rows
from hypothesis import assume, given
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection._utils import SSDMatcher as TVSSDMatcher
from torchvision.models.detection.ssd import SSD as TVSSD
from torchvision.ops import box_iou, generalized_box_iou_loss, sigmoid_focal_loss

import ssdkit
from ssdkit.box_coders.ssd import SSDBoxCoder
from ssdkit.boxes import cxcywh_to_xyxy
from ssdkit.losses import (
    FocalLoss,
    FocalLossConfig,
    MultiboxLoss,
    MultiboxLossConfig,
    hard_negatives,
    match_targets,
    num_hard_negatives,
    pad_targets,
)
from ssdkit.matchers.ssd import SSDMatcher, SSDMatcherConfig
from ssdkit.registry import LOSSES

pytestmark = pytest.mark.usefixtures("single_thread")

# Powers of two: scaling normalised boxes to these pixels is exact, so torchvision (pixels) and
# ssdkit (normalised) see bit-identical IoUs; non-square to catch a swapped axis.
IMG_H, IMG_W = 128, 256
SCALE = torch.tensor([IMG_W, IMG_H, IMG_W, IMG_H], dtype=torch.float32)


def grid_priors() -> torch.Tensor:
    """`[240, 4]` cxcywh: 8x8 and 4x4 grids, 3 shapes per cell (an SSD-like layout)."""
    out = []
    for cells, side in ((8, 0.2), (4, 0.45)):
        c = (torch.arange(cells, dtype=torch.float32) + 0.5) / cells
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        for w, h in ((side, side), (side * 1.4, side / 1.4), (side / 1.4, side * 1.4)):
            out.append(torch.stack((cx, cy, torch.full_like(cx, w), torch.full_like(cx, h)), -1).reshape(-1, 4))
    return torch.cat(out)


PRIORS = grid_priors()


def random_targets(gen: torch.Generator, counts: list[int], num_classes: int) -> list[dict]:
    out = []
    for g in counts:
        centre = torch.rand(g, 2, generator=gen) * 0.8 + 0.1
        size = torch.rand(g, 2, generator=gen) * 0.5 + 0.1
        boxes = torch.cat((centre - size / 2, centre + size / 2), 1).clamp(0, 1)
        labels = torch.randint(1, num_classes, (g,), generator=gen)
        out.append({"boxes": boxes, "labels": labels})
    return out


def head_outputs(gen: torch.Generator, b: int, num_classes: int, p: int = len(PRIORS)):
    loc = (torch.randn(b, p, 4, generator=gen) * 2).requires_grad_()
    logits = (torch.randn(b, p, num_classes, generator=gen) * 3).requires_grad_()
    return loc, logits


def multibox(**kw) -> MultiboxLoss:
    return MultiboxLoss(
        MultiboxLossConfig(**kw), box_coder=SSDBoxCoder(), matcher=SSDMatcher(SSDMatcherConfig(iou_threshold=0.5))
    )


def torchvision_loss(loc, logits, targets, priors=PRIORS, neg_to_pos_ratio=3):
    """torchvision's own SSD.compute_loss, on pixel targets and anchors, matched by its own matcher
    the way SSD.forward does it."""
    anchors = cxcywh_to_xyxy(priors) * SCALE
    px_targets, matched = [], []
    for t in targets:
        boxes = t["boxes"] * SCALE
        px_targets.append({"boxes": boxes, "labels": t["labels"]})
        if boxes.numel() == 0:
            matched.append(torch.full((len(anchors),), -1, dtype=torch.int64))
        else:
            matched.append(TVSSDMatcher(0.5)(box_iou(boxes, anchors)))
    owner = SimpleNamespace(box_coder=BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)), neg_to_pos_ratio=neg_to_pos_ratio)
    heads = {"bbox_regression": loc, "cls_logits": logits}
    return TVSSD.compute_loss(owner, px_targets, heads, [anchors] * len(targets), matched)


def grads(value, *tensors):
    return torch.autograd.grad(value, tensors)


# ---------- multibox: parity with torchvision ----------


@pytest.mark.parametrize(
    "counts, min_negatives",
    [
        ([3, 1, 5, 2], 0),
        ([4, 0, 2, 0], 0),  # torchvision takes no negatives from an empty image: neither do we at 0
        ([1, 6, 2], 3),  # the default floor (3) changes nothing while every image has a positive
        ([0, 0], 0),  # no positive in the batch: torchvision divides by 1, so must we
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multibox_equals_torchvision_compute_loss(counts, min_negatives, seed):
    gen = torch.Generator().manual_seed(seed)
    targets = random_targets(gen, counts, num_classes=5)
    loc, logits = head_outputs(gen, len(counts), 5)
    ours = multibox(min_negatives=min_negatives)(loc, logits, targets, PRIORS)
    theirs = torchvision_loss(loc, logits, targets)
    torch.testing.assert_close(ours["loc"], theirs["bbox_regression"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["cls"], theirs["classification"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["loss"], ours["loc"] + ours["cls"])
    # The same hard negatives and positives: the gradients agree prior by prior.
    g_ours = grads(ours["loss"], loc, logits)
    g_theirs = grads(theirs["bbox_regression"] + theirs["classification"], loc, logits)
    for a, b in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    if sum(counts):
        assert ours["loc"].item() > 0 and ours["cls"].item() > 0  # a real comparison, not 0 == 0


def test_multibox_weights_and_beta_scale_the_localisation_term():
    gen = torch.Generator().manual_seed(3)
    targets = random_targets(gen, [2, 3], 4)
    loc, logits = head_outputs(gen, 2, 4)
    base = multibox()(loc, logits, targets, PRIORS)
    weighted = multibox(loc_weight=2.5)(loc, logits, targets, PRIORS)
    torch.testing.assert_close(weighted["loc"], 2.5 * base["loc"])
    torch.testing.assert_close(weighted["cls"], base["cls"])
    # beta = 0 is plain L1 of the offsets over the positives, divided by their number
    matched = match_targets(targets, PRIORS, SSDMatcher(SSDMatcherConfig(iou_threshold=0.5)), SSDBoxCoder())
    pos = matched.positive
    l1 = (loc[pos] - matched.offsets[pos]).abs().sum() / pos.sum()
    torch.testing.assert_close(multibox(smooth_l1_beta=0.0)(loc, logits, targets, PRIORS)["loc"], l1)


# ---------- multibox: images without ground truth ----------


def test_images_without_ground_truth_give_finite_loss_and_classification_gradient():
    gen = torch.Generator().manual_seed(4)
    targets = random_targets(gen, [3, 0, 0], 4)
    loc, logits = head_outputs(gen, 3, 4)
    out = multibox(min_negatives=8)(loc, logits, targets, PRIORS)
    assert all(bool(torch.isfinite(v)) for v in out.values())
    g_loc, g_logits = grads(out["loss"], loc, logits)
    for i in (1, 2):
        taught = (g_logits[i] != 0).any(dim=-1)
        assert int(taught.sum()) == 8, i  # exactly its min_negatives hardest priors
        # ... and they are its 8 highest-loss priors (all background there)
        ce = F.cross_entropy(logits[i].detach(), torch.zeros(len(PRIORS), dtype=torch.long), reduction="none")
        assert set(taught.nonzero().flatten().tolist()) == set(ce.topk(8).indices.tolist())
        assert not bool(g_loc[i].any())  # nothing to localise
    # torchvision's behaviour, kept at min_negatives=0: an empty image teaches nothing
    _, g0 = grads(multibox(min_negatives=0)(loc, logits, targets, PRIORS)["loss"], loc, logits)
    assert not bool(g0[1:].any()) and bool(g0[0].any())


def test_batch_without_any_ground_truth_is_finite_and_mines_the_hardest_negatives():
    gen = torch.Generator().manual_seed(5)
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    loc, logits = head_outputs(gen, 2, 3)
    out = multibox(min_negatives=5)(loc, logits, targets, PRIORS)
    assert out["loc"].item() == 0.0
    ce = F.cross_entropy(
        logits.detach().reshape(-1, 3), torch.zeros(2 * len(PRIORS), dtype=torch.long), reduction="none"
    )
    expected = ce.view(2, -1).topk(5, dim=1).values.sum()  # divided by max(1, 0 positives) = 1
    torch.testing.assert_close(out["cls"], expected)
    for name in ("sigmoid", "softmax"):
        for loc_loss in ("smooth_l1", "giou"):
            f = FocalLoss(
                FocalLossConfig(mode=name, loc_loss=loc_loss),
                box_coder=SSDBoxCoder(),
                matcher=SSDMatcher(SSDMatcherConfig(iou_threshold=0.5)),
            )
            res = f(loc, logits, targets, PRIORS)
            assert all(bool(torch.isfinite(v)) for v in res.values()) and res["loc"].item() == 0.0


# ---------- hard negatives ----------


@st.composite
def mining_cases(draw):
    b, p = draw(st.integers(1, 4)), draw(st.integers(1, 40))
    # coarse values: many exact ties, which a "loss >= k-th value" shortcut would over-select on
    ce = torch.round(draw(unit_rows(b * p, width=1)).reshape(b, p).float() * 4) / 4
    positive = draw(unit_rows(b * p, width=1)).reshape(b, p) < draw(st.floats(0, 0.6))
    ratio = draw(st.sampled_from([3.0, 1.0, 0.5, 2.5, 0.0]))
    return ce, positive, ratio, draw(st.integers(0, 12))


@given(mining_cases())
def test_hard_negatives_take_the_highest_losses_and_the_right_count(case):
    ce, positive, ratio, floor = case
    chosen = hard_negatives(ce, positive, ratio, floor)
    for i in range(ce.shape[0]):
        n_pos = int(positive[i].sum())
        available = ce.shape[1] - n_pos
        expected = min(max(math.floor(ratio * n_pos), floor), available)
        assert int(chosen[i].sum()) == expected
        assert not bool((chosen[i] & positive[i]).any())
        left = ~chosen[i] & ~positive[i]
        if chosen[i].any() and left.any():
            assert float(ce[i][chosen[i]].min()) >= float(ce[i][left].max())
    counts = num_hard_negatives(positive.sum(1), ce.shape[1], ratio, floor)
    assert counts.tolist() == chosen.sum(1).tolist()


def test_hard_negative_count_is_three_per_positive_by_default():
    positive = torch.zeros(3, 50, dtype=torch.bool)
    positive[0, :2] = True  # 2 positives -> 6 negatives
    positive[1, :20] = True  # 20 positives -> 60 wanted, only 30 there
    ce = torch.rand(3, 50)
    chosen = hard_negatives(ce, positive, 3.0, 0)
    assert chosen.sum(1).tolist() == [6, 30, 0]


# ---------- permutation invariance ----------


@st.composite
def unambiguous_batches(draw):
    """targets whose matching has no ties, plus the same targets with each image's boxes permuted."""
    b = draw(st.integers(1, 3))
    counts = [draw(st.integers(0, 5)) for _ in range(b)]
    raw = draw(unit_rows(max(1, sum(counts)), width=5))
    boxes_all = torch.cat((raw[:, :2] * 0.7, raw[:, :2] * 0.7 + 0.05 + raw[:, 2:4] * 0.25), 1).float()
    labels_all = 1 + (raw[:, 4] * 2.999).long()  # 1 .. 3 of 4 classes
    priors_xyxy = cxcywh_to_xyxy(PRIORS)
    targets, permuted, start = [], [], 0
    for g in counts:
        boxes, labels = boxes_all[start : start + g], labels_all[start : start + g]
        start += g
        if g:
            iou = box_iou(boxes, priors_xyxy)
            best = iou.argmax(1)
            assume(len(set(best.tolist())) == g)  # no two boxes claim the same prior
            top2 = iou.topk(min(2, g), dim=0).values
            assume(g == 1 or bool(((top2[0] - top2[1] > 1e-6) | (top2[0] < 0.5)).all()))  # no tie at a match
        perm = torch.tensor(draw(st.permutations(range(g))), dtype=torch.long)
        targets.append({"boxes": boxes, "labels": labels})
        permuted.append({"boxes": boxes[perm], "labels": labels[perm]})
    return targets, permuted, draw(st.integers(0, 2**31 - 1))


LOSS_VARIANTS = [
    {"type": "multibox"},
    {"type": "focal", "mode": "sigmoid", "loc_loss": "giou"},
    {"type": "focal", "mode": "softmax"},
]


@given(unambiguous_batches(), st.sampled_from(LOSS_VARIANTS))
def test_loss_does_not_depend_on_the_order_of_ground_truth(batch, variant):
    targets, permuted, seed = batch
    loss = LOSSES.build(
        LOSSES.validate_config(variant),
        box_coder=SSDBoxCoder(),
        matcher=SSDMatcher(SSDMatcherConfig(iou_threshold=0.5)),
    )
    loc, logits = head_outputs(torch.Generator().manual_seed(seed), len(targets), 4)
    a, b = loss(loc, logits, targets, PRIORS), loss(loc, logits, permuted, PRIORS)
    for key in ("loc", "cls", "loss"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-6)


# ---------- focal ----------


def focal(**kw) -> FocalLoss:
    return FocalLoss(
        FocalLossConfig(**kw), box_coder=SSDBoxCoder(), matcher=SSDMatcher(SSDMatcherConfig(iou_threshold=0.5))
    )


def reference_matching(targets, priors=PRIORS):
    """Per image with torchvision's matcher and coder: (labels [P], matched boxes [P, 4] or None)."""
    anchors = cxcywh_to_xyxy(priors)
    out = []
    for t in targets:
        if t["boxes"].numel() == 0:
            out.append((torch.zeros(len(priors), dtype=torch.long), None, torch.zeros(len(priors), dtype=torch.bool)))
            continue
        m = TVSSDMatcher(0.5)(box_iou(t["boxes"], anchors))
        pos = m >= 0
        labels = torch.where(pos, t["labels"][m.clamp(min=0)], 0)
        out.append((labels, t["boxes"][m.clamp(min=0)], pos))
    return out


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (None, 1.5), (0.6, 0.0)])
def test_sigmoid_focal_equals_torchvision_sigmoid_focal_loss(alpha, gamma):
    gen = torch.Generator().manual_seed(6)
    targets = random_targets(gen, [2, 0, 4], 5)
    loc, logits = head_outputs(gen, 3, 5)
    out = focal(mode="sigmoid", alpha=alpha, gamma=gamma)(loc, logits, targets, PRIORS)
    ref = reference_matching(targets)
    labels = torch.stack([r[0] for r in ref])
    n = max(1, int(sum(r[2].sum() for r in ref)))
    one_hot = F.one_hot(labels, 5).float()
    expected = sigmoid_focal_loss(logits, one_hot, alpha=-1 if alpha is None else alpha, gamma=gamma, reduction="sum")
    torch.testing.assert_close(out["cls"], expected / n, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (None, 0.5), (0.75, 3.0)])
def test_softmax_focal_equals_the_formula(alpha, gamma):
    gen = torch.Generator().manual_seed(7)
    targets = random_targets(gen, [3, 1], 4)
    loc, logits = head_outputs(gen, 2, 4)
    out = focal(mode="softmax", alpha=alpha, gamma=gamma)(loc, logits, targets, PRIORS)
    total, n = 0.0, 0
    for i, (labels, _, pos) in enumerate(reference_matching(targets)):
        prob = torch.softmax(logits[i].detach().double(), dim=-1)
        pt = prob[torch.arange(len(labels)), labels]
        weight = 1.0 if alpha is None else torch.where(labels > 0, alpha, 1 - alpha)
        total += float((-weight * (1 - pt) ** gamma * torch.log(pt)).sum())
        n += int(pos.sum())
    assert out["cls"].item() == pytest.approx(total / n, rel=1e-5)


def test_focal_localisation_terms_equal_smooth_l1_and_torchvision_giou():
    gen = torch.Generator().manual_seed(8)
    targets = random_targets(gen, [2, 3], 4)
    loc, logits = head_outputs(gen, 2, 4)
    loc = (loc.detach() * 0.2).requires_grad_()  # modest offsets: decoded boxes near their priors
    anchors = cxcywh_to_xyxy(PRIORS)
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    ref = reference_matching(targets)
    n = sum(int(r[2].sum()) for r in ref)
    giou, sl1 = 0.0, 0.0
    for i, (_, boxes, pos) in enumerate(ref):
        predicted = coder.decode_single(loc[i, pos].detach(), anchors[pos])
        giou += float(generalized_box_iou_loss(predicted, boxes[pos], reduction="sum"))
        encoded = coder.encode_single(boxes[pos], anchors[pos])
        sl1 += float(F.smooth_l1_loss(loc[i, pos].detach(), encoded, beta=0.5, reduction="sum"))
    out = focal(loc_loss="giou", loc_weight=2.0)(loc, logits, targets, PRIORS)
    assert out["loc"].item() == pytest.approx(2.0 * giou / n, rel=1e-5)
    out = focal(loc_loss="smooth_l1", smooth_l1_beta=0.5)(loc, logits, targets, PRIORS)
    assert out["loc"].item() == pytest.approx(sl1 / n, rel=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: multibox(),
        lambda: focal(loc_loss="smooth_l1"),
        lambda: focal(loc_loss="giou"),
        lambda: focal(mode="softmax", loc_loss="giou", gamma=0.5),
    ],
)
def test_gradients_reach_positive_offsets_only_and_every_logit_they_should(make):
    gen = torch.Generator().manual_seed(9)
    targets = random_targets(gen, [2, 1], 4)
    loc, logits = head_outputs(gen, 2, 4)
    loss = make()
    g_loc, g_logits = grads(loss(loc, logits, targets, PRIORS)["loss"], loc, logits)
    pos = match_targets(targets, PRIORS, SSDMatcher(SSDMatcherConfig(iou_threshold=0.5)), SSDBoxCoder()).positive
    assert torch.isfinite(g_loc).all() and torch.isfinite(g_logits).all()
    assert bool((g_loc[pos] != 0).any(dim=-1).all())  # every positive is pulled towards its box
    assert not bool(g_loc[~pos].any())
    assert bool((g_logits[pos] != 0).any(dim=-1).all())
    if isinstance(loss, FocalLoss):  # no mining: every prior is taught
        assert bool((g_logits != 0).any(dim=-1).all())


def test_confident_predictions_keep_focal_gradients_finite():
    # p_t == 1 in float32 and gamma < 1: d/dx (1 - p_t)^gamma is infinite there without care
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    logits = torch.zeros(1, len(PRIORS), 3)
    logits[..., 0] = 200.0
    logits.requires_grad_()
    loc = torch.zeros(1, len(PRIORS), 4, requires_grad=True)
    for mode in ("sigmoid", "softmax"):
        out = focal(mode=mode, gamma=0.5)(loc, logits, targets, PRIORS)
        (g,) = grads(out["loss"], logits)
        assert torch.isfinite(out["loss"]) and torch.isfinite(g).all(), mode


# ---------- precision and devices ----------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("variant", LOSS_VARIANTS)
def test_half_precision_outputs_are_computed_in_float32(dtype, variant):
    gen = torch.Generator().manual_seed(10)
    targets = random_targets(gen, [2, 0], 4)
    loc, logits = head_outputs(gen, 2, 4)
    loc_h, logits_h = loc.detach().to(dtype), (logits.detach() * 30).to(dtype)  # fp16 softmax would overflow
    loss = LOSSES.build(
        LOSSES.validate_config(variant),
        box_coder=SSDBoxCoder(),
        matcher=SSDMatcher(SSDMatcherConfig(iou_threshold=0.5)),
    )
    half = loss(loc_h, logits_h, targets, PRIORS.to(dtype))
    full = loss(loc_h.float(), logits_h.float(), targets, PRIORS)
    for key in ("loc", "cls", "loss"):
        assert half[key].dtype == torch.float32 and torch.isfinite(half[key])
        torch.testing.assert_close(half[key], full[key], rtol=2e-3, atol=1e-4)  # fp16 priors round a little


# ---------- targets ----------


def test_pad_targets_layout():
    t = [
        {"boxes": torch.tensor([[0.1, 0.1, 0.3, 0.4], [0.5, 0.5, 0.9, 0.8]]), "labels": torch.tensor([2, 1])},
        {"boxes": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)},
        {"boxes": [[0.0, 0.2, 0.4, 0.6]], "labels": [3]},
    ]
    p = pad_targets(t, num_classes=4)
    assert p.boxes.shape == (3, 2, 4) and p.labels.dtype == torch.long
    assert p.mask.tolist() == [[True, True], [False, False], [True, False]]
    assert p.labels.tolist() == [[2, 1], [0, 0], [3, 0]]
    torch.testing.assert_close(p.boxes[2, 0], torch.tensor([0.0, 0.2, 0.4, 0.6]))
    assert torch.isfinite(p.boxes).all() and bool((p.boxes[..., 2:] > p.boxes[..., :2]).all())
    empty = pad_targets([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
    assert empty.boxes.shape == (1, 1, 4) and not empty.mask.any()


def _one(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            _one([[0.1, 0.1, 0.2, 0.2], [0.1, 0.1, 0.3, 0.3]], [1, 0]),
            r"targets\[1\] box 1: label 0 is outside 1 \.\. num_classes - 1 = 3",
        ),
        (_one([[0.1, 0.1, 0.2, 0.2]], [4]), r"targets\[1\] box 0: label 4 is outside"),
        (_one([[10.0, 20.0, 150.0, 200.0]], [1]), r"targets\[1\] box 0: .*not normalised.*pixel"),
        (_one([[0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.3, 0.5]], [1, 2]), r"targets\[1\] box 1: .*empty"),
        (_one([[0.1, float("nan"), 0.2, 0.2]], [1]), r"targets\[1\] box 0: .*non-finite"),
        (_one([[0.1, 0.1, 0.2, 0.2]], [1, 2]), r"targets\[1\] has 1 boxes but 2 labels"),
        (
            {"boxes": torch.rand(2, 5), "labels": torch.tensor([1, 1])},
            r"targets\[1\]\['boxes'\] must have shape \[G, 4\]",
        ),
        ({"boxes": torch.tensor([[0.1, 0.1, 0.2, 0.2]])}, r"targets\[1\] has no 'labels'"),
        ({"boxes": torch.tensor([[0.1, 0.1, 0.2, 0.2]]), "labels": torch.tensor([1.0])}, r"must be integers"),
    ],
)
def test_bad_targets_name_the_image_and_box(bad, message):
    good = _one([[0.1, 0.1, 0.5, 0.5]], [1])
    gen = torch.Generator().manual_seed(11)
    loc, logits = head_outputs(gen, 2, 4)
    with pytest.raises(ValueError, match=message):
        multibox()(loc, logits, [good, bad], PRIORS)


def test_shape_errors_are_clear():
    gen = torch.Generator().manual_seed(12)
    loc, logits = head_outputs(gen, 2, 4)
    t = random_targets(gen, [1, 1], 4)
    with pytest.raises(ValueError, match="got 1 target dicts for a batch of 2"):
        multibox()(loc, logits, t[:1], PRIORS)
    with pytest.raises(ValueError, match=r"priors must have shape \[P, 4\]"):
        multibox()(loc, logits, t, PRIORS[:-1])
    with pytest.raises(ValueError, match=r"logits must have shape \[B, P, C\]"):
        multibox()(loc, logits[:, :-1], t, PRIORS)
    with pytest.raises(TypeError, match="one dict per image"):
        multibox()(loc, logits, t[0], PRIORS)


# ---------- configs and the model ----------


def test_model_built_from_a_preset_has_the_multibox_loss_by_default():
    cfg = ssdkit.presets.get("ssdlite320_mobilenet_v3", num_classes=3)
    assert cfg.loss is not None and cfg.loss.type == "multibox"
    torch.manual_seed(0)
    model = ssdkit.build_model(cfg)
    loc, logits = model(torch.rand(2, 3, 320, 320))
    targets = [
        {"boxes": torch.tensor([[0.1, 0.2, 0.6, 0.9], [0.5, 0.5, 0.7, 0.6]]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    out = model.compute_loss(loc, logits, targets)
    assert set(out) >= {"loc", "cls", "loss"} and all(bool(torch.isfinite(v)) for v in out.values())
    out["loss"].backward()
    head_grads = [p.grad for p in model.head.parameters() if p.grad is not None]
    assert head_grads and any(bool(g.abs().sum() > 0) for g in head_grads)
    # An explicit null still makes an inference-only model.
    bare = ssdkit.build_model(cfg.model_copy(update={"loss": None}))
    with pytest.raises(RuntimeError, match="without a loss"):
        bare.compute_loss(loc, logits, targets)


def test_configs_validate_and_build_from_plain_data():
    cfg = LOSSES.validate_config({"type": "focal", "mode": "softmax", "loc_loss": "giou", "gamma": 1.0})
    loss = LOSSES.build(cfg, box_coder=SSDBoxCoder(), matcher=SSDMatcher(SSDMatcherConfig(iou_threshold=0.5)))
    assert isinstance(loss, FocalLoss) and loss.mode == "softmax" and loss.loc_loss == "giou"
    for bad in (
        {"type": "focal", "mode": "tanh"},
        {"type": "multibox", "neg_pos_ratio": -1},
        {"type": "focal", "alpha": 2},
    ):
        with pytest.raises(ValueError):
            LOSSES.validate_config(bad)
    with pytest.raises(ValueError, match="extra"):
        LOSSES.validate_config({"type": "multibox", "neg_ratio": 3})


def test_a_model_trained_with_sigmoid_focal_scores_with_sigmoid():
    """Independent per-class sigmoids must not be rescored with a softmax at inference."""
    import ssdkit

    cfg = ssdkit.presets.get("ssdlite320_mobilenet_v3", num_classes=3, loss={"type": "focal", "mode": "sigmoid"})
    model = ssdkit.build_model(cfg).eval()
    assert model.score_activation == "sigmoid"
    P = model.priors.shape[0]
    loc = torch.zeros(1, P, 4)
    logits = torch.full((1, P, 3), -10.0)
    logits[0, 7, 2] = 0.0  # sigmoid 0.5; a softmax over the row would give ~1.0
    det = model.detect(loc, logits)[0]
    assert det["labels"].tolist() == [2]
    assert det["scores"].tolist() == pytest.approx([0.5], abs=1e-6)
    softmax_model = ssdkit.build_model(cfg.model_copy(update={"loss": None})).eval()
    assert softmax_model.detect(loc, logits)[0]["scores"][0] > 0.99
