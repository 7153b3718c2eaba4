"""Prior coverage (ssdkit.analysis.priors), IoU k-means and prior suggestions (kmeans), and the
`ssdkit analyze-priors` command."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from conftest import boxes as box_strategy
from conftest import cxcywh_boxes
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from torchvision.ops import box_iou as tv_box_iou

from ssdkit import presets
from ssdkit.analysis.kmeans import KMeansResult, kmeans_iou, priors_from_clusters, suggest_priors, wh_iou
from ssdkit.analysis.priors import analyze_priors, normalised_boxes
from ssdkit.boxes import cxcywh_to_xyxy
from ssdkit.cli import main
from ssdkit.config.model import SSDConfig
from ssdkit.priors.ssd import SSDPriorsConfig
from ssdkit.registry import PRIORS

pytestmark = pytest.mark.usefixtures("single_thread")

SSD300_FEATURES = [(f, f) for f in (38, 19, 10, 5, 3, 1)]
SSDLITE_FEATURES = [(f, f) for f in (20, 10, 5, 3, 2, 1)]


def _priors(preset: str, features) -> torch.Tensor:
    cfg = presets.get(preset)
    return PRIORS.build(cfg.priors)(features, cfg.image_size)


@pytest.fixture(scope="module")
def ssd300_priors() -> torch.Tensor:
    return _priors("ssd300_vgg16", SSD300_FEATURES)


# ---------- coverage ----------


@pytest.mark.parametrize(
    "preset, features", [("ssd300_vgg16", SSD300_FEATURES), ("ssdlite320_mobilenet_v3", SSDLITE_FEATURES)]
)
def test_boxes_equal_to_the_priors_are_all_covered(preset, features):
    priors = _priors(preset, features)
    image_size = presets.get(preset).image_size
    report = analyze_priors(priors, cxcywh_to_xyxy(priors), iou_threshold=0.5, image_size=image_size)
    assert report.num_boxes == len(priors)
    assert report.coverage == 1.0
    assert len(report.unreached) == 0
    torch.testing.assert_close(report.best_iou, torch.ones(len(priors)))
    assert (report.num_matched >= 1).all()
    for b in report.per_bin():
        assert b.count == 0 or b.coverage == 1.0, b
    # Even at IoU 1 each box finds its own prior: the IoU of a box with itself is computed exactly.
    some = cxcywh_to_xyxy(priors[::5])
    assert analyze_priors(priors, some, iou_threshold=1.0, image_size=image_size).coverage == 1.0


def test_coverage_falls_for_boxes_far_from_every_prior_shape(ssd300_priors):
    priors = ssd300_priors
    g = torch.Generator().manual_seed(0)
    n = 200
    # Extremely thin boxes (60:1 and 1:60): no prior of ssd300 is narrower than 1:3.
    cx, cy = 0.1 + 0.8 * torch.rand(n, generator=g), 0.1 + 0.8 * torch.rand(n, generator=g)
    long, thin = torch.full((n,), 0.6), torch.full((n,), 0.01)
    wide = torch.stack((cx, cy, long, thin), dim=1)
    tall = torch.stack((cx, cy, thin, long), dim=1)
    thin_boxes = cxcywh_to_xyxy(torch.cat((wide, tall)))
    report = analyze_priors(priors, thin_boxes)
    assert report.coverage == 0.0
    assert report.best_iou.max() < 0.2
    assert (report.num_matched == 0).all()

    # Mixed with boxes equal to priors, exactly the thin ones are unreached.
    pick = torch.randperm(len(priors), generator=g)[: 2 * n]
    mixed = torch.cat((cxcywh_to_xyxy(priors[pick]), thin_boxes))
    report = analyze_priors(priors, mixed)
    assert report.coverage == 0.5
    assert torch.equal(report.unreached, torch.arange(2 * n, 4 * n))


def test_coverage_falls_as_boxes_leave_the_prior_shapes(ssd300_priors):
    """Boxes of the priors' own centres and areas, stretched to ratio a: coverage drops as a grows."""
    base = ssd300_priors[::7]
    coverages = []
    for a in (1.0, 2.0, 4.0, 8.0, 16.0):
        stretched = base.clone()
        stretched[:, 2] = base[:, 2] * math.sqrt(a)
        stretched[:, 3] = base[:, 3] / math.sqrt(a)
        coverages.append(analyze_priors(ssd300_priors, cxcywh_to_xyxy(stretched)).coverage)
    assert coverages[0] == 1.0
    assert all(x >= y for x, y in zip(coverages, coverages[1:], strict=False)), coverages
    assert coverages[1] == 1.0  # every level has the ratio-2 pair
    assert coverages[-1] < 0.1, coverages


