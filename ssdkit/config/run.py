"""`RunConfig`: one file describing a training run (model, data, optimisation, evaluation).

```yaml
model: {num_classes: 4, image_size: 128, backbone: {type: tiny}, priors: {...}}
data: {train: {type: shapes, ...}, val: {...}, batch_size: 32}
train: {max_steps: 2000, lr: 0.05, schedule: cosine, warmup_steps: 100}
eval: {every_steps: 500}
```

`RunConfig.from_file(path, overrides=["train.lr=0.01"])` reads YAML or JSON safely and applies
dotted overrides (see ssdkit.config.overrides). Under `torchrun` every process reads the same file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ssdkit.config.data import DataConfig
from ssdkit.config.files import config_path, read_config_file, write_config_file
from ssdkit.config.model import SSDConfig
from ssdkit.config.overrides import apply_overrides, validate_config
from ssdkit.config.variables import expand_variables
from ssdkit.devices import check_device_name
from ssdkit.registry import DATASETS, ComponentConfig

__all__ = ["TrainConfig", "EvalConfig", "InitConfig", "RunConfig"]


class TrainConfig(BaseModel):
    """Optimisation and bookkeeping of a run. Give the length as `epochs` or `max_steps` (one of them)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    epochs: Optional[int] = Field(None, ge=1, description="passes over the training set")
    max_steps: Optional[int] = Field(None, ge=1, description="optimizer steps (instead of epochs)")
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="SGD with momentum, or AdamW")
    lr: float = Field(0.01, gt=0, description="base learning rate (for lr_reference_batch pictures when that is set)")
    lr_reference_batch: Optional[int] = Field(
        None,
        ge=1,
        description="the total batch `lr` is meant for: the rate used is lr * data.batch_size * processes / "
        "lr_reference_batch (linear scaling rule); null: lr as given, whatever the batch",
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(False, description="SGD: Nesterov momentum")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    weight_decay: float = Field(5e-4, ge=0, description="L2 (SGD) or decoupled (AdamW) weight decay")
    norm_weight_decay: Optional[float] = Field(
        None, ge=0, description="weight decay of norm layers' weights and of all biases (default: weight_decay)"
    )
    schedule: Literal["multistep", "cosine", "constant"] = Field("cosine", description="decay after warm-up")
    warmup_steps: int = Field(0, ge=0, description="steps of linear warm-up from warmup_factor * lr")
    warmup_factor: float = Field(0.001, gt=0, le=1, description="learning-rate factor at step 0 of the warm-up")
    milestones: list[float] = Field(
        [2 / 3, 8 / 9], description="multistep: where the rate is multiplied by gamma, as fractions of the run"
    )
    gamma: float = Field(0.1, gt=0, le=1, description="multistep: factor at each milestone")
    min_lr_factor: float = Field(0.0, ge=0, le=1, description="cosine: final rate as a fraction of lr")
    grad_clip: Optional[float] = Field(None, gt=0, description="clip the global gradient norm to this (off: null)")
    amp: bool = Field(True, description="mixed precision (float16 autocast + gradient scaling); CUDA only")
    channels_last: bool = Field(False, description="channels-last memory format (often faster on CPU and GPU)")
    sync_batchnorm: bool = Field(
        False, description="with several CUDA processes, batch-norm statistics over all of them"
    )
    seed: int = Field(0, ge=0, description="seeds weights, data order and augmentation: CPU runs repeat exactly")
    device: str = Field("auto", description="'auto' (CUDA when there is one), 'cpu', 'cuda', 'cuda:1', 'mps'")
    nan_policy: Literal["stop", "skip"] = Field(
        "stop", description="a non-finite loss stops the run, or its batch is skipped (counted and reported)"
    )
    log_every: int = Field(20, ge=1, description="steps between progress-bar updates and metrics lines")
    checkpoint_every: Optional[int] = Field(
        None, ge=1, description="steps between checkpoints (default: at the end of each epoch); always at the end"
    )
    out_dir: str = Field("runs/train", description="run folder: checkpoints, metrics.jsonl, config.yaml")
    progress: bool = Field(True, description="show a progress bar (rank 0 only)")

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        return check_device_name(v)

    @model_validator(mode="after")
    def _length(self) -> TrainConfig:
        if (self.epochs is None) == (self.max_steps is None):
            got = "both" if self.epochs is not None else "neither"
            raise ValueError(f"give exactly one of train.epochs or train.max_steps (got {got})")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"milestones are fractions of the run in (0, 1), got {self.milestones}")
        return self


class EvalConfig(BaseModel):
    """Periodic evaluation on the validation split, and which checkpoint is "best"."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    enabled: bool = Field(True, description="evaluate during training (needs data.val)")
    every_epochs: int = Field(1, ge=1, description="evaluate at the end of every N-th epoch")
    every_steps: Optional[int] = Field(None, ge=1, description="evaluate every N steps instead of per epoch")
    at_end: bool = Field(True, description="also evaluate after the last step")
    metric: Literal["auto", "map", "val_loss"] = Field(
        "auto", description="best checkpoint by mAP (higher is better) or validation loss; auto: mAP (the same as map)"
    )
    protocol: Literal["voc", "coco"] = Field("voc", description="mAP protocol: VOC mAP@0.5 or COCO mAP@[.5:.95]")
    use_07_metric: bool = Field(False, description="VOC: 11-point AP of VOC2007 instead of the area")


class InitConfig(BaseModel):
    """Weights to start training from (fine-tuning); ignored when resuming a run."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    weights: Optional[str] = Field(
        None,
        description="named weights ('coco' for the model's backbone, or a full name: `ssdkit weights list`), a local "
        "weights file, a checkpoint or another run's folder; every tensor loads but the classification head's when "
        "num_classes differs (a shape mismatch elsewhere is an error)",
    )

    @field_validator("weights")
    @classmethod
    def _local(cls, v: Optional[str]) -> Optional[str]:
        from ssdkit.io.weights import reject_url

        return reject_url(v)


