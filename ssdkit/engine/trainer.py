"""The training loop: `train(cfg)` and the `Trainer` behind it.

One step: forward (float16 autocast on CUDA when `amp`), loss in float32, a finiteness check of
the summed loss (one host sync), backward, optional clipping of the global gradient norm,
optimizer and schedule step. Loss terms are summed on the device and read once per log step.

A run folder holds `config.yaml`, `metrics.jsonl`, `last.pt` and `best.pt`. Checkpoints are
written atomically (ssdkit.engine.checkpoint); resuming restores weights, optimizer, schedule,
gradient scaler, RNG states and the position in the epoch, and skips the batches of that
epoch already seen without loading their pictures, so a CPU run continues exactly.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from ssdkit.config.run import RunConfig
from ssdkit.devices import resolve_device
from ssdkit.engine import distributed as dist_utils
from ssdkit.engine.checkpoint import FORMAT, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ssdkit.engine.optim import build_optimizer, scaled_lr
from ssdkit.engine.runlog import MetricsFile, ProgressBar
from ssdkit.engine.schedule import build_scheduler
from ssdkit.io.paths import check_output_folder
from ssdkit.io.weights import claim_limit, remove_stale_temps
from ssdkit.text import count

__all__ = [
    "train",
    "Trainer",
    "TrainResult",
    "NonFiniteLossError",
    "TooManySkippedError",
    "seed_everything",
    "resolve_device",
]

LAST, BEST = "last.pt", "best.pt"


class NonFiniteLossError(RuntimeError):
    """The loss (or, before a checkpoint, the weights) became NaN or inf; the message names the step."""


class TooManySkippedError(RuntimeError):
    """More than `data.max_skipped_share` of the training items read were unreadable and skipped."""


@dataclass
class TrainResult:
    """What a run produced. `metrics`: the last train log values and the last evaluation."""

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


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) generators."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _rng_kept() -> Iterator[None]:
    """Run a block without moving the global RNGs (starting a data loader iterator draws from them)."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


class _SkipBatches:
    """A batch sampler without its first `skip` batches: resuming mid-epoch loads no skipped pictures."""

    def __init__(self, batch_sampler: Any, skip: int) -> None:
        self.batch_sampler = batch_sampler
        self.skip = skip

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.batch_sampler)
        for _ in range(self.skip):
            if next(it, None) is None:
                return
        yield from it

    def __len__(self) -> int:
        return max(len(self.batch_sampler) - self.skip, 0)


def _resumed_loader(loader: Any, skip: int) -> Any:
    """`loader` starting at batch `skip` of its current epoch."""
    if skip == 0:
        return loader
    from torch.utils.data import DataLoader

    if not isinstance(loader, DataLoader) or loader.batch_sampler is None:
        return _DropFirst(loader, skip)  # a loader we cannot rebuild: load and drop the batches
    kwargs: dict[str, Any] = {
        "batch_sampler": _SkipBatches(loader.batch_sampler, skip),
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "worker_init_fn": loader.worker_init_fn,
        "generator": loader.generator,
        "timeout": loader.timeout,
        "multiprocessing_context": loader.multiprocessing_context,
    }
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    return DataLoader(loader.dataset, **kwargs)


class _DropFirst:
    def __init__(self, loader: Any, skip: int) -> None:
        self.loader, self.skip = loader, skip

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        for _ in range(self.skip):
            next(it, None)
        yield from it


