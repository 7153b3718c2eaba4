"""ssdkit's ssd300_vgg16_coco preset against torchvision's ssd300_vgg16, with converted random weights.

The peer is torchvision itself: same weights in, the same raw outputs and the same
final detections (in each picture's own pixels) must come out.
"""

from __future__ import annotations

import pytest
import torch
from conftest import unmatched_detections
from torchvision.models.detection import ssd300_vgg16

import ssdkit
from ssdkit.io.convert import from_torchvision

NUM_CLASSES = 21


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_CLASSES).eval()
    with torch.no_grad():
        # Zero head biases make the class scores near-uniform and a random VGG saturates some
        # levels' softmax (scores tied at 1.0). Smaller weights and random biases spread the
        # scores out, so that thresholds, top-k, NMS and the per-image cap all matter.
        for conv in tv.head.classification_head.module_list:
            conv.weight.mul_(0.3)
            conv.bias.normal_(0.0, 1.0)
        for conv in tv.head.regression_head.module_list:
            conv.bias.normal_(0.0, 0.5)
    ours = ssdkit.build_model(ssdkit.presets.get("ssd300_vgg16_coco", num_classes=NUM_CLASSES)).eval()
    ours.load_state_dict(from_torchvision(tv.state_dict()), strict=True)
    return tv, ours


@pytest.fixture(scope="module")
def raw(pair):
    """Both models' raw outputs on one normalised 300x300 batch."""
    tv, ours = pair
    torch.manual_seed(1)
    x = torch.randn(2, 3, 300, 300) * 60.0  # torchvision's SSD input is in 0..255 units, mean-subtracted
    with torch.no_grad():
        feats = list(tv.backbone(x).values())
        expected = tv.head(feats)
        our_feats = ours.backbone(x)
        loc, logits = ours.head(our_feats)  # = ours(x), without a second backbone pass
    return feats, expected, our_feats, loc, logits


def test_raw_outputs_match(raw):
    feats, expected, our_feats, loc, logits = raw
    assert [f.shape for f in our_feats] == [f.shape for f in feats]
    for a, b in zip(our_feats, feats, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-4 * float(b.abs().max()))
    assert loc.shape == expected["bbox_regression"].shape == (2, 8732, 4)
    assert logits.shape == expected["cls_logits"].shape == (2, 8732, NUM_CLASSES)
    assert (loc - expected["bbox_regression"]).abs().max() <= 1e-4
    assert (logits - expected["cls_logits"]).abs().max() <= 1e-4


# (score threshold, top-k per class, NMS IoU, detections per image): the defaults, then
# settings under which the threshold, the top-k and NMS each decide what survives.
SETTINGS = [(0.01, 400, 0.45, 200), (0.3, 400, 0.45, 5000), (0.01, 15, 0.45, 5000), (0.05, 400, 0.2, 5000)]


@pytest.mark.parametrize("setting", SETTINGS, ids=["defaults", "threshold", "topk", "nms"])
def test_postprocess_matches(pair, raw, setting):
    """Same raw outputs in, same detections out, under torchvision's and ssdkit's post-processing."""
    tv, ours = pair
    _, expected, _, loc, logits = raw
    score, top_k, iou, cap = setting
    from torchvision.models.detection.image_list import ImageList

    from ssdkit.postprocess.nms import HardNMS, HardNMSConfig

    sizes = [(300, 300)] * loc.shape[0]
    anchors = tv.anchor_generator(ImageList(torch.zeros(len(sizes), 3, 300, 300), sizes), raw[0])
    saved = (tv.score_thresh, tv.topk_candidates, tv.nms_thresh, tv.detections_per_img, ours.postprocess)
    try:
        tv.score_thresh, tv.topk_candidates, tv.nms_thresh, tv.detections_per_img = setting
        ours.postprocess = HardNMS(
            HardNMSConfig(score_threshold=score, top_k=top_k, iou_threshold=iou, max_detections=cap)
        )
        theirs = tv.postprocess_detections(expected, anchors, sizes)
        got = ours.detect(loc, logits)
    finally:
        tv.score_thresh, tv.topk_candidates, tv.nms_thresh, tv.detections_per_img, ours.postprocess = saved
    for i, (e, d) in enumerate(zip(theirs, got, strict=True)):
        d = {**d, "boxes": d["boxes"] * 300.0}
        assert len(d["scores"]) == len(e["scores"]) > 0, f"image {i}: {len(d['scores'])} vs {len(e['scores'])}"
        missing = unmatched_detections(d, e, score_tol=1e-5, box_tol=1e-3)
        assert not missing, f"image {i}: torchvision detections {missing[:10]} have no ssdkit counterpart"


def test_priors_match_torchvision_default_boxes(pair):
    tv, ours = pair
    from torchvision.models.detection.image_list import ImageList

    images = ImageList(torch.zeros(1, 3, 300, 300), [(300, 300)])
    feats = [torch.zeros(1, 1, h, w) for h, w in ours.feature_sizes]
    anchors = tv.anchor_generator(images, feats)[0]  # [P, 4] xyxy in input pixels
    assert torch.allclose(ours.priors_xyxy * 300.0, anchors, atol=1e-4)


def test_detections_match(pair):
    tv, ours = pair
    g = torch.Generator().manual_seed(2)
    images = [torch.rand(3, h, w, generator=g) for h, w in ((300, 300), (360, 480), (500, 200))]
    with torch.no_grad():
        expected = tv(images)
    got = ours.predict(images)
    for i, (e, d) in enumerate(zip(expected, got, strict=True)):
        assert len(d["scores"]) == len(e["scores"]), f"image {i}: {len(d['scores'])} vs {len(e['scores'])} detections"
        # A non-trivial case: several classes, and no saturated (tied) scores.
        assert len(e["labels"].unique()) > 3 and len(e["scores"].unique()) == len(e["scores"])
        missing = unmatched_detections(d, e, score_tol=1e-5, box_tol=1e-3)
        assert not missing, f"image {i}: torchvision detections {missing[:10]} have no ssdkit counterpart"
        assert torch.all(d["scores"][:-1] >= d["scores"][1:])
        h, w = images[i].shape[1:]
        assert float(d["boxes"][:, 2].max()) <= w and float(d["boxes"][:, 3].max()) <= h  # the picture's pixels
