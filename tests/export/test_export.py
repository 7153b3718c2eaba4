"""Export: ONNX (run in onnxruntime) and TorchScript give what PyTorch gives; torch.compile; the CLI.

The model is tiny (two conv levels, 1408 priors, 4 classes) with the default post-processing
(score > 0.01, top 400 per class, IoU 0.45, 200 per image). Its class convs are scaled and
background biased so that the amplitude of a random input sets how much it detects: the
test batch holds a picture with a few dozen detections, two that hit the 200 cap (one with
more than 400 candidates in a class, so the top-k binds) and a blank one with none.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest
import torch
import torchvision
import yaml
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import ssdkit
from ssdkit.boxes import float32_threshold
from ssdkit.cli import main as cli
from ssdkit.export import ExportableDetector, MissingExtraError, read_metadata, to_onnx, to_torchscript
from ssdkit.export.detector import greedy_nms
from ssdkit.io.weights import save_weights
from ssdkit.predict import predict
from ssdkit.preprocess import to_tensor

SIZE = 128
AMPLITUDES = (1.0, 3.0, 10.0, 0.0)  # a few detections, 200 (capped), 200 with top-k binding, none


@pytest.fixture(scope="module", autouse=True)
def backbone(two_level_backbone):
    return two_level_backbone


def make_model(**overrides) -> ssdkit.SSD:
    torch.manual_seed(0)
    fields = dict(
        num_classes=4,
        image_size=SIZE,
        backbone={"type": "two_level_test", "zero_bias": True},
        priors={"type": "ssd", "aspect_ratios": [[2], [2, 3]], "scales": [0.2, 0.5, 0.9]},
        loss=None,
    )
    model = ssdkit.build_model(ssdkit.SSDConfig(**{**fields, **overrides})).eval()
    with torch.no_grad():
        for conv in model.head.cls:
            conv.weight.mul_(2.0)
            conv.bias.view(-1, 4)[:, 0] = 6.0  # background wins unless the features say otherwise
    return model


@pytest.fixture(scope="module")
def model() -> ssdkit.SSD:
    return make_model()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.stack([torch.randn(3, SIZE, SIZE, generator=g) * a for a in AMPLITUDES])


@pytest.fixture(scope="module")
def expected(model, images):
    with torch.no_grad():
        loc, logits = model(images)
        dets = model.detect(loc, logits)
    counts = [len(d["scores"]) for d in dets]
    # The cases the module docstring promises, or the parity tests would prove less.
    assert 0 < counts[0] < 200 and counts[1] == counts[2] == 200 and counts[3] == 0, counts
    probs = torch.softmax(logits[2], -1)[:, 1:]
    assert int((probs > 0.01).sum(0).max()) > 400  # top-k binds in picture 2
    return loc, logits, dets


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
    """The four exports: the detectors and the ONNX network through the CLI, from a config file
    and a weights file; the TorchScript network through the Python API."""
    folder = tmp_path_factory.mktemp("export")
    model.config.to_file(folder / "model.yaml")
    save_weights(model, folder / "model.safetensors")
    common = [str(folder / "model.yaml"), "--weights", str(folder / "model.safetensors")]
    out = {
        "onnx_net": folder / "net.onnx",
        "onnx_det": folder / "det.onnx",
        "ts_net": folder / "net.pt",
        "ts_det": folder / "det.pt",
    }
    assert cli(["export", *common, "--format", "onnx", "-o", str(out["onnx_net"])]) == 0
    assert cli(["export", *common, "--format", "onnx", "--with-postprocess", "-o", str(out["onnx_det"])]) == 0
    assert cli(["export", *common, "--format", "torchscript", "--with-postprocess", "-o", str(out["ts_det"])]) == 0
    assert to_torchscript(model, out["ts_net"]) == out["ts_net"]
    return out


def ort_session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def load_torchscript(path):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch marks jit as deprecated; it works
        return torch.jit.load(str(path))


def assert_same_list(got: dict, det: dict, swap_below: float = 0.0, scale: float = SIZE) -> None:
    """One image's detections (boxes, scores, labels) against model.detect's: the same ones
    (labels equal, boxes x scale within 1e-3 px, scores within 1e-4) in the same order, except that
    detections whose expected scores differ by at most `swap_below` may trade places."""
    n = len(det["scores"])
    assert len(got["scores"]) == n
    same = (got["labels"][:, None] == det["labels"][None, :]) & (
        (got["boxes"][:, None] - det["boxes"][None, :]).abs().amax(dim=-1) * scale <= 1e-3
    )
    near = (det["scores"][:, None] - det["scores"][None, :]).abs() <= swap_below
    candidates = same & (near | torch.eye(n, dtype=torch.bool))  # [got position, expected position]
    used: set[int] = set()
    for i in range(n):
        j = next((int(j) for j in candidates[i].nonzero().flatten() if int(j) not in used), None)
        assert j is not None, f"detection {i} ({got['labels'][i]}, {got['boxes'][i].tolist()}) is not expected"
        used.add(j)
        assert abs(float(got["scores"][i]) - float(det["scores"][j])) <= 1e-4, i


def assert_same_detections(boxes, scores, labels, num, expected_dets, swap_below: float = 0.0) -> None:
    """Padded outputs against model.detect (see `assert_same_list`), zeros after the last."""
    boxes, scores, labels, num = (torch.as_tensor(np.asarray(t)) for t in (boxes, scores, labels, num))
    assert boxes.shape[1:] == (200, 4) and scores.shape[1:] == (200,) and labels.dtype == torch.int64
    assert num.tolist() == [len(d["scores"]) for d in expected_dets]
    for b, det in enumerate(expected_dets):
        n = int(num[b])
        assert_same_list({"boxes": boxes[b, :n], "scores": scores[b, :n], "labels": labels[b, :n]}, det, swap_below)
        assert not labels[b, n:].any() and not scores[b, n:].any() and not boxes[b, n:].any(), b


# ---------------------------------------------------------------- ONNX


def test_onnx_network_matches_pytorch(files, images, expected):
    loc, logits, _ = expected
    session = ort_session(files["onnx_net"])
    assert [o.name for o in session.get_outputs()] == ["loc", "logits"]
    for batch in (slice(0, 4), slice(1, 2)):  # the batch dimension is dynamic
        got_loc, got_logits = session.run(None, {"images": images[batch].numpy()})
        np.testing.assert_allclose(got_loc, loc[batch].numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(got_logits, logits[batch].numpy(), atol=1e-4, rtol=0)


def test_onnx_detector_matches_postprocess(files, images, expected):
    dets = expected[2]
    session = ort_session(files["onnx_det"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels", "num_detections"]
    # onnxruntime's softmax and convolutions round differently from torch's: two detections whose
    # scores differ by a few ulps (1.0 - 1.2e-7 against 1.0 - 2.4e-7 here) may come out swapped.
    assert_same_detections(*session.run(None, {"images": images.numpy()}), dets, swap_below=1e-6)
    for i in range(len(AMPLITUDES)):  # one picture at a time: batch 1, including the empty one
        got = session.run(None, {"images": images[i : i + 1].numpy()})
        assert_same_detections(*got, dets[i : i + 1], swap_below=1e-6)


# ---------------------------------------------------------------- TorchScript


def test_torchscript_network_matches_pytorch(files, images, expected):
    loc, logits, _ = expected
    net = load_torchscript(files["ts_net"])
    for batch in (slice(0, 4), slice(3, 4)):
        with torch.no_grad():
            got_loc, got_logits = net(images[batch])
        torch.testing.assert_close(got_loc, loc[batch], atol=1e-4, rtol=0)
        torch.testing.assert_close(got_logits, logits[batch], atol=1e-4, rtol=0)


def test_torchscript_detector_matches_postprocess(files, images, expected):
    dets = expected[2]
    detector = load_torchscript(files["ts_det"])
    with torch.no_grad():
        assert_same_detections(*detector(images), dets)
        assert_same_detections(*detector(images[1:3]), dets[1:3])
        assert_same_detections(*detector(images[3:]), dets[3:])


def test_torchscript_detector_runs_without_ssdkit(files, images, expected, tmp_path):
    """A fresh Python that imports torch only (no ssdkit, no torchvision) runs the file."""
    torch.save(images, tmp_path / "images.pt")
    code = (
        "import sys, torch\n"
        f"model = torch.jit.load({str(files['ts_det'])!r})\n"
        f"out = model(torch.load({str(tmp_path / 'images.pt')!r}))\n"
        f"torch.save(out, {str(tmp_path / 'out.pt')!r})\n"
        "assert not any(m.split('.')[0] in ('ssdkit', 'torchvision') for m in sys.modules), 'imported'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert_same_detections(*torch.load(tmp_path / "out.pt"), expected[2])


def test_exports_record_config_version_and_outputs(files, model):
    for name, path in files.items():
        meta = read_metadata(path)
        assert meta["ssdkit_version"] == ssdkit.__version__, name
        assert ssdkit.SSDConfig.model_validate(meta["config"]) == model.config, name
        assert ("num_detections" in meta["outputs"]) == name.endswith("_det"), name
        assert f"[B, 3, {SIZE}, {SIZE}]" in meta["input"], name


def test_read_metadata_refuses_other_files(tmp_path):
    (tmp_path / "notes.onnx").write_text("not a model")
    with pytest.raises(ValueError, match=r"notes\.onnx: neither a TorchScript archive nor a readable ONNX file"):
        read_metadata(tmp_path / "notes.onnx")
    with zipfile.ZipFile(tmp_path / "plain.pt", "w") as archive:  # how a TorchScript file is laid out
        archive.writestr("plain/data.pkl", b"")
        archive.writestr("plain/extra/other.json", b"{}")
    with pytest.raises(ValueError, match=r"plain\.pt: not an ssdkit export"):
        read_metadata(tmp_path / "plain.pt")


# ---------------------------------------------------------------- the pieces


@given(
    st.integers(1, 4),
    st.integers(1, 12),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0.3, 0.45, 0.5, 0.7]),
)
def test_greedy_nms_matches_torchvision(groups, k, seed, threshold):
    """Boxes on a coarse grid: many IoUs land exactly on 1/2, 1/3 ...; distinct scores, some <= 0."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.randint(0, 4, (groups, k, 2), generator=g).float() / 4
    wh = torch.randint(1, 4, (groups, k, 2), generator=g).float() / 4
    boxes = torch.cat((xy, xy + wh), -1)
    scores = torch.randperm(groups * k, generator=g).view(groups, k).float() / (groups * k) - 0.2
    scores = scores.sort(dim=1, descending=True).values
    keep = greedy_nms(boxes, scores, float32_threshold(threshold))
    for row in range(groups):
        valid = (scores[row] > 0).nonzero().squeeze(1)
        ref = valid[torchvision.ops.nms(boxes[row, valid].double(), scores[row, valid].double(), threshold)]
        assert keep[row].nonzero().squeeze(1).sort().values.tolist() == ref.sort().values.tolist()


