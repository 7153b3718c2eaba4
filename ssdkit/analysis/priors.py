"""Prior coverage: how well a detector's priors can reach a data set's ground-truth boxes.

`analyze_priors(priors [P, 4] cxcywh, boxes [N, 4] xyxy, both normalised to [0, 1] of the network input)`
returns a `CoverageReport`: for each box its best prior IoU and how many priors reach the matching
threshold, split by object size. A box is *reached* when its best prior IoU >= the threshold; SSD's
matcher still forces every box onto its best prior, so an unreached box trains one poorly fitting
positive (or none, at IoU 0) instead of several good ones.

Size bins follow COCO's areas (small < 32^2 <= medium < 96^2 <= large) measured in pixels of the
*network input*, not of the original picture: the priors only ever see the resized image, so a
"small" box here is one that is small for this detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from ssdkit.boxes import box_area, cxcywh_to_xyxy
from ssdkit.text import count

__all__ = [
    "SIZE_BINS",
    "AREA_EDGES",
    "BinStats",
    "CoverageReport",
    "analyze_priors",
    "size_bins",
    "normalised_boxes",
    "plot_coverage",
]

SIZE_BINS = ("small", "medium", "large")
AREA_EDGES = (32.0**2, 96.0**2)  # COCO's, in pixels of the network input
# Box-prior pairs per chunk: a few float32 [n, P] buffers live at once (measured: ~100 MB peak).
CHUNK_PAIRS = 2_000_000
# Histogram buckets of "priors matched per box": [lo, hi) each; the last is open.
MATCH_BUCKETS = (0, 1, 2, 4, 8, 16)


def size_bins(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """`[N]` int64 in {0, 1, 2} (small, medium, large) of xyxy normalised boxes `[N, 4]`, by their
    area in pixels of an `image_size` (h, w) input."""
    h, w = image_size
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0) * (h * w)
    return torch.bucketize(area, torch.tensor(AREA_EDGES, dtype=area.dtype), right=True)


@dataclass(frozen=True)
class BinStats:
    """Coverage of the boxes of one size bin (or of all of them)."""

    name: str
    count: int
    coverage: float  # share with best IoU >= threshold; nan without boxes
    mean_matched: float  # mean number of priors with IoU >= threshold per box
    mean_best_iou: float


@dataclass(frozen=True)
class CoverageReport:
    """Per-box results of `analyze_priors`; every tensor is `[N]`, in the order of the boxes given.

    best_iou: the highest IoU of the box with any prior. best_prior: that prior's index.
    num_matched: how many priors have IoU >= `iou_threshold` with the box (0 for an unreached box).
    size_bin: 0, 1, 2 = small, medium, large (COCO areas in pixels of the `image_size` (h, w) input).
    """

    iou_threshold: float
    image_size: tuple[int, int]
    num_priors: int
    best_iou: Tensor
    best_prior: Tensor
    num_matched: Tensor
    size_bin: Tensor

    def __repr__(self) -> str:
        return (
            f"CoverageReport({self.num_boxes} boxes, {self.num_priors} priors, "
            f"iou_threshold={self.iou_threshold:g}, coverage={self.coverage:.4f})"
        )

    @property
    def num_boxes(self) -> int:
        return int(self.best_iou.shape[0])

    @property
    def reached(self) -> Tensor:
        """`[N]` bool: best prior IoU >= threshold."""
        return self.best_iou >= self.iou_threshold

    @property
    def coverage(self) -> float:
        """Share of boxes reached (nan when there are no boxes)."""
        return self._stats("all", torch.ones_like(self.reached)).coverage

    @property
    def unreached(self) -> Tensor:
        """`[U]` int64 indices of the boxes no prior reaches, in ascending order."""
        return torch.nonzero(~self.reached).flatten()

    def _stats(self, name: str, mask: Tensor) -> BinStats:
        n = int(mask.sum())
        if n == 0:
            return BinStats(name, 0, math.nan, math.nan, math.nan)
        return BinStats(
            name,
            n,
            float(self.reached[mask].double().mean()),
            float(self.num_matched[mask].double().mean()),
            float(self.best_iou[mask].double().mean()),
        )

    def per_bin(self) -> list[BinStats]:
        """One `BinStats` per size bin (small, medium, large), then one for all boxes."""
        bins = [self._stats(name, self.size_bin == k) for k, name in enumerate(SIZE_BINS)]
        return bins + [self._stats("all", torch.ones_like(self.reached))]

    def matched_histogram(self, buckets: Sequence[int] = MATCH_BUCKETS) -> list[tuple[str, int]]:
        """Boxes per bucket of `num_matched`: `buckets` are the lower edges, e.g. (0, 1, 2, 4) gives
        "0", "1", "2-3", "4+"."""
        edges = torch.tensor(list(buckets[1:]), dtype=self.num_matched.dtype)
        counts = torch.bincount(torch.bucketize(self.num_matched, edges, right=True), minlength=len(buckets))
        labels = []
        for lo, hi in zip(buckets, list(buckets[1:]) + [None], strict=True):
            labels.append(f"{lo}+" if hi is None else str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}")
        return list(zip(labels, counts.tolist(), strict=True))

    def table(self) -> str:
        """The report as text: one row per size bin, then the histogram of priors matched per box."""
        h, w = self.image_size
        lines = [
            f"{count(self.num_boxes, 'box', 'boxes')}, {count(self.num_priors, 'prior')}, "
            f"IoU threshold {self.iou_threshold:g} "
            f"(sizes: COCO areas in pixels of the {w}x{h} network input)",
            f"{'size':<8}{'boxes':>9}{'share':>9}{'reached':>9}{'priors/box':>12}{'best IoU':>10}",
        ]
        for s in self.per_bin():
            share = s.count / self.num_boxes if self.num_boxes else math.nan
            lines.append(
                f"{s.name:<8}{s.count:>9}{_cell(share, '.1%', 9)}{_cell(s.coverage, '.1%', 9)}"
                f"{_cell(s.mean_matched, '.2f', 12)}{_cell(s.mean_best_iou, '.3f', 10)}"
            )
        hist = "  ".join(f"{label}: {n}" for label, n in self.matched_histogram())
        lines.append(f"priors with IoU >= {self.iou_threshold:g} per box: {hist}")
        return "\n".join(lines)


def _cell(value: float, spec: str, width: int) -> str:
    """A table cell; "-" for a bin without boxes (a NaN), never "nan%"."""
    return f"{'-' if math.isnan(value) else format(value, spec):>{width}}"


def _check_boxes(boxes: Tensor) -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [N, 4] xyxy, got shape {tuple(boxes.shape)}")
    bad = ~torch.isfinite(boxes).all(dim=1)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"box {i} is not finite: {boxes[i].tolist()}")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"box {i} is not xyxy (x2 < x1 or y2 < y1): {boxes[i].tolist()}")


def _iou(boxes: Tensor, priors: Tensor, priors_area: Tensor) -> Tensor:
    """IoU `[n, P]` of xyxy `boxes [4, n]` and `priors [4, P]` (coordinate-major, so every broadcast
    reads contiguous rows: broadcasting strided columns of `[P, 4]` is ~20x slower). The arithmetic
    of `ssdkit.boxes.batched_box_iou` (same values, so the matcher's threshold decisions), done in
    place on a few `[n, P]` buffers instead of a dozen temporaries: this loop is the whole run time."""
    x1, y1, x2, y2 = (c[:, None] for c in boxes)
    px1, py1, px2, py2 = (c[None, :] for c in priors)
    iw = torch.minimum(x2, px2).sub_(torch.maximum(x1, px1)).clamp_(min=0)
    ih = torch.minimum(y2, py2).sub_(torch.maximum(y1, py1)).clamp_(min=0)
    inter = iw.mul_(ih)
    area = (x2 - x1) * (y2 - y1)
    union = (area + priors_area[None, :]).sub_(inter).clamp_(min=torch.finfo(inter.dtype).tiny)
    return inter.div_(union)  # an empty union has an empty intersection: 0, not NaN


@torch.no_grad()
def analyze_priors(
    priors: Tensor,
    boxes: Tensor,
    *,
    iou_threshold: float = 0.5,
    image_size: tuple[int, int] = (300, 300),
    chunk_size: Optional[int] = None,
    device: str | torch.device | None = None,
) -> CoverageReport:
    """Coverage of ground-truth `boxes [N, 4]` (xyxy) by `priors [P, 4]` (cxcywh), both normalised
    to [0, 1] of the network input of `image_size` (h, w) pixels.

    Works through the boxes `chunk_size` at a time (default: ~2M box-prior pairs per chunk), so the
    memory needed does not grow with N; the result does not depend on the chunk size. `device`
    (e.g. "cuda") is where the IoUs are computed; the report's tensors are on the CPU.
    """
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must lie in (0, 1], got {iou_threshold}")
    if priors.dim() != 2 or priors.shape[-1] != 4 or priors.shape[0] == 0:
        raise ValueError(f"priors must be [P, 4] cxcywh with P > 0, got shape {tuple(priors.shape)}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    _check_boxes(boxes)
    device = torch.device(device) if device is not None else priors.device
    priors_xyxy = cxcywh_to_xyxy(priors.to(device, torch.float32))
    priors_area = box_area(priors_xyxy)
    priors_t = priors_xyxy.T.contiguous()  # [4, P]
    boxes_t = boxes.to(device, torch.float32).T.contiguous()  # [4, N]
    n, p = boxes.shape[0], priors.shape[0]
    chunk = chunk_size or max(1, CHUNK_PAIRS // p)
    best_iou = torch.empty(n, dtype=torch.float32, device=device)
    best_prior = torch.empty(n, dtype=torch.long, device=device)
    num_matched = torch.empty(n, dtype=torch.long, device=device)
    for start in range(0, n, chunk):  # chunks of boxes, each one batched over all its boxes and priors
        part = slice(start, start + chunk)
        iou = _iou(boxes_t[:, part], priors_t, priors_area)  # [n, P]
        best_iou[part], best_prior[part] = iou.max(dim=1)
        num_matched[part] = (iou >= iou_threshold).sum(dim=1)
    return CoverageReport(
        iou_threshold=float(iou_threshold),
        image_size=(int(image_size[0]), int(image_size[1])),
        num_priors=p,
        best_iou=best_iou.cpu(),
        best_prior=best_prior.cpu(),
        num_matched=num_matched.cpu(),
        size_bin=size_bins(boxes.float().cpu(), image_size),
    )


def normalised_boxes(items: list[dict[str, Any]]) -> tuple[Tensor, Tensor]:
    """All boxes of a data set's `ground_truth()` items (pixels of each picture), concatenated.

    Returns (boxes `[N, 4]` xyxy normalised by each picture's own size, which is what the priors see
    after the model resizes the whole picture; image `[N]` int64, the item each box belongs to).
    Crowd boxes are left out (training never matches them); difficult ones are kept. An item
    without a size gets it from its picture's file header.
    """
    boxes, owner = [], []
    for i, item in enumerate(items):  # once per picture, to read its size: the analysis itself is batched
        keep = ~item["iscrowd"].bool() if "iscrowd" in item else torch.ones(len(item["boxes"]), dtype=torch.bool)
        h, w = item.get("orig_size") or _header_size(item["path"])
        boxes.append(item["boxes"][keep].float().reshape(-1, 4) / torch.tensor([w, h, w, h], dtype=torch.float32))
        owner.append(torch.full((int(keep.sum()),), i, dtype=torch.long))
    if not boxes:
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    return torch.cat(boxes), torch.cat(owner)


def _header_size(path: str) -> tuple[int, int]:
    """(h, w) of a picture from its file header (PIL reads no pixels until asked to)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except OSError as exc:
        raise ValueError(f"{path}: the annotation gives no picture size and the picture cannot be read: {exc}") from exc
    return h, w


def _prior_shapes(priors: Tensor, scale: Tensor) -> Tensor:
    """Distinct (w, h) of priors `[P, 4]` cxcywh (normalised) in pixels `scale` = (w, h), to 1e-3 px."""
    return torch.unique((priors[:, 2:].double() * scale * 1e3).round() / 1e3, dim=0)


def _scatter_panel(
    ax: Any,
    wh: Tensor,
    reached: Tensor,
    prior_wh: Tensor,
    suggested_wh: Optional[Tensor],
    report: CoverageReport,
    max_points: int,
) -> None:
    """Boxes' (w, h) on log axes, reached / unreached, with the priors' (and suggested) shapes."""
    if wh.shape[0] > max_points:  # a seeded subsample keeps the scatter readable and the file small
        keep = torch.randperm(wh.shape[0], generator=torch.Generator().manual_seed(0))[:max_points]
        wh, reached = wh[keep], reached[keep]
    ax.scatter(*wh[reached].T.numpy(), s=4, alpha=0.4, c="tab:green", label="reached", lw=0)
    ax.scatter(*wh[~reached].T.numpy(), s=6, alpha=0.7, c="tab:red", label="not reached", lw=0)
    ax.scatter(*prior_wh.T.numpy(), marker="x", s=40, c="black", label="priors")
    if suggested_wh is not None:
        ax.scatter(*suggested_wh.T.numpy(), marker="+", s=60, c="tab:blue", label="suggested")
    ax.set(xscale="log", yscale="log", xlabel="width (px of network input)", ylabel="height (px)")
    ax.set_title(f"boxes reached at IoU >= {report.iou_threshold:g}: {report.coverage:.1%}")
    ax.legend(loc="upper left", fontsize=8)


def _histogram_panel(
    axis: Any, values: Tensor, reached: Tensor, marks: list[tuple[Tensor, str, str]], label: str
) -> None:
    """Histogram of `values` `[N]` (reached stacked on unreached) on a log axis, with a vertical
    line per distinct value of each (values, colour, line style) in `marks`."""
    from matplotlib import ticker

    every = torch.cat([values] + [m for m, _, _ in marks])
    bins = torch.logspace(math.log10(float(every.min()) * 0.9), math.log10(float(every.max()) * 1.1), 40)
    axis.hist(
        [values[~reached].numpy(), values[reached].numpy()],
        bins=bins.numpy(),
        stacked=True,
        color=["tab:red", "tab:green"],
        alpha=0.7,
    )
    for m, colour, style in marks:
        for v in (m * 100).round().unique().div(100).tolist():  # to 1 %: one line per distinct value
            axis.axvline(v, color=colour, ls=style, lw=0.8)
    axis.set(xscale="log", xlabel=label, ylabel="boxes")
    axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.xaxis.set_minor_formatter(ticker.NullFormatter())


def plot_coverage(
    report: CoverageReport,
    boxes: Tensor,
    priors: Tensor,
    path: str | Path,
    *,
    suggested_priors: Optional[Tensor] = None,
    max_points: int = 20_000,
) -> Path:
    """Save a PNG: ground-truth (w, h) in network-input pixels on log axes, reached / unreached,
    with the priors' shapes on top; histograms of box size sqrt(wh) and aspect ratio w/h with the
    priors' sizes and ratios marked. `boxes [N, 4]` xyxy and `priors [P, 4]` cxcywh, normalised."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    h, w = report.image_size
    scale = torch.tensor([w, h], dtype=torch.float64)
    wh = ((boxes[:, 2:] - boxes[:, :2]).double() * scale).clamp(min=0.5)  # zero-width boxes would vanish from log axes
    prior_wh = _prior_shapes(priors, scale)
    suggested_wh = _prior_shapes(suggested_priors, scale) if suggested_priors is not None else None
    fig, (ax, ax_size, ax_ratio) = plt.subplots(1, 3, figsize=(16, 5.2))
    _scatter_panel(ax, wh, report.reached, prior_wh, suggested_wh, report, max_points)

    def marks(of: Callable[[Tensor], Tensor]) -> list[tuple[Tensor, str, str]]:
        found = [(of(prior_wh), "black", "-")]
        return found + ([(of(suggested_wh), "tab:blue", "--")] if suggested_wh is not None else [])

    size, ratio = (lambda p: p.prod(dim=1).sqrt()), (lambda p: p[:, 0] / p[:, 1])
    _histogram_panel(ax_size, size(wh), report.reached, marks(size), "box size sqrt(w h) (px); lines: priors")
    _histogram_panel(ax_ratio, ratio(wh), report.reached, marks(ratio), "aspect ratio w / h; lines: priors")
    ax_ratio.xaxis.set_major_locator(ticker.FixedLocator([1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8]))
    ax_ratio.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}" if v >= 1 else f"1/{1 / v:g}"))
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.12, top=0.93, wspace=0.22)  # tight_layout: 2x the time
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
