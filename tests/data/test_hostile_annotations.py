"""Annotation files as tools really write them: VOC flags as words, odd sizes, XML entity tricks,
COCO iscrowd as a string, duplicate category names or keys, deep nesting. Each is read right or
refused naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssdkit.data import BadItemError, COCOConfig, COCODataset, VOCConfig, VOCDataset


def voc_item(root: Path, xml: str, size: tuple[int, int] = (40, 30)) -> VOCDataset:
    """A VOC root holding one item "a" whose annotation is `xml`."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(root / "JPEGImages" / "a.jpg")
    (root / "Annotations" / "a.xml").write_text(xml)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("a\n")
    return VOCDataset(VOCConfig(root=root, class_names=["cat", "dog"]))


def annotation(difficult: str | None = "0", width: str = "40", height: str = "30", box=(5, 5, 20, 20)) -> str:
    flag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    return (
        f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        f"<object><name>cat</name>{flag}<bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
        f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object></annotation>"
    )


DIFFICULT = {
    "0": False, "1": True, "false": False, "False": False, "FALSE": False, "no": False, "0.0": False,
    "": False, " 1 ": True, "true": True, "True": True, "yes": True, "1.0": True, None: False,
}  # fmt: skip


@pytest.mark.parametrize("text", list(DIFFICULT), ids=[repr(k) for k in DIFFICULT])
def test_voc_difficult_written_as_a_word(tmp_path, text):
    rec = voc_item(tmp_path, annotation(difficult=text)).record(0)
    assert rec.difficult.tolist() == [DIFFICULT[text]]


@pytest.mark.parametrize("text", ["2", "maybe", "-1", "0.5"])
def test_voc_difficult_that_is_no_flag_names_the_file(tmp_path, text):
    ds = voc_item(tmp_path, annotation(difficult=text))
    with pytest.raises(
        BadItemError, match=rf"a\.xml: object 0 \('cat'\) <difficult> must be 0/1 or true/false.*{text!r}"
    ):
        ds.record(0)


@pytest.mark.parametrize("width", ["1e400", "nan", "inf", "-5", "1e12", "wide"])
def test_voc_size_that_is_no_size_names_the_file(tmp_path, width):
    ds = voc_item(tmp_path, annotation(width=width))
    with pytest.raises(BadItemError, match=r"a\.xml: <size> <width>"):
        ds.record(0)


def test_voc_size_written_as_decimals_or_zero(tmp_path):
    assert voc_item(tmp_path / "a", annotation(width="40.0", height="30.0")).record(0).size == (30, 40)
    assert voc_item(tmp_path / "b", annotation(width="0", height="0")).record(0).size is None  # the picture tells


def test_voc_non_finite_box_names_the_box(tmp_path):
    ds = voc_item(tmp_path, annotation(box=(5, 5, "nan", 20)))
    with pytest.raises(BadItemError, match=r"a\.xml: object 0 \('cat'\).*non-finite"):
        ds[0]


ENTITY_XML = {
    "billion laughs": (
        '<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        "<annotation><folder>&c;</folder></annotation>"
    ),
    "external entity": (
        '<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<annotation><folder>&x;</folder></annotation>"
    ),
}


@pytest.mark.parametrize("name", list(ENTITY_XML))
def test_voc_entity_declarations_are_refused_whatever_the_expat(tmp_path, name):
    ds = voc_item(tmp_path, ENTITY_XML[name])
    with pytest.raises(BadItemError, match=r"a\.xml: refused: .*VOC annotations need no DTD, entities"):
        ds.record(0)


# ---------------------------------------------------------------- COCO


def coco_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "instances.json"
    path.write_text(text)
    return path


def coco(anns: list[dict], categories=None) -> str:
    return json.dumps(
        {
            "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
            "annotations": anns,
            "categories": categories or [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        }
    )


CROWD = [(0, False), (1, True), ("0", False), ("1", True), ("false", False), ("true", True), (False, False),
         (True, True), (0.0, False)]  # fmt: skip


@pytest.mark.parametrize("value, expected", CROWD, ids=[repr(v) for v, _ in CROWD])
def test_coco_iscrowd_as_exporters_write_it(tmp_path, value, expected):
    path = coco_file(
        tmp_path, coco([{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10], "iscrowd": value}])
    )
    rec = COCODataset(COCOConfig(images_dir=tmp_path, annotations=path)).record(0)
    assert rec.iscrowd.tolist() == [expected]


def test_coco_iscrowd_that_is_no_flag_names_the_annotation(tmp_path):
    path = coco_file(tmp_path, coco([{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "iscrowd": "2"}]))
    with pytest.raises(ValueError, match=r"instances\.json: annotations\[0\] \(id 7\) iscrowd must be 0/1.*'2'"):
        COCODataset(COCOConfig(images_dir=tmp_path, annotations=path))


def test_coco_duplicate_category_names_are_refused(tmp_path):
    path = coco_file(tmp_path, coco([], categories=[{"id": 1, "name": "cat"}, {"id": 5, "name": "cat"}]))
    with pytest.raises(ValueError, match=r"instances\.json: categories 1 and 5 are both named 'cat'"):
        COCODataset(COCOConfig(images_dir=tmp_path, annotations=path))


def test_coco_duplicate_keys_are_refused(tmp_path):
    text = coco([]).replace('"images":', '"annotations": [], "images":', 1)
    path = coco_file(tmp_path, text)
    with pytest.raises(ValueError, match=r"instances\.json: the key 'annotations' is given twice"):
        COCODataset(COCOConfig(images_dir=tmp_path, annotations=path))


def test_coco_deep_nesting_is_a_clear_error(tmp_path):
    path = coco_file(tmp_path, '{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError, match=r"instances\.json: nested too deeply"):
        COCODataset(COCOConfig(images_dir=tmp_path, annotations=path))
