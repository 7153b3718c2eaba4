"""What int8 costs in accuracy: a trained model's detections in fp32 and int8 on the same held-out pictures.

    .venv/bin/ssdkit demo                                          # trains ssdkit-demo/run/last.pt
    .venv/bin/python benchmarks/int8_accuracy.py --weights ssdkit-demo/run/last.pt

Exports the run config's model (default: the shipped `demo`) to ONNX with post-processing, quantises
it (`ssdkit.export.quantize_onnx`, calibrated on the run's training pictures, never on the held-out
ones), runs both files through `ssdkit.runtime` on the run's `data.val` pictures and prints VOC
mAP@0.5 and COCO mAP@[.5:.95] of PyTorch `model.predict`, onnxruntime fp32 and onnxruntime int8.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import ssdkit
import ssdkit.runtime
from ssdkit.config import RunConfig, config_path
from ssdkit.data.build import build_dataset
from ssdkit.evaluation.metrics.coco import coco_map
from ssdkit.evaluation.metrics.voc import voc_map
from ssdkit.export import calibration_batches, quantize_onnx, to_onnx
from ssdkit.io.weights import load_weights


def scores(preds: list[dict], gts: list[dict]) -> tuple[float, float]:
    preds = [{k: torch.as_tensor(np.asarray(d[k])) for k in ("boxes", "scores", "labels")} for d in preds]
    return voc_map(preds, gts)["map"], coco_map(preds, gts)["map"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="demo", help="run config (file or shipped name); default: demo")
    parser.add_argument("--weights", required=True, help="trained weights or checkpoint of that config's model")
    parser.add_argument("--calibration-pictures", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = RunConfig.from_file(config_path(args.config))
    model = ssdkit.build_model(run.model).eval()
    load_weights(model, args.weights)
    val = build_dataset(run.data.val)
    items = [val[i] for i in range(len(val))]
    pictures = [img.permute(1, 2, 0).numpy() for img, _ in items]  # HWC uint8, what a user passes
    gts = [{"boxes": t["boxes"].as_subclass(torch.Tensor), "labels": t["labels"]} for _, t in items]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = to_onnx(model, Path(tmp) / "fp32.onnx", with_postprocess=True)
        start = time.perf_counter()
        int8 = quantize_onnx(
            fp32, Path(tmp) / "int8.onnx", calibration_batches(model, args.config, args.calibration_pictures)
        )
        took = time.perf_counter() - start
        rows.append(("ssdkit PyTorch `model.predict`", scores(model.predict(pictures), gts)))
        for name, path in (("onnxruntime fp32", fp32), ("onnxruntime int8", int8)):
            detector = ssdkit.runtime.load(path, threads=args.threads)
            rows.append((name, scores(detector.predict(pictures), gts)))
    print(
        f"{len(pictures)} held-out pictures ({args.config}'s data.val); int8 calibrated on "
        f"{args.calibration_pictures} training pictures in {took:.0f} s\n"
    )
    print("| path | VOC mAP@0.5 | COCO mAP@[.5:.95] |\n| --- | --- | --- |")
    for name, (voc, coco) in rows:
        print(f"| {name} | {voc:.3f} | {coco:.3f} |")


if __name__ == "__main__":
    main()
