"""Runs that fail loudly: weights that turn NaN are never checkpointed, a run that skips too much of
its data stops, skipped evaluation items are counted, a resumed run restores the global RNGs a
plugin draws from, a restarted run starts its metrics afresh, stale temp files go, resume errors
say what changed."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ssdkit.engine import NonFiniteLossError, TooManySkippedError, train
from ssdkit.engine import trainer as trainer_mod
from ssdkit.losses.multibox import MultiboxLoss
from ssdkit.registry import LOSSES, ComponentConfig

TINY_MODEL = {
    "num_classes": 4,
    "class_names": ["circle", "square", "triangle"],
    "image_size": 64,
    "backbone": {"type": "tiny", "channels": [8, 16, 32, 48, 64, 64], "levels": 3},
    "priors": {"type": "ssd", "aspect_ratios": [[2.0], [2.0], [2.0]], "s_min": 0.2, "s_max": 0.9},
}
SHAPES = {"type": "shapes", "image_size": 64, "min_size": 0.2, "max_size": 0.6, "max_objects": 3}


def run_cfg(num_images: int = 16, **train_fields) -> dict:
    return {
        "model": copy.deepcopy(TINY_MODEL),
        "data": {
            "train": {**SHAPES, "num_images": num_images},
            "val": {**SHAPES, "num_images": 4, "seed": 1},
            "batch_size": 4,
            "num_workers": 0,
        },
        "train": {"max_steps": 6, "lr": 0.01, "log_every": 2, "progress": False, **train_fields},
        "eval": {"enabled": False},
    }


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def lines(run_dir: Path, kind: str) -> list[dict]:
    records = [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [d for d in records if d["kind"] == kind]


def finite(path: Path) -> bool:
    state = torch.load(path, weights_only=True)["state_dict"]
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


# ---------------------------------------------------------------- NaN weights


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_weights_made_nan_by_an_update_are_never_checkpointed(tmp_path, monkeypatch, policy):
    """The loss of step 3 is finite but its update makes the weights NaN: last.pt stays step 2's."""
    real = trainer_mod.Trainer._update

    def diverging(self, loss, params):
        real(self, loss, params)
        if self.step == 2:  # the update of step 3 (self.step counts steps done)
            with torch.no_grad():
                params[0].fill_(float("nan"))

    monkeypatch.setattr(trainer_mod.Trainer, "_update", diverging)
    with pytest.raises(
        NonFiniteLossError, match=r"weights became NaN or inf in step 3 .*last good checkpoint is .*last\.pt"
    ):
        train(run_cfg(checkpoint_every=1, nan_policy=policy), out_dir=tmp_path)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 2
    assert finite(tmp_path / "last.pt")


def test_huge_learning_rate_ends_with_a_good_checkpoint_or_none(tmp_path):
    """The issue's case: lr 1e6, a checkpoint each step. Whatever step diverges, what is on disk is finite."""
    with pytest.raises(NonFiniteLossError):
        train(run_cfg(checkpoint_every=1, lr=1e6, max_steps=8), out_dir=tmp_path)
    assert not (tmp_path / "last.pt").exists() or finite(tmp_path / "last.pt")


# ---------------------------------------------------------------- skipped data


