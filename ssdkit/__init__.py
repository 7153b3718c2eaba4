"""ssdkit: the Single Shot MultiBox Detector, from typed configs and swappable parts.

Public API::

    import ssdkit
    cfg = ssdkit.presets.get("ssd300_vgg16")      # or ssdkit.SSDConfig.from_file("my.yaml")
    model = ssdkit.build_model(cfg)                # an ssdkit.SSD (torch.nn.Module)
    dets = model.predict("street.jpg")             # boxes in the picture's own pixels
    coco = ssdkit.create_model("ssdlite320_mobilenet_v3", weights="coco")  # torchvision's COCO weights
    mine = ssdkit.load("runs/my_run")              # a trained run's best checkpoint, ready to predict
    ssdkit.draw("street.jpg", dets, path="out.png")
    result = ssdkit.train("my_run.yaml")           # a run config: model, data, train, eval
    scores = ssdkit.evaluate(model, ssdkit.data.build_loader(run.data, run.model, "val"))
"""

import importlib.util as _util

# Where torch is not installed (a deployment that only runs exported files), `import ssdkit` still
# works and offers `ssdkit.runtime` (numpy, pillow, onnxruntime); everything else needs torch.
try:
    _HAS_TORCH = _util.find_spec("torch") is not None
except (ValueError, ImportError):  # torch blocked on purpose (sys.modules["torch"] = None, an import hook)
    _HAS_TORCH = False

if _HAS_TORCH:
    from ssdkit import (  # noqa: F401  (register built-ins)
        backbones,
        coders,
        data,
        heads,
        losses,
        matchers,
        postprocess,
        presets,
        priors,
        registry,  # noqa: F401  (first: the component modules register into it)
    )
    from ssdkit.build import build_model
    from ssdkit.config import PreprocessConfig, SSDConfig
    from ssdkit.draw import draw
    from ssdkit.hub import create_model
    from ssdkit.model import SSD
    from ssdkit.sources import load

__version__ = "0.1.0"

__all__ = [
    "SSD",
    "SSDConfig",
    "PreprocessConfig",
    "build_model",
    "create_model",
    "load",
    "draw",
    "presets",
    "registry",
    "data",
    "train",
    "evaluate",
    "runtime",
    "__version__",
]


def __getattr__(name: str):
    # Imported on first use, so `import ssdkit` does not pay for the trainer or the metrics:
    # `ssdkit.train(cfg)` (the package is callable) and `ssdkit.evaluate(model, loader)`.
    import importlib

    if name == "train":
        return importlib.import_module("ssdkit.train")
    if name == "evaluate":
        return importlib.import_module("ssdkit.evaluation").evaluate
    if name == "runtime":
        return importlib.import_module("ssdkit.runtime")
    if not _HAS_TORCH and name in __all__:
        raise ImportError(
            f"ssdkit.{name} needs torch, which this Python lacks; ssdkit.runtime runs exported files without it"
        )
    raise AttributeError(f"module 'ssdkit' has no attribute {name!r}")
