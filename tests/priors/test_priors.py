"""SSD priors: counts, torchvision's DefaultBoxGenerator, the paper's formula, config validation."""

from __future__ import annotations

import itertools
import math

import pydantic
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

from ssdkit import presets
from ssdkit.priors.ssd import SSDPriorsConfig
from ssdkit.registry import PRIORS

pytestmark = pytest.mark.usefixtures("single_thread")

SSD300_FEATURES = [38, 19, 10, 5, 3, 1]
SSD512_FEATURES = [64, 32, 16, 8, 4, 2, 1]


def _generate(cfg: SSDPriorsConfig, feature_sizes, image_size):
    return PRIORS.build(cfg)(feature_sizes, image_size)


def _square(sizes):
    return [(f, f) for f in sizes]


@pytest.mark.parametrize(
    "preset, features, expected",
    [
        ("ssd300_vgg16", SSD300_FEATURES, 8732),
        ("ssd300_vgg16_coco", SSD300_FEATURES, 8732),
        ("ssd512_vgg16", SSD512_FEATURES, 24564),
    ],
)
def test_preset_prior_counts(preset, features, expected):
    cfg = presets.get(preset)
    priors = _generate(cfg.priors, _square(features), cfg.image_size)
    assert priors.shape == (expected, 4)
    assert priors.dtype == torch.float32


def _paper_reference(min_sizes, max_sizes, steps, ratios, features, image):
    """ssd.pytorch's PriorBox written out as plain loops (the paper's VOC setting).

    It clamps all four numbers, centres too: steps * f > image (32 * 10 > 300) would put the last
    centres of that level past 1; the presets ask for the same with `clip_centres`."""
    out = []
    for k, f in enumerate(features):
        for i, j in itertools.product(range(f), repeat=2):
            f_k = image / steps[k]
            cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
            s = min_sizes[k] / image
            s_prime = math.sqrt(s * max_sizes[k] / image)
            out += [[cx, cy, s, s], [cx, cy, s_prime, s_prime]]
            for r in ratios[k]:
                out += [[cx, cy, s * math.sqrt(r), s / math.sqrt(r)], [cx, cy, s / math.sqrt(r), s * math.sqrt(r)]]
    out = torch.tensor(out, dtype=torch.float64)
    return out.clamp(0, 1).float()


@pytest.mark.parametrize("preset, features", [("ssd300_vgg16", SSD300_FEATURES), ("ssd512_vgg16", SSD512_FEATURES)])
def test_paper_presets_equal_loop_reference(preset, features):
    cfg = presets.get(preset)
    p = cfg.priors
    ours = _generate(p, _square(features), cfg.image_size)
    ref = _paper_reference(p.min_sizes, p.max_sizes, p.steps, p.aspect_ratios, features, cfg.image_size[0])
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def test_coco_preset_equals_torchvision_default_boxes():
    cfg = presets.get("ssd300_vgg16_coco")
    p = cfg.priors
    tv = DefaultBoxGenerator(p.aspect_ratios, scales=p.scales, steps=[int(s) for s in p.steps])
    theirs = tv._grid_default_boxes([[f, f] for f in SSD300_FEATURES], [300, 300], dtype=torch.float32)
    ours = _generate(p, _square(SSD300_FEATURES), cfg.image_size)
    assert ours.shape == theirs.shape == (8732, 4)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


# ---------- random valid configs ----------

ratio_lists = st.lists(st.floats(0.1, 10.0), min_size=0, max_size=3)


@st.composite
def prior_setups(draw, *, default_steps: bool = False, source: str | None = None):
    """(config, feature sizes [(h, w)], image size (h, w)) for a random valid SSD prior setting."""
    levels = draw(st.integers(1, 4))
    image = (draw(st.integers(16, 640)), draw(st.integers(16, 640)))
    features = [(draw(st.integers(1, 6)), draw(st.integers(1, 6))) for _ in range(levels)]
    kw: dict = {"aspect_ratios": [draw(ratio_lists) for _ in range(levels)]}
    source = source or draw(st.sampled_from(["pixels", "scales", "paper"]))
    if source == "pixels":
        kw["min_sizes"] = [draw(st.floats(1.0, 700.0)) for _ in range(levels)]
        kw["max_sizes"] = [m + draw(st.floats(0.0, 300.0)) for m in kw["min_sizes"]]
    elif source == "scales":
        kw["scales"] = [draw(st.floats(0.01, 1.2)) for _ in range(levels + 1)]
    else:
        s_min = draw(st.floats(0.01, 0.9))
        kw.update(s_min=s_min, s_max=draw(st.floats(s_min, 1.2)))
    if not default_steps and draw(st.booleans()):
        kw["steps"] = [draw(st.floats(1.0, 64.0)) for _ in range(levels)]
    kw["offset"] = draw(st.sampled_from([0.5, 0.0, 1.0]) | st.floats(0, 1))
    kw["clip"] = draw(st.booleans()) if not default_steps else True
    return SSDPriorsConfig(**kw), features, image


