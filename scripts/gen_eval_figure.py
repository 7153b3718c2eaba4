"""Draw docs/images/pr-curves.png (docs/evaluation.md): train the shipped `shapes_tiny` example
(a tiny SSD on generated shapes; minutes on a CPU), evaluate it, and keep the all-classes
precision-recall figure.

    python scripts/gen_eval_figure.py [--set train.epochs=4 ...]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ssdkit.build import build_model  # noqa: E402
from ssdkit.config import RunConfig  # noqa: E402
from ssdkit.data import build_loader  # noqa: E402
from ssdkit.engine import train  # noqa: E402
from ssdkit.evaluation import evaluate, format_table  # noqa: E402
from ssdkit.io.weights import load_weights  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cfg = RunConfig.from_file("shapes_tiny", overrides=["eval.enabled=false", *args.overrides])
    with tempfile.TemporaryDirectory() as tmp:
        result = train(cfg, out_dir=Path(tmp) / "run")
        model = build_model(cfg.model)
        load_weights(model, Path(result.run_dir) / "last.pt")
        loader = build_loader(cfg.data, cfg.model, "val")
        res = evaluate(model, loader, protocol="both", out_dir=Path(tmp) / "eval")
        print(format_table(res))
        target = ROOT / "docs" / "images" / "pr-curves.png"
        shutil.copyfile(Path(tmp) / "eval" / "pr_curves" / "all.png", target)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
