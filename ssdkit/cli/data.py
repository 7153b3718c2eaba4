"""`ssdkit data make-shapes --format voc|coco OUT` and `ssdkit data check CONFIG_OR_PATH`.

make-shapes writes generated shapes as a real VOC or COCO tree (see ssdkit.data.folders).
check reads a data set once and reports what training would fail on or silently lose (see
ssdkit.data.check), with a PNG of the box sizes against the model's priors; it exits 1 when
the data set has such defects, 2 when it cannot be read at all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    make = sub.add_parser("make-shapes", help="write generated shapes as a VOC or COCO folder")
    make.add_argument("out", help="folder to write (a VOC root, or a COCO root with train2017/ val2017/ annotations/)")
    make.add_argument("--format", choices=("voc", "coco"), required=True, help="the folder layout and files")
    make.add_argument("--num-images", type=int, default=200, help="training pictures (default 200)")
    make.add_argument("--val-images", type=int, default=50, help="validation pictures (default 50)")
    make.add_argument(
        "--image-size", type=int, nargs=2, default=(375, 500), metavar=("H", "W"), help="default 375 500 (VOC-like)"
    )
    make.add_argument(
        "--classes", default=None, help="class names: voc, coco, or a comma-separated list (default: the shapes')"
    )
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")

    check = sub.add_parser("check", help="read a data set once and report its defects (exit 1 if any would hurt)")
    check.add_argument(
        "source",
        metavar="CONFIG_OR_PATH",
        help="a run config or recipe name (checks its data), a VOC root, a COCO JSON, or a COCO root",
    )
    check.add_argument("--split", choices=("train", "val", "both"), default="both", help="run config: which data")
    check.add_argument("--data-root", default=None, metavar="DIR", help="run config: the value of its ${..._ROOT}")
    check.add_argument("--model", default=None, help="for a path: preset or model config whose priors the PNG shows")
    check.add_argument("--classes", default=None, help="VOC path: class names (voc, coco, a,b,c; default: found)")
    check.add_argument("--image-set", default="trainval", help="VOC path: ImageSets/Main/<name>.txt (default trainval)")
    check.add_argument(
        "--images", default=None, metavar="DIR", help="COCO JSON: the pictures' folder (default: guessed)"
    )
    check.add_argument("--plot-dir", default="data-check", metavar="DIR", help="where the PNGs go (default data-check)")
    check.add_argument("--quick", action="store_true", help="read only the pictures' headers (a truncated file passes)")
    check.add_argument("--show", type=int, default=10, help="files listed per kind of defect (default 10)")
    check.add_argument("--no-progress", action="store_true")


def _class_list(spec: Optional[str]) -> Optional[list[str]]:
    if spec is None:
        return None
    from ssdkit.categories import named_classes

    if spec in ("voc", "coco"):
        return named_classes(spec)
    return [c.strip() for c in spec.split(",") if c.strip()]


def _make(args: argparse.Namespace) -> int:
    from ssdkit.categories import COCO_CATEGORIES
    from ssdkit.data.folders import write_shapes

    names = _class_list(args.classes)
    ids = [i for i, _ in COCO_CATEGORIES] if args.classes == "coco" else None
    out = write_shapes(
        args.out,
        args.format,
        num_images=args.num_images,
        val_images=args.val_images,
        image_size=tuple(args.image_size),
        class_names=names,
        category_ids=ids,
        seed=args.seed,
        quality=args.quality,
    )
    print(f"wrote {args.num_images} + {args.val_images} pictures of shapes as a {args.format.upper()} tree: {out}")
    return 0


# ------------------------------------------------------------------ check


def _voc_names(root: Path, image_set: str) -> list[str]:
    """The object names the annotations of a VOC root use: VOC's order if they are VOC's, else sorted."""
    from defusedxml import DefusedXmlException
    from defusedxml import ElementTree as ET

    from ssdkit.categories import VOC_CLASSES

    listing = root / "ImageSets" / "Main" / f"{image_set}.txt"
    found: set[str] = set()
    if listing.is_file():
        for line in listing.read_text(encoding="utf-8").split():
            xml = root / "Annotations" / f"{line}.xml"
            try:
                found.update((o.findtext("name") or "").strip() for o in ET.parse(xml).getroot().iter("object"))
            except (OSError, ET.ParseError, DefusedXmlException):
                continue  # the check itself reports this file
    found.discard("")
    return list(VOC_CLASSES) if found <= set(VOC_CLASSES) and found else sorted(found)


def _coco_images(annotations: Path) -> Path:
    """COCO's layout: annotations/instances_<split>.json next to <split>/; else the JSON's folder."""
    stem = annotations.stem
    if annotations.parent.name == "annotations" and stem.startswith("instances_"):
        return annotations.parent.parent / stem[len("instances_") :]
    return annotations.parent


def _targets(args: argparse.Namespace) -> tuple[list[tuple[str, dict[str, Any]]], Any, float, bool]:
    """([(name, data set config)], model config, min_box_size, whether classes must match the model's)."""
    from ssdkit import presets

    src = Path(args.source)
    model = None
    if args.model is not None:
        from ssdkit.cli.analyze_priors import load_model_config

        model = load_model_config(args.model)[0]
    if src.is_dir() and (src / "ImageSets" / "Main").is_dir():
        names = _class_list(args.classes) or _voc_names(src, args.image_set)
        cfg = {"type": "voc", "root": str(src), "image_set": args.image_set, "class_names": names}
        return [(f"{src} ({args.image_set})", cfg)], model or presets.get("ssd300_vgg16"), 1.0, False
    if src.suffix.lower() == ".json" or (src.is_dir() and (src / "annotations").is_dir()):
        files = [src] if src.suffix.lower() == ".json" else sorted((src / "annotations").glob("instances_*.json"))
        if not files:
            raise FileNotFoundError(f"{src}/annotations holds no instances_*.json")
        cfgs = []
        for f in files:
            images = Path(args.images) if args.images else _coco_images(f)
            cfgs.append((str(f), {"type": "coco", "annotations": str(f), "images_dir": str(images)}))
        return cfgs, model or presets.get("ssd300_vgg16"), 1.0, False
    from ssdkit.config.run import RunConfig
    from ssdkit.config.variables import data_root_variables

    run = RunConfig.from_file(args.source, variables=data_root_variables(args.source, (), args.data_root))
    splits = ("train", "val") if args.split == "both" else (args.split,)
    cfgs = [
        (f"{split} ({getattr(run.data, split).type})", getattr(run.data, split).model_dump(mode="json"))
        for split in splits
        if getattr(run.data, split, None) is not None
    ]
    return cfgs, model or run.model, run.data.augment.min_box_size, True


def _priors_model(model_cfg: Any) -> Any:
    """The model (random weights) whose priors the PNG shows; backbone weights are not loaded."""
    from ssdkit.build import build_model
    from ssdkit.config.model import SSDConfig

    data = model_cfg.model_dump(mode="json")
    if "weights" in data["backbone"]:
        data["backbone"]["weights"] = None
    return build_model(SSDConfig.model_validate(data)).eval()


def _plot(report: Any, model: Any, path: Path) -> Optional[Path]:
    from ssdkit.analysis.priors import analyze_priors, plot_coverage

    if len(report.boxes) == 0:
        return None
    iou = getattr(model.matcher, "iou_threshold", 0.5) if hasattr(model, "matcher") else 0.5
    coverage = analyze_priors(model.priors, report.boxes, iou_threshold=iou, image_size=tuple(model.image_size))
    path.parent.mkdir(parents=True, exist_ok=True)
    return plot_coverage(coverage, report.boxes, model.priors, path)


def _check(args: argparse.Namespace) -> int:
    from ssdkit.data.build import build_dataset, check_classes
    from ssdkit.data.check import Problem, check_dataset

    try:
        targets, model_cfg, min_box_size, match_classes = _targets(args)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"ssdkit data check: {exc}", file=sys.stderr)
        return 2
    progress = None
    if not args.no_progress:
        from tqdm import tqdm

        def progress(items: Any) -> Any:
            return tqdm(items, desc="reading", unit="pic", leave=False, file=sys.stderr)

    failed = False
    model = None
    for k, (name, cfg) in enumerate(targets):
        try:
            dataset = build_dataset(cfg)
        except (FileNotFoundError, ValueError) as exc:
            print(f"{name}: ERROR: the data set cannot be read: {exc}")
            failed = True
            continue
        report = check_dataset(dataset, name=name, min_box_size=min_box_size, decode=not args.quick, progress=progress)
        if match_classes:
            try:
                check_classes(dataset, model_cfg, f"the {name} data set")
            except ValueError as exc:
                report.problems.append(Problem("class mismatch", name, str(exc)))
        print(report.summary(show=args.show))
        if model is None:
            model = _priors_model(model_cfg)
        plot = _plot(report, model, Path(args.plot_dir) / f"boxes_{k}_{Path(name.split()[0]).stem or k}.png")
        if plot is not None:
            print(f"box sizes against the model's priors: {plot}")
        print()
        failed |= report.failed
    print("FAILED: the data set has defects that stop training or lose boxes" if failed else "OK")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    if args.data_command == "make-shapes":
        try:
            return _make(args)
        except (ValueError, KeyError) as exc:
            print(f"ssdkit data make-shapes: {exc}", file=sys.stderr)
            return 2
    return _check(args)
