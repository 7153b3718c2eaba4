"""ssdkit.runtime: an exported detector in onnxruntime gives `model.predict`'s detections, from numpy,
pillow and onnxruntime alone (no torch).

Agreement asked for: the same number of detections per picture, the same labels, boxes within 0.05 px
of the picture (pictures up to 640 px) and scores within 1e-4. The numpy preprocessing equals
`Preprocessor`'s to 1e-5 (torch's bilinear kernel groups its float32 products slightly differently);
onnxruntime's convolutions round differently from PyTorch's by ~1e-6, which is what is left.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import ssdkit
import ssdkit.runtime
from ssdkit.export import to_onnx
from ssdkit.preprocess import Preprocessor, to_tensor
from ssdkit.runtime.preprocess import ArrayPreprocessor, resize_bilinear

SIZE = 96
# ssdkit's other dependencies: the runtime needs none of them (numpy, pillow and onnxruntime only).
BLOCKED = ("torch", "torchvision", "pydantic", "yaml", "safetensors", "tqdm", "matplotlib", "pycocotools")


@pytest.fixture(scope="module")
def model(two_level_backbone) -> ssdkit.SSD:
    torch.manual_seed(0)
    cfg = ssdkit.SSDConfig(
        num_classes=4,
        class_names=["circle", "square", "triangle"],
        image_size=SIZE,
        backbone={"type": "two_level_test"},
        priors={"type": "ssd", "aspect_ratios": [[2], [2, 3]], "scales": [0.2, 0.5, 0.9]},
        preprocess={"channel_order": "BGR", "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]},
        loss=None,
    )
    model = ssdkit.build_model(cfg).eval()
    with torch.no_grad():
        for conv in model.head.cls:
            conv.weight.mul_(2.0)
            conv.bias.view(-1, 4)[:, 0] = 3.0  # a few dozen confident detections on a noisy picture
    return model


@pytest.fixture(scope="module")
def detector_file(model, tmp_path_factory):
    return to_onnx(model, tmp_path_factory.mktemp("runtime") / "det.onnx", with_postprocess=True)


def pictures() -> list:
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    smooth = np.kron(rng.integers(0, 256, size=(12, 9, 3)), np.ones((10, 10, 1))).astype(np.uint8)
    return [
        Image.fromarray(noisy),  # downscaled
        smooth,  # 120 x 90 numpy, upscaled in x, downscaled in y
        rng.random((50, 70, 3)),  # float 0..1, upscaled
        Image.fromarray(noisy[:200, :300, 0]),  # greyscale
    ]


def assert_same(got: dict, want: dict) -> None:
    n = len(want["scores"])
    assert len(got["scores"]) == n and got["names"] == want["names"]
    assert got["labels"].tolist() == want["labels"].tolist()
    np.testing.assert_allclose(got["boxes"], want["boxes"].numpy(), atol=0.05, rtol=0)
    np.testing.assert_allclose(got["scores"], want["scores"].numpy(), atol=1e-4, rtol=0)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 40), w=st.integers(1, 40), out_h=st.integers(1, 40), out_w=st.integers(1, 40), seed=st.integers(0, 9)
)
def test_numpy_resize_equals_torch_bilinear(h, w, out_h, out_w, seed):
    x = np.random.default_rng(seed).normal(size=(3, h, w)).astype(np.float32) * 3
    want = F.interpolate(torch.from_numpy(x)[None], size=(out_h, out_w), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(resize_bilinear(x, (out_h, out_w)), want.numpy(), atol=1e-5, rtol=0)


def test_array_preprocessor_equals_preprocessor(model):
    described = ArrayPreprocessor(model.preprocessor.describe())
    for picture in pictures():
        pixels = to_tensor(picture)
        want = model.preprocessor(pixels)
        got = described(ssdkit.runtime.to_array(picture))
        assert got.dtype == np.float32 and got.shape == (3, SIZE, SIZE)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=0)
        pixels = ssdkit.runtime.to_array(picture)
        if pixels.dtype == np.uint8:  # the 8-bit table gives what the arithmetic gives, bit for bit
            assert np.array_equal(described(pixels), described(pixels.astype(np.float32)))
    rgb = Preprocessor((SIZE, SIZE), mean=[0.5] * 3, std=[0.5] * 3)  # RGB differs from the BGR model
    x = to_tensor(pictures()[0])
    assert not np.allclose(described(x.numpy()), rgb(x).numpy(), atol=1e-3)


def test_runtime_detections_equal_predict(model, detector_file):
    want = model.predict(pictures(), batch_size=3)
    assert [len(d["scores"]) for d in want][0] > 5  # the comparison has detections to compare
    detector = ssdkit.runtime.load(detector_file, threads=1)
    assert detector.image_size == (SIZE, SIZE)
    got = detector.predict(pictures(), batch_size=3)
    for g, w in zip(got, want, strict=True):
        assert_same(g, w)
    single = detector.predict(pictures()[1])  # one picture in, one dict out
    assert_same(single, want[1])


def test_runtime_needs_no_torch(model, detector_file, tmp_path):
    """A fresh Python in which importing torch (or any other ssdkit dependency but numpy, pillow and
    onnxruntime) fails runs the file from a picture on disk."""
    Image.fromarray(np.asarray(pictures()[0])).save(tmp_path / "p.png")
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        f"        if name.split('.')[0] in {BLOCKED!r}:\n"
        "            raise ModuleNotFoundError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import numpy as np, ssdkit.runtime\n"
        f"det = ssdkit.runtime.load({str(detector_file)!r}).predict({str(tmp_path / 'p.png')!r})\n"
        f"np.savez({str(tmp_path / 'out.npz')!r}, boxes=det['boxes'], scores=det['scores'], labels=det['labels'])\n"
        "print(','.join(det['names']))\n"
        f"assert not any(m.split('.')[0] in {BLOCKED!r} for m in sys.modules), 'imported a blocked module'\n"
        "try:\n"
        "    ssdkit.build_model\n"
        "except ImportError as exc:\n"
        "    assert 'needs torch' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('ssdkit.build_model without torch')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = np.load(tmp_path / "out.npz")
    names = run.stdout.strip().split(",") if run.stdout.strip() else []
    assert_same({**{k: out[k] for k in out.files}, "names": names}, model.predict(tmp_path / "p.png"))


def test_network_only_export_is_refused_with_the_remedy(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    # The outputs of a network-alone export, with an ssdkit stamp: cheap to write, no export needed.
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["loc"]), helper.make_node("Identity", ["images"], ["logits"])],
        "net",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("loc", "logits")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    helper.set_model_props(proto, {"ssdkit_version": ssdkit.__version__})
    onnx.save(proto, tmp_path / "net.onnx")
    with pytest.raises(ValueError, match="--with-postprocess"):
        ssdkit.runtime.load(tmp_path / "net.onnx")
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        ssdkit.runtime.load(tmp_path / "missing.onnx")
    with pytest.raises(TypeError, match="PIL image"):
        ssdkit.runtime.to_array(torch.zeros(3, 4, 4))


def test_runtime_follows_the_picture_contract(model, detector_file, tmp_path):
    """The same contract as predict (ssdkit.io.pictures): a 16-bit array and a JPEG stored sideways with
    an EXIF orientation tag give predict's detections, in the pixels a viewer shows."""
    smooth = pictures()[1]
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(smooth)))  # stored turned; tag 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    detector = ssdkit.runtime.load(detector_file, threads=1)
    wide = smooth.astype(np.uint16) * 257
    for picture in (wide, tmp_path / "phone.jpg"):
        got, want = detector.predict(picture), model.predict(picture)
        assert len(want["scores"]) > 0
        assert_same(got, want)
    upright = detector.predict(tmp_path / "phone.jpg")
    assert upright["boxes"][:, [0, 2]].max() <= smooth.shape[1] + 1e-3  # x within the displayed width
    with pytest.raises(ValueError, match="divide by 255"):
        detector.predict(smooth.astype(np.float32))


