"""From users' pictures to detections in their own pixels.

Accepted pictures (`ssdkit.io.pictures` states the contract): a PIL image, an HWC numpy array, a CHW
torch tensor (uint8, uint16, or float 0..1), a file path, a list mixing them, of any sizes, or a
batch: an NHWC numpy array or an NCHW tensor. EXIF orientation is applied: boxes are in the
pixels a viewer shows.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor

from ssdkit.io.picture_files import check_batch_size, picture_items
from ssdkit.io.pictures import read_picture

__all__ = ["predict", "evaluating"]


def _items(pictures: Any) -> tuple[list[Any], bool]:
    """(pictures, single): a list or tuple, a batch (NHWC numpy array, NCHW tensor), or one picture."""
    if isinstance(pictures, Tensor) and pictures.dim() == 4:
        return list(pictures), False
    return picture_items(pictures)


_LOCK = threading.Lock()
_ACTIVE: weakref.WeakKeyDictionary[torch.nn.Module, list] = weakref.WeakKeyDictionary()


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """`model` in eval mode for the block, safe under concurrent calls: a model already in eval mode
    is left untouched; one in training mode is switched by the first call in and switched back by the
    last call out, so no call runs while another restores training mode (BatchNorm would then update
    its statistics and detections would change)."""
    with _LOCK:
        entry = _ACTIVE.get(model)
        if entry is None:
            entry = _ACTIVE[model] = [0, model.training]
            if model.training:
                model.eval()
        entry[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            entry[0] -= 1
            if entry[0] == 0:
                del _ACTIVE[model]
                if entry[1]:
                    model.train()


@torch.inference_mode()
def predict(model: Any, pictures: Any, batch_size: int = 8) -> Any:
    """Detect objects; returns one dict per picture (a single dict for a single picture):
    boxes [N, 4] xyxy in that picture's displayed pixels, scores [N], labels [N], names (list of str).

    Safe to call from several threads on one model (see `evaluating`). Pictures are read one at a
    time, each kept only as its `[3, H, W]` network input.
    """
    batch_size = check_batch_size(batch_size)
    items, single = _items(pictures)
    if model.preprocessor is None:
        raise RuntimeError("this model has no preprocessor; build it with ssdkit.build_model(cfg)")
    device = model.priors.device
    results = []
    with evaluating(model):
        for start in range(0, len(items), batch_size):
            inputs, sizes = [], []
            for im in items[start : start + batch_size]:
                picture = read_picture(im)
                sizes.append((picture.shape[1], picture.shape[2]))  # (h, w)
                inputs.append(model.preprocessor.picture(picture.to(device)))
                del picture
            loc, logits = model(torch.stack(inputs))
            for det, (h, w) in zip(model.detect(loc, logits), sizes, strict=True):
                scale = torch.tensor([w, h, w, h], dtype=det["boxes"].dtype, device=det["boxes"].device)
                names = [model.class_names[i - 1] for i in det["labels"].tolist()]
                results.append(
                    {"boxes": det["boxes"] * scale, "scores": det["scores"], "labels": det["labels"], "names": names}
                )
    return results[0] if single else results