def test_onnx_nms_matches_torchvision(tmp_path):
    """The custom op's ONNX form (NonMaxSuppression) against torchvision's nms, on grid boxes
    with exact-threshold IoUs, for several numbers of groups and boxes (both dynamic); with tied
    scores (which torchvision orders arbitrarily) against `greedy_nms`, which takes them in order."""

    class JustNMS(nn.Module):
        def forward(self, boxes, scores):
            return torch.ops.ssdkit.greedy_nms(boxes, scores, float32_threshold(0.5))

    g = torch.Generator().manual_seed(0)
    example = (torch.rand(3, 5, 4, generator=g).sort(-1).values, torch.rand(3, 5, generator=g))
    free = torch.export.Dim.DYNAMIC
    program = torch.onnx.export(
        JustNMS().eval(),
        example,
        dynamo=True,
        dynamic_shapes={"boxes": {0: free, 1: free}, "scores": {0: free, 1: free}},
        custom_translation_table={torch.ops.ssdkit.greedy_nms.default: ssdkit.export.onnx._nms_to_onnx},
    )
    program.save(str(tmp_path / "nms.onnx"))
    session = ort_session(tmp_path / "nms.onnx")
    exact_ties = 0
    for groups, k, levels in [(1, 1, 0), (2, 7, 0), (5, 30, 0), (3, 60, 0), (6, 80, 0), (4, 40, 5)]:
        xy = torch.randint(0, 8, (groups, k, 2), generator=g).float() / 8
        wh = torch.randint(1, 7, (groups, k, 2), generator=g).float() / 8
        boxes = torch.cat((xy, xy + wh), -1)
        scores = (torch.randperm(groups * k, generator=g).view(groups, k).float() + 1) / (groups * k) - 0.1
        if levels:  # many equal scores
            scores = (scores * levels).ceil() / levels
        scores = scores.sort(dim=1, descending=True).values
        got = torch.from_numpy(session.run(None, {"boxes": boxes.numpy(), "scores": scores.numpy()})[0])
        assert torch.equal(got, greedy_nms(boxes, scores, float32_threshold(0.5)))
        for row in range(groups if not levels else 0):
            valid = (scores[row] > 0).nonzero().squeeze(1)
            ref = valid[torchvision.ops.nms(boxes[row, valid], scores[row, valid], 0.5)]
            assert got[row].nonzero().squeeze(1).tolist() == ref.sort().values.tolist()
            exact_ties += int((torchvision.ops.box_iou(boxes[row, valid], boxes[row, valid]) == 0.5).sum())
    assert exact_ties > 0  # the threshold itself was exercised


