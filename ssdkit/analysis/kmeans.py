"""Prior shapes from data: k-means on box (w, h) with IoU distance, turned into `type: ssd` priors.

The distance between two shapes is 1 - IoU of the two boxes centred at the same point, so a
cluster is a shape that overlaps its members well whatever their size (plain k-means on (w, h)
lets large boxes dominate). `suggest_priors` assigns each cluster to the pyramid level whose prior
size is nearest, refits that level's size to its clusters and gives it their aspect ratios; the
feature maps, steps and offsets stay as they are, so only the priors (and the head's anchor counts)
change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import yaml
from torch import Tensor

from ssdkit.analysis.priors import CoverageReport, analyze_priors
from ssdkit.priors.ssd import SSDPriorsConfig
from ssdkit.registry import PRIORS

__all__ = ["wh_iou", "kmeans_iou", "KMeansResult", "PriorSuggestion", "priors_from_clusters", "suggest_priors"]

# Shapes closer to square than this get no extra ratio: each level already has two squares.
SQUARE_RATIO = 1.25
# Ratios of one level closer than this factor are merged (r and 1.1 r give near-identical priors).
MERGE_RATIO = 1.15


def wh_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of shapes `a [N, 2]` and `b [K, 2]` (width, height), as boxes sharing a centre -> `[N, K]`."""
    inter = torch.minimum(a[:, None, 0], b[None, :, 0]) * torch.minimum(a[:, None, 1], b[None, :, 1])
    union = (a[:, 0] * a[:, 1])[:, None] + (b[:, 0] * b[:, 1])[None, :] - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


@dataclass(frozen=True)
class KMeansResult:
    """centroids `[K, 2]` (w, h) sorted by area; assignment `[N]` cluster of each shape; mean_iou:
    the mean IoU of each shape with its centroid (what the clustering maximises)."""

    centroids: Tensor
    assignment: Tensor
    mean_iou: float


def _plus_plus_init(wh: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """k-means++ seeding with d = 1 - IoU: each next centre is drawn with probability ~ d^2 to the
    nearest centre so far (a loop over the k centres; each step is batched over all shapes)."""
    centres = wh[torch.randint(len(wh), (1,), generator=gen)]
    nearest = 1 - wh_iou(wh, centres)[:, 0]
    for _ in range(1, k):
        weights = nearest.square()
        if weights.sum() <= 0:  # fewer distinct shapes than k: any pick is as good
            weights = torch.ones_like(weights)
        pick = wh[torch.multinomial(weights, 1, generator=gen)]
        centres = torch.cat((centres, pick))
        nearest = torch.minimum(nearest, 1 - wh_iou(wh, pick)[:, 0])
    return centres


def _lloyd(wh: Tensor, centres: Tensor, iters: int) -> tuple[Tensor, Tensor]:
    """Assign each shape to the centre of highest IoU; move each centre to the geometric mean of its
    shapes (the mean of log w, log h: scale-free, like the distance); until nothing moves."""
    k = len(centres)
    log_wh = wh.log()
    assignment = torch.full((len(wh),), -1, dtype=torch.long)
    for _ in range(iters):
        iou = wh_iou(wh, centres)
        new = iou.argmax(dim=1)
        counts = torch.bincount(new, minlength=k)
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):  # an empty cluster takes the shapes worst served so far, one each
            worst = torch.argsort(iou.amax(dim=1))[: len(empty)]
            new[worst] = empty[: len(worst)]
            counts = torch.bincount(new, minlength=k)
        if torch.equal(new, assignment):
            break
        assignment = new
        sums = torch.zeros(k, 2, dtype=wh.dtype).index_add_(0, assignment, log_wh)
        centres = (sums / counts.clamp(min=1)[:, None]).exp()
    return centres, assignment


