"""`ssdkit eval SOURCE [--weights W] [--data DATA.yaml] [--set key=value ...] [--protocol voc|coco|both]`.

SOURCE: a run folder (its best checkpoint and run config), a checkpoint, a run config with
`--weights`, or a model config or preset with `--weights` and `--data` (see ssdkit.io.sources).
Builds the run config's model, loads the weights, runs it over the validation set (`data.val`, or
that of `--data`), prints the table, and writes `eval.json` and precision-recall curves into `--out`
(default: the folder `eval/` beside the weights, i.e. in the run folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ssdkit.cli.arguments import add_data_root, add_device, add_overrides, add_source

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source(
        parser,
        help="run folder, checkpoint, run config (YAML or JSON, or a shipped example's name), model config or preset",
        weights_help="weights: a training checkpoint (best.pt) or weights file; default: SOURCE's own",
    )
    parser.add_argument(
        "--data",
        metavar="FILE",
        default=None,
        help="a data config (YAML/JSON, the `data:` section of a run config) to evaluate on instead; its val set is used",
    )
    add_overrides(parser, example="--set data.val_batch_size=64")
    parser.add_argument(
        "--protocol", choices=["voc", "coco", "both"], default=None, help="default: the config's eval.protocol"
    )
    parser.add_argument(
        "--07", dest="use_07_metric", action="store_true", default=None, help="VOC2007 11-point AP (VOC protocol)"
    )
    add_data_root(parser)
    parser.add_argument("--iou", type=float, default=0.5, help="VOC: IoU a detection must exceed (default 0.5)")
    parser.add_argument("--out", default=None, metavar="DIR", help="folder for eval.json and pr_curves/")
    add_device(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _read_data(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"data config not found: {path}")
    from ssdkit.config.files import read_config_file

    data = read_config_file(path)
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]  # a whole run config: take its data section
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping (a data config), got {type(data).__name__}")
    return data


def _example_or_name(name: str) -> str | Path:
    """A shipped example run config's path for `name`, else `name` itself (a preset, say)."""
    from ssdkit.config import example_configs

    if name in example_configs():
        from ssdkit.config import config_path

        return config_path(name)
    return name


def _setup(args: argparse.Namespace) -> tuple[Any, Any, Any, Path]:
    """(run config, model on its device with the weights, val loader, weights path) from the
    command line; ValueError / FileNotFoundError / ConfigKeyError name what is wrong."""
    from dataclasses import replace

    from ssdkit.config.run import RunConfig
    from ssdkit.config.variables import root_variables
    from ssdkit.data import build_loader
    from ssdkit.devices import resolve_device
    from ssdkit.io.sources import build, resolve

    if not 0.0 <= args.iou < 1.0:
        raise ValueError(f"--iou must be in [0, 1), got {args.iou}")
    given = Path(args.config)
    source = resolve(given if given.exists() or given.suffix else _example_or_name(args.config), args.weights)
    if source.run is None and args.data is None:
        raise ValueError(f"{args.config} holds no data config (it is no run config): give --data DATA.yaml")
    # eval reads the model and data sections only; for a model config, `train` just has to validate
    raw = dict(source.run or {"model": source.model.model_dump(mode="json"), "train": {"max_steps": 1}})
    if args.data is not None:
        raw["data"] = _read_data(Path(args.data))
    roots = root_variables([raw, list(args.overrides)], args.data_root) if args.data_root else None
    cfg = RunConfig.from_dict(raw, args.overrides, source=args.config, variables=roots)
    if source.weights is None:
        raise ValueError(f"{args.config} carries no weights: give --weights (a checkpoint or weights file)")
    weights = Path(source.weights)
    device = resolve_device(args.device)
    model = build(replace(source, model=cfg.model))
    model.to(device)
    return cfg, model, build_loader(cfg.data, cfg.model, "val"), weights


def run(args: argparse.Namespace) -> int:
    from ssdkit.config.overrides import ConfigKeyError
    from ssdkit.data import BadItemError
    from ssdkit.evaluation.evaluate import evaluate
    from ssdkit.evaluation.report import format_table
    from ssdkit.io.paths import check_output_folder

    try:
        cfg, model, loader, weights = _setup(args)
    except (FileNotFoundError, ConfigKeyError, ValueError) as exc:
        print(f"ssdkit eval: {exc}", file=sys.stderr)
        return 2
    protocol = args.protocol or cfg.eval.protocol
    use_07 = cfg.eval.use_07_metric if args.use_07_metric is None else True
    out = Path(args.out) if args.out is not None else weights.parent / "eval"
    try:
        check_output_folder(out, "--out")
    except ValueError as exc:
        print(f"ssdkit eval: {exc}", file=sys.stderr)
        return 2
    try:
        result = evaluate(
            model,
            loader,
            protocol=protocol,
            use_07_metric=use_07,
            iou_threshold=args.iou,
            out_dir=out,
            progress=not args.no_progress,
        )
    except BadItemError as exc:
        print(
            f"ssdkit eval: {exc}\n(set data.on_bad_item=skip, e.g. --set data.on_bad_item=skip, to leave out and "
            "count unreadable items)",
            file=sys.stderr,
        )
        return 2
    print(format_table(result))
    curves = result["files"].get("pr_curves", [])
    print(f"wrote {result['files']['json']}" + (f" and {len(curves)} curves in {out / 'pr_curves'}" if curves else ""))
    return 0