@given(prior_setups())
def test_count_matches_formula(setup):
    cfg, features, image = setup
    priors = _generate(cfg, features, image)
    expected = sum(fh * fw * (2 + 2 * len(r)) for (fh, fw), r in zip(features, cfg.aspect_ratios, strict=True))
    assert priors.shape == (expected, 4)
    assert PRIORS.build(cfg).num_anchors == [2 + 2 * len(r) for r in cfg.aspect_ratios]


@given(prior_setups(default_steps=True))
def test_centres_inside_and_sizes_in_unit_interval(setup):
    cfg, features, image = setup
    priors = _generate(cfg, features, image)
    assert bool(((priors[:, :2] >= 0) & (priors[:, :2] <= 1)).all())
    assert bool(((priors[:, 2:] > 0) & (priors[:, 2:] <= 1)).all())


@given(prior_setups(source="scales"))
def test_scale_configs_equal_torchvision(setup):
    cfg, features, image = setup
    cfg = cfg.model_copy(update={"offset": 0.5})  # torchvision always centres priors in their cell
    tv = DefaultBoxGenerator(cfg.aspect_ratios, scales=cfg.scales, steps=cfg.steps, clip=cfg.clip)
    theirs = tv._grid_default_boxes([list(f) for f in features], list(image), dtype=torch.float32)
    torch.testing.assert_close(_generate(cfg, features, image), theirs, atol=1e-6, rtol=1e-6)


