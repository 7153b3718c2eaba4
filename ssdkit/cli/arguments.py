"""Command-line arguments that several `ssdkit` commands share, written once so that their
spelling and help read the same everywhere (`--set`, `--data-root`, `--device`, SOURCE/`--weights`)."""

from __future__ import annotations

import argparse

__all__ = ["add_source", "add_overrides", "add_data_root", "add_device"]


def add_source(parser: argparse.ArgumentParser, *, help: str, weights_help: str) -> None:
    """The positional SOURCE (stored as `args.config`; see ssdkit.io.sources) and its `--weights`."""
    parser.add_argument("config", metavar="SOURCE", help=help)
    parser.add_argument("--weights", default=None, help=weights_help)


def add_overrides(parser: argparse.ArgumentParser, *, example: str, what: str = "a config value") -> None:
    """Repeatable `--set KEY=VALUE` into `args.overrides` (a list of strings)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help=f"override {what}, e.g. {example} (repeatable)",
    )


def add_data_root(parser: argparse.ArgumentParser) -> None:
    """`--data-root DIR`: the value of a recipe's ${VOC_ROOT} / ${COCO_ROOT} (`args.data_root`)."""
    parser.add_argument(
        "--data-root",
        default=None,
        metavar="DIR",
        help="the data folder of a recipe: the value of its ${VOC_ROOT} / ${COCO_ROOT} (else the environment's)",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    """`--device` for the commands that run a model: 'auto' picks CUDA when there is one."""
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when there is one), 'cpu', 'cuda:0', ...")