def test_runtime_refuses_a_resize_it_does_not_compute():
    description = {"image_size": [8, 8], "channel_order": "RGB", "scale": 1 / 255, "mean": [0] * 3, "std": [1] * 3}
    for mode in ("bilinear", "bilinear_asymmetric", "bilinear_align_corners"):
        ArrayPreprocessor({**description, "resize": mode})
    with pytest.raises(ValueError, match="'nearest'.*PyTorch"):
        ArrayPreprocessor({**description, "resize": "nearest"})


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 30),
    w=st.integers(1, 30),
    out_h=st.integers(1, 30),
    out_w=st.integers(1, 30),
    mode=st.sampled_from(["bilinear", "bilinear_asymmetric", "bilinear_align_corners"]),
    seed=st.integers(0, 9),
)
def test_numpy_resize_equals_ssdkits_on_every_pixel_grid(h, w, out_h, out_w, mode, seed):
    """The runtime's resize against ssdkit.resize (torch's interpolate, and TF1's asymmetric kernel)."""
    from ssdkit.resize import resize_bilinear as torch_resize

    x = np.random.default_rng(seed).random((3, h, w), dtype=np.float32) * 255
    want = torch_resize(torch.from_numpy(x), (out_h, out_w), mode).numpy()
    np.testing.assert_allclose(resize_bilinear(x, (out_h, out_w), mode), want, atol=1e-3, rtol=0)


