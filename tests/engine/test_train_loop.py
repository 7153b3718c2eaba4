"""The Trainer on generated shapes (CPU): the loss falls, a handful of pictures is learnt by heart,
a killed run resumes exactly, a non-finite loss stops the run (or is skipped), the run folder
holds what the docs say, and the command line works."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

import ssdkit
from ssdkit.boxes import box_iou
from ssdkit.config import RunConfig
from ssdkit.engine import NonFiniteLossError, train
from ssdkit.engine import trainer as trainer_mod
from ssdkit.losses.multibox import MultiboxLoss
from ssdkit.registry import LOSSES, ComponentConfig

# A detector small enough for CPU tests: 96 x 96 input, maps of side 12, 6, 3, 2.
TINY_MODEL = {
    "num_classes": 4,
    "image_size": 96,
    "backbone": {"type": "tiny", "channels": [8, 16, 32, 48, 64, 64], "levels": 4},
    "priors": {"type": "ssd", "aspect_ratios": [[2.0], [2.0], [2.0], [2.0]], "s_min": 0.15, "s_max": 0.9},
}
# Shapes big enough for those priors (the smallest prior is 0.15 of the side).
SHAPES = {"type": "shapes", "image_size": 96, "min_size": 0.15, "max_size": 0.6, "max_objects": 4}


def tiny_run(num_images=64, val_images=8, **train) -> dict:
    """A run config (as a mapping) of the tiny detector on shapes; `train` fields override."""
    return {
        "model": copy.deepcopy(TINY_MODEL),
        "data": {
            "train": {**SHAPES, "num_images": num_images},
            "val": {**SHAPES, "num_images": val_images, "seed": 1},
            "batch_size": 4,
            "num_workers": 0,
        },
        "train": {"max_steps": 8, "lr": 0.01, "log_every": 2, "progress": False, **train},
        "eval": {"enabled": False},
    }


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # what these tests measure does not depend on threads; CI has 2 cores
    yield
    torch.set_num_threads(before)


def _lines(run_dir, kind):
    lines = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [d for d in lines if d["kind"] == kind]


def test_loss_falls_on_shapes(tmp_path):
    cfg = tiny_run(num_images=2000, max_steps=200, optimizer="adamw", lr=0.003, weight_decay=1e-4, warmup_steps=20)
    cfg["data"]["batch_size"] = 8
    cfg["data"]["augment"] = {"enabled": False}
    cfg["train"]["log_every"] = 10
    result = train(cfg, out_dir=tmp_path)
    logs = _lines(tmp_path, "train")
    assert [d["step"] for d in logs] == list(range(10, 201, 10))
    first = logs[0]["loss"]  # mean over steps 1..10
    last = (logs[-1]["loss"] + logs[-2]["loss"]) / 2  # mean over steps 181..200
    assert last < first / 2.5, f"loss went from {first:.3f} to {last:.3f}"
    assert result.steps == 200 and result.metrics["loss"] == pytest.approx(logs[-1]["loss"])


def test_overfits_a_handful_of_pictures(tmp_path):
    cfg = tiny_run(
        num_images=4, max_steps=120, optimizer="adamw", lr=0.003, weight_decay=0.0, warmup_steps=10, schedule="constant"
    )
    few = {**SHAPES, "num_images": 4, "min_objects": 1, "max_objects": 3, "min_size": 0.2}
    cfg["data"].update(train=few, val=few, augment={"enabled": False})
    cfg["eval"] = {"every_steps": 60, "metric": "map"}  # VOC mAP@0.5 on the same pictures
    result = train(cfg, out_dir=tmp_path)
    assert result.metrics["loss"] < 0.05
    assert result.metrics["map"] >= 0.95
    assert result.best["metric"] == "map" and result.best_checkpoint.name == "best.pt"

    from ssdkit.data import build_loader

    run = RunConfig.model_validate(cfg)
    batch = next(iter(build_loader(run.data, run.model, "val")))  # the same 4 pictures, unaugmented
    model = result.model.eval()
    with torch.inference_mode():
        dets = model.detect(*model(batch.images))
    for i, (det, gt) in enumerate(zip(dets, batch.targets, strict=True)):
        assert len(gt["boxes"]) >= 1
        confident = det["scores"] >= 0.5
        iou = box_iou(gt["boxes"], det["boxes"][confident])
        same_label = gt["labels"][:, None] == det["labels"][confident][None, :]
        best = torch.where(same_label, iou, 0.0).amax(dim=1) if confident.any() else torch.zeros(len(gt["boxes"]))
        assert (best >= 0.7).all(), f"picture {i}: best IoU per box {best.tolist()}"


class _Killed(Exception):
    pass


def test_resume_after_a_kill_continues_exactly(tmp_path, monkeypatch):
    # 20 pictures in batches of 4: 5 steps an epoch. The run is killed in step 7, after a checkpoint at
    # step 4 (mid-epoch): the resumed run skips 4 batches of epoch 0, finishes it, and goes on into
    # epoch 1. Augmentation, a loader worker, momentum, warm-up + cosine, clipping and evaluation take part.
    cfg = tiny_run(num_images=20, max_steps=8, checkpoint_every=4, warmup_steps=3, grad_clip=5.0, weight_decay=1e-3)
    cfg["data"]["num_workers"] = 1
    cfg["eval"] = {"every_steps": 3, "metric": "val_loss"}

    straight = train(cfg, out_dir=tmp_path / "straight")

    real_update = trainer_mod.Trainer._update

    def killed_in_step_7(self, loss, params):
        if self.step == 6:  # after the checkpoint of step 4 and the log and evaluation of step 6
            raise _Killed
        real_update(self, loss, params)

    monkeypatch.setattr(trainer_mod.Trainer, "_update", killed_in_step_7)
    with pytest.raises(_Killed):
        train(cfg, out_dir=tmp_path / "split")
    monkeypatch.undo()
    ckpt = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert (ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]) == (4, 0, 4)
    assert [d["step"] for d in _lines(tmp_path / "split", "train")] == [2, 4, 6]

    resumed = train(cfg, out_dir=tmp_path / "split", resume=True)
    assert resumed.steps == straight.steps == 8
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resuming"
    sa = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    sb = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    for i, state in sa["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], sb["optimizer"]["state"][i]["momentum_buffer"])
    assert sa["scheduler"]["last_epoch"] == sb["scheduler"]["last_epoch"] == 8
    # the metrics file goes on from the checkpoint: what the killed run wrote after it is not repeated
    steps = [d["step"] for d in _lines(tmp_path / "split", "train")]
    assert steps == [2, 4, 6, 8]
    assert [d["val_loss"] for d in _lines(tmp_path / "split", "eval")] == [
        d["val_loss"] for d in _lines(tmp_path / "straight", "eval")
    ]


class NanAtConfig(ComponentConfig):
    type: str = "test_nan_at"
    calls: list[int] = []
    term: str = "cls"


class NanAt(nn.Module):
    """The multibox loss, with `term` made NaN on the listed calls (1-based)."""

    def __init__(self, calls, term, *, box_coder, matcher):
        super().__init__()
        self.inner = MultiboxLoss(box_coder=box_coder, matcher=matcher)
        self.calls, self.term, self.count = set(calls), term, 0

    def forward(self, loc, logits, targets, priors):
        self.count += 1
        out = self.inner(loc, logits, targets, priors)
        if self.count in self.calls:
            out[self.term] = out[self.term] * math.nan
            out["loss"] = out["loc"] + out["cls"]
        return out


@pytest.fixture
def nan_loss():
    LOSSES.register("test_nan_at", config=NanAtConfig)(NanAt)
    yield
    LOSSES.unregister("test_nan_at")


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, nan_loss):
    cfg = tiny_run(num_images=32, max_steps=10, checkpoint_every=2)
    cfg["model"]["loss"] = {"type": "test_nan_at", "calls": [5], "term": "loc"}
    with pytest.raises(NonFiniteLossError, match=r"step 5 .*term 'loc'"):
        train(cfg, out_dir=tmp_path)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["step"] == 4  # written after step 4, not overwritten by the bad step
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_nan_skip_policy_skips_counts_and_reports(tmp_path, nan_loss):
    cfg = tiny_run(num_images=32, max_steps=6, nan_policy="skip")
    cfg["model"]["loss"] = {"type": "test_nan_at", "calls": [2, 5], "term": "cls"}
    result = train(cfg, out_dir=tmp_path)
    assert result.nan_skipped == 2 and result.steps == 6
    assert _lines(tmp_path, "end")[0]["nan_skipped"] == 2
    weights = torch.load(tmp_path / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_run_folder_holds_config_metrics_and_loadable_checkpoints(tmp_path):
    cfg = tiny_run(num_images=24, max_steps=12, warmup_steps=4)
    cfg["eval"] = {"every_steps": 4, "metric": "val_loss"}
    result = ssdkit.train(cfg, out_dir=tmp_path)  # the package is callable
    assert result.run_dir == tmp_path
    saved, given = RunConfig.from_file(tmp_path / "config.yaml"), RunConfig.model_validate(cfg)
    assert given.model.class_names is None and saved.model.class_names == result.model.class_names
    assert saved.model.class_names == ["circle", "square", "triangle"]  # the model takes the data set's names
    given.model.class_names = saved.model.class_names
    assert saved == given

    evals = _lines(tmp_path, "eval")
    assert [d["step"] for d in evals] == [4, 8, 12]
    best_step = min(evals, key=lambda d: d["val_loss"])["step"]
    assert result.best["step"] == best_step and result.best["metric"] == "val_loss"
    assert [d["step"] for d in evals if d["is_best"]][-1] == best_step
    logs = _lines(tmp_path, "train")
    assert {"loss", "loc", "cls", "lr", "images_per_s", "epoch"} <= set(logs[0])
    assert logs[0]["lr"] < logs[1]["lr"] > logs[-1]["lr"]  # warm-up, then decay

    best = torch.load(result.best_checkpoint, weights_only=True)
    assert best["step"] == best_step and best["ssdkit_version"] == ssdkit.__version__
    assert RunConfig.model_validate_json(best["run_config"]) == given == saved
    # a training checkpoint is also a weights file
    fresh = ssdkit.build_model(cfg["model"])
    ssdkit.io.weights.load_weights(fresh, result.last_checkpoint)
    for k, v in result.model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)

    with pytest.raises(FileExistsError, match="already holds a run"):
        train(cfg, out_dir=tmp_path)


def test_run_config_overrides_and_errors(tmp_path):
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_run()))
    cfg = RunConfig.from_file(path, ["train.lr=1e-3", "model.num_classes=4", "train.milestones=[0.5, 0.75]"])
    assert cfg.train.lr == 0.001 and cfg.train.milestones == [0.5, 0.75]
    with pytest.raises(ValueError, match="unknown key 'train.lrr'; did you mean 'train.lr'"):
        RunConfig.from_file(path, ["train.lrr=0.1"])
    with pytest.raises(ValueError, match="unknown key 'data.batchsize'; did you mean 'data.batch_size'"):
        RunConfig.from_file(path, ["data.batchsize=2"])
    with pytest.raises(ValueError, match="exactly one of train.epochs or train.max_steps"):
        RunConfig.from_file(path, ["train.epochs=2", "train.max_steps=3"])
    # one of them alone replaces the other way of giving the run length
    assert RunConfig.from_file(path, ["train.epochs=2"]).train.max_steps is None
    bad = tiny_run()
    bad["train"]["warmup_step"] = 3
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(
        ValueError, match=r"(?s)run\.yaml.*unknown key 'train.warmup_step'; did you mean 'train.warmup_steps'"
    ):
        RunConfig.from_file(path)


def test_command_line(tmp_path, capsys):
    import yaml

    from ssdkit.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_run(num_images=16)))
    out = tmp_path / "run"
    assert (
        main(["train", str(path), "--set", "train.max_steps=3", "--set", "train.progress=true", "--out", str(out)]) == 0
    )
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3
    shown = capsys.readouterr()
    assert "trained 3 steps" in shown.out
    assert all(key in shown.err for key in ("3/3", "loss=", "lr=", "images_per_s="))  # the progress bar
    # continue the same run for longer
    assert main(["train", str(path), "--set", "train.max_steps=5", "--out", str(out), "--resume"]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 5
    # --resume PATH continues in that checkpoint's folder
    assert main(["train", str(path), "--set", "train.max_steps=6", "--resume", str(out / "last.pt")]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 6
    assert main(["train", str(path), "--resume", str(tmp_path / "nowhere.pt")]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
    assert main(["train", str(path), "--set", "train.lr=0.1", "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", str(path), "--set", "train.optimiser=sgd"]) == 2
    assert "did you mean 'train.optimizer'" in capsys.readouterr().err
    assert main(["train", "no_such_config"]) == 2
    assert "shapes_tiny" in capsys.readouterr().err


def test_shipped_example_runs(tmp_path, capsys):
    from ssdkit.cli import main
    from ssdkit.config import example_configs

    assert "shapes_tiny" in example_configs()
    small = ["train.epochs=null", "train.max_steps=2", "data.batch_size=2", "data.num_workers=0", "eval.enabled=false"]
    small.append("train.log_every=1")
    args = ["train", "shapes_tiny", "--out", str(tmp_path), "--no-progress"]
    assert main([*args, *(x for item in small for x in ("--set", item))]) == 0
    # Without the bar, every log step is one plain line (what a log file or CI shows).
    shown = capsys.readouterr()
    lines = [t for t in shown.err.splitlines() if t.startswith("step ")]
    assert [t.split()[1] for t in lines] == ["1/2", "2/2"], shown.err
    assert all(" loss " in t and " lr " in t for t in lines)
    assert "trained 2 steps in" in shown.out
    cfg = RunConfig.from_file(tmp_path / "config.yaml")
    assert cfg.model.backbone.type == "tiny" and cfg.train.max_steps == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_precision_on_cuda(tmp_path):
    cfg = tiny_run(num_images=16, max_steps=6, device="cuda", amp=True, checkpoint_every=3)
    result = train(cfg, out_dir=tmp_path)
    assert next(result.model.parameters()).is_cuda
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["scaler"]["scale"] > 0  # the gradient scaler was on and is saved
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    resumed = train({**cfg, "train": {**cfg["train"], "max_steps": 8}}, out_dir=tmp_path, resume=True)
    assert resumed.steps == 8


def test_run_config_refuses_an_alias_bomb(tmp_path):
    path = tmp_path / "bomb.yaml"
    levels = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True))
    path.write_text("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + levels + "model: *h\n")
    with pytest.raises(ValueError, match="once YAML aliases are expanded"):
        RunConfig.from_file(path)