def test_detector_drops_nan_and_inf_like_postprocess(model, expected):
    """Priors with NaN or infinite logits or offsets: no NaN in the padded outputs, and the
    same detections as model.detect (which also warns about them)."""
    loc, logits, _ = expected
    loc, logits = loc[:3].clone(), logits[:3].clone()
    g = torch.Generator().manual_seed(2)
    bad = torch.randperm(logits.shape[1], generator=g)[:300].view(3, 100)
    logits[:, bad[0], 1] = float("nan")
    logits[:, bad[1], 2] = float("inf")
    loc[:, bad[2], 0] = float("nan")
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        dets = model.detect(loc, logits)
    out = ExportableDetector(model).detect(loc, logits)
    assert all(bool(torch.isfinite(t).all()) for t in out[:2])
    assert_same_detections(*out, dets)


def test_detector_scores_with_sigmoid_when_the_model_does(images):
    """A head trained with sigmoid focal loss is scored with sigmoids, by the detector as by the model."""
    model = make_model(loss={"type": "focal", "mode": "sigmoid"})
    assert model.score_activation == "sigmoid"
    with torch.no_grad():
        loc, logits = model(images)
        logits[..., 1:] -= 3.0  # sigmoid(x) passes 0.01 far more often than softmax did
        dets = model.detect(loc, logits)
        assert 0 < sum(len(d["scores"]) for d in dets)
        assert_same_detections(*ExportableDetector(model).detect(loc, logits), dets)


