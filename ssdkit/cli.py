"""The `ssdkit` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ssdkit", description="SSD detectors from typed configs")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="build a preset, match boxes to its priors, detect on a generated picture")
    demo.add_argument("--preset", default="ssd300_vgg16")
    demo.add_argument("--out", default="ssdkit-demo", help="folder for the pictures it writes")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ssdkit.demo import run_demo

        return run_demo(preset=args.preset, out=args.out)
    return 2


if __name__ == "__main__":
    sys.exit(main())
