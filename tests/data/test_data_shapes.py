"""The generated shapes data set: repeatable, varied, boxes that fit what is drawn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torchvision import tv_tensors

from ssdkit.data import ShapesConfig, ShapesDataset, build_dataset
from ssdkit.data.shapes import SHAPE_KINDS


def test_same_seed_and_index_give_the_same_item():
    a = ShapesDataset(ShapesConfig(num_images=50, seed=7))
    b = ShapesDataset(ShapesConfig(num_images=50, seed=7))
    for i in (0, 13, 49):
        ia, ta = a[i]
        ib, tb = b[i]
        assert torch.equal(ia, ib)
        assert torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])
    # order of access does not matter (no state carried from item to item)
    assert torch.equal(a[5][0], ShapesDataset(ShapesConfig(num_images=50, seed=7))[5][0])
    other = ShapesDataset(ShapesConfig(num_images=50, seed=8))
    assert not torch.equal(a[3][0], other[3][0])
    assert not torch.equal(a[3][0], a[4][0])


def test_items_have_the_documented_types():
    ds = ShapesDataset(ShapesConfig(num_images=4, image_size=(96, 128)))
    image, target = ds[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape == (3, 96, 128)
    boxes = target["boxes"]
    assert isinstance(boxes, tv_tensors.BoundingBoxes)
    assert boxes.format == tv_tensors.BoundingBoxFormat.XYXY and tuple(boxes.canvas_size) == (96, 128)
    assert target["labels"].dtype == torch.int64 and target["difficult"].dtype == torch.bool
    assert target["orig_size"] == (96, 128) and target["image_id"] == 0 and isinstance(target["path"], str)
    with pytest.raises(IndexError):
        ds[4]


def test_variety_empty_pictures_small_objects_every_class():
    classes = list(SHAPE_KINDS)
    ds = ShapesDataset(
        ShapesConfig(num_images=300, seed=3, image_size=160, classes=classes, min_objects=0, max_objects=6)
    )
    gts = ds.ground_truth()
    counts = [len(g["labels"]) for g in gts]
    boxes = torch.cat([g["boxes"] for g in gts])
    labels = torch.cat([g["labels"] for g in gts])
    assert min(counts) == 0 and max(counts) >= 5  # empty pictures and crowded ones
    assert all(c <= 6 for c in counts)
    assert set(labels.tolist()) == set(range(1, len(classes) + 1))
    side = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
    assert (side < 16).sum() > 50  # small objects (under 10 % of the side) are common
    assert (side > 60).sum() > 20  # and large ones exist
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 160).all() and (boxes[:, 3] <= 160).all()
    assert ((boxes[:, 2:] - boxes[:, :2]) >= 3).all()


def test_object_count_range_is_honoured():
    ds = ShapesDataset(ShapesConfig(num_images=60, seed=1, min_objects=2, max_objects=3, max_overlap=1.0))
    assert {len(g["labels"]) for g in ds.ground_truth()} == {2, 3}
    empty = ShapesDataset(ShapesConfig(num_images=5, min_objects=0, max_objects=0))
    assert all(len(empty[i][1]["labels"]) == 0 for i in range(5))


@pytest.mark.parametrize("kind", SHAPE_KINDS)
def test_box_is_the_extent_of_the_drawn_shape(kind):
    # One shape, no pixel noise, a two-colour background: the pixels of the shape's colour
    # span exactly its box (the box says what is drawn, to the pixel).
    ds = ShapesDataset(
        ShapesConfig(
            num_images=12, seed=5, classes=[kind], min_objects=1, max_objects=1, noise=0.0, backgrounds=["stripes"]
        )
    )
    for i in range(len(ds)):
        rec = ds.record(i)
        image = ds.load_image(rec).permute(1, 2, 0).numpy()
        colour = rec.extra.colours[0]
        ys, xs = np.nonzero((image == colour).all(axis=2))
        drawn = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        np.testing.assert_array_equal(drawn, rec.boxes[0].numpy(), err_msg=f"{kind} item {i}")


def test_shapes_stay_mostly_visible():
    # Rasterise the boxes in drawing order: later boxes cover earlier ones; the visible part of
    # every box must be at least 1 - max_overlap.
    ds = ShapesDataset(
        ShapesConfig(num_images=80, seed=11, image_size=96, min_objects=4, max_objects=10, max_overlap=0.25)
    )
    for g in ds.ground_truth():
        owner = np.full((96, 96), -1)
        boxes = g["boxes"].long().tolist()
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            owner[y0:y1, x0:x1] = k
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            visible = (owner[y0:y1, x0:x1] == k).mean()
            assert visible >= 0.75 - 1e-9, (g["path"], k, visible)


def test_without_a_config_the_defaults_are_the_configs():
    ds = ShapesDataset()
    assert len(ds) == 1000 and ds.class_names == ["circle", "square", "triangle"] and ds.image_size == (160, 160)
    assert ds.config == ShapesConfig()


def test_ground_truth_does_not_draw(monkeypatch):
    ds = ShapesDataset(ShapesConfig(num_images=20, seed=2))
    expected = [ds[i][1] for i in range(20)]

    def no_drawing(rec):
        raise AssertionError("ground_truth() drew a picture")

    monkeypatch.setattr(ds, "load_image", no_drawing)
    gts = ds.ground_truth()
    for e, g in zip(expected, gts, strict=True):
        assert torch.equal(e["boxes"].as_subclass(torch.Tensor), g["boxes"])
        assert torch.equal(e["labels"], g["labels"])
        assert g["orig_size"] == (160, 160)


def test_built_from_config_and_config_checks():
    ds = build_dataset({"type": "shapes", "num_images": 3, "classes": ["star", "cross"], "image_size": 64})
    assert isinstance(ds, ShapesDataset) and ds.class_names == ["star", "cross"] and len(ds) == 3
    assert ds[0][0].shape == (3, 64, 64)
    with pytest.raises(ValidationError, match="unknown shape"):
        ShapesConfig(classes=["circle", "hexagon"])
    with pytest.raises(ValidationError, match="max_objects"):
        ShapesConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValidationError, match="max_size"):
        ShapesConfig(min_size=0.5, max_size=0.1)
    with pytest.raises(ValidationError):
        ShapesConfig(colour="red")  # unknown field
