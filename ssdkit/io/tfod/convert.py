"""TensorFlow Object Detection API frozen graphs -> ssdkit models, without TensorFlow.

`from_tf_object_detection(path)` reads a ``frozen_inference_graph.pb`` (`ssdkit.io.tfod.graphdef`), infers the
config from the graph itself -- feature extractor and width, input size, resize and scaling, anchor
generator settings, number of classes, box coder scale factors, score converter, NMS settings -- builds
that ssdkit model and copies every weight onto it, checking each shape, stride and padding. What it cannot
express is reported, and every TensorFlow variable it did not use is listed.

Supported: SSDLite MobileNetV2 (``ssdlite_mobilenet_v2``: MobilenetV2 feature extractor with depthwise
``layer_19`` extras and depthwise box predictors), with ``ssd_anchor_generator`` anchors.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ssdkit.io.tfod.graphdef import Graph, Node, read_graph

__all__ = ["TFImport", "from_tf_object_detection", "infer_config"]

FE = "FeatureExtractor/MobilenetV2"
# Names TF OD API gives trainable variables; a frozen graph keeps them as constants.
_VARIABLE = re.compile(r"(weights|biases|depthwise_weights|gamma|beta|moving_mean|moving_variance)$")


@dataclass
class TFImport:
    """What `from_tf_object_detection` made: the model (in eval mode), its config, and the report."""

    model: Any
    config: Any
    mapped: list[str] = field(default_factory=list)  # TF variables copied into the model
    unmapped: list[str] = field(default_factory=list)  # TF variables no ssdkit parameter took
    notes: list[str] = field(default_factory=list)  # what was inferred, and what ssdkit cannot express

    def report(self) -> str:
        lines = [f"mapped {len(self.mapped)} TensorFlow variables onto {type(self.model).__name__}"]
        lines += [f"- {n}" for n in self.notes]
        if self.unmapped:
            lines.append(f"not mapped ({len(self.unmapped)}): {', '.join(self.unmapped)}")
        else:
            lines.append("every TensorFlow variable of the graph was mapped")
        return "\n".join(lines)


def from_tf_object_detection(path: str | Path, *, class_names: Optional[list[str]] = None) -> TFImport:
    """A TF OD API frozen graph -> `TFImport` (``.model``, ``.config``, ``.report()``).

    `class_names`: names of labels 1 .. C - 1 (a frozen graph has no label map).
    """
    from ssdkit.build import build_model

    graph = read_graph(path)
    cfg_dict, notes = infer_config(graph)
    if class_names is not None:
        cfg_dict["class_names"] = list(class_names)
    from ssdkit.config.model import SSDConfig

    cfg = SSDConfig.model_validate(cfg_dict)
    model = build_model(cfg)
    mapper = _Mapper(graph)
    mapper.copy_backbone(model.backbone)
    mapper.copy_head(model.head)
    model.weights_loaded = True  # copied in place, not through load_state_dict: predict must not call them random
    model.eval()
    unmapped = sorted(
        n.name
        for n in graph.nodes.values()
        if n.op == "Const" and _VARIABLE.search(n.name) and n.name not in mapper.used
    )
    return TFImport(model, cfg, sorted(mapper.used), unmapped, notes + mapper.notes)


# ------------------------------------------------------------------ config
def infer_config(graph: Graph) -> tuple[dict[str, Any], list[str]]:
    """The `SSDConfig` dict a TF OD API SSD graph describes, and notes on how each part was read."""
    notes: list[str] = []
    if f"{FE}/Conv/Conv2D" not in graph:
        found = sorted({n.name.split("/")[1] for n in graph.nodes.values() if n.name.startswith("FeatureExtractor/")})
        raise ValueError(
            f"{graph.source}: feature extractor {found or 'none'} is not supported; ssdkit reads the SSDLite "
            "MobilenetV2 one (ssdlite_mobilenet_v2)"
        )
    if f"{FE}/layer_19_2_Conv2d_2_3x3_s2_512_depthwise/depthwise" not in graph:
        raise ValueError(f"{graph.source}: the layer_19 extras are not depthwise (not SSDLite); not supported")
    stem = graph.const(f"{FE}/Conv/weights")
    width = stem.shape[3] / 32
    anchors = _anchors(graph)
    num_anchors = 3 if anchors["reduce_boxes_in_lowest_layer"] else len(anchors["aspect_ratios"]) + 1
    cls_bias = graph.const("BoxPredictor_0/ClassPredictor/biases")
    if cls_bias.size % num_anchors:
        raise ValueError(f"BoxPredictor_0 predicts {cls_bias.size} class logits, not a multiple of {num_anchors}")
    num_classes = cls_bias.size // num_anchors
    cfg = {
        "num_classes": num_classes,
        "image_size": _image_size(graph),
        "preprocess": _preprocess(graph, notes),
        "backbone": {"type": "mobilenet_v2", "width_mult": width, "padding": "tf_same"},
        "head": {"type": "depthwise"},
        "priors": {"type": "tf_ssd", **anchors},
        "box_coder": {"type": "ssd", "order": "yxhw", "variances": _variances(graph)},
        "loss": _loss(graph, notes),
        "postprocess": _nms(graph, notes),
    }
    objects = num_classes - 1
    notes.insert(0, f"MobilenetV2 SSDLite, width {width:g}, {objects} class{'es' if objects != 1 else ''} + background")
    return cfg, notes


def _image_size(graph: Graph) -> list[int]:
    resize = graph.by_op("ResizeBilinear")
    if len(resize) != 1:
        raise ValueError(f"{graph.source}: expected one ResizeBilinear (a fixed_shape_resizer), found {len(resize)}")
    size = graph.const(resize[0].data_inputs[1])
    return [int(size[0]), int(size[1])]


def _preprocess(graph: Graph, notes: list[str]) -> dict[str, Any]:
    """TF OD API MobileNets: x = pixel * (2 / 255) - 1, RGB; the resize's pixel grid from its attributes."""
    resize = graph.by_op("ResizeBilinear")[0]
    if resize.attr("align_corners", False):
        mode = "bilinear_align_corners"
    elif resize.attr("half_pixel_centers", False):
        mode = "bilinear"
    else:
        mode = "bilinear_asymmetric"
    scale = float(graph.const("Preprocessor/mul/x"))
    shift = float(graph.const("Preprocessor/sub/y"))
    notes.append(f"input: {mode} resize, then x = pixel * {scale:.9g} - {shift:g} (RGB)")
    return {"channel_order": "RGB", "scale": scale, "mean": [shift] * 3, "std": [1.0] * 3, "resize": mode}