@given(prior_setups())
def test_layout_is_level_row_col_anchor(setup):
    cfg, features, image = setup
    priors = _generate(cfg, features, image)
    start = 0
    for lvl, ((fh, fw), ratios) in enumerate(zip(features, cfg.aspect_ratios, strict=True)):
        a = 2 + 2 * len(ratios)
        level = priors[start : start + fh * fw * a].reshape(fh, fw, a, 4)
        start += fh * fw * a
        # all anchors of one location share its centre; x grows along columns, y along rows
        assert bool((level[..., :2] == level[:, :, :1, :2]).all())
        assert bool((level[:, 1:, 0, 0] > level[:, :-1, 0, 0]).all())
        assert bool((level[1:, :, 0, 1] > level[:-1, :, 0, 1]).all())
        # centre of cell (row i, column j) = ((j + offset) * step_x, (i + offset) * step_y), steps as fractions
        step_x = cfg.steps[lvl] / image[1] if cfg.steps else 1 / fw
        step_y = cfg.steps[lvl] / image[0] if cfg.steps else 1 / fh
        cx = (torch.arange(fw, dtype=torch.float64) + cfg.offset) * step_x
        cy = (torch.arange(fh, dtype=torch.float64) + cfg.offset) * step_y
        torch.testing.assert_close(level[0, :, 0, 0].double(), cx, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(level[:, 0, 0, 1].double(), cy, atol=1e-6, rtol=1e-6)
        # the same shapes repeat at every location
        assert bool((level[..., 2:] == level[:1, :1, :, 2:]).all())
        # each ratio r gives a pair (w, h), (h, w) after the two squares (before clipping), in the
        # sizes' own unit: pixels for min_sizes, fractions of each side for scales (as torchvision)
        if not cfg.clip:
            unit = torch.tensor([image[1], image[0]] if cfg.min_sizes is not None else [1, 1])
            wh = (level[0, 0, 2:, 2:].double() * unit).reshape(-1, 2, 2)
            torch.testing.assert_close(wh[:, 0], wh[:, 1].flip(-1), rtol=1e-6, atol=1e-6)  # float32 origin
    assert start == len(priors)


@given(st.integers(2, 8), st.floats(0.05, 0.5), st.floats(0.0, 0.6))
def test_paper_formula_gives_linear_scales(m, s_min, span):
    s_max = s_min + span
    cfg = SSDPriorsConfig(aspect_ratios=[[]] * m, s_min=s_min, s_max=s_max, clip=False)
    priors = _generate(cfg, [(1, 1)] * m, (300, 300))
    assert priors.shape == (2 * m, 4)
    # the paper: s_k = s_min + (s_max - s_min)(k - 1)/(m - 1), k = 1..m; s'_k = sqrt(s_k s_{k+1}),
    # with s_{m+1} one more step of the same line (as the original Caffe SSD does).
    s = [s_min + (s_max - s_min) * (k - 1) / (m - 1) for k in range(1, m + 2)]
    squares = priors[0::2, 2:]
    primes = priors[1::2, 2:]
    torch.testing.assert_close(squares, torch.tensor(s[:m]).float()[:, None].expand(m, 2))
    torch.testing.assert_close(
        primes, torch.tensor([math.sqrt(s[k] * s[k + 1]) for k in range(m)]).float()[:, None].expand(m, 2)
    )


def test_aspect_ratio_boxes_follow_the_paper():
    # one level, s = 0.2, ratios 2 and 3: w = s sqrt(r), h = s / sqrt(r), then the transpose
    cfg = SSDPriorsConfig(aspect_ratios=[[2, 3]], scales=[0.2, 0.45])
    wh = _generate(cfg, [(1, 1)], (300, 300))[:, 2:]
    s = 0.2
    expected = [
        [s, s],
        [0.3, 0.3],
        [s * 2**0.5, s / 2**0.5],
        [s / 2**0.5, s * 2**0.5],
        [s * 3**0.5, s / 3**0.5],
        [s / 3**0.5, s * 3**0.5],
    ]
    torch.testing.assert_close(wh, torch.tensor(expected))


def test_wrong_number_of_feature_maps_is_an_error():
    gen = PRIORS.build(SSDPriorsConfig(aspect_ratios=[[2]] * 3, s_min=0.2, s_max=0.9))
    with pytest.raises(ValueError, match="2 feature maps.*3 levels"):
        gen([(4, 4), (2, 2)], (300, 300))


# ---------- invalid configs ----------

_OK = {"aspect_ratios": [[2], [2, 3], [2]], "min_sizes": [30, 60, 111], "max_sizes": [60, 111, 162]}


def _paths(err: pydantic.ValidationError) -> list[str]:
    """'dotted.path: message' per error, the way a user reads them."""
    return [".".join(map(str, e["loc"])) + ": " + e["msg"] for e in err.errors()]


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"aspect_ratios": [[2], [2, 3], [-1.0]]}, "aspect_ratios.2.0: "),
        ({"aspect_ratios": [[2], [2, 0.0], [2]]}, "aspect_ratios.1.1: "),
        ({"aspect_ratios": [[2], [2, 3], [float("inf")]]}, "aspect_ratios.2.0: "),
        ({"aspect_ratios": [[2], [float("nan")], [2]]}, "aspect_ratios.1.0: "),
        ({"aspect_ratios": []}, "aspect_ratios: "),
        ({"min_sizes": [30, -60, 111]}, "min_sizes.1: "),
        ({"max_sizes": [60, 111, 0]}, "max_sizes.2: "),
        ({"min_sizes": [30, 60]}, "min_sizes: "),
        ({"max_sizes": [60, 111, 162, 213]}, "max_sizes: "),
        ({"steps": [8, 16]}, "steps: "),
        ({"steps": [8, -16, 32]}, "steps.1: "),
        ({"min_sizes": None, "max_sizes": None, "scales": [0.1, 0.2, 0.3]}, "scales: "),  # needs L + 1
        ({"min_sizes": None, "max_sizes": None, "scales": [0.1, 0.2, -0.3, 0.4]}, "scales.2: "),
        ({"min_sizes": None, "max_sizes": None}, "exactly one of min_sizes, scales or s_min"),
        ({"scales": [0.1, 0.2, 0.3, 0.4]}, "['min_sizes', 'scales']"),
        ({"s_min": 0.2, "s_max": 0.9}, "['min_sizes', 's_min']"),
        ({"min_sizes": None, "max_sizes": None, "s_min": 0.2}, "s_max is required"),
        ({"min_sizes": None, "max_sizes": None, "s_min": 0.9, "s_max": 0.2}, "s_min <= s_max"),
        ({"min_sizes": None, "max_sizes": None, "s_min": -0.1, "s_max": 0.2}, "s_min: "),
        ({"max_sizes": None}, "max_sizes is required"),
        ({"offset": 1.5}, "offset: "),
        ({"aspect_ratio": [[2]]}, "aspect_ratio: Extra inputs are not permitted"),
    ],
)
def test_invalid_config_names_the_field(change, expected):
    with pytest.raises(pydantic.ValidationError) as err:
        SSDPriorsConfig(**{**_OK, **change})
    assert any(expected in p for p in _paths(err.value)), _paths(err.value)
