"""Every preset builds, has the prior count its reference model has, runs, and survives a file round trip."""

from __future__ import annotations

import math

import pytest
import torch

import ssdkit
from ssdkit.config.model import SSDConfig
from ssdkit.registry import PRIORS


def _ssdlite320_prior_count() -> int:
    # MobileNetV3 maps at stride 16 and 32, then four k3/s2/p1 convs; 2 + 2 * |{2, 3}| priors per cell
    sides = [320 // 16, 320 // 32]
    for _ in range(4):
        sides.append((sides[-1] + 2 * 1 - 3) // 2 + 1)
    return sum(s * s * 6 for s in sides)


# The published prior counts of each preset's reference model.
EXPECTED_PRIORS = {
    "ssd300_vgg16": 8732,
    "ssd300_vgg16_coco": 8732,
    "ssd512_vgg16": 24564,
    "ssdlite320_mobilenet_v3": _ssdlite320_prior_count(),
    "ssd300_resnet50": 8732,
    "ssdlite300_mobilenet_v2_tf": 1917,  # TF OD API ssdlite_mobilenet_v2_coco's anchors
}


def test_ssdlite_count_helper_agrees_with_torchvision_literature():
    assert _ssdlite320_prior_count() == 3234  # 6 * (20^2 + 10^2 + 5^2 + 3^2 + 2^2 + 1^2)


@pytest.mark.parametrize("name", ssdkit.presets.names())
def test_preset_builds_and_runs(name):
    if name not in EXPECTED_PRIORS:
        pytest.fail(f"preset '{name}' has no expected prior count: add it to EXPECTED_PRIORS")
    cfg = ssdkit.presets.get(name)
    torch.manual_seed(0)
    model = ssdkit.build_model(cfg).eval()
    p, c = EXPECTED_PRIORS[name], cfg.num_classes
    assert model.priors.shape == (p, 4)
    assert torch.isfinite(model.priors).all()
    h, w = cfg.image_size
    with torch.inference_mode():
        loc, logits = model(torch.rand(2, 3, h, w))
    assert loc.shape == (2, p, 4)
    assert logits.shape == (2, p, c)
    assert torch.isfinite(loc).all() and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ssdkit.presets.names())
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_preset_file_round_trip(name, suffix, tmp_path):
    cfg = ssdkit.presets.get(name)
    path = cfg.to_file(tmp_path / f"{name}{suffix}")
    back = SSDConfig.from_file(path)
    assert back == cfg
    assert back.model_dump() == cfg.model_dump()


def _nvidia_default_boxes_300(clamp_centres: bool) -> list[torch.Tensor]:
    """NVIDIA's DefaultBoxes(300, [38, 19, 10, 5, 3, 1], steps, sizes 21..315, ratios), re-derived from
    its description, per level `[shapes, rows * columns, 4]` (its own order), cxcywh normalised.
    NVIDIA clamps all four numbers to [0, 1]; `clamp_centres=False` clamps only w and h."""
    fig, feats, steps = 300, [38, 19, 10, 5, 3, 1], [8, 16, 32, 64, 100, 300]
    sizes = [21, 45, 99, 153, 207, 261, 315]
    ratios = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    levels = []
    for k, f in enumerate(feats):
        s1, s2 = sizes[k] / fig, sizes[k + 1] / fig
        shapes = [(s1, s1), (math.sqrt(s1 * s2),) * 2]
        for r in ratios[k]:
            shapes += [(s1 * math.sqrt(r), s1 / math.sqrt(r)), (s1 / math.sqrt(r), s1 * math.sqrt(r))]
        fk = fig / steps[k]
        boxes = [((j + 0.5) / fk, (i + 0.5) / fk, bw, bh) for bw, bh in shapes for i in range(f) for j in range(f)]
        boxes = torch.tensor(boxes, dtype=torch.float64)
        if clamp_centres:
            boxes = boxes.clamp(0, 1)
        else:
            boxes[:, 2:] = boxes[:, 2:].clamp(0, 1)
        levels.append(boxes.view(len(shapes), f * f, 4))
    return levels


def _resnet50_preset_priors(**priors_overrides) -> torch.Tensor:
    cfg = ssdkit.presets.get("ssd300_resnet50").priors.model_copy(update=priors_overrides)
    gen = PRIORS.build(cfg)
    return gen([(s, s) for s in (38, 19, 10, 5, 3, 1)], (300, 300)).double()


def _in_our_order(levels: list[torch.Tensor]) -> torch.Tensor:
    # ours is (level, row, column, shape): move NVIDIA's shape axis last
    return torch.cat([lvl.transpose(0, 1).reshape(-1, 4) for lvl in levels])


def test_resnet50_priors_with_centres_unclamped_match_nvidia_with_only_sizes_clamped():
    ours = _resnet50_preset_priors(clip_centres=False)
    ref = _in_our_order(_nvidia_default_boxes_300(clamp_centres=False))
    assert ours.shape == ref.shape == (8732, 4)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_ssd300_resnet50_priors_match_nvidia_default_boxes_exactly():
    ours = _resnet50_preset_priors()
    ref = _in_our_order(_nvidia_default_boxes_300(clamp_centres=True))
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_get_merges_a_partial_dict_into_a_component_the_preset_leaves_at_its_default():
    cfg = ssdkit.presets.get("ssd300_vgg16", matcher={"iou_threshold": 0.4})
    assert cfg.matcher.type == "ssd" and cfg.matcher.iou_threshold == 0.4
    # a dict naming another type replaces the component, with that type's defaults
    soft = ssdkit.presets.get("ssd300_vgg16", postprocess={"type": "soft", "sigma": 0.3})
    assert soft.postprocess.type == "soft" and soft.postprocess.sigma == 0.3
    # the preset's own fields survive a partial override
    pri = ssdkit.presets.get("ssd300_vgg16", priors={"offset": 0.4})
    assert pri.priors.offset == 0.4 and pri.priors.min_sizes == ssdkit.presets.get("ssd300_vgg16").priors.min_sizes


def test_get_with_new_num_classes_drops_the_presets_class_names():
    cfg = ssdkit.presets.get("ssd300_vgg16", num_classes=4)
    assert cfg.num_classes == 4 and cfg.class_names is None
    named = ssdkit.presets.get("ssd300_vgg16", num_classes=3, class_names=["cat", "dog"])
    assert named.class_names == ["cat", "dog"]


def test_get_unknown_preset_suggests_the_closest():
    with pytest.raises(KeyError, match=r"unknown preset 'ssd300_vg16'; did you mean 'ssd300_vgg16'\?"):
        ssdkit.presets.get("ssd300_vg16")


def test_unknown_preset_error_is_the_registries_error_in_every_lookup():
    from ssdkit.registry import UnknownComponentError

    for lookup in (ssdkit.presets.get, ssdkit.presets.weights, ssdkit.presets.PRESETS.get):
        with pytest.raises(UnknownComponentError) as info:
            lookup("ssd512_vgg61")
        # str(), not KeyError's repr: the message reads as written
        assert str(info.value).startswith("unknown preset 'ssd512_vgg61'; did you mean 'ssd512_vgg16'? known: ")
        assert "ssdlite320_mobilenet_v3" in str(info.value)
    with pytest.raises(UnknownComponentError, match=r"unknown preset 'zzz'; known: ssd300_resnet50, "):
        ssdkit.presets.get("zzz")


def test_register_preset_adds_a_name_and_refuses_it_twice():
    registry = ssdkit.presets.PRESETS
    name = "test_tiny_preset"

    @ssdkit.presets.register_preset(name)
    def _tiny():
        return ssdkit.presets.get("ssd300_vgg16").model_dump() | {"num_classes": 3, "class_names": ["a", "b"]}

    try:
        assert isinstance(registry, ssdkit.registry.Registry) and registry.config_class(name) is SSDConfig
        assert registry.get(name) is _tiny
        assert name in registry and name in ssdkit.presets.names()
        assert ssdkit.presets.get(name).class_names == ["a", "b"]
        with pytest.raises(ValueError, match=f"preset '{name}' is already defined"):
            ssdkit.presets.register_preset(name)(_tiny)
    finally:
        registry.unregister(name)
    assert name not in registry
