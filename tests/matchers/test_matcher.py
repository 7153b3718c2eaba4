"""SSDMatcher on padded batches: torchvision's SSDMatcher per image, and the invariants matching must keep."""

from __future__ import annotations

import pytest
import torch
from conftest import boxes
from hypothesis import assume, given
from hypothesis import strategies as st
from torchvision.models.detection._utils import SSDMatcher as TVSSDMatcher
from torchvision.ops import box_iou

from ssdkit.matchers.ssd import SSDMatcher, SSDMatcherConfig

pytestmark = pytest.mark.usefixtures("single_thread")

F32 = torch.float32
# Thresholds that grid-aligned boxes hit exactly (IoU == threshold must count as a match), and any other.
thresholds = st.sampled_from([0.5, 0.25, 1 / 3, 0.2]) | st.floats(0.05, 0.95)


@st.composite
def padded_batches(draw, max_b: int = 3, max_g: int = 5, max_p: int = 24):
    """(gt [B, G, 4] xyxy, mask [B, G], priors [P, 4] xyxy): boxes on a coarse grid so that IoU ties
    and IoU == threshold happen; padded slots hold boxes that would match if they were not masked."""
    priors = draw(boxes(min_n=1, max_n=max_p, grid=8, dtype=F32))
    b, g = draw(st.integers(1, max_b)), draw(st.integers(0, max_g))
    gt = draw(boxes(b * g, grid=8, dtype=F32)).reshape(b, g, 4)
    bits = draw(st.integers(0, 2 ** (b * g) - 1))  # one draw for the whole mask
    mask = torch.tensor([(bits >> k) & 1 for k in range(b * g)], dtype=torch.bool).reshape(b, g)
    filler = draw(st.sampled_from(["zeros", "priors", "keep"]))
    if filler == "zeros":
        gt = torch.where(mask[..., None], gt, torch.zeros_like(gt))
    elif filler == "priors":  # padded slots that overlap priors perfectly
        fill = priors[torch.arange(b * g) % len(priors)].reshape(b, g, 4)
        gt = torch.where(mask[..., None], gt, fill)
    return gt, mask, priors


@st.composite
def cases(draw):
    """(padded batch, threshold); the threshold is often one of the batch's own IoU values, so that
    IoU == threshold (which must count as a match) is tested on purpose, not by luck."""
    gt, mask, priors = draw(padded_batches())
    ious = torch.cat([box_iou(gt[i, mask[i]], priors).flatten() for i in range(gt.shape[0])])
    ious = sorted({float(v) for v in ious if 0 < v < 1})
    if ious and draw(st.booleans()):
        return (gt, mask, priors), draw(st.sampled_from(ious))
    return (gt, mask, priors), draw(thresholds)


def _torchvision_matches(gt, mask, priors, threshold):
    """torchvision's SSDMatcher per image on the valid boxes, indices mapped back to padded slots."""
    out = []
    for i in range(gt.shape[0]):
        valid = mask[i].nonzero().squeeze(1)
        if len(valid) == 0:  # torchvision refuses images without ground truth
            out.append(torch.full((len(priors),), -1, dtype=torch.long))
            continue
        m = TVSSDMatcher(threshold)(box_iou(gt[i, valid], priors))
        out.append(torch.where(m >= 0, valid[m.clamp(min=0)], m))
    return torch.stack(out)


@given(cases())
def test_agrees_with_torchvision_per_image(case):
    (gt, mask, priors), threshold = case
    matches, iou = SSDMatcher(SSDMatcherConfig(iou_threshold=threshold))(gt, mask, priors)
    assert matches.shape == iou.shape == (gt.shape[0], len(priors))
    assert matches.dtype == torch.int64
    assert torch.equal(matches, _torchvision_matches(gt, mask, priors, threshold))
    # iou: with the matched box where matched, else the best valid box (0 when the image has none)
    for i in range(gt.shape[0]):
        full = box_iou(gt[i], priors).masked_fill(~mask[i, :, None], -1.0)  # [G, P]
        best = full.max(dim=0).values.clamp(min=0) if gt.shape[1] else torch.zeros(len(priors))
        m = matches[i]
        expected = torch.where(m >= 0, full.gather(0, m.clamp(min=0)[None]).squeeze(0) if gt.shape[1] else best, best)
        torch.testing.assert_close(iou[i], expected)


@given(cases(), st.sampled_from(["zeros", "nan"]))
def test_per_image_path_equals_batched_path(case, padding):
    """The CPU fast path (one [G_i, P] IoU per image) gives the batched path's results bit for bit,
    whatever sits in the padded slots, packed or not."""
    (gt, mask, priors), threshold = case
    assume(gt.shape[1] > 0)  # no slots at all: __call__ answers before either path
    if padding == "nan":
        gt = torch.where(mask[..., None], gt, torch.tensor(float("nan")))
    matcher = SSDMatcher(SSDMatcherConfig(iou_threshold=threshold))
    fast, slow = matcher.per_image(gt, mask, priors), matcher.batched(gt, mask, priors)
    assert torch.equal(fast[0], slow[0])
    assert torch.equal(fast[1], slow[1])


