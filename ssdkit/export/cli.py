"""`ssdkit export CONFIG --weights W --format onnx|torchscript [--with-postprocess]
[--int8 --calibrate RUN_CONFIG_OR_FOLDER]`."""

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
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: torch's exporter default)")
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
    from ssdkit.weights import load_weights

    suffix = ".int8.onnx" if args.int8 else SUFFIX[args.format]
    output = args.output or Path(args.weights).with_suffix(suffix)
    try:
        if args.int8 and (args.format != "onnx" or not args.calibrate):
            raise ValueError(
                "--int8 needs --format onnx and --calibrate RUN_CONFIG_OR_FOLDER (pictures to calibrate on)"
            )
        if args.format == "onnx":
            require_export_extra(*(("onnx", "onnxscript", "onnxruntime") if args.int8 else ()))  # before the slow part
        model = build_model(_config(args.config)).eval()
        load_weights(model, args.weights)
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
