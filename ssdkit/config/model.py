"""`SSDConfig`: the typed description of a whole detector.

Each component field holds the config of one registered component, chosen by its
`type`; the set of types is open (plugins add their own) and a YAML file selects
them by name. `num_classes` counts the background class (VOC: 20 objects -> 21);
label 0 is always background.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    create_model,
    field_validator,
    model_validator,
)

from ssdkit.config.files import read_config_file, write_config_file
from ssdkit.config.overrides import validate_config
from ssdkit.registry import (
    ALL_REGISTRIES,
    BACKBONES,
    BOX_CODERS,
    HEADS,
    LOSSES,
    MATCHERS,
    POSTPROCESS,
    PRIORS,
    ComponentConfig,
    Registry,
)
from ssdkit.roles import check_levels, declared_levels

__all__ = ["SSDConfig", "PreprocessConfig", "component", "image_size_type"]

MAX_CLASSES = 100_000
MAX_IMAGE_SIDE = 8192
# A NaN or infinite mean, std or scale would make every input NaN: no detections, no error.
Finite = Annotated[float, Field(allow_inf_nan=False)]
# The pixel grids of `ssdkit.resize.resize_bilinear`.
ResizeMode = Literal["bilinear", "bilinear_asymmetric", "bilinear_align_corners"]


def image_size_type(max_side: int) -> Any:
    """Annotation of a `(height, width)` field in pixels: one int means square, each side in [16, max_side]."""

    def sides(v: tuple[int, int]) -> tuple[int, int]:
        if any(not 16 <= side <= max_side for side in v):
            raise ValueError(f"each side of image_size must lie in [16, {max_side}] pixels, got {v}")
        return v

    return Annotated[
        tuple[int, int], BeforeValidator(lambda v: (v, v) if isinstance(v, int) else v), AfterValidator(sides)
    ]


# A network input: (height, width), each side in [16, MAX_IMAGE_SIDE] pixels.
ImageSize = image_size_type(MAX_IMAGE_SIDE)


def component(registry: Registry):
    """Annotation of a field holding a config of any component registered in `registry`."""
    return Annotated[SerializeAsAny[ComponentConfig], BeforeValidator(registry.validate_config)]


class PreprocessConfig(BaseModel):
    """How a picture becomes the model's input: x = (pixel * scale - mean) / std, per channel."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    channel_order: Literal["RGB", "BGR"] = Field("RGB", description="channel order the network expects")
    scale: float = Field(1 / 255, gt=0, allow_inf_nan=False, description="applied to 0..255 pixel values first")
    mean: tuple[Finite, Finite, Finite] = Field((0.485, 0.456, 0.406), description="per channel, after scale")
    std: tuple[Finite, Finite, Finite] = Field((0.229, 0.224, 0.225), description="per channel, after scale")
    resize: ResizeMode = Field(
        "bilinear",
        description="pixel grid of the bilinear resize: half-pixel centres (PyTorch, PIL, TF 2), asymmetric "
        "(TensorFlow 1's ResizeBilinear, in TF OD API graphs) or align_corners; see ssdkit.resize",
    )

    @field_validator("std")
    @classmethod
    def _std_positive(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not s > 0 for s in v):
            raise ValueError("std values must be > 0")
        return v