def test_only_hard_nms_exports_with_postprocess():
    soft = make_model(postprocess={"type": "soft"})
    with pytest.raises(ValueError, match="'hard' NMS only; this model's postprocess is 'soft'"):
        ExportableDetector(soft)


def test_missing_export_extra_names_it(model, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now fails
    with pytest.raises(MissingExtraError, match=r"onnx.*pip install 'ssdkit\[export\]'"):
        to_onnx(model, tmp_path / "m.onnx")
    save_weights(model, tmp_path / "m.safetensors")
    model.config.to_file(tmp_path / "m.yaml")
    code = cli(["export", str(tmp_path / "m.yaml"), "--weights", str(tmp_path / "m.safetensors"), "--format", "onnx"])
    assert code != 0 and "pip install 'ssdkit[export]'" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_cli_reports_bad_config_and_weights(model, tmp_path, capsys):
    save_weights(model, tmp_path / "m.safetensors")
    data = model.config.model_dump(mode="json")
    data["num_classes"] = 6
    (tmp_path / "six.yaml").write_text(yaml.safe_dump(data))
    args = ["--weights", str(tmp_path / "m.safetensors"), "--format", "torchscript"]
    assert cli(["export", str(tmp_path / "six.yaml"), *args]) == 2
    err = capsys.readouterr().err
    assert "head.cls.0.weight" in err and "(16, 8, 3, 3)" in err and "(24, 8, 3, 3)" in err, err
    assert cli(["export", "ssd300_vgg61", *args]) == 2
    assert "unknown preset 'ssd300_vgg61'" in capsys.readouterr().err
    data["num_classes"] = "four"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    assert cli(["export", str(tmp_path / "bad.yaml"), *args]) == 2
    assert "num_classes" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.pt"))


# ---------------------------------------------------------------- torch.compile


def test_torch_compile_for_inference(model, images, expected):
    """torch.compile (inductor, CPU) of the tiny model gives the same raw outputs, and `predict`
    runs the compiled model. Slow: compiling takes ~20-35 s on a 2-core machine (once: every call
    here has the same shapes and grad mode)."""
    loc, logits, _ = expected
    compiled = torch.compile(model)
    with torch.inference_mode():
        got_loc, got_logits = compiled(images)
    torch.testing.assert_close(got_loc, loc, atol=1e-4, rtol=0)
    torch.testing.assert_close(got_logits, logits, atol=1e-4, rtol=0)
    # Detections can differ from eager ones where a score or IoU lies within rounding of a threshold
    # (inductor sums in another order), so predict is checked against the compiled outputs themselves.
    g = torch.Generator().manual_seed(3)
    pictures = [(torch.rand(3, 90, 120, generator=g) * 25 * a).to(torch.uint8) for a in (10, 7, 5, 0)]
    results = predict(compiled, pictures)
    batch = torch.stack([model.preprocessor(to_tensor(p)) for p in pictures])
    with torch.inference_mode():
        dets = model.detect(*compiled(batch))
    assert sum(len(d["scores"]) for d in dets) > 0
    for got, det in zip(results, dets, strict=True):
        assert torch.equal(got["labels"], det["labels"]) and torch.equal(got["scores"], det["scores"])
        torch.testing.assert_close(got["boxes"], det["boxes"] * torch.tensor([120, 90, 120, 90]), atol=1e-3, rtol=0)