def _anchors(graph: Graph) -> dict[str, Any]:
    """ssd_anchor_generator settings whose box specs equal the graph's, layer by layer."""
    prefix = "MultipleGridAnchorGenerator/"
    layers = []
    for sqrt in sorted(
        (n for n in graph.by_op("Sqrt") if n.name.startswith(prefix)), key=lambda n: _suffix(n.name, "Sqrt")
    ):
        ratios = graph.const(sqrt.data_inputs[0]).astype(np.float64)
        div = next(
            n
            for n in graph.by_op("RealDiv")
            if n.name.startswith(prefix) and len(n.data_inputs) == 2 and n.data_inputs[1] == sqrt.name
        )
        scales = graph.const(div.data_inputs[0]).astype(np.float64)
        layers.append(list(zip(scales.tolist(), ratios.tolist(), strict=True)))
    if not layers:
        raise ValueError(f"{graph.source}: no MultipleGridAnchorGenerator found")
    first, other = layers[0], layers[-1]
    reduce = len(first) == 3 and math.isclose(first[0][0], 0.1, rel_tol=1e-6) and first[0][1] == 1.0
    interpolated = other[-1][1] if len(other) > 1 and other[-1][0] != other[0][0] else 0.0
    ratios = [r for _, r in (other[:-1] if interpolated else other)]
    scales = [layer[0][0] for layer in layers[1:]]
    scales.insert(0, first[1][0] if reduce else first[0][0])
    cfg = {
        "num_layers": len(layers),
        "min_scale": scales[0],
        "max_scale": scales[-1],
        "aspect_ratios": ratios,
        "interpolated_scale_aspect_ratio": interpolated,
        "reduce_boxes_in_lowest_layer": reduce,
    }
    if not _fits(cfg, layers):
        cfg["scales"] = scales  # not on min_scale .. max_scale's line (or not ascending)
        if not _fits(cfg, layers):
            raise ValueError(f"{graph.source}: anchor box specs {layers} fit no ssd_anchor_generator setting")
    return cfg


