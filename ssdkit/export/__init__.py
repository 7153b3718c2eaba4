"""Export an `ssdkit.SSD` for deployment: ONNX (`pip install 'ssdkit[export]'`) or TorchScript.

    from ssdkit.export import to_onnx, to_torchscript
    to_onnx(model, "ssd.onnx", with_postprocess=True)       # boxes, scores, labels, num_detections
    to_torchscript(model, "ssd.pt")                        # loc, logits

See docs/deployment.md for the outputs, the parity guarantee and running the files.
"""

from ssdkit.export.detector import ExportableDetector
from ssdkit.export.metadata import read_metadata
from ssdkit.export.onnx import MissingExtraError, require_export_extra, to_onnx
from ssdkit.export.torchscript import to_torchscript

__all__ = [
    "ExportableDetector",
    "MissingExtraError",
    "read_metadata",
    "require_export_extra",
    "to_onnx",
    "to_torchscript",
]
