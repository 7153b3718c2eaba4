"""The parts TF OD API SSDs need, each against a peer where one exists (onnxruntime's SAME_UPPER padding
and asymmetric / align-corners Resize), plus the GraphDef reader on hostile input. The whole converted
model is checked against TensorFlow in test_tf_object_detection.py."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from ssdkit.backbones.extras import Conv2dSame
from ssdkit.box_coders.ssd import SSDBoxCoder, SSDBoxCoderConfig
from ssdkit.io.tfod import graphdef
from ssdkit.io.tfod.convert import from_tf_object_detection
from ssdkit.postprocess.nms import HardNMS, HardNMSConfig
from ssdkit.priors.tf import TFSSDAnchors, TFSSDAnchorsConfig
from ssdkit.resize import resize_bilinear

pytestmark = pytest.mark.usefixtures("single_thread")


def _run_onnx(node: onnx.NodeProto, inputs: dict[str, np.ndarray], initializers=()) -> np.ndarray:
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in inputs.items()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 23),
    w=st.integers(1, 23),
    k=st.sampled_from([1, 2, 3, 5]),
    stride=st.integers(1, 3),
    groups=st.sampled_from([1, 2]),
)
def test_conv2d_same_equals_onnx_same_upper(h, w, k, stride, groups):
    """TF's "SAME" is ONNX's auto_pad SAME_UPPER: the odd padding pixel after, output ceil(n / s)."""
    torch.manual_seed(h * 100 + w)
    conv = Conv2dSame(2, 4, k, stride, groups=groups)
    x = torch.randn(1, 2, h, w)
    with torch.no_grad():
        ours = conv(x)
    assert ours.shape[-2:] == (math.ceil(h / stride), math.ceil(w / stride))
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], auto_pad="SAME_UPPER", strides=[stride] * 2, group=groups)
    inits = [
        numpy_helper.from_array(conv.weight.detach().numpy(), "w"),
        numpy_helper.from_array(conv.bias.detach().numpy(), "b"),
    ]
    theirs = _run_onnx(node, {"x": x.numpy()}, inits)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 17),
    w=st.integers(1, 17),
    out_h=st.integers(1, 23),
    out_w=st.integers(1, 23),
    mode=st.sampled_from(["bilinear_asymmetric", "bilinear_align_corners", "bilinear"]),
)
def test_resize_modes_equal_onnx_resize(h, w, out_h, out_w, mode):
    """Each pixel grid against onnxruntime's linear Resize with the same coordinate transformation."""
    if mode == "bilinear_align_corners" and (out_h == 1 or out_w == 1):
        return  # 0 / 0: ONNX and PyTorch disagree on where a single output pixel samples
    x = torch.rand(3, h, w) * 255
    ours = resize_bilinear(x, (out_h, out_w), mode)
    transform = {"bilinear_asymmetric": "asymmetric", "bilinear_align_corners": "align_corners"}
    node = helper.make_node(
        "Resize",
        ["x", "", "", "sizes"],
        ["y"],
        mode="linear",
        coordinate_transformation_mode=transform.get(mode, "half_pixel"),
    )
    sizes = numpy_helper.from_array(np.array([1, 3, out_h, out_w], dtype=np.int64), "sizes")
    theirs = _run_onnx(node, {"x": x[None].numpy()}, [sizes])[0]
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-3)


def test_asymmetric_resize_by_an_integer_factor_samples_pixels():
    """TF 1's grid puts output pixel i on input pixel 2i when halving: no blending at all."""
    x = torch.arange(2 * 8 * 6, dtype=torch.float32).view(2, 8, 6)
    torch.testing.assert_close(resize_bilinear(x, (4, 3), "bilinear_asymmetric"), x[:, ::2, ::2])


@given(st.lists(st.floats(-3, 3), min_size=4, max_size=4), st.lists(st.floats(0.05, 1), min_size=2, max_size=2))
def test_yxhw_coder_is_tensorflows_faster_rcnn_coder(offsets, size):
    """TF: ycenter = ty / 10 * ha + ycenter_a, h = exp(th / 5) * ha (box_coders/faster_rcnn_box_coder.py)."""
    prior = torch.tensor([[0.4, 0.6, size[0], size[1]]], dtype=torch.float64)  # cx, cy, w, h
    ty, tx, th, tw = offsets
    cy, cx = ty / 10 * size[1] + 0.6, tx / 10 * size[0] + 0.4
    h, w = math.exp(th / 5) * size[1], math.exp(tw / 5) * size[0]
    expected = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], dtype=torch.float64)
    coder = SSDBoxCoder(SSDBoxCoderConfig(order="yxhw"))
    decoded = coder.decode(torch.tensor([offsets], dtype=torch.float64), prior)
    torch.testing.assert_close(decoded, expected)
    torch.testing.assert_close(coder.encode(decoded, prior), torch.tensor([offsets], dtype=torch.float64))
    xywh = SSDBoxCoder().encode(decoded, prior)
    torch.testing.assert_close(xywh, torch.tensor([[tx, ty, tw, th]], dtype=torch.float64))