def _fits(cfg: dict[str, Any], layers: list[list[tuple[float, float]]]) -> bool:
    """Whether the anchor generator `cfg` describes makes the graph's box specs (False for a setting
    ssdkit's config refuses, such as min_scale > max_scale without explicit scales)."""
    from ssdkit.priors.tf import TFSSDAnchors, TFSSDAnchorsConfig

    try:
        anchors = TFSSDAnchors(TFSSDAnchorsConfig(**cfg))
    except ValueError:
        return False
    return _same_specs(anchors.box_specs(), layers)


def _same_specs(a: list[list[tuple[float, float]]], b: list[list[tuple[float, float]]]) -> bool:
    """Equal up to the float32 rounding of the graph's constants."""
    return len(a) == len(b) and all(
        len(x) == len(y) and np.allclose(np.array(x), np.array(y), rtol=1e-6, atol=0) for x, y in zip(a, b, strict=True)
    )


def _suffix(name: str, op: str) -> int:
    m = re.search(rf"/{op}(?:_(\d+))?$", name)
    return int(m.group(1) or 0) if m else -1


def _variances(graph: Graph) -> list[float]:
    """FasterRcnnBoxCoder scale factors (y, x, h, w) -> variances (x, y, w, h)."""
    sy, sx, sh, sw = (float(graph.const(f"Postprocessor/Decode/truediv{s}/y")) for s in ("", "_1", "_2", "_3"))
    return [1 / sx, 1 / sy, 1 / sw, 1 / sh]


def _loss(graph: Graph, notes: list[str]) -> dict[str, Any]:
    """The score converter decides how logits become scores; ssdkit ties that to the loss."""
    convert = graph["Postprocessor/convert_scores"]
    logit_scale = float(graph.const("Postprocessor/scale_logits/y"))
    if logit_scale != 1.0:
        notes.append(f"NOT EXPRESSED: logit_scale {logit_scale:g} (ssdkit divides logits by nothing)")
    if convert.op == "Sigmoid":
        notes.append("scores: sigmoid per class, background column ignored (a sigmoid focal loss, gamma 0)")
        return {"type": "focal", "mode": "sigmoid", "alpha": None, "gamma": 0.0}
    if convert.op == "Softmax":
        notes.append("scores: softmax over classes and background")
        return {"type": "multibox"}
    raise ValueError(f"{graph.source}: score converter {convert.op} is not supported (Sigmoid or Softmax)")


def _nms(graph: Graph, notes: list[str]) -> dict[str, Any]:
    nms = graph.by_op("NonMaxSuppressionV2", "NonMaxSuppressionV3", "NonMaxSuppressionV4", "NonMaxSuppressionV5")
    if len(nms) != 1:
        raise ValueError(f"{graph.source}: expected one NonMaxSuppression op, found {len(nms)}")
    node = nms[0]
    scope = node.name.split("non_max_suppression/")[0]
    iou = float(graph.const(node.data_inputs[3]))
    score = float(graph.const(node.data_inputs[4])) if node.op != "NonMaxSuppressionV2" else -math.inf
    per_class = int(graph.const(scope + "Minimum/x"))
    total = int(graph.const(scope + "Minimum_1/x")) if scope + "Minimum_1/x" in graph else per_class
    clip_after = any(n.startswith(scope + "ClipToWindow/") for n in graph.nodes)
    notes.append(
        f"NMS: IoU > {iou:.6g} suppresses, scores > {score:.3g}, {per_class} per class, {total} per image, "
        f"boxes clipped {'after' if clip_after else 'before'} NMS"
    )
    if per_class < total:
        notes.append(f"NOT EXPRESSED: at most {per_class} per class (ssdkit caps only the image's {total})")
    return {
        "type": "hard",
        "score_threshold": max(score, 0.0),
        "iou_threshold": iou,
        "top_k": 100_000,  # TF considers every box above the threshold
        "max_detections": total,
        "clip": "after_nms" if clip_after else "before_nms",
    }


