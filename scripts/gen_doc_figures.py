"""Draw the figures of docs/concepts.md into docs/images/ with ssdkit's own components.

    python scripts/gen_doc_figures.py

Every box in the figures comes from the code (prior generator, matcher, NMS), so rerunning
this after a change to them redraws what the page describes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ssdkit import presets  # noqa: E402
from ssdkit.boxes import cxcywh_to_xyxy  # noqa: E402
from ssdkit.matchers.ssd import SSDMatcher, SSDMatcherConfig  # noqa: E402
from ssdkit.postprocess import HardNMS, HardNMSConfig, SoftNMS, SoftNMSConfig  # noqa: E402
from ssdkit.registry import PRIORS  # noqa: E402

OUT = ROOT / "docs" / "images"
SSD300_FEATURES = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
SIDE = 300  # the figures show a 300 x 300 network input
DPI = 80
COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4"]


def _save(fig: plt.Figure, name: str) -> Path:
    path = OUT / name
    fig.savefig(path, dpi=DPI, metadata={"Software": None})  # no version string: reruns give the same bytes
    plt.close(fig)
    return path


def _ssd300_priors() -> tuple[torch.Tensor, list[int]]:
    """SSD300's priors `[P, 4]` cxcywh normalised, and where each level starts."""
    cfg = presets.get("ssd300_vgg16").priors
    gen = PRIORS.build(cfg)
    priors = gen(SSD300_FEATURES, (SIDE, SIDE))
    counts = [h * w * a for (h, w), a in zip(SSD300_FEATURES, gen.num_anchors, strict=True)]
    starts = np.cumsum([0] + counts[:-1]).tolist()
    return priors, starts


def _box(ax, xyxy, colour, *, lw=1.5, ls="-", alpha=1.0) -> None:
    x1, y1, x2, y2 = xyxy
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=colour, lw=lw, ls=ls, alpha=alpha))


def _frame(ax, title: str) -> None:
    ax.set_xlim(0, SIDE)
    ax.set_ylim(SIDE, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)


