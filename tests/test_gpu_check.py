"""benchmarks/gpu_check.py without CUDA: a clear message and status 0 (the GPU path needs a GPU)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_exits_cleanly_without_cuda(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert module.main(["--steps", "1"]) == 0
    assert "no CUDA device" in capsys.readouterr().out
