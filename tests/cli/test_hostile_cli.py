"""Command-line arguments checked with a message, never a traceback or a silently ignored value:
devices, output folders and files, --opset, evaluation on unreadable pictures; TorchScript refuses
a wrong input size as eager and ONNX do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ssdkit
from ssdkit.cli import main
from ssdkit.devices import check_device_name, resolve_device
from ssdkit.io.weights import save_weights

RUN = """
model:
  num_classes: 3
  image_size: 64
  class_names: [circle, square]
  backbone: {type: tiny, channels: [8, 16, 32, 48, 48], levels: 3}
  priors: {type: ssd, aspect_ratios: [[2], [2], [2]], s_min: 0.2, s_max: 0.8}
data:
  train: {type: shapes, num_images: 8, image_size: 64, classes: [circle, square]}
  val: {type: shapes, num_images: 4, seed: 1, image_size: 64, classes: [circle, square]}
  batch_size: 4
  num_workers: 0
train: {max_steps: 2, progress: false, device: cpu}
eval: {enabled: false}
"""


@pytest.fixture
def run_files(tmp_path) -> tuple[Path, Path]:
    config = tmp_path / "run.yaml"
    config.write_text(RUN)
    cfg = ssdkit.config.RunConfig.from_file(config)
    weights = save_weights(ssdkit.build_model(cfg.model), tmp_path / "w.safetensors")
    return config, weights


@pytest.mark.parametrize("device", ["potato", "meta", "cuda:x", "xla", "cpu:0:1"])
def test_train_refuses_a_device_it_cannot_run_on(run_files, capsys, device):
    config, _ = run_files
    assert main(["train", str(config), "--set", f"train.device={device}"]) == 2
    err = capsys.readouterr().err
    assert f"device {device!r} is not one ssdkit runs on" in err and "'auto'" in err and "Traceback" not in err


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_train_on_mps_without_one_says_so(run_files, tmp_path, capsys):
    config, _ = run_files
    assert main(["train", str(config), "--set", "train.device=mps", "--out", str(tmp_path / "r")]) == 2
    assert "no Apple MPS device is available" in capsys.readouterr().err


def test_device_names():
    assert [check_device_name(n) for n in ("auto", "cpu", "cuda", "cuda:3", "mps")] == [
        "auto",
        "cpu",
        "cuda",
        "cuda:3",
        "mps",
    ]
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is available"):
            resolve_device("cuda:0")


@pytest.mark.parametrize("target", ["/dev/null", "a_file"])
def test_train_out_that_is_no_folder(run_files, tmp_path, capsys, target):
    config, _ = run_files
    out = Path(target) if target.startswith("/") else tmp_path / target
    if not target.startswith("/"):
        out.write_text("not a folder")
    assert main(["train", str(config), "--out", str(out)]) == 2
    assert f"run folder (--out / train.out_dir) {out}: exists and is not a folder" in capsys.readouterr().err


def test_eval_device_and_out_are_checked(run_files, tmp_path, capsys):
    config, weights = run_files
    assert main(["eval", str(config), "--weights", str(weights), "--device", "potato"]) == 2
    assert "device 'potato' is not one ssdkit runs on" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["eval", str(config), "--weights", str(weights), "--out", str(tmp_path / "file"), "--no-progress"]) == 2
    assert "--out" in capsys.readouterr().err


def test_eval_on_an_unreadable_picture_says_what_to_do(run_files, tmp_path, capsys):
    config, weights = run_files
    root = tmp_path / "voc"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        path = root / "JPEGImages" / f"{i}.jpg"
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
        (root / "Annotations" / f"{i}.xml").write_text(
            "<annotation><object><name>circle</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>30</xmax>"
            "<ymax>30</ymax></bndbox></object></annotation>"
        )
    (root / "JPEGImages" / "1.jpg").write_bytes((root / "JPEGImages" / "1.jpg").read_bytes()[:100])
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("0\n1\n")
    data = f"--set=data.val={{type: voc, root: '{root}', class_names: [circle, square]}}"
    args = ["eval", str(config), "--weights", str(weights), data, "--out", str(tmp_path / "e"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1.jpg" in err and "data.on_bad_item=skip" in err and "Traceback" not in err
    with pytest.warns(ssdkit.data.BadItemWarning):
        assert main([*args, "--set", "data.on_bad_item=skip"]) == 0
    assert "(1 unreadable, skipped)" in capsys.readouterr().out


@pytest.mark.parametrize("opset", ["11", "17", "999"])
def test_export_refuses_an_opset_it_cannot_write(run_files, tmp_path, capsys, opset):
    pytest.importorskip("onnx")
    config, weights = run_files
    model_cfg = tmp_path / "m.yaml"
    ssdkit.config.RunConfig.from_file(config).model.to_file(model_cfg)
    out = tmp_path / "m.onnx"
    code = main(
        ["export", str(model_cfg), "--weights", str(weights), "--format", "onnx", "--opset", opset, "-o", str(out)]
    )
    assert code == 2 and not out.exists()
    assert f"opset {opset} cannot be written" in capsys.readouterr().err


def test_export_output_that_is_a_folder_or_opset_for_torchscript(run_files, tmp_path, capsys):
    config, weights = run_files
    model_cfg = tmp_path / "m.yaml"
    ssdkit.config.RunConfig.from_file(config).model.to_file(model_cfg)
    common = ["export", str(model_cfg), "--weights", str(weights)]
    assert main([*common, "--format", "torchscript", "-o", str(tmp_path)]) == 2
    assert "is a folder; give a file name" in capsys.readouterr().err
    assert main([*common, "--format", "torchscript", "--opset", "18", "-o", str(tmp_path / "m.pt")]) == 2
    assert "--opset is for --format onnx" in capsys.readouterr().err


@pytest.mark.parametrize("with_postprocess", [False, True])
def test_torchscript_refuses_a_wrong_input_size_as_eager_does(run_files, tmp_path, with_postprocess):
    from ssdkit.export import to_torchscript

    config, _ = run_files
    model = ssdkit.build_model(ssdkit.config.RunConfig.from_file(config).model).eval()
    path = to_torchscript(model, tmp_path / "m.pt", with_postprocess=with_postprocess)
    loaded = torch.jit.load(str(path))
    x = torch.rand(2, 3, 64, 64)
    if not with_postprocess:
        for a, b in zip(loaded(x), model(x), strict=True):
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="built for"):
        model(torch.rand(1, 3, 96, 96))
    with pytest.raises(
        torch.jit.Error, match=r"input is \[1, 3, 96, 96\] but this model was built for \[batch, 3, 64, 64\]"
    ):
        loaded(torch.rand(1, 3, 96, 96))
