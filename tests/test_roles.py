"""ssdkit.roles: each role's Protocol, and the derived-value invariant checked once, where it arises."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ssdkit
from ssdkit import roles
from ssdkit.data.build import preprocessor_for
from ssdkit.registry import BACKBONES, PRIORS, ComponentConfig


def test_built_parts_of_a_preset_provide_their_roles():
    model = ssdkit.build_model(ssdkit.presets.get("ssdlite320_mobilenet_v3"))
    pairs = [
        (model.backbone, roles.Backbone),
        (model.head, roles.Head),
        (model.prior_generator, roles.PriorGenerator),
        (model.matcher, roles.Matcher),
        (model.box_coder, roles.BoxCoder),
        (model.loss, roles.Loss),
        (model.postprocess, roles.Postprocess),
    ]
    for part, protocol in pairs:
        assert isinstance(part, protocol), (type(part).__name__, protocol.__name__)
        assert roles.missing_members(part, protocol) == []
    assert not isinstance(object(), roles.BoxCoder)


def test_protocol_members_are_what_each_role_needs():
    assert roles.protocol_members(roles.Backbone) == ["out_channels", "__call__"]
    assert roles.protocol_members(roles.PriorGenerator) == ["num_anchors", "__call__"]
    assert roles.protocol_members(roles.BoxCoder) == ["encode", "decode"]
    assert roles.protocol_members(roles.Dataset) == ["class_names", "__len__", "__getitem__"]


class _UndeclaredConfig(ComponentConfig):  # no num_levels(): the config cannot tell its levels
    type: str = "_undeclared"
    maps: int = 2


class _Undeclared(nn.Module):
    """x -> `maps` maps of 4 channels, each half the size of the one before."""

    def __init__(self, cfg: _UndeclaredConfig) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 if k == 0 else 4, 4, 3, stride=2, padding=1) for k in range(cfg.maps))
        self.out_channels = [4] * cfg.maps

    def forward(self, x):
        out = []
        for conv in self.convs:
            x = conv(x)
            out.append(x)
        return out


@pytest.fixture
def undeclared_backbone():
    BACKBONES.register("_undeclared")(_Undeclared)
    yield
    BACKBONES.unregister("_undeclared")


@pytest.mark.usefixtures("undeclared_backbone")
def test_levels_a_config_does_not_declare_are_checked_once_built():
    cfg = {
        "num_classes": 3,
        "image_size": 64,
        "backbone": {"type": "_undeclared", "maps": 2},
        "priors": {"type": "ssd", "aspect_ratios": [[2]] * 3, "s_min": 0.2, "s_max": 0.9},
    }
    config = ssdkit.SSDConfig.model_validate(cfg)  # nothing to compare yet: validates
    with pytest.raises(ValueError, match="priors has 3 levels but backbone '_undeclared' gives 2 feature maps"):
        ssdkit.build_model(config)
    cfg["backbone"]["maps"] = 3
    model = ssdkit.build_model(cfg)
    assert model.feature_sizes == [(32, 32), (16, 16), (8, 8)]


def test_check_levels_message():
    roles.check_levels(4, 4, "vgg16")  # equal: nothing to say
    with pytest.raises(ValueError, match=r"^priors has 4 levels but backbone 'vgg16' gives 6 feature maps; they"):
        roles.check_levels(4, 6, "vgg16")


def test_a_prior_generator_that_miscounts_its_priors_fails_where_the_priors_are_made():
    class Miscounting:
        num_anchors = [2, 2]

        def __init__(self, sizes):  # a 0.1-style plugin: fields as keywords
            pass

        def __call__(self, feature_sizes, image_size):
            return torch.zeros(sum(h * w for h, w in feature_sizes), 4)  # one per location, not two

    class _Cfg(ComponentConfig):
        type: str = "_miscounting"
        sizes: list[float] = [0.2, 0.5]

    PRIORS.register("_miscounting", config=_Cfg)(Miscounting)
    try:
        cfg = {
            "num_classes": 3,
            "image_size": 64,
            "backbone": {"type": "tiny", "channels": [4, 8, 16, 32], "levels": 2},
        }
        with pytest.raises(
            ValueError, match=r"made 80 priors but the head predicts 160 .*priors per location \[2, 2\]"
        ):
            ssdkit.build_model({**cfg, "priors": {"type": "_miscounting"}})
    finally:
        PRIORS.unregister("_miscounting")


def test_model_and_data_loader_preprocess_alike():
    cfg = ssdkit.presets.get("ssdlite300_mobilenet_v2_tf")
    expected = {
        "image_size": [300, 300],
        "channel_order": "RGB",
        "scale": 2 / 255,  # the TF preset maps 0..255 to -1..1
        "mean": [1.0, 1.0, 1.0],
        "std": [1.0, 1.0, 1.0],
        "resize": "bilinear_asymmetric",
    }
    for pre in (ssdkit.build_model(cfg).preprocessor, preprocessor_for(cfg)):
        described = pre.describe()
        assert {k: described[k] for k in expected} == expected


def test_a_part_given_its_settings_instead_of_its_config_names_the_remedy():
    from ssdkit.matchers import SSDMatcher
    from ssdkit.postprocess import HardNMS

    with pytest.raises(TypeError, match=r"expected a SSDMatcherConfig, got float 0\.5.*SSDMatcher\(SSDMatcherConfig\("):
        SSDMatcher(0.5)
    with pytest.raises(TypeError, match=r"expected a HardNMSConfig, got dict"):
        HardNMS({"iou_threshold": 0.5})


def test_a_built_part_keeps_its_own_copy_of_its_config():
    """Editing the model's config after the build cannot make a part's record disagree with what it does."""
    model = ssdkit.build_model(ssdkit.presets.get("ssdlite320_mobilenet_v3"))
    model.config.postprocess.iou_threshold = 0.3
    assert model.postprocess.config.iou_threshold == model.postprocess.iou_threshold == 0.55
    assert model.postprocess.config is not model.config.postprocess


def test_a_registry_given_0_1_context_text_says_what_it_takes_now():
    from ssdkit.registry import Registry

    with pytest.raises(TypeError, match=r"registry 'widget': protocol must be a class.*build_args"):
        Registry("widget", "() -> nn.Module")
