"""From labelled pictures (COCO format) to a fine-tuned, evaluated, exported model that predicts:
the shipped `finetune_coco_ssdlite` run config from the (fake, cached) COCO SSDLite weights, then
`ssdkit eval / export / predict RUN_DIR` and `ssdkit.load` from each kind of path."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image, ImageDraw

import ssdkit
from ssdkit.cli import main
from ssdkit.io.weights import save_weights

CATEGORIES = [{"id": 1, "name": "box"}, {"id": 3, "name": "disc"}]  # ids need not be contiguous


def _coco_folder(root):
    """Four pictures with a box and a disc each, and their COCO instances file."""
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(4):
        w, h = 160 + 40 * i, 120 + 20 * i
        picture = Image.new("RGB", (w, h), (90, 120, 90))
        d = ImageDraw.Draw(picture)
        d.rectangle([10, 10, 60, 70], fill=(220, 40, 40))
        d.ellipse([w - 70, h - 60, w - 10, h - 5], fill=(40, 40, 220))
        picture.save(root / "images" / f"p{i}.png")
        images.append({"id": i + 1, "file_name": f"p{i}.png", "width": w, "height": h})
        for k, (box, cat) in enumerate((([10, 10, 50, 60], 1), ([w - 70, h - 60, 60, 55], 3))):
            annotations.append({"id": 2 * i + k + 1, "image_id": i + 1, "category_id": cat, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})  # fmt: skip
    (root / "train.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES})
    )
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, fake_hub):
    data = _coco_folder(tmp_path_factory.mktemp("labelled"))
    out = tmp_path_factory.mktemp("runs") / "mine"
    fake_hub.add("ssdlite320_mobilenet_v3_coco")
    sets = {
        "model.num_classes": 3,
        "data.train.images_dir": data / "images",
        "data.train.annotations": data / "train.json",
        "data.val.images_dir": data / "images",
        "data.val.annotations": data / "train.json",
        "data.batch_size": 2,
        "data.num_workers": 0,
        "train.max_steps": 2,
        "train.warmup_steps": 0,
        "eval.every_steps": 2,
    }
    args = ["train", "finetune_coco_ssdlite", "--out", str(out), "--no-progress"]
    args += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(fake_hub.root))
        mp.setenv("SSDKIT_OFFLINE", "1")
        with pytest.warns(UserWarning, match="classification-head tensors re-initialised"):
            assert main(args) == 0
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    return out, data


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_from_each_kind_of_path(run_dir, tmp_path):
    out, _ = run_dir
    model = ssdkit.load(out)
    assert not model.training and model.class_names == ["box", "disc"]
    from ssdkit.engine.checkpoint import load_checkpoint

    best = load_checkpoint(out / "best.pt")["state_dict"]
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())
    assert _same_weights(model, ssdkit.load(out / "best.pt"))
    assert _same_weights(model, ssdkit.load(out / "config.yaml"))  # a run folder's config: its checkpoint
    assert _same_weights(ssdkit.load(out / "last.pt"), ssdkit.load(out, which="last"))
    save_weights(model, tmp_path / "mine.safetensors")
    assert _same_weights(model, ssdkit.load(tmp_path / "mine.safetensors"))
    # a run config builds through create_model and build_model alike
    assert ssdkit.create_model(out / "config.yaml").num_classes == 3
    # only a run folder's own config.yaml brings the folder's checkpoint: another config file lying in a
    # run folder is a config alone (an untrained model), never silently that run's weights
    other = out / "my_model.yaml"
    other.write_text((out / "config.yaml").read_text())
    try:
        from ssdkit.io.sources import resolve

        assert resolve(out / "config.yaml").weights is not None and resolve(other).weights is None
    finally:
        other.unlink()


def test_init_from_another_run(run_dir):
    """A run config's `init.weights` may name another run's folder: its best checkpoint, all of it."""
    from ssdkit.config.run import RunConfig
    from ssdkit.io.sources import init_from

    out, _ = run_dir
    cfg = RunConfig.from_file(out / "config.yaml", ["init.weights=" + str(out)])
    model = ssdkit.build_model(cfg.model)
    assert init_from(model, cfg.init.weights) == []
    assert _same_weights(model, ssdkit.load(out))
    with pytest.raises(ValueError, match="URL"):
        RunConfig.from_file(out / "config.yaml", ["init.weights=https://example.com/x.pth"])


def test_wrong_kinds_of_file_say_what_they_are(run_dir, tmp_path):
    out, data = run_dir
    with pytest.raises(ValueError, match=r"p0\.png: a PNG picture, not a checkpoint or weights file"):
        ssdkit.load(data / "images" / "p0.png")
    torch.save(ssdkit.load(out).state_dict(), tmp_path / "bare.pth")
    with pytest.raises(ValueError, match="does not record its model config"):
        ssdkit.load(tmp_path / "bare.pth")
    with pytest.raises(ValueError, match="not a text file"):
        ssdkit.build_model(str(out / "last.pt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        ssdkit.load(tmp_path / "empty")
    with pytest.raises(ValueError, match="not a model config"):
        ssdkit.load(data / "train.json")  # COCO annotations
    ssdkit.presets.get("ssdlite320_mobilenet_v3").to_file(tmp_path / "model.yaml")
    with pytest.raises(ValueError, match="config without weights"):
        ssdkit.load(tmp_path / "model.yaml")


def test_eval_export_predict_take_the_run_folder(run_dir, tmp_path, capsys):
    out, data = run_dir
    assert main(["eval", str(out), "--no-progress", "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())

    assert main(["export", str(out), "--format", "torchscript", "-o", str(tmp_path / "m.ts")]) == 0
    assert (tmp_path / "m.ts").stat().st_size > 1000

    pictures = [data / "images" / "p0.png", data / "images" / "p3.png"]
    drawn = tmp_path / "drawn"
    args = ["predict", str(out), *map(str, pictures), "--out", str(drawn), "--score-threshold", "0"]
    assert main(args) == 0
    report = json.loads((drawn / "detections.json").read_text())
    assert [e["picture"] for e in report["pictures"]] == list(map(str, pictures))
    batch = ssdkit.load(out).predict(list(map(str, pictures)))  # as the command batches them
    for entry, path, expected in zip(report["pictures"], pictures, batch, strict=True):
        with Image.open(drawn / entry["drawn"]) as im, Image.open(path) as original:
            assert im.size == original.size
        assert len(entry["detections"]) == len(expected["scores"]) > 0
        first = entry["detections"][0]
        assert first["name"] == expected["names"][0] and first["name"] in ("box", "disc")
        assert first["box"] == pytest.approx(expected["boxes"][0].tolist(), abs=0.01)


def test_predict_reports_bad_input(run_dir, tmp_path, capsys):
    out, data = run_dir
    assert main(["predict", str(out), str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "o")]) == 2
    assert "no such picture" in capsys.readouterr().err
    assert main(["predict", "ssd300_vgg61", str(data / "images"), "--out", str(tmp_path / "o")]) == 2
    assert "unknown preset 'ssd300_vgg61'" in capsys.readouterr().err
