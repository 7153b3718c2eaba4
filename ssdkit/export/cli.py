"""`ssdkit export CONFIG --weights W --format onnx|torchscript [--with-postprocess]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="model config (YAML or JSON file) or a preset name, e.g. ssd300_vgg16")
    parser.add_argument("--weights", required=True, help="weights file (.safetensors, .pth, .pt) that fits CONFIG")
    parser.add_argument("--format", required=True, choices=sorted(SUFFIX), help="what to write")
    parser.add_argument(
        "--with-postprocess",
        action="store_true",
        help="include decoding and NMS: outputs boxes, scores, labels, num_detections instead of loc, logits",
    )
    parser.add_argument(
        "--output", "-o", type=Path, help="file to write (default: the weights' name with .onnx or .torchscript.pt)"
    )
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset, 18 or newer (default: torch's exporter default)"
    )


def _config(text: str):
    from ssdkit import presets
    from ssdkit.config import SSDConfig

    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        if not path.is_file():
            raise FileNotFoundError(f"no such config file: {path}")
        return SSDConfig.from_file(path)
    return presets.get(text)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ssdkit.build import build_model
    from ssdkit.export import MissingExtraError, require_export_extra, to_onnx, to_torchscript
    from ssdkit.export.onnx import check_opset
    from ssdkit.paths import check_output_file
    from ssdkit.weights import load_weights

    output = args.output or Path(args.weights).with_suffix(SUFFIX[args.format])
    try:
        check_output_file(output, "--output")
        if args.opset is not None and args.format != "onnx":
            raise ValueError(f"--opset is for --format onnx; a {args.format} file has no opset")
        if args.format == "onnx":
            require_export_extra()  # before the slow part
            check_opset(args.opset)
        model = build_model(_config(args.config)).eval()
        load_weights(model, args.weights)
        if args.format == "onnx":
            to_onnx(model, output, with_postprocess=args.with_postprocess, opset=args.opset)
        else:
            to_torchscript(model, output, with_postprocess=args.with_postprocess)
    except MissingExtraError as exc:
        print(f"ssdkit export: {exc}", file=sys.stderr)
        return 1
    except (ValueError, KeyError, FileNotFoundError, ValidationError) as exc:
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"ssdkit export: {message}", file=sys.stderr)
        return 2
    what = "detector (boxes, scores, labels, num_detections)" if args.with_postprocess else "network (loc, logits)"
    print(f"wrote {output}: {args.format} {what}")
    return 0
