"""The `bipartite` matcher against `ssd` (torchvision's rule): time per batch, and boxes left without a prior.

    .venv/bin/python benchmarks/matchers_bipartite.py [--repeats 15] [--batches 20]

Time: one process, the same inputs, interleaved repeats (ssd, bipartite, ssd, ...) after a warm-up,
medians, at 1 and 2 threads; SSD300's 8732 priors with B = 32 random images of up to G boxes each,
and the demo's priors on its own training batches. Lost boxes: valid ground truths with no positive
prior, counted on the demo's generated training batches. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ssdkit import presets
from ssdkit.boxes import cxcywh_to_xyxy
from ssdkit.build import build_model
from ssdkit.config import RunConfig, config_path
from ssdkit.data import build_loader
from ssdkit.losses import pad_targets
from ssdkit.matchers.bipartite import BipartiteMatcher, BipartiteMatcherConfig
from ssdkit.matchers.ssd import SSDMatcher, SSDMatcherConfig
from ssdkit.registry import PRIORS

SSD300_FEATURES = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]


def random_batch(g_max: int, batch: int = 32, seed: int = 0):
    """`[B, G, 4]` xyxy boxes (VOC-like sizes), each image holding 1 .. g_max of them, and the mask."""
    gen = torch.Generator().manual_seed(seed)
    wh = torch.empty(batch, g_max, 2).uniform_(0.05, 0.6, generator=gen)
    xy = torch.rand(batch, g_max, 2, generator=gen) * (1 - wh)
    counts = torch.randint(1, g_max + 1, (batch,), generator=gen)
    mask = torch.arange(g_max)[None] < counts[:, None]
    return torch.cat((xy, xy + wh), dim=-1), mask


def median_ms(fns: dict, args: tuple, repeats: int) -> dict[str, float]:
    for fn in fns.values():
        fn(*args)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn(*args)
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def lost(matches: torch.Tensor, mask: torch.Tensor) -> int:
    """Valid ground truths that no prior is matched to."""
    G = mask.shape[1]
    hit = torch.zeros_like(mask)
    for g in range(G):
        hit[:, g] = (matches == g).any(dim=1)
    return int((mask & ~hit).sum())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batches", type=int, default=20, help="demo training batches for the lost-box count")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="demo run-config override")
    parser.add_argument("--no-timing", action="store_true", help="count lost boxes only")
    args = parser.parse_args()
    matchers = {
        "ssd": SSDMatcher(SSDMatcherConfig(iou_threshold=0.5)),
        "bipartite": BipartiteMatcher(BipartiteMatcherConfig(iou_threshold=0.5)),
    }

    run = RunConfig.from_file(config_path("demo"), args.overrides)
    model = build_model(run.model)
    demo_priors = cxcywh_to_xyxy(model.priors)
    loader = build_loader(run.data, run.model, "train")
    demo_batches, boxes_total, lost_by, differ = [], 0, dict.fromkeys(matchers, 0), 0
    for i, batch in enumerate(loader):
        if i >= args.batches:
            break
        padded = pad_targets(batch.targets)
        demo_batches.append((padded.boxes, padded.mask))
        boxes_total += int(padded.mask.sum())
        found = {name: m(padded.boxes, padded.mask, demo_priors)[0] for name, m in matchers.items()}
        for name, matches in found.items():
            lost_by[name] += lost(matches, padded.mask)
        differ += int((found["ssd"] != found["bipartite"]).sum())
    print(
        f"demo training data ({len(demo_batches)} batches of {run.data.batch_size}, {boxes_total} boxes, "
        f"{len(demo_priors)} priors): boxes without a positive prior: "
        + ", ".join(f"{k} {v}" for k, v in lost_by.items())
        + f"; priors matched differently by the two: {differ}"
    )

    if args.no_timing:
        return
    pcfg = presets.get("ssd300_vgg16").priors
    ssd300 = cxcywh_to_xyxy(PRIORS.build(pcfg)(SSD300_FEATURES, (300, 300)))
    cases = [("demo, its own batch", *demo_batches[0], demo_priors)]
    for g in (4, 20, 50):
        cases.append((f"SSD300 8732 priors, B=32, G<={g}", *random_batch(g), ssd300))
    print("\n| case | threads | ssd ms | bipartite ms | ratio |\n| --- | --- | --- | --- | --- |")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, boxes, mask, priors in cases:
            ms = median_ms(matchers, (boxes, mask, priors), args.repeats)
            ratio = ms["bipartite"] / ms["ssd"]
            print(f"| {name} | {threads} | {ms['ssd']:.2f} | {ms['bipartite']:.2f} | {ratio:.2f} |")
    for name, boxes, mask, priors in cases[1:]:
        found = {k: lost(m(boxes, mask, priors)[0], mask) for k, m in matchers.items()}
        print(f"{name}: {int(mask.sum())} boxes; without a positive prior: {found}")


if __name__ == "__main__":
    main()
