"""`ssdkit data make-shapes` writes trees the readers (and pycocotools) read back as the generator drew
them; `ssdkit data check` finds each kind of defect, names its file, and exits non-zero for them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO

from ssdkit.cli import main
from ssdkit.data import COCOConfig, COCODataset, ShapesConfig, ShapesDataset, VOCConfig, VOCDataset
from ssdkit.data.check import check_dataset
from ssdkit.data.folders import write_shapes

TINY_MODEL = {
    "num_classes": 4,
    "image_size": 64,
    "backbone": {"type": "tiny", "channels": [8, 16, 16, 16], "levels": 3},
    "priors": {"type": "ssd", "aspect_ratios": [[2.0], [2.0], [2.0]], "s_min": 0.2, "s_max": 0.9},
}
SIZE = (60, 80)  # (h, w) of the generated pictures: small, the checks do not care


def _shapes(n: int, seed: int = 0, classes=("circle", "square", "triangle")) -> ShapesDataset:
    return ShapesDataset(ShapesConfig(num_images=n, seed=seed, image_size=SIZE, classes=list(classes), max_objects=6))


def test_make_shapes_voc_tree_reads_back_as_drawn(tmp_path: Path):
    assert main(["data", "make-shapes", str(tmp_path), "--format", "voc", "--num-images", "5", "--val-images", "2",
                 "--image-size", *map(str, SIZE)]) == 0  # fmt: skip
    drawn = _shapes(7)
    for split, indices in (("trainval", range(5)), ("test", range(5, 7))):
        ds = VOCDataset(VOCConfig(root=tmp_path, image_set=split, class_names=["circle", "square", "triangle"]))
        assert len(ds) == len(indices)
        for k, i in enumerate(indices):
            image, target = ds[k]
            want_image, want = drawn[i]
            assert target["boxes"].tolist() == want["boxes"].tolist()  # VOC's 1-based corners undone exactly
            assert target["labels"].tolist() == want["labels"].tolist()
            assert image.shape == want_image.shape
            # the JPEG of that picture: far closer to it than to the next one (noise textures cost JPEG ~10)
            own = (image.float() - want_image.float()).abs().mean()
            other = (image.float() - drawn[(i + 1) % 7][0].float()).abs().mean()
            assert own < 15 and own < other / 3


def test_make_shapes_coco_tree_as_pycocotools_reads_it(tmp_path: Path):
    assert main(["data", "make-shapes", str(tmp_path), "--format", "coco", "--classes", "coco",
                 "--num-images", "6", "--val-images", "1", "--image-size", *map(str, SIZE)]) == 0  # fmt: skip
    ann = tmp_path / "annotations" / "instances_train2017.json"
    coco = COCO(str(ann))
    assert len(coco.getCatIds()) == 80 and coco.loadCats([90])[0]["name"] == "toothbrush"
    drawn = _shapes(7, classes=("circle", "square", "triangle", "ellipse", "rectangle", "diamond", "cross", "star"))
    ds = COCODataset(COCOConfig(images_dir=tmp_path / "train2017", annotations=ann))
    for k, img_id in enumerate(sorted(coco.getImgIds())):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        want = drawn[k][1]["boxes"]
        assert torch.equal(torch.cat((xywh[:, :2], xywh[:, :2] + xywh[:, 2:]), 1), want)
        # names: each shape kind's name is one of the names assigned to it (kind k -> names k, k + 8, ...)
        kinds = drawn[k][1]["labels"].tolist()
        labels = ds.record(k).labels.tolist()
        assert [(lab - 1) % 8 for lab in labels] == [kd - 1 for kd in kinds]
    assert (tmp_path / "val2017").is_dir() and len(list((tmp_path / "train2017").glob("*.jpg"))) == 6


# ---------- a data set with every kind of defect ----------


def _set_box(xml: Path, obj: int, **corners) -> None:
    text = xml.read_text()
    parts = text.split("<object>")
    for tag, value in corners.items():
        head, rest = parts[obj + 1].split(f"<{tag}>", 1)
        parts[obj + 1] = f"{head}<{tag}>{value}</{tag}>{rest.split(f'</{tag}>', 1)[1]}"
    xml.write_text("<object>".join(parts))


@pytest.fixture
def broken_voc(tmp_path: Path) -> Path:
    """A VOC tree with: an inverted, a zero-sized, an out-of-picture and a sub-pixel box, a truncated
    and a missing picture, an unknown class name, an id listed twice, and pictures without boxes."""
    root = tmp_path / "VOC"
    write_shapes(root, "voc", num_images=10, val_images=0, image_size=SIZE, seed=3)
    ann = root / "Annotations"
    stems = [f"{i:06d}" for i in range(1, 11)]
    with_boxes = [s for s in stems if "<object>" in (ann / f"{s}.xml").read_text()]
    a, b, c, d, e, f = with_boxes[:6]
    _set_box(ann / f"{a}.xml", 0, xmin=30, xmax=20)  # inverted
    _set_box(ann / f"{b}.xml", 0, xmin=21, xmax=20)  # zero width: VOC's [xmin - 1, xmax] = [20, 20]
    _set_box(ann / f"{c}.xml", 0, xmax=SIZE[1] + 25)  # far outside the 80 px wide picture
    _set_box(ann / f"{d}.xml", 0, xmin=40.8, xmax=40)  # 0.2 px wide: dropped in training
    jpg = root / "JPEGImages" / f"{e}.jpg"
    jpg.write_bytes(jpg.read_bytes()[: len(jpg.read_bytes()) // 2])  # truncated
    (root / "JPEGImages" / f"{f}.jpg").unlink()
    text = (ann / f"{with_boxes[6]}.xml").read_text()
    head, rest = text.split("<object><name>", 1)
    (ann / f"{with_boxes[6]}.xml").write_text(f"{head}<object><name>hexagon{rest[rest.index('</name>') :]}")
    listing = root / "ImageSets" / "Main" / "trainval.txt"
    listing.write_text(listing.read_text() + f"{stems[0]}\n")
    return root


def test_check_finds_every_defect_with_its_file(broken_voc: Path):
    names = ["circle", "square", "triangle"]
    ds = VOCDataset(VOCConfig(root=broken_voc, class_names=names))
    report = check_dataset(ds, name="broken")
    by_kind: dict[str, list] = {}
    for p in report.problems:
        by_kind.setdefault(p.kind, []).append(p)
    ann = broken_voc / "Annotations"
    with_boxes = [s for s in sorted(p.stem for p in ann.iterdir()) if "<object>" in (ann / f"{s}.xml").read_text()]
    a, b, c, d, e, f, g = with_boxes[:7]
    expect = {
        "inverted box": f"{a}.xml",
        "zero-sized box": f"{b}.xml",
        "box outside picture": f"{c}.xml",
        "box under min_box_size": f"{d}.xml",
        "unreadable picture": f"{e}.jpg",
        "bad annotation": f"{g}.xml",
        "duplicate picture": "000001.jpg",
    }
    for kind, file in expect.items():
        assert kind in by_kind, f"{kind} not reported: {report.summary()}"
        assert any(file in p.where or file in p.detail for p in by_kind[kind]), (kind, by_kind[kind])
    missing = [p for p in by_kind["unreadable picture"] if f"{f}.jpg" in p.where]
    assert missing and "no such image file" in missing[0].detail
    assert "hexagon" in by_kind["bad annotation"][0].detail
    assert report.failed and report.pictures == 11
    # pictures without boxes are data, not defects: counted from the files
    empty = sum("<object>" not in (ann / f"{s}.xml").read_text() for s in sorted(p.stem for p in ann.iterdir()))
    assert report.empty_pictures == empty + ("<object>" not in (ann / "000001.xml").read_text())
    # boxes per class, counted from the XML files (the renamed one is unreadable, the duplicate counts twice)
    listed = [line for line in (broken_voc / "ImageSets/Main/trainval.txt").read_text().split() if line != g]
    xml_names = [n.split("</name>")[0] for s in listed for n in (ann / f"{s}.xml").read_text().split("<name>")[1:]]
    assert dict(report.boxes_per_class) == {n: xml_names.count(n) for n in names if xml_names.count(n)}


def test_check_cli_exit_codes_and_png(broken_voc: Path, tmp_path: Path, capsys):
    clean = tmp_path / "clean"
    write_shapes(clean, "voc", num_images=4, val_images=0, image_size=SIZE)
    plots = tmp_path / "plots"
    model = tmp_path / "model.yaml"  # whose priors the PNG shows (the default, SSD300-VGG16, takes longer to build)
    model.write_text(json.dumps(TINY_MODEL))
    assert main(["data", "check", str(clean), "--plot-dir", str(plots), "--no-progress", "--model", str(model)]) == 0
    out = capsys.readouterr().out
    assert "4 pictures" in out and "no defects found" in out and out.strip().endswith("OK")
    png = list(plots.glob("*.png"))
    assert len(png) == 1 and png[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        main(["data", "check", str(broken_voc), "--plot-dir", str(plots), "--no-progress", "--model", str(model)]) == 1
    )
    out = capsys.readouterr().out
    assert "ERROR" in out and "inverted box" in out and "FAILED" in out
    assert main(["data", "check", str(tmp_path / "nothing_here"), "--no-progress"]) == 2


def test_check_coco_duplicate_ids_and_sub_pixel_boxes(tmp_path: Path, capsys):
    write_shapes(tmp_path, "coco", num_images=3, val_images=0, image_size=SIZE)
    path = tmp_path / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    data["annotations"][1]["id"] = data["annotations"][0]["id"]  # evaluation indexes annotations by id
    data["annotations"][2]["bbox"][2] = 0.5
    data["annotations"][3]["iscrowd"] = 1
    path.write_text(json.dumps(data))
    report = check_dataset(COCODataset(COCOConfig(images_dir=tmp_path / "train2017", annotations=path)))
    kinds = [p.kind for p in report.problems]
    assert kinds.count("duplicate id") == 1 and kinds.count("box under min_box_size") == 1 and report.crowd == 1
    assert (
        f"annotation id {data['annotations'][2]['id']}" in report.problems[kinds.index("box under min_box_size")].detail
    )
    data["images"][1]["id"] = data["images"][0]["id"]  # the reader refuses this file: the check says so
    path.write_text(json.dumps(data))
    assert main(["data", "check", str(path), "--no-progress", "--plot-dir", str(tmp_path / "p")]) == 1
    assert "appears twice" in capsys.readouterr().out


def test_check_run_config_classes_against_the_model(tmp_path: Path, monkeypatch, capsys):
    write_shapes(tmp_path / "VOC2007", "voc", num_images=2, val_images=1, image_size=SIZE)
    write_shapes(tmp_path / "VOC2012", "voc", num_images=2, val_images=0, image_size=SIZE)
    args = ["data", "check", "voc0712_ssd300", "--data-root", str(tmp_path), "--no-progress", "--quick"]
    assert main([*args, "--plot-dir", str(tmp_path / "p")]) == 1  # VOC's 20 names: 'circle' is unknown
    out = capsys.readouterr().out
    assert "class 'circle' is not in class_names" in out


def test_check_measures_pictures_as_training_reads_them(tmp_path):
    """A phone JPEG stored sideways (EXIF tag 6): `data check` sees the displayed size, as read_image does,
    so it does not flag boxes that training accepts (or accept boxes that training refuses)."""
    from PIL import Image

    from ssdkit.data.base import read_image
    from ssdkit.data.check import picture_size

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20)).save(tmp_path / "phone.jpg", exif=exif)  # stored 40 wide, shown 20 wide
    assert picture_size(str(tmp_path / "phone.jpg")) == tuple(read_image(tmp_path / "phone.jpg").shape[-2:]) == (40, 20)
