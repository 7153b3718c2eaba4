"""The augmentation policy, the loader (batches, seeds, workers, ranks) and DataConfig."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError
from torch.utils.data import DistributedSampler
from torchvision import tv_tensors
from torchvision.ops import box_iou
from torchvision.transforms import v2

from ssdkit import presets
from ssdkit.data import (
    AugmentConfig,
    Batch,
    Collate,
    DataConfig,
    EpochSampler,
    ModelInputs,
    ShapesConfig,
    ShapesDataset,
    build_loader,
    preprocessor_for,
    train_transform,
)
from ssdkit.data.pipeline import Skipped
from ssdkit.data.transforms import BatchedIoUCrop
from ssdkit.preprocess import to_tensor
from ssdkit.registry import DATASETS, constructor_params

STRONG = {  # every step always on, the widest ranges
    "photometric": {"p": 1.0},
    "expand": {"p": 1.0, "max_ratio": 4.0},
    "crop": {"min_iou": [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]},
    "flip_p": 0.5,
}


def _model(n_classes: int = 3, size: int = 64, preset: str = "ssd300_vgg16"):
    return presets.get(preset, num_classes=n_classes + 1, image_size=size)


def _inputs(ds, model_cfg, augment=STRONG, train=True, seed=0) -> ModelInputs:
    pre = preprocessor_for(model_cfg)
    aug = AugmentConfig.model_validate(augment)
    return ModelInputs(ds, pre, train=train, transform=train_transform(aug, pre.mean_pixel()), seed=seed)


# ---------- augmentation ----------


def test_augmented_targets_are_valid_over_many_draws():
    ds = ShapesDataset(ShapesConfig(num_images=40, seed=4, image_size=96, min_objects=0, max_objects=8))
    items = _inputs(ds, _model(3, 64))
    seen_boxes = 0
    for epoch in range(4):
        for i in range(len(ds)):
            x, t = items[(i, epoch)]
            assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and torch.isfinite(x).all()
            b, g = t["boxes"], len(t["labels"])
            assert b.shape == (g, 4) and b.dtype == torch.float32
            assert t["labels"].dtype == torch.int64 and t["difficult"].shape == (g,) and t["iscrowd"].shape == (g,)
            assert ((t["labels"] >= 1) & (t["labels"] <= 3)).all()
            assert ((b >= 0) & (b <= 1)).all()
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
            seen_boxes += g
    assert seen_boxes > 150


def test_boxes_follow_the_pixels_through_augmentation():
    # One solid square per picture, no photometric change: after zoom-out, crop, flip and resize,
    # the centre of every output box must still show the square's colour.
    ds = ShapesDataset(
        ShapesConfig(num_images=60, seed=9, classes=["square"], min_objects=1, max_objects=1, min_size=0.3, noise=0)
    )
    model = _model(1, 96, preset="ssdlite320_mobilenet_v3")  # RGB, scale 1/255, mean/std 0.5
    aug = {**STRONG, "photometric": {"enabled": False}, "flip_p": 0.5}
    items = _inputs(ds, model, aug)
    checked = 0
    for i in range(len(ds)):
        colour = torch.tensor(ds.record(i).extra.colours[0], dtype=torch.float32)
        x, t = items[(i, 1)]
        pixels = (x * 0.5 + 0.5) * 255  # undo the normalisation
        for box in t["boxes"]:
            cx = int((box[0] + box[2]) / 2 * 96)
            cy = int((box[1] + box[3]) / 2 * 96)
            torch.testing.assert_close(pixels[:, cy, cx], colour, atol=2.0, rtol=0, msg=f"item {i}")
            checked += 1
    assert checked > 40


def test_pictures_without_boxes_survive_the_whole_policy():
    ds = ShapesDataset(ShapesConfig(num_images=30, seed=1, min_objects=0, max_objects=0))
    items = _inputs(ds, _model(3, 64))
    for i in range(len(ds)):
        x, t = items[(i, 0)]
        assert x.shape == (3, 64, 64) and t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)


def test_iou_crop_keeps_a_picture_without_boxes_even_with_no_keep_option():
    # torchvision's RandomIoUCrop would search forever here (no box centre can be inside a crop).
    crop = BatchedIoUCrop(sampler_options=[0.5])
    image = tv_tensors.Image(torch.randint(0, 255, (3, 20, 30), dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(20, 30))
    out_image, out = crop(image, {"boxes": boxes, "labels": torch.zeros(0, dtype=torch.int64)})
    assert torch.equal(out_image, image) and out["boxes"].shape == (0, 4)


def _crop_sample():
    image = tv_tensors.Image(torch.zeros(3, 120, 160, dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([[20.0, 30.0, 100.0, 100.0], [100.0, 10.0, 130.0, 40.0]]), format="XYXY", canvas_size=(120, 160)
    )
    return image, boxes


@pytest.mark.parametrize("option", [0.0, 0.3, 0.5, 0.7])
def test_iou_crop_accepts_only_what_torchvision_accepts(option):
    image, boxes = _crop_sample()
    crop = BatchedIoUCrop(sampler_options=[option])
    torch.manual_seed(0)
    for _ in range(100):
        p = crop.make_params([image, boxes])
        x, y, w, h = p["left"], p["top"], p["width"], p["height"]
        assert 0.3 * 160 - 1 <= w <= 160 and 0.3 * 120 - 1 <= h <= 120 and 0.5 <= w / h <= 2.0
        assert 0 <= x and x + w <= 160 and 0 <= y and y + h <= 120
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        inside = (x < cx) & (cx < x + w) & (y < cy) & (cy < y + h)
        assert torch.equal(inside, p["is_within_crop_area"]) and inside.any()
        iou = box_iou(torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32), boxes.as_subclass(torch.Tensor))
        assert iou[0, inside].max() >= option


def test_iou_crop_draws_like_torchvision():
    # Same sample, same options, many draws: the two searches give the same distribution of crops
    # (options up to 0.5 only: torchvision's one-at-a-time search is slow for higher ones).
    image, boxes = _crop_sample()
    stats = []
    options = [0.0, 0.3, 0.5, 1.0]
    for crop in (BatchedIoUCrop(sampler_options=options), v2.RandomIoUCrop(sampler_options=options)):
        torch.manual_seed(1)
        params = [crop.make_params([image, boxes]) for _ in range(400)]
        cropped = [p for p in params if p]
        stats.append(
            (
                1 - len(cropped) / len(params),
                np.mean([p["width"] * p["height"] / (160 * 120) for p in cropped]),
                np.mean([p["is_within_crop_area"].float().mean().item() for p in cropped]),
            )
        )
    (keep_a, area_a, inside_a), (keep_b, area_b, inside_b) = stats
    assert abs(keep_a - keep_b) < 0.07 and abs(area_a - area_b) < 0.04 and abs(inside_a - inside_b) < 0.06


@pytest.mark.parametrize("preset,tol", [("ssd300_vgg16", 0.0), ("ssd300_resnet50", 0.01)])
def test_zoom_out_fills_with_the_preprocessing_mean(preset, tol):
    # ssd300_vgg16 takes BGR with mean (104, 117, 123) and no scaling: the fill, in RGB, must be
    # (123, 117, 104) to normalise to exactly 0; a wrong channel order leaves +-19 there.
    ds = ShapesDataset(ShapesConfig(num_images=20, seed=2, image_size=64))
    aug = {"photometric": {"enabled": False}, "expand": {"p": 1.0, "max_ratio": 3.0}, "crop": {"enabled": False}}
    items = _inputs(ds, _model(3, 64, preset=preset), aug)
    zero = [(items[(i, 0)][0].abs() <= tol).all(dim=0).float().mean().item() for i in range(len(ds))]
    assert np.mean(zero) > 0.4  # 1 - E[1 / r^2] = 2/3 of the canvas for r ~ U(1, 3)


def test_evaluation_items_are_predicts_preprocessing():
    ds = ShapesDataset(ShapesConfig(num_images=5, seed=3, image_size=(90, 120)))
    model = _model(3, 64)
    items = _inputs(ds, model, train=False)
    pre = preprocessor_for(model)
    for i in range(len(ds)):
        image, target = ds[i]
        x, t = items[i]
        picture = image.permute(1, 2, 0).numpy()  # what a user hands to predict(): HWC uint8
        assert torch.equal(x, pre(to_tensor(picture)))
        expected = target["boxes"].as_subclass(torch.Tensor) / torch.tensor([120, 90, 120, 90])
        assert torch.equal(t["boxes"], expected) and t["orig_size"] == (90, 120)


def test_training_without_augmentation_keeps_the_geometry():
    ds = ShapesDataset(ShapesConfig(num_images=8, seed=3, image_size=(90, 120)))
    model = _model(3, 64)
    plain = _inputs(ds, model, {"enabled": False})
    val = _inputs(ds, model, train=False)
    for i in range(len(ds)):
        (xa, ta), (xb, tb) = plain[(i, 0)], val[i]
        assert torch.equal(ta["boxes"], tb["boxes"])
        # training resizes the uint8 picture (torch's fixed-point kernel), then normalises: rounding, at
        # most one grey level
        level = model.preprocess.scale / min(model.preprocess.std)
        torch.testing.assert_close(xa, xb, atol=level + 1e-5, rtol=0)
        assert abs(float((xa - xb).mean())) < level / 10  # rounding, not a shift


# ---------- loader ----------


def _shapes_data(**kw) -> DataConfig:
    d = {"type": "shapes", "num_images": 48, "image_size": 64, "seed": 5}
    return DataConfig(train=d, val={**d, "seed": 6, "num_images": 20}, batch_size=8, **kw)


def _run(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return list(loader)


def _same(a: list[Batch], b: list[Batch]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if not torch.equal(x.images, y.images) or x.skipped != y.skipped:
            return False
        for s, t in zip(x.targets, y.targets, strict=True):
            if s["image_id"] != t["image_id"] or not torch.equal(s["boxes"], t["boxes"]):
                return False
    return True


def test_loader_repeats_batches_for_a_seed_and_epoch_with_workers():
    model = _model(3, 64)
    two = build_loader(_shapes_data(num_workers=2), model, "train", seed=3)
    first = _run(two, 0)
    assert len(first) == 6 and all(isinstance(b, Batch) and b.images.shape == (8, 3, 64, 64) for b in first)
    other_epoch = _run(two, 1)
    again = _run(two, 0)  # the same persistent workers, after another epoch
    fresh = _run(build_loader(_shapes_data(num_workers=2), model, "train", seed=3), 0)
    inline = _run(build_loader(_shapes_data(num_workers=0), model, "train", seed=3), 0)
    assert _same(first, again) and _same(first, fresh) and _same(first, inline)
    assert not _same(first, other_epoch)
    order = [t["image_id"] for b in first for t in b.targets]
    assert order != [t["image_id"] for b in other_epoch for t in b.targets]

    def by_id(batches):
        return {t["image_id"]: x for b in batches for x, t in zip(b.images, b.targets, strict=True)}

    # an item's augmentation differs from epoch to epoch, not only the order
    a, b = by_id(first), by_id(other_epoch)
    assert len(a) == 48 and sum(torch.equal(a[i], b[i]) for i in a) < 5
    another_seed = _run(build_loader(_shapes_data(num_workers=0), model, "train", seed=4), 0)
    assert not _same(first, another_seed)


def test_loader_leaves_the_callers_random_state_alone():
    loader = build_loader(_shapes_data(num_workers=0), _model(3, 64), "train")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    _run(loader, 0)
    assert torch.equal(before, torch.get_rng_state())


def test_loader_settings_per_split():
    data = _shapes_data(num_workers=2, val_batch_size=6)
    train = build_loader(data, _model(3, 64), "train")
    val = build_loader(data, _model(3, 64), "val")
    assert train.drop_last and not val.drop_last
    assert train.persistent_workers and train.num_workers == 2
    assert train.pin_memory == torch.cuda.is_available()
    assert val.batch_size == 6 and train.batch_size == 8
    inline = build_loader(_shapes_data(num_workers=0), _model(3, 64), "val")
    batches = _run(inline, 0)
    assert [len(b.targets) for b in batches] == [8, 8, 4]  # in order, last partial batch kept
    assert [t["image_id"] for b in batches for t in b.targets] == list(range(20))


def test_sampler_splits_between_ranks():
    for pad, n in ((True, 13), (False, 13), (True, 16)):
        per_rank = []
        for rank in (0, 1):
            s = EpochSampler(n, shuffle=True, seed=7, rank=rank, world_size=2, pad=pad)
            assert isinstance(s, DistributedSampler)
            s.set_epoch(3)
            keys = list(s)
            assert len(keys) == len(s) and all(e == 3 for _, e in keys)
            per_rank.append([i for i, _ in keys])
        a, b = per_rank
        assert set(a) | set(b) == set(range(n))
        if pad:
            assert len(a) == len(b) == -(-n // 2) and len(set(a) & set(b)) == 2 * len(a) - n
        else:
            assert not set(a) & set(b) and len(a) + len(b) == n
    s = EpochSampler(20, shuffle=True, seed=7)
    s.set_epoch(0)
    e0 = [i for i, _ in s]
    s.set_epoch(1)
    assert sorted(e0) == list(range(20)) and e0 != [i for i, _ in s]


def test_loader_under_data_parallel():
    data = _shapes_data(num_workers=0)
    loaders = [build_loader(data, _model(3, 64), "train", rank=r, world_size=2) for r in (0, 1)]
    ids = [[t["image_id"] for b in _run(ld, 2) for t in b.targets] for ld in loaders]
    assert len(ids[0]) == len(ids[1]) == 24 and not set(ids[0]) & set(ids[1])
    with pytest.raises(ValueError):
        build_loader(data, _model(3, 64), "train", rank=2, world_size=2)


def test_collate_drops_and_counts_skipped_items():
    item = (torch.ones(3, 8, 8), {"boxes": torch.zeros(0, 4)})
    batch = Collate((8, 8))([item, Skipped("a.jpg: no such image file"), item])
    assert batch.images.shape == (2, 3, 8, 8) and len(batch.targets) == 2 and batch.skipped == 1
    images, targets, skipped = Collate((8, 8))([Skipped("x"), Skipped("y")])
    assert images.shape == (0, 3, 8, 8) and targets == [] and skipped == 2


def test_batch_crosses_processes_intact():
    # Batches leave workers by pickle, with the per-box tensors packed together: same content back.
    targets = [
        {
            "boxes": torch.rand(g, 4),
            "labels": torch.arange(1, g + 1),
            "difficult": torch.rand(g) > 0.5,
            "iscrowd": torch.zeros(g, dtype=torch.bool),
            "image_id": i,
            "orig_size": (10 + i, 20),
            "path": f"p{i}.jpg",
        }
        for i, g in enumerate([2, 0, 3])
    ]
    batch = Batch(torch.rand(3, 3, 4, 4), targets, 1)
    back = pickle.loads(pickle.dumps(batch))
    assert isinstance(back, Batch) and back.skipped == 1 and torch.equal(back.images, batch.images)
    assert len(back.targets) == 3
    for a, b in zip(targets, back.targets, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
    odd = Batch(torch.rand(1, 3, 2, 2), [{"boxes": torch.rand(2, 4), "labels": torch.ones(3)}], 0)
    assert torch.equal(pickle.loads(pickle.dumps(odd)).targets[0]["labels"], torch.ones(3))


def test_classes_must_match_the_model():
    data = _shapes_data(num_workers=0)
    with pytest.raises(ValueError, match=r"has 3 classes .* num_classes=6 .* set the model's num_classes to 4"):
        build_loader(data, _model(5, 64), "train")
    named = presets.get("ssd300_vgg16", num_classes=4, class_names=["circle", "triangle", "square"], image_size=64)
    with pytest.raises(ValueError, match="label 2 is 'square' in the data but 'triangle'"):
        build_loader(data, named, "val")


def test_loader_argument_errors():
    data = _shapes_data(num_workers=0)
    with pytest.raises(ValueError, match="split"):
        build_loader(data, _model(3, 64), "test")
    with pytest.raises(ValueError, match="fewer than batch_size=64"):
        build_loader(data.model_copy(update={"batch_size": 64}), _model(3, 64), "train")


# ---------- configs ----------


def test_data_config_round_trips_through_yaml():
    cfg = DataConfig.model_validate(
        {
            "train": {"type": "voc", "root": ["VOC2007", "VOC2012"], "keep_difficult": True},
            "val": {"type": "coco", "images_dir": "val2017", "annotations": "instances_val2017.json"},
            "augment": {"expand": {"max_ratio": 2.5}, "flip_p": 0.0},
            "on_bad_item": "skip",
        }
    )
    text = yaml.safe_dump(cfg.model_dump(mode="json"))
    assert DataConfig.model_validate(yaml.safe_load(text)) == cfg
    assert cfg.train.keep_difficult and cfg.val.annotations == "instances_val2017.json"


def test_data_config_errors():
    with pytest.raises(ValidationError, match="unknown dataset 'vco'; did you mean 'voc'"):
        DataConfig(train={"type": "vco", "root": "x"})
    with pytest.raises(ValidationError, match="extra"):
        DataConfig(batchsize=4)
    with pytest.raises(ValidationError, match="must include 1.0"):
        AugmentConfig(crop={"min_iou": [0.1, 0.5]})
    with pytest.raises(ValidationError, match="on_bad_item"):
        DataConfig(on_bad_item="ignore")
    with pytest.raises(ValidationError, match="min_scale"):
        AugmentConfig(crop={"min_scale": 0.9, "max_scale": 0.5})


def test_every_dataset_accepts_its_config_fields():
    assert {"shapes", "voc", "coco"} <= set(DATASETS.names())
    for name in DATASETS.names():
        entry = DATASETS.entry(name)
        assert set(entry.config.model_fields) - {"type"} <= constructor_params(entry.obj), name
