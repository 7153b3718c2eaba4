"""`ModelInputs`: a data set's items made into what the model takes, for one split.

Training: crowd boxes (and difficult ones unless the data set keeps them) are dropped, the
augmentation runs on the uint8 picture, then the picture is resized to the network input and
normalised. Evaluation: every box is kept with its flags, the picture goes through the model's
`Preprocessor` exactly as `predict` does. Targets' boxes come out xyxy normalised to [0, 1].

Random draws: each item's augmentation uses torch's CPU generator seeded from (seed, epoch,
index), so an item looks the same for a given (seed, epoch) whichever worker draws it and
whatever ran before; the caller's generator state is put back afterwards.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ssdkit.data.base import DetectionDataset
from ssdkit.data.errors import BadItemError, BadItemWarning
from ssdkit.preprocess import Preprocessor

__all__ = ["ModelInputs", "Skipped", "item_seed", "MAX_SIDE_FACTOR", "MAX_AUGMENT_PIXELS"]

# Bounds on a training picture before augmentation (see ModelInputs._bounded).
MAX_SIDE_FACTOR = 4
MAX_AUGMENT_PIXELS = 64_000_000


class Skipped(NamedTuple):
    """Stands for an item that could not be read (on_bad_item="skip"); collate drops it and counts it."""

    message: str


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed from (seed, epoch, index), well mixed (nearby triples give unrelated seeds)."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class ModelInputs(Dataset):
    """`ds[(index, epoch)]` (or `ds[index]`, epoch 0) -> (image `[3, H, W]` float32 network input, target)
    or `Skipped`.

    target: "boxes" `[G, 4]` float32 xyxy in [0, 1], "labels" `[G]` int64, "difficult", "iscrowd" `[G]`
    bool, "image_id", "orig_size" (h, w) of the stored picture, "path".
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        preprocessor: Preprocessor,
        *,
        train: bool,
        transform: Optional[Any] = None,
        on_bad_item: str = "error",
        seed: int = 0,
        expand_ratio: float = 1.0,
    ) -> None:
        if on_bad_item not in ("error", "skip"):
            raise ValueError(f"on_bad_item must be 'error' or 'skip', got {on_bad_item!r}")
        self.dataset = dataset
        self.preprocessor = preprocessor
        self.train = train
        self.transform = transform
        self.on_bad_item = on_bad_item
        self.seed = seed
        self.expand_ratio = float(expand_ratio)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        try:
            image, target = self.dataset[index]
        except BadItemError as exc:
            if self.on_bad_item == "error":
                raise
            # warn_explicit with no source line to show: one line on stderr (also from a worker),
            # and no once-per-location memory, so every skipped item is reported.
            warnings.warn_explicit(
                f"skipped item {index}: {exc}", BadItemWarning, "ssdkit.data", 0, module="ssdkit.data.pipeline"
            )
            return Skipped(str(exc))
        if self.train:
            keep = ~target["iscrowd"]
            if not getattr(self.dataset, "keep_difficult", False):
                keep &= ~target["difficult"]
            if not bool(keep.all()):
                for k in ("labels", "difficult", "iscrowd"):
                    target[k] = target[k][keep]
                # indexing unwraps a tv_tensor into a plain tensor, which transforms.v2 would not move
                target["boxes"] = tv_tensors.wrap(target["boxes"][keep], like=target["boxes"])
            if self.transform is not None:
                image, target = self._bounded(image, target)
                image, target = self._augment(image, target, item_seed(self.seed, epoch, index))
            # Resize first, still uint8: an expanded picture can be 16x the pixels, and torch's uint8
            # bilinear kernel is ~3x faster than the float one (docs/benchmarks.md); resizing and
            # normalising are both linear, so the order changes only rounding (at most one grey level).
            x = self.preprocessor.normalize(self.preprocessor.resize(image.as_subclass(Tensor)).float())
        else:
            x = self.preprocessor(image.as_subclass(Tensor).float())
        h, w = image.shape[-2:]
        boxes = target["boxes"].as_subclass(Tensor).float()
        boxes = (boxes / torch.tensor([w, h, w, h], dtype=torch.float32)).clamp_(0.0, 1.0)
        out = {
            "boxes": boxes,
            "labels": target["labels"].as_subclass(Tensor),
            "difficult": target["difficult"].as_subclass(Tensor),
            "iscrowd": target["iscrowd"].as_subclass(Tensor),
            "image_id": target["image_id"],
            "orig_size": target["orig_size"],
            "path": target["path"],
        }
        return x, out

    def _bounded(self, image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """A picture shrunk (antialiased) so that augmenting it stays cheap: its longer side at most
        MAX_SIDE_FACTOR x the network input's, and its zoom-out canvas (expand_ratio^2 x its pixels)
        at most MAX_AUGMENT_PIXELS. A 12 MP photo zoomed out 16x would otherwise need 9 GB; the
        network sees at most its input size of any crop, so the shrunk picture loses nothing it uses."""
        h, w = int(image.shape[-2]), int(image.shape[-1])
        side = max(self.preprocessor.image_size)
        scale = min(1.0, MAX_SIDE_FACTOR * side / max(h, w), (MAX_AUGMENT_PIXELS / (h * w)) ** 0.5 / self.expand_ratio)
        if scale >= 1.0:
            return image, target
        size = [max(1, round(h * scale)), max(1, round(w * scale))]
        return v2.Resize(size, antialias=True)(image, target)

    def _augment(self, image: Any, target: dict[str, Any], seed: int) -> tuple[Any, dict[str, Any]]:
        # transforms.v2 draws from torch's global CPU generator; borrow it for this item.
        state = torch.get_rng_state()
        torch.default_generator.manual_seed(seed)
        try:
            return self.transform(image, target)
        finally:
            torch.set_rng_state(state)
