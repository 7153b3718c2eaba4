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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ssdkit.config.data import DataConfig
from ssdkit.config.files import config_path, read_config_file, write_config_file
from ssdkit.config.model import SSDConfig
from ssdkit.config.overrides import apply_overrides, unknown_key_hints
from ssdkit.config.variables import expand_variables
from ssdkit.devices import check_device_name

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
        "auto", description="best checkpoint by mAP (higher is better) or validation loss; auto: mAP when available"
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


class RunConfig(BaseModel):
    """A whole training run; `ssdkit train CONFIG.yaml` and `ssdkit.train(cfg)` take one."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    model: SSDConfig
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig = Field(default_factory=EvalConfig)
    init: InitConfig = Field(default_factory=InitConfig)

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
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            hints = unknown_key_hints(cls, data, exc.errors())
            extra = ("\n" + "\n".join(hints)) if hints else ""
            raise ValueError(f"{source}: {exc}{extra}") from exc

    @classmethod
    def from_file(
        cls, path: str | Path, overrides: Sequence[str] = (), *, variables: Optional[Mapping[str, str]] = None
    ) -> RunConfig:
        """Read YAML (safe loader) or JSON, apply `key=value` overrides, expand `${NAME}`, validate.
        `path` may also name a shipped example or recipe (`example_configs()`), e.g. "voc0712_ssd300"."""
        path = config_path(path)
        return cls.from_dict(read_config_file(path), overrides, source=str(path), variables=variables)

    def with_overrides(self, overrides: Sequence[str]) -> RunConfig:
        return type(self).from_dict(self.model_dump(mode="json"), overrides)

    def to_file(self, path: str | Path) -> Path:
        """YAML or JSON by suffix; `from_file` reads it back unchanged."""
        return write_config_file(path, self.model_dump(mode="json"))
