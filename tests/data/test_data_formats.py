"""VOC and COCO folders written here, read back; unreadable items fail naming the file, or are skipped."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pydantic
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from ssdkit import presets
from ssdkit.data import (
    BadItemError,
    BadItemWarning,
    COCOConfig,
    COCODataset,
    DataConfig,
    VOCConfig,
    VOCDataset,
    build_dataset,
    build_loader,
)

# ---------- writers (the tests' own data) ----------


def _picture(path: Path, w: int, h: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path, quality=95)


def write_voc(root: Path, items: list[dict], image_set: str = "trainval") -> Path:
    """items: {"id", "size": (w, h), "objects": [(name, (xmin, ymin, xmax, ymax), difficult)]}."""
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for k, it in enumerate(items):
        w, h = it["size"]
        _picture(root / "JPEGImages" / f"{it['id']}.jpg", w, h, k)
        objects = "".join(
            f"<object><name>{escape(n)}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for n, b, d in it["objects"]
        )
        xml = (
            f"<annotation><folder>VOC2007</folder><filename>{it['id']}.jpg</filename>"
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objects}</annotation>"
        )
        (root / "Annotations" / f"{it['id']}.xml").write_text(xml)
    (root / "ImageSets" / "Main" / f"{image_set}.txt").write_text("".join(f"{it['id']}\n" for it in items))
    return root


CATS = [{"id": 42, "name": "zebra"}, {"id": 3, "name": "car"}, {"id": 7, "name": "bus"}]  # not sorted, gaps


def write_coco(folder: Path, images: list[dict], anns: list[dict], categories=CATS) -> tuple[Path, Path]:
    """images: {"id", "file_name", "width", "height"}; pictures are written for each."""
    pics = folder / "images"
    for k, im in enumerate(images):
        _picture(pics / im["file_name"], im["width"], im["height"], 100 + k)
    full = [{"id": k + 1, "area": a["bbox"][2] * a["bbox"][3], "iscrowd": 0, **a} for k, a in enumerate(anns)]
    path = folder / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": full, "categories": categories}))
    return pics, path


def _model(n_classes: int, class_names=None, size: int = 64):
    return presets.get("ssd300_vgg16", num_classes=n_classes + 1, class_names=class_names, image_size=size)


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    return write_voc(
        tmp_path / "VOC2007",
        [
            {"id": "000001", "size": (64, 48), "objects": [("dog", (11, 6, 30, 25), 0), ("cat", (1, 1, 64, 48), 1)]},
            {"id": "000002", "size": (40, 40), "objects": []},
            {"id": "000003", "size": (50, 60), "objects": [("cat", (5, 5, 45, 55), 0)]},
        ],
    )


# ---------- VOC ----------


def test_voc_boxes_labels_and_difficult_flag(voc: Path):
    ds = VOCDataset(VOCConfig(root=voc, class_names=["cat", "dog"]))
    assert len(ds) == 3 and ds.class_names == ["cat", "dog"]
    image, t = ds[0]
    assert image.shape == (3, 48, 64) and image.dtype == torch.uint8
    # 1-based inclusive corners -> continuous pixels: (xmin - 1, ymin - 1, xmax, ymax)
    assert t["boxes"].tolist() == [[10, 5, 30, 25], [0, 0, 64, 48]]
    assert t["labels"].tolist() == [2, 1]
    assert t["difficult"].tolist() == [False, True]
    assert t["orig_size"] == (48, 64) and t["path"].endswith("000001.jpg")
    _, empty = ds[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_voc_ground_truth_reads_no_picture(voc: Path):
    ds = VOCDataset(VOCConfig(root=voc, class_names=["cat", "dog"]))
    expected = [ds[i][1] for i in range(3)]
    for jpg in (voc / "JPEGImages").iterdir():
        jpg.unlink()  # ground_truth() must not need them
    gts = ds.ground_truth()
    assert [g["orig_size"] for g in gts] == [(48, 64), (40, 40), (60, 50)]
    for e, g in zip(expected, gts, strict=True):
        assert torch.equal(e["boxes"].as_subclass(torch.Tensor), g["boxes"])
        assert torch.equal(e["difficult"], g["difficult"])


def test_voc_default_classes_and_several_roots(tmp_path: Path):
    a = write_voc(tmp_path / "VOC2007", [{"id": "a1", "size": (32, 32), "objects": [("person", (2, 2, 20, 20), 0)]}])
    b = write_voc(tmp_path / "VOC2012", [{"id": "b1", "size": (32, 32), "objects": [("tvmonitor", (1, 1, 9, 9), 0)]}])
    ds = build_dataset({"type": "voc", "root": [str(a), str(b)]})
    assert len(ds) == 2 and len(ds.class_names) == 20
    assert ds[0][1]["labels"].tolist() == [ds.class_names.index("person") + 1]
    assert ds[1][1]["labels"].tolist() == [20] and ds[1][1]["path"].endswith("b1.jpg")


def test_voc_class_not_in_class_names_names_the_file(voc: Path):
    ds = VOCDataset(VOCConfig(root=voc, class_names=["cat"]))
    with pytest.raises(BadItemError, match=r"000001\.xml.*'dog' is not in class_names"):
        ds[0]


def test_voc_missing_image_set_file(voc: Path):
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/test\.txt"):
        VOCDataset(VOCConfig(root=voc, image_set="test"))


def test_a_data_set_reads_every_setting_from_its_config(voc: Path):
    cfg = VOCConfig(root=voc, class_names=["cat", "dog"], keep_difficult=True)
    ds = build_dataset(cfg)
    assert ds.config == cfg and ds.keep_difficult is True and ds.class_names == ["cat", "dog"]


def test_configs_keep_a_python_path_as_its_text(tmp_path: Path):
    # From Python a folder is often a pathlib.Path: the config holds its text, as a config file would.
    assert VOCConfig(root=tmp_path).root == str(tmp_path)
    assert VOCConfig(root=[tmp_path / "07", "12"]).root == [str(tmp_path / "07"), "12"]
    coco = COCOConfig(images_dir=tmp_path, annotations=tmp_path / "x.json")
    assert (coco.images_dir, coco.annotations) == (str(tmp_path), str(tmp_path / "x.json"))
    with pytest.raises(pydantic.ValidationError):
        VOCConfig(root=3)  # anything else is still checked


def _by_path(loader, epochs=(0,)):
    out = {}
    for e in epochs:
        loader.sampler.set_epoch(e)
        for batch in loader:
            for t in batch.targets:
                out[Path(t["path"]).stem] = t
    return out


def test_voc_loader_drops_difficult_for_training_only(voc: Path):
    names = ["cat", "dog"]
    no_aug = {"enabled": False}
    base = {"val": {"type": "voc", "root": str(voc), "class_names": names}, "augment": no_aug}
    cfg = DataConfig(train={"type": "voc", "root": str(voc), "class_names": names}, batch_size=1, num_workers=0, **base)
    train = _by_path(build_loader(cfg, _model(2, names), "train"))
    assert train["000001"]["labels"].tolist() == [2] and train["000001"]["difficult"].tolist() == [False]
    torch.testing.assert_close(train["000001"]["boxes"], torch.tensor([[10 / 64, 5 / 48, 30 / 64, 25 / 48]]))

    val = _by_path(build_loader(cfg, _model(2, names), "val"))
    assert val["000001"]["labels"].tolist() == [2, 1] and val["000001"]["difficult"].tolist() == [False, True]
    assert val["000001"]["orig_size"] == (48, 64)
    # pixels of the original come back from orig_size
    h, w = val["000001"]["orig_size"]
    assert (val["000001"]["boxes"] * torch.tensor([w, h, w, h])).round().tolist() == [[10, 5, 30, 25], [0, 0, 64, 48]]

    keep = cfg.model_copy(
        update={"train": {"type": "voc", "root": str(voc), "class_names": names, "keep_difficult": True}}
    )
    keep = DataConfig.model_validate(keep.model_dump())
    kept = _by_path(build_loader(keep, _model(2, names), "train"))
    assert kept["000001"]["labels"].tolist() == [2, 1] and kept["000001"]["difficult"].tolist() == [False, True]


def test_voc_training_boxes_move_with_the_picture_after_difficult_ones_are_dropped(voc: Path):
    names = ["cat", "dog"]
    d = {"type": "voc", "root": str(voc), "class_names": names}
    flip_only = {"photometric": {"enabled": False}, "expand": {"enabled": False}, "crop": {"enabled": False}}
    cfg = DataConfig(train=d, val=d, batch_size=1, num_workers=0, augment={**flip_only, "flip_p": 1.0})
    train = _by_path(build_loader(cfg, _model(2, names), "train"))
    # [10, 5, 30, 25] in a 64-wide picture, mirrored: [64 - 30, 5, 64 - 10, 25]
    torch.testing.assert_close(train["000001"]["boxes"], torch.tensor([[34 / 64, 5 / 48, 54 / 64, 25 / 48]]))
    assert train["000001"]["labels"].tolist() == [2]


# ---------- COCO ----------


@pytest.fixture
def coco(tmp_path: Path) -> tuple[Path, Path]:
    images = [
        {"id": 101, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 205, "file_name": "b.jpg", "width": 40, "height": 40},
        {"id": 7, "file_name": "sub/c.jpg", "width": 50, "height": 60},
    ]
    anns = [
        {"image_id": 101, "category_id": 42, "bbox": [10.5, 5, 20, 20]},
        {"image_id": 7, "category_id": 3, "bbox": [0, 0, 50, 60]},
        {"image_id": 101, "category_id": 7, "bbox": [0, 0, 64, 48], "iscrowd": 1},
        {"image_id": 101, "category_id": 3, "bbox": [30, 20, 4, 6]},
    ]
    return write_coco(tmp_path, images, anns)


def test_coco_category_ids_map_to_labels_and_back_as_pycocotools_reads_them(coco):
    pics, ann = coco
    ds = COCODataset(COCOConfig(images_dir=pics, annotations=ann))
    assert ds.class_names == ["car", "bus", "zebra"]  # sorted by category id 3, 7, 42
    assert ds.label_to_cat_id == {1: 3, 2: 7, 3: 42}
    assert {c: ds.label_to_cat_id[label] for c, label in ds.cat_id_to_label.items()} == {3: 3, 7: 7, 42: 42}
    peer = COCO(str(ann))
    assert len(ds) == len(peer.getImgIds())
    for i in range(len(ds)):
        image, t = ds[i]
        info = peer.loadImgs(t["image_id"])[0]
        assert image.shape == (3, info["height"], info["width"])
        anns = peer.loadAnns(peer.getAnnIds(imgIds=t["image_id"]))
        assert [ds.label_to_cat_id[k] for k in t["labels"].tolist()] == [a["category_id"] for a in anns]
        want = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        assert t["boxes"].tolist() == want
        assert t["iscrowd"].tolist() == [bool(a["iscrowd"]) for a in anns]


def test_coco_crowd_boxes_out_of_training_in_evaluation(coco):
    pics, ann = coco
    d = {"type": "coco", "images_dir": str(pics), "annotations": str(ann)}
    cfg = DataConfig(train=d, val=d, batch_size=1, num_workers=0, augment={"enabled": False})
    model = _model(3, ["car", "bus", "zebra"])
    train = _by_path(build_loader(cfg, model, "train"))
    assert train["a"]["labels"].tolist() == [3, 1] and not train["a"]["iscrowd"].any()
    val = _by_path(build_loader(cfg, model, "val"))
    assert val["a"]["labels"].tolist() == [3, 2, 1] and val["a"]["iscrowd"].tolist() == [False, True, False]
    assert val["a"]["image_id"] == 101 and val["b"]["boxes"].shape == (0, 4)


def test_coco_file_errors_name_the_file_and_annotation(tmp_path: Path):
    images = [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}]
    _, ann = write_coco(tmp_path, images, [{"image_id": 1, "category_id": 99, "bbox": [0, 0, 2, 2]}])
    with pytest.raises(ValueError, match=r"instances\.json: annotations\[0\] \(id 1\) has category_id 99"):
        COCODataset(COCOConfig(images_dir=tmp_path / "images", annotations=ann))
    _, ann = write_coco(tmp_path, images, [{"image_id": 5, "category_id": 3, "bbox": [0, 0, 2, 2]}])
    with pytest.raises(ValueError, match="refers to image id 5"):
        COCODataset(COCOConfig(images_dir=tmp_path / "images", annotations=ann))
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        COCODataset(COCOConfig(images_dir=tmp_path, annotations=tmp_path / "nothere.json"))


# ---------- unreadable items ----------

BAD_CASES = ["missing_image", "corrupt_image", "box_outside", "empty_box"]


def _bad_voc(tmp_path: Path, case: str) -> tuple[dict, str, list[str]]:
    """A 3-item VOC set whose item 1 ('bad') has the defect; returns (dataset config, file, other text)."""
    box = {"box_outside": (20, 10, 120, 30), "empty_box": (30, 10, 20, 30)}.get(case, (5, 5, 20, 20))
    root = write_voc(
        tmp_path / "VOC",
        [
            {"id": "good1", "size": (64, 48), "objects": [("cat", (2, 2, 30, 30), 0)]},
            {"id": "bad", "size": (64, 48), "objects": [("cat", (1, 1, 10, 10), 0), ("cat", box, 0)]},
            {"id": "good2", "size": (64, 48), "objects": []},
        ],
    )
    jpg = root / "JPEGImages" / "bad.jpg"
    if case == "missing_image":
        jpg.unlink()
    if case == "corrupt_image":
        jpg.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG" * 4)
    cfg = {"type": "voc", "root": str(root), "class_names": ["cat"]}
    if case in ("missing_image", "corrupt_image"):
        return cfg, str(jpg), []
    return cfg, str(root / "Annotations" / "bad.xml"), ["object 1", f"xmin={box[0]} ymin={box[1]} xmax={box[2]}"]


def _bad_coco(tmp_path: Path, case: str) -> tuple[dict, str, list[str]]:
    bbox = {"box_outside": [50, 10, 40, 20], "empty_box": [30, 10, 0, 20]}.get(case, [5, 5, 10, 10])
    images = [{"id": k, "file_name": f"{n}.jpg", "width": 64, "height": 48} for k, n in enumerate(["g1", "bad", "g2"])]
    anns = [
        {"image_id": 0, "category_id": 3, "bbox": [1, 1, 10, 10]},
        {"image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10]},
        {"image_id": 1, "category_id": 3, "bbox": bbox},
    ]
    pics, ann = write_coco(tmp_path, images, anns)
    if case == "missing_image":
        (pics / "bad.jpg").unlink()
    if case == "corrupt_image":
        (pics / "bad.jpg").write_bytes(b"GIF89a" + bytes(range(40)))
    cfg = {"type": "coco", "images_dir": str(pics), "annotations": str(ann)}
    if case in ("missing_image", "corrupt_image"):
        return cfg, str(pics / "bad.jpg"), []
    return cfg, str(ann), ["annotation id 3", "[" + ", ".join(str(v) for v in bbox) + "]", "bad.jpg"]


MAKERS = {"voc": _bad_voc, "coco": _bad_coco}


@pytest.mark.parametrize("fmt", ["voc", "coco"])
@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_item_error_names_the_file_and_box(tmp_path: Path, fmt: str, case: str):
    cfg, file, details = MAKERS[fmt](tmp_path, case)
    ds = build_dataset(cfg)
    ds[0], ds[2]  # the others read fine
    with pytest.raises(BadItemError) as info:
        ds[1]
    msg = str(info.value)
    assert file in msg, msg
    for d in details:
        assert d in msg, (d, msg)
    if case == "box_outside":
        assert "outside" in msg
    if case == "empty_box":
        assert "x2 <= x1" in msg


@pytest.mark.parametrize("fmt", ["voc", "coco"])
@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_item_skipped_with_one_warning_and_counted(tmp_path: Path, fmt: str, case: str):
    cfg, file, _ = MAKERS[fmt](tmp_path, case)
    n = len(build_dataset(cfg).class_names)
    data = DataConfig(train=cfg, val=cfg, batch_size=2, num_workers=0, on_bad_item="skip")
    loader = build_loader(data, _model(n, size=32), "val")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(loader)
    ours = [w for w in caught if issubclass(w.category, BadItemWarning)]
    assert len(ours) == 1 and file in str(ours[0].message) and "\n" not in str(ours[0].message)
    assert sum(b.skipped for b in batches) == 1
    stems = [Path(t["path"]).stem for b in batches for t in b.targets]
    assert len(stems) == 2 and "bad" not in stems
    assert all(b.images.shape[0] == len(b.targets) for b in batches)


def test_bad_item_error_mode_stops_the_loader_naming_the_file(tmp_path: Path):
    cfg, file, _ = _bad_voc(tmp_path, "corrupt_image")
    data = DataConfig(train=cfg, val=cfg, batch_size=3, num_workers=0)
    with pytest.raises(BadItemError, match="bad.jpg"):
        list(build_loader(data, _model(1, size=32), "val"))


def test_bad_items_through_worker_processes(tmp_path: Path, capfd: pytest.CaptureFixture):
    cfg, file, _ = _bad_voc(tmp_path, "box_outside")
    data = DataConfig(train=cfg, val=cfg, batch_size=1, num_workers=2, on_bad_item="skip", augment={"enabled": False})
    loader = build_loader(data, _model(1, size=32), "train")
    loader.sampler.set_epoch(0)

    def to_stderr(message, category, filename, lineno, file=None, line=None):
        os.write(2, warnings.formatwarning(message, category, filename, lineno, line).encode())

    # pytest records warnings in a list, which forked workers would fill in their own memory;
    # show them as Python does by default instead, straight to file descriptor 2.
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = to_stderr
        batches = list(loader)
    assert sum(b.skipped for b in batches) == 1 and sum(len(b.targets) for b in batches) == 2
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "BadItemWarning: skipped item 1" in lines[0] and file in lines[0], lines

    strict = build_loader(data.model_copy(update={"on_bad_item": "error", "num_workers": 1}), _model(1, size=32), "val")
    with pytest.raises(BadItemError, match=r"bad\.xml.*outside"):
        list(strict)
