"""What a training run does around its steps, one concern per hook.

`Trainer.fit()` is a short loop over optimizer steps; everything else is a hook that the trainer
calls at these events, in the order of `trainer.hooks`:

    before_train(trainer)                   once, before the first step
    before_step(trainer)                    trainer.step: the steps done so far
    after_step(trainer, out: StepOutput)    trainer.step now counts this step
    after_eval(trainer, result, improved)   after each evaluation (from EvalHook), on every process
    after_train(trainer)                    once, after the last step: the planned end or trainer.stop()
    close(trainer)                          always, also after an error: release files and bars

The trainer's built-in hooks, in this order (user hooks come between EvalHook and Checkpointer,
so that a checkpoint holds the whole step, the user hooks' `state_dict()` included):

    NaNPolicy       train.nan_policy: a step with a NaN or inf loss stops the run, or is counted
    LRSchedule      steps the learning-rate schedule
    SkippedItems    stops the run when too many training items were unreadable
    MetricsWriter   the progress bar and metrics.jsonl
    EvalHook        evaluation on data.val every N steps or epochs, and the best metric
    Checkpointer    last.pt, best.pt; a checkpoint with NaN weights is never written

A hook sees the whole trainer (model, optimizer, step, epoch, best, ...); `trainer.stop(reason)`
ends the run after the step under way (docs/training.md#hooks has an early-stopping example).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor

from ssdkit.engine import distributed as dist_utils
from ssdkit.engine.batches import rng_kept
from ssdkit.engine.checkpoint import save_checkpoint
from ssdkit.engine.runlog import MetricsFile, ProgressBar
from ssdkit.io.paths import remove_stale_temps
from ssdkit.text import count

if TYPE_CHECKING:
    from ssdkit.config.run import EvalConfig

# The hooks' `trainer` is an ssdkit.engine.trainer.Trainer. It is not imported, even for type checking:
# the trainer imports this module, and the two would import each other.
_Trainer = Any

__all__ = [
    "HookBase",
    "StepOutput",
    "NaNPolicy",
    "LRSchedule",
    "SkippedItems",
    "MetricsWriter",
    "EvalHook",
    "Checkpointer",
    "NonFiniteLossError",
    "TooManySkippedError",
    "LAST",
    "BEST",
]

LAST, BEST = "last.pt", "best.pt"


class NonFiniteLossError(RuntimeError):
    """The loss (or, before a checkpoint, the weights) became NaN or inf; the message names the step."""


class TooManySkippedError(RuntimeError):
    """More than `data.max_skipped_share` of the training items read were unreadable and skipped."""


@dataclass
class StepOutput:
    """What one optimizer step did, as `after_step` hooks see it.

    terms: the loss terms ("loc", "cls", "loss", ...), 0-dim tensors, detached, on the device
        (reading one waits for the device); None when this process's batch was empty.
    updated: whether the weights were updated (every process had a batch and a finite loss).
    nonfinite: the names of the terms that were NaN or inf on some process; [] when all were finite.
    lr: the learning rate the step used (the first parameter group's).
    images: the pictures in this process's batch.
    epoch: the epoch the batch came from; epoch_end: whether it was that epoch's last batch.
    """

    terms: Optional[dict[str, Tensor]]
    updated: bool
    nonfinite: list[str]
    lr: float
    images: int
    epoch: int
    epoch_end: bool


class HookBase:
    """A training hook: subclass it and override the events you need (each does nothing here).

    Every process of a torchrun run calls its hooks; `trainer.dist.is_main` says whether this one
    is rank 0. A hook that calls `trainer.stop()` under torchrun must do so on every process at the
    same step: decide from what all processes share, such as the step or an evaluation's result.
    """

    def before_train(self, trainer: _Trainer) -> None:
        """Once, before the first step (after a resume has restored the trainer's state)."""

    def before_step(self, trainer: _Trainer) -> None:
        """Before each step; `trainer.step` is the number of steps done so far."""

    def after_step(self, trainer: _Trainer, out: StepOutput) -> None:
        """After each step; `trainer.step` counts it, `trainer.done` says whether it was the last planned one."""

    def after_eval(self, trainer: _Trainer, result: dict[str, Any], improved: bool) -> None:
        """After each evaluation: `result` holds `trainer.metric` ("map" or "val_loss") and "skipped";
        `improved`: it is the best so far (`trainer.best` is updated already)."""

    def after_train(self, trainer: _Trainer) -> None:
        """Once, after the last step, when the run ends as planned or because a hook called `trainer.stop()`."""

    def close(self, trainer: _Trainer) -> None:
        """Always at the very end, also after an error: release what the hook holds.
        `trainer.finished` says whether the run ended well."""

    def state_dict(self) -> dict[str, Any]:
        """The hook's own state, saved in every checkpoint and given back by `load_state_dict` when the
        run resumes (an early stop's count, say). Plain data only (numbers, strings, lists, dicts,
        tensors): checkpoints are read with `weights_only=True`. Default: nothing to keep."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what `state_dict` returned, before the resumed run's first step."""


def _last_good(trainer: _Trainer) -> str:
    kept = trainer.out_dir / LAST
    return str(kept) if kept.exists() else "none (none was written)"


class NaNPolicy(HookBase):
    """`train.nan_policy`. The trainer never applies a step whose loss is NaN or inf on any process;
    "stop" then ends the run with NonFiniteLossError naming the step and the terms, "skip" counts
    the step in `trainer.nan_skipped`. Put before Checkpointer, so a stopped run writes nothing."""

    def __init__(self, policy: str = "stop") -> None:
        if policy not in ("stop", "skip"):
            raise ValueError(f"nan_policy must be 'stop' or 'skip', got {policy!r}")
        self.policy = policy

    def after_step(self, trainer: _Trainer, out: StepOutput) -> None:
        if not out.nonfinite:
            return
        if self.policy == "stop":
            names = ", ".join(f"'{k}'" for k in out.nonfinite)
            raise NonFiniteLossError(
                f"non-finite loss at step {trainer.step} (epoch {out.epoch}): term {names} is NaN or inf; "
                f"the run stops. The last good checkpoint is {_last_good(trainer)}. "
                "Lower train.lr, set train.grad_clip, or set train.nan_policy=skip to skip such batches."
            )
        trainer.nan_skipped += 1


class LRSchedule(HookBase):
    """Steps `trainer.scheduler` after every step, skipped ones too: the rate is a function of the step
    count alone (ssdkit.engine.schedule), so a resumed run continues from the restored step."""

    def after_step(self, trainer: _Trainer, out: StepOutput) -> None:
        trainer.scheduler.step()


class SkippedItems(HookBase):
    """Stops the run (TooManySkippedError) once more than `max_share` of the training items read were
    unreadable and skipped, judged after min(100, data set size) items summed over processes. Checked
    on log steps, at the end of each epoch and at the end, by all processes together."""

    def __init__(self, max_share: float, every: int) -> None:
        self.max_share, self.every = max_share, every
        self._checked_at = -1

    def before_train(self, trainer: _Trainer) -> None:
        self._checked_at = trainer.step

    def after_step(self, trainer: _Trainer, out: StepOutput) -> None:
        if trainer.step % self.every == 0 or trainer.done or out.epoch_end:
            self.check(trainer)

    def after_train(self, trainer: _Trainer) -> None:
        if self._checked_at != trainer.step:  # stopped early: check as at the end
            self.check(trainer)

    def check(self, trainer: _Trainer) -> None:
        self._checked_at = trainer.step
        share = self.max_share
        skipped, seen = float(trainer.skipped_items), float(trainer.items_seen)
        if trainer.dist.distributed:  # every process takes part, so that all stop together
            counts = torch.tensor([skipped, seen], device=trainer.device)
            skipped, seen = dist_utils.all_reduce_sum(counts).tolist()
        try:
            size = len(trainer.train_loader.dataset)
        except (AttributeError, TypeError):
            size = 100
        if share >= 1 or seen < min(100, size) * trainer.dist.world_size:
            return
        if skipped > share * seen:
            raise TooManySkippedError(
                f"{int(skipped)} of the {int(seen)} training items read so far were unreadable and skipped, more "
                f"than data.max_skipped_share={share:g} of them: the run stops (step {trainer.step}). The warnings "
                "name each item; fix or remove them, or raise data.max_skipped_share."
            )


class MetricsWriter(HookBase):
    """The progress bar and `metrics.jsonl` (rank 0; ssdkit.engine.runlog). A "train" line every
    `every` steps and at the end: the loss terms averaged over the updated steps since the last line
    and over processes (read from the device only then), lr, images/s, time. An "eval" line per
    evaluation, an "end" line when the run ends well. Time spent in the hooks after this one
    (evaluation, checkpoints) does not count against images/s."""

    def __init__(self, every: int, progress: bool = True) -> None:
        self.every, self.progress = every, progress
        self.file: Optional[MetricsFile] = None
        self.bar: Optional[ProgressBar] = None
        self._paused: Optional[float] = None

    def before_train(self, trainer: _Trainer) -> None:
        main = trainer.dist.is_main
        resumed_at = trainer.step if trainer.resume_path is not None else None
        self.file = MetricsFile(trainer.out_dir / "metrics.jsonl" if main else None, resume_at=resumed_at)
        self.bar = trainer.bar = ProgressBar(trainer.total_steps, trainer.step, bar=self.progress, messages=main)
        if trainer.resume_path is not None:
            trainer.message(f"resumed from {trainer.resume_path} at step {trainer.step} (epoch {trainer.epoch})")
        tc = trainer.tc
        if tc.lr_reference_batch is not None and trainer.lr != tc.lr:
            trainer.message(
                f"learning rate {trainer.lr:.6g}: train.lr {tc.lr:g} is for a total batch of {tc.lr_reference_batch}, "
                f"this run's is {trainer.total_batch} (linear scaling rule)"
            )
        self._keys: Optional[list[str]] = None
        self._running: Optional[Tensor] = None
        self._steps = self._images = 0
        self._lr = trainer.optimizer.param_groups[0]["lr"]
        self._logged_at = trainer.step
        self._start = self._since = time.perf_counter()

    def before_step(self, trainer: _Trainer) -> None:
        if self._paused is not None:
            self._since += time.perf_counter() - self._paused
            self._paused = None

    def after_step(self, trainer: _Trainer, out: StepOutput) -> None:
        self.bar.update()
        self._images += out.images
        self._lr = out.lr
        if out.updated:
            detached = torch.stack(list(out.terms.values()))
            if self._keys is None:
                self._keys, self._running = list(out.terms), torch.zeros_like(detached)
            self._running += detached
            self._steps += 1
        if trainer.step % self.every == 0 or trainer.done:
            self.log(trainer)
        self._paused = time.perf_counter()

    def log(self, trainer: _Trainer) -> None:
        """Write a "train" line for the steps since the last one (all processes take part)."""
        now = time.perf_counter()
        values: dict[str, float] = {}
        if self._running is not None and self._steps > 0:
            mean = dist_utils.all_reduce_sum(self._running / self._steps) / trainer.dist.world_size
            values = dict(zip(self._keys, mean.tolist(), strict=True))
            self._running.zero_()
        values["lr"] = self._lr
        values["images_per_s"] = self._images * trainer.dist.world_size / max(now - self._since, 1e-9)
        self._steps, self._images, self._since, self._logged_at = 0, 0, now, trainer.step
        trainer.last_log = values
        self.bar.show(values)
        elapsed = round(now - self._start, 3)
        self.file.write(kind="train", step=trainer.step, epoch=trainer.epoch_float(), time=elapsed, **values)

    def after_eval(self, trainer: _Trainer, result: dict[str, Any], improved: bool) -> None:
        self.file.write(kind="eval", step=trainer.step, epoch=trainer.epoch_float(), is_best=improved, **result)
        best = trainer.best
        trainer.message(
            f"step {trainer.step}: {trainer.metric} {result[trainer.metric]:.4f}"
            + (" (best so far)" if improved else f" (best {best['value']:.4f})" if best else "")
        )

    def after_train(self, trainer: _Trainer) -> None:
        if self._logged_at != trainer.step:  # stopped early: the steps since the last line
            self.log(trainer)

    def close(self, trainer: _Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file is not None and trainer.finished:  # the summary comes after every hook's after_train
            if trainer.nan_skipped:
                trainer.message(
                    f"skipped {count(trainer.nan_skipped, 'batch', 'batches')} with a non-finite loss "
                    "(train.nan_policy=skip)"
                )
            if trainer.skipped_items:
                trainer.message(f"{count(trainer.skipped_items, 'unreadable item')} left out of their batches")
            self.file.write(
                kind="end",
                step=trainer.step,
                epoch=trainer.epoch_float(),
                time=round(time.perf_counter() - self._start, 3),
                nan_skipped=trainer.nan_skipped,
                skipped_items=trainer.skipped_items,
                best=trainer.best,
            )
        if self.file is not None:
            self.file.close()
        self.file = None


class EvalHook(HookBase):
    """Evaluates on data.val every `eval.every_steps` steps (or at the end of every `eval.every_epochs`-th
    epoch) and after the last step (`eval.at_end`), without moving the RNGs. Rank 0 evaluates; the
    other processes wait and receive its result. Keeps `trainer.best` ({"metric", "value", "step"}:
    highest mAP or lowest validation loss) and `trainer.last_eval`, sets `trainer.eval_step` on every
    process whenever an evaluation is due, and calls every hook's `after_eval`."""

    def __init__(self, cfg: EvalConfig) -> None:
        self.cfg = cfg
        self._at = -1

    def before_train(self, trainer: _Trainer) -> None:
        self._at = trainer.step
        if trainer.val_loader is None and trainer.dist.is_main and self.cfg.enabled:
            trainer.message("no validation data (data.val): no periodic evaluation and no best checkpoint")

    def due(self, trainer: _Trainer, epoch_end: bool) -> bool:
        """Whether the schedule asks for an evaluation after the step just done."""
        ec = self.cfg
        return ec.enabled and (
            (ec.every_steps is not None and trainer.step % ec.every_steps == 0)
            or (ec.every_steps is None and epoch_end and trainer.epoch % ec.every_epochs == 0)
            or (trainer.done and ec.at_end)
        )

    def after_step(self, trainer: _Trainer, out: StepOutput) -> None:
        if self.due(trainer, out.epoch_end):
            self.evaluate(trainer)

    def after_train(self, trainer: _Trainer) -> None:
        if self.cfg.enabled and self.cfg.at_end and self._at != trainer.step:  # stopped early
            self.evaluate(trainer)

    def evaluate(self, trainer: _Trainer) -> None:
        """Evaluate now (all processes call this together) and tell the hooks."""
        self._at = trainer.eval_step = trainer.step
        found = None
        if trainer.val_loader is not None:
            result = self._scores(trainer)
            value = result.get(trainer.metric)
            improved = value is not None and self._is_better(trainer, value)
            if improved:
                trainer.best = {"metric": trainer.metric, "value": value, "step": trainer.step}
            found = (result, improved, trainer.best)
        if trainer.dist.distributed:  # the other processes wait here while rank 0 evaluates
            found = dist_utils.broadcast_object(found)
        if found is None:
            return
        result, improved, trainer.best = found
        trainer.last_eval = result
        trainer.call_hooks("after_eval", result, improved)

    def _is_better(self, trainer: _Trainer, value: float) -> bool:
        if not isinstance(value, float) or not math.isfinite(value):
            return False
        best = trainer.best
        if best is None or best.get("value") is None:
            return True
        return value > best["value"] if trainer.metric == "map" else value < best["value"]

    def _scores(self, trainer: _Trainer) -> dict[str, Any]:
        """Validation mAP (or loss) of the bare model (not its DDP wrapper)."""
        model = trainer.model
        model.eval()
        try:
            with rng_kept(), torch.inference_mode():
                if trainer.metric != "map":
                    return self._val_loss(trainer)
                from ssdkit.evaluation import evaluate

                ec = self.cfg
                res = evaluate(
                    model, trainer.val_loader, protocol=ec.protocol, use_07_metric=ec.use_07_metric, progress=False
                )
                return {
                    "map": float(res["map"]),
                    "per_class": dict(res.get("per_class", {})),
                    "skipped": int(res.get("skipped", 0)),
                }
        finally:
            model.train()

    def _val_loss(self, trainer: _Trainer) -> dict[str, Any]:
        """{"val_loss": mean loss per picture, "skipped": unreadable items left out}."""
        total, images, skipped = torch.zeros((), device=trainer.device), 0, 0
        for batch in trainer.val_loader:
            x, targets, skip = trainer.prepare_batch(batch)
            skipped += skip
            if x.shape[0] == 0:
                continue
            total += trainer.loss_terms(x, targets, net=trainer.model)["loss"] * x.shape[0]
            images += x.shape[0]
        return {"val_loss": float(total.item() / max(images, 1)), "skipped": skipped}


class Checkpointer(HookBase):
    """Writes `last.pt` every `every` steps (at the end of every epoch when None) and after the last
    step, and `best.pt` when an evaluation improved `trainer.best`: rank 0, atomically
    (ssdkit.engine.checkpoint). Before a write, and after each evaluation, every process checks that
    the weights are finite: a finite loss can still end in an update that makes them NaN, and such a
    file must never replace the last good one (NonFiniteLossError; all processes stop together)."""

    def __init__(self, every: Optional[int] = None) -> None:
        self.every = every
        self._last_at = self._best_at = -1

    def before_train(self, trainer: _Trainer) -> None:
        self._last_at = self._best_at = trainer.step
        if trainer.dist.is_main:
            remove_stale_temps(trainer.out_dir, [LAST, BEST])  # left by writes a kill cut short

    def after_step(self, trainer: _Trainer, out: StepOutput) -> None:
        every = self.every
        last = (every is not None and trainer.step % every == 0) or (every is None and out.epoch_end) or trainer.done
        self.write(trainer, last=last, check=trainer.eval_step == trainer.step)

    def after_train(self, trainer: _Trainer) -> None:
        self.write(trainer, last=self._last_at != trainer.step, check=False)  # stopped early: as at the end

    def write(self, trainer: _Trainer, *, last: bool, check: bool) -> None:
        """Check the weights (when `last`, `check` or a new best) and write last.pt and/or best.pt."""
        best = trainer.best is not None and trainer.best.get("step") == trainer.step and self._best_at != trainer.step
        if not (last or best or check):
            return
        self.check_weights(trainer)
        if trainer.dist.is_main and (last or best):
            state = trainer.checkpoint_state()
            for name, due in ((LAST, last), (BEST, best)):
                if due:
                    save_checkpoint(state, Path(trainer.out_dir) / name)
        if last:
            self._last_at = trainer.step
        if best:
            self._best_at = trainer.step

    def check_weights(self, trainer: _Trainer) -> None:
        """NonFiniteLossError when a floating-point weight or buffer is NaN or inf (one host sync)."""
        tensors = [t for t in trainer.model.state_dict().values() if t.is_floating_point()]
        if not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
            return
        state = trainer.model.state_dict()
        bad = [k for k, t in state.items() if t.is_floating_point() and not torch.isfinite(t).all()]
        raise NonFiniteLossError(
            f"the weights became NaN or inf in step {trainer.step} ({len(bad)} tensors, e.g. {bad[0]}) although the "
            f"loss was finite: the update diverged. Nothing was saved; the last good checkpoint is "
            f"{_last_good(trainer)}. Lower train.lr or set train.grad_clip."
        )
