"""Sigmoid focal loss starts from its prior: the head's class biases are set as RetinaNet sets them."""

from __future__ import annotations

import math

import pytest
import torch

from ssdkit.build import build_model
from ssdkit.config import RunConfig, config_path
from ssdkit.config.model import SSDConfig

pytestmark = pytest.mark.usefixtures("single_thread")


def _model(loss: dict, head: str = "ssd"):
    model = RunConfig.from_file(config_path("demo")).model.model_dump()
    model["loss"], model["head"] = loss, {"type": head}
    torch.manual_seed(0)
    return build_model(SSDConfig.model_validate(model)).train()


def _batch():
    targets = [
        {"boxes": torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8]]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[0.2, 0.3, 0.6, 0.9]]), "labels": torch.tensor([3])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    return torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(0)), targets


@pytest.mark.parametrize("head", ["ssd", "depthwise"])
def test_initial_scores_and_loss_start_at_the_prior(head):
    images, targets = _batch()
    model = _model({"type": "focal", "mode": "sigmoid"}, head)
    loc, logits = model(images)
    scores = torch.sigmoid(logits.detach())
    # Every prior starts near p = 0.01 for each object class and near 1 - p for background: the
    # median exactly so, up to the spread the random conv weights add to the bias (which also lifts
    # the mean a little: sigmoid is convex there).
    assert 0.008 < float(scores[..., 1:].median()) < 0.0125 and float(scores[..., 1:].mean()) < 0.02
    assert 0.9875 < float(scores[..., 0].median()) < 0.992 and float(scores[..., 0].mean()) > 0.98
    # Per positive prior, its object column pays alpha * -log(p) * (1 - p)^2 and the background column
    # (1 - alpha) * -log(p) * (1 - p)^2: -log(0.01) * 0.99^2 = 4.51 in all; each negative pays ~1e-6.
    expected = -math.log(0.01) * 0.99**2
    cls = float(model.compute_loss(loc, logits, targets)["cls"].detach())
    assert expected * 0.8 < cls < expected * 1.25
    # Without the init (zero biases: every score 1/2) the same batch starts orders of magnitude higher.
    plain = _model({"type": "focal", "mode": "sigmoid", "prior_probability": None}, head)
    assert float(plain.compute_loss(*plain(images), targets)["cls"].detach()) > 20 * cls


def test_bias_layout_and_modes_left_alone():
    model = _model({"type": "focal", "mode": "sigmoid", "prior_probability": 0.2})
    logit = math.log(0.2 / 0.8)
    for conv, anchors in zip(model.head.cls, model.prior_generator.num_anchors, strict=True):
        # channels are (anchor, class): every anchor's block is [background, object, object, object]
        want = torch.tensor([-logit, logit, logit, logit]).repeat(anchors)
        torch.testing.assert_close(conv.bias.detach(), want)
    for loss in ({"type": "focal", "mode": "softmax"}, {"type": "multibox"}):
        model = _model(loss)
        assert all(bool((conv.bias == 0).all()) for conv in model.head.cls)


def test_a_head_without_the_hook_is_named_in_a_warning():
    from ssdkit.heads.conv import ConvHead
    from ssdkit.registry import HEADS, ComponentConfig

    class BareHeadConfig(ComponentConfig):
        type: str = "bare_test_head"

    class BareHead(torch.nn.Module):  # a plugin head: ConvHead's layers, without init_class_bias
        def __init__(self, in_channels, num_anchors, num_classes):
            super().__init__()
            self.inner = ConvHead(in_channels=in_channels, num_anchors=num_anchors, num_classes=num_classes)

        def forward(self, features):
            return self.inner(features)

    HEADS.register("bare_test_head", config=BareHeadConfig)(BareHead)
    try:
        with pytest.warns(RuntimeWarning, match="head 'bare_test_head' has no init_class_bias"):
            model = _model({"type": "focal", "mode": "sigmoid"}, "bare_test_head")
    finally:
        HEADS.unregister("bare_test_head")
    assert all(bool((conv.bias == 0).all()) for conv in model.head.inner.cls)
