"""`ssdkit train CONFIG.yaml [--set key=value ...] [--data-root DIR] [--resume [PATH]] [--out DIR]`.

Under torchrun every process runs this same command; only rank 0 prints and writes files.
"""

from __future__ import annotations

import argparse
import sys

from ssdkit.cli.arguments import add_data_root, add_overrides
from ssdkit.text import count

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", help="run config file (YAML or JSON: model, data, train, eval), or a shipped example's name"
    )
    add_overrides(parser, example="--set train.lr=0.01 --set model.num_classes=4")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="PATH",
        help="continue from a checkpoint: PATH, or the run folder's last.pt when no PATH is given",
    )
    add_data_root(parser)
    parser.add_argument("--out", default=None, metavar="DIR", help="run folder (default: train.out_dir)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to metrics.jsonl)")


def run(args: argparse.Namespace) -> int:
    from ssdkit.config.overrides import ConfigKeyError
    from ssdkit.config.run import RunConfig
    from ssdkit.config.variables import data_root_variables
    from ssdkit.engine.trainer import NonFiniteLossError, TooManySkippedError, train

    try:
        roots = data_root_variables(args.config, args.overrides, args.data_root)
        cfg = RunConfig.from_file(args.config, overrides=args.overrides, variables=roots)
    except (FileNotFoundError, ConfigKeyError, ValueError) as exc:
        print(f"ssdkit train: {exc}", file=sys.stderr)
        return 2
    out = args.out
    resume = args.resume
    if isinstance(resume, str) and out is None:
        from pathlib import Path

        out = str(Path(resume).parent)  # continue in the checkpoint's own run folder
    try:
        result = train(cfg, out_dir=out, resume=resume, progress=False if args.no_progress else None)
    except (NonFiniteLossError, TooManySkippedError) as exc:
        print(f"ssdkit train: {exc}", file=sys.stderr)
        return 3
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"ssdkit train: {exc}", file=sys.stderr)
        return 2
    if result.run_dir is not None:
        best = result.best
        shown = f"; best {best['metric']} {best['value']:.4f} at step {best['step']}" if best else ""
        print(f"trained {count(result.steps, 'step')} in {result.seconds:.0f} s{shown}")
        print(f"run folder: {result.run_dir} (last.pt, {'best.pt, ' if result.best_checkpoint else ''}metrics.jsonl)")
    return 0
