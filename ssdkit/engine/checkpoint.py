"""Training checkpoints: everything needed to continue a run exactly, in a file that
`torch.load(path, weights_only=True)` reads (tensors, numbers, strings, lists and dicts only).

Layout of the saved dict::

    format          "ssdkit-checkpoint"
    ssdkit_version  str
    state_dict      the model's weights (so `ssdkit.io.weights.load_weights` reads the file too)
    config          the model's SSDConfig as JSON (the key `load_weights` looks for)
    run_config      the whole RunConfig as JSON
    optimizer, scheduler, scaler   their state_dict()s
    epoch, step, batch_in_epoch    progress: optimizer steps done, and batches done in `epoch`
    steps_per_epoch, world_size    the plan the progress refers to (resume refuses other epoch lengths)
    rng             {"torch": ByteTensor, "cuda": [ByteTensor], "numpy": {...}, "python": {...}}
    best, nan_skipped, skipped_items, items_seen   bookkeeping

Files are written to a temporary file in the same folder, fsynced, then renamed over the
old one: a kill at any moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssdkit.io.convert import load_pth
from ssdkit.io.paths import atomic_write

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

FORMAT = "ssdkit-checkpoint"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` atomically to `path`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(state, f))
    return path


def load_checkpoint(path: str | Path, *, max_bytes: int | None = None) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; a file that is not one is a ValueError naming it.
    `max_bytes`: refuse one claiming more memory unpacked (`ssdkit.io.weights.claim_limit(model)`)."""
    path = Path(path)
    obj = load_pth(path, max_bytes=max_bytes)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not an ssdkit training checkpoint (no format={FORMAT!r} entry); "
            "to start from plain weights, load them into the model instead of resuming"
        )
    for key in ("state_dict", "optimizer", "step", "epoch"):
        if key not in obj:
            raise ValueError(f"{path}: training checkpoint lacks the entry {key!r}")
    return obj


def rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and python random generators' states, as plain data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": int(version), "state": [int(v) for v in py_state], "gauss": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured (CUDA states only where the devices are there)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]),
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
