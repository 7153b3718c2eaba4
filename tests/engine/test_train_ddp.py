"""Data-parallel training: 2 CPU processes under torchrun (gloo) keep identical weights, and those
equal one process that sees both processes' batches each step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch
import yaml
from test_train_loop import tiny_run

from ssdkit.build import build_model
from ssdkit.config import RunConfig
from ssdkit.data import build_loader
from ssdkit.engine.optim import build_optimizer
from ssdkit.engine.trainer import seed_everything

WORKER = textwrap.dedent(
    """
    import os, sys
    import torch
    import ssdkit

    torch.set_num_threads(1)
    config, out_dir, dump = sys.argv[1:4]
    result = ssdkit.train(config, out_dir=out_dir)
    torch.save(result.model.state_dict(), os.path.join(dump, f"rank{os.environ['RANK']}.pt"))
    """
)


def test_two_processes_match_one_that_sees_both_batches(tmp_path):
    # 32 pictures over 2 processes in batches of 4: 4 steps an epoch; 6 steps cross into epoch 1.
    cfg = tiny_run(num_images=32, max_steps=6, schedule="constant", momentum=0.9, weight_decay=1e-3)
    cfg["eval"] = {"every_steps": 3, "metric": "val_loss"}  # rank 0 evaluates while rank 1 waits
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SSDKIT_DISABLE_PLUGINS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*cmd, str(tmp_path / "worker.py"), str(path), str(tmp_path / "run"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    # only rank 0 wrote the run folder: one metrics line per log step, not two
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "best.pt",
        "config.yaml",
        "last.pt",
        "metrics.jsonl",
    ]
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [d["step"] for d in lines if d["kind"] == "train"] == [2, 4, 6]
    assert [d["step"] for d in lines if d["kind"] == "eval"] == [3, 6]

    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)

    # The reference: one process, the same initial weights, and each step both ranks' batches. DDP
    # averages the ranks' gradients, i.e. takes the gradient of the mean of the two batches' losses
    # (the multibox loss divides by the positives of its own batch, and batch norm uses its own
    # batch's statistics, so each half goes through the model on its own, as on its rank).
    run = RunConfig.model_validate(cfg)
    torch.set_num_threads(1)
    seed_everything(run.train.seed)
    model = build_model(run.model)
    initial = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = build_optimizer(model, run.train)
    loaders = [build_loader(run.data, run.model, "train", seed=run.train.seed, rank=r, world_size=2) for r in (0, 1)]
    step = 0
    for epoch in range(2):
        for loader in loaders:
            loader.sampler.set_epoch(epoch)
        for b0, b1 in zip(*loaders, strict=True):
            if step == 6:
                break
            losses = [model.compute_loss(*model(b.images), b.targets)["loss"] for b in (b0, b1)]
            ((losses[0] + losses[1]) / 2).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
    assert step == 6

    moved = 0.0
    for name, p in model.named_parameters():
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between the processes"
        # Exact, not just close: with two ranks the all-reduce computes (g0 + g1) / 2, and autograd of
        # (l0 + l1) / 2 computes 0.5 g0 + 0.5 g1, the same floats (halving is exact); both sides run the
        # same per-batch forward on one thread.
        assert torch.equal(rank0[name], p.detach()), f"{name}: DDP and one process differ"
        moved = max(moved, (p.detach() - initial[name]).abs().max().item())
    assert moved > 1e-3  # the weights did change: matching is not trivial