@st.composite
def coverage_cases(draw):
    """(priors [P, 4] cxcywh, boxes [N, 4] xyxy) on a coarse grid, so that IoU ties and IoU == threshold occur."""
    priors = draw(cxcywh_boxes(min_n=1, max_n=12, min_size=0.05, grid=8, dtype=torch.float32))
    boxes = draw(box_strategy(min_n=0, max_n=10, max_size=0.6, grid=8, dtype=torch.float32))
    return priors, boxes


@given(coverage_cases(), st.integers(1, 12), st.sampled_from([0.5, 0.25, 1 / 3]) | st.floats(0.05, 1.0))
def test_each_box_equals_torchvision_box_iou_whatever_the_chunk(case, chunk, threshold):
    priors, boxes = case
    report = analyze_priors(priors, boxes, iou_threshold=threshold, chunk_size=chunk)
    iou = tv_box_iou(boxes, cxcywh_to_xyxy(priors))  # [N, P], the peer
    if len(boxes):
        assert torch.equal(report.best_iou, iou.max(dim=1).values)
        assert torch.equal(iou.gather(1, report.best_prior[:, None])[:, 0], report.best_iou)
    assert torch.equal(report.num_matched, (iou >= threshold).sum(dim=1))
    assert torch.equal(report.reached, report.num_matched > 0)


@given(coverage_cases(), st.floats(0.01, 1.0), st.floats(0.01, 1.0))
def test_coverage_is_monotone_non_increasing_in_the_threshold(case, t1, t2):
    priors, boxes = case
    lo, hi = sorted((t1, t2))
    a = analyze_priors(priors, boxes, iou_threshold=lo)
    b = analyze_priors(priors, boxes, iou_threshold=hi)
    assert torch.equal(a.best_iou, b.best_iou)
    assert (a.num_matched >= b.num_matched).all()
    for x, y in zip(a.per_bin(), b.per_bin(), strict=True):
        assert x.count == y.count
        assert x.count == 0 or x.coverage >= y.coverage


def test_unchunked_equals_chunked_on_many_boxes(ssd300_priors):
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(1200, 2, generator=g) * 0.8
    boxes = torch.cat((xy, xy + 0.005 + torch.rand(1200, 2, generator=g) * 0.2), dim=1)
    whole = analyze_priors(ssd300_priors, boxes, chunk_size=1200)
    for chunk in (1, 229, None):  # None: the default, which splits 1200 boxes x 8732 priors too
        part = analyze_priors(ssd300_priors, boxes[:100] if chunk == 1 else boxes, chunk_size=chunk)
        n = part.num_boxes
        assert torch.equal(part.best_iou, whole.best_iou[:n])
        assert torch.equal(part.best_prior, whole.best_prior[:n])
        assert torch.equal(part.num_matched, whole.num_matched[:n])


def test_size_bins_are_cocos_areas_in_pixels_of_the_network_input():
    h, w = 256, 512  # not square: a bin depends on the pixel area h * w * (normalised area)
    sides = [(31, 31), (32, 32), (95, 95), (96, 96), (8, 256), (300, 40)]  # px; areas 961 1024 9025 9216 2048 12000
    boxes = torch.tensor([[0, 0, bw / w, bh / h] for bw, bh in sides])
    prior = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    report = analyze_priors(prior, boxes, image_size=(h, w))
    assert report.size_bin.tolist() == [0, 1, 1, 2, 1, 2]
    assert [b.count for b in report.per_bin()] == [1, 3, 2, 6]


