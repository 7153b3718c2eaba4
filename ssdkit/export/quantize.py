"""Static int8 quantisation of an exported ONNX file with onnxruntime (QDQ format).

    from ssdkit.export import quantize_onnx, calibration_batches
    quantize_onnx("detector.onnx", "detector.int8.onnx", calibration_batches(model, "demo", count=64))

Weights are quantised per output channel (int8, symmetric), activations per tensor (uint8) from
ranges observed on calibration pictures (min/max). Only the network is quantised: the nodes that
feed a convolution (backbone and head); decoding, softmax and NMS stay float32, so the
post-processing is exactly the fp32 file's. docs/benchmarks.md gives the accuracy cost measured
on the demo model, and the speed.

Why onnxruntime's `quant_pre_process` failed on SSD300-VGG16: see `_prepare`.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ssdkit.io.picture_files import PICTURE_SUFFIXES, pictures_in

__all__ = ["quantize_onnx", "calibration_batches", "calibration_pictures"]


def _network_nodes(graph: Any) -> list[str]:
    """Names of the Conv nodes and every node upstream of one: backbone and head, not post-processing."""
    producer = {out: node for node in graph.node for out in node.output}
    keep: dict[str, Any] = {}
    stack = [node for node in graph.node if node.op_type == "Conv"]
    while stack:
        node = stack.pop()
        if node.name in keep:
            continue
        keep[node.name] = node
        stack.extend(producer[name] for name in node.input if name in producer)
    return [node.name for node in graph.node if node.name in keep]


def _prepare(source: Path, folder: Path) -> Path:
    """The file to quantise: shape-inferred by ONNX, with unique node names (`nodes_to_quantize` needs them).

    Not onnxruntime's `quant_pre_process`: its symbolic shape inference has rules for ReduceSum,
    ReduceMean and ReduceProd but none for ReduceL2, which is how torch exports the L2 norm of
    SSD300-VGG16's conv4_3 (`F.normalize`); the norm's shape stays unknown and the inference stops
    with a TypeError at the Expand after it (onnxruntime 1.32). ONNX's own shape inference handles
    the graph, and torch's exporter already records the shapes.
    """
    import onnx

    proto = onnx.load(str(source))
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    proto = onnx.shape_inference.infer_shapes(proto)
    path = folder / "prepared.onnx"
    onnx.save(proto, str(path))
    return path


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over an iterable of `[B, 3, H, W]` float32 batches."""

    def __init__(self, batches: Iterable[np.ndarray], input_name: str) -> None:
        self._batches: Iterator[np.ndarray] = iter(batches)
        self._name = input_name
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        self.count += 1
        return {self._name: np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:  # called by newer onnxruntime versions; one pass is all min/max needs
        pass


def quantize_onnx(
    source: str | Path, output: str | Path, batches: Iterable[np.ndarray], *, per_channel: bool = True
) -> Path:
    """Quantise the ONNX file `source` (an ssdkit export, network alone or whole detector) to int8
    QDQ at `output` (written atomically), calibrated on `batches` (preprocessed `[B, 3, H, W]`
    float32 network inputs, as `model.preprocessor` makes them); returns `output`."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from ssdkit.io.paths import atomic_write

    source, output = Path(source), Path(output)
    if not source.is_file():
        raise FileNotFoundError(f"no such ONNX file: {source}")
    with tempfile.TemporaryDirectory(prefix="ssdkit-int8-") as tmp:
        prepared = _prepare(source, Path(tmp))
        proto = onnx.load(str(prepared), load_external_data=False)
        nodes = _network_nodes(proto.graph)
        if not nodes:
            raise ValueError(f"{source}: no convolution to quantise")
        reader = _Reader(batches, proto.graph.input[0].name)
        result = Path(tmp) / "int8.onnx"
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # onnxruntime logs "consider pre-processing" (see _prepare)
        try:
            quantize_static(
                str(prepared),
                str(result),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_quantize=nodes,
                extra_options={"CalibTensorRangeSymmetric": False},
            )
        finally:
            logging.getLogger().setLevel(quiet)
        if reader.count == 0:
            raise ValueError("no calibration pictures: give a data set or a folder with pictures")
        quantised = onnx.load(str(result))
        # The fp32 file's metadata (ssdkit version, config, preprocessing) and a note of what changed.
        props = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
        props["ssdkit_quantisation"] = (
            f"int8 QDQ (onnxruntime {_ort_version()}): weights int8 per {'channel' if per_channel else 'tensor'}, "
            f"activations uint8 per tensor (min/max over {reader.count} calibration batches); post-processing float32"
        )
        onnx.helper.set_model_props(quantised, props)
        data = quantised.SerializeToString()
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, lambda f: f.write(data))
    return output


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def calibration_pictures(source: str | Path, count: int) -> Iterator[Any]:
    """Up to `count` pictures from `source`: a folder of picture files (sorted by name), or a run
    config (a file, or a shipped example's name such as `demo`) whose `data.train` data set is read
    without augmentation."""
    path = Path(source)
    if path.is_dir():
        files = pictures_in(path)
        if not files:
            raise ValueError(f"{path}: no pictures ({', '.join(PICTURE_SUFFIXES)}) to calibrate on")
        yield from files[:count]
        return
    from ssdkit.config import RunConfig, config_path
    from ssdkit.data.build import build_dataset

    run = RunConfig.from_file(config_path(source))
    dataset = build_dataset(run.data.train)  # not val: that stays held out for measuring the cost
    for i in range(min(count, len(dataset))):
        yield dataset[i][0]


def calibration_batches(model: Any, source: str | Path, count: int = 64, batch_size: int = 8) -> Iterator[np.ndarray]:
    """`calibration_pictures(source, count)` preprocessed by `model.preprocessor`, in `[B, 3, H, W]`
    float32 batches."""
    from ssdkit.preprocess import to_tensor

    batch: list[np.ndarray] = []
    for picture in calibration_pictures(source, count):
        batch.append(model.preprocessor(to_tensor(picture)).numpy())
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)
