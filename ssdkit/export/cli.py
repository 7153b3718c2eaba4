"""`ssdkit export SOURCE [--weights W] --format onnx|torchscript [--with-postprocess]`.

SOURCE: a run folder (its best checkpoint), a checkpoint or weights file saved by ssdkit, or a run
config, model config or preset with `--weights`; see ssdkit.sources.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        metavar="SOURCE",
        help="run folder, checkpoint, weights file saved by ssdkit, run or model config (YAML/JSON), or preset name",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="weights (.safetensors, .pth, .pt, or a preset's named weights) for SOURCE; default: SOURCE's own",
    )
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


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ssdkit.export import MissingExtraError, require_export_extra, to_onnx, to_torchscript
    from ssdkit.export.onnx import check_opset
    from ssdkit.paths import check_output_file
    from ssdkit.sources import build, resolve

    try:
        if args.opset is not None and args.format != "onnx":
            raise ValueError(f"--opset is for --format onnx; a {args.format} file has no opset")
        if args.format == "onnx":
            require_export_extra()  # before the slow part
            check_opset(args.opset)
        source = resolve(args.config, args.weights)
        if source.weights is None:
            raise ValueError(f"{args.config} carries no weights: give --weights (a file, or a preset's named weights)")
        weights = Path(source.weights)
        # beside the weights file; for a preset's named weights, e.g. ssdlite320_mobilenet_v3_coco.onnx here
        named = f"{source.preset}_{weights}{SUFFIX[args.format]}" if source.preset and not weights.suffix else None
        output = args.output or (Path(named) if named else weights.with_suffix(SUFFIX[args.format]))
        check_output_file(output, "--output")
        model = build(source).eval()
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
