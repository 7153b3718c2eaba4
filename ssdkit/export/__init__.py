"""Export an `ssdkit.SSD` for deployment: ONNX (`pip install 'ssdkit[export]'`) or TorchScript.

    from ssdkit.export import to_onnx, to_torchscript
    to_onnx(model, "ssd.onnx", with_postprocess=True)       # boxes, scores, labels, num_detections
    to_torchscript(model, "ssd.pt")                        # loc, logits
    quantize_onnx("ssd.onnx", "ssd.int8.onnx", calibration_batches(model, "my_run.yaml"))  # int8 QDQ

See docs/deployment.md for the outputs, the parity guarantee and running the files.
"""

from ssdkit.export.detector import ExportableDetector
from ssdkit.export.extra import MissingExtraError, require_export_extra
from ssdkit.export.metadata import read_metadata
from ssdkit.export.onnx import to_onnx
from ssdkit.export.quantize import calibration_batches, quantize_onnx
from ssdkit.export.torchscript import to_torchscript

__all__ = [
    "ExportableDetector",
    "calibration_batches",
    "quantize_onnx",
    "MissingExtraError",
    "read_metadata",
    "require_export_extra",
    "to_onnx",
    "to_torchscript",
]
