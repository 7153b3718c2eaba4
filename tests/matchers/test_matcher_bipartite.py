"""The `bipartite` matcher: the original SSD code's greedy max-IoU pairing, batched over images."""

from __future__ import annotations

import pytest
import torch
from conftest import boxes
from hypothesis import given
from hypothesis import strategies as st
from test_matcher import F32, cases, padded_batches, thresholds
from torchvision.ops import box_iou

from ssdkit.build import build_model
from ssdkit.config import RunConfig, config_path
from ssdkit.matchers import BipartiteMatcher, SSDMatcher

pytestmark = pytest.mark.usefixtures("single_thread")


def _reference(gt, mask, priors, threshold):
    """The rule written out plainly, one image and one pair at a time, on the full IoU matrix:
    take the free (box, prior) pair of largest IoU (ties: lower prior index, then lower box index),
    until no box or no prior is free; then a prior not taken whose best IoU >= threshold takes that
    box (the first such box on ties)."""
    out = []
    for i in range(gt.shape[0]):
        valid = mask[i].nonzero().squeeze(1).tolist()
        matches = [-1] * len(priors)
        if valid:
            iou = box_iou(gt[i], priors).tolist()
            free_boxes, free_priors = set(valid), set(range(len(priors)))
            while free_boxes and free_priors:
                _, neg_p, neg_g = max((iou[g][p], -p, -g) for g in free_boxes for p in free_priors)
                matches[-neg_p] = -neg_g
                free_boxes.discard(-neg_g)
                free_priors.discard(-neg_p)
            for p in free_priors:
                best = max(iou[g][p] for g in valid)
                if best >= threshold:
                    matches[p] = min(g for g in valid if iou[g][p] == best)
        out.append(matches)
    return torch.tensor(out, dtype=torch.long).reshape(gt.shape[0], len(priors))


@given(cases())
def test_agrees_with_the_plain_greedy_rule(case):
    (gt, mask, priors), threshold = case
    matches, iou = BipartiteMatcher(threshold)(gt, mask, priors)
    assert matches.shape == iou.shape == (gt.shape[0], len(priors)) and matches.dtype == torch.int64
    assert torch.equal(matches, _reference(gt, mask, priors, threshold))


@given(padded_batches(max_g=8, max_p=24), thresholds)
def test_every_box_keeps_a_prior_while_priors_last(batch, threshold):
    gt, mask, priors = batch
    matches, _ = BipartiteMatcher(threshold)(gt, mask, priors)
    for i in range(gt.shape[0]):
        valid = mask[i].nonzero().squeeze(1).tolist()
        got = set(matches[i][matches[i] >= 0].tolist())
        assert got <= set(valid)  # padded slots never match
        if len(priors) >= len(valid):
            assert got == set(valid)  # every valid box has at least one positive prior
        else:
            assert len(got) == len(priors)  # every prior paired, each with a box of its own


@given(st.data(), thresholds)
def test_the_ssd_matcher_loses_boxes_this_one_keeps(data, threshold):
    # Copies of one prior, slightly shrunk: all want the same best prior. `ssd` keeps only the last.
    priors = data.draw(boxes(min_n=4, max_n=16, grid=8, dtype=F32))
    gt = priors[:1].repeat(3, 1)[None] * torch.tensor([1.0, 1.0, 0.99, 0.98])
    mask = torch.ones(1, 3, dtype=torch.bool)
    kept = set(BipartiteMatcher(threshold)(gt, mask, priors)[0][0].tolist()) - {-1}
    assert kept == {0, 1, 2}
    lost = set(SSDMatcher(threshold)(gt, mask, priors)[0][0].tolist()) - {-1}
    assert 2 in lost


def test_two_boxes_with_one_best_prior_by_hand():
    # Priors: the left half, the right half, the top-left quarter.
    priors = torch.tensor([[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]])
    # Box 0 is the left half less a sliver: IoU 0.49/0.5 = 0.98 with prior 0, 0.24/0.5 = 0.48 with prior 2.
    # Box 1 covers x 0..0.6, all heights: IoU 0.5/0.6 = 0.833 with prior 0, 0.1/1.0 = 0.1 with prior 1,
    # 0.25/0.6 = 0.417 with prior 2. Both boxes' best prior is prior 0.
    gt = torch.tensor([[[0.0, 0.02, 0.5, 1.0], [0.0, 0.0, 0.6, 1.0]]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    iou = box_iou(gt[0], priors)
    torch.testing.assert_close(iou, torch.tensor([[0.98, 0.0, 0.48], [0.5 / 0.6, 0.1, 0.25 / 0.6]]))
    # torchvision's rule: the later box takes prior 0; box 0's forced prior is gone, and at
    # threshold 0.6 no other prior reaches it (0.48 with prior 2): box 0 has no positive at all.
    assert SSDMatcher(0.6)(gt, mask, priors)[0].tolist() == [[1, -1, -1]]
    # Bipartite: the largest IoU (0.98: box 0, prior 0) first; box 1 then takes its best free prior,
    # prior 2 (0.417 > 0.1). Prior 1 stays background (0.1 < 0.6).
    matches, matched_iou = BipartiteMatcher(0.6)(gt, mask, priors)
    assert matches.tolist() == [[0, -1, 1]]
    torch.testing.assert_close(matched_iou, torch.tensor([[0.98, 0.1, 0.25 / 0.6]]))
    # At threshold 0.05 prior 1 reaches box 1 by IoU as well.
    assert BipartiteMatcher(0.05)(gt, mask, priors)[0].tolist() == [[0, 1, 1]]


def test_no_ground_truth_and_padding():
    priors = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])
    for gt, mask in ((torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool)),
                     (torch.rand(2, 3, 4).sort(-1).values, torch.zeros(2, 3, dtype=torch.bool))):
        matches, iou = BipartiteMatcher()(gt, mask, priors)
        assert (matches == -1).all() and (iou == 0).all() and matches.shape == (2, 2)
    # One image with a box, one padded only: the padded image stays background.
    gt = torch.tensor([[[0.5, 0.5, 1.0, 1.0]], [[0.5, 0.5, 1.0, 1.0]]])
    matches, _ = BipartiteMatcher()(gt, torch.tensor([[True], [False]]), priors)
    assert matches.tolist() == [[-1, 0], [-1, -1]]


def test_selected_by_name_from_a_config():
    run = RunConfig.from_file(config_path("demo"), ["model.matcher.type=bipartite", "model.matcher.iou_threshold=0.4"])
    model = build_model(run.model)
    assert isinstance(model.matcher, BipartiteMatcher) and model.matcher.iou_threshold == 0.4
    assert model.loss.matcher is model.matcher
