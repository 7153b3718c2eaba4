"""`build_dataset` and `build_loader`: the only readers of a `DataConfig`."""

from __future__ import annotations

from typing import Any, Union

import torch
from torch.utils.data import DataLoader

from ssdkit.config.data import DataConfig
from ssdkit.data.base import DetectionDataset
from ssdkit.data.loader import Collate, EpochSampler
from ssdkit.data.pipeline import ModelInputs
from ssdkit.data.transforms import train_transform
from ssdkit.preprocess import Preprocessor
from ssdkit.registry import DATASETS, ComponentConfig

__all__ = ["build_dataset", "build_loader", "check_classes", "preprocessor_for"]

SPLITS = ("train", "val")


def build_dataset(cfg: Union[ComponentConfig, dict[str, Any]]) -> DetectionDataset:
    """The data set a config names (`{"type": "voc", "root": ...}` or a registered config instance)."""
    return DATASETS.build(DATASETS.validate_config(cfg))


def preprocessor_for(model_cfg: Any) -> Preprocessor:
    """The `Preprocessor` `build_model` gives a model of this config (same resize and normalisation)."""
    return Preprocessor.from_config(model_cfg.image_size, model_cfg.preprocess)


def check_classes(dataset: DetectionDataset, model_cfg: Any, what: str = "the data set") -> None:
    """A clear error when the data set's classes are not the model's (label k must mean the same class)."""
    names = list(dataset.class_names)
    want = model_cfg.num_classes - 1
    if len(names) != want:
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        raise ValueError(
            f"{what} has {len(names)} classes ({shown}) but the model's num_classes={model_cfg.num_classes} "
            f"means {want} (background is class 0); set the model's num_classes to {len(names) + 1}"
        )
    if model_cfg.class_names is not None and list(model_cfg.class_names) != names:
        diff = [(k + 1, m, d) for k, (m, d) in enumerate(zip(model_cfg.class_names, names, strict=True)) if m != d]
        label, m, d = diff[0]
        raise ValueError(
            f"{what} and the model name the classes differently: label {label} is '{d}' in the data "
            f"but '{m}' in the model's class_names ({len(diff)} label(s) differ)"
        )


def _expand_ratio(aug: Any) -> float:
    ex = aug.expand
    return float(ex.max_ratio) if aug.enabled and ex.enabled and ex.p > 0 else 1.0


def _model_inputs(data_cfg: DataConfig, model_cfg: Any, split: str, seed: int) -> ModelInputs:
    """The items of `split`: its data set (classes checked against the model's), preprocessed for
    `model_cfg`, augmented when training."""
    train = split == "train"
    ds_cfg = data_cfg.train if train else data_cfg.val
    dataset = build_dataset(ds_cfg)
    check_classes(dataset, model_cfg, f"the {split} data set ('{ds_cfg.type}')")
    pre = preprocessor_for(model_cfg)
    return ModelInputs(
        dataset,
        pre,
        train=train,
        transform=train_transform(data_cfg.augment, pre.mean_pixel()) if train else None,
        on_bad_item=data_cfg.on_bad_item,
        seed=seed,
        expand_ratio=_expand_ratio(data_cfg.augment) if train else 1.0,
    )


def build_loader(
    data_cfg: Union[DataConfig, dict[str, Any]],
    model_cfg: Any,
    split: str,
    *,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader of `ssdkit.data.Batch` for `split` ("train" or "val") of `data_cfg`, fed to a model
    built from `model_cfg` (an `SSDConfig`: its image_size, preprocess and classes are used).

    train: shuffled per epoch, augmented, crowd (and, unless kept, difficult) boxes left out, last
    incomplete batch dropped. val: in order, no augmentation, every box kept and flagged.
    Call `loader.sampler.set_epoch(epoch)` before each epoch: (seed, epoch) fix the order and every
    random draw of the augmentation, with or without workers. `rank` / `world_size`: this process's
    share under data-parallel training.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(data_cfg, DataConfig):
        data_cfg = DataConfig.model_validate(data_cfg)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    train = split == "train"
    ds_cfg = data_cfg.train if train else data_cfg.val
    items = _model_inputs(data_cfg, model_cfg, split, seed)
    batch_size = data_cfg.batch_size if train else (data_cfg.val_batch_size or data_cfg.batch_size)
    sampler = EpochSampler(len(items), shuffle=train, seed=seed, rank=rank, world_size=world_size, pad=train)
    if train and len(sampler) < batch_size:
        raise ValueError(
            f"the train data set ('{ds_cfg.type}') gives {len(sampler)} items per process, fewer than "
            f"batch_size={batch_size}: no full batch (the last incomplete one is dropped); lower batch_size"
        )
    workers = data_cfg.num_workers
    pin = data_cfg.pin_memory if data_cfg.pin_memory is not None else torch.cuda.is_available()
    return DataLoader(
        items,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=Collate(items.preprocessor.image_size),
        pin_memory=pin,
        drop_last=train,
        # Workers live as long as the loader: no start-up (and no re-import) at every epoch.
        persistent_workers=workers > 0,
        prefetch_factor=data_cfg.prefetch_factor if workers > 0 else None,
        # Its own generator: creating the loader's iterator then leaves the caller's torch RNG alone.
        generator=torch.Generator().manual_seed(seed),
    )