def kmeans_iou(wh: Tensor, k: int, *, seed: int = 0, restarts: int = 3, iters: int = 100) -> KMeansResult:
    """Cluster shapes `wh [N, 2]` (positive widths and heights, any unit) into `k` with distance
    1 - IoU; the best of `restarts` seeded k-means++ runs (highest mean IoU). Deterministic in `seed`."""
    if wh.dim() != 2 or wh.shape[1] != 2:
        raise ValueError(f"wh must be [N, 2] (width, height), got shape {tuple(wh.shape)}")
    if not 1 <= k <= len(wh):
        raise ValueError(f"k must lie in [1, N={len(wh)}], got {k}")
    if not (wh > 0).all() or not torch.isfinite(wh).all():
        raise ValueError("every width and height must be finite and > 0")
    wh = wh.double()
    gen = torch.Generator().manual_seed(seed)
    best: Optional[KMeansResult] = None
    for _ in range(restarts):
        centres, assignment = _lloyd(wh, _plus_plus_init(wh, k, gen), iters)
        score = float(wh_iou(wh, centres).gather(1, assignment[:, None]).mean())
        if best is None or score > best.mean_iou:
            best = KMeansResult(centres, assignment, score)
    order = torch.argsort(best.centroids.prod(dim=1))
    rank = torch.empty_like(order)
    rank[order] = torch.arange(k)
    return KMeansResult(best.centroids[order].float(), rank[best.assignment], best.mean_iou)


@dataclass(frozen=True)
class PriorSuggestion:
    """config: the suggested priors; before / after: the coverage of the same boxes by the given
    priors and by the suggested ones; clusters `[K, 2]` (w, h) normalised to the network input;
    cluster_level `[K]`: the level each cluster went to; kmeans: the clustering itself."""

    config: SSDPriorsConfig
    before: CoverageReport
    after: CoverageReport
    clusters: Tensor
    cluster_level: Tensor
    kmeans: KMeansResult

    def yaml(self) -> str:
        """The `priors:` block to paste into a model config."""
        data = self.config.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump({"priors": data}, sort_keys=False, default_flow_style=None)

    def summary(self) -> str:
        """Before / after in one table: coverage per size bin and the number of priors."""
        rows = [f"{'size':<8}{'before':>9}{'after':>9}"]
        for b, a in zip(self.before.per_bin(), self.after.per_bin(), strict=True):
            rows.append(f"{b.name:<8}{b.coverage:>9.1%}{a.coverage:>9.1%}")
        rows.append(f"{'priors':<8}{self.before.num_priors:>9}{self.after.num_priors:>9}")
        return "\n".join(rows)


def _fold_ratios(ratios: list[float]) -> list[float]:
    """Extra SSD ratios for shapes of w/h `ratios`: r and 1/r give the same prior pair, shapes near
    square need none, and near-equal ratios are merged (geometric mean)."""
    folded = sorted(max(r, 1 / r) for r in ratios if max(r, 1 / r) >= SQUARE_RATIO)
    groups: list[list[float]] = []
    for r in folded:
        if groups and r / groups[-1][0] < MERGE_RATIO:
            groups[-1].append(r)
        else:
            groups.append([r])
    return [round(math.exp(sum(map(math.log, g)) / len(g)), 2) for g in groups]


def priors_from_clusters(
    priors: SSDPriorsConfig, km: KMeansResult, *, image_size: tuple[int, int], unit: Tensor, shift: float = 1.0
) -> tuple[SSDPriorsConfig, Tensor]:
    """The config `priors` with its levels refitted to the clusters `km` (shapes in `unit`s of the
    config's sizes: (w, h) pixels for `min_sizes`, (1, 1) for fractions); returns it and each
    cluster's level `[K]`. `shift` moves a level's size from the config's (0) to its clusters' (1),
    geometrically. See `suggest_priors`."""
    pixels = priors.min_sizes is not None
    digits = 2 if pixels else 4
    centres = km.centroids.double()
    # Per level [A, 2]: s_k, then s'_k = sqrt(s_k s_k+1), then the ratios; as fractions of the input.
    shapes = PRIORS.build(priors).shapes(image_size)
    old_size = (torch.stack([s[0] for s in shapes]) * unit).prod(dim=1).sqrt()  # [L]
    old_mid = (torch.stack([s[1] for s in shapes]) * unit).prod(dim=1).sqrt()
    size = centres.prod(dim=1).sqrt()
    level = (size.log()[:, None] - old_size.log()[None, :]).abs().argmin(dim=1)  # [K]

    counts = torch.bincount(km.assignment, minlength=len(centres)).double()
    new_size = old_size.clone()
    ratios = [list(r) for r in priors.aspect_ratios]
    for lv in level.unique().tolist():  # a loop over pyramid levels, each with a handful of clusters
        mine = level == lv
        weights = counts[mine]
        fitted = (weights * size[mine].log()).sum() / weights.sum()
        new_size[lv] = torch.exp((1 - shift) * old_size[lv].log() + shift * fitted)
        ratios[lv] = _fold_ratios((centres[mine, 0] / centres[mine, 1]).tolist())

    sizes = [round(float(s), digits) for s in new_size]
    last = round(sizes[-1] * float((old_mid[-1] / old_size[-1]) ** 2), digits)  # keeps the config's s_L+1 / s_L
    fields = priors.model_dump(exclude={"min_sizes", "max_sizes", "scales", "s_min", "s_max", "aspect_ratios"})
    if pixels:
        fields.update(min_sizes=sizes, max_sizes=sizes[1:] + [last])
    else:
        fields.update(scales=sizes + [last])
    return SSDPriorsConfig(aspect_ratios=ratios, **fields), level


