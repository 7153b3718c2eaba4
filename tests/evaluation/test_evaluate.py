"""`evaluate` on a model whose detections the test chooses, the report files, and `ssdkit eval` end to end."""

from __future__ import annotations

import json
import math
import weakref
from pathlib import Path

import pytest
import torch
from torch import nn

from ssdkit.cli import main
from ssdkit.data import Batch
from ssdkit.evaluation import collect_detections, evaluate, format_table, write_json

pytestmark = pytest.mark.usefixtures("single_thread")

RAW_PRIORS = 500  # size of the fake raw outputs, as an SSD's [B, P, 4] / [B, P, C]


class Oracle(nn.Module):
    """Stands in for an SSD. The picture's index is written in its first pixel; forward returns raw
    outputs that carry it, and postprocess returns the detections the test chose for that picture
    (boxes xyxy normalised, as SSD.detect does). It also records whether any earlier raw output
    is still alive when the next batch runs."""

    def __init__(self, detections: dict[int, dict[str, torch.Tensor]], class_names: list[str]) -> None:
        super().__init__()
        self.register_buffer("priors", torch.zeros(RAW_PRIORS, 4))
        self.weight = nn.Parameter(torch.zeros(()))
        self.image_size = (32, 32)
        self.class_names = class_names
        self.num_classes = len(class_names) + 1
        self.detections = detections
        self.raw: list[weakref.ref] = []
        self.most_alive = 0

    def forward(self, x: torch.Tensor):
        self.most_alive = max(self.most_alive, sum(r() is not None for r in self.raw))
        loc = torch.zeros(x.shape[0], RAW_PRIORS, 4)
        loc[:, 0, 0] = x[:, 0, 0, 0]
        logits = torch.zeros(x.shape[0], RAW_PRIORS, self.num_classes)
        self.raw += [weakref.ref(loc), weakref.ref(logits)]
        return loc, logits

    def detect(self, loc: torch.Tensor, logits: torch.Tensor):
        return [self.detections[int(i)] for i in loc[:, 0, 0].round().long().tolist()]


def _det(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def _images(ids: list[int]) -> torch.Tensor:
    x = torch.zeros(len(ids), 3, 32, 32)
    x[:, 0, 0, 0] = torch.tensor(ids, dtype=torch.float32)
    return x


FAR = [0.8, 0.8, 0.9, 0.9]  # overlaps no box


def _case():
    """Two pictures. Picture 0 is 200 x 100 (w x h), picture 1 50 x 50 (orig_size is (h, w)).

    cat: picture 0 box [0.1, 0.1, 0.3, 0.5] (40 x 40 px), picture 1 box [0.1, 0.1, 0.5, 0.5] (20 x 20 px);
    detections 0.9 FAR (FP), 0.8 on the first (TP), 0.7 on the second (TP): precision 0, 1/2, 2/3,
    recall 0, 1/2, 1 -> AP 2/3 (area and 11-point alike: the envelope is 2/3 everywhere).
    dog: a box in picture 0, not detected; a difficult box in picture 1, detected (ignored) -> AP 0.
    VOC mAP = (2/3 + 0) / 2 = 1/3.
    """
    dets = {
        0: _det([FAR, [0.1, 0.1, 0.3, 0.5]], [0.9, 0.8], [1, 1]),
        1: _det([[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]], [0.7, 0.6], [1, 2]),
    }
    targets = [
        {
            "boxes": torch.tensor([[0.1, 0.1, 0.3, 0.5], [0.5, 0.0, 0.7, 0.3]]),
            "labels": torch.tensor([1, 2]),
            "difficult": torch.tensor([False, False]),
            "iscrowd": torch.tensor([False, False]),
            "orig_size": (100, 200),
            "image_id": 101,
        },
        {
            "boxes": torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]]),
            "labels": torch.tensor([1, 2]),
            "difficult": torch.tensor([False, True]),
            "iscrowd": torch.tensor([False, False]),
            "orig_size": (50, 50),
            "image_id": 205,
        },
    ]
    return dets, targets


def _loader(targets, batch_size=1, extra_batches=()):
    batches = [
        Batch(_images(list(range(i, min(i + batch_size, len(targets))))), targets[i : i + batch_size], 0)
        for i in range(0, len(targets), batch_size)
    ]
    return batches + list(extra_batches)


