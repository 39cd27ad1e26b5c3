"""Atrous Spatial Pyramid Pooling (DeepLabV3), as detectron2's ``layers/aspp.py`` lays it out.

``convs[0]`` 1x1 conv; ``convs[1..3]`` 3x3 convs with the atrous rates (depthwise-separable: a 3x3
depthwise conv with the rate + a 1x1 conv, each with norm and ReLU); ``convs[4]`` image pooling (average
pool, then a 1x1 conv with bias and ReLU and no norm, as detectron2 — a norm over a 1x1 map is
degenerate), upsampled back; the five maps are concatenated and ``project``-ed by a 1x1 conv, then
dropout.  Parameter names equal detectron2's (``convs.<i>.weight``, ``convs.<i>.norm.*``,
``convs.<i>.depthwise.*``, ``convs.4.1.{weight,bias}``, ``project.*``).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .layers import ConvNormAct, DepthwiseSeparableConv2d, xavier_fill

__all__ = ["ASPP", "ImagePooling"]


class ImagePooling(nn.Module):
    """Average pooling: global (``kernel_size=None``) or a stride-1 ``(kh, kw)`` window.

    A window larger than the input is clipped to the input (then it is global pooling).
    [N, C, H, W] -> [N, C, 1, 1] or [N, C, H - kh + 1, W - kw + 1].
    """

    def __init__(self, kernel_size: Optional[Tuple[int, int]] = None):
        super().__init__()
        self.kernel_size = None if kernel_size is None else (int(kernel_size[0]), int(kernel_size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size is None:
            return F.adaptive_avg_pool2d(x, 1)
        height, width = x.shape[-2:]
        kernel = (min(self.kernel_size[0], height), min(self.kernel_size[1], width))
        return F.avg_pool2d(x, kernel, stride=1)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size or 'global'}"


class ASPP(nn.Module):
    """ASPP: [N, in_channels, h, w] -> [N, out_channels, h, w].

    Args:
        in_channels, out_channels: channel counts.
        rates: the three atrous rates (6, 12, 18 at output stride 16).
        norm: norm of every conv except the image-pooling conv.
        depthwise_separable: 3x3 atrous convs as depthwise-separable convs.
        dropout: dropout on the projected output (training only).
        pool_kernel_size: image-pooling window at feature resolution, None for global pooling.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        rates: Sequence[int],
        *,
        norm: str = "BN",
        depthwise_separable: bool = False,
        dropout: float = 0.0,
        pool_kernel_size: Optional[Tuple[int, int]] = None,
    ):
        super().__init__()
        if len(rates) != 3:
            raise ValueError(f"ASPP expects 3 atrous rates, got {tuple(rates)}")
        self.dropout = dropout
        self.convs = nn.ModuleList()
        self.convs.append(ConvNormAct(in_channels, out_channels, 1, norm=norm))
        for rate in rates:
            if depthwise_separable:
                self.convs.append(
                    DepthwiseSeparableConv2d(in_channels, out_channels, 3, dilation=int(rate), norm=norm)
                )
            else:
                self.convs.append(
                    ConvNormAct(in_channels, out_channels, 3, padding=int(rate), dilation=int(rate), norm=norm)
                )
        self.convs.append(
            nn.Sequential(ImagePooling(pool_kernel_size), ConvNormAct(in_channels, out_channels, 1, norm=None))
        )
        self.project = ConvNormAct(5 * out_channels, out_channels, 1, norm=norm)
        for module in (*self.convs, self.project):
            if isinstance(module, ConvNormAct):
                xavier_fill(module)
        xavier_fill(self.convs[-1][1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        branches = [conv(x) for conv in self.convs]
        branches[-1] = F.interpolate(branches[-1], size=size, mode="bilinear", align_corners=False)
        out = self.project(torch.cat(branches, dim=1))
        if self.dropout > 0:
            out = F.dropout(out, self.dropout, training=self.training)
        return out
