"""TorchScript export: a traced module that loads with `torch.jit.load` and needs neither
ssdkit nor torchvision at run time.

Inputs and outputs as for ONNX (`ssdkit.export.onnx`): the network alone returns
(loc, logits); with post-processing (boxes, scores, labels, num_detections). The batch
size is free. The file records the ssdkit version, the model's config, its input and
outputs (`ssdkit.export.read_metadata`).
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssdkit.export.detector import ExportableDetector
from ssdkit.export.metadata import TORCHSCRIPT_EXTRA_FILE, export_metadata

__all__ = ["to_torchscript"]


def _check_input_size(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Scripted (`_scripted_check`), so that tracing keeps the check (a Python `if` would be traced away)."""
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != height or x.shape[3] != width:
        raise ValueError(
            "input is "
            + str(x.shape)
            + " but this model was built for [batch, 3, "
            + str(height)
            + ", "
            + str(width)
            + "]; resize pictures to the model's input size first (ssdkit's Preprocessor does)"
        )
    return x


@functools.cache
def _scripted_check() -> Any:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        return torch.jit.script(_check_input_size)


class _SizeChecked(nn.Module):
    """`module` behind an input-size check that survives tracing, as eager and ONNX refuse a wrong size."""

    def __init__(self, module: nn.Module, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.module = module
        self.height, self.width = int(image_size[0]), int(image_size[1])

    def forward(self, x: torch.Tensor):  # noqa: ANN201  (the wrapped module's outputs)
        return self.module(_scripted_check()(x, self.height, self.width))


def _trace(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        # Expected and harmless here: the input-size check in SSD.forward and the coder's variance
        # tensor become constants (both fixed by the config); torch also flags jit as deprecated.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        with torch.no_grad():
            return torch.jit.trace(module, (example,), check_trace=False)


def to_torchscript(model: nn.Module, path: str | Path, *, with_postprocess: bool = False) -> Path:
    """Trace `model` (an `ssdkit.SSD`) and save it to `path` (written atomically); returns the path.

    with_postprocess: include decoding and NMS (`ExportableDetector`, NMS as a scripted function
    so that its loop survives tracing); needs the 'hard' NMS.
    """
    from ssdkit.io.paths import atomic_write

    path = Path(path)
    meta = json.dumps(export_metadata(model, with_postprocess))
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    # Saved without requires_grad, so that the loaded module's outputs need no torch.no_grad();
    # the traced module shares the model's parameters, whose flags are restored afterwards.
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    try:
        for p, _ in grads:
            p.requires_grad_(False)
        module = ExportableDetector(model, nms="script").eval() if with_postprocess else model
        module = _SizeChecked(module, model.image_size).eval()
        # Batch 2: sizes read from the input stay symbolic, so any batch size runs later.
        traced = _trace(module, torch.zeros(2, 3, *model.image_size, device=model.priors.device))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
            atomic_write(path, lambda f: torch.jit.save(traced, f, _extra_files={TORCHSCRIPT_EXTRA_FILE: meta}))
    finally:
        model.train(was_training)
        for p, flag in grads:
            p.requires_grad_(flag)
    return path
