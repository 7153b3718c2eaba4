"""predict(): every accepted picture type, boxes in the caller's own pixels, draw()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import ssdkit


@pytest.fixture(scope="module")
def model(two_level_backbone):
    cfg = ssdkit.SSDConfig(
        num_classes=3,
        class_names=["cat", "dog"],
        image_size=64,
        backbone={"type": "two_level_test", "relu": False},
        priors={"type": "ssd", "aspect_ratios": [[2], [2]], "s_min": 0.2, "s_max": 0.6},
    )
    return ssdkit.build_model(cfg).eval()


def _force_one_detection(model, monkeypatch, prior_index: int, label: int):
    """Make the network output zero offsets and one confident prior."""
    P = model.priors.shape[0]

    def fake_forward(x):
        loc = torch.zeros(x.shape[0], P, 4)
        logits = torch.full((x.shape[0], P, model.num_classes), -20.0)
        logits[..., 0] = 20.0
        logits[:, prior_index, 0] = -20.0
        logits[:, prior_index, label] = 20.0
        return loc, logits

    monkeypatch.setattr(model, "forward", fake_forward)


@pytest.mark.parametrize("size", [(64, 64), (480, 640), (300, 123)])
def test_boxes_come_back_in_the_pictures_own_pixels(model, monkeypatch, size):
    h, w = size
    k = int(model.priors.shape[0] * 0.6)
    _force_one_detection(model, monkeypatch, k, label=2)
    det = model.predict(Image.new("RGB", (w, h)))
    cx, cy, pw, ph = model.priors[k].tolist()
    expected = torch.tensor(
        [max(cx - pw / 2, 0) * w, max(cy - ph / 2, 0) * h, min(cx + pw / 2, 1) * w, min(cy + ph / 2, 1) * h]
    )
    assert det["labels"].tolist() == [2] and det["names"] == ["dog"]
    torch.testing.assert_close(det["boxes"][0], expected, atol=1e-3, rtol=0)


def test_every_input_type_gives_the_same_detections(model, tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    path = tmp_path / "p.png"
    Image.fromarray(arr).save(path)
    inputs = [
        Image.fromarray(arr),
        arr,
        torch.from_numpy(arr).permute(2, 0, 1),
        torch.from_numpy(arr).permute(2, 0, 1).float() / 255,
        str(path),
        path,
    ]
    results = model.predict(inputs)
    assert len(results) == len(inputs)
    for r in results[1:]:
        torch.testing.assert_close(r["boxes"], results[0]["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(r["scores"], results[0]["scores"], atol=1e-5, rtol=0)
        assert torch.equal(r["labels"], results[0]["labels"])


def test_single_picture_gives_a_dict_and_a_list_gives_a_list(model):
    one = model.predict(np.zeros((20, 30, 3), dtype=np.uint8))
    many = model.predict([np.zeros((20, 30, 3), dtype=np.uint8)])
    assert isinstance(one, dict) and isinstance(many, list) and len(many) == 1


def test_no_detection_gives_empty_tensors(model, monkeypatch):
    P = model.priors.shape[0]
    monkeypatch.setattr(
        model, "forward", lambda x: (torch.zeros(x.shape[0], P, 4), torch.tensor([30.0, 0, 0]).expand(x.shape[0], P, 3))
    )
    det = model.predict(Image.new("RGB", (10, 10)))
    assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,) and det["labels"].shape == (0,)
    assert det["labels"].dtype == torch.int64 and det["names"] == []


@pytest.mark.parametrize(
    "bad, message",
    [
        ("no/such/file.jpg", "no such image file"),
        (np.zeros((0, 5, 3), dtype=np.uint8), "no pixels"),
        (np.zeros((5, 5, 7), dtype=np.uint8), "HWC"),
        (42, "cannot use a int as an image"),
    ],
)
def test_bad_pictures_get_clear_errors(model, bad, message):
    with pytest.raises((ValueError, TypeError, FileNotFoundError), match=message):
        model.predict(bad)


def test_corrupt_file_names_the_file(model, tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        model.predict(path)


def test_modes_greyscale_palette_rgba_16bit(model):
    for im in [
        Image.new("L", (30, 20), 128),
        Image.new("P", (30, 20)),
        Image.new("RGBA", (30, 20)),
        Image.new("I;16", (30, 20), 4000),
    ]:
        det = model.predict(im)
        assert det["boxes"].shape[1] == 4


def test_wrong_input_size_to_forward_is_a_clear_error(model):
    with pytest.raises(ValueError, match="built for"):
        ssdkit.SSD.forward(model, torch.zeros(1, 3, 32, 32))


def test_draw_returns_a_picture_and_saves_png(model, monkeypatch, tmp_path):
    k = int(model.priors.shape[0] * 0.6)
    _force_one_detection(model, monkeypatch, k, label=1)
    picture = Image.new("RGB", (80, 60), (0, 0, 0))
    det = model.predict(picture)
    out = ssdkit.draw(picture, det, path=tmp_path / "out.png")
    assert out.size == (80, 60)
    assert (tmp_path / "out.png").is_file()
    assert np.asarray(out).max() > 0  # the box was drawn on a black picture
