"""Configs: the typed description of a detector (`SSDConfig`) and of a training run (`RunConfig`),
and reading them from YAML/JSON files. The lowest layer: it imports no component, model or engine
code (components register their config classes into `ssdkit.registry`, which configs look up).

    from ssdkit.config import SSDConfig, RunConfig
    model_cfg = SSDConfig.from_file("model.yaml")
    run_cfg = RunConfig.from_file("run.yaml", overrides=["train.lr=0.01"])
"""

from ssdkit.config.data import AugmentConfig, CropConfig, DataConfig, ExpandConfig, PhotometricConfig
from ssdkit.config.files import config_path, example_configs, read_config_file, write_config_file
from ssdkit.config.model import PreprocessConfig, SSDConfig, component
from ssdkit.config.run import EvalConfig, InitConfig, RunConfig, TrainConfig

__all__ = [
    "SSDConfig",
    "PreprocessConfig",
    "component",
    "RunConfig",
    "TrainConfig",
    "EvalConfig",
    "InitConfig",
    "DataConfig",
    "AugmentConfig",
    "PhotometricConfig",
    "ExpandConfig",
    "CropConfig",
    "read_config_file",
    "write_config_file",
    "config_path",
    "example_configs",
]