def test_bin_statistics_and_table_by_hand():
    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]])
    boxes = torch.tensor(
        [
            [0.0, 0.0, 0.5, 0.5],  # equals prior 0: IoU 1, one match; large at 300x300
            [0.5, 0.5, 1.0, 1.0],  # equals prior 1
            [0.0, 0.0, 0.25, 0.5],  # half of prior 0: IoU 0.5, reached (>= counts)
            [0.9, 0.0, 1.0, 0.05],  # 30x15 px, small: touches no prior
        ]
    )
    report = analyze_priors(priors, boxes, iou_threshold=0.5, image_size=(300, 300))
    assert report.best_iou.tolist() == [1.0, 1.0, 0.5, 0.0]
    assert report.num_matched.tolist() == [1, 1, 1, 0]
    assert report.unreached.tolist() == [3]
    small, medium, large, everything = report.per_bin()
    assert (small.count, small.coverage, small.mean_matched) == (1, 0.0, 0.0)
    assert (large.count, large.coverage) == (3, 1.0)
    assert medium.count == 0 and math.isnan(medium.coverage)
    assert everything.coverage == 0.75 and everything.mean_best_iou == pytest.approx(0.625)
    assert report.matched_histogram() == [("0", 1), ("1", 3), ("2-3", 0), ("4-7", 0), ("8-15", 0), ("16+", 0)]
    table = report.table()
    assert "4 boxes, 2 priors, IoU threshold 0.5" in table
    assert "all" in table and "75.0%" in table and "0: 1  1: 3  2-3: 0" in table
    assert "nan" not in table  # the empty medium bin shows dashes
    medium_row = [t for t in table.splitlines() if t.startswith("medium")][0]
    assert medium_row.split() == ["medium", "0", "0.0%", "-", "-", "-"]


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.tensor([[0.1, 0.1, 0.2, 0.2], [0.5, 0.1, 0.4, 0.2]]), "box 1 is not xyxy"),
        (torch.tensor([[0.1, 0.1, 0.2, float("nan")]]), "box 0 is not finite"),
        (torch.zeros(3, 5), r"\[N, 4\]"),
    ],
)
def test_bad_boxes_are_named(bad, message):
    with pytest.raises(ValueError, match=message):
        analyze_priors(torch.tensor([[0.5, 0.5, 0.2, 0.2]]), bad)


def test_bad_threshold_and_priors():
    boxes = torch.tensor([[0.1, 0.1, 0.2, 0.2]])
    with pytest.raises(ValueError, match="iou_threshold"):
        analyze_priors(torch.tensor([[0.5, 0.5, 0.2, 0.2]]), boxes, iou_threshold=0.0)
    with pytest.raises(ValueError, match="priors"):
        analyze_priors(torch.zeros(0, 4), boxes)


def test_normalised_boxes_use_each_pictures_own_size_and_skip_crowds():
    items = [
        {
            "boxes": torch.tensor([[0.0, 0.0, 100.0, 50.0], [10.0, 10.0, 20.0, 20.0]]),
            "iscrowd": torch.tensor([False, True]),
            "orig_size": (100, 200),  # (h, w)
            "path": "a.jpg",
        },
        {"boxes": torch.zeros(0, 4), "iscrowd": torch.zeros(0, dtype=torch.bool), "orig_size": (10, 10), "path": "b"},
        {
            "boxes": torch.tensor([[30.0, 0.0, 60.0, 60.0]]),
            "iscrowd": torch.tensor([False]),
            "orig_size": (60, 120),
            "path": "c.jpg",
        },
    ]
    boxes, owner = normalised_boxes(items)
    torch.testing.assert_close(boxes, torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.5, 1.0]]))
    assert owner.tolist() == [0, 2]


# ---------- k-means and suggestions ----------


def _centred(wh: torch.Tensor) -> torch.Tensor:
    return torch.cat((-wh / 2, wh / 2), dim=1)


def test_wh_iou_equals_torchvision_on_centred_boxes():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(20, 2, generator=g) + 0.01, torch.rand(7, 2, generator=g) + 0.01
    torch.testing.assert_close(wh_iou(a, b), tv_box_iou(_centred(a), _centred(b)))


