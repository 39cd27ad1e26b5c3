"""The DeepLabV3+-style decoder that each Panoptic-DeepLab branch owns (dual ASPP, dual decoders).

Laid out as detectron2's ``DeepLabV3PlusHead`` (``projects/DeepLab/deeplab/semantic_seg.py``): a
``ModuleDict`` ``decoder`` keyed by the backbone's feature names; the deepest feature's stage holds the
ASPP as ``project_conv``; every other stage holds ``project_conv`` (1x1 conv, norm, ReLU) and
``fuse_conv``.  Stages run deep to shallow: project the low-level feature, upsample the running map to
its size (bilinear, align_corners=False), concatenate ``[projected, upsampled]`` and fuse:

- ``depthwise_separable=True``: one 5x5 depthwise-separable conv (``fuse_conv.depthwise`` /
  ``fuse_conv.pointwise``), the paper's choice;
- ``depthwise_separable=False``: two 3x3 convs (``fuse_conv.0`` / ``fuse_conv.1``) — the same receptive
  field, the layout of detectron2's non-DSConv checkpoints.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .aspp import ASPP
from .backbones import FeatureInfo
from .layers import ConvNormAct, DepthwiseSeparableConv2d, xavier_fill

__all__ = ["PanopticDecoder", "make_fuse_conv"]


def make_fuse_conv(in_channels: int, out_channels: int, *, norm: str, depthwise_separable: bool) -> nn.Module:
    """5x5 depthwise-separable conv, or two 3x3 convs (in -> out -> out), each with norm and ReLU."""
    if depthwise_separable:
        return DepthwiseSeparableConv2d(in_channels, out_channels, 5, norm=norm)
    convs = nn.Sequential(
        ConvNormAct(in_channels, out_channels, 3, padding=1, norm=norm),
        ConvNormAct(out_channels, out_channels, 3, padding=1, norm=norm),
    )
    for conv in convs:
        xavier_fill(conv)
    return convs


class PanopticDecoder(nn.Module):
    """ASPP on the deepest feature, then one fusion stage per lower-level feature (stride 8, then 4).

    Args:
        feature_info: the backbone's pyramid, shallow to deep (stride 4, stride 8, deepest).
        low_level_channels: projection widths of the low-level features, deep to shallow
            (stride 8 first, then stride 4), e.g. (64, 32).
        decoder_channels: output width of every fusion stage.
        aspp_channels, aspp_rates, aspp_dropout, aspp_pool_kernel_size: see :class:`ASPP`.
        norm, depthwise_separable: for every conv of the decoder.

    ``forward(features)`` -> [N, decoder_channels, H / s, W / s], s = the shallowest feature's stride.
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        *,
        low_level_channels: Sequence[int],
        decoder_channels: int,
        aspp_channels: int = 256,
        aspp_rates: Sequence[int] = (6, 12, 18),
        aspp_dropout: float = 0.1,
        aspp_pool_kernel_size: Optional[Tuple[int, int]] = None,
        norm: str = "BN",
        depthwise_separable: bool = True,
    ):
        super().__init__()
        feature_info = list(feature_info)
        low_levels = feature_info[:-1]  # shallow to deep
        if len(low_level_channels) != len(low_levels):
            raise ValueError(
                f"expected {len(low_levels)} low-level projection widths (one per feature "
                f"{', '.join(f.name for f in reversed(low_levels))}), got {tuple(low_level_channels)}"
            )
        self.in_features = [info.name for info in feature_info]
        self.common_stride = feature_info[0].stride
        self.out_channels = decoder_channels
        projections = list(reversed(low_level_channels))  # now shallow to deep, like low_levels
        self.decoder = nn.ModuleDict()
        for index, info in enumerate(low_levels):
            # The stage above this one outputs the ASPP width when it is the ASPP, else decoder_channels.
            incoming = aspp_channels if index == len(low_levels) - 1 else decoder_channels
            project = ConvNormAct(info.channels, projections[index], 1, norm=norm)
            xavier_fill(project)
            self.decoder[info.name] = nn.ModuleDict(
                {
                    "project_conv": project,
                    "fuse_conv": make_fuse_conv(
                        projections[index] + incoming,
                        decoder_channels,
                        norm=norm,
                        depthwise_separable=depthwise_separable,
                    ),
                }
            )
        deepest = feature_info[-1]
        self.decoder[deepest.name] = nn.ModuleDict(
            {
                "project_conv": ASPP(
                    deepest.channels,
                    aspp_channels,
                    aspp_rates,
                    norm=norm,
                    depthwise_separable=depthwise_separable,
                    dropout=aspp_dropout,
                    pool_kernel_size=aspp_pool_kernel_size,
                )
            }
        )

    def decode(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Decoder features [N, decoder_channels, H / 4, W / 4] from the backbone's feature dict."""
        y = self.decoder[self.in_features[-1]]["project_conv"](features[self.in_features[-1]])
        for name in self.in_features[-2::-1]:
            stage = self.decoder[name]
            projected = stage["project_conv"](features[name])
            y = F.interpolate(y, size=projected.shape[-2:], mode="bilinear", align_corners=False)
            y = stage["fuse_conv"](torch.cat([projected, y], dim=1))
        return y

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.decode(features)
