"""The trainer's hooks: the constructor builds the run, the loop calls hooks in order with the right
step numbers, user hooks come after the built-in ones, and the early-stopping hook of
docs/training.md#hooks stops a run at the evaluation it should."""

from __future__ import annotations

import pytest
import torch
from test_train_loop import _lines, _one_thread, tiny_run  # noqa: F401 (_one_thread: an autouse fixture)

import ssdkit
from ssdkit import engine
from ssdkit.engine import HookBase


class EarlyStopping(HookBase):
    """Stop when the evaluation metric has not improved for `patience` evaluations (docs/training.md)."""

    def __init__(self, patience: int) -> None:
        self.patience, self.stale = patience, 0

    def after_eval(self, trainer, result, improved):
        self.stale = 0 if improved else self.stale + 1
        if self.stale >= self.patience:
            trainer.stop(f"no better {trainer.metric} in {self.patience} evaluations")

    def state_dict(self):
        return {"stale": self.stale}

    def load_state_dict(self, state):
        self.stale = state["stale"]


class Recorder(HookBase):
    """Writes (name, event, trainer.step, ...) to a shared list at every event."""

    def __init__(self, name, log, run_dir=None):
        self.name, self.log, self.run_dir = name, log, run_dir

    def before_train(self, trainer):
        self.log.append((self.name, "before_train", trainer.step))

    def before_step(self, trainer):
        self.log.append((self.name, "before_step", trainer.step))
        if self.run_dir is not None and trainer.step > 0 and trainer.step % 2 == 0:  # checkpoint_every=2
            assert torch.load(self.run_dir / "last.pt", weights_only=True)["step"] == trainer.step

    def after_step(self, trainer, out):
        assert isinstance(out, engine.StepOutput) and out.updated and set(out.terms) >= {"loc", "cls", "loss"}
        self.log.append((self.name, "after_step", trainer.step, out.epoch, out.epoch_end))
        if self.run_dir is not None and trainer.step % 2 == 0:  # MetricsWriter ran first; Checkpointer runs last
            assert _lines(self.run_dir, "train")[-1]["step"] == trainer.step
            last = self.run_dir / "last.pt"
            assert not last.exists() or torch.load(last, weights_only=True)["step"] < trainer.step

    def after_eval(self, trainer, result, improved):
        self.log.append((self.name, "after_eval", trainer.step, set(result), improved))

    def after_train(self, trainer):
        self.log.append((self.name, "after_train", trainer.step))

    def close(self, trainer):
        self.log.append((self.name, "close", trainer.step, trainer.finished))


def test_the_constructor_builds_the_run_and_fit_runs_it_once(tmp_path):
    trainer = engine.Trainer(tiny_run(max_steps=2), out_dir=tmp_path / "run", hooks=[EarlyStopping(2)])
    assert isinstance(trainer.model, ssdkit.SSD) and trainer.optimizer is not None and trainer.step == 0
    assert trainer.total_steps == 2 and len(trainer.train_loader) == trainer.steps_per_epoch == 16
    assert not (tmp_path / "run").exists()  # building writes nothing: fit() does
    kinds = [engine.NaNPolicy, engine.LRSchedule, engine.SkippedItems, engine.MetricsWriter, engine.EvalHook]
    kinds += [EarlyStopping, engine.Checkpointer]  # the user's hooks before the Checkpointer
    assert [type(h) for h in trainer.hooks] == kinds
    result = trainer.fit()
    assert result.steps == 2 and result.stopped is None and (tmp_path / "run" / "last.pt").is_file()
    with pytest.raises(RuntimeError, match="has run already"):
        trainer.fit()
    with pytest.raises(TypeError, match=r"hooks\[1\]: expected an ssdkit.engine.HookBase, got function"):
        engine.Trainer(tiny_run(), out_dir=tmp_path / "other", hooks=[EarlyStopping(2), lambda t: None])


def test_hooks_are_called_in_order_with_the_step_numbers(tmp_path):
    # 8 pictures in batches of 4: 2 steps an epoch. Evaluations at step 3 and at the end (step 4).
    cfg = tiny_run(num_images=8, max_steps=4, checkpoint_every=2)
    cfg["eval"] = {"every_steps": 3, "metric": "val_loss"}
    log = []
    result = ssdkit.train(cfg, out_dir=tmp_path, hooks=[Recorder("a", log, tmp_path), Recorder("b", log)])
    assert result.steps == 4

    def both(*event):
        return [("a", *event), ("b", *event)]

    evaluated = {"val_loss", "skipped"}
    expected = [
        *both("before_train", 0),
        *both("before_step", 0),
        *both("after_step", 1, 0, False),
        *both("before_step", 1),
        *both("after_step", 2, 0, True),
        *both("before_step", 2),
        *both("after_eval", 3, evaluated, True),  # from EvalHook, which comes before the user hooks
        *both("after_step", 3, 1, False),
        *both("before_step", 3),
        *both("after_eval", 4, evaluated, _lines(tmp_path, "eval")[-1]["is_best"]),
        *both("after_step", 4, 1, True),
        *both("after_train", 4),
        *both("close", 4, True),
    ]
    assert log == expected


def test_a_failed_run_closes_its_hooks_without_after_train(tmp_path, monkeypatch):
    class Boom(Exception):
        pass

    class FailsAtStep3(HookBase):
        def after_step(self, trainer, out):
            if trainer.step == 3:
                raise Boom

    log = []
    with pytest.raises(Boom):
        ssdkit.train(tiny_run(max_steps=6), out_dir=tmp_path, hooks=[FailsAtStep3(), Recorder("a", log)])
    assert [e[1] for e in log if e[1] not in ("before_step", "after_step")] == ["before_train", "close"]
    assert log[-1] == ("a", "close", 3, False)
    assert _lines(tmp_path, "end") == []  # no summary line for a run that failed


