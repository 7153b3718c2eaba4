"""`make demo` (the `ssdkit demo` command): the quick version trains, evaluates and draws."""

from __future__ import annotations

import json

from PIL import Image

from ssdkit.cli import main


def test_quick_demo_learns_and_writes_its_pictures(tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "run").mkdir(parents=True)
    (out / "run" / "last.pt").write_bytes(b"a previous demo run")  # `make demo` twice must work
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # the model's prior table: 16x16, 8x8, 4x4, 2x2, 1x1 maps with 4, 6, 6, 4, 4 priors per cell
    assert "total                             1524" in text
    scores = json.loads((out / "eval" / "eval.json").read_text())
    # Chance is ~0 (random boxes on 3 classes); a minute of training on 2 cores reaches ~0.5.
    assert scores["voc"]["map"] > 0.3, scores["voc"]
    assert scores["coco"]["map"] > 0.1, scores["coco"]
    assert scores["images"] == 120
    assert f"VOC mAP@0.5 {scores['voc']['map']:.3f}" in text
    for name in ("predictions.png", "loss.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 200 and im.size[1] > 200
    assert list((out / "eval").rglob("*.png")), "no precision-recall curves written"
    assert (out / "run" / "last.pt").stat().st_size > 1000