def test_large_batches_on_cpu_take_the_per_image_path(monkeypatch):
    from ssdkit.matchers import ssd

    calls = []
    matcher = SSDMatcher(SSDMatcherConfig(iou_threshold=0.5))
    monkeypatch.setattr(matcher, "per_image", lambda *a: calls.append("per_image") or SSDMatcher.per_image(matcher, *a))
    monkeypatch.setattr(matcher, "batched", lambda *a: calls.append("batched") or SSDMatcher.batched(matcher, *a))
    gt = torch.tensor([[[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.8]]])
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    small = matcher(gt, mask, priors)
    monkeypatch.setattr(ssd, "PER_IMAGE_ABOVE", 0)
    large = matcher(gt, mask, priors)
    assert calls == ["batched", "per_image"]
    assert small[0].tolist() == large[0].tolist() == [[0, 1]]


@given(cases())
def test_matching_invariants(case):
    (gt, mask, priors), threshold = case
    matches, _ = SSDMatcher(SSDMatcherConfig(iou_threshold=threshold))(gt, mask, priors)
    for i in range(gt.shape[0]):
        m = matches[i]
        valid = mask[i].nonzero().squeeze(1).tolist()
        # padded entries are never matched: every match is a valid box of this image
        assert set(m[m >= 0].tolist()) <= set(valid)
        if not valid:
            assert bool((m == -1).all())
            continue
        iou = box_iou(gt[i], priors)  # [G, P]
        best_prior = iou.argmax(dim=1)  # first best prior of each box, as torch and torchvision break ties
        forced = {int(best_prior[g]) for g in valid}
        best_valid = iou[valid].max(dim=0).values  # [P]
        for p in range(len(priors)):
            g = int(m[p])
            if p in forced:
                # a best prior always goes to a box that wants it; the last such box wins
                assert g == max(v for v in valid if int(best_prior[v]) == p)
            elif g >= 0:
                # a threshold match: IoU >= threshold, and with the box that overlaps the prior most
                assert iou[g, p] >= threshold
                assert iou[g, p] == best_valid[p]
            else:
                assert best_valid[p] < threshold
        # Every valid box keeps at least one prior, unless its best prior was taken by a later box
        # that wants the same prior (two boxes with one best prior: only one can have it).
        for g in valid:
            if not bool((m == g).any()):
                p = int(best_prior[g])
                assert int(m[p]) > g and int(best_prior[int(m[p])]) == p


@given(st.data(), thresholds)
def test_distinct_boxes_each_get_their_own_prior(data, threshold):
    # G <= P boxes, each a copy of a different prior: its IoU 1 prior is its unique best, so every
    # box is matched there (no stealing possible), whatever the other boxes and the threshold.
    priors = data.draw(boxes(min_n=1, max_n=16, grid=8, dtype=F32))
    priors = torch.unique(priors, dim=0)
    pick = data.draw(st.lists(st.integers(0, len(priors) - 1), min_size=1, max_size=len(priors), unique=True))
    gt = priors[pick][None]
    matches, iou = SSDMatcher(SSDMatcherConfig(iou_threshold=threshold))(
        gt, torch.ones(1, len(pick), dtype=torch.bool), priors
    )
    for g, p in enumerate(pick):
        assert int(matches[0, p]) == g
        assert iou[0, p] == 1.0


@given(padded_batches(), thresholds)
def test_padded_contents_do_not_matter(batch, threshold):
    gt, mask, priors = batch
    matcher = SSDMatcher(SSDMatcherConfig(iou_threshold=threshold))
    ref = matcher(gt, mask, priors)
    junk = torch.where(mask[..., None], gt, torch.tensor([0.0, 0.0, 1.0, 1.0]))  # the whole image
    nan = torch.where(mask[..., None], gt, torch.tensor(float("nan")))
    for padded in (junk, nan):
        got = matcher(padded, mask, priors)
        assert torch.equal(got[0], ref[0])
        torch.testing.assert_close(got[1], ref[1])


@given(padded_batches(), thresholds)
def test_no_ground_truth_means_no_positives(batch, threshold):
    gt, mask, priors = batch
    matcher = SSDMatcher(SSDMatcherConfig(iou_threshold=threshold))
    for g in (gt, gt[:, :0]):  # every slot padded, or no slots at all
        matches, iou = matcher(g, torch.zeros(g.shape[:2], dtype=torch.bool), priors)
        assert matches.shape == iou.shape == (gt.shape[0], len(priors))
        assert bool((matches == -1).all())
        assert bool((iou == 0).all())


def test_images_are_independent():
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0]])
    gt = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]], [[0.5, 0.5, 1.0, 0.9], [0.0, 0.5, 0.5, 1.0]]])
    mask = torch.tensor([[True, False], [True, True]])
    matches, _ = SSDMatcher(SSDMatcherConfig(iou_threshold=0.5))(gt, mask, priors)
    assert matches.tolist() == [[0, -1, -1], [-1, 0, 1]]


def test_threshold_must_lie_in_open_unit_interval():
    from pydantic import ValidationError

    from ssdkit.matchers.ssd import SSDMatcherConfig

    for bad in (0.0, -0.1, 1.0, 1.5):
        with pytest.raises(ValidationError, match="iou_threshold"):
            SSDMatcherConfig(iou_threshold=bad)