def test_tf_anchors_by_hand():
    """ssd_anchor_generator defaults on SSDLite's maps: 19 x 19 x 3 + (100 + 25 + 9 + 4 + 1) x 6 = 1917."""
    gen = TFSSDAnchors()
    assert gen.num_anchors == [3, 6, 6, 6, 6, 6]
    priors = gen([(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)], (300, 300))
    assert priors.shape == (1917, 4)
    r2 = math.sqrt(2)
    first = torch.tensor([[0.1, 0.1], [0.2 * r2, 0.2 / r2], [0.2 / r2, 0.2 * r2]])  # (w, h)
    torch.testing.assert_close(priors[:3, 2:], first)
    torch.testing.assert_close(priors[:3, :2], torch.full((3, 2), 0.5 / 19))
    torch.testing.assert_close(priors[3, :2], torch.tensor([1.5 / 19, 0.5 / 19]))  # the next column
    last = priors[-6:]  # the 1 x 1 map: scale 0.95, interpolated sqrt(0.95 * 1.0)
    torch.testing.assert_close(last[:, :2], torch.full((6, 2), 0.5))
    torch.testing.assert_close(last[-1, 2:], torch.full((2,), math.sqrt(0.95)))
    torch.testing.assert_close(last[1, 2:], torch.tensor([0.95 * r2, 0.95 / r2]))


def test_tf_anchors_square_in_pixels_on_a_wide_input():
    priors = TFSSDAnchors(TFSSDAnchorsConfig(num_layers=1, reduce_boxes_in_lowest_layer=False))([(2, 4)], (300, 600))
    w, h = priors[0, 2] * 600, priors[0, 3] * 300  # ratio 1: a square of 0.2 * 300 pixels
    assert w.item() == pytest.approx(60) and h.item() == pytest.approx(60)


def test_tf_anchors_config_errors():
    with pytest.raises(ValueError, match="scales needs num_layers=6"):
        TFSSDAnchorsConfig(scales=[0.1, 0.2])
    with pytest.raises(ValueError, match="min_scale <= max_scale"):
        TFSSDAnchorsConfig(min_scale=0.9, max_scale=0.2)


def test_clip_after_nms_is_tensorflows_order():
    """A box half outside the picture: unclipped it overlaps its neighbour by IoU 0.5, clipped by 1.
    TF OD API suppresses on unclipped boxes and clips after; a box wholly outside is then dropped."""
    boxes = torch.tensor([[[-0.5, 0.0, 0.5, 1.0], [0.0, 0.0, 0.5, 1.0], [1.2, 0.0, 1.5, 0.5]]])
    probs = torch.tensor([[[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]]])
    before = HardNMS(HardNMSConfig(score_threshold=0.1, iou_threshold=0.6))(boxes, probs)[0]
    after = HardNMS(HardNMSConfig(score_threshold=0.1, iou_threshold=0.6, clip="after_nms"))(boxes, probs)[0]
    assert before["scores"].tolist() == pytest.approx([0.9, 0.7])  # the third box: clipped to a line
    assert after["scores"].tolist() == pytest.approx([0.9, 0.8])
    torch.testing.assert_close(after["boxes"], torch.tensor([[0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.5, 1.0]]))


# ---------------------------------------------------------------- GraphDef reader
def _graph_bytes(*nodes) -> bytes:
    msgs = graphdef._messages()
    g = msgs["GraphDef"]()
    for name, op, tensor in nodes:
        n = g.node.add(name=name, op=op)
        if tensor is not None:
            n.attr.add(key="value").value.tensor.CopyFrom(tensor)
    return g.SerializeToString()


def _tensor(dtype: int, shape: list[int], **fields):
    t = graphdef._messages()["TensorProto"](dtype=dtype, **fields)
    for s in shape:
        t.tensor_shape.dim.add(size=s)
    return t


def test_constants_decode_as_tensorflow_stores_them():
    packed = np.arange(6, dtype=np.float32).reshape(2, 3)
    g = graphdef.parse_graph(
        _graph_bytes(
            ("a", "Const", _tensor(1, [2, 3], tensor_content=packed.tobytes())),
            ("b", "Const", _tensor(3, [4], int_val=[7])),  # one value fills the shape
            ("c", "Const", _tensor(1, [3], float_val=[1.0, 2.0])),  # the last value repeats
            ("d", "Identity", None),
        )
    )
    np.testing.assert_array_equal(g.const("a"), packed)
    np.testing.assert_array_equal(g.const("b"), np.full(4, 7, dtype=np.int32))
    np.testing.assert_array_equal(g.const("c"), np.array([1.0, 2.0, 2.0], dtype=np.float32))
    with pytest.raises(ValueError, match="not a constant"):
        g.const("d")