def test_known_answer_in_each_pictures_pixels(tmp_path):
    dets, targets = _case()
    model = Oracle(dets, ["cat", "dog"])
    result = evaluate(model, _loader(targets), progress=False)
    assert result["map"] == pytest.approx(1 / 3, abs=1e-12)
    assert result["per_class"] == {"cat": pytest.approx(2 / 3, abs=1e-12), "dog": 0.0}
    assert result["voc"]["num_gt"] == {"cat": 2, "dog": 1}  # the difficult dog does not count
    assert result["voc"]["num_det"] == {"cat": 3, "dog": 0}  # the detection on it neither
    assert result["images"] == 2 and result["skipped"] == 0 and "coco" not in result
    assert result["voc"]["method"] == "area"
    assert result["voc"]["map_11point"] == pytest.approx(1 / 3)  # the other method, from the same evaluation
    assert evaluate(model, _loader(targets), progress=False, use_07_metric=True)["map"] == pytest.approx(1 / 3)

    preds, gts, info = collect_detections(model, _loader(targets))
    torch.testing.assert_close(preds[0]["boxes"][1], torch.tensor([20.0, 10.0, 60.0, 50.0]))
    torch.testing.assert_close(gts[0]["boxes"][1], torch.tensor([100.0, 0.0, 140.0, 30.0]))
    torch.testing.assert_close(gts[1]["boxes"][0], torch.tensor([5.0, 5.0, 25.0, 25.0]))
    assert gts[1]["difficult"].tolist() == [False, True] and gts[0]["image_id"] == 101
    assert all(p["boxes"].device.type == "cpu" for p in preds)


def test_coco_sizes_are_measured_in_original_pixels():
    # The cat boxes are 40 x 40 px (1600 px^2: "medium", 32^2 < a < 96^2) and 20 x 20 px ("small").
    # Measured in the 32 x 32 network input both would be small and "medium" would be empty (NaN).
    dets, targets = _case()
    coco = evaluate(Oracle(dets, ["cat", "dog"]), _loader(targets), protocol="coco", progress=False)
    assert coco["map"] == coco["coco"]["map"]
    assert not math.isnan(coco["coco"]["map_small"]) and not math.isnan(coco["coco"]["map_medium"])
    assert math.isnan(coco["coco"]["map_large"])
    assert set(coco["per_class"]) == {"cat", "dog"}


def test_batches_with_skipped_items_and_raw_outputs_are_not_kept():
    dets, targets = _case()
    model = Oracle(dets, ["cat", "dog"])
    empty = Batch(torch.zeros(0, 3, 32, 32), [], 3)  # a batch whose items were all unreadable
    model.train()
    result = evaluate(model, _loader(targets, extra_batches=[empty]), progress=False)
    assert result["skipped"] == 3 and result["images"] == 2
    assert result["map"] == pytest.approx(1 / 3, abs=1e-12)
    assert model.training  # left as it was
    assert model.most_alive == 0  # no earlier batch's raw outputs alive when the next one ran


def test_plain_pairs_and_bad_batches():
    dets, targets = _case()
    model = Oracle(dets, ["cat", "dog"])
    pairs = [(_images([0, 1]), targets)]
    assert evaluate(model, pairs, progress=False)["map"] == pytest.approx(1 / 3, abs=1e-12)
    with pytest.raises(ValueError, match="2 images but 1 targets"):
        evaluate(model, [(_images([0, 1]), targets[:1])], progress=False)
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate(model, pairs, protocol="pascal", progress=False)


def test_quiet_and_no_files_without_out_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    dets, targets = _case()
    evaluate(Oracle(dets, ["cat", "dog"]), _loader(targets), protocol="both", progress=False)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert list(tmp_path.iterdir()) == []


class _Dataset:
    label_to_cat_id = {1: 17, 2: 90}  # as ssdkit.data.COCODataset has


class _Wrapped:
    dataset = _Dataset()


class _Loader(list):
    """A list of batches with `.dataset.dataset`, like a DataLoader over ssdkit.data.ModelInputs."""

    dataset = _Wrapped()


