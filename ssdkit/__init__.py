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
    run = ssdkit.RunConfig.from_file("my_run.yaml")
    scores = ssdkit.evaluate(model, ssdkit.data.build_loader(run.data, run.model, "val"))

The layers, lowest first (docs/architecture.md): `config` -> components (`backbones`, `heads`,
`priors`, `matchers`, `box_coders`, `losses`, `postprocess`) -> model (`build_model`, `SSD`,
`predict`) -> `data`, `engine`, `evaluation`, `export`, `analysis` -> `cli`. Every subpackage is
an attribute of `ssdkit`, imported on first use (PEP 562), so `import ssdkit` does not pay for the
trainer, the metrics or the exporters.
"""

import importlib as _importlib
import importlib.util as _util

# Where torch is not installed (a deployment that only runs exported files), `import ssdkit` still
# works and offers `ssdkit.runtime` (numpy, pillow, onnxruntime); everything else needs torch.
try:
    _HAS_TORCH = _util.find_spec("torch") is not None
except (ValueError, ImportError):  # torch blocked on purpose (sys.modules["torch"] = None, an import hook)
    _HAS_TORCH = False

if _HAS_TORCH:
    # The component packages register the built-in parts that configs name; data registers the data sets.
    from ssdkit import (  # noqa: F401
        backbones,
        box_coders,
        data,
        heads,
        losses,
        matchers,
        postprocess,
        presets,
        priors,
        registry,
    )
    from ssdkit.build import build_model
    from ssdkit.config import PreprocessConfig, RunConfig, SSDConfig
    from ssdkit.draw import draw
    from ssdkit.io.sources import create_model, load
    from ssdkit.io.weights import load_weights, save_weights
    from ssdkit.model import SSD

__version__ = "0.1.0"

# Subpackages and modules reached as attributes (`ssdkit.export.to_onnx`), imported on first use.
_SUBMODULES = (
    "analysis",
    "backbones",
    "box_coders",
    "boxes",
    "categories",
    "cli",
    "config",
    "data",
    "engine",
    "evaluation",
    "export",
    "heads",
    "io",
    "losses",
    "matchers",
    "postprocess",
    "predict",
    "preprocess",
    "presets",
    "priors",
    "registry",
    "runtime",
)
# Functions that live in a lazily imported module: name -> module.
_LAZY_FUNCTIONS = {"train": "ssdkit.engine.trainer", "evaluate": "ssdkit.evaluation.evaluate"}

__all__ = [
    "SSD",
    "SSDConfig",
    "PreprocessConfig",
    "RunConfig",
    "build_model",
    "create_model",
    "load",
    "load_weights",
    "save_weights",
    "draw",
    "train",
    "evaluate",
    "__version__",
    *_SUBMODULES,
]


def __getattr__(name: str):
    if name == "runtime" or (_HAS_TORCH and name in _SUBMODULES):
        return _importlib.import_module(f"ssdkit.{name}")
    if _HAS_TORCH and name in _LAZY_FUNCTIONS:
        value = getattr(_importlib.import_module(_LAZY_FUNCTIONS[name]), name)
        globals()[name] = value
        return value
    if not _HAS_TORCH and name in __all__:
        raise ImportError(
            f"ssdkit.{name} needs torch, which this Python lacks; ssdkit.runtime runs exported files without it"
        )
    raise AttributeError(f"module 'ssdkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
