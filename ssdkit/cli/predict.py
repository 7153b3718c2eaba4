"""`ssdkit predict SOURCE PICTURES... --out DIR`: detections drawn on each picture, and all of them in
DIR/detections.json (boxes in each picture's own pixels, xyxy).

SOURCE is a run folder, a checkpoint, a weights file saved by ssdkit, a run or model config (with
`--weights`) or a preset (with `--weights coco` for its named weights); see ssdkit.io.sources.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from ssdkit.cli.arguments import add_device
from ssdkit.io.picture_files import PICTURE_SUFFIXES, pictures_in

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        help="run folder, checkpoint, weights file, run or model config, or preset (e.g. ssdlite320_mobilenet_v3)",
    )
    parser.add_argument("pictures", nargs="+", metavar="PICTURE", help="picture files, or folders of them")
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="folder for drawn pictures and detections.json"
    )
    parser.add_argument(
        "--weights", default=None, help="weights for SOURCE: a file, or a preset's named weights (e.g. coco)"
    )
    parser.add_argument(
        "--score-threshold", type=float, default=0.3, help="keep (draw and list) detections scoring at least this (0.3)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="pictures per forward pass (8)")
    add_device(parser)
    parser.add_argument(
        "--runtime",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="torch (default), or onnxruntime: SOURCE is then a detector exported with "
        "`ssdkit export ... --format onnx --with-postprocess` (fp32 or --int8)",
    )


def _pictures(items: list[str]) -> list[Path]:
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += pictures_in(path)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such picture or folder: {path}")
    if not found:
        raise FileNotFoundError(f"no pictures ({', '.join(PICTURE_SUFFIXES)}) in {', '.join(items)}")
    return found


def _detector(args: argparse.Namespace) -> tuple[Callable[[list[Path]], list[dict[str, Any]]], list[str]]:
    """(pictures -> detections, class names) for the model that SOURCE names, in PyTorch or onnxruntime."""
    if args.runtime == "onnxruntime":
        return _onnx_detector(args)
    from ssdkit.devices import resolve_device
    from ssdkit.io.sources import build, resolve

    model = build(resolve(args.source, args.weights)).eval().to(resolve_device(args.device))
    return (lambda paths: model.predict([str(p) for p in paths], batch_size=args.batch_size)), model.class_names


def _onnx_detector(args: argparse.Namespace) -> tuple[Callable[[list[Path]], list[dict[str, Any]]], list[str]]:
    import torch

    import ssdkit.runtime

    if args.weights is not None:
        raise ValueError("--weights is for --runtime torch: an exported ONNX file holds its weights")
    if args.device != "auto":
        raise ValueError("--device is for --runtime torch: --runtime onnxruntime runs on the CPU")
    detector = ssdkit.runtime.load(args.source)

    def detect(paths: list[Path]) -> list[dict[str, Any]]:
        found = detector.predict([str(p) for p in paths], batch_size=args.batch_size)
        # as torch tensors, the form `draw` and the JSON writer take from model.predict
        return [{k: torch.from_numpy(v) if k != "names" else v for k, v in d.items()} for d in found]

    return detect, detector.class_names


def _entry(path: Path, drawn: str, det: dict[str, Any], threshold: float) -> dict[str, Any]:
    keep = (det["scores"] >= threshold).nonzero().flatten().tolist()
    boxes, scores, labels = det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()
    return {
        "picture": str(path),
        "drawn": drawn,
        "detections": [
            {
                "box": [round(v, 2) for v in boxes[i]],
                "score": round(scores[i], 4),
                "label": labels[i],
                "name": det["names"][i],
            }
            for i in keep
        ],
    }


def run(args: argparse.Namespace) -> int:
    from ssdkit.draw import draw

    try:
        if not 0.0 <= args.score_threshold <= 1.0:
            raise ValueError(f"--score-threshold must lie in [0, 1], got {args.score_threshold}")
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
        pictures = _pictures(args.pictures)
        detect, names = _detector(args)
        args.out.mkdir(parents=True, exist_ok=True)
        entries, used = [], set()
        for start in range(0, len(pictures), args.batch_size):
            chunk = pictures[start : start + args.batch_size]
            for path, det in zip(chunk, detect(chunk), strict=True):
                drawn = f"{path.stem}.png" if f"{path.stem}.png" not in used else f"{path.stem}_{len(used)}.png"
                used.add(drawn)
                draw(path, det, score_threshold=args.score_threshold, path=args.out / drawn)
                entries.append(_entry(path, drawn, det, args.score_threshold))
    except (OSError, ValueError, KeyError, ImportError) as exc:  # ImportError: --runtime without onnxruntime
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"ssdkit predict: {message}", file=sys.stderr)
        return 2
    report = {
        "source": args.source,
        "weights": args.weights,
        "score_threshold": args.score_threshold,
        "class_names": names,
        "pictures": entries,
    }
    (args.out / "detections.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    total = sum(len(e["detections"]) for e in entries)
    print(f"{total} detections in {len(entries)} pictures; wrote {args.out / 'detections.json'} and the drawn pictures")
    return 0
