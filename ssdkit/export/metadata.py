"""What an exported file records about itself: ssdkit version, config, input and outputs.

ONNX files keep these strings in their metadata_props, TorchScript files as the extra file
"ssdkit.json"; `read_metadata` reads either without running anything from the file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["export_metadata", "read_metadata", "TORCHSCRIPT_EXTRA_FILE"]

TORCHSCRIPT_EXTRA_FILE = "ssdkit.json"


def export_metadata(model: nn.Module, with_postprocess: bool) -> dict[str, str]:
    """str -> str entries describing an export of `model` (an `ssdkit.SSD`)."""
    from ssdkit import __version__

    cfg = getattr(model, "config", None)
    h, w = model.image_size
    if with_postprocess:
        k = model.postprocess.max_detections
        outputs = (
            f"boxes [B, {k}, 4] float32 xyxy normalised to [0, 1] of the network input; scores [B, {k}] float32; "
            f"labels [B, {k}] int64 (0 = padding); num_detections [B] int64: row b's first num_detections[b] "
            "entries are its detections, in decreasing score order"
        )
    else:
        outputs = f"loc [B, P, 4] float32 offsets from the priors; logits [B, P, {model.num_classes}] float32"
    pre = getattr(model, "preprocessor", None)
    return {
        "ssdkit_version": __version__,
        "ssdkit_preprocess": json.dumps(pre.describe()) if hasattr(pre, "describe") else "",
        "ssdkit_config": cfg.model_dump_json() if hasattr(cfg, "model_dump_json") else "",
        "ssdkit_input": f"images [B, 3, {h}, {w}] float32, preprocessed as the config's `preprocess` says",
        "ssdkit_outputs": outputs,
    }


def _parsed(props: dict[str, str], path: Path) -> dict[str, Any]:
    if "ssdkit_version" not in props:
        raise ValueError(f"{path}: not an ssdkit export (it records no ssdkit_version)")
    return {
        "ssdkit_version": props["ssdkit_version"],
        "config": json.loads(props.get("ssdkit_config") or "null"),
        "input": props.get("ssdkit_input", ""),
        "outputs": props.get("ssdkit_outputs", ""),
        "preprocess": json.loads(props.get("ssdkit_preprocess") or "null"),
    }


def read_metadata(path: str | Path) -> dict[str, Any]:
    """{"ssdkit_version", "config" (a dict, or None), "input", "outputs", "preprocess" (a dict, or None)}
    of an exported ONNX or TorchScript file. TorchScript files are read as the zip archives they are;
    nothing is loaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such exported model: {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith(f"/extra/{TORCHSCRIPT_EXTRA_FILE}")), None)
            props = json.loads(archive.read(name)) if name else {}
        return _parsed(props, path)
    from ssdkit.export.extra import require_export_extra

    require_export_extra("onnx")
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ValueError(f"{path}: neither a TorchScript archive nor a readable ONNX file: {exc}") from None
    return _parsed({p.key: p.value for p in proto.metadata_props}, path)