def suggest_priors(
    priors: SSDPriorsConfig,
    boxes: Tensor,
    *,
    feature_sizes: list[tuple[int, int]],
    image_size: tuple[int, int],
    k: int | Sequence[int] = (6, 9, 12),
    shifts: Sequence[float] = (1.0, 0.5, 0.0),
    iou_threshold: float = 0.5,
    seed: int = 0,
    select_on: int = 20_000,
    device: str | torch.device | None = None,
) -> PriorSuggestion:
    """Data-driven sizes and aspect ratios for `type: ssd` priors, with the coverage they reach.

    `boxes [N, 4]` xyxy normalised to the network input of `image_size` (h, w), whose backbone gives
    feature maps of `feature_sizes` [(h, w), ...]. Box shapes are clustered (IoU k-means) in the
    units of the config's sizes (pixels for `min_sizes`, fractions for `scales`/`s_min`), so the
    ratios mean what the config means by them. Each cluster goes to the level whose base size s_k is
    nearest in log scale; a level that gets clusters takes their ratios (r and 1/r folded, near-square
    dropped, near-equal merged) and moves its size s_k towards their count-weighted geometric-mean
    size by a factor `shift` (1: all the way, 0: not at all); other levels keep theirs. `max_sizes`
    (or the last scale) follow as the next level's size, so s'_k = sqrt(s_k s_k+1) fills the gap.

    Every (k, shift) candidate is scored by the coverage it reaches on up to `select_on` of the
    boxes (a seeded sample), the best wins (fewer priors on a tie), and its coverage of all boxes is
    reported next to that of the given priors.
    """
    if not isinstance(priors, SSDPriorsConfig):
        got = getattr(priors, "type", type(priors).__name__)
        raise TypeError(f"suggestions are for `type: ssd` priors (SSDPriorsConfig), got '{got}'")
    h, w = image_size
    unit = torch.tensor([w, h] if priors.min_sizes is not None else [1.0, 1.0], dtype=torch.float64)
    wh_n = (boxes[:, 2:] - boxes[:, :2]).double()
    valid = (wh_n > 0).all(dim=1)
    if not valid.any():
        raise ValueError("no box with a positive width and height to learn shapes from")
    wh = wh_n[valid] * unit
    gen = torch.Generator().manual_seed(seed)
    sample = boxes[torch.randperm(len(boxes), generator=gen)[:select_on]] if len(boxes) > select_on else boxes

    def coverage(cfg: SSDPriorsConfig, on: Tensor) -> CoverageReport:
        generated = PRIORS.build(cfg)(feature_sizes, image_size)
        return analyze_priors(generated, on, iou_threshold=iou_threshold, image_size=image_size, device=device)

    best: Optional[tuple[tuple[float, int], SSDPriorsConfig, Tensor, KMeansResult]] = None
    for kk in sorted({min(int(v), len(wh)) for v in ([k] if isinstance(k, int) else k)}):
        km = kmeans_iou(wh, kk, seed=seed)
        for shift in shifts:
            config, level = priors_from_clusters(priors, km, image_size=image_size, unit=unit, shift=shift)
            trial = coverage(config, sample)
            score = (trial.coverage, -trial.num_priors)
            if best is None or score > best[0]:
                best = (score, config, level, km)
    _, config, level, km = best
    clusters = (km.centroids.double() / unit).float()
    return PriorSuggestion(config, coverage(priors, boxes), coverage(config, boxes), clusters, level, km)
