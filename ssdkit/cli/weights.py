"""`ssdkit weights list` and `ssdkit weights fetch NAME...`: the named pretrained weights, and
pre-fetching them into torch.hub's cache (for machines that will run offline)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = sub.add_parser("list", help="the named weights: what each fits, its source, accuracy and cache path")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fetch = sub.add_parser("fetch", help="download named weights into torch.hub's cache ($TORCH_HOME/hub/checkpoints)")
    fetch.add_argument("names", nargs="+", metavar="NAME", help="e.g. ssdlite320_mobilenet_v3_coco (see `list`)")
    fetch.add_argument("--no-progress", action="store_true", help="no download progress bar")


def _accuracy(figures: dict) -> str:
    return ", ".join(f"{data} {k} {v}" for data, metrics in figures.items() for k, v in metrics.items()) or "-"


def run(args: argparse.Namespace) -> int:
    from ssdkit.io import pretrained

    if args.action == "list":
        entries = [pretrained.get(n).describe() for n in pretrained.names()]
        if args.json:
            print(json.dumps(entries, indent=2))
            return 0
        for e in entries:
            state = "cached" if e["cached"] else "not cached"
            print(f"{e['name']}  ({e['fits']}, alias {e['alias']!r})")
            print(f"    {e['source']}: {_accuracy(e['accuracy'])}; {state}: {e['cache_path']}")
            print(f"    {e['url']}")
        print(f"\n{pretrained.LICENCE_NOTE}.")
        return 0
    unknown = [n for n in args.names if n not in pretrained.CATALOG]
    if unknown:
        print(f"ssdkit weights: unknown names {unknown}; known: {', '.join(pretrained.names())}", file=sys.stderr)
        return 2
    for name in args.names:
        try:
            pretrained.fetch(name, progress=not args.no_progress)
        except (OSError, ValueError) as exc:
            print(f"ssdkit weights: {exc}", file=sys.stderr)
            return 2
        print(f"{name}: {pretrained.get(name).cache_path()}")
    return 0
