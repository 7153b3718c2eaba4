"""Box conversions, areas, clipping and IoU, against hand formulas and torchvision; the exact
threshold comparison against exact rational arithmetic; the shared ranking order."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torchvision
from conftest import boxes
from hypothesis import given
from hypothesis import strategies as st

from ssdkit.boxes import (
    above,
    batched_box_iou,
    box_area,
    box_iou,
    box_rows,
    clip_boxes,
    cxcywh_to_xyxy,
    float32_threshold,
    iou_rows,
    largest_at_most,
    paired_box_iou,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)
from ssdkit.ranking import order_by

pytestmark = pytest.mark.usefixtures("single_thread")

# Boxes anywhere in [-10, 10]^2 with sides in [1e-2, 10]: not only the unit square.
wide_boxes = boxes(lo=-10.0, hi=10.0, min_size=1e-2, max_size=10.0, grid=8)


@given(wide_boxes, wide_boxes)
def test_iou_symmetric_and_in_unit_interval(a, b):
    ab, ba = box_iou(a, b), box_iou(b, a)
    torch.testing.assert_close(ab, ba.T)
    assert bool(((ab >= 0) & (ab <= 1 + 1e-12)).all())
    bab = batched_box_iou(a[None], b[None])[0]
    torch.testing.assert_close(bab, batched_box_iou(b[None], a[None])[0].T)
    assert bool(((bab >= 0) & (bab <= 1 + 1e-12)).all())


@given(wide_boxes)
def test_iou_of_a_box_with_itself_is_one(a):
    torch.testing.assert_close(box_iou(a, a).diagonal(), torch.ones(len(a), dtype=a.dtype))
    torch.testing.assert_close(batched_box_iou(a[None], a[None])[0].diagonal(), torch.ones(len(a), dtype=a.dtype))


@given(
    wide_boxes,
    wide_boxes,
    st.tuples(st.floats(-50, 50), st.floats(-50, 50)),
    st.floats(1e-2, 1e2),
)
def test_iou_invariant_to_shared_translation_and_positive_scaling(a, b, shift, scale):
    t = torch.tensor([shift[0], shift[1], shift[0], shift[1]], dtype=a.dtype)
    ref = batched_box_iou(a[None], b[None])
    torch.testing.assert_close(batched_box_iou((a + t)[None], (b + t)[None]), ref, atol=1e-9, rtol=1e-6)
    torch.testing.assert_close(batched_box_iou((a * scale)[None], (b * scale)[None]), ref, atol=1e-9, rtol=1e-6)


@given(st.lists(st.tuples(boxes(grid=4), boxes(grid=4)), min_size=1, max_size=3))
def test_batched_box_iou_equals_torchvision_per_image(pairs):
    # Same N and M across the batch: pad by cycling each image's boxes.
    n = max(len(a) for a, _ in pairs)
    m = max(len(b) for _, b in pairs)
    a = torch.stack([x.repeat(n, 1)[:n] for x, _ in pairs])
    b = torch.stack([y.repeat(m, 1)[:m] for _, y in pairs])
    got = batched_box_iou(a, b)
    assert got.shape == (len(pairs), n, m)
    for i in range(len(pairs)):
        torch.testing.assert_close(got[i], torchvision.ops.box_iou(a[i], b[i]))
    # A single [M, 4] set broadcasts over the batch.
    shared = batched_box_iou(a, b[0])
    for i in range(len(pairs)):
        torch.testing.assert_close(shared[i], torchvision.ops.box_iou(a[i], b[0]))


def test_batched_box_iou_is_zero_not_nan_for_empty_union():
    point = torch.tensor([[[0.5, 0.5, 0.5, 0.5]]])
    assert batched_box_iou(point, point).item() == 0.0
    assert torch.isnan(torchvision.ops.box_iou(point[0], point[0])).all()  # the peer's behaviour we avoid


@given(boxes(lo=-10, hi=10, max_size=10, grid=8))
def test_conversions_round_trip(b):
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b)
    torch.testing.assert_close(xywh_to_xyxy(xyxy_to_xywh(b)), b)
    # cxcywh -> xyxy -> xywh agrees with torchvision's own converter.
    c = xyxy_to_cxcywh(b)
    torch.testing.assert_close(c, torchvision.ops.box_convert(b, "xyxy", "cxcywh"))
    torch.testing.assert_close(xyxy_to_xywh(b), torchvision.ops.box_convert(b, "xyxy", "xywh"))
    torch.testing.assert_close(cxcywh_to_xyxy(c), torchvision.ops.box_convert(c, "cxcywh", "xyxy"))


@given(boxes(lo=-10, hi=10, max_size=10))
def test_conversions_work_on_any_leading_shape(b):
    x = b.reshape(1, -1, 1, 4).expand(2, -1, 3, 4)
    assert xyxy_to_cxcywh(x).shape == x.shape
    torch.testing.assert_close(xyxy_to_cxcywh(x)[1, :, 2], xyxy_to_cxcywh(b))


@given(boxes(lo=-5, hi=5, max_size=5))
def test_area_matches_hand_formula(b):
    assert box_area(b).tolist() == [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in b.tolist()]
    torch.testing.assert_close(box_area(b), torchvision.ops.box_area(b))
    # An inverted box has no area (not a negative one).
    inverted = b[:, [2, 3, 0, 1]]
    assert bool((box_area(inverted) == 0).all())


@given(boxes(lo=-2, hi=2, max_size=3, grid=8), st.floats(0.1, 4), st.floats(0.1, 4))
def test_clip_boxes_keeps_boxes_inside(b, width, height):
    c = clip_boxes(b, width=width, height=height)
    assert bool(((c[:, 0::2] >= 0) & (c[:, 0::2] <= width)).all())
    assert bool(((c[:, 1::2] >= 0) & (c[:, 1::2] <= height)).all())
    torch.testing.assert_close(c, torchvision.ops.clip_boxes_to_image(b, (height, width)))


@given(boxes(lo=0, hi=0.5, max_size=0.5, grid=8))
def test_clip_boxes_leaves_inside_boxes_untouched(b):
    assert torch.equal(clip_boxes(b), b)  # boxes lie in [0, 1]^2 already
    # default size is the normalised image
    assert torch.equal(clip_boxes(b * 3, width=3.0, height=3.0), b * 3)


@given(wide_boxes, wide_boxes)
def test_iou_rows_equal_torchvision_box_iou(a, b):
    # The NMS layout [5, ...] broadcast to [N, M] is torchvision's IoU, bit for bit in float32.
    a32, b32 = a.float(), b.float()
    got = iou_rows(box_rows(a32)[:, :, None], box_rows(b32)[:, None, :])
    assert torch.equal(got, torchvision.ops.box_iou(a32, b32))


@given(st.lists(wide_boxes, min_size=1, max_size=3).map(lambda xs: torch.stack([x[:1].repeat(5, 1) for x in xs])))
def test_box_rows_keep_leading_dimensions(b):
    rows = box_rows(b)  # [G, K, 4] -> [5, G, K]
    assert rows.shape == (5, *b.shape[:-1])
    assert torch.equal(rows[:4], b.movedim(-1, 0))
    assert torch.equal(rows[4], (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]))


@given(wide_boxes, wide_boxes)
def test_paired_box_iou_is_the_diagonal_of_torchvision_box_iou(a, b):
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    torch.testing.assert_close(paired_box_iou(a, b), torchvision.ops.box_iou(a, b).diagonal())


def test_paired_box_iou_is_zero_not_nan_for_empty_union():
    point = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    assert paired_box_iou(point, point).tolist() == [0.0]


@given(st.floats(0.0, 1.0), st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]))
def test_largest_at_most_is_the_largest_value_of_the_dtype_not_above_t(t, dtype):
    low = largest_at_most(t, dtype)
    assert low.dtype == dtype
    assert Fraction(float(low)) <= Fraction(t)
    up = torch.nextafter(low, torch.tensor(float("inf"), dtype=dtype))
    assert Fraction(float(up)) > Fraction(t)


@given(
    st.lists(st.floats(0.0, 1.0, width=32), min_size=1, max_size=20),
    st.floats(0.0, 1.0),
    st.sampled_from([torch.float16, torch.float32, torch.float64]),
)
def test_above_compares_with_the_exact_threshold(values, t, dtype):
    x = torch.tensor(values, dtype=torch.float64).to(dtype)
    expected = [Fraction(v) > Fraction(t) for v in x.double().tolist()]
    assert above(x, t).tolist() == expected


def test_above_counts_the_float32_value_nearest_a_threshold_that_exceeds_it():
    # float32(0.3) = 0.30000001192...: above 0.3 exactly, though it rounds to 0.3's float32 value.
    x = torch.tensor([0.3], dtype=torch.float32)
    assert above(x, 0.3).tolist() == [True]
    assert (x > torch.tensor(0.3, dtype=torch.float32)).tolist() == [False]  # the naive comparison we avoid


@given(st.floats(0.0, 1.0), st.lists(st.floats(0.0, 1.0, width=32), min_size=1, max_size=20))
def test_float32_threshold_makes_a_plain_comparison_exact(t, values):
    x = torch.tensor(values, dtype=torch.float32)
    assert (x > float32_threshold(t)).tolist() == [Fraction(v) > Fraction(t) for v in x.double().tolist()]


@given(
    st.lists(st.tuples(st.integers(0, 4), st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0])), min_size=1, max_size=30),
    st.booleans(),
)
def test_order_by_sorts_by_group_then_decreasing_score_keeping_ties_in_input_order(items, as_float64):
    major = torch.tensor([m for m, _ in items], dtype=torch.int64)
    scores = torch.tensor([s for _, s in items], dtype=torch.float64 if as_float64 else torch.float32)
    expected = sorted(range(len(items)), key=lambda i: (items[i][0], -float(scores[i]), i))
    assert order_by(major, scores).tolist() == expected
