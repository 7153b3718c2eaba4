"""The `ssdkit` command: one sub-command per module.

Each sub-command is a module of `ssdkit/cli/` (the CLI layer, above the code it calls) that
defines `add_arguments(parser)` and `run(args) -> int`; this file only lists them, so a new
command touches one line here. Arguments several commands share are in `ssdkit.cli.arguments`. The modules are imported only when their command runs
(or `--help` lists them), so `ssdkit demo` does not pay for onnx or matplotlib.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "ssdkit.cli.demo",
        "train a small SSD on generated shapes (CPU, minutes), evaluate it, draw its predictions",
    ),
    "train": ("ssdkit.cli.train", "train a model from a run config (YAML)"),
    "eval": ("ssdkit.cli.eval", "evaluate weights on a data set: VOC AP, COCO mAP, PR curves"),
    "data": ("ssdkit.cli.data", "write generated shapes as VOC/COCO folders; check a data set for defects"),
    "analyze-priors": ("ssdkit.cli.analyze_priors", "how well a config's priors cover a data set's boxes"),
    "export": ("ssdkit.cli.export", "export to ONNX or TorchScript"),
    "predict": ("ssdkit.cli.predict", "detect objects on pictures: drawn pictures and a JSON of detections"),
    "weights": ("ssdkit.cli.weights", "list the named pretrained weights, or fetch them into the cache"),
    "convert-tf": ("ssdkit.cli.convert_tf", "convert a TensorFlow Object Detection API SSD (frozen graph) to ssdkit"),
}


def _module(name: str):
    try:
        return importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("ssdkit"):
            return None  # a command whose module this version does not ship
        raise


def _version() -> str:
    """ssdkit's version and what it runs on: the line a bug report needs."""
    import torch
    import torchvision

    from ssdkit import __version__

    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    return f"ssdkit {__version__} (torch {torch.__version__}, torchvision {torchvision.__version__}, {cuda})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="ssdkit", description="SSD detectors from typed configs")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Import only the chosen command's module; list the others by their help line alone.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, help_) in COMMANDS.items():
        if name == chosen:
            mod = _module(name)
            if mod is None:
                continue
            mod.add_arguments(sub.add_parser(name, help=help_, description=help_))
        else:
            sub.add_parser(name, help=help_, add_help=False)
    args = parser.parse_args(argv)
    return int(_module(args.command).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