def _to_device(targets: Sequence[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    return [
        {k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in t.items()} for t in targets
    ]


def _unpack(batch: Any) -> tuple[Tensor, list[dict[str, Any]], int]:
    """(images, targets, skipped items) of an `ssdkit.data.Batch` or a plain (images, targets) pair."""
    images, targets = batch[0], batch[1]
    skipped = int(getattr(batch, "skipped", batch[2] if len(batch) > 2 else 0))
    return images, targets, skipped


def _evaluate_fn() -> Any:
    try:
        from ssdkit.evaluation import evaluate
    except ImportError:
        return None
    return evaluate


def _class_names(loader: Any) -> Optional[list[str]]:
    """The class names of the data set under a loader (through any wrapping `.dataset`s)."""
    data = getattr(loader, "dataset", None)
    while data is not None and getattr(data, "class_names", None) is None:
        data = getattr(data, "dataset", None)
    return None if data is None else list(data.class_names)


class Trainer:
    """Runs one training run described by a `RunConfig`.

    Args:
        cfg: the run config.
        out_dir: run folder (default `cfg.train.out_dir`).
        resume: None, True (the run folder's last.pt) or a checkpoint path.
        progress: show the progress bar (default `cfg.train.progress`); rank 0 only.
    """

    def __init__(
        self,
        cfg: RunConfig,
        *,
        out_dir: str | Path | None = None,
        resume: bool | str | Path | None = None,
        progress: Optional[bool] = None,
    ) -> None:
        self.cfg = cfg
        self.tc = cfg.train
        self.dist = dist_utils.from_env()
        self.out_dir = Path(out_dir if out_dir is not None else self.tc.out_dir)
        if resume is True:
            resume = self.out_dir / LAST
        self.resume_path = Path(resume) if resume else None
        self.show_progress = self.tc.progress if progress is None else progress

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        from ssdkit.build import build_model
        from ssdkit.data import build_loader
        from ssdkit.io.sources import without_backbone_weights

        cfg, tc, info = self.cfg, self.tc, self.dist
        check_output_folder(self.out_dir, "run folder (--out / train.out_dir)")
        if self.resume_path is not None and not self.resume_path.is_file():
            raise FileNotFoundError(f"no checkpoint to resume from: {self.resume_path}")
        if info.is_main and self.resume_path is None and (self.out_dir / LAST).exists():
            raise FileExistsError(
                f"{self.out_dir} already holds a run ({LAST}); resume it (--resume) or choose another folder (--out)"
            )
        self.device = resolve_device(tc.device, info.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self._started_group = dist_utils.init(info, self.device)

        seed_everything(tc.seed)
        # init.weights replace the backbone's starting weights too: neither fetch nor read those
        model = build_model(without_backbone_weights(cfg.model) if cfg.init.weights is not None else cfg.model)
        if cfg.init.weights is not None and self.resume_path is None:
            from ssdkit.io.sources import init_from

            init_from(model, cfg.init.weights)
        if model.loss is None:
            raise ValueError("the model config has no loss: set `model.loss` (e.g. {type: multibox}) to train it")
        if tc.sync_batchnorm and info.distributed:
            if self.device.type != "cuda":
                raise ValueError("train.sync_batchnorm works only on CUDA devices (torch's SyncBatchNorm)")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.weights_loaded = True  # its weights are what this run trains (predict does not call them random)
        model.to(self.device)
        if tc.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.amp = bool(tc.amp and self.device.type == "cuda")

        self.train_loader = build_loader(
            cfg.data, cfg.model, "train", seed=tc.seed, rank=info.rank, world_size=info.world_size
        )
        if cfg.model.class_names is None:  # name the labels as the data set does (e.g. a COCO file's categories)
            names = _class_names(self.train_loader)
            if names is not None:  # (a copy: the caller's config stays as given)
                model.config = cfg.model.model_copy(update={"class_names": names})
                cfg = self.cfg = cfg.model_copy(update={"model": model.config})
                model.class_names = list(names)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ValueError("the training loader yields no batches (is the data set smaller than one batch?)")
        self.total_steps = tc.max_steps if tc.max_steps is not None else tc.epochs * self.steps_per_epoch

        ec = cfg.eval
        self.val_loader = None
        if ec.enabled and getattr(cfg.data, "val", None) is not None and info.is_main:
            self.val_loader = build_loader(cfg.data, cfg.model, "val", seed=tc.seed)
        evaluate = _evaluate_fn() if ec.metric in ("auto", "map") else None
        if ec.metric == "map" and evaluate is None:
            raise ValueError("eval.metric=map needs ssdkit.evaluation.evaluate, which this install lacks")
        self.evaluate_fn = evaluate
        self.metric = "map" if evaluate is not None else "val_loss"

        self.total_batch = cfg.data.batch_size * info.world_size
        self.lr = scaled_lr(tc.lr, self.total_batch, tc.lr_reference_batch)
        self.optimizer = build_optimizer(model, tc, lr=self.lr)
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
        if info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net: nn.Module = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        else:
            self.net = model

        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.nan_skipped = 0
        self.skipped_items = 0
        self.items_seen = 0  # items the training loader was asked for, skipped ones included
        self.best: Optional[dict[str, Any]] = None
        self.last_eval: dict[str, Any] = {}
        self.last_log: dict[str, float] = {}
        self.rng_to_restore: Optional[dict[str, Any]] = None
        self._term_names: list[str] = ["loc", "cls", "loss"]
        if self.resume_path is not None:
            self._load(self.resume_path)
        self._prepare_run_dir()

    def _prepare_run_dir(self) -> None:
        self.metrics = MetricsFile(None)
        if not self.dist.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.out_dir, [LAST, BEST])  # left by writes a kill cut short
        self.cfg.to_file(self.out_dir / "config.yaml")
        resumed_at = self.step if self.resume_path is not None else None
        self.metrics = MetricsFile(self.out_dir / "metrics.jsonl", resume_at=resumed_at)

    # ------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
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
        }

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

    def _save(self, state: dict[str, Any], name: str) -> Path:
        return save_checkpoint(state, self.out_dir / name)

    def _check_weights(self) -> None:
        """Refuse to checkpoint non-finite weights: a finite loss can still end in an update that
        makes them NaN, and such a file must never replace the last good one (one host sync)."""
        tensors = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        if not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
            return
        bad = [k for k, t in self.model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
        kept = self.out_dir / LAST
        raise NonFiniteLossError(
            f"the weights became NaN or inf in step {self.step} ({len(bad)} tensors, e.g. {bad[0]}) although the "
            f"loss was finite: the update diverged. Nothing was saved; the last good checkpoint is "
            f"{kept if kept.exists() else 'none (none was written)'}. Lower train.lr or set train.grad_clip."
        )

    def _check_skipped(self) -> None:
        """Stop once more than data.max_skipped_share of the items read were skipped (judged after
        min(100, data set size) items, summed over processes)."""
        share = self.cfg.data.max_skipped_share
        skipped, seen = float(self.skipped_items), float(self.items_seen)
        if self.dist.distributed:  # every process takes part, so that all stop together
            counts = torch.tensor([skipped, seen], device=self.device)
            skipped, seen = dist_utils.all_reduce_sum(counts).tolist()
        try:
            size = len(self.train_loader.dataset)
        except (AttributeError, TypeError):
            size = 100
        if share >= 1 or seen < min(100, size) * self.dist.world_size:
            return
        if skipped > share * seen:
            raise TooManySkippedError(
                f"{int(skipped)} of the {int(seen)} training items read so far were unreadable and skipped, more "
                f"than data.max_skipped_share={share:g} of them: the run stops (step {self.step}). The warnings "
                "name each item; fix or remove them, or raise data.max_skipped_share."
            )

    # ---------------------------------------------------------------- metrics
    def _evaluate(self) -> dict[str, Any]:
        """Validation mAP (or loss) of the bare model, on rank 0, without moving the RNGs."""
        if self.val_loader is None:
            return {}
        model = self.model
        model.eval()
        try:
            with _rng_kept(), torch.inference_mode():
                if self.evaluate_fn is not None:
                    ec = self.cfg.eval
                    res = self.evaluate_fn(
                        model, self.val_loader, protocol=ec.protocol, use_07_metric=ec.use_07_metric, progress=False
                    )
                    return {
                        "map": float(res["map"]),
                        "per_class": dict(res.get("per_class", {})),
                        "skipped": int(res.get("skipped", 0)),
                    }
                return self._val_loss(model)
        finally:
            model.train()

    def _val_loss(self, model: nn.Module) -> dict[str, Any]:
        """{"val_loss": mean loss per picture, "skipped": unreadable items left out}."""
        total, images, skipped = torch.zeros((), device=self.device), 0, 0
        for batch in self.val_loader:
            x, targets, skip = _unpack(batch)
            skipped += skip
            if x.shape[0] == 0:
                continue
            x = x.to(self.device, non_blocking=True)
            if self.tc.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                loc, logits = model(x)
            terms = model.compute_loss(loc.float(), logits.float(), _to_device(targets, self.device))
            total += terms["loss"] * x.shape[0]
            images += x.shape[0]
        return {"val_loss": float(total.item() / max(images, 1)), "skipped": skipped}

    def _is_better(self, value: float) -> bool:
        if not isinstance(value, float) or not math.isfinite(value):
            return False
        if self.best is None or self.best.get("value") is None:
            return True
        return value > self.best["value"] if self.metric == "map" else value < self.best["value"]

    # ------------------------------------------------------------------- loop
    def _batches(self) -> Iterator[Any]:
        """This epoch's remaining batches (the sampler is told the epoch first)."""
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        loader = _resumed_loader(self.train_loader, self.batch_in_epoch)
        with _rng_kept():
            return iter(loader)

    def _non_finite(self, terms: Optional[dict[str, Tensor]]) -> str:
        """Names of the non-finite terms (on any process; all processes must call this together)."""
        keys = list(terms) if terms is not None else list(self._term_names)
        if terms is None:
            flags = torch.zeros(len(keys), device=self.device)
        else:
            flags = torch.stack([~torch.isfinite(terms[k].detach()) for k in keys]).float()
        dist_utils.all_reduce_sum(flags)
        bad = [k for k, f in zip(keys, flags.tolist(), strict=True) if f > 0]
        return ", ".join(f"'{k}'" for k in bad) or "'loss'"

    def _forward(self, images: Tensor, targets: list[dict[str, Any]]) -> dict[str, Tensor]:
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            loc, logits = self.net(images)
        terms = self.model.compute_loss(loc.float(), logits.float(), targets)
        self._term_names = list(terms)
        return terms

    def _usable(self, terms: Optional[dict[str, Tensor]]) -> bool:
        """Whether every process has a finite loss (one host sync); None: this process's batch is empty.

        A non-finite loss raises under nan_policy=stop, and is counted otherwise."""
        device = self.device
        if terms is None:
            flags = torch.tensor([0.0, 1.0], device=device)
        else:
            flags = torch.stack([(~torch.isfinite(terms["loss"].detach())).float(), torch.zeros((), device=device)])
        if self.dist.distributed:
            dist_utils.all_reduce_sum(flags)
        bad, empty = flags.tolist()
        if bad == 0:
            return empty == 0
        names = self._non_finite(terms)
        if self.tc.nan_policy == "stop":
            kept = self.out_dir / LAST
            raise NonFiniteLossError(
                f"non-finite loss at step {self.step + 1} (epoch {self.epoch}): term {names} is NaN or inf; "
                f"the run stops. The last good checkpoint is {kept if kept.exists() else 'none (none was written)'}. "
                "Lower train.lr, set train.grad_clip, or set train.nan_policy=skip to skip such batches."
            )
        self.nan_skipped += 1
        return False

    def _update(self, loss: Tensor, params: list[Tensor]) -> None:
        self.scaler.scale(loss).backward()
        if self.tc.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, self.tc.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def fit(self) -> TrainResult:
        try:
            self._setup()
            return self._fit()
        finally:
            metrics = getattr(self, "metrics", None)
            if metrics is not None:
                metrics.close()
            dist_utils.cleanup(getattr(self, "_started_group", False))

    def _fit(self) -> TrainResult:
        tc, ec, info = self.tc, self.cfg.eval, self.dist
        main = info.is_main
        bar = ProgressBar(self.total_steps, self.step, bar=self.show_progress, messages=main)
        if self.rng_to_restore is not None:
            set_rng_state(self.rng_to_restore)
            bar.write(f"resumed from {self.resume_path} at step {self.step} (epoch {self.epoch})")
        if tc.lr_reference_batch is not None and self.lr != tc.lr:
            bar.write(
                f"learning rate {self.lr:.6g}: train.lr {tc.lr:g} is for a total batch of {tc.lr_reference_batch}, "
                f"this run's is {self.total_batch} (linear scaling rule)"
            )
        if self.val_loader is None and main and ec.enabled:
            bar.write("no validation data (data.val): no periodic evaluation and no best checkpoint")
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        keys: Optional[list[str]] = None
        running: Optional[Tensor] = None
        logged_steps = 0
        images_since = 0
        t_start = t_log = time.perf_counter()
        batches: Optional[Iterator[Any]] = None
        try:
            while self.step < self.total_steps:
                if batches is None:
                    batches = self._batches()
                batch = next(batches, None)
                if batch is None:  # the loader ran short of len(): the epoch is over
                    if self.batch_in_epoch == 0:
                        raise RuntimeError(f"the training loader gave no batch in epoch {self.epoch}")
                    self.epoch, self.batch_in_epoch, batches = self.epoch + 1, 0, None
                    continue
                images, targets, skipped = _unpack(batch)
                self.skipped_items += skipped
                self.items_seen += images.shape[0] + skipped
                images = images.to(self.device, non_blocking=True)
                if tc.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                targets = _to_device(targets, self.device)

                # A batch whose pictures were all unreadable is empty: no update on any process.
                terms = self._forward(images, targets) if images.shape[0] > 0 else None
                if self._usable(terms):
                    self._update(terms["loss"], params)
                    detached = torch.stack([v.detach() for v in terms.values()])
                    if keys is None:
                        keys, running = list(terms), torch.zeros_like(detached)
                    running += detached
                    logged_steps += 1
                else:
                    self.optimizer.zero_grad(set_to_none=True)
                lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
                self.scheduler.step()
                self.step += 1
                self.batch_in_epoch += 1
                images_since += images.shape[0]
                bar.update()

                epoch_end = self.batch_in_epoch >= self.steps_per_epoch
                if epoch_end:
                    self.epoch, self.batch_in_epoch, batches = self.epoch + 1, 0, None
                done = self.step >= self.total_steps

                if self.step % tc.log_every == 0 or done or epoch_end:
                    self._check_skipped()
                if self.step % tc.log_every == 0 or done:
                    now = time.perf_counter()
                    values: dict[str, float] = {}
                    if running is not None and logged_steps > 0:
                        mean = dist_utils.all_reduce_sum(running / logged_steps) / info.world_size
                        values = dict(zip(keys, mean.tolist(), strict=True))
                        running.zero_()
                    values["lr"] = lr
                    values["images_per_s"] = images_since * info.world_size / max(now - t_log, 1e-9)
                    logged_steps, images_since, t_log = 0, 0, now
                    self.last_log = values
                    bar.show(values)
                    self.metrics.write(
                        kind="train", step=self.step, epoch=self._epoch_float(), time=round(now - t_start, 3), **values
                    )

                paused = time.perf_counter()  # evaluation and saving do not count against images/s
                want_eval = ec.enabled and (
                    (ec.every_steps is not None and self.step % ec.every_steps == 0)
                    or (ec.every_steps is None and epoch_end and self.epoch % ec.every_epochs == 0)
                    or (done and ec.at_end)
                )
                improved = False
                if want_eval and self.val_loader is not None:
                    result = self._evaluate()
                    value = result.get(self.metric)
                    improved = value is not None and self._is_better(value)
                    if improved:
                        self.best = {"metric": self.metric, "value": value, "step": self.step}
                    self.last_eval = result
                    self.metrics.write(
                        kind="eval", step=self.step, epoch=self._epoch_float(), is_best=improved, **result
                    )
                    bar.write(
                        f"step {self.step}: {self.metric} {value:.4f}"
                        + (" (best so far)" if improved else f" (best {self.best['value']:.4f})" if self.best else "")
                    )
                if want_eval and info.distributed:
                    dist_utils.barrier()  # the other processes wait while rank 0 evaluates

                want_save = (
                    (tc.checkpoint_every is not None and self.step % tc.checkpoint_every == 0)
                    or (tc.checkpoint_every is None and epoch_end)
                    or done
                )
                if want_save or want_eval:
                    # On every process (only rank 0 knows `improved`, and it is only set on eval
                    # steps): all check, so all stop together rather than rank 0 alone.
                    self._check_weights()
                if main and (want_save or improved):
                    state = self._state()
                    if want_save:
                        self._save(state, LAST)
                    if improved:
                        self._save(state, BEST)
                t_log += time.perf_counter() - paused
        finally:
            bar.close()

        elapsed = time.perf_counter() - t_start
        if main and self.nan_skipped:
            skipped = count(self.nan_skipped, "batch", "batches")
            bar.write(f"skipped {skipped} with a non-finite loss (train.nan_policy=skip)")
        if main and self.skipped_items:
            bar.write(f"{count(self.skipped_items, 'unreadable item')} left out of their batches")
        self.metrics.write(
            kind="end",
            step=self.step,
            epoch=self._epoch_float(),
            time=round(elapsed, 3),
            nan_skipped=self.nan_skipped,
            skipped_items=self.skipped_items,
            best=self.best,
        )
        best_path = self.out_dir / BEST
        return TrainResult(
            run_dir=self.out_dir if main else None,
            last_checkpoint=self.out_dir / LAST if main else None,
            best_checkpoint=best_path if main and best_path.exists() else None,
            best=self.best,
            metrics={**self.last_log, **self.last_eval},
            steps=self.step,
            epoch=self._epoch_float(),
            nan_skipped=self.nan_skipped,
            skipped_items=self.skipped_items,
            seconds=elapsed,
            model=self.model,
        )

    def _epoch_float(self) -> float:
        return round(self.epoch + self.batch_in_epoch / self.steps_per_epoch, 4)


def train(
    cfg: RunConfig | dict | str | Path,
    *,
    overrides: Sequence[str] = (),
    out_dir: str | Path | None = None,
    resume: bool | str | Path | None = None,
    progress: Optional[bool] = None,
) -> TrainResult:
    """Train the model a run config describes; returns a `TrainResult`.

    cfg: a `RunConfig`, a mapping, or a YAML/JSON path; `overrides`: `key=value` strings
    (`train.lr=0.01`); `out_dir`: the run folder (default `train.out_dir`); `resume`: True
    (the run folder's last.pt) or a checkpoint path. Under torchrun every process calls this.
    """
    if isinstance(cfg, RunConfig):
        run = cfg.with_overrides(overrides) if overrides else cfg
    elif isinstance(cfg, dict):
        run = RunConfig.from_dict(cfg, overrides)
    elif isinstance(cfg, (str, Path)):
        run = RunConfig.from_file(cfg, overrides)
    else:
        raise TypeError(f"expected a RunConfig, a mapping or a config file path, got {type(cfg).__name__}")
    return Trainer(run, out_dir=out_dir, resume=resume, progress=progress).fit()
