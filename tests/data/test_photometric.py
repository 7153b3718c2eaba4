"""The one-pass photometric distortion against torchvision's RandomPhotometricDistort: the same draws,
and pictures within two grey levels (hue's float rounding, then contrast) of torchvision's result."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors
from torchvision.transforms import v2

from ssdkit.data.photometric import FastPhotometricDistort


def _picture(seed: int, h: int, w: int) -> tv_tensors.Image:
    g = torch.Generator().manual_seed(seed)
    smooth = torch.rand(3, h // 4 + 1, w // 4 + 1, generator=g)
    up = torch.nn.functional.interpolate(smooth[None], size=(h, w), mode="bilinear")[0]  # colour regions
    noise = torch.rand(3, h, w, generator=g) * 0.2
    # grey pixels and saturated ones too: the hue formula's ties and C = 0
    x = ((up * 0.8 + noise) * 255).clamp(0, 255).to(torch.uint8)
    x[:, : h // 8] = x[0, : h // 8]
    x[0, -2:], x[1:, -2:] = 255, 0
    return tv_tensors.Image(x)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), h=st.integers(8, 48), w=st.integers(8, 48), p=st.sampled_from([0.5, 1.0]))
def test_matches_torchvision_given_the_same_draws(seed, h, w, p):
    picture = _picture(seed, h, w)
    ours = FastPhotometricDistort(p=p)
    ref = v2.RandomPhotometricDistort(p=p)
    torch.manual_seed(seed)
    params = ref.make_params([picture])
    a = ours.transform(picture, params)
    b = ref.transform(picture, params)
    assert isinstance(a, tv_tensors.Image) and a.dtype == torch.uint8 and a.shape == b.shape
    diff = (a.int() - b.int()).abs()
    assert int(diff.max()) <= 2 and float((diff > 1).float().mean()) < 0.01


def test_same_draws_as_torchvision_through_the_call():
    picture = _picture(3, 40, 56)
    for seed in range(20):
        torch.manual_seed(seed)
        a = FastPhotometricDistort(p=0.5)(picture)
        after_ours = torch.rand(1)
        torch.manual_seed(seed)
        b = v2.RandomPhotometricDistort(p=0.5)(picture)
        assert torch.equal(after_ours, torch.rand(1))  # the same number of draws from the generator
        assert int((a.int() - b.int()).abs().max()) <= 2


def test_other_inputs_go_to_torchvision():
    picture = _picture(5, 16, 16).float() / 255  # float pictures: torchvision's kernels
    torch.manual_seed(0)
    a = FastPhotometricDistort(p=1.0)(tv_tensors.Image(picture))
    torch.manual_seed(0)
    b = v2.RandomPhotometricDistort(p=1.0)(tv_tensors.Image(picture))
    assert torch.equal(a, b)