def priors_figure() -> Path:
    """Two levels of SSD300: every prior centre, and the priors of one location."""
    priors, starts = _ssd300_priors()
    anchors = [4, 6, 6, 6, 4, 4]
    ratio_names = ["r=2", "r=1/2", "r=3", "r=1/3"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
    for ax, level, (row, col) in zip(axes, (2, 4), ((4, 4), (1, 1)), strict=True):
        fh, fw = SSD300_FEATURES[level]
        a = anchors[level]
        block = priors[starts[level] : starts[level] + fh * fw * a].reshape(fh, fw, a, 4)
        centres = block[:, :, 0, :2].reshape(-1, 2) * SIDE
        ax.scatter(centres[:, 0], centres[:, 1], s=6, color="0.3", zorder=3)
        ours = cxcywh_to_xyxy(block[row, col]) * SIDE
        labels = ["s_k", "s'_k"] + ratio_names[: a - 2]
        for i, (xyxy, label) in enumerate(zip(ours.tolist(), labels, strict=True)):
            _box(ax, xyxy, COLOURS[i], lw=2)
            ax.plot([], [], color=COLOURS[i], label=label)
        ax.legend(loc="lower right", fontsize=7, ncol=3, framealpha=0.9)
        _frame(ax, f"level {level}: {fh}x{fw} map, {a} priors per location")
    fig.tight_layout()
    return _save(fig, "priors.png")


# Ground truth of the matching figure, xyxy pixels of the 300 x 300 input: two ordinary
# objects and a thin one that no prior overlaps by 0.5 (only the bipartite step matches it).
MATCH_GT = np.array([[40, 60, 170, 200], [190, 120, 280, 260], [215, 20, 230, 100]], dtype=np.float32)


def matching_figure() -> Path:
    """Ground truth and the priors the SSD matcher makes positive for each."""
    priors, _ = _ssd300_priors()
    gt = torch.from_numpy(MATCH_GT) / SIDE
    matcher = SSDMatcher(SSDMatcherConfig(iou_threshold=0.5))
    priors_xyxy = cxcywh_to_xyxy(priors)
    matches, iou = matcher(gt[None], torch.ones(1, len(gt), dtype=torch.bool), priors_xyxy)
    fig, ax = plt.subplots(figsize=(4.6, 4.6))
    ax.set_facecolor("0.95")
    for g in range(len(gt)):
        positives = (matches[0] == g).nonzero().flatten()
        forced = set(positives[iou[0, positives] < matcher.iou_threshold].tolist())
        for p in positives.tolist():
            ls, lw = ("--", 2) if p in forced else ("-", 1)
            _box(ax, (priors_xyxy[p] * SIDE).tolist(), COLOURS[g], lw=lw, ls=ls)
        _box(ax, MATCH_GT[g].tolist(), "black", lw=3)
        ax.text(MATCH_GT[g][0], MATCH_GT[g][3] + 12, f"{len(positives)} positive", fontsize=8, color=COLOURS[g])
    _frame(ax, "positives: IoU >= 0.5, dashed: bipartite step")
    fig.tight_layout()
    return _save(fig, "matching.png")


def _candidates(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Jittered boxes around two objects, as a detector emits them: `[N, 4]` xyxy normalised, scores `[N]`."""
    gen = torch.Generator().manual_seed(seed)
    objects = torch.tensor([[0.15, 0.2, 0.5, 0.65], [0.45, 0.3, 0.85, 0.8]])
    boxes, scores = [], []
    for obj, best in zip(objects, (0.95, 0.8), strict=True):
        n = 8
        jitter = (torch.rand(n, 4, generator=gen) - 0.5) * 0.12
        boxes.append(obj + jitter)
        scores.append(best * (1 - 0.5 * torch.rand(n, generator=gen)))
    return torch.cat(boxes), torch.cat(scores)


def _run_nms(pp, boxes: torch.Tensor, scores: torch.Tensor) -> dict:
    probs = torch.stack((1 - scores, scores), dim=-1)[None]  # one image, one object class
    return pp(boxes[None], probs)[0]


def nms_figure() -> Path:
    """The same candidates, after hard NMS and after Gaussian soft-NMS."""
    boxes, scores = _candidates()
    hard = _run_nms(HardNMS(HardNMSConfig(iou_threshold=0.45)), boxes, scores)
    soft = _run_nms(SoftNMS(SoftNMSConfig(iou_threshold=0.45, sigma=0.5, score_threshold=0.3)), boxes, scores)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4), layout="constrained")
    panels = (
        (boxes, scores, f"{len(scores)} candidates of one class"),
        (hard["boxes"], hard["scores"], f"hard NMS, IoU > 0.45 dropped\n{len(hard['scores'])} kept"),
        (soft["boxes"], soft["scores"], f"soft-NMS, sigma 0.5, score > 0.3\n{len(soft['scores'])} kept"),
    )
    for ax, (b, s, title) in zip(axes, panels, strict=True):
        for xyxy, score in zip((b * SIDE).tolist(), s.tolist(), strict=True):
            _box(ax, xyxy, plt.cm.viridis(score), lw=1 + 2 * score)
        _frame(ax, title)
    fig.colorbar(plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, 1)), ax=axes, label="score", shrink=0.8)
    return _save(fig, "nms.png")


def curves_figure() -> Path:
    """Smooth-L1 next to L1 and L2; the NMS score factor as a function of IoU."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    x = torch.linspace(-3, 3, 301)
    beta = 1.0
    smooth = torch.where(x.abs() < beta, 0.5 * x**2 / beta, x.abs() - 0.5 * beta)
    left.plot(x, smooth, label="smooth-L1 (beta 1)", lw=2)
    left.plot(x, x.abs(), "--", label="L1")
    left.plot(x, 0.5 * x**2, ":", label="x^2 / 2")
    left.set_ylim(0, 3)
    left.set_xlabel("predicted offset - target offset")
    left.legend(fontsize=8)
    left.set_title("localisation loss per coordinate", fontsize=10)
    iou = torch.linspace(0, 1, 201)
    right.plot(iou, torch.exp(-(iou**2) / 0.5), lw=2, label="soft gaussian, sigma 0.5")
    right.plot(iou, torch.where(iou > 0.45, 1 - iou, torch.ones_like(iou)), "--", label="soft linear, threshold 0.45")
    right.plot(iou, (iou <= 0.45).float(), ":", label="hard, threshold 0.45")
    right.set_xlabel("IoU with a higher-scoring kept box")
    right.set_ylabel("score factor")
    right.legend(fontsize=8)
    right.set_title("NMS: what happens to an overlapping box", fontsize=10)
    fig.tight_layout()
    return _save(fig, "curves.png")


def main() -> int:
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    # The pictures must not change with the machine's thread count (float sums).
    torch.set_num_threads(1)
    for make in (priors_figure, matching_figure, nms_figure, curves_figure):
        path = make()
        print(f"wrote {path.relative_to(ROOT)} ({os.path.getsize(path) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
