"""The `export` extra (onnx, onnxscript, onnxruntime): checked before any work, with the remedy named."""

from __future__ import annotations

import importlib

__all__ = ["MissingExtraError", "require_export_extra", "EXTRA_HINT"]

EXTRA_HINT = "pip install 'ssdkit[export]'"


class MissingExtraError(ImportError):
    """An optional dependency of ssdkit is not installed; the message names the extra."""


def require_export_extra(*modules: str) -> None:
    """Import `modules` (default: onnx, onnxscript) or raise MissingExtraError naming the extra."""
    missing = []
    for name in modules or ("onnx", "onnxscript"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(
            f"ONNX export needs {', '.join(missing)}, which ssdkit installs with its 'export' extra: {EXTRA_HINT}"
        )