def test_report_files(tmp_path):
    dets, targets = _case()
    out = tmp_path / "eval"
    result = evaluate(Oracle(dets, ["cat", "dog"]), _Loader(_loader(targets)), protocol="both", out_dir=out)
    saved = json.loads((out / "eval.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    for key in ("protocol", "map", "per_class", "voc", "coco", "images", "files"):
        assert key in saved
    assert saved["map"] == pytest.approx(1 / 3, abs=1e-12)
    assert saved["coco"]["map_large"] is None  # NaN is written as null
    assert saved["voc"]["per_class"]["cat"] == pytest.approx(2 / 3, abs=1e-12)
    curves = sorted(p.name for p in (out / "pr_curves").iterdir())
    assert curves == ["01_cat.png", "02_dog.png", "all.png"]
    for name in curves:
        assert (out / "pr_curves" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "coco_detections.json").read_text())
    # COCO's own ids: the data set's image ids and category ids, boxes xywh in pixels.
    assert {(r["image_id"], r["category_id"]) for r in results} == {(101, 17), (205, 17), (205, 90)}
    first = next(r for r in results if r["image_id"] == 101 and r["score"] == pytest.approx(0.8))
    assert first["bbox"] == pytest.approx([20.0, 10.0, 40.0, 40.0])
    assert set(result["files"]) == {"json", "pr_curves", "coco_detections"}


def test_coco_only_curves_come_from_cocoeval(tmp_path):
    dets, targets = _case()
    result = evaluate(Oracle(dets, ["cat", "dog"]), _loader(targets), protocol="coco", out_dir=tmp_path, progress=False)
    assert "voc" not in result and result["map"] == result["coco"]["map"]
    assert sorted(p.name for p in (tmp_path / "pr_curves").iterdir()) == ["01_cat.png", "02_dog.png", "all.png"]
    saved = json.loads((tmp_path / "eval.json").read_text())
    # COCO has no "difficult": the dog detection on the difficult box counts, one of two boxes found at
    # precision 1 -> AP50 over 101 recall points 0, 0.01, ..., 1: the 51 up to 0.5 score 1 -> 51/101.
    assert saved["coco"]["per_class_50"]["dog"] == pytest.approx(51 / 101, abs=1e-12)
    assert saved["coco"]["backend"] in ("pycocotools", "faster_coco_eval")


def test_table_and_strict_json(tmp_path):
    dets, targets = _case()
    result = evaluate(Oracle(dets, ["cat", "dog"]), _loader(targets), protocol="both", progress=False)
    table = format_table(result)
    lines = table.splitlines()
    cat = next(line for line in lines if line.startswith("cat"))
    assert cat.split()[:4] == ["cat", "2", "3", "0.667"]
    assert "11-point mAP 0.333" in lines[0]  # both VOC methods from one evaluation
    assert lines[-2].split()[:4] == ["all", "3", "3", "0.333"]
    assert "APl -" in lines[-1]  # NaN shown as "-"
    path = write_json({"a": float("nan"), "b": {1: torch.tensor([1.5])}}, tmp_path / "x.json")
    assert json.loads(path.read_text()) == {"a": None, "b": {"1": [1.5]}}


# ---------------------------------------------------------------- end to end: train, then `ssdkit eval`

RUN = """
model:
  num_classes: 3
  image_size: 64
  class_names: [circle, square]
  backbone: {type: tiny, channels: [16, 24, 32, 48, 48], levels: 3}
  priors: {type: ssd, aspect_ratios: [[2], [2], [2]], s_min: 0.2, s_max: 0.8}
data:
  train: {type: shapes, num_images: 64, seed: 0, image_size: 64, classes: [circle, square],
          min_objects: 1, max_objects: 2, min_size: 0.25, max_size: 0.5, backgrounds: [noise]}
  val: {type: shapes, num_images: 12, seed: 1, image_size: 64, classes: [circle, square],
        min_objects: 1, max_objects: 2, min_size: 0.25, max_size: 0.5, backgrounds: [noise]}
  batch_size: 16
  num_workers: 0
  augment: {enabled: false}
train: {max_steps: 12, lr: 0.05, amp: false, progress: false, device: cpu}
eval: {enabled: false}
"""


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, Path]:
    from ssdkit.engine import train

    folder = tmp_path_factory.mktemp("run")
    config = folder / "run.yaml"
    config.write_text(RUN)
    result = train(config, out_dir=folder / "run", progress=False)
    return config, Path(result.run_dir) / "last.pt"


def test_ssdkit_eval_prints_the_table_and_writes_the_files(trained_run, capsys):
    config, weights = trained_run
    assert main(["eval", str(config), "--weights", str(weights), "--protocol", "both", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "circle" in printed and "square" in printed and "COCO AP" in printed
    out = weights.parent / "eval"  # default: in the run folder
    saved = json.loads((out / "eval.json").read_text())
    for key in ("protocol", "map", "per_class", "voc", "coco", "images", "skipped", "files"):
        assert key in saved
    assert saved["images"] == 12 and set(saved["per_class"]) == {"circle", "square"}
    assert saved["map"] is None or 0.0 <= saved["map"] <= 1.0
    assert sum(saved["voc"]["num_gt"].values()) >= 12  # at least one shape a picture
    assert (out / "pr_curves" / "all.png").is_file() and (out / "pr_curves" / "01_circle.png").is_file()


def test_ssdkit_eval_with_another_data_file_and_errors(trained_run, tmp_path, capsys):
    config, weights = trained_run
    data = tmp_path / "data.yaml"
    data.write_text(
        "val: {type: shapes, num_images: 5, seed: 7, image_size: 64, classes: [circle, square], min_objects: 1}\n"
        "num_workers: 0\n"
    )
    args = ["eval", str(config), "--weights", str(weights), "--data", str(data), "--out", str(tmp_path / "e")]
    assert main([*args, "--07", "--no-progress"]) == 0
    saved = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert saved["images"] == 5 and saved["voc"]["method"] == "11point" and "coco" not in saved
    capsys.readouterr()
    assert main(["eval", str(config), "--weights", str(tmp_path / "missing.pt")]) == 2
    assert "no such weights file" in capsys.readouterr().err
    assert main(["eval", str(config), "--weights", str(weights), "--set", "data.val.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
