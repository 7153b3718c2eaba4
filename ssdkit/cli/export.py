"""`ssdkit export SOURCE [--weights W] --format onnx|torchscript [--with-postprocess]
[--int8 --calibrate RUN_CONFIG_OR_FOLDER]`.

SOURCE: a run folder (its best checkpoint), a checkpoint or weights file saved by ssdkit, or a run
config, model config or preset with `--weights`; see ssdkit.io.sources.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssdkit.cli.arguments import add_source

SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source(
        parser,
        help="run folder, checkpoint, weights file saved by ssdkit, run or model config (YAML/JSON), or preset name",
        weights_help="weights (.safetensors, .pth, .pt, or a preset's named weights) for SOURCE; default: SOURCE's own",
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
    parser.add_argument(
        "--int8",
        action="store_true",
        help="ONNX only: quantise statically to int8 (onnxruntime QDQ, per-channel weights); needs --calibrate",
    )
    parser.add_argument(
        "--calibrate",
        metavar="RUN_CONFIG_OR_FOLDER",
        help="pictures to calibrate int8 on: a run config (its data.train set, e.g. 'demo') or a folder of pictures",
    )
    parser.add_argument(
        "--calibration-pictures", type=int, default=64, help="how many pictures to calibrate on (default 64)"
    )


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ssdkit.export import MissingExtraError, require_export_extra, to_onnx, to_torchscript
    from ssdkit.export.onnx import check_opset
    from ssdkit.io.paths import check_output_file
    from ssdkit.io.sources import build, resolve

    try:
        if args.opset is not None and args.format != "onnx":
            raise ValueError(f"--opset is for --format onnx; a {args.format} file has no opset")
        if args.int8 and (args.format != "onnx" or not args.calibrate):
            raise ValueError(
                "--int8 needs --format onnx and --calibrate RUN_CONFIG_OR_FOLDER (pictures to calibrate on)"
            )
        if args.calibration_pictures < 1:
            raise ValueError(f"--calibration-pictures must be at least 1, got {args.calibration_pictures}")
        if args.format == "onnx":
            require_export_extra(*(("onnx", "onnxscript", "onnxruntime") if args.int8 else ()))  # before the slow part
            check_opset(args.opset)
        source = resolve(args.config, args.weights)
        if source.weights is None:
            raise ValueError(f"{args.config} carries no weights: give --weights (a file, or a preset's named weights)")
        weights = Path(source.weights)
        suffix = ".int8.onnx" if args.int8 else SUFFIX[args.format]
        # beside the weights file; for a preset's named weights, e.g. ssdlite320_mobilenet_v3_coco.onnx here
        named = f"{_named_weights(source.preset, weights)}{suffix}" if source.preset and not weights.suffix else None
        output = args.output or (Path(named) if named else weights.with_suffix(suffix))
        check_output_file(output, "--output")
        model = build(source).eval()
        if args.int8:
            _export_int8(model, output, args)
        elif args.format == "onnx":
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
    print(f"wrote {output}: {args.format}{' int8' if args.int8 else ''} {what}")
    return 0


def _export_int8(model, output: Path, args: argparse.Namespace) -> None:
    """fp32 ONNX into a temporary folder, then `quantize_onnx` calibrated on `args.calibrate`."""
    import tempfile

    from ssdkit.export import calibration_batches, quantize_onnx, to_onnx

    with tempfile.TemporaryDirectory(prefix="ssdkit-export-") as tmp:
        fp32 = to_onnx(model, Path(tmp) / "fp32.onnx", with_postprocess=args.with_postprocess, opset=args.opset)
        quantize_onnx(fp32, output, calibration_batches(model, args.calibrate, count=args.calibration_pictures))


def _named_weights(preset: str, weights: Path) -> str:
    """The full name of a preset's named weights (`coco` -> `ssdlite320_mobilenet_v3_coco`)."""
    from ssdkit.io import pretrained

    found = pretrained.find(str(weights), preset=preset, kind="detector")
    return found.name if found is not None else f"{preset}_{weights}"