def test_hostile_graphs_are_refused_cheaply(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="not a TensorFlow GraphDef"):
        graphdef.parse_graph(b"\xff\xff\xff\xff not protobuf", "junk.pb")
    with pytest.raises(ValueError, match="no nodes"):
        graphdef.parse_graph(b"", "empty.pb")
    # A few bytes that claim 2^40 elements, filled from one value: refused before any allocation.
    bomb = graphdef.parse_graph(_graph_bytes(("x", "Const", _tensor(1, [1 << 20, 1 << 20], float_val=[1.0]))))
    with pytest.raises(ValueError, match="exceeds"):
        bomb.const("x")
    short = graphdef.parse_graph(_graph_bytes(("x", "Const", _tensor(1, [5], tensor_content=b"\0" * 8))))
    with pytest.raises(ValueError, match="2 values in tensor_content"):
        short.const("x")
    big = tmp_path / "big.pb"
    big.write_bytes(_graph_bytes(("x", "Const", _tensor(1, [1], float_val=[1.0]))))
    monkeypatch.setattr(graphdef, "MAX_GRAPH_BYTES", 4)
    with pytest.raises(ValueError, match="larger than any detector graph"):
        graphdef.read_graph(big)


def test_converter_names_an_unsupported_graph(tmp_path):
    path = tmp_path / "frozen_inference_graph.pb"
    path.write_bytes(_graph_bytes(("FeatureExtractor/InceptionV2/Conv2d_1a_7x7/weights", "Const", None)))
    with pytest.raises(ValueError, match=r"feature extractor \['InceptionV2'\] is not supported"):
        from_tf_object_detection(path)
    with pytest.raises(FileNotFoundError, match="no such TensorFlow graph"):
        from_tf_object_detection(tmp_path / "missing.pb")


def test_mobilenet_v2_backbone_is_torchvisions_classifier(tmp_path):
    """Symmetric padding: torchvision's mobilenet_v2 weights load, and the two first maps are its own
    features (the 1x1 expansion inside block 14, and the last conv); tf_same changes only the padding."""
    import torchvision
    from safetensors.torch import save_file

    from ssdkit.backbones.mobilenet_v2 import MobileNetV2Config, MobileNetV2SSDLite

    torch.manual_seed(0)
    peer = torchvision.models.mobilenet_v2(weights=None).eval()
    path = tmp_path / "mobilenet_v2.safetensors"
    save_file({k: v.contiguous() for k, v in peer.state_dict().items()}, str(path))
    ours = MobileNetV2SSDLite(MobileNetV2Config(weights=str(path))).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        c4, c5, *extras = ours(x)
        torch.testing.assert_close(c5, peer.features(x))
        torch.testing.assert_close(c4, peer.features[14].conv[0](peer.features[:14](x)))
        same = MobileNetV2SSDLite(MobileNetV2Config(weights=str(path), padding="tf_same")).eval()
        same.extras.load_state_dict(ours.extras.state_dict())
        tf_maps = same(x)
    assert [tuple(m.shape[-2:]) for m in tf_maps] == [(6, 8), (3, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    # the asymmetric padding shifts every strided conv (relative: an untrained net's maps are tiny)
    assert float((tf_maps[1] - c5).abs().max() / c5.abs().max()) > 0.05


@pytest.mark.parametrize("clip", ["before_nms", "after_nms"])
def test_exported_postprocessing_clips_like_the_model(clip):
    """The exportable detector (ONNX / TorchScript with --with-postprocess) follows `clip` too."""
    from types import SimpleNamespace

    from ssdkit.boxes import xyxy_to_cxcywh
    from ssdkit.export.detector import ExportableDetector

    xyxy = torch.tensor([[-0.5, 0.0, 0.5, 1.0], [0.0, 0.0, 0.5, 1.0], [1.2, 0.0, 1.5, 0.5]])
    probs = torch.tensor([[[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]]])
    pp = HardNMS(HardNMSConfig(score_threshold=0.1, iou_threshold=0.6, clip=clip))
    model = SimpleNamespace(
        postprocess=pp, priors=xyxy_to_cxcywh(xyxy), num_classes=2, box_coder=SSDBoxCoder(), scores=lambda p: p
    )
    boxes, scores, _, n = ExportableDetector(model, nms="script").detect(torch.zeros(1, 3, 4), probs)
    expected = pp(xyxy[None], probs)[0]
    assert int(n[0]) == len(expected["scores"])
    torch.testing.assert_close(scores[0, : int(n[0])], expected["scores"])
    torch.testing.assert_close(boxes[0, : int(n[0])], expected["boxes"])


def test_anchor_fit_tries_explicit_scales_when_min_max_would_be_refused():
    """Layer scales that do not ascend have no min_scale .. max_scale setting (ssdkit's config refuses
    min_scale > max_scale): the fit moves on to explicit scales instead of failing."""
    from ssdkit.io.tfod.convert import _fits
    from ssdkit.priors.tf import TFSSDAnchors, TFSSDAnchorsConfig

    base = {"num_layers": 3, "aspect_ratios": [1.0, 2.0], "interpolated_scale_aspect_ratio": 1.0}
    layers = TFSSDAnchors(TFSSDAnchorsConfig(scales=[0.6, 0.4, 0.2], **base)).box_specs()
    assert not _fits({**base, "min_scale": 0.6, "max_scale": 0.2}, layers)
    assert _fits({**base, "min_scale": 0.6, "max_scale": 0.2, "scales": [0.6, 0.4, 0.2]}, layers)