def broken_voc(root: Path, n: int, bad: set[int]) -> Path:
    """A VOC root of n 64x64 pictures with one box each; those in `bad` are truncated JPEGs."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        path = root / "JPEGImages" / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        if i in bad:
            path.write_bytes(path.read_bytes()[:200])
        (root / "Annotations" / f"{i}.xml").write_text(
            "<annotation><size><width>64</width><height>64</height></size><object><name>circle</name>"
            "<bndbox><xmin>5</xmin><ymin>5</ymin><xmax>40</xmax><ymax>40</ymax></bndbox></object></annotation>"
        )
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("".join(f"{i}\n" for i in range(n)))
    return root


def voc_data(root: Path) -> dict:
    return {"type": "voc", "root": str(root), "class_names": ["circle", "square", "triangle"]}


@pytest.mark.filterwarnings("ignore::ssdkit.data.BadItemWarning")
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")  # no batch had an item to learn from
def test_a_run_on_unreadable_data_stops_and_says_so(tmp_path):
    cfg = run_cfg(max_steps=4)
    cfg["data"]["train"] = voc_data(broken_voc(tmp_path / "voc", 8, bad=set(range(8))))
    cfg["data"]["on_bad_item"] = "skip"
    message = r"8 of the 8 training items .* data\.max_skipped_share=0\.1 of them: the run stops"
    with pytest.raises(TooManySkippedError, match=message):
        train(cfg, out_dir=tmp_path / "run")


@pytest.mark.filterwarnings("ignore::ssdkit.data.BadItemWarning")
def test_a_share_of_skipped_items_under_the_limit_trains(tmp_path):
    cfg = run_cfg(max_steps=4)
    cfg["data"]["train"] = voc_data(broken_voc(tmp_path / "voc", 8, bad={3}))
    cfg["data"]["on_bad_item"] = "skip"
    cfg["data"]["max_skipped_share"] = 0.2
    result = train(cfg, out_dir=tmp_path / "run")
    assert result.steps == 4 and result.skipped_items == 2  # two epochs of 8 items, one bad each


@pytest.mark.filterwarnings("ignore::ssdkit.data.BadItemWarning")
def test_items_skipped_in_evaluation_are_counted_in_the_metrics_file(tmp_path):
    cfg = run_cfg(max_steps=2)
    cfg["data"]["val"] = voc_data(broken_voc(tmp_path / "voc", 4, bad={1}))
    cfg["data"]["on_bad_item"] = "skip"
    cfg["eval"] = {"enabled": True, "every_steps": 2, "metric": "val_loss"}
    train(cfg, out_dir=tmp_path / "run")
    assert [d["skipped"] for d in lines(tmp_path / "run", "eval")] == [1]


# ---------------------------------------------------------------- RNG resume with a plugin


class NoisyConfig(ComponentConfig):
    type: str = "test_global_rng"


class Noisy(nn.Module):
    """The multibox loss scaled by draws from torch's, numpy's and Python's global generators, as
    user plugins do (dropout, stochastic losses): a resumed run must continue their streams."""

    def __init__(self, *, box_coder, matcher):
        super().__init__()
        self.inner = MultiboxLoss(box_coder=box_coder, matcher=matcher)

    def forward(self, loc, logits, targets, priors):
        out = self.inner(loc, logits, targets, priors)
        noise = float(torch.rand(())) + float(np.random.rand()) + random.random()
        return {**out, "loss": out["loss"] * (0.5 + noise)}


class _Killed(Exception):
    pass


def test_resume_restores_the_global_rngs_a_plugin_draws_from(tmp_path, monkeypatch):
    LOSSES.register("test_global_rng", config=NoisyConfig)(Noisy)
    try:
        cfg = run_cfg(max_steps=6, checkpoint_every=3, log_every=1)
        cfg["model"]["loss"] = {"type": "test_global_rng"}
        straight = train(cfg, out_dir=tmp_path / "straight")
        real = trainer_mod.Trainer._update

        def killed_in_step_5(self, loss, params):
            if self.step == 4:
                torch.rand(5), np.random.rand(5), random.random()  # the dying process drew more
                raise _Killed
            real(self, loss, params)

        monkeypatch.setattr(trainer_mod.Trainer, "_update", killed_in_step_5)
        with pytest.raises(_Killed):
            train(cfg, out_dir=tmp_path / "split")
        monkeypatch.undo()
        torch.manual_seed(99), np.random.seed(99), random.seed(99)  # a new process: other states
        resumed = train(cfg, out_dir=tmp_path / "split", resume=True)
    finally:
        LOSSES.unregister("test_global_rng")
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [d["loss"] for d in lines(tmp_path / "split", "train")] == [
        d["loss"] for d in lines(tmp_path / "straight", "train")
    ]


# ---------------------------------------------------------------- the run folder


def test_a_run_killed_before_its_first_checkpoint_starts_its_metrics_afresh(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 2}\n{"kind": "train", "step": 4}\n{"kin')
    train(run_cfg(max_steps=4), out_dir=tmp_path)
    assert [d["step"] for d in lines(tmp_path, "train")] == [2, 4]
    assert len(lines(tmp_path, "end")) == 1


def test_stale_temp_files_of_killed_writes_are_removed(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    stale = [tmp_path / ".last.pt.0a1b2c3d4e5f.tmp", tmp_path / ".best.pt.ffffffffffff.tmp"]
    other = tmp_path / ".notes.0a1b2c3d4e5f.tmp"
    for p in [*stale, other]:
        p.write_bytes(b"partial")
    train(run_cfg(max_steps=2), out_dir=tmp_path)
    assert not any(p.exists() for p in stale) and other.exists()


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_no_temp_file(tmp_path, monkeypatch):
    """Disk full (or a kill) during a write: the previous checkpoint is intact, no partial file remains."""
    train(run_cfg(max_steps=2), out_dir=tmp_path)
    before = (tmp_path / "last.pt").read_bytes()
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    cfg = run_cfg(max_steps=4)
    with pytest.raises(OSError, match="No space left"):
        train(cfg, out_dir=tmp_path, resume=True)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_resume_with_another_optimiser_says_what_changed(tmp_path):
    train(run_cfg(max_steps=2, optimizer="sgd"), out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"last\.pt: the checkpoint's optimizer state does not fit.*train\.optimizer"):
        train(run_cfg(max_steps=4, optimizer="adamw"), out_dir=tmp_path, resume=True)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"step: 3\nweights: here\n", "not a weights file at all: it is text"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "an HTML or XML page"),
        (bytes(4096), "only zero bytes"),
    ],
)
def test_a_checkpoint_that_is_no_checkpoint(tmp_path, content, message):
    train(run_cfg(max_steps=2), out_dir=tmp_path)
    (tmp_path / "last.pt").write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        train(run_cfg(max_steps=4), out_dir=tmp_path, resume=True)
    assert "weights_only=False" not in str(err.value) and "last.pt" in str(err.value)


# ---------------------------------------------------------------- kill -9


def test_kill_9_mid_run_leaves_a_whole_checkpoint_that_resumes(tmp_path):
    """A real `kill -9` of a training process that checkpoints every step: whatever moment it lands,
    last.pt loads, holds finite weights, and the run resumes from it to the end."""
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from ssdkit.engine.checkpoint import load_checkpoint

    cfg = run_cfg(num_images=64, max_steps=400, checkpoint_every=1)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "ssdkit.cli", "train", str(tmp_path / "run.yaml"), "--out", str(out)]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (out / "last.pt").is_file(), proc.stderr.read().decode() if proc.poll() is not None else "no checkpoint"
        time.sleep(0.7)  # several more checkpoint writes are under way: the kill lands mid-run
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    step = int(load_checkpoint(out / "last.pt")["step"])
    assert 1 <= step < 400 and finite(out / "last.pt")
    resumed = subprocess.run(
        [*command, "--resume", "--set", f"train.max_steps={step + 2}"], capture_output=True, text=True, timeout=180, env=env
    )
    assert resumed.returncode == 0, resumed.stderr
    assert int(load_checkpoint(out / "last.pt")["step"]) == step + 2
    assert not list(out.glob(".*.tmp"))  # a write the kill cut short leaves no temp file behind
