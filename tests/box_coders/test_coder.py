"""SSDBoxCoder: round trip, degenerate boxes, the log clamp, and agreement with torchvision's BoxCoder."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import boxes, cxcywh_boxes
from hypothesis import given
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder

from ssdkit.box_coders.ssd import DEFAULT_LOG_CLAMP, SSDBoxCoder, SSDBoxCoderConfig
from ssdkit.boxes import cxcywh_to_xyxy

pytestmark = pytest.mark.usefixtures("single_thread")

variances = st.tuples(*[st.floats(0.05, 2.0)] * 4)

# Priors of side >= 1/50 and boxes of side <= 1: every size ratio stays under exp(log_clamp) = 62.5,
# so encode/decode must be exact inverses (the clamp only exists for predicted offsets).
priors_st = cxcywh_boxes(min_n=1, max_n=12, min_size=0.02, max_size=1.0)


@st.composite
def boxes_and_priors(draw, **kw):
    p = draw(priors_st)
    g = draw(boxes(len(p), min_size=1e-3, max_size=1.0, grid=16, **kw))
    return g, p


def _tv_coder(v):
    return BoxCoder(weights=tuple(1.0 / x for x in v), bbox_xform_clip=DEFAULT_LOG_CLAMP)


@given(boxes_and_priors(), variances)
def test_decode_inverts_encode(gp, v):
    g, p = gp
    coder = SSDBoxCoder(SSDBoxCoderConfig(variances=v))
    back = coder.decode(coder.encode(g, p), p)
    side = (g[:, 2:] - g[:, :2]).repeat(1, 2)
    assert bool(((back - g).abs() <= 1e-4 * side + 1e-12).all()), (back - g).abs().max()


@given(boxes_and_priors())
def test_encode_equals_torchvision(gp):
    g, p = gp
    ours = SSDBoxCoder().encode(g, p)
    theirs = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)).encode_single(g, cxcywh_to_xyxy(p))
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


@given(boxes_and_priors(), variances)
def test_encode_equals_torchvision_with_any_variances(gp, v):
    g, p = gp
    torch.testing.assert_close(
        SSDBoxCoder(SSDBoxCoderConfig(variances=v)).encode(g, p),
        _tv_coder(v).encode_single(g, cxcywh_to_xyxy(p)),
        rtol=1e-6,
        atol=1e-6,
    )


offsets_st = st.lists(st.tuples(*[st.floats(-40, 40)] * 4), min_size=1, max_size=12)


@given(offsets_st, priors_st, variances)
def test_decode_equals_torchvision(offsets, p, v):
    # |offset * variance| reaches 80 >> log_clamp, so the clamp is exercised on both sides.
    n = min(len(offsets), len(p))
    o = torch.tensor(offsets[:n], dtype=p.dtype)
    p = p[:n]
    ours = SSDBoxCoder(SSDBoxCoderConfig(variances=v)).decode(o, p)
    theirs = _tv_coder(v).decode_single(o, cxcywh_to_xyxy(p))
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


@given(st.lists(st.tuples(*[finite32] * 4), min_size=1, max_size=8), cxcywh_boxes(1, dtype=torch.float32))
def test_decode_is_finite_for_any_finite_offsets(offsets, p):
    o = torch.tensor(offsets, dtype=torch.float32)
    out = SSDBoxCoder().decode(o, p.expand(len(o), 4))
    assert bool(torch.isfinite(out).all()), (o, out)
    # The clamp bounds the size: never more than exp(log_clamp) times the prior. x2 - x1 is
    # a float32 difference of two numbers as large as the centre, so allow a few ulps of it.
    wh = out[:, 2:] - out[:, :2]
    ulps = 4 * torch.finfo(torch.float32).eps * out.abs().reshape(-1, 2, 2).amax(1)
    assert bool((wh <= p[:, 2:] * math.exp(DEFAULT_LOG_CLAMP) * (1 + 1e-5) + ulps).all())


def test_decode_clamp_value_matches_torchvision():
    o = torch.tensor([[0.0, 0.0, 1e4, -1e4]])
    p = torch.tensor([[0.5, 0.5, 0.1, 0.1]])
    out = SSDBoxCoder().decode(o, p)
    tv = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)).decode_single(o, cxcywh_to_xyxy(p))
    torch.testing.assert_close(out, tv)
    assert out[0, 2] - out[0, 0] == pytest.approx(0.1 * 1000 / 16, rel=1e-5)


def test_encode_decode_broadcast_over_batch():
    p = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.2, 0.3, 0.1, 0.1]])
    g = torch.tensor([[[0.4, 0.3, 0.6, 0.7], [0.1, 0.2, 0.3, 0.35]]]).expand(3, 2, 4)
    coder = SSDBoxCoder()
    off = coder.encode(g, p)
    assert off.shape == (3, 2, 4)
    torch.testing.assert_close(coder.decode(off, p), g)


@pytest.mark.parametrize(
    "bad",
    [
        [0.3, 0.3, 0.3, 0.6],  # zero width
        [0.1, 0.5, 0.4, 0.5],  # zero height
        [0.5, 0.1, 0.2, 0.4],  # x2 < x1
    ],
)
def test_encode_rejects_degenerate_box_naming_it(bad):
    g = torch.tensor([[0.1, 0.1, 0.2, 0.2], [0.2, 0.2, 0.4, 0.4], bad])
    p = torch.tensor([[0.5, 0.5, 0.2, 0.2]]).expand(3, 4)
    with pytest.raises(ValueError) as err:
        SSDBoxCoder().encode(g, p)
    msg = str(err.value)
    assert "[2]" in msg  # its index
    assert str(torch.tensor(bad).tolist()) in msg  # and its coordinates
    assert "width" in msg and "height" in msg


def test_encode_names_the_bad_box_in_a_batch():
    g = torch.tensor([[[0.1, 0.1, 0.2, 0.2]], [[0.7, 0.2, 0.7, 0.9]]])
    with pytest.raises(ValueError, match=r"\[1, 0\]"):
        SSDBoxCoder().encode(g, torch.tensor([[0.5, 0.5, 0.2, 0.2]]))


def test_config_rejects_non_positive_variances():
    from pydantic import ValidationError

    from ssdkit.box_coders.ssd import SSDBoxCoderConfig

    with pytest.raises(ValidationError, match="variances"):
        SSDBoxCoderConfig(variances=(0.1, 0.0, 0.2, 0.2))