class SSDConfig(BaseModel):
    """A whole SSD: one config per component plus the shared settings.

    Build it from Python, `SSDConfig.from_file("x.yaml")` or `ssdkit.presets.get(name)`,
    and turn it into a model with `ssdkit.build_model(cfg)`.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    num_classes: int = Field(
        ...,
        ge=2,
        le=MAX_CLASSES,
        description="classes including background (label 0); may be left out when class_names is given "
        "(then len(class_names) + 1)",
    )
    image_size: ImageSize = Field(
        (300, 300), description="network input (height, width) in pixels; a single int means square"
    )
    class_names: Optional[list[str]] = Field(
        None, description="names of labels 1 .. num_classes - 1 (background is not listed)"
    )
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    backbone: component(BACKBONES)
    head: component(HEADS) = Field(default_factory=lambda: HEADS.validate_config({"type": "ssd"}))
    priors: component(PRIORS)
    matcher: component(MATCHERS) = Field(default_factory=lambda: MATCHERS.validate_config({"type": "ssd"}))
    box_coder: component(BOX_CODERS) = Field(default_factory=lambda: BOX_CODERS.validate_config({"type": "ssd"}))
    loss: Optional[component(LOSSES)] = Field(
        default_factory=lambda: LOSSES.validate_config({"type": "multibox"}),
        description="training loss (null: an inference-only model); see ssdkit.losses",
    )
    postprocess: component(POSTPROCESS) = Field(default_factory=lambda: POSTPROCESS.validate_config({"type": "hard"}))

    @model_validator(mode="before")
    @classmethod
    def _num_classes_from_names(cls, data: Any) -> Any:
        # The class count is written once: with class_names given, num_classes follows (background + names).
        names = data.get("class_names") if isinstance(data, dict) else None
        if isinstance(names, list) and data.get("num_classes") is None:
            data = {**data, "num_classes": len(names) + 1}
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> SSDConfig:
        if self.class_names is not None and len(self.class_names) != self.num_classes - 1:
            raise ValueError(
                f"class_names lists {len(self.class_names)} names but num_classes={self.num_classes} "
                f"means {self.num_classes - 1} object classes (background is not named); leave num_classes "
                f"out (it follows from class_names) or name exactly num_classes - 1 classes"
            )
        # Levels declared by both configs are checked here, before anything is built; build_model checks
        # the built parts when a config declares none (ssdkit.roles.declared_levels).
        backbone_levels, prior_levels = declared_levels(self.backbone), declared_levels(self.priors)
        if backbone_levels is not None and prior_levels is not None:
            check_levels(prior_levels, backbone_levels, self.backbone.type)
        return self

    def merged(self, **overrides: Any) -> SSDConfig:
        """This config with top-level fields replaced by `overrides`; a dict for a component of the same
        `type` merges into it (``postprocess={"iou_threshold": 0.5}``), so a partial dict overrides a
        component left at its defaults too. New `class_names` without `num_classes` set `num_classes`;
        a new `num_classes` alone drops the old names."""
        if not overrides:
            return self
        data = self.model_dump()
        for key, value in overrides.items():
            old = data.get(key)
            same_type = (
                isinstance(value, dict)
                and isinstance(old, dict)
                and value.get("type", old.get("type")) == old.get("type")
            )
            data[key] = {**old, **value} if same_type else value
        if "num_classes" in overrides and "class_names" not in overrides:
            data["class_names"] = None
        if overrides.get("class_names") is not None and "num_classes" not in overrides:
            del data["num_classes"]  # follows from the new names
        return type(self).model_validate(data)

    # ---------- files ----------
    @classmethod
    def from_file(cls, path: str | Path) -> SSDConfig:
        """Load a YAML (.yaml/.yml) or JSON (.json) file; YAML is read with a safe loader. A bad value is a
        `pydantic.ValidationError` whose message names the file, the field path and, for an unknown key,
        the closest known one."""
        return validate_config(cls, read_config_file(path), source=str(path))

    def to_file(self, path: str | Path) -> Path:
        """Write YAML or JSON by the file's suffix; `from_file` reads it back unchanged."""
        return write_config_file(path, self.model_dump(mode="json"))

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """JSON schema in which each component field is a union of the registered types."""
        return _schema_model().model_json_schema(*args, **kwargs)


def _tagged(registry: Registry) -> Any:
    variants = []
    for name in registry.names():
        base = registry.config_class(name)
        variants.append(
            create_model(
                f"{base.__name__}_{name}".replace("-", "_"),
                __base__=base,
                type=(Literal[name], name),  # type: ignore[valid-type]
            )
        )
    if not variants:
        return ComponentConfig
    if len(variants) == 1:
        return variants[0]
    return Annotated[Union[tuple(variants)], Field(discriminator="type")]


def _schema_model() -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for name, info in SSDConfig.model_fields.items():
        role = ALL_REGISTRIES.get(name)
        if role is None:
            fields[name] = (info.annotation, info)
        else:
            ann = _tagged(role)
            default = ... if info.is_required() else info.get_default(call_default_factory=True)
            field = Field(default, description=info.description)
            fields[name] = (Optional[ann] if name == "loss" else ann, field)
    return create_model("SSDConfig", __config__=ConfigDict(extra="forbid"), **fields)