# Data-set fields that take the model's value when a run config leaves them out (a data set whose
# config has such a field: shapes' image_size, voc's class_names), so that each fact is written once.
# image_size must then agree: the pictures are drawn (or expected) at the network's input size.
# Differing class names are left to `ssdkit.data.check_classes`, which names the first label that differs.
INHERITED = ("image_size", "class_names")
MUST_AGREE = ("image_size",)
SPLITS = ("train", "val")


def _square(value: Any) -> Any:
    """An image size as (height, width) when it is one (an int means square), else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return tuple(value)
    return None


def _model_values(model: Any) -> dict[str, Any]:
    """The model's INHERITED values from its raw mapping (or config), None where missing or malformed
    (the model's own validation reports those)."""
    if isinstance(model, SSDConfig):
        return {"image_size": model.image_size, "class_names": model.class_names}
    if not isinstance(model, dict):
        return {}
    size = _square(model.get("image_size", SSDConfig.model_fields["image_size"].default))
    names = model.get("class_names")
    return {"image_size": size, "class_names": list(names) if isinstance(names, list) else None}


def _dataset_raw(data: dict[str, Any], split: str) -> Any:
    """data[split] as a raw mapping: as given, or DataConfig's default with only what it sets itself."""
    raw = data[split] if split in data else DataConfig.model_fields[split].get_default(call_default_factory=True)
    if isinstance(raw, ComponentConfig):
        raw = {"type": raw.type, **raw.model_dump(exclude_unset=True)}
    return raw


def _inherit(split: str, raw: Any, model: dict[str, Any]) -> Any:
    """The data set `raw` with the model's values filled in where it has the field and leaves it out."""
    kind = raw.get("type") if isinstance(raw, dict) else None
    if not (isinstance(kind, str) and kind in DATASETS):
        return raw  # the data set's own validation says what is wrong
    fields = DATASETS.config_class(kind).model_fields
    raw = dict(raw)
    for name in INHERITED:
        if name not in fields or model.get(name) is None:
            continue
        if raw.get(name) is None:
            raw[name] = model[name]
        elif name in MUST_AGREE and _square(raw[name]) != model[name]:
            raise ValueError(
                f"data.{split}.{name} is {raw[name]} but model.{name} is {list(model[name])}: the data set "
                f"takes the model's {name}; leave data.{split}.{name} out (it follows model.{name}) or make "
                "the two equal"
            )
    return raw


class RunConfig(BaseModel):
    """A whole training run; `ssdkit train CONFIG.yaml` and `ssdkit.train(cfg)` take one.

    A data set's `image_size` and `class_names`, where its config has them and the run leaves them
    out, are the model's (see INHERITED); `DataConfig` on its own keeps each data set's defaults."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    model: SSDConfig
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig = Field(default_factory=EvalConfig)
    init: InitConfig = Field(default_factory=InitConfig)

    @model_validator(mode="before")
    @classmethod
    def _data_from_model(cls, values: Any) -> Any:
        # Before the data sets are validated, so that an inherited value passes their own checks.
        data = values.get("data") if isinstance(values, dict) else None
        if isinstance(data, DataConfig):  # what its maker set, as values (defaults are filled in again)
            data = {name: getattr(data, name) for name in data.model_fields_set}
        if not isinstance(data, dict):
            return values
        model = _model_values(values.get("model"))
        data = {**data, **{split: _inherit(split, _dataset_raw(data, split), model) for split in SPLITS}}
        return {**values, "data": data}

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        overrides: Sequence[str] = (),
        *,
        source: str = "run config",
        variables: Optional[Mapping[str, str]] = None,
    ) -> RunConfig:
        """Validate a mapping after applying `overrides` and expanding `${NAME}` in its strings
        (`variables` first, then the environment: see ssdkit.config.variables); errors name the
        source and suggest keys."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
        data = apply_overrides(cls, data, list(overrides))
        try:
            data = expand_variables(data, variables)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        return validate_config(cls, data, source)

    @classmethod
    def from_file(
        cls, path: str | Path, overrides: Sequence[str] = (), *, variables: Optional[Mapping[str, str]] = None
    ) -> RunConfig:
        """Read YAML (safe loader) or JSON, apply `key=value` overrides, expand `${NAME}`, validate.
        `path` may also name a shipped example or recipe (`example_configs()`), e.g. "voc0712_ssd300"."""
        path = config_path(path)
        return cls.from_dict(read_config_file(path), overrides, source=str(path), variables=variables)

    def with_overrides(self, overrides: Sequence[str]) -> RunConfig:
        """A copy with `key=value` overrides applied; `model.image_size=...` carries over to the data sets
        that took the model's value."""
        return type(self).from_dict(self._as_written(), overrides)

    def to_file(self, path: str | Path) -> Path:
        """YAML or JSON by suffix; `from_file` reads it back unchanged."""
        return write_config_file(path, self._as_written())

    def _as_written(self) -> dict[str, Any]:
        """`model_dump(mode="json")` less each data-set value equal to the model's: written once, as a
        user writes it, and inherited again when read."""
        out = self.model_dump(mode="json")
        for split in SPLITS:
            dataset = out["data"][split]
            for name in INHERITED:
                if name in dataset and dataset[name] == out["model"].get(name):
                    del dataset[name]
        return out
