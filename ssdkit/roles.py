"""What each role of an SSD must provide: one `typing.Protocol` per registry.

A component registered in a registry (`ssdkit.registry`) is checked against its role's protocol
when it is built: a missing attribute or method is an error naming the component and the member,
instead of an AttributeError deep inside training. The protocols are also what `SSD` is typed with.

Shapes: B images, P priors over all levels, C classes including background (column 0), G ground
truths per image (padded), L feature-map levels. Boxes are normalised to [0, 1] of the network
input; priors are cxcywh, every other box xyxy (docs/coordinates.md).

Optional members (not required, used when present): a head's `init_class_bias(bias [C])`; a loss's
`score_activation` ("softmax" or "sigmoid") and `initial_class_bias(num_classes) -> Tensor | None`; a
post-processor's `from_logits(boxes, logits)`.

This module is imported by the registry, below the components: it needs no torch at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "Backbone",
    "Head",
    "PriorGenerator",
    "Matcher",
    "BoxCoder",
    "Loss",
    "Postprocess",
    "Dataset",
    "protocol_members",
    "missing_members",
    "declared_levels",
    "check_levels",
    "check_feature_maps",
]


@runtime_checkable
class Backbone(Protocol):
    """An `nn.Module`: x `[B, 3, H, W]` -> list of L feature maps `[B, out_channels[l], H_l, W_l]`."""

    out_channels: list[int]

    def __call__(self, x: Tensor) -> list[Tensor]: ...


@runtime_checkable
class Head(Protocol):
    """An `nn.Module`, built with `in_channels` (the backbone's `out_channels`), `num_anchors` (the prior
    generator's) and `num_classes`: list of L feature maps -> (loc `[B, P, 4]` offsets, logits `[B, P, C]`),
    priors in the generator's order (level, row, column, anchor)."""

    def __call__(self, features: list[Tensor]) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class PriorGenerator(Protocol):
    """`num_anchors`: priors per feature-map location, one count per level;
    `__call__(feature_sizes [(h, w), ...], image_size (h, w))` -> `[P, 4]` cxcywh normalised."""

    @property
    def num_anchors(self) -> list[int]: ...

    def __call__(self, feature_sizes: list[tuple[int, int]], image_size: tuple[int, int]) -> Tensor: ...


@runtime_checkable
class Matcher(Protocol):
    """(gt_boxes `[B, G, 4]` xyxy, gt_mask `[B, G]` bool, priors `[P, 4]` xyxy) -> (matches `[B, P]` int64,
    the matched ground-truth index or -1; iou `[B, P]` float)."""

    def __call__(self, gt_boxes: Tensor, gt_mask: Tensor, priors: Tensor) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class BoxCoder(Protocol):
    """encode(boxes `[..., 4]` xyxy, priors `[..., 4]` cxcywh) -> offsets `[..., 4]`;
    decode(offsets, priors cxcywh) -> boxes `[..., 4]` xyxy. Leading dimensions broadcast."""

    def encode(self, boxes: Tensor, priors: Tensor) -> Tensor: ...

    def decode(self, offsets: Tensor, priors: Tensor) -> Tensor: ...


@runtime_checkable
class Loss(Protocol):
    """Built with the model's `box_coder` and `matcher`: (loc `[B, P, 4]`, logits `[B, P, C]`, targets (one dict
    per image: boxes `[G, 4]` xyxy, labels `[G]` int64 in 1 .. C - 1), priors `[P, 4]` cxcywh) -> dict of
    float32 scalars, their sum under "loss"."""

    def __call__(
        self, loc: Tensor, logits: Tensor, targets: list[dict[str, Any]], priors: Tensor
    ) -> dict[str, Tensor]: ...


@runtime_checkable
class Postprocess(Protocol):
    """(boxes `[B, P, 4]` xyxy, or a function (image index `[N]`, prior index `[N]`) -> `[N, 4]`; probs
    `[B, P, C]`) -> one dict per image: boxes `[N, 4]` xyxy, scores `[N]`, labels `[N]` int64 in 1 .. C - 1."""

    def __call__(self, boxes: Any, probs: Tensor) -> list[dict[str, Tensor]]: ...


@runtime_checkable
class Dataset(Protocol):
    """Items of pictures and their boxes (`ssdkit.data.DetectionDataset`); `class_names` names labels 1 ..."""

    class_names: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


_NOT_MEMBERS = {"__init__", "__subclasshook__", "__class_getitem__", "__init_subclass__", "__protocol_attrs__"}


def protocol_members(protocol: type) -> list[str]:
    """The attributes and methods `protocol` declares (`typing.get_protocol_members` from Python 3.13)."""
    names: list[str] = []
    for klass in protocol.__mro__:
        if klass in (object, Protocol) or klass.__name__ in ("Protocol", "Generic"):
            continue
        for name in [*getattr(klass, "__annotations__", {}), *vars(klass)]:
            dunder = name.startswith("__") and name != "__call__" and name not in ("__len__", "__getitem__")
            if dunder or name.startswith("_abc") or name in _NOT_MEMBERS or name in names:
                continue
            if (
                name in getattr(klass, "__annotations__", {})
                or callable(vars(klass).get(name))
                or isinstance(vars(klass).get(name), property)
            ):
                names.append(name)
    return names


def missing_members(obj: Any, protocol: type) -> list[str]:
    """The members of `protocol` that `obj` lacks (a method must be callable)."""
    missing = []
    for name in protocol_members(protocol):
        if name in ("__call__", "__len__", "__getitem__"):
            ok = hasattr(type(obj), name)
        else:
            ok = hasattr(obj, name)
        if not ok:
            missing.append(name)
    return missing


# ---------- the derived-value invariant: one function, one message ----------
def declared_levels(component_cfg: Any) -> Optional[int]:
    """The feature-map levels a backbone or prior-generator config declares through an optional
    `num_levels()` method, or None when it declares none (its levels are then known once built)."""
    fn: Optional[Callable[[], int]] = getattr(component_cfg, "num_levels", None)
    return int(fn()) if callable(fn) else None


def check_levels(prior_levels: int, backbone_levels: int, backbone: str) -> None:
    """The one check that the prior generator has a level per backbone feature map (the head pairs
    `out_channels[l]` with `num_anchors[l]`). Raises ValueError naming both counts."""
    if prior_levels != backbone_levels:
        raise ValueError(
            f"priors has {prior_levels} levels but backbone '{backbone}' gives {backbone_levels} feature maps; "
            "they must be equal"
        )


def check_feature_maps(feature_sizes: Sequence[Any], levels: int, unit: str = "levels") -> None:
    """A prior generator's precondition: one (h, w) in `feature_sizes` per level it has."""
    if len(feature_sizes) != levels:
        raise ValueError(f"the backbone gives {len(feature_sizes)} feature maps but the priors have {levels} {unit}")
