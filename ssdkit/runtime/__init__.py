"""Run an exported detector with onnxruntime: numpy, pillow and onnxruntime only (no torch).

    import ssdkit.runtime
    detector = ssdkit.runtime.load("detector.onnx")      # ssdkit export ... --with-postprocess
    dets = detector.predict("street.jpg")                # or a PIL picture, an HWC array, a list

`predict` keeps `model.predict`'s contract: one dict per picture (a single dict for a single
picture) with boxes `[N, 4]` xyxy in that picture's own pixels, scores `[N]`, labels `[N]` and
names, here as numpy arrays. Pictures are preprocessed as the file's metadata says, with
`ssdkit.preprocess.Preprocessor`'s arithmetic (`ssdkit.runtime.preprocess`); tests/runtime/test_runtime.py
checks the detections against `model.predict`'s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ssdkit.io.picture_files import check_batch_size, picture_items
from ssdkit.runtime.pictures import to_array
from ssdkit.runtime.preprocess import ArrayPreprocessor

__all__ = ["OnnxDetector", "load", "to_array", "ArrayPreprocessor"]

OUTPUTS = ["boxes", "scores", "labels", "num_detections"]


def _preprocess_description(meta: dict[str, str], path: Path) -> dict[str, Any]:
    if meta.get("ssdkit_preprocess"):
        return json.loads(meta["ssdkit_preprocess"])
    # Files exported before the description was written: the config holds the same settings.
    config = json.loads(meta.get("ssdkit_config") or "null")
    if not config:
        raise ValueError(f"{path}: records no preprocessing (not an ssdkit export?); export it again with ssdkit")
    size = config["image_size"]
    return {**config["preprocess"], "image_size": [size, size] if isinstance(size, int) else size}


class OnnxDetector:
    """An exported detector (`to_onnx(..., with_postprocess=True)`) in an onnxruntime session."""

    def __init__(self, path: str | Path, *, threads: int | None = None, providers: list[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("ssdkit.runtime needs onnxruntime: pip install onnxruntime") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such exported model: {self.path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001  (onnxruntime's own exception types, e.g. InvalidProtobuf)
            raise ValueError(f"{self.path}: onnxruntime cannot open it ({type(exc).__name__}: {exc})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "ssdkit_version" not in meta:
            raise ValueError(f"{self.path}: not an ssdkit export (it records no ssdkit_version)")
        outputs = [o.name for o in self.session.get_outputs()]
        if outputs != OUTPUTS:
            raise ValueError(
                f"{self.path} outputs {outputs}, not the whole detector's {OUTPUTS}; "
                "export it with post-processing: ssdkit export ... --with-postprocess"
            )
        self.preprocessor = ArrayPreprocessor(_preprocess_description(meta, self.path))
        config = json.loads(meta.get("ssdkit_config") or "null") or {}
        num_classes = int(config.get("num_classes", 0))
        self.class_names = config.get("class_names") or [str(i) for i in range(1, max(num_classes, 1))]
        self.input_name = self.session.get_inputs()[0].name

    @property
    def image_size(self) -> tuple[int, int]:
        return self.preprocessor.image_size

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Preprocessed `[B, 3, H, W]` float32 -> [boxes, scores, labels, num_detections] as exported."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})

    def predict(self, pictures: Any, batch_size: int = 8) -> Any:
        """Detect objects, as `model.predict` does; returns one dict per picture (a single dict for a
        single picture): boxes `[N, 4]` float32 xyxy in that picture's pixels, scores `[N]` float32,
        labels `[N]` int64, names (list of str)."""
        batch_size = check_batch_size(batch_size)
        items, single = picture_items(pictures)
        results = []
        for start in range(0, len(items), batch_size):
            pixels = [to_array(im) for im in items[start : start + batch_size]]
            boxes, scores, labels, num = self.run(np.stack([self.preprocessor(p) for p in pixels]))
            for b, p in enumerate(pixels):
                n = int(num[b])
                h, w = p.shape[1], p.shape[2]
                label = labels[b, :n].astype(np.int64)
                results.append(
                    {
                        "boxes": boxes[b, :n] * np.asarray([w, h, w, h], dtype=np.float32),
                        "scores": scores[b, :n],
                        "labels": label,
                        "names": [self._name(i) for i in label.tolist()],
                    }
                )
        return results[0] if single else results

    def _name(self, label: int) -> str:
        return self.class_names[label - 1] if 0 < label <= len(self.class_names) else str(label)

    def __repr__(self) -> str:
        return f"OnnxDetector({str(self.path)!r}, image_size={self.image_size})"


def load(path: str | Path, *, threads: int | None = None, providers: list[str] | None = None) -> OnnxDetector:
    """Open an exported ONNX detector for `predict`. threads: onnxruntime's intra-op threads
    (default: its own choice); providers: onnxruntime execution providers (default: CPU)."""
    return OnnxDetector(path, threads=threads, providers=providers)
