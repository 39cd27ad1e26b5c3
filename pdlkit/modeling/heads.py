"""The two Panoptic-DeepLab branches: each is a decoder (its own ASPP) plus prediction heads.

Layout after detectron2's ``PanopticDeepLabSemSegHead`` / ``PanopticDeepLabInsEmbedHead``
(``projects/Panoptic-DeepLab/panoptic_deeplab/panoptic_seg.py``), so their parameter names agree
after the branch prefix:

- :class:`SemanticBranch`: ``decoder`` (256 ch), ``head`` and ``predictor`` (1x1 conv to C classes).
  ``head`` is a 5x5 depthwise-separable conv (decoder -> head channels) or, without depthwise-separable
  convs, two 3x3 convs (decoder -> decoder -> head channels).
- :class:`InstanceBranch`: ``decoder`` (128 ch); ``center_head`` + ``center_predictor`` (-> 1);
  ``offset_head`` + ``offset_predictor`` (-> 2, (y, x)).  ``center_head`` is always two 3x3 convs and
  ``offset_head`` follows ``depthwise_separable`` like the semantic head — detectron2's DSConv models
  (the published R52 "DSConv" checkpoint among them) replace only those two heads.

Predictors are plain 1x1 convs with bias, initialised N(0, 0.001) with bias 0 so that training starts
from near-zero logits, heatmaps and offsets.  Outputs are at the decoder's stride (4).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from .backbones import FeatureInfo
from .decoder import PanopticDecoder
from .layers import ConvNormAct, DepthwiseSeparableConv2d, xavier_fill

__all__ = ["SemanticBranch", "InstanceBranch", "make_head", "make_predictor"]


def make_head(in_channels: int, out_channels: int, *, norm: str, depthwise_separable: bool) -> nn.Module:
    """5x5 depthwise-separable conv (in -> out), or two 3x3 convs (in -> in -> out)."""
    if depthwise_separable:
        return DepthwiseSeparableConv2d(in_channels, out_channels, 5, norm=norm)
    convs = nn.Sequential(
        ConvNormAct(in_channels, in_channels, 3, padding=1, norm=norm),
        ConvNormAct(in_channels, out_channels, 3, padding=1, norm=norm),
    )
    for conv in convs:
        xavier_fill(conv)
    return convs


def make_predictor(in_channels: int, out_channels: int) -> nn.Conv2d:
    predictor = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.normal_(predictor.weight, 0.0, 0.001)
    nn.init.zeros_(predictor.bias)
    return predictor


class SemanticBranch(PanopticDecoder):
    """Semantic decoder + head: features -> logits [N, num_classes, H / 4, W / 4]."""

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        num_classes: int,
        *,
        low_level_channels: Sequence[int] = (64, 32),
        decoder_channels: int = 256,
        head_channels: int = 256,
        norm: str = "BN",
        depthwise_separable: bool = True,
        aspp_channels: int = 256,
        aspp_rates: Sequence[int] = (6, 12, 18),
        aspp_dropout: float = 0.1,
        aspp_pool_kernel_size: Optional[Tuple[int, int]] = None,
    ):
        super().__init__(
            feature_info,
            low_level_channels=low_level_channels,
            decoder_channels=decoder_channels,
            aspp_channels=aspp_channels,
            aspp_rates=aspp_rates,
            aspp_dropout=aspp_dropout,
            aspp_pool_kernel_size=aspp_pool_kernel_size,
            norm=norm,
            depthwise_separable=depthwise_separable,
        )
        self.head = make_head(decoder_channels, head_channels, norm=norm, depthwise_separable=depthwise_separable)
        self.predictor = make_predictor(head_channels, num_classes)

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.predictor(self.head(self.decode(features)))


class InstanceBranch(PanopticDecoder):
    """Instance decoder + heads: features -> (center [N, 1, H/4, W/4], offset [N, 2, H/4, W/4] (y, x)).

    The offsets come out in units of decoder pixels (stride 4); the model scales them to input pixels.
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        *,
        low_level_channels: Sequence[int] = (32, 16),
        decoder_channels: int = 128,
        head_channels: int = 32,
        norm: str = "BN",
        depthwise_separable: bool = True,
        aspp_channels: int = 256,
        aspp_rates: Sequence[int] = (6, 12, 18),
        aspp_dropout: float = 0.1,
        aspp_pool_kernel_size: Optional[Tuple[int, int]] = None,
    ):
        super().__init__(
            feature_info,
            low_level_channels=low_level_channels,
            decoder_channels=decoder_channels,
            aspp_channels=aspp_channels,
            aspp_rates=aspp_rates,
            aspp_dropout=aspp_dropout,
            aspp_pool_kernel_size=aspp_pool_kernel_size,
            norm=norm,
            depthwise_separable=depthwise_separable,
        )
        self.center_head = make_head(decoder_channels, head_channels, norm=norm, depthwise_separable=False)
        self.center_predictor = make_predictor(head_channels, 1)
        self.offset_head = make_head(
            decoder_channels, head_channels, norm=norm, depthwise_separable=depthwise_separable
        )
        self.offset_predictor = make_predictor(head_channels, 2)

    def forward(self, features: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        y = self.decode(features)
        return self.center_predictor(self.center_head(y)), self.offset_predictor(self.offset_head(y))
