"""`ssdkit demo` (`make demo`): a small SSD learns generated shapes from scratch on the CPU.

It trains the run config shipped as `ssdkit/config/recipes/demo.yaml`, evaluates it on held-out
pictures (VOC mAP@0.5 and COCO mAP@[.5:.95]), and writes a grid of predictions, the loss curve
and the precision-recall curves. Nothing is downloaded: the data are generated.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ssdkit.cli.arguments import add_overrides
from ssdkit.draw import draw
from ssdkit.text import count as counted

__all__ = ["run_demo", "generated_picture", "QUICK"]

# `--quick`: about a minute on two cores; still learns visibly (the tests run it).
QUICK = ("train.max_steps=150", "train.warmup_steps=20", "data.val.num_images=120")

_COLOURS = [(230, 60, 60), (60, 160, 230), (240, 200, 40), (90, 200, 90), (180, 90, 220)]


def generated_picture(
    width: int = 480, height: int = 360, count: int = 4, seed: int = 0
) -> tuple[Image.Image, np.ndarray]:
    """A picture with `count` filled rectangles/ellipses on a noisy background; returns it and
    the shapes' boxes `[count, 4]` xyxy in pixels."""
    rng = np.random.default_rng(seed)
    background = rng.integers(90, 160, size=(height, width, 3), dtype=np.uint8)
    picture = Image.fromarray(background)
    pen = ImageDraw.Draw(picture)
    boxes = []
    for i in range(count):
        w = int(rng.integers(width // 10, width // 2))
        h = int(rng.integers(height // 10, height // 2))
        x1 = int(rng.integers(0, width - w))
        y1 = int(rng.integers(0, height - h))
        shape = pen.rectangle if i % 2 == 0 else pen.ellipse
        shape((x1, y1, x1 + w - 1, y1 + h - 1), fill=_COLOURS[i % len(_COLOURS)])
        boxes.append((x1, y1, x1 + w, y1 + h))
    return picture, np.asarray(boxes, dtype=np.float32)


def _prior_table(model: Any) -> str:
    rows = [f"{'level':>5} {'feature map':>11} {'per location':>12} {'priors':>7}"]
    for k, ((fh, fw), a) in enumerate(zip(model.feature_sizes, model.prior_generator.num_anchors, strict=True)):
        rows.append(f"{k:>5} {f'{fh}x{fw}':>11} {a:>12} {fh * fw * a:>7}")
    rows.append(f"{'total':>5} {'':>11} {'':>12} {model.priors.shape[0]:>7}")
    return "\n".join(rows)


def _loss_curve(metrics_file: Path, path: Path) -> Path:
    """Training loss terms against the step, from the run's metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [json.loads(t) for t in metrics_file.read_text().splitlines() if t.strip()]
    train = [r for r in lines if r.get("kind", r.get("type")) == "train" and "step" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for key in ("loss", "loc", "cls"):
        pts = [(r["step"], r[key]) for r in train if isinstance(r.get(key), (int, float))]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _prediction_grid(model: Any, dataset: Any, path: Path, count: int = 12, columns: int = 4) -> Path:
    """The first `count` held-out pictures with the model's detections (score >= 0.5), in one PNG."""
    from torchvision.transforms.functional import to_pil_image

    pictures = [to_pil_image(dataset[i][0]) for i in range(min(count, len(dataset)))]
    detections = model.predict(pictures)
    tiles = [draw(p, d, score_threshold=0.5) for p, d in zip(pictures, detections, strict=True)]
    w, h = tiles[0].size
    rows = -(-len(tiles) // columns)
    grid = Image.new("RGB", (columns * w + (columns - 1) * 4, rows * h + (rows - 1) * 4), (255, 255, 255))
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % columns) * (w + 4), (i // columns) * (h + 4)))
    grid.save(path)
    return path


def run_demo(out: str | Path = "ssdkit-demo", quick: bool = False, overrides: tuple[str, ...] = ()) -> dict:
    """Train, evaluate and draw; returns the evaluation result (see `ssdkit.evaluation.evaluate`)."""
    from ssdkit.build import build_model
    from ssdkit.config import RunConfig, config_path
    from ssdkit.data import build_loader
    from ssdkit.engine import train
    from ssdkit.evaluation import evaluate, format_table

    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = RunConfig.from_file(config_path("demo"), [*(QUICK if quick else ()), *overrides])
    m, d, t = run.model, run.data, run.train
    preview = build_model(m)
    print(
        f"ssdkit demo{' --quick' if quick else ''}: an SSD with a '{m.backbone.type}' backbone "
        f"({sum(p.numel() for p in preview.parameters()) / 1e6:.2f} M parameters) learns {len(m.class_names)} "
        f"kinds of shapes ({', '.join(m.class_names)}) at {m.image_size[1]}x{m.image_size[0]} px, from scratch, "
        f"on {counted(torch.get_num_threads(), 'CPU thread')}\n"
    )
    print(_prior_table(preview) + "\n")
    if (out / "run").exists():  # the demo's own output: a re-run replaces it (the trainer never overwrites a run)
        shutil.rmtree(out / "run")
        print(f"(replacing the previous demo run in {out / 'run'})")
    print(f"training: {t.max_steps} steps of {d.batch_size} freshly generated pictures ({t.optimizer}, {t.schedule})")
    result = train(run, out_dir=out / "run")
    model = result.model.eval()
    trained = time.perf_counter()

    print(f"\nevaluating on {d.val.num_images} held-out pictures (another seed)")
    loader = build_loader(d, m, "val")
    scores = evaluate(model, loader, protocol="both", out_dir=out / "eval")
    print(format_table(scores))
    files = [
        _prediction_grid(model, loader.dataset.dataset, out / "predictions.png"),
        _loss_curve(result.run_dir / "metrics.jsonl", out / "loss.png"),
    ]
    total = time.perf_counter() - start
    print(
        f"\nVOC mAP@0.5 {scores['voc']['map']:.3f}   COCO mAP@[.5:.95] {scores['coco']['map']:.3f}   "
        f"on {scores['images']} held-out pictures"
    )
    print(
        f"time: {total:.0f} s in all ({trained - start:.0f} s set-up and training, {total - (trained - start):.0f} s "
        "evaluation and pictures)"
    )
    print(f"pictures: {files[0]} (predictions), {files[1]} (loss), {out / 'eval'} (precision-recall curves)")
    print(f"weights: {result.last_checkpoint}; run folder: {result.run_dir}")
    scores["seconds_total"] = total
    return scores


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="ssdkit-demo", help="folder for the run, the pictures and the scores")
    parser.add_argument("--quick", action="store_true", help="a one-minute version (fewer steps, fewer pictures)")
    add_overrides(parser, example="--set train.max_steps=300", what="a run-config value")


def run(args) -> int:
    run_demo(out=args.out, quick=args.quick, overrides=tuple(args.overrides))
    return 0
