"""Prediction heads (registry `HEADS`): feature maps -> (loc [B, P, 4], logits [B, P, C])."""

from ssdkit.heads.conv import ConvHead, ConvHeadConfig, DepthwiseHead, DepthwiseHeadConfig

__all__ = ["ConvHead", "ConvHeadConfig", "DepthwiseHead", "DepthwiseHeadConfig"]