def _three_shapes(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shapes around three centres of distinct area, each jittered by up to +-8 % per side."""
    true = torch.tensor([[8.0, 40.0], [40.0, 12.0], [30.0, 30.0]])  # areas 320, 480, 900
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 3, (n,), generator=g)
    wh = true[label] * (1 + 0.16 * (torch.rand(n, 2, generator=g) - 0.5))
    return wh, label, true


def test_kmeans_finds_well_separated_shape_clusters():
    wh, label, true = _three_shapes()
    km = kmeans_iou(wh, 3, seed=0)
    torch.testing.assert_close(km.centroids, true, rtol=0.04, atol=0)
    assert torch.equal(km.assignment, label)  # centroids come sorted by area, as `true` is
    assert km.mean_iou > 0.85
    again = kmeans_iou(wh, 3, seed=0)
    assert torch.equal(again.centroids, km.centroids)


def test_kmeans_separates_the_same_shapes_at_two_scales():
    """The three shapes at two scales 10x apart make six clusters: under the IoU distance a small
    shape is far from its 10x copy, so no cluster mixes the scales."""
    wh, _, _ = _three_shapes(seed=1)
    both = torch.cat((wh, wh * 10))
    km = kmeans_iou(both, 6, seed=0)
    areas = km.centroids.prod(dim=1)
    assert (areas[:3] < 1000).all() and (areas[3:] > 10_000).all()
    assert km.mean_iou > 0.85


def test_kmeans_rejects_bad_shapes():
    with pytest.raises(ValueError, match="> 0"):
        kmeans_iou(torch.tensor([[1.0, 0.0], [2.0, 2.0]]), 1)
    with pytest.raises(ValueError, match="k must"):
        kmeans_iou(torch.ones(3, 2), 4)


def test_priors_from_clusters_refits_only_the_levels_that_get_clusters():
    cfg = presets.get("ssd300_vgg16").priors  # min_sizes 30 60 111 162 213 264, max 60 ... 315
    centroids = torch.tensor([[60.0, 15.0], [15.0, 60.0], [160.0, 160.0]])  # sizes 30, 30, 160 px
    km = KMeansResult(centroids, torch.tensor([0, 1, 2, 2]), 1.0)
    out, level = priors_from_clusters(cfg, km, image_size=(300, 300), unit=torch.tensor([300.0, 300.0]))
    assert level.tolist() == [0, 0, 3]
    assert out.aspect_ratios == [[4.0], [2.0, 3.0], [2.0, 3.0], [], [2.0], [2.0]]
    assert out.min_sizes == [30.0, 60.0, 111.0, 160.0, 213.0, 264.0]
    assert out.max_sizes == [60.0, 111.0, 160.0, 213.0, 264.0, 315.0]
    assert out.steps == cfg.steps
    # shift 0 keeps every size and changes the ratios only; shift 0.5 goes half-way (geometrically).
    kept, _ = priors_from_clusters(cfg, km, image_size=(300, 300), unit=torch.tensor([300.0, 300.0]), shift=0.0)
    assert kept.min_sizes == cfg.min_sizes and kept.aspect_ratios == out.aspect_ratios
    half, _ = priors_from_clusters(cfg, km, image_size=(300, 300), unit=torch.tensor([300.0, 300.0]), shift=0.5)
    assert half.min_sizes[3] == pytest.approx(math.sqrt(162 * 160), abs=0.01)


def _skewed_boxes(n: int = 400, ratio: float = 8.0, seed: int = 0) -> torch.Tensor:
    """Boxes of 40..110 px at 300 px, half `ratio`:1 and half 1:`ratio`, anywhere in the picture."""
    g = torch.Generator().manual_seed(seed)
    size = (40 + 70 * torch.rand(n, generator=g)) / 300
    r = torch.where(torch.rand(n, generator=g) < 0.5, ratio, 1 / ratio)
    w, h = size * r.sqrt(), size / r.sqrt()
    cx = w / 2 + (1 - w) * torch.rand(n, generator=g)
    cy = h / 2 + (1 - h) * torch.rand(n, generator=g)
    return cxcywh_to_xyxy(torch.stack((cx, cy, w, h), dim=1))


@pytest.mark.parametrize(
    "preset, features", [("ssd300_vgg16", SSD300_FEATURES), ("ssd300_vgg16_coco", SSD300_FEATURES)]
)
def test_suggestion_raises_coverage_on_skewed_shapes(preset, features):
    cfg = presets.get(preset)
    boxes = _skewed_boxes()
    sug = suggest_priors(cfg.priors, boxes, feature_sizes=features, image_size=cfg.image_size, k=(4, 6))
    assert sug.before.coverage < 0.05  # 8:1 is far from ssd300's 3:1 at most
    assert sug.after.coverage > 0.6
    # The data's ratio (8, folded with 1/8) appears on the levels the clusters went to, in the config's own form.
    used = sug.cluster_level.unique().tolist()
    assert all(any(abs(r - 8.0) < 0.8 for r in sug.config.aspect_ratios[lv]) for lv in used)
    assert (sug.config.min_sizes is None) == (cfg.priors.min_sizes is None)
    # The snippet is a valid priors block of the same model.
    block = yaml.safe_load(sug.yaml())["priors"]
    assert SSDPriorsConfig.model_validate(block) == sug.config
    model = cfg.model_dump(mode="json")
    SSDConfig.model_validate({**model, "priors": block})
    # The "after" report is the suggested config's own priors on the same boxes.
    generated = PRIORS.build(sug.config)(features, cfg.image_size)
    assert sug.after.num_priors == len(generated) and sug.after.num_boxes == len(boxes)


# ---------- the command ----------


@pytest.fixture
def small_shapes(tmp_path):
    path = tmp_path / "shapes.yaml"
    path.write_text("type: shapes\nnum_images: 40\nclasses: [circle, rectangle, ellipse]\n")
    return path


def test_cli_prints_the_table_and_writes_the_plot(small_shapes, tmp_path, capsys):
    plot = tmp_path / "out" / "coverage.png"
    rc = main(["analyze-priors", "ssd300_vgg16", "--data", str(small_shapes), "--plot", str(plot), "--suggest", "6"])
    out = capsys.readouterr().out
    assert rc == 0, out
    for row in ("size", "small", "medium", "large", "all", "priors with IoU >= 0.5 per box", "level"):
        assert row in out
    assert "8732 priors" in out
    with Image.open(plot) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 200
    snippet = out[out.index("priors:\n") : out.index("\nplot:")]
    SSDPriorsConfig.model_validate(yaml.safe_load(snippet)["priors"])
    assert "before" in out and "after" in out


def test_cli_with_a_run_config_uses_its_data(tmp_path, capsys):
    run = {
        "model": presets.get("ssdlite320_mobilenet_v3").model_dump(mode="json"),
        "data": {"train": {"type": "shapes", "num_images": 12}, "val": {"type": "shapes", "num_images": 5}},
        "train": {"max_steps": 1},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    rc = main(["analyze-priors", str(path), "--split", "val", "--plot", str(tmp_path / "p.png"), "--iou", "0.4"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "(5 pictures)" in out and "3234 priors, IoU threshold 0.4" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ssd300_vgg16"], "give --data"),
        (["no_such_preset", "--data", "shapes"], "not a preset"),
        (["ssd300_vgg16", "--data", "voc"], "not shapes, voc:ROOT"),
        (["ssd300_vgg16", "--data", "coco:/nonexistent/instances.json"], "/nonexistent/instances.json"),
        (["ssd300_vgg16", "--data", "shapes", "--iou", "1.5"], "--iou must lie in (0, 1]"),
        (["ssd300_vgg16", "--data", "shapes", "--suggest", "0"], "--suggest takes cluster counts >= 1"),
    ],
)
def test_cli_errors_name_the_problem(argv, message, capsys):
    assert main(["analyze-priors", *argv]) == 2
    assert message in capsys.readouterr().err


def test_suggest_with_other_priors_fails_before_the_report(tmp_path, capsys):
    from ssdkit.registry import PRIORS, ComponentConfig

    class OtherPriorsConfig(ComponentConfig):
        type: str = "other_grid"

    PRIORS.register("other_grid", config=OtherPriorsConfig)(lambda: None)
    try:
        path = tmp_path / "model.yaml"
        path.write_text("num_classes: 3\nbackbone: {type: tiny}\npriors: {type: other_grid}\n")
        assert main(["analyze-priors", str(path), "--data", "shapes", "--suggest"]) == 2
    finally:
        PRIORS.unregister("other_grid")
    shown = capsys.readouterr()
    assert "--suggest needs `type: ssd` priors, not 'other_grid'" in shown.err
    assert shown.out == ""  # no data read, no model built, no report printed