# ------------------------------------------------------------------ weights
class _Mapper:
    """Copies TF variables into ssdkit modules, one TF scope at a time, checking the op's attributes."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.used: set[str] = set()
        self.notes: list[str] = []

    def value(self, name: str) -> torch.Tensor:
        node = self.graph.resolve(name)
        self.used.add(node.name)
        return torch.from_numpy(np.array(self.graph.const(node.name), dtype=np.float32))

    def op(self, scope: str, *ops: str) -> Node:
        found = [n for n in self.graph.nodes.values() if n.op in ops and n.name.rsplit("/", 1)[0] == scope]
        if len(found) != 1:
            raise ValueError(f"{self.graph.source}: expected one {'/'.join(ops)} in {scope}/, found {len(found)}")
        return found[0]

    def conv(self, scope: str, conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d] = None) -> None:
        """TF conv (HWIO) or depthwise conv (H W C M) at `scope`, and its BatchNorm or bias."""
        depthwise = conv.groups > 1
        node = self.op(scope, "DepthwiseConv2dNative" if depthwise else "Conv2D")
        stride = node.attr("strides")[1:3]
        if list(stride) != list(conv.stride) or node.attr("padding") != "SAME":
            raise ValueError(f"{node.name}: stride {stride} / padding {node.attr('padding')} != ssdkit's {conv}")
        w = self.value(node.data_inputs[1])
        w = w.permute(2, 3, 0, 1).reshape(-1, 1, *w.shape[:2]) if depthwise else w.permute(3, 2, 0, 1)
        _put(conv.weight, w, node.name)
        if bn is not None:
            norm = self.op(f"{scope}/BatchNorm", "FusedBatchNorm", "FusedBatchNormV3")
            _, gamma, beta, mean, var = norm.data_inputs[:5]
            for param, name in ((bn.weight, gamma), (bn.bias, beta), (bn.running_mean, mean), (bn.running_var, var)):
                _put(param, self.value(name), name)
            eps = float(norm.attr("epsilon"))
            if not math.isclose(eps, bn.eps, rel_tol=1e-6):
                self.notes.append(
                    f"{scope}: BatchNorm epsilon {eps:g} (ssdkit's default {bn.eps:g}) taken from the graph"
                )
            bn.eps = eps
        elif conv.bias is not None:
            _put(conv.bias, self.value(self.op(scope, "BiasAdd").data_inputs[1]), scope + "/BiasAdd")

    def conv_bn(self, scope: str, block: nn.Sequential) -> None:
        """A conv + BN (+ activation) Sequential (torchvision's Conv2dNormActivation layout)."""
        self.conv(scope, block[0], block[1])

    def copy_backbone(self, backbone: nn.Module) -> None:
        feats = backbone.features
        self.conv_bn(f"{FE}/Conv", feats[0])
        for k in range(1, len(feats) - 1):
            scope = f"{FE}/expanded_conv" + (f"_{k - 1}" if k > 1 else "")
            layers = list(feats[k].conv)
            if len(layers) == 4:
                self.conv_bn(f"{scope}/expand", layers.pop(0))
            dw, project, project_bn = layers
            self.conv_bn(f"{scope}/depthwise", dw)
            self.conv(f"{scope}/project", project, project_bn)
        self.conv_bn(f"{FE}/Conv_1", feats[-1])
        for j, block in enumerate(backbone.extras):
            mid, out = block[0][0].out_channels, block[2][0].out_channels
            self.conv_bn(f"{FE}/layer_19_1_Conv2d_{j + 2}_1x1_{mid}", block[0])
            self.conv_bn(f"{FE}/layer_19_2_Conv2d_{j + 2}_3x3_s2_{out}_depthwise", block[1])
            self.conv_bn(f"{FE}/layer_19_2_Conv2d_{j + 2}_3x3_s2_{out}", block[2])

    def copy_head(self, head: nn.Module) -> None:
        for tf_name, levels in (("BoxEncodingPredictor", head.loc), ("ClassPredictor", head.cls)):
            for k, seq in enumerate(levels):
                self.conv(f"BoxPredictor_{k}/{tf_name}_depthwise", seq[0], seq[1])
                self.conv(f"BoxPredictor_{k}/{tf_name}", seq[3])


def _put(param: torch.Tensor, value: torch.Tensor, where: str) -> None:
    if tuple(param.shape) != tuple(value.shape):
        raise ValueError(f"{where}: TensorFlow shape {tuple(value.shape)} does not fit ssdkit's {tuple(param.shape)}")
    with torch.no_grad():
        param.copy_(value)
