"""ssdkit: the Single Shot MultiBox Detector, from typed configs and swappable parts.

Public API::

    import ssdkit
    cfg = ssdkit.presets.get("ssd300_vgg16")      # or ssdkit.SSDConfig.from_file("my.yaml")
    model = ssdkit.build_model(cfg)                # an ssdkit.SSD (torch.nn.Module)
    dets = model.predict("street.jpg")             # boxes in the picture's own pixels
    ssdkit.draw("street.jpg", dets, path="out.png")
"""

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

__version__ = "0.1.0"

__all__ = [
    "SSD",
    "SSDConfig",
    "PreprocessConfig",
    "build_model",
    "create_model",
    "draw",
    "presets",
    "registry",
    "__version__",
]


def __getattr__(name: str):
    # `ssdkit.train(cfg)` (the package is callable) without importing the trainer on `import ssdkit`.
    if name == "train":
        import importlib

        return importlib.import_module("ssdkit.train")
    raise AttributeError(f"module 'ssdkit' has no attribute {name!r}")
