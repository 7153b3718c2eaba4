"""Training input pipeline: pictures per second per CPU core, ssdkit against its peers, one process.

    make bench                                       # runs this after benchmarks/run.py
    .venv/bin/python benchmarks/pipeline.py          # 200 generated VOC-format JPEGs, 500x375
    .venv/bin/python benchmarks/pipeline.py --voc ~/data/VOCdevkit/VOC2007 --ssd-pytorch ~/src/ssd.pytorch

Every contender turns the same JPEG files into a batch of 32 network inputs `[32, 3, 300, 300]` float32
(decode, SSD augmentation, resize, normalise, stack):

- ssdkit: the training loader's own code (`ModelInputs` with `train_transform`, `Collate`).
- torchvision reference: the pipeline of torchvision's detection references for SSD
  (`--data-augmentation ssd`, PIL backend): RandomPhotometricDistort, RandomZoomOut (mean fill),
  RandomIoUCrop, RandomHorizontalFlip, ToImage, SanitizeBoundingBoxes; then what its model's transform
  does, on the CPU here: Resize(300, 300), ToDtype(float), Normalize.
- albumentations (if installed, `pip install .[bench]`): its nearest equivalent, on OpenCV: colour
  jitters (p 0.5 each) and channel shuffle, CropAndPad (zoom out up to 4x), BBoxSafeRandomCrop (it has
  no IoU-constrained crop), HorizontalFlip, Resize, Normalize.
- ssd.pytorch (with `--ssd-pytorch DIR`, a checkout of github.com/amdegroot/ssd.pytorch; its code is
  imported from there, never copied): `SSDAugmentation(300)` on cv2-decoded BGR pictures.

Timing: one thread (`torch.set_num_threads(1)`, OpenCV too): a data-loader worker is one core, so
pictures/s here = pictures/s per core. Rounds interleave the contenders (A, B, C, A, B, C, ...) on the
same pictures, the median round counts, and `--threads 2` repeats at two threads. Then the time of
ssdkit's and torchvision's pipelines is split by stage, and the boxes after augmentation are compared
(same operations and probabilities: the distributions must agree). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ssdkit import presets  # noqa: E402
from ssdkit.config.data import AugmentConfig  # noqa: E402
from ssdkit.data import VOCConfig, VOCDataset  # noqa: E402
from ssdkit.data.build import preprocessor_for  # noqa: E402
from ssdkit.data.folders import write_shapes  # noqa: E402
from ssdkit.data.loader import Collate  # noqa: E402
from ssdkit.data.pipeline import ModelInputs  # noqa: E402
from ssdkit.data.transforms import train_transform  # noqa: E402

SIZE = 300
BATCH = 32
MEAN_RGB = (123.0, 117.0, 104.0)  # SSD300-VGG16's (torchvision's ssd300_vgg16 and ssdkit's recipes)
GPU_RATE = 1000.0  # assumed pictures/s one modern GPU trains SSD300 at (AMP, batch 32): see docs/benchmarks.md


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- contenders


class SSDKit:
    """ssdkit's training items and collate, exactly as `build_loader` makes them."""

    name = "ssdkit"

    def __init__(self, dataset: VOCDataset, aug: AugmentConfig) -> None:
        model_cfg = presets.get("ssd300_vgg16_coco")  # RGB input, torchvision's normalisation
        pre = preprocessor_for(model_cfg)
        self.items = ModelInputs(dataset, pre, train=True, transform=train_transform(aug, pre.mean_pixel()))
        self.collate = Collate(pre.image_size)

    def batch(self, indices: list[int], epoch: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b = self.collate([self.items[(i, epoch)] for i in indices])
        return b.images, [t["boxes"] for t in b.targets]


class TorchvisionReference:
    """torchvision's detection references, `--data-augmentation ssd`, PIL backend, + the model's resize."""

    name = "torchvision reference"

    def __init__(self, dataset: VOCDataset) -> None:
        self.dataset = dataset
        fill = {tv_tensors.Image: MEAN_RGB, "others": 0}
        self.transform = v2.Compose(
            [
                v2.RandomPhotometricDistort(p=0.5),
                v2.RandomZoomOut(fill=fill),
                v2.RandomIoUCrop(),
                v2.RandomHorizontalFlip(p=0.5),
                v2.ToImage(),
                v2.ToDtype(torch.float, scale=True),
                v2.ConvertBoundingBoxFormat(tv_tensors.BoundingBoxFormat.XYXY),
                v2.SanitizeBoundingBoxes(),
                v2.ToPureTensor(),
            ]
        )
        # GeneralizedRCNNTransform of torchvision's ssd300_vgg16, done here on the CPU
        self.model_transform = v2.Compose(
            [v2.Resize((SIZE, SIZE), antialias=True), v2.Normalize([0.48235, 0.45882, 0.40784], [1 / 255] * 3)]
        )

    def item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rec = self.dataset.record(index)
        with Image.open(rec.path) as im:  # CocoDetection / VOCDetection: PIL, RGB
            picture = im.convert("RGB")
        w, h = picture.size
        target = {
            "boxes": tv_tensors.BoundingBoxes(rec.boxes, format="XYXY", canvas_size=(h, w)),
            "labels": rec.labels,
        }
        image, target = self.transform(picture, target)
        hh, ww = image.shape[-2:]
        boxes = target["boxes"] / torch.tensor([ww, hh, ww, hh])
        return self.model_transform(image), boxes

    def batch(self, indices: list[int], epoch: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(epoch * 1_000_003 + indices[0])
        items = [self.item(i) for i in indices]
        return torch.stack([x for x, _ in items]), [b for _, b in items]


class Albumentations:
    """albumentations' nearest equivalent of the SSD policy, on OpenCV arrays."""

    name = "albumentations"

    def __init__(self, dataset: VOCDataset) -> None:
        import albumentations as A
        import cv2

        cv2.setNumThreads(1)
        self.cv2 = cv2
        self.dataset = dataset
        jitter = [
            A.ColorJitter(brightness=(0.875, 1.125), contrast=0, saturation=0, hue=0, p=0.5),
            A.ColorJitter(brightness=0, contrast=(0.5, 1.5), saturation=0, hue=0, p=0.5),
            A.ColorJitter(brightness=0, contrast=0, saturation=(0.5, 1.5), hue=0, p=0.5),
            A.ColorJitter(brightness=0, contrast=0, saturation=0, hue=(-0.05, 0.05), p=0.5),
            A.ChannelShuffle(p=0.5),
        ]
        self.transform = A.Compose(
            [
                *jitter,
                A.CropAndPad(percent=(0.0, 1.5), keep_size=False, sample_independently=True, fill=MEAN_RGB, p=0.5),
                A.BBoxSafeRandomCrop(p=1.0),
                A.HorizontalFlip(p=0.5),
                A.Resize(SIZE, SIZE),
                A.Normalize(mean=[0.48235, 0.45882, 0.40784], std=[1 / 255] * 3, max_pixel_value=255.0),
            ],
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], min_area=1.0, clip=True),
        )

    def batch(self, indices: list[int], epoch: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        images, boxes = [], []
        for i in indices:
            rec = self.dataset.record(i)
            picture = self.cv2.cvtColor(self.cv2.imread(rec.path, self.cv2.IMREAD_COLOR), self.cv2.COLOR_BGR2RGB)
            out = self.transform(image=picture, bboxes=rec.boxes.numpy(), labels=rec.labels.numpy())
            images.append(torch.from_numpy(out["image"]).permute(2, 0, 1))
            boxes.append(torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)) / SIZE)
        return torch.stack(images), boxes


