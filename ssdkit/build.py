"""`build_model`: the one place that builds a model's parts from an `SSDConfig` and assembles them."""

from __future__ import annotations

import warnings
from pathlib import Path

from ssdkit.config.model import SSDConfig
from ssdkit.model import SSD
from ssdkit.preprocess import Preprocessor
from ssdkit.registry import BACKBONES, BOX_CODERS, HEADS, LOSSES, MATCHERS, POSTPROCESS, PRIORS
from ssdkit.roles import Head, Loss, check_levels

__all__ = ["build_model", "as_config", "MAX_HEAD_PARAMETERS", "MAX_OUTPUTS_PER_IMAGE"]

# What a config that validates may cost once built; raise these for a model you mean to build.
# The SSD300 VGG16 COCO head has 12.7 million parameters and 0.8 million scores a picture;
# an LVIS-sized head (1203 classes) 161 million.
MAX_HEAD_PARAMETERS = 200_000_000  # 800 MB in float32
MAX_OUTPUTS_PER_IMAGE = 100_000_000  # priors x classes: 400 MB of logits a picture


def _check_head_cost(cfg: SSDConfig, channels: list[int], anchors: list[int]) -> None:
    """Refuse a head whose 3x3 convolutions would hold more than MAX_HEAD_PARAMETERS weights, before building it."""
    params = sum(c * a for c, a in zip(channels, anchors, strict=False)) * (cfg.num_classes + 4) * 9
    if params > MAX_HEAD_PARAMETERS:
        raise ValueError(
            f"the head would hold about {params:,} parameters ({params * 4 / 2**30:.1f} GiB in float32: "
            f"num_classes={cfg.num_classes}, {sum(anchors):,} priors per location over the levels), more than "
            f"ssdkit.build.MAX_HEAD_PARAMETERS ({MAX_HEAD_PARAMETERS:,}); lower num_classes or the aspect "
            "ratios, or raise that limit"
        )


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
    """Build every component named in `cfg` and assemble them into an `SSD` (in training mode, as
    torch modules start; `predict` needs no `.eval()`, and `create_model` returns eval mode)."""
    cfg = as_config(cfg)
    backbone = BACKBONES.build(cfg.backbone)
    prior_generator = PRIORS.build(cfg.priors)
    # SSDConfig compares the levels its configs declare (a YAML mistake fails before any weight is
    # made); the built parts are compared here too, for configs that declare none or declare wrongly.
    check_levels(len(prior_generator.num_anchors), len(backbone.out_channels), cfg.backbone.type)
    _check_head_cost(cfg, list(backbone.out_channels), list(prior_generator.num_anchors))
    head = HEADS.build(
        cfg.head,
        in_channels=list(backbone.out_channels),
        num_anchors=prior_generator.num_anchors,
        num_classes=cfg.num_classes,
    )
    box_coder = BOX_CODERS.build(cfg.box_coder)
    matcher = MATCHERS.build(cfg.matcher)
    loss: Loss | None = None
    if cfg.loss is not None:
        loss = LOSSES.build(cfg.loss, box_coder=box_coder, matcher=matcher)
        _init_class_bias(head, loss, cfg)
    model = SSD(
        backbone,
        head,
        prior_generator,
        box_coder,
        POSTPROCESS.build(cfg.postprocess),
        image_size=cfg.image_size,
        num_classes=cfg.num_classes,
        preprocessor=Preprocessor.from_config(cfg.image_size, cfg.preprocess),
        matcher=matcher,
        loss=loss,
        class_names=cfg.class_names,
        # a loss that trains independent sigmoids must be scored the same way at inference
        score_activation=getattr(loss, "score_activation", "softmax"),
    )
    outputs = model.priors.shape[0] * cfg.num_classes
    if outputs > MAX_OUTPUTS_PER_IMAGE:
        raise ValueError(
            f"this model predicts {model.priors.shape[0]:,} priors x {cfg.num_classes:,} classes = {outputs:,} scores "
            f"per picture ({outputs * 4 / 2**30:.1f} GiB in float32), more than ssdkit.build.MAX_OUTPUTS_PER_IMAGE "
            f"({MAX_OUTPUTS_PER_IMAGE:,}); lower image_size, the aspect ratios or num_classes, or raise that limit"
        )
    model.config = cfg  # kept for checkpoints and export metadata; the model never reads it
    return model


def _init_class_bias(head: Head, loss: Loss, cfg: SSDConfig) -> None:
    """Start the head's class biases where the loss wants them (sigmoid focal loss: at its prior)."""
    initial = getattr(loss, "initial_class_bias", None)
    bias = initial(cfg.num_classes) if initial is not None else None
    if bias is None:
        return
    if not hasattr(head, "init_class_bias"):
        warnings.warn(
            f"head '{cfg.head.type}' has no init_class_bias(bias): its class biases keep their own init, so "
            f"loss '{cfg.loss.type}' starts far from its prior (give the head that method)",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    head.init_class_bias(bias)
