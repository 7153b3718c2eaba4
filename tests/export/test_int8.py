"""int8: `ssdkit export --int8 --calibrate` writes a QDQ file that onnxruntime runs through
`ssdkit.runtime`, with per-channel int8 weights in the network and a float32 post-processing.

Every shipped backbone is quantised here: tiny through the CLI, VGG16, MobileNetV3, ResNet-50 and the
TF OD API's MobileNetV2 through `quantize_onnx` (about 50 s together on a quiet 2-core machine). The
accuracy cost on a trained model is measured by
benchmarks/int8_accuracy.py (docs/benchmarks.md), not here: these weights are random.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from PIL import Image

import ssdkit
import ssdkit.runtime
from ssdkit.cli import main as cli
from ssdkit.export import calibration_batches, quantize_onnx, to_onnx
from ssdkit.io.weights import save_weights


def tiny_model() -> ssdkit.SSD:
    torch.manual_seed(0)
    cfg = ssdkit.SSDConfig(
        num_classes=3,
        image_size=64,
        backbone={"type": "tiny", "channels": [8, 16, 16, 16], "levels": 2},
        priors={"type": "ssd", "aspect_ratios": [[2], [2]], "s_min": 0.3, "s_max": 0.8},
        loss=None,
    )
    return ssdkit.build_model(cfg).eval()


def folder_of_pictures(path, count: int = 4):
    rng = np.random.default_rng(0)
    path.mkdir()
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, size=(48 + 8 * i, 80, 3), dtype=np.uint8)).save(path / f"{i}.png")
    return path


def check_quantised(path, model) -> None:
    """Per-channel int8 conv weights; no quantisation after the network; ssdkit's metadata kept."""
    proto = onnx.load(str(path))
    nodes = list(proto.graph.node)
    producer = {out: node for node in nodes for out in node.output}
    inits = {t.name: t for t in proto.graph.initializer}
    convs = [n for n in nodes if n.op_type == "Conv"]
    assert convs
    for conv in convs:
        dq = producer[conv.input[1]]  # the weight comes dequantised from int8, one scale per output channel
        assert dq.op_type == "DequantizeLinear", conv.name
        weight = numpy_helper.to_array(inits[dq.input[0]])
        scale = numpy_helper.to_array(inits[dq.input[1]])
        assert weight.dtype == np.int8 and scale.shape == (weight.shape[0],), conv.name
        assert producer[conv.input[0]].op_type == "DequantizeLinear", conv.name  # int8 activations in
    for node in nodes:
        if node.op_type in ("Softmax", "Sigmoid", "NonMaxSuppression", "TopK"):  # post-processing: float32
            assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in node.input)
    props = {p.key: p.value for p in proto.metadata_props}
    assert "int8" in props["ssdkit_quantisation"] and props["ssdkit_version"] == ssdkit.__version__
    assert ssdkit.runtime.load(path).image_size == model.image_size


def test_cli_int8_export_runs_in_the_runtime(tmp_path):
    model = tiny_model()
    model.config.to_file(tmp_path / "model.yaml")
    save_weights(model, tmp_path / "model.safetensors")
    pictures = folder_of_pictures(tmp_path / "calib")
    out = tmp_path / "det.int8.onnx"
    common = [str(tmp_path / "model.yaml"), "--weights", str(tmp_path / "model.safetensors"), "--format", "onnx"]
    assert cli(["export", *common, "--with-postprocess", "--int8", "--calibrate", str(pictures), "-o", str(out)]) == 0
    check_quantised(out, model)
    picture = np.array(Image.open(pictures / "2.png"))
    got = ssdkit.runtime.load(out).predict(picture)
    want = model.predict(picture)
    assert got["boxes"].shape[1:] == (4,) and got["labels"].dtype == np.int64
    # Random weights spread the scores thinly; int8 keeps them within a few hundredths of fp32's.
    assert abs(float(got["scores"].max(initial=0)) - float(want["scores"].max())) < 0.05


def test_int8_needs_calibration_pictures(tmp_path, capsys):
    model = tiny_model()
    model.config.to_file(tmp_path / "model.yaml")
    save_weights(model, tmp_path / "model.safetensors")
    args = ["export", str(tmp_path / "model.yaml"), "--weights", str(tmp_path / "model.safetensors"), "--int8"]
    assert cli([*args, "--format", "onnx"]) == 2
    assert "--calibrate" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no pictures"):
        next(calibration_batches(model, tmp_path / "empty"))


def test_calibration_from_a_run_config_uses_its_training_pictures():
    from ssdkit.config import RunConfig, config_path
    from ssdkit.data.build import build_dataset
    from ssdkit.preprocess import to_tensor

    run = RunConfig.from_file(config_path("demo"))
    model = ssdkit.build_model(run.model)
    batches = list(calibration_batches(model, "demo", count=5, batch_size=2))
    assert [b.shape for b in batches] == [(2, 3, 128, 128), (2, 3, 128, 128), (1, 3, 128, 128)]
    train = build_dataset(run.data.train)
    np.testing.assert_array_equal(batches[2][0], model.preprocessor(to_tensor(train[4][0])).numpy())


@pytest.mark.parametrize(
    "preset", ["ssd300_vgg16", "ssdlite320_mobilenet_v3", "ssd300_resnet50", "ssdlite300_mobilenet_v2_tf"]
)
def test_int8_on_torchvision_backbones(preset, tmp_path):
    model = ssdkit.build_model(ssdkit.presets.get(preset, num_classes=3)).eval()
    fp32 = to_onnx(model, tmp_path / "fp32.onnx", with_postprocess=True)
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", calibration_batches(model, folder_of_pictures(tmp_path / "c")))
    check_quantised(int8, model)
    det = ssdkit.runtime.load(int8).predict(np.zeros((120, 160, 3), np.uint8))
    assert det["boxes"].shape[1:] == (4,)
