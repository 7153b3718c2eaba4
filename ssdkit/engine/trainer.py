"""The training loop: `train(cfg)` and the `Trainer` behind it.

`Trainer(cfg)` builds everything a run needs (model, loaders, optimizer, schedule, hooks, and the
state of a resumed run); `fit()` is a short loop over optimizer steps that calls the hooks
(ssdkit.engine.hooks): logging, evaluation, checkpoints, the NaN policy and the learning-rate
schedule are hooks, and a user adds their own (`train(cfg, hooks=[...])`).

One step: forward (float16 autocast on CUDA when `amp`), loss in float32, a finiteness check of
the summed loss (one host sync), backward, optional clipping of the global gradient norm,
optimizer step. Loss terms stay on the device; MetricsWriter reads them once per log step.

A run folder holds `config.yaml`, `metrics.jsonl`, `last.pt` and `best.pt`. Checkpoints are
written atomically (ssdkit.engine.checkpoint); resuming restores weights, optimizer, schedule,
gradient scaler, RNG states and the position in the epoch, and skips the batches of that
epoch already seen without loading their pictures, so a CPU run continues exactly.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from ssdkit.config.run import RunConfig
from ssdkit.data.loader import unpack_batch
from ssdkit.devices import resolve_device
from ssdkit.engine import distributed as dist_utils
from ssdkit.engine.batches import resumed_loader, rng_kept, to_device
from ssdkit.engine.checkpoint import FORMAT, load_checkpoint, rng_state, set_rng_state
from ssdkit.engine.hooks import (
    BEST,
    LAST,
    Checkpointer,
    EvalHook,
    HookBase,
    LRSchedule,
    MetricsWriter,
    NaNPolicy,
    NonFiniteLossError,
    SkippedItems,
    StepOutput,
    TooManySkippedError,
)
from ssdkit.engine.optim import build_optimizer, scaled_lr
from ssdkit.engine.runlog import ProgressBar
from ssdkit.engine.schedule import build_scheduler
from ssdkit.io.paths import check_output_folder
from ssdkit.io.weights import claim_limit

__all__ = ["train", "Trainer", "TrainResult", "NonFiniteLossError", "TooManySkippedError", "seed_everything"]


@dataclass
class TrainResult:
    """What a run produced. `metrics`: the last train log values and the last evaluation;
    `stopped`: the reason a hook gave for ending the run before its planned end (None otherwise)."""

    run_dir: Optional[Path]
    last_checkpoint: Optional[Path]
    best_checkpoint: Optional[Path]
    best: Optional[dict[str, Any]]
    metrics: dict[str, Any]
    steps: int
    epoch: float
    nan_skipped: int
    skipped_items: int
    seconds: float
    model: Optional[nn.Module] = field(default=None, repr=False)
    stopped: Optional[str] = None


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) generators."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _class_names(loader: Any) -> Optional[list[str]]:
    """The class names of the data set under a loader (through any wrapping `.dataset`s)."""
    data = getattr(loader, "dataset", None)
    while data is not None and getattr(data, "class_names", None) is None:
        data = getattr(data, "dataset", None)
    return None if data is None else list(data.class_names)


def _run_config(cfg: RunConfig | dict | str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    if isinstance(cfg, RunConfig):
        return cfg.with_overrides(overrides) if overrides else cfg
    if isinstance(cfg, dict):
        return RunConfig.from_dict(cfg, overrides)
    if isinstance(cfg, (str, Path)):
        return RunConfig.from_file(cfg, overrides)
    raise TypeError(f"expected a RunConfig, a mapping or a config file path, got {type(cfg).__name__}")


def _checked_hooks(hooks: Sequence[HookBase]) -> list[HookBase]:
    for i, hook in enumerate(hooks):
        if not isinstance(hook, HookBase):
            raise TypeError(
                f"hooks[{i}]: expected an ssdkit.engine.HookBase, got {type(hook).__name__}; subclass HookBase "
                "and override the events you need (before_train, before_step, after_step, after_eval, after_train)"
            )
    return list(hooks)


class Trainer:
    """One training run described by a `RunConfig`; the constructor builds everything, `fit()` runs it.

    Args:
        cfg: the run config (a `RunConfig`, a mapping or a YAML/JSON path).
        out_dir: run folder (default `cfg.train.out_dir`).
        resume: None, True (the run folder's last.pt) or a checkpoint path.
        progress: show the progress bar (default `cfg.train.progress`); rank 0 only.
        hooks: extra `HookBase`s, called after the built-in ones (`default_hooks()`) but before the
            last of them, the Checkpointer; `trainer.hooks` is the whole list and may be edited before `fit()`.

    Construction seeds the global RNGs (`train.seed`), builds the model on its device, and, under
    torchrun, starts the process group, which `fit()` ends.

    State the hooks read and write: `step` (optimizer steps done), `epoch`, `batch_in_epoch`,
    `total_steps`, `steps_per_epoch`, `done`, `best`, `last_eval`, `last_log`, `eval_step`,
    `nan_skipped`, `skipped_items`, `items_seen`; and `model` (bare), `net` (what is trained: the
    model or its DDP wrapper), `optimizer`, `scheduler`, `scaler`, `train_loader`, `val_loader`.
    """

    def __init__(
        self,
        cfg: RunConfig | dict | str | Path,
        *,
        out_dir: str | Path | None = None,
        resume: bool | str | Path | None = None,
        progress: Optional[bool] = None,
        hooks: Optional[Sequence[HookBase]] = None,
    ) -> None:
        self.cfg = _run_config(cfg)
        self.tc = self.cfg.train
        self.dist = dist_utils.from_env()
        self.out_dir = Path(out_dir if out_dir is not None else self.tc.out_dir)
        if resume is True:
            resume = self.out_dir / LAST
        self.resume_path = Path(resume) if resume else None
        self.show_progress = self.tc.progress if progress is None else progress
        extra = _checked_hooks(hooks or ())
        self._check_run_folder()
        self.device = resolve_device(self.tc.device, self.dist.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self._started_group = dist_utils.init(self.dist, self.device)
        try:
            seed_everything(self.tc.seed)
            self._build_model()
            self._build_loaders()
            self._build_optimization()
            self._init_state()
            if self.resume_path is not None:
                self._load(self.resume_path)
        except BaseException:
            dist_utils.cleanup(self._started_group)
            raise
        built_in = self.default_hooks()
        # Checkpointer last: a checkpoint then holds the whole step, the user hooks' state included.
        self.hooks: list[HookBase] = built_in[:-1] + extra + built_in[-1:]

    # ------------------------------------------------------------------ build
    def _check_run_folder(self) -> None:
        check_output_folder(self.out_dir, "run folder (--out / train.out_dir)")
        if self.resume_path is not None and not self.resume_path.is_file():
            raise FileNotFoundError(f"no checkpoint to resume from: {self.resume_path}")
        if self.dist.is_main and self.resume_path is None and (self.out_dir / LAST).exists():
            raise FileExistsError(
                f"{self.out_dir} already holds a run ({LAST}); resume it (--resume) or choose another folder (--out)"
            )

    def _build_model(self) -> None:
        from ssdkit.build import build_model
        from ssdkit.io.sources import init_from, without_backbone_weights

        cfg, tc = self.cfg, self.tc
        # init.weights replace the backbone's starting weights too: neither fetch nor read those
        model = build_model(without_backbone_weights(cfg.model) if cfg.init.weights is not None else cfg.model)
        if cfg.init.weights is not None and self.resume_path is None:
            init_from(model, cfg.init.weights)
        if model.loss is None:
            raise ValueError("the model config has no loss: set `model.loss` (e.g. {type: multibox}) to train it")
        if tc.sync_batchnorm and self.dist.distributed:
            if self.device.type != "cuda":
                raise ValueError("train.sync_batchnorm works only on CUDA devices (torch's SyncBatchNorm)")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.weights_loaded = True  # its weights are what this run trains (predict does not call them random)
        model.to(self.device)
        if tc.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.amp = bool(tc.amp and self.device.type == "cuda")

    def _build_loaders(self) -> None:
        from ssdkit.data import build_loader

        cfg, tc, info = self.cfg, self.tc, self.dist
        self.train_loader = build_loader(
            cfg.data, cfg.model, "train", seed=tc.seed, rank=info.rank, world_size=info.world_size
        )
        if cfg.model.class_names is None:  # name the labels as the data set does (e.g. a COCO file's categories)
            names = _class_names(self.train_loader)
            if names is not None:  # (a copy: the caller's config stays as given)
                self.model.config = cfg.model.model_copy(update={"class_names": names})
                self.cfg = cfg.model_copy(update={"model": self.model.config})
                self.model.class_names = list(names)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ValueError("the training loader yields no batches (is the data set smaller than one batch?)")
        self.total_steps = tc.max_steps if tc.max_steps is not None else tc.epochs * self.steps_per_epoch
        self.val_loader = None
        if cfg.eval.enabled and getattr(cfg.data, "val", None) is not None and info.is_main:
            self.val_loader = build_loader(cfg.data, cfg.model, "val", seed=tc.seed)
        self.metric = "map" if cfg.eval.metric in ("auto", "map") else "val_loss"

    def _build_optimization(self) -> None:
        tc = self.tc
        self.total_batch = self.cfg.data.batch_size * self.dist.world_size
        self.lr = scaled_lr(tc.lr, self.total_batch, tc.lr_reference_batch)
        self.optimizer = build_optimizer(self.model, tc, lr=self.lr)
        self.scheduler = build_scheduler(
            self.optimizer,
            total_steps=self.total_steps,
            schedule=tc.schedule,
            warmup_steps=tc.warmup_steps,
            warmup_factor=tc.warmup_factor,
            milestones=tuple(tc.milestones),
            gamma=tc.gamma,
            min_factor=tc.min_lr_factor,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net: nn.Module = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        else:
            self.net = self.model
        self._params = [p for p in self.model.parameters() if p.requires_grad]

    def _init_state(self) -> None:
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.nan_skipped = 0
        self.skipped_items = 0
        self.items_seen = 0  # items the training loader was asked for, skipped ones included
        self.best: Optional[dict[str, Any]] = None
        self.last_eval: dict[str, Any] = {}
        self.last_log: dict[str, float] = {}
        self.eval_step: Optional[int] = None  # the step of the last evaluation that was due
        self.rng_to_restore: Optional[dict[str, Any]] = None
        self.hook_states_to_restore: dict[str, Any] = {}
        self.stop_reason: Optional[str] = None
        self.finished = False
        self.bar: Optional[ProgressBar] = None
        self._term_names: list[str] = ["loc", "cls", "loss"]
        self._batches: Optional[Iterator[Any]] = None
        self._fitted = False

    def default_hooks(self) -> list[HookBase]:
        """The built-in hooks, in the order they are called (see ssdkit.engine.hooks)."""
        tc = self.tc
        return [
            NaNPolicy(tc.nan_policy),
            LRSchedule(),
            SkippedItems(self.cfg.data.max_skipped_share, tc.log_every),
            MetricsWriter(tc.log_every, progress=self.show_progress),
            EvalHook(self.cfg.eval),
            Checkpointer(tc.checkpoint_every),
        ]

    # ------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        """What last.pt and best.pt hold (layout: ssdkit.engine.checkpoint)."""
        from ssdkit import __version__

        return {
            "format": FORMAT,
            "ssdkit_version": __version__,
            "state_dict": self.model.state_dict(),
            "config": self.cfg.model.model_dump_json(),
            "run_config": self.cfg.model_dump_json(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "batch_in_epoch": self.batch_in_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.dist.world_size,
            "rng": rng_state(),
            "best": self.best,
            "nan_skipped": self.nan_skipped,
            "skipped_items": self.skipped_items,
            "items_seen": self.items_seen,
            "hooks": self._hook_states(),
        }

    def _keyed_hooks(self) -> list[tuple[str, HookBase]]:
        """`self.hooks`, each with its checkpoint key "ClassName#k" (the k-th hook of that class)."""
        seen: dict[str, int] = {}
        keyed = []
        for hook in self.hooks:
            name = type(hook).__qualname__
            keyed.append((f"{name}#{seen.get(name, 0)}", hook))
            seen[name] = seen.get(name, 0) + 1
        return keyed

    def _hook_states(self) -> dict[str, dict[str, Any]]:
        """Each hook's `state_dict()` that holds something, by its key."""
        return {key: state for key, hook in self._keyed_hooks() if (state := hook.state_dict())}

    def _load(self, path: Path) -> None:
        ckpt = load_checkpoint(path, max_bytes=claim_limit(self.model))
        if ckpt.get("steps_per_epoch") not in (None, self.steps_per_epoch):
            warnings.warn(
                f"{path}: the checkpoint's epochs had {ckpt['steps_per_epoch']} steps, now {self.steps_per_epoch} "
                "(batch size, data or process count changed): the data order will not continue exactly",
                RuntimeWarning,
                stacklevel=3,
            )
        try:
            self.model.load_state_dict(ckpt["state_dict"])
        except RuntimeError as exc:
            raise ValueError(f"{path}: the checkpoint's weights do not fit this run's model: {exc}") from None
        parts = [("optimizer", self.optimizer), ("scheduler", self.scheduler)]
        if ckpt.get("scaler"):
            parts.append(("scaler", self.scaler))
        for name, part in parts:
            try:
                part.load_state_dict(ckpt[name])
            except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as exc:
                raise ValueError(
                    f"{path}: the checkpoint's {name} state does not fit this run's {name} ({type(exc).__name__}: "
                    f"{exc}); was train.{'optimizer' if name == 'optimizer' else 'schedule'} changed? Resume with "
                    "the run's own config, or start a new run from the weights (model.backbone.weights or "
                    "ssdkit.load_weights)"
                ) from None
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        self.batch_in_epoch = int(ckpt.get("batch_in_epoch", 0))
        self.best = ckpt.get("best")
        self.nan_skipped = int(ckpt.get("nan_skipped", 0))
        self.skipped_items = int(ckpt.get("skipped_items", 0))
        self.items_seen = int(ckpt.get("items_seen", 0))
        self.rng_to_restore = ckpt["rng"]
        self.hook_states_to_restore = ckpt.get("hooks") or {}

    # ------------------------------------------------------------------- loop
    def fit(self) -> TrainResult:
        """Run the steps left (all, or those after the resumed checkpoint), calling the hooks."""
        if self._fitted:
            raise RuntimeError("this Trainer has run already; build a new one (resume=True continues the run)")
        self._fitted = True
        try:
            start = self._begin()
            self.call_hooks("before_train")
            while self.step < self.total_steps and self.stop_reason is None:
                self.call_hooks("before_step")
                out = self.run_step()
                self.call_hooks("after_step", out)
            if self.stop_reason is not None and self.step < self.total_steps:
                self.message(f"step {self.step}: the run stops early: {self.stop_reason}")
            self.call_hooks("after_train")
            self.finished = True
            return self._result(time.perf_counter() - start)
        finally:
            try:
                self.call_hooks("close")
            finally:
                dist_utils.cleanup(self._started_group)

    def _restore_hook_states(self) -> None:
        """A resumed run's hook states, to the hooks of `self.hooks` (as edited before `fit`) of the same class
        and position among that class; a saved state no hook takes back is named in a warning."""
        saved = dict(self.hook_states_to_restore)
        for key, hook in self._keyed_hooks():
            if key in saved:
                hook.load_state_dict(saved.pop(key))
        if saved:
            warnings.warn(
                f"the checkpoint holds the state of hooks this run lacks ({', '.join(sorted(saved))}); it is not restored",
                RuntimeWarning,
                stacklevel=3,
            )

    def _begin(self) -> float:
        """Write the run folder's config and restore a resumed run's RNGs; the start time."""
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.cfg.to_file(self.out_dir / "config.yaml")
        if self.rng_to_restore is not None:
            set_rng_state(self.rng_to_restore)
        self._restore_hook_states()
        self.model.train()
        return time.perf_counter()

    def run_step(self) -> StepOutput:
        """One optimizer step on the next training batch; advances step, epoch and batch_in_epoch.
        The update is skipped when any process's loss is not finite or its batch is empty."""
        images, targets, skipped = self.prepare_batch(self._next_batch())
        epoch = self.epoch
        self.skipped_items += skipped
        self.items_seen += images.shape[0] + skipped
        # A batch whose pictures were all unreadable is empty: no update on any process.
        terms = self.loss_terms(images, targets) if images.shape[0] > 0 else None
        if terms is not None:
            self._term_names = list(terms)
        update, nonfinite = self._check_terms(terms)
        if update:
            self._update(terms["loss"], self._params)
        else:
            self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
        detached = None if terms is None else {k: v.detach() for k, v in terms.items()}
        epoch_end = self._advance()
        return StepOutput(detached, update, nonfinite, lr, images.shape[0], epoch, epoch_end)

    def call_hooks(self, event: str, *args: Any) -> None:
        """Call `event` (a HookBase method name) on every hook, in order."""
        for hook in self.hooks:
            getattr(hook, event)(self, *args)

    def stop(self, reason: str = "a hook stopped it") -> None:
        """End the run after the step under way. The run then ends as at its planned end (after_train:
        a last "train" line, an evaluation when eval.at_end, last.pt) and `TrainResult.stopped` is
        `reason`. Under torchrun, every process must call this at the same step."""
        if self.stop_reason is None:
            self.stop_reason = reason

    @property
    def done(self) -> bool:
        """Whether the planned steps are all done (a stop() request is not counted)."""
        return self.step >= self.total_steps

    def message(self, text: str) -> None:
        """A line for the user (rank 0 only), printed above the progress bar."""
        if self.bar is not None:
            self.bar.write(text)
        elif self.dist.is_main:
            print(text, file=sys.stderr)

    def epoch_float(self) -> float:
        """Epochs done, as a fraction (4 decimals)."""
        return round(self.epoch + self.batch_in_epoch / self.steps_per_epoch, 4)

    # --------------------------------------------------------------- one step
    def prepare_batch(self, batch: Any) -> tuple[Tensor, list[dict[str, Any]], int]:
        """(images (B, 3, H, W) on the device, targets on the device, unreadable items skipped)."""
        images, targets, skipped = unpack_batch(batch)
        images = images.to(self.device, non_blocking=True)
        if self.tc.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, to_device(targets, self.device), skipped

    def loss_terms(self, images: Tensor, targets: list[dict[str, Any]], net: Optional[nn.Module] = None) -> dict:
        """The loss terms of a batch through `net` (default: `self.net`): float16 autocast when `amp`,
        the loss itself in float32."""
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            loc, logits = (net if net is not None else self.net)(images)
        return self.model.compute_loss(loc.float(), logits.float(), targets)

    def _next_batch(self) -> Any:
        """The next training batch; a new epoch starts when the loader runs out (also short of len())."""
        while True:
            if self._batches is None:
                sampler = getattr(self.train_loader, "sampler", None)
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(self.epoch)
                with rng_kept():
                    self._batches = iter(resumed_loader(self.train_loader, self.batch_in_epoch))
            batch = next(self._batches, None)
            if batch is not None:
                return batch
            if self.batch_in_epoch == 0:
                raise RuntimeError(f"the training loader gave no batch in epoch {self.epoch}")
            self.epoch, self.batch_in_epoch, self._batches = self.epoch + 1, 0, None

    def _advance(self) -> bool:
        """Count the step done; whether it ended its epoch."""
        self.step += 1
        self.batch_in_epoch += 1
        if self.batch_in_epoch < self.steps_per_epoch:
            return False
        self.epoch, self.batch_in_epoch, self._batches = self.epoch + 1, 0, None
        return True

    def _check_terms(self, terms: Optional[dict[str, Tensor]]) -> tuple[bool, list[str]]:
        """(whether to update: every process has a batch and a finite loss; the names of the non-finite
        terms). One host sync; all processes call this together. `terms` None: this batch is empty."""
        device = self.device
        if terms is None:
            flags = torch.tensor([0.0, 1.0], device=device)
        else:
            flags = torch.stack([(~torch.isfinite(terms["loss"].detach())).float(), torch.zeros((), device=device)])
        if self.dist.distributed:
            dist_utils.all_reduce_sum(flags)
        bad, empty = flags.tolist()
        if bad == 0:
            return empty == 0, []
        keys = list(terms) if terms is not None else list(self._term_names)
        if terms is None:
            per_term = torch.zeros(len(keys), device=device)
        else:
            per_term = torch.stack([~torch.isfinite(terms[k].detach()) for k in keys]).float()
        dist_utils.all_reduce_sum(per_term)
        return False, [k for k, f in zip(keys, per_term.tolist(), strict=True) if f > 0] or ["loss"]

    def _update(self, loss: Tensor, params: list[Tensor]) -> None:
        self.scaler.scale(loss).backward()
        if self.tc.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, self.tc.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def _result(self, seconds: float) -> TrainResult:
        main = self.dist.is_main
        last_path, best_path = self.out_dir / LAST, self.out_dir / BEST
        return TrainResult(
            run_dir=self.out_dir if main else None,
            # None where no such file was written (a Checkpointer removed from trainer.hooks)
            last_checkpoint=last_path if main and last_path.exists() else None,
            best_checkpoint=best_path if main and best_path.exists() else None,
            best=self.best,
            metrics={**self.last_log, **self.last_eval},
            steps=self.step,
            epoch=self.epoch_float(),
            nan_skipped=self.nan_skipped,
            skipped_items=self.skipped_items,
            seconds=seconds,
            model=self.model,
            stopped=self.stop_reason if self.step < self.total_steps else None,  # a stop at the end is no early stop
        )


def train(
    cfg: RunConfig | dict | str | Path,
    *,
    overrides: Sequence[str] = (),
    out_dir: str | Path | None = None,
    resume: bool | str | Path | None = None,
    progress: Optional[bool] = None,
    hooks: Optional[Sequence[HookBase]] = None,
) -> TrainResult:
    """Train the model a run config describes; returns a `TrainResult`.

    cfg: a `RunConfig`, a mapping, or a YAML/JSON path; `overrides`: `key=value` strings
    (`train.lr=0.01`); `out_dir`: the run folder (default `train.out_dir`); `resume`: True
    (the run folder's last.pt) or a checkpoint path; `hooks`: extra `ssdkit.engine.HookBase`s
    (docs/training.md#hooks). Under torchrun every process calls this.
    """
    run = _run_config(cfg, overrides)
    return Trainer(run, out_dir=out_dir, resume=resume, progress=progress, hooks=hooks).fit()
