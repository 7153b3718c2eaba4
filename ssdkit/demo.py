"""`ssdkit demo`: what a preset's priors, matcher and coder do, and a prediction, on a generated picture.

The model has random weights here (nothing is downloaded), so its detections show
the predict/draw path, not accuracy; a training demo comes with the Trainer.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ssdkit import presets
from ssdkit.boxes import cxcywh_to_xyxy
from ssdkit.build import build_model
from ssdkit.draw import draw

__all__ = ["run_demo", "generated_picture"]

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


def run_demo(preset: str = "ssd300_vgg16", out: str | Path = "ssdkit-demo", seed: int = 0) -> int:
    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = presets.get(preset)
    model = build_model(cfg).eval()
    print(
        f"preset {preset}: input {cfg.image_size[1]}x{cfg.image_size[0]}, {cfg.num_classes} classes "
        f"(incl. background), {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
        f"built in {time.perf_counter() - t0:.1f} s"
    )

    print("\npriors per level")
    print(f"{'level':>5} {'feature map':>11} {'per location':>12} {'priors':>7}")
    for k, ((fh, fw), a) in enumerate(zip(model.feature_sizes, model.prior_generator.num_anchors, strict=True)):
        print(f"{k:>5} {f'{fh}x{fw}':>11} {a:>12} {fh * fw * a:>7}")
    print(f"{'total':>5} {'':>11} {'':>12} {model.priors.shape[0]:>7}")

    picture, gt_pixels = generated_picture(seed=seed)
    w, h = picture.size
    gt = torch.from_numpy(gt_pixels) / torch.tensor([w, h, w, h])
    matches, iou = model.matcher(gt[None], torch.ones(1, len(gt), dtype=torch.bool), model.priors_xyxy)
    print(f"\nmatching {len(gt)} generated boxes to the priors (IoU threshold {model.matcher.iou_threshold})")
    print(f"{'box':>3} {'xyxy (pixels)':>26} {'positives':>9} {'best IoU':>8} {'round-trip err':>14}")
    for g in range(len(gt)):
        pos = (matches[0] == g).nonzero().flatten()
        pri = model.priors[pos]
        offsets = model.box_coder.encode(gt[g].expand(len(pos), 4), pri)
        back = model.box_coder.decode(offsets, pri)
        err = (back - gt[g]).abs().max().item() * max(w, h) if len(pos) else float("nan")
        box = ", ".join(f"{v:.0f}" for v in gt_pixels[g])
        print(f"{g:>3} {box:>26} {len(pos):>9} {iou[0, pos].max().item():>8.2f} {err:>11.1e} px")
    print(f"positives in all: {(matches[0] >= 0).sum().item()} of {model.priors.shape[0]} priors")

    picture_matched = picture.copy()
    matched = ImageDraw.Draw(picture_matched)
    for p in (cxcywh_to_xyxy(model.priors[matches[0] >= 0]) * torch.tensor([w, h, w, h])).tolist():
        matched.rectangle(p, outline=(255, 255, 255))
    for b in gt_pixels.tolist():
        matched.rectangle(b, outline=(0, 0, 0), width=3)
    picture_matched.save(out / "matched_priors.png")

    t0 = time.perf_counter()
    det = model.predict(picture)
    took = time.perf_counter() - t0
    top = {k: v[:5] for k, v in det.items()}
    draw(picture, top, score_threshold=0.0, path=out / "prediction.png")
    print(
        f"\npredict on a {w}x{h} picture: {len(det['scores'])} detections in {took:.2f} s "
        f"(random weights: scores are near 1/{cfg.num_classes}, the boxes show the path, not accuracy)"
    )
    print(f"wrote {out / 'matched_priors.png'} (ground truth black, matched priors white)")
    print(f"wrote {out / 'prediction.png'} (top 5 detections)")
    return 0


def add_arguments(parser) -> None:
    parser.add_argument("--preset", default="ssd300_vgg16")
    parser.add_argument("--out", default="ssdkit-demo", help="folder for the pictures it writes")


def run(args) -> int:
    return run_demo(preset=args.preset, out=args.out)
