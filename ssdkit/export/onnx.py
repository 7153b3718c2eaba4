"""ONNX export (`pip install 'ssdkit[export]'`): the network alone, or the whole detector.

Network alone: input `images [B, 3, H, W]` (preprocessed, see `model.preprocessor`) ->
`loc [B, P, 4]` offsets from the priors, `logits [B, P, C]`.
Whole detector (`with_postprocess=True`): the same input -> `boxes [B, K, 4]` xyxy
normalised to [0, 1] of the network input, `scores [B, K]`, `labels [B, K]` int64,
`num_detections [B]` int64, K = max_detections (see `ExportableDetector`). B is dynamic.

The file's metadata_props record the ssdkit version, the model's config, its input and
outputs (`ssdkit.export.read_metadata`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssdkit.export.detector import ExportableDetector
from ssdkit.export.extra import require_export_extra
from ssdkit.export.metadata import export_metadata

__all__ = ["to_onnx"]


def _nms_to_onnx(boxes: Any, scores: Any, iou_threshold: float) -> Any:
    """`ssdkit::greedy_nms` as ONNX: NonMaxSuppression with one NMS batch per (image, class) group
    and a single class; its selected (group, 0, box) triples are scattered into a keep mask."""
    from onnxscript import ir
    from onnxscript import opset18 as op

    shape = op.Shape(scores)  # [G, K]
    per_group = op.Shape(scores, start=1, end=2)
    # ONNX Runtime keeps a box when its score > score_threshold (0: the non-candidates have -1) and
    # drops one when IoU > iou_threshold, with the IoU arithmetic of `greedy_nms`.
    selected = op.NonMaxSuppression(
        boxes,
        op.Unsqueeze(scores, [1]),
        per_group,
        op.Constant(value_float=iou_threshold),
        op.Constant(value_float=0.0),
    )
    pairs = op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)  # [N, 2]: group, box
    ones = op.Expand(op.Constant(value_float=1.0), op.Shape(pairs, start=0, end=1))
    return op.Cast(op.ScatterND(op.ConstantOfShape(shape), pairs, ones), to=ir.DataType.BOOL)


def _stable_sort_to_onnx(values: Any, *, stable: bool | None = None, dim: int = -1, descending: bool = False) -> Any:
    """`aten.sort.stable` (torch's exporter has no translation for it) as ONNX TopK over the whole
    axis: TopK puts equal values in index order, i.e. sorts stably."""
    from onnxscript import opset18 as op

    size = op.Gather(op.Shape(values), op.Constant(value_ints=[dim]))
    return op.TopK(values, size, axis=dim, largest=int(descending), sorted=1)


# torch's exporter (dynamo=True) translates to opset 18 and newer; older opsets it would only
# down-convert where a converter exists, and write 18 silently where not.
MIN_OPSET = 18


def check_opset(opset: int | None) -> None:
    """Refuse an opset the exporter cannot write (ValueError naming the range)."""
    if opset is None:
        return
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(
            f"opset {opset!r} cannot be written: ssdkit exports with torch's exporter, which writes opsets "
            f"{MIN_OPSET}..{newest} (this onnx package's newest); for an older runtime, convert the file "
            "yourself (onnx.version_converter) and check its outputs"
        )


def _written_opset(proto: Any) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), -1)


def to_onnx(model: nn.Module, path: str | Path, *, with_postprocess: bool = False, opset: int | None = None) -> Path:
    """Export `model` (an `ssdkit.SSD`) to an ONNX file at `path` (written atomically); returns the path.

    with_postprocess: include decoding and NMS (`ExportableDetector`); needs the 'hard' NMS.
    opset: the ONNX opset, MIN_OPSET or newer (default: torch's exporter default); the file is
    written in exactly that opset or not at all.
    """
    require_export_extra()
    import onnx

    from ssdkit.io.paths import atomic_write

    check_opset(opset)

    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        module = ExportableDetector(model, nms="op").eval() if with_postprocess else model
        outputs = ["boxes", "scores", "labels", "num_detections"] if with_postprocess else ["loc", "logits"]
        # Batch 2 while tracing: torch.export would specialise a batch of 1 to a constant.
        example = torch.zeros(2, 3, *model.image_size, device=model.priors.device)
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}},
            input_names=["images"],
            output_names=outputs,
            opset_version=opset,
            custom_translation_table={
                torch.ops.ssdkit.greedy_nms.default: _nms_to_onnx,
                torch.ops.aten.sort.stable: _stable_sort_to_onnx,
            },
            verbose=False,
        )
    finally:
        model.train(was_training)
    proto = program.model_proto
    if opset is not None and _written_opset(proto) != opset:
        raise ValueError(f"asked for ONNX opset {opset}, but torch's exporter wrote {_written_opset(proto)}")
    onnx.helper.set_model_props(proto, export_metadata(model, with_postprocess))
    data = proto.SerializeToString()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(data))
    return path
