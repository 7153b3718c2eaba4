"""`DataConfig` (what to load and how) and `AugmentConfig` (the SSD augmentation policy)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ssdkit.config.model import component
from ssdkit.registry import DATASETS

__all__ = ["DataConfig", "AugmentConfig", "PhotometricConfig", "ExpandConfig", "CropConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _range(v: tuple[float, float], name: str) -> tuple[float, float]:
    if v[0] > v[1]:
        raise ValueError(f"{name}: low {v[0]} > high {v[1]}")
    return v


class PhotometricConfig(_Strict):
    """Random brightness, contrast, saturation, hue and channel order, each applied with probability p
    (`torchvision.transforms.v2.RandomPhotometricDistort`); factors are ranges drawn uniformly."""

    enabled: bool = True
    p: float = Field(0.5, ge=0, le=1)
    brightness: tuple[float, float] = (0.875, 1.125)
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.5, 1.5)
    hue: tuple[float, float] = (-0.05, 0.05)

    @field_validator("brightness", "contrast", "saturation")
    @classmethod
    def _factors(cls, v: tuple[float, float], info) -> tuple[float, float]:
        if v[0] < 0:
            raise ValueError(f"{info.field_name} factors must be >= 0, got {v}")
        return _range(v, info.field_name)

    @field_validator("hue")
    @classmethod
    def _hue(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not -0.5 <= v[0] <= v[1] <= 0.5:
            raise ValueError(f"hue must satisfy -0.5 <= low <= high <= 0.5, got {v}")
        return v


class ExpandConfig(_Strict):
    """Zoom out: place the picture on a canvas up to `max_ratio` times larger per side, filled with the
    preprocessing mean (so the filled area is 0 after normalising)."""

    enabled: bool = True
    p: float = Field(0.5, ge=0, le=1)
    max_ratio: float = Field(4.0, ge=1, le=16)


class CropConfig(_Strict):
    """IoU-constrained random crop (`torchvision.transforms.v2.RandomIoUCrop`): a crop whose IoU with
    some box is at least one of `min_iou` (an option >= 1 keeps the whole picture); boxes whose
    centre falls outside the crop are dropped."""

    enabled: bool = True
    min_scale: float = Field(0.3, gt=0, le=1, description="crop side / picture side, lowest")
    max_scale: float = Field(1.0, gt=0, le=1)
    min_aspect_ratio: float = Field(0.5, gt=0)
    max_aspect_ratio: float = Field(2.0, gt=0)
    min_iou: list[float] = Field([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0], min_length=1)
    trials: int = Field(40, ge=1, le=1000)

    @field_validator("min_iou")
    @classmethod
    def _keep_option(cls, v: list[float]) -> list[float]:
        # torchvision's crop search only ends through a found crop or the keep option: without
        # the latter a picture whose boxes no crop can satisfy would loop forever.
        if not any(o >= 1.0 for o in v):
            raise ValueError(f"min_iou must include 1.0 (keep the whole picture), got {v}")
        if any(o < 0 for o in v):
            raise ValueError(f"min_iou options must be >= 0, got {v}")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> CropConfig:
        _range((self.min_scale, self.max_scale), "min_scale/max_scale")
        _range((self.min_aspect_ratio, self.max_aspect_ratio), "min_aspect_ratio/max_aspect_ratio")
        return self


class AugmentConfig(_Strict):
    """The training augmentation policy of the SSD paper, in this order: photometric distortion,
    expand (zoom out), IoU crop, horizontal flip; then boxes are clamped and ones under
    `min_box_size` pixels dropped. Evaluation never augments (resize and normalise only)."""

    enabled: bool = Field(True, description="False: training also only resizes and normalises")
    photometric: PhotometricConfig = Field(default_factory=PhotometricConfig)
    expand: ExpandConfig = Field(default_factory=ExpandConfig)
    crop: CropConfig = Field(default_factory=CropConfig)
    flip_p: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    min_box_size: float = Field(1.0, ge=1, description="boxes narrower or lower than this (pixels) are dropped")


def _shapes(**fields) -> object:
    return lambda: DATASETS.validate_config({"type": "shapes", **fields})


class DataConfig(_Strict):
    """Training and validation data and how they are loaded.

    `train` / `val` each name a registered data set by `type` ("shapes", "voc", "coco", or a plugin's)
    with its fields. The default is generated shapes (val from another seed), as nothing is downloaded.
    """

    train: component(DATASETS) = Field(default_factory=_shapes())
    val: component(DATASETS) = Field(default_factory=_shapes(seed=1, num_images=200))
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    batch_size: int = Field(32, ge=1, le=65536, description="pictures per batch on each process")
    val_batch_size: Optional[int] = Field(None, ge=1, le=65536, description="default: batch_size")
    num_workers: int = Field(
        2, ge=0, le=256, description="loader worker processes per process (0: in-process); GPU runs want one per core"
    )
    prefetch_factor: int = Field(4, ge=1, le=64, description="batches each worker prepares ahead (with workers)")
    pin_memory: Optional[bool] = Field(
        None, description="page-locked batches for faster, asynchronous copies to the GPU (null: when CUDA is there)"
    )
    on_bad_item: Literal["error", "skip"] = Field(
        "error", description="an unreadable item: stop with an error naming it, or skip it with a warning"
    )
    max_skipped_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="on_bad_item=skip: training stops once more than this share of the items read were skipped "
        "(judged after min(100, data set size) items); 1 never stops",
    )