@pytest.mark.parametrize("mode", ["bilinear_asymmetric", "bilinear_align_corners"])
def test_runtime_detections_equal_predict_on_other_pixel_grids(two_level_backbone, mode, tmp_path):
    """A model whose preprocessing uses TF1's grid (as TF OD API conversions do) or corners on corners:
    the runtime computes the same input, so the same detections."""
    torch.manual_seed(0)
    cfg = ssdkit.SSDConfig(
        num_classes=4,
        image_size=SIZE,
        backbone={"type": "two_level_test"},
        priors={"type": "ssd", "aspect_ratios": [[2], [2, 3]], "scales": [0.2, 0.5, 0.9]},
        preprocess={"resize": mode},
        loss=None,
    )
    model = ssdkit.build_model(cfg).eval()
    with torch.no_grad():
        for conv in model.head.cls:
            conv.weight.mul_(2.0)
            conv.bias.view(-1, 4)[:, 0] = 3.0
    detector = ssdkit.runtime.load(to_onnx(model, tmp_path / "det.onnx", with_postprocess=True), threads=1)
    for picture in pictures()[:2]:
        want = model.predict(picture)
        assert len(want["scores"]) > 0
        assert_same(detector.predict(picture), want)


def test_predict_command_with_the_onnxruntime_runtime(model, detector_file, tmp_path):
    import json

    from ssdkit.cli import main

    Image.fromarray(pictures()[1]).save(tmp_path / "a.png")
    out = tmp_path / "out"
    argv = ["predict", str(detector_file), str(tmp_path / "a.png"), "--out", str(out)]
    assert main([*argv, "--runtime", "onnxruntime", "--score-threshold", "0.5"]) == 0
    report = json.loads((out / "detections.json").read_text())
    want = model.predict(tmp_path / "a.png")
    keep = want["scores"] >= 0.5
    got = report["pictures"][0]["detections"]
    assert len(got) == int(keep.sum()) > 0
    assert [d["name"] for d in got] == [n for n, k in zip(want["names"], keep.tolist(), strict=True) if k]
    np.testing.assert_allclose([d["box"] for d in got], want["boxes"][keep].numpy(), atol=0.01)
    assert (out / "a.png").is_file()
    assert main([*argv, "--runtime", "onnxruntime", "--weights", "w.pt"]) == 2  # the file holds its weights


def test_runtime_takes_batches_and_checks_batch_size_as_predict_does(model, detector_file):
    detector = ssdkit.runtime.load(detector_file, threads=1)
    smooth = pictures()[1]
    batch = np.stack([smooth, smooth[::-1]])  # an NHWC batch: one dict per picture
    got, want = detector.predict(batch), model.predict(batch)
    assert len(got) == len(want) == 2
    for g, w in zip(got, want, strict=True):
        assert_same(g, w)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch_size must be a whole number"):
            detector.predict([smooth], batch_size=bad)
        with pytest.raises(ValueError, match="batch_size must be a whole number"):
            model.predict([smooth], batch_size=bad)
