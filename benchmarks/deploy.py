"""Where SSD is deployed: end-to-end predict through PyTorch and onnxruntime (fp32, int8), matching +
loss for training, against torchvision, at a given number of threads.

Used by benchmarks/run.py (`--sections deploy,training`). Every contender gets the same decoded
pictures (HWC uint8 arrays, 480x640) and returns detections in the pictures' pixels; torchvision is
given them as 0..1 float CHW tensors, the conversion counted in its time.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from timing import interleaved
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import ssd300_vgg16, ssdlite320_mobilenet_v3_large

import ssdkit
import ssdkit.runtime
from ssdkit.export import quantize_onnx, to_onnx
from ssdkit.io.convert import from_torchvision

NUM_CLASSES = 21
PICTURE = (480, 640)


def _background_dominant(convs, num_classes: int) -> None:
    # A random head makes every class about equally likely, so that post-processing would handle
    # every (prior, class) pair; a trained model's scores look like this instead.
    with torch.no_grad():
        for conv in convs:
            conv.weight.mul_(0.3)
            conv.bias.view(-1, num_classes)[:, 0] = 6.5


def models(name: str) -> tuple[torch.nn.Module, ssdkit.SSD]:
    """(torchvision model, ssdkit model), random weights; the same weights where ssdkit converts them (VGG16)."""
    torch.manual_seed(0)
    if name == "SSD300-VGG16":
        tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_CLASSES).eval()
        _background_dominant(tv.head.classification_head.module_list, NUM_CLASSES)
        ours = ssdkit.build_model(ssdkit.presets.get("ssd300_vgg16_coco", num_classes=NUM_CLASSES)).eval()
        ours.load_state_dict(from_torchvision(tv.state_dict()), strict=True)
        return tv, ours
    tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES).eval()
    _background_dominant([m[-1] for m in tv.head.classification_head.module_list], NUM_CLASSES)
    ours = ssdkit.build_model(ssdkit.presets.get("ssdlite320_mobilenet_v3", num_classes=NUM_CLASSES)).eval()
    _background_dominant([m[-1] for m in ours.head.cls], NUM_CLASSES)
    return tv, ours


def pictures(n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(*PICTURE, 3), dtype=np.uint8) for _ in range(n)]


def gflop_per_picture(model: torch.nn.Module, size: tuple[int, int]) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, *size))
    return counter.get_total_flops() / 1e9


def conv_rate(repeats: int = 5) -> float:
    """GFLOP/s of a plain large float32 convolution (3x3, 256 -> 256 channels, 8 x 38 x 38) in PyTorch."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).eval()
    x = torch.randn(8, 256, 38, 38)
    flop = 2 * 256 * 256 * 9 * 38 * 38 * 8
    with torch.no_grad():
        t = interleaved({"conv": lambda: conv(x)}, repeats)["conv"]
    return flop / t / 1e9


class Contenders:
    """The five ways to get detections from pictures, for one model, at a given thread count."""

    def __init__(self, name: str, folder: Path, calibration: int = 8) -> None:
        self.name = name
        self.tv, self.ours = models(name)
        self.ours_cl = copy.deepcopy(self.ours).to(memory_format=torch.channels_last)
        self.fp32 = to_onnx(self.ours, folder / f"{name}.onnx", with_postprocess=True)
        batches = [
            np.stack([self.ours.preprocessor(torch.from_numpy(p).permute(2, 0, 1).float()).numpy()])
            for p in pictures(calibration, seed=7)
        ]
        start = time.perf_counter()
        self.int8 = quantize_onnx(self.fp32, folder / f"{name}.int8.onnx", batches)
        self.quantise_s = time.perf_counter() - start
        self.gflop = gflop_per_picture(self.ours, self.ours.image_size)

    def functions(self, threads: int, batch: int) -> dict[str, Callable[[], object]]:
        torch.set_num_threads(threads)
        fp32 = ssdkit.runtime.load(self.fp32, threads=threads)
        int8 = ssdkit.runtime.load(self.int8, threads=threads)
        imgs = pictures(batch)

        def torchvision_predict():
            with torch.no_grad():
                return self.tv([torch.from_numpy(p).permute(2, 0, 1).float() / 255 for p in imgs])

        return {
            "torchvision fp32": torchvision_predict,
            "ssdkit PyTorch (default, NCHW)": lambda: self.ours.predict(imgs, batch_size=batch),
            "ssdkit PyTorch channels_last": lambda: self.ours_cl.predict(imgs, batch_size=batch),
            "ssdkit onnxruntime fp32": lambda: fp32.predict(imgs, batch_size=batch),
            "ssdkit onnxruntime int8": lambda: int8.predict(imgs, batch_size=batch),
        }


def bench_predict(names: list[str], threads: list[int], repeats: dict[int, int], log=print) -> tuple[str, list[str]]:
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            log(f"deploy: {name}: export and int8 ...")
            c = Contenders(name, Path(tmp))
            notes.append(
                f"{name}: {c.gflop:.2f} GFLOP per picture (ssdkit's network); int8 quantisation took {c.quantise_s:.0f} s."
            )
            for t in threads:
                torch.set_num_threads(t)
                rate = conv_rate()
                for batch, reps in repeats.items():
                    log(f"deploy: {name}, {t} thread(s), batch {batch} ...")
                    res = interleaved(c.functions(t, batch), reps)
                    base = res["torchvision fp32"]
                    best = min(res.values())
                    for contender, s in res.items():
                        ratio = base / s
                        rows.append(
                            [
                                name,
                                str(t),
                                str(batch),
                                contender,
                                f"{s * 1e3:.1f} ms",
                                f"{ratio:.2f}x" if contender.startswith("torchvision") else f"**{ratio:.2f}x**",
                            ]
                        )
                    notes.append(
                        f"{name}, {t} thread(s), batch {batch}: the fastest path ({min(res, key=res.get)}) runs "
                        f"{c.gflop * batch / best:.0f} GFLOP/s, {c.gflop * batch / best / rate:.0%} of the "
                        f"{rate:.0f} GFLOP/s a plain 3x3 256-channel float32 convolution reaches in PyTorch here."
                    )
    header = ["model", "threads", "batch", "path", "time per batch", "vs torchvision"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines), notes
