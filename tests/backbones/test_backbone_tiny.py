"""The "tiny" backbone: feature maps of the stated channels and sides, and its config checks."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch

import ssdkit
from ssdkit.registry import BACKBONES


@pytest.mark.parametrize(
    ("channels", "levels", "depth", "size"),
    [([8, 16, 24, 32], 3, 1, (64, 96)), ([4, 8], 2, 0, (33, 47)), ([16, 32, 48, 64, 96, 96, 128], 5, 1, (128, 128))],
)
def test_maps_have_the_stated_channels_and_sides(channels, levels, depth, size):
    cfg = BACKBONES.validate_config({"type": "tiny", "channels": channels, "levels": levels, "depth": depth})
    net = BACKBONES.build(cfg).eval()
    with torch.no_grad():
        maps = net(torch.rand(2, 3, *size))
    assert len(maps) == levels == cfg.num_levels()
    assert net.out_channels == channels[-levels:]
    first = len(channels) - levels
    for k, m in enumerate(maps):
        stride = 2 ** (first + k + 1)
        # a 3x3, stride-2, padding-1 conv maps n to ceil(n / 2); repeated, ceil(n / 2^s)
        assert tuple(m.shape) == (2, channels[first + k], math.ceil(size[0] / stride), math.ceil(size[1] / stride))


def test_norm_none_has_no_batch_norm_and_conv_biases():
    net = BACKBONES.build(BACKBONES.validate_config({"type": "tiny", "channels": [4, 8], "levels": 1, "norm": "none"}))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert all(m.bias is not None for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def test_config_errors():
    with pytest.raises(pydantic.ValidationError, match="levels=3 but channels lists only 2"):
        BACKBONES.validate_config({"type": "tiny", "channels": [4, 8], "levels": 3})
    with pytest.raises(pydantic.ValidationError, match="priors has 3 levels but backbone 'tiny' gives 2"):
        ssdkit.SSDConfig(
            num_classes=3,
            image_size=64,
            backbone={"type": "tiny", "channels": [4, 8, 16], "levels": 2},
            priors={"type": "ssd", "aspect_ratios": [[2.0]] * 3, "s_min": 0.2, "s_max": 0.9},
        )


def test_a_tiny_ssd_builds_and_runs():
    cfg = ssdkit.SSDConfig(
        num_classes=4,
        image_size=128,
        backbone={"type": "tiny"},
        priors={
            "type": "ssd",
            "aspect_ratios": [[2.0], [2.0, 3.0], [2.0, 3.0], [2.0], [2.0]],
            "s_min": 0.1,
            "s_max": 0.9,
        },
    )
    model = ssdkit.build_model(cfg).eval()
    # default sides at 128 px: 16, 8, 4, 2, 1; priors per cell 4, 6, 6, 4, 4
    assert model.feature_sizes == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert model.priors.shape == (256 * 4 + 64 * 6 + 16 * 6 + 4 * 4 + 4, 4)
    with torch.no_grad():
        loc, logits = model(torch.rand(1, 3, 128, 128))
    assert loc.shape == (1, 1524, 4) and logits.shape == (1, 1524, 4)