def test_the_early_stopping_hook_of_the_docs_stops_at_the_expected_step(tmp_path):
    # At this learning rate the validation loss first jumps up, then falls: a run without the hook
    # tells at which evaluation `patience` evaluations in a row have not beaten the best.
    cfg = tiny_run(num_images=32, max_steps=16, lr=0.05, log_every=4, checkpoint_every=4)
    cfg["eval"] = {"every_steps": 2, "metric": "val_loss"}
    full = ssdkit.train(cfg, out_dir=tmp_path / "full")
    evals = _lines(tmp_path / "full", "eval")
    patience, best, best_step, stale, expected = 2, float("inf"), None, 0, None
    for line in evals:
        stale = 0 if line["val_loss"] < best else stale + 1
        if line["val_loss"] < best:
            best, best_step = line["val_loss"], line["step"]
        if stale >= patience:
            expected = line["step"]
            break
    assert expected is not None and expected < full.steps == 16, [d["val_loss"] for d in evals]

    result = ssdkit.train(cfg, out_dir=tmp_path / "early", hooks=[EarlyStopping(patience)])
    run = tmp_path / "early"
    assert result.steps == expected and result.stopped == "no better val_loss in 2 evaluations"
    assert torch.load(run / "last.pt", weights_only=True)["step"] == expected  # written at the stop
    assert [d["step"] for d in _lines(run, "eval")] == [d["step"] for d in evals if d["step"] <= expected]
    assert [d["val_loss"] for d in _lines(run, "eval")] == [d["val_loss"] for d in evals if d["step"] <= expected]
    assert _lines(run, "train")[-1]["step"] == expected  # the steps since the last log line are logged
    assert [d["step"] for d in _lines(run, "end")] == [expected]
    assert result.best == {"metric": "val_loss", "value": best, "step": best_step}
    assert torch.load(run / "best.pt", weights_only=True)["step"] == best_step


def test_a_stop_between_log_eval_and_checkpoint_steps_ends_the_run_as_at_its_end(tmp_path):
    class StopAt3(HookBase):
        def before_step(self, trainer):
            if trainer.step == 2:  # a stop asked for before a step ends the run after that step
                trainer.stop("enough")

    cfg = tiny_run(max_steps=12, log_every=2, checkpoint_every=4)
    cfg["eval"] = {"every_steps": 4, "metric": "val_loss"}  # and at the end (eval.at_end)
    result = ssdkit.train(cfg, out_dir=tmp_path, hooks=[StopAt3()])
    assert result.steps == 3 and result.stopped == "enough"
    assert [d["step"] for d in _lines(tmp_path, "train")] == [2, 3]
    assert [(d["step"], d["is_best"]) for d in _lines(tmp_path, "eval")] == [(3, True)]
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 3
    assert torch.load(tmp_path / "best.pt", weights_only=True)["step"] == 3 == result.best["step"]
    assert [d["step"] for d in _lines(tmp_path, "end")] == [3]

    resumed = ssdkit.train(cfg, out_dir=tmp_path, resume=True)  # a stopped run resumes to its planned end
    assert resumed.steps == 12 and resumed.stopped is None
    assert [d["step"] for d in _lines(tmp_path, "train")] == [2, 3, 4, 6, 8, 10, 12]


def test_a_stop_asked_for_in_the_last_step_is_no_early_stop(tmp_path):
    class StopLate(HookBase):
        def after_step(self, trainer, out):
            if trainer.step == 4:
                trainer.stop("too late to matter")

    result = ssdkit.train(tiny_run(max_steps=4), out_dir=tmp_path, hooks=[StopLate()])
    assert result.steps == 4 and result.stopped is None
    assert result.last_checkpoint == tmp_path / "last.pt" and result.last_checkpoint.is_file()


def test_without_the_checkpointer_the_result_names_no_checkpoint(tmp_path):
    from ssdkit.engine import Checkpointer, Trainer

    trainer = Trainer(tiny_run(max_steps=2), out_dir=tmp_path)
    trainer.hooks = [h for h in trainer.hooks if not isinstance(h, Checkpointer)]
    result = trainer.fit()
    assert result.steps == 2 and result.last_checkpoint is None and not (tmp_path / "last.pt").exists()


class StepCounter(HookBase):
    def __init__(self) -> None:
        self.count = 0

    def after_step(self, trainer, out):
        self.count += 1

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


def test_a_hooks_state_is_checkpointed_and_restored_on_resume(tmp_path):
    first = StepCounter()
    ssdkit.train(tiny_run(max_steps=4), out_dir=tmp_path, hooks=[first, StepCounter()])
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["hooks"]
    assert saved == {"StepCounter#0": {"count": 4}, "StepCounter#1": {"count": 4}}  # built-in hooks keep none

    again = StepCounter()  # a new process: a fresh hook, its count given back by the checkpoint
    cfg = tiny_run(max_steps=7)
    with pytest.warns(RuntimeWarning, match=r"hooks this run lacks \(StepCounter#1\)"):
        ssdkit.train(cfg, out_dir=tmp_path, resume=True, hooks=[again])
    assert again.count == 7
    assert torch.load(tmp_path / "last.pt", weights_only=True)["hooks"] == {"StepCounter#0": {"count": 7}}
