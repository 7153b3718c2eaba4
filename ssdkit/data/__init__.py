"""Data: detection data sets (shapes, voc, coco), the SSD augmentation policy and the loader.

    from ssdkit.data import DataConfig, build_loader, build_dataset
    loader = build_loader(DataConfig(), model_cfg, "train", seed=0)
    for epoch in range(n):
        loader.sampler.set_epoch(epoch)
        for images, targets, skipped in loader: ...

Data sets yield pixels (see `DetectionDataset`); the loader yields what the model takes: images
`[B, 3, H, W]` preprocessed, targets with boxes xyxy normalised to [0, 1].
"""

from ssdkit.config.data import AugmentConfig, CropConfig, DataConfig, ExpandConfig, PhotometricConfig
from ssdkit.data.base import DetectionDataset, Record, read_image
from ssdkit.data.build import build_dataset, build_loader, check_classes, preprocessor_for
from ssdkit.data.coco import COCOConfig, COCODataset
from ssdkit.data.errors import BadItemError, BadItemWarning
from ssdkit.data.loader import Batch, Collate, EpochSampler
from ssdkit.data.pipeline import ModelInputs
from ssdkit.data.shapes import ShapesConfig, ShapesDataset
from ssdkit.data.transforms import train_transform
from ssdkit.data.voc import VOC_CLASSES, VOCConfig, VOCDataset

__all__ = [
    "DataConfig",
    "AugmentConfig",
    "PhotometricConfig",
    "ExpandConfig",
    "CropConfig",
    "build_dataset",
    "build_loader",
    "check_classes",
    "preprocessor_for",
    "Batch",
    "Collate",
    "EpochSampler",
    "ModelInputs",
    "DetectionDataset",
    "Record",
    "read_image",
    "BadItemError",
    "BadItemWarning",
    "train_transform",
    "ShapesConfig",
    "ShapesDataset",
    "VOCConfig",
    "VOCDataset",
    "VOC_CLASSES",
    "COCOConfig",
    "COCODataset",
]
