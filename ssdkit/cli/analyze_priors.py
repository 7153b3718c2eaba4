"""`ssdkit analyze-priors CONFIG --data DATA [--suggest [K ...]] [--plot PNG]`.

CONFIG: a run config (YAML/JSON with `model:` and `data:`), a model config (SSDConfig YAML/JSON),
or a preset name. DATA: `shapes`, `voc:ROOT`, `coco:ANNOTATIONS.json[:IMAGES_DIR]`, or a YAML/JSON
file holding a data config (`train:`/`val:`) or one data set (`type: ...`); optional with a run
config, whose `data.train` (or `--split val`) is used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ssdkit.text import count

__all__ = ["add_arguments", "run", "load_model_config", "load_dataset_config"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run config or model config (YAML/JSON), or a preset name (ssd300_vgg16, ...)")
    parser.add_argument(
        "--data",
        default=None,
        metavar="DATA",
        help="shapes | voc:ROOT | coco:ANNOTATIONS.json[:IMAGES_DIR] | a data YAML (default: the run config's data)",
    )
    parser.add_argument("--split", choices=("train", "val"), default="train", help="which split of a data config")
    parser.add_argument("--max-images", type=int, default=None, metavar="N", help="analyse the first N items only")
    parser.add_argument(
        "--iou", type=float, default=None, help="matching threshold (default: the model's matcher iou_threshold, 0.5)"
    )
    parser.add_argument(
        "--suggest",
        nargs="*",
        type=int,
        default=None,
        metavar="K",
        help="suggest sizes and aspect ratios from IoU k-means with K clusters (default: try 6, 9, 12)",
    )
    parser.add_argument("--plot", default="prior-coverage.png", metavar="PNG", help="where to write the plot")
    parser.add_argument("--show", type=int, default=10, metavar="N", help="list the N worst-reached boxes")
    parser.add_argument("--skip-bad", action="store_true", help="leave out items with a bad annotation")
    parser.add_argument("--device", default="cpu", help="where to compute the IoUs, e.g. cuda (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the k-means")


def _read_mapping(path: Path) -> dict[str, Any]:
    from ssdkit.config.files import read_config_file

    return read_config_file(path)


def load_model_config(spec: str) -> tuple[Any, Any]:
    """(SSDConfig, DataConfig or None) from a run config file, a model config file or a preset name."""
    from ssdkit import presets
    from ssdkit.config.model import SSDConfig

    path = Path(spec)
    if not path.is_file():
        if spec in presets.names():
            return presets.get(spec), None
        raise ValueError(f"{spec}: no such file, and not a preset (presets: {', '.join(presets.names())})")
    if "model" in _read_mapping(path):  # a run config: validated whole, so its errors name their fields
        from ssdkit.config.run import RunConfig

        run = RunConfig.from_file(path)
        return run.model, run.data
    return SSDConfig.from_file(path), None


def load_dataset_config(spec: str | None, data_cfg: Any, split: str) -> Any:
    """The config of the data set to analyse, from `--data` or else the run config's data."""
    import ssdkit.data  # noqa: F401  (registers the data sets)
    from ssdkit.registry import DATASETS

    if spec is None:
        if data_cfg is None:
            raise ValueError("give --data (shapes, voc:ROOT, coco:FILE.json or a data YAML) with a model config")
        return getattr(data_cfg, split)
    kind, _, arg = spec.partition(":")
    if kind == "shapes" and not arg:
        return DATASETS.validate_config({"type": "shapes"})
    if kind == "voc" and arg:
        return DATASETS.validate_config({"type": "voc", "root": arg})
    if kind == "coco" and arg:
        annotations, _, images = arg.partition(":")
        images = images or str(Path(annotations).parent)  # only needed to read pictures, which this does not
        return DATASETS.validate_config({"type": "coco", "annotations": annotations, "images_dir": images})
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--data {spec}: not shapes, voc:ROOT, coco:FILE.json, nor an existing data file")
    data = _read_mapping(path)
    if "type" in data:
        try:
            return DATASETS.validate_config(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc
    from ssdkit.data import DataConfig

    try:
        return getattr(DataConfig.model_validate(data), split)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _level_table(report: Any, model: Any) -> str:
    """Per pyramid level: its grid, prior sizes, and the boxes whose best prior lies on it."""
    import torch

    h, w = model.image_size
    counts = [fh * fw * a for (fh, fw), a in zip(model.feature_sizes, model.prior_generator.num_anchors, strict=True)]
    ends = torch.tensor(counts).cumsum(0)
    level = torch.bucketize(report.best_prior, ends, right=True)
    lines = [f"{'level':<6}{'grid':>8}{'step':>8}{'prior sizes (px)':>18}{'best for':>10}{'reached':>9}"]
    start = 0
    for k, ((fh, fw), n) in enumerate(zip(model.feature_sizes, counts, strict=True)):
        mine_priors = model.priors[start : start + n]
        start += n
        size = (mine_priors[:, 2:] * torch.tensor([w, h])).prod(dim=1).sqrt()
        cx = mine_priors[:, 0].unique()  # sorted: the first gap is the grid step
        step = f"{float(cx[1] - cx[0]) * w:.1f}" if len(cx) > 1 else "-"
        mine = level == k
        reached = f"{report.reached[mine].double().mean():.1%}" if mine.any() else "-"
        lines.append(
            f"{k:<6}{f'{fh}x{fw}':>8}{step:>8}{f'{size.min():.0f}-{size.max():.0f}':>18}"
            f"{int(mine.sum()):>10}{reached:>9}"
        )
    return "\n".join(lines)


def _worst(report: Any, boxes: Any, owner: Any, items: list[dict], model: Any, show: int) -> str:
    """The `show` unreached boxes of lowest best IoU, each with its picture and its best prior."""
    import torch

    unreached = report.unreached
    if len(unreached) == 0 or show <= 0:
        return ""
    order = unreached[torch.argsort(report.best_iou[unreached], stable=True)][:show]
    h, w = model.image_size
    lines = [
        f"{count(len(unreached), 'box', 'boxes')} no prior reaches; the {len(order)} worst "
        "(sizes in px of the network input):"
    ]
    for i in order.tolist():
        b = boxes[i]
        bw, bh = float(b[2] - b[0]) * w, float(b[3] - b[1]) * h
        pw, ph = (model.priors[report.best_prior[i], 2:] * torch.tensor([w, h])).tolist()
        lines.append(
            f"  {items[owner[i]]['path']}: box {bw:.0f}x{bh:.0f} (w/h {bw / max(bh, 1e-9):.2f}), "
            f"best IoU {report.best_iou[i]:.2f} with a {pw:.0f}x{ph:.0f} prior"
        )
    return "\n".join(lines)


def _check_suggestable(priors: Any) -> None:
    """--suggest rewrites `type: ssd` priors only: refuse others before any work is done."""
    from ssdkit.priors.ssd import SSDPriorsConfig

    if not isinstance(priors, SSDPriorsConfig):
        raise ValueError(
            f"--suggest needs `type: ssd` priors, not '{priors.type}' (run without --suggest for the coverage report)"
        )


def _check_numbers(args: argparse.Namespace) -> None:
    """ValueError naming the option when --iou, --max-images or --suggest is out of range."""
    if args.iou is not None and not 0 < args.iou <= 1:
        raise ValueError(f"--iou must lie in (0, 1], got {args.iou}")
    if args.max_images is not None and args.max_images < 1:
        raise ValueError(f"--max-images must be >= 1, got {args.max_images}")
    if args.suggest and min(args.suggest) < 1:
        raise ValueError(f"--suggest takes cluster counts >= 1, got {args.suggest}")


def _suggest(args: argparse.Namespace, model_cfg: Any, model: Any, boxes: Any, iou: float) -> Any:
    """Print IoU k-means priors for `boxes` (and the YAML to paste); returns them built `[P', 4]`."""
    from ssdkit.analysis.kmeans import suggest_priors
    from ssdkit.registry import PRIORS

    sug = suggest_priors(
        model_cfg.priors,
        boxes,
        feature_sizes=model.feature_sizes,
        image_size=model.image_size,
        k=args.suggest or (6, 9, 12),
        iou_threshold=iou,
        seed=args.seed,
        device=args.device,
    )
    k = len(sug.kmeans.centroids)
    print(f"\nsuggested priors (IoU k-means, k={k}, mean IoU of boxes with their cluster {sug.kmeans.mean_iou:.2f}):")
    print(sug.summary())
    if sug.after.coverage <= sug.before.coverage:
        print("the suggestion does not raise coverage here: keep the current priors")
    print("\n# paste into the model config; the head's anchors per location change, so train the head anew")
    print(sug.yaml().rstrip())
    return PRIORS.build(sug.config)(model.feature_sizes, model.image_size)


def run(args: argparse.Namespace) -> int:
    from ssdkit.analysis.priors import analyze_priors, normalised_boxes, plot_coverage
    from ssdkit.build import build_model
    from ssdkit.data.errors import BadItemError
    from ssdkit.registry import DATASETS

    try:
        _check_numbers(args)
        model_cfg, data_cfg = load_model_config(args.config)
        if args.suggest is not None:
            _check_suggestable(model_cfg.priors)
        ds_cfg = load_dataset_config(args.data, data_cfg, args.split)
        dataset = DATASETS.build(ds_cfg)
        items = dataset.ground_truth(errors="skip" if args.skip_bad else "raise")[: args.max_images]
        boxes, owner = normalised_boxes(items)
    except (FileNotFoundError, BadItemError, ValueError, KeyError) as exc:
        print(f"ssdkit analyze-priors: {exc}", file=sys.stderr)
        return 2
    if len(boxes) == 0:
        print(f"ssdkit analyze-priors: the data set ({ds_cfg.type}) has no boxes", file=sys.stderr)
        return 2
    iou = args.iou if args.iou is not None else getattr(model_cfg.matcher, "iou_threshold", 0.5)
    model = build_model(model_cfg).eval()  # for its priors and feature-map sizes; weights stay random
    report = analyze_priors(model.priors, boxes, iou_threshold=iou, image_size=model.image_size, device=args.device)
    print(f"prior coverage of {ds_cfg.type} ({count(len(items), 'picture')}) by {args.config}")
    print(report.table())
    print()
    print(_level_table(report, model))
    worst = _worst(report, boxes, owner, items, model, args.show)
    if worst:
        print()
        print(worst)
    suggested = _suggest(args, model_cfg, model, boxes, iou) if args.suggest is not None else None
    path = plot_coverage(report, boxes, model.priors, args.plot, suggested_priors=suggested)
    print(f"\nplot: {path}")
    return 0