class _NumpyRandom:
    """numpy.random for ssd.pytorch's augmentations, whose `random.choice` of a ragged tuple of crop
    options modern numpy refuses: that one call picks with Python's `random` (same distribution)."""

    def __init__(self) -> None:
        import random

        self._choice = random.Random(0).choice

    def __getattr__(self, name: str) -> Any:
        return getattr(np.random, name)

    def choice(self, options: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(options, tuple) and not args and not kwargs:
            return self._choice(options)
        return np.random.choice(options, *args, **kwargs)


class SSDPyTorch:
    """ssd.pytorch's `SSDAugmentation(300)` (imported from a checkout), cv2 BGR decode, as its VOC loader."""

    name = "ssd.pytorch"

    def __init__(self, dataset: VOCDataset, checkout: Path) -> None:
        import cv2

        cv2.setNumThreads(1)
        self.cv2 = cv2
        sys.path.insert(0, str(checkout))
        module = importlib.import_module("utils.augmentations")
        module.random = _NumpyRandom()
        self.transform = module.SSDAugmentation(SIZE, (104, 117, 123))
        self.dataset = dataset

    def batch(self, indices: list[int], epoch: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        images, boxes = [], []
        for i in indices:
            rec = self.dataset.record(i)
            picture = self.cv2.imread(rec.path)
            h, w = picture.shape[:2]
            scaled = (rec.boxes / torch.tensor([w, h, w, h])).numpy()  # its loader hands boxes over in [0, 1]
            img, b, _ = self.transform(picture, scaled, rec.labels.numpy())
            images.append(torch.from_numpy(img[:, :, (2, 1, 0)].copy()).permute(2, 0, 1))  # as its pull_item
            boxes.append(torch.as_tensor(np.asarray(b, dtype=np.float32).reshape(-1, 4)))
        return torch.stack(images), boxes


# ---------------------------------------------------------------- measuring


@contextlib.contextmanager
def threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def rates(contenders: list[Any], n_pictures: int, rounds: int) -> dict[str, float]:
    """Median pictures/s of each contender over `rounds` interleaved rounds of `n_pictures` pictures."""
    order = list(range(n_pictures))
    batches = [order[k : k + BATCH] for k in range(0, n_pictures - BATCH + 1, BATCH)]
    times: dict[str, list[float]] = defaultdict(list)
    for c in contenders:  # warm-up
        c.batch(batches[0], 99)
    for r in range(rounds):
        for c in contenders:
            start = time.perf_counter()
            for b in batches:
                c.batch(b, r)
            times[c.name].append(time.perf_counter() - start)
    done = len(batches) * BATCH
    return {name: done / statistics.median(ts) for name, ts in times.items()}


class Timed:
    """Wraps a callable and adds its seconds to `acc[name]`."""

    def __init__(self, fn: Callable[..., Any], name: str, acc: dict[str, float]) -> None:
        self.fn, self.name, self.acc = fn, name, acc

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.acc[self.name] += time.perf_counter() - start


_STAGE = {
    "RandomPhotometricDistort": "photometric",
    "FastPhotometricDistort": "photometric",
    "RandomZoomOut": "zoom out",
    "BatchedIoUCrop": "IoU crop (search + crop)",
    "RandomIoUCrop": "IoU crop (search + crop)",
    "RandomHorizontalFlip": "flip",
    "ClampBoundingBoxes": "box clean-up",
    "SanitizeBoundingBoxes": "box clean-up",
    "ConvertBoundingBoxFormat": "box clean-up",
    "ToImage": "to tensor, float",
    "ToDtype": "to tensor, float",
    "ToPureTensor": "to tensor, float",
    "Resize": "resize + normalise",
    "Normalize": "resize + normalise",
}


def _timed_compose(compose: v2.Compose, acc: dict[str, float]) -> v2.Compose:
    return v2.Compose([Timed(t, _STAGE.get(type(t).__name__, type(t).__name__), acc) for t in compose.transforms])


def stages(ours: SSDKit, ref: TorchvisionReference, n_pictures: int) -> dict[str, dict[str, float]]:
    """Milliseconds per picture of each stage of ssdkit's and torchvision's pipelines (one pass)."""
    out: dict[str, dict[str, float]] = {}
    order = list(range(n_pictures))
    batches = [order[k : k + BATCH] for k in range(0, n_pictures - BATCH + 1, BATCH)]

    acc: dict[str, float] = defaultdict(float)
    items, pre, ds = ours.items, ours.items.preprocessor, ours.items.dataset
    saved = (items.transform, pre.resize, pre.normalize, ds.load_image, ours.collate)
    items.transform = _timed_compose(saved[0], acc)
    pre.resize, pre.normalize = Timed(saved[1], "resize + normalise", acc), Timed(saved[2], "resize + normalise", acc)
    ds.load_image = Timed(saved[3], "decode", acc)
    ours.collate = Timed(saved[4], "batching", acc)
    start = time.perf_counter()
    try:
        for k, b in enumerate(batches):
            ours.batch(b, 1000 + k)
    finally:
        items.transform, pre.resize, pre.normalize = saved[0], saved[1], saved[2]
        del ds.load_image  # the instance attribute shadowed the class's method
        ours.collate = saved[4]
    acc["total"] = time.perf_counter() - start
    out[ours.name] = dict(acc)

    acc = defaultdict(float)
    saved_t, saved_m = ref.transform, ref.model_transform
    ref.transform, ref.model_transform = _timed_compose(saved_t, acc), _timed_compose(saved_m, acc)
    real_open = Image.open

    def timed_open(*a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        im = real_open(*a, **k)
        im.load()
        acc["decode"] += time.perf_counter() - start
        return im

    start = time.perf_counter()
    Image.open = timed_open  # type: ignore[assignment]
    try:
        for b in batches:
            items_ = [ref.item(i) for i in b]
            t1 = time.perf_counter()
            torch.stack([x for x, _ in items_])
            acc["batching"] += time.perf_counter() - t1
    finally:
        Image.open = real_open  # type: ignore[assignment]
        ref.transform, ref.model_transform = saved_t, saved_m
    acc["total"] = time.perf_counter() - start
    out[ref.name] = dict(acc)
    done = len(batches) * BATCH
    return {name: {k: 1000 * v / done for k, v in d.items()} for name, d in out.items()}


def box_stats(contenders: list[Any], n_pictures: int, epochs: int) -> dict[str, dict[str, float]]:
    """Boxes after augmentation (normalised xyxy), pooled over `epochs` passes: per-picture counts and sizes."""
    order = list(range(n_pictures))
    batches = [order[k : k + BATCH] for k in range(0, n_pictures - BATCH + 1, BATCH)]
    out = {}
    for c in contenders:
        counts, sizes, aspects, centres = [], [], [], []
        for e in range(epochs):
            for b in batches:
                _, boxes = c.batch(b, 5000 + e)
                for bx in boxes:
                    bx = bx.reshape(-1, 4).float()
                    counts.append(len(bx))
                    wh = (bx[:, 2:] - bx[:, :2]).clamp(min=1e-6)
                    sizes.append(wh.prod(1).sqrt())
                    aspects.append(wh[:, 0] / wh[:, 1])
                    centres.append((bx[:, 0] + bx[:, 2]) / 2)
        size = torch.cat(sizes).numpy()
        out[c.name] = {
            "pictures": len(counts),
            "boxes / picture": float(np.mean(counts)),
            "pictures without boxes": float(np.mean(np.asarray(counts) == 0)),
            "size p10": float(np.quantile(size, 0.1)),
            "size median": float(np.median(size)),
            "size p90": float(np.quantile(size, 0.9)),
            "aspect median": float(np.median(torch.cat(aspects).numpy())),
            "centre x mean": float(torch.cat(centres).mean()),
            "_sizes": size,
        }
    return out


def ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (largest gap between the empirical CDFs)."""
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


# ---------------------------------------------------------------- report


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{cpu}; {os.cpu_count()} logical cores; Python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, Pillow {Image.__version__}; load average at start {load}"
    )


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voc", type=Path, help="a VOC root to read (default: generated VOC-format shapes)")
    parser.add_argument("--pictures", type=int, default=128, help="pictures per round (a multiple of 32)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median counts")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time at")
    parser.add_argument("--ssd-pytorch", type=Path, help="a checkout of amdegroot/ssd.pytorch to compare with")
    parser.add_argument("--no-albumentations", action="store_true")
    parser.add_argument("--stat-epochs", type=int, default=8, help="passes for the box statistics")
    args = parser.parse_args(argv)

    tmp = None
    if args.voc is None:
        tmp = tempfile.TemporaryDirectory(prefix="ssdkit-bench-")
        root = write_shapes(
            Path(tmp.name) / "VOC", "voc", num_images=args.pictures, val_images=0, seed=7, min_objects=1
        )
        log(f"wrote {args.pictures} VOC-format JPEGs of 500x375 under {root}")
        dataset = VOCDataset(VOCConfig(root=root, class_names=["circle", "square", "triangle"]))
        source = f"{args.pictures} generated VOC-format JPEGs, 500x375, 1-6 shapes each (as VOC, no picture without boxes) (`ssdkit data make-shapes`)"
    else:
        dataset = VOCDataset(VOCConfig(root=args.voc))
        source = f"the first {args.pictures} pictures of {args.voc}"
    ours = SSDKit(dataset, AugmentConfig())
    ref = TorchvisionReference(dataset)
    contenders: list[Any] = [ours, ref]
    if not args.no_albumentations:
        try:
            contenders.append(Albumentations(dataset))
        except ImportError:
            log("albumentations is not installed (pip install .[bench]): left out")
    if args.ssd_pytorch is not None:
        contenders.append(SSDPyTorch(dataset, args.ssd_pytorch))

    report = [f"Measured {time.strftime('%Y-%m-%d')} on: {machine()}.", "", f"Pictures: {source}.", ""]
    header = ["contender"] + [f"pictures/s, {t} thread{'s' if t > 1 else ''}" for t in args.threads]
    header += ["vs torchvision (1 thread)", f"cores for {GPU_RATE:,.0f} pictures/s"]
    measured: dict[int, dict[str, float]] = {}
    for t in args.threads:
        log(f"timing at {t} thread(s): {args.rounds} rounds of {args.pictures} pictures per contender")
        with threads(t):
            measured[t] = rates(contenders, args.pictures, args.rounds)
    base = measured[args.threads[0]]
    rows = []
    for c in contenders:
        one = base[c.name]
        row = [c.name] + [f"{measured[t][c.name]:.1f}" for t in args.threads]
        row += [f"**{one / base[ref.name]:.2f}x**", f"{GPU_RATE / one:.0f}"]
        rows.append(row)
    report += [table(header, rows), ""]

    log("where the time goes")
    with threads(1):
        split = stages(ours, ref, args.pictures)
    names = ["decode", "photometric", "zoom out", "IoU crop (search + crop)", "flip", "box clean-up"]
    names += ["to tensor, float", "resize + normalise", "batching"]
    srows = [[n] + [f"{split[c][n]:.2f}" if n in split[c] else "-" for c in split] for n in names]
    srows.append(["**total**"] + [f"**{split[c]['total']:.2f}**" for c in split])
    report += [table(["ms per picture, 1 thread"] + list(split), srows), ""]

    log("box statistics after augmentation")
    with threads(1):
        stats = box_stats(contenders, args.pictures, args.stat_epochs)
    keys = [k for k in stats[ours.name] if not k.startswith("_")]
    brows = [[k] + [f"{stats[c.name][k]:.3f}" if k != "pictures" else str(stats[c.name][k]) for c in contenders]
             for k in keys]  # fmt: skip
    brows.append(
        ["KS distance of sizes to ssdkit's"]
        + [f"{ks(stats[ours.name]['_sizes'], stats[c.name]['_sizes']):.3f}" for c in contenders]  # fmt: skip
    )
    report += [table(["boxes after augmentation (normalised)"] + [c.name for c in contenders], brows)]
    print("\n".join(report))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
