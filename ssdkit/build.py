"""`build_model`: the one place that reads an `SSDConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ssdkit.config import SSDConfig
from ssdkit.model import SSD
from ssdkit.predict import Preprocessor
from ssdkit.registry import BACKBONES, BOX_CODERS, HEADS, LOSSES, MATCHERS, NMS, PRIORS

__all__ = ["build_model", "as_config"]


def as_config(cfg: SSDConfig | dict | str | Path) -> SSDConfig:
    """An `SSDConfig` from a config, a dict, or a YAML/JSON path."""
    if isinstance(cfg, SSDConfig):
        return cfg
    if isinstance(cfg, dict):
        return SSDConfig.model_validate(cfg)
    if isinstance(cfg, (str, Path)):
        return SSDConfig.from_file(cfg)
    raise TypeError(f"expected an SSDConfig, a dict or a config file path, got {type(cfg).__name__}")


def build_model(cfg: SSDConfig | dict | str | Path) -> SSD:
    """Build every component named in `cfg` and assemble them into an `SSD`, in eval mode (call
    `.train()` to train it yourself; `ssdkit.train` does)."""
    cfg = as_config(cfg)
    backbone = BACKBONES.build(cfg.backbone)
    prior_generator = PRIORS.build(cfg.priors)
    levels = len(backbone.out_channels)
    if len(prior_generator.num_anchors) != levels:
        raise ValueError(
            f"priors has {len(prior_generator.num_anchors)} levels but backbone '{cfg.backbone.type}' "
            f"gives {levels} feature maps"
        )
    head = HEADS.build(
        cfg.head,
        in_channels=list(backbone.out_channels),
        num_anchors=prior_generator.num_anchors,
        num_classes=cfg.num_classes,
    )
    box_coder = BOX_CODERS.build(cfg.box_coder)
    matcher = MATCHERS.build(cfg.matcher)
    loss: Any = None
    if cfg.loss is not None:
        loss = LOSSES.build(cfg.loss, box_coder=box_coder, matcher=matcher)
    pre = cfg.preprocess
    model = SSD(
        backbone,
        head,
        prior_generator,
        box_coder,
        NMS.build(cfg.postprocess),
        image_size=cfg.image_size,
        num_classes=cfg.num_classes,
        preprocessor=Preprocessor(cfg.image_size, pre.mean, pre.std, pre.scale, pre.channel_order),
        matcher=matcher,
        loss=loss,
        class_names=cfg.class_names,
        # a loss that trains independent sigmoids must be scored the same way at inference
        score_activation=getattr(loss, "score_activation", "softmax"),
    )
    model.config = cfg  # kept for checkpoints and export metadata; the model never reads it
    return model.eval()  # ready to predict; the trainer switches it to training mode
