"""`ssdkit convert-tf GRAPH OUT.safetensors [--class-names ...]`: a TF OD API frozen graph -> ssdkit weights
and the config they fit (OUT.yaml), with a report of what was inferred and what was not mapped."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", type=Path, help="frozen_inference_graph.pb exported by the TF Object Detection API")
    parser.add_argument("output", type=Path, help="weights file to write (.safetensors); the config goes beside it")
    parser.add_argument(
        "--class-names", nargs="+", default=None, help="names of labels 1 .. C - 1 (a frozen graph has no label map)"
    )


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ssdkit.io.tfod.convert import from_tf_object_detection
    from ssdkit.io.weights import save_weights

    if args.output.suffix != ".safetensors":
        print(f"ssdkit convert-tf: {args.output}: give a .safetensors file name", file=sys.stderr)
        return 2
    try:
        result = from_tf_object_detection(args.graph, class_names=args.class_names)
    except (ValueError, FileNotFoundError, ValidationError) as exc:
        print(f"ssdkit convert-tf: {exc}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    config = result.config.to_file(args.output.with_suffix(".yaml"))
    save_weights(result.model, args.output, extra_meta={"converted_from": args.graph.name})
    print(result.report())
    print(f"wrote {args.output} and {config}; e.g. ssdkit export {config} --weights {args.output} --format onnx")
    return 0
