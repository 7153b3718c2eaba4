"""What a maintainer runs first on a GPU machine: SSD300 training speed, memory and input-pipeline share.

    .venv/bin/python benchmarks/gpu_check.py                 # 300 steps, batch 32, AMP, all cores as workers
    .venv/bin/python benchmarks/gpu_check.py --steps 100 --workers 8

Trains the `voc0712_ssd300` recipe (random weights: this measures speed, not accuracy) at batch 32 with
mixed precision on generated VOC-format data (`ssdkit data make-shapes`, 500x375 JPEGs, VOC's 20 class
names), with the recipe's full augmentation and the training loader, and prints: step time, pictures
per second, peak GPU memory, the share of the time the loop waited for the data loader, and the
post-processing time of a batch of 8. Without CUDA it says so and exits with status 0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="training steps timed (after --warmup)")
    parser.add_argument("--warmup", type=int, default=20, help="steps before timing starts (cuDNN autotuning, workers)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=min(_cores(), 32), help="loader workers (default: all cores)")
    parser.add_argument("--pictures", type=int, default=1024, help="generated VOC-format pictures")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing to measure (run it on a machine with an NVIDIA GPU).")
        return 0

    from ssdkit.categories import VOC_CLASSES
    from ssdkit.config import RunConfig
    from ssdkit.data import build_loader
    from ssdkit.data.folders import write_shapes
    from ssdkit.engine.optim import build_optimizer, scaled_lr

    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory(prefix="ssdkit-gpu-check-") as tmp:
        t0 = time.perf_counter()
        for year, n in (("VOC2007", args.pictures // 2), ("VOC2012", args.pictures - args.pictures // 2)):
            write_shapes(Path(tmp) / year, "voc", num_images=n, val_images=0, class_names=VOC_CLASSES, min_objects=1)
        print(f"wrote {args.pictures} VOC-format pictures (500x375) in {time.perf_counter() - t0:.0f} s")
        cfg = RunConfig.from_file(
            "voc0712_ssd300",
            [
                "model.backbone.weights=null",
                f"data.batch_size={args.batch}",
                f"data.num_workers={args.workers}",
                "eval.enabled=false",
            ],
            variables={"VOC_ROOT": tmp},
        )
        from ssdkit.build import build_model

        model = build_model(cfg.model).to(device).to(memory_format=torch.channels_last)
        optimizer = build_optimizer(
            model, cfg.train, lr=scaled_lr(cfg.train.lr, args.batch, cfg.train.lr_reference_batch)
        )
        scaler = torch.amp.GradScaler("cuda")
        loader = build_loader(cfg.data, cfg.model, "train", seed=0)
        print(
            f"SSD300-VGG16, batch {args.batch}, AMP, channels_last, {args.workers} loader workers, "
            f"{torch.cuda.get_device_name(device)}"
        )

        def batches():
            epoch = 0
            while True:
                loader.sampler.set_epoch(epoch)
                yield from loader
                epoch += 1

        stream = batches()
        waits, steps = [], []
        model.train()
        torch.cuda.reset_peak_memory_stats(device)
        for step in range(args.warmup + args.steps):
            start = time.perf_counter()
            images, targets, _ = next(stream)
            got = time.perf_counter()
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            targets = [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()}
                       for t in targets]  # fmt: skip
            with torch.autocast("cuda", dtype=torch.float16):
                loc, logits = model(images)
            loss = model.compute_loss(loc.float(), logits.float(), targets)["loss"]
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize(device)
            if step >= args.warmup:
                waits.append(got - start)
                steps.append(time.perf_counter() - start)
        total = sum(steps)
        print(f"step time: median {1000 * statistics.median(steps):.1f} ms, mean {1000 * total / len(steps):.1f} ms")
        print(f"pictures/s: {args.batch * len(steps) / total:.0f}")
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
        print(
            f"data-loader wait: {100 * sum(waits) / total:.1f}% of the time ({1000 * statistics.median(waits):.1f} ms median)"
        )
        print(f"last loss: {float(loss):.3f} (finite: {bool(torch.isfinite(loss))})")

        model.eval()
        with torch.no_grad():
            x = images[:8]
            with torch.autocast("cuda", dtype=torch.float16):
                loc, logits = model(x)
            loc, logits = loc.float(), logits.float()
            times = []
            for _ in range(25):
                torch.cuda.synchronize(device)
                t = time.perf_counter()
                model.detect(loc, logits)
                torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t)
        print(f"post-processing, batch 8: {1000 * statistics.median(times[5:]):.2f} ms (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
