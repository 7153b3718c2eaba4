"""Trainer parts that need no data: the schedule (against torch's own schedulers), checkpoint
files (weights_only loading, atomic writes under a crash, RNG round trip), dotted overrides
and torchrun's environment."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import ssdkit
from ssdkit.config.overrides import ConfigKeyError, apply_overrides, parse_override
from ssdkit.engine import checkpoint as ckpt_mod
from ssdkit.engine import distributed
from ssdkit.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ssdkit.engine.schedule import build_scheduler


def _lrs(scheduler, optimizer, steps):
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def _opt(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_multistep_matches_torch_multisteplr():
    total = 90
    ours_opt, peer_opt = _opt(), _opt()
    ours = build_scheduler(ours_opt, total_steps=total, schedule="multistep", milestones=(1 / 3, 0.8), gamma=0.5)
    peer = torch.optim.lr_scheduler.MultiStepLR(peer_opt, milestones=[30, 72], gamma=0.5)
    assert _lrs(ours, ours_opt, total) == pytest.approx(_lrs(peer, peer_opt, total), rel=1e-12)


def test_cosine_matches_torch_cosine_annealing():
    total = 50
    ours_opt, peer_opt = _opt(), _opt()
    ours = build_scheduler(ours_opt, total_steps=total, schedule="cosine", min_factor=0.1)
    peer = torch.optim.lr_scheduler.CosineAnnealingLR(peer_opt, T_max=total, eta_min=0.01)
    # torch updates the cosine recursively, so the two agree to rounding only
    assert _lrs(ours, ours_opt, total) == pytest.approx(_lrs(peer, peer_opt, total), rel=1e-9, abs=1e-12)


def test_warmup_matches_torch_linearlr():
    ours_opt, peer_opt = _opt(), _opt()
    ours = build_scheduler(ours_opt, total_steps=40, schedule="constant", warmup_steps=10, warmup_factor=0.01)
    peer = torch.optim.lr_scheduler.LinearLR(peer_opt, start_factor=0.01, end_factor=1.0, total_iters=10)
    assert _lrs(ours, ours_opt, 40) == pytest.approx(_lrs(peer, peer_opt, 40), rel=1e-9)


def test_scheduler_state_is_plain_data_and_resumes():
    opt = _opt()
    sched = build_scheduler(opt, total_steps=20, schedule="cosine", warmup_steps=5)
    _lrs(sched, opt, 7)
    state = sched.state_dict()
    assert state["lr_lambdas"] == [None]  # nothing unpicklable with weights_only
    opt2 = _opt()
    sched2 = build_scheduler(opt2, total_steps=20, schedule="cosine", warmup_steps=5)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(state)
    assert _lrs(sched2, opt2, 13) == _lrs(sched, opt, 13)


def _training_state():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 3, 8, 8)).sum().backward()
    opt.step()
    sched = build_scheduler(opt, total_steps=10, schedule="cosine")
    return {
        "format": ckpt_mod.FORMAT,
        "state_dict": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": torch.amp.GradScaler("cuda", enabled=False).state_dict(),
        "rng": rng_state(),
        "step": 3,
        "epoch": 0,
        "config": '{"a": 1}',
        "best": {"metric": "map", "value": 0.5, "step": 2},
    }


def test_checkpoint_loads_with_weights_only(tmp_path):
    state = _training_state()
    path = save_checkpoint(state, tmp_path / "run" / "last.pt")
    back = torch.load(path, weights_only=True)  # the plain torch call, no ssdkit helper
    assert back["step"] == 3 and back["best"] == state["best"]
    for k, v in state["state_dict"].items():
        assert torch.equal(back["state_dict"][k], v)
    assert back["optimizer"]["state"][0]["momentum_buffer"].equal(state["optimizer"]["state"][0]["momentum_buffer"])
    assert load_checkpoint(path)["epoch"] == 0


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    first = _training_state()
    save_checkpoint(first, path)

    real_save = torch.save

    def half_then_crash(obj, f, *args, **kwargs):
        import io

        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # half of the new file reaches the disk
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", half_then_crash)
    second = dict(_training_state(), step=99)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(second, path)
    monkeypatch.undo()

    back = torch.load(path, weights_only=True)
    assert back["step"] == 3
    for k, v in first["state_dict"].items():
        assert torch.equal(back["state_dict"][k], v)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_load_checkpoint_rejects_other_files(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match=r"weights\.pt: not an ssdkit training checkpoint"):
        load_checkpoint(path)
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.pt"):
        load_checkpoint(tmp_path / "junk.pt")


def test_rng_state_round_trip_through_a_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's legacy state
    save_checkpoint({"rng": rng_state()}, tmp_path / "rng.pt")
    draws = (torch.rand(5), np.random.rand(5), np.random.normal(), [random.random() for _ in range(5)])
    torch.rand(100), np.random.rand(100), random.random()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    again = (torch.rand(5), np.random.rand(5), np.random.normal(), [random.random() for _ in range(5)])
    assert torch.equal(draws[0], again[0])
    assert np.array_equal(draws[1], again[1])
    assert draws[2] == again[2] and draws[3] == again[3]


_MODEL = {
    "num_classes": 4,
    "image_size": 64,
    "backbone": {"type": "tiny", "channels": [8, 16, 32], "levels": 2},
    "priors": {"type": "ssd", "aspect_ratios": [[2.0], [2.0]], "s_min": 0.2, "s_max": 0.9},
}


def test_overrides_parse_yaml_scalars_and_reach_defaults():
    out = apply_overrides(
        ssdkit.SSDConfig,
        _MODEL,
        [
            "num_classes=7",
            "backbone.depth=2",
            "head.kernel_size=5",  # head is not in the file: its default is filled in first
            "priors.aspect_ratios.1=[2, 3]",
            "priors.s_min=1e-1",
            "class_names=null",
        ],
    )
    assert out["num_classes"] == 7 and out["backbone"]["depth"] == 2
    assert out["head"] == {"type": "ssd", "kernel_size": 5}
    assert out["priors"]["aspect_ratios"] == [[2.0], [2, 3]]
    assert out["class_names"] is None
    assert _MODEL["num_classes"] == 4  # the input is not modified
    cfg = ssdkit.SSDConfig.model_validate(out)
    assert cfg.priors.s_min == pytest.approx(0.1) and cfg.head.kernel_size == 5


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("backbone.dpth=2", "unknown key 'backbone.dpth'; did you mean 'backbone.depth'?"),
        ("num_clases=3", "unknown key 'num_clases'; did you mean 'num_classes'?"),
        ("head.kernel=3", "did you mean 'head.kernel_size'?"),
        ("priors.aspect_ratios.5=[2]", "'priors.aspect_ratios' is a list of 2"),
        ("backbone.channels.0.x=1", "holds 8, which has no key 'x'"),
    ],
)
def test_override_errors_name_the_key(item, message):
    with pytest.raises(ConfigKeyError) as err:
        apply_overrides(ssdkit.SSDConfig, _MODEL, [item])
    assert message in str(err.value)


def test_override_syntax_errors():
    with pytest.raises(ValueError, match="must look like key=value"):
        parse_override("train.lr")
    with pytest.raises(ValueError, match="not valid YAML"):
        parse_override("train.milestones=[0.5,")
    assert parse_override("a.b=x=y") == (["a", "b"], "x=y")


def test_torchrun_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = distributed.from_env()
    assert (info.rank, info.world_size, info.distributed, info.is_main) == (0, 1, False, True)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = distributed.from_env()
    assert (info.rank, info.world_size, info.local_rank, info.distributed, info.is_main) == (3, 4, 1, True, False)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4 is outside"):
        distributed.from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK='x' must be an integer"):
        distributed.from_env()


def test_norm_weight_decay_groups_norm_weights_and_biases():
    from ssdkit.config.run import TrainConfig
    from ssdkit.engine.optim import build_optimizer

    model = ssdkit.build_model(_MODEL)
    names = {id(p): n for n, p in model.named_parameters()}
    bn_weights = {f"{mod_name}.weight" for mod_name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    expected_special = {n for n in names.values() if n.endswith(".bias")} | bn_weights
    opt = build_optimizer(model, TrainConfig(max_steps=1, weight_decay=1e-3, norm_weight_decay=0.0))
    decay, special = opt.param_groups
    assert (decay["weight_decay"], special["weight_decay"]) == (1e-3, 0.0)
    assert {names[id(p)] for p in special["params"]} == expected_special
    assert {names[id(p)] for p in decay["params"]} == set(names.values()) - expected_special
    assert all(p.dim() == 4 for p in decay["params"])  # only conv kernels are decayed here
    one = build_optimizer(model, TrainConfig(max_steps=1, optimizer="adamw", weight_decay=1e-3))
    assert len(one.param_groups) == 1 and isinstance(one, torch.optim.AdamW)


def test_overriding_the_run_length_replaces_the_other_way_of_giving_it():
    from ssdkit.config import RunConfig

    by_epochs = RunConfig.from_file("shapes_tiny")
    assert by_epochs.train.epochs is not None and by_epochs.train.max_steps is None
    steps = RunConfig.from_file("shapes_tiny", ["train.max_steps=1"])
    assert steps.train.max_steps == 1 and steps.train.epochs is None
    back = steps.with_overrides(["train.epochs=2"])
    assert back.train.epochs == 2 and back.train.max_steps is None
