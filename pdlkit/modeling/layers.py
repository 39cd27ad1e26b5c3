"""Small building blocks shared by the backbones, the ASPP, the decoders and the heads.

:class:`ConvNormAct` is an ``nn.Conv2d`` that owns its norm layer as the child ``norm`` (so a state dict
reads ``<name>.weight``, ``<name>.norm.weight``, ``<name>.norm.running_mean`` ...), the layout of
detectron2's ``layers.Conv2d``; it keeps the key map to detectron2 checkpoints a plain rename.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["NORMS", "make_norm", "ConvNormAct", "DepthwiseSeparableConv2d", "xavier_fill", "msra_fill"]

NORMS = ("BN", "SyncBN", "GN")


def make_norm(norm: Optional[str], channels: int) -> nn.Module:
    """A norm layer over ``channels`` features: "BN", "SyncBN", "GN" (32 groups, fewer when 32 does not
    divide ``channels``) or None / "" for none (``nn.Identity``).

    "SyncBN" builds ``nn.SyncBatchNorm``: it synchronises statistics only in training under an initialised
    process group on CUDA and acts as plain batch norm otherwise (single process, eval).
    """
    if not norm:
        return nn.Identity()
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "SyncBN":
        return nn.SyncBatchNorm(channels)
    if norm == "GN":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")


class ConvNormAct(nn.Conv2d):
    """Conv2d, then the norm layer ``self.norm`` (if any), then ReLU (if ``activation``).

    The convolution has a bias only when there is no norm layer (unless ``bias`` says otherwise).
    Input [N, in_channels, H, W] -> [N, out_channels, H', W'].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        norm: Optional[str] = "BN",
        activation: bool = True,
        bias: Optional[bool] = None,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=(not norm) if bias is None else bias,
        )
        self.norm = make_norm(norm, out_channels)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self._conv_forward(x, self.weight, self.bias))
        return F.relu(x) if self.activation else x


class DepthwiseSeparableConv2d(nn.Module):
    """A k x k depthwise conv (norm, ReLU) followed by a 1x1 pointwise conv (norm, ReLU).

    Children ``depthwise`` and ``pointwise`` as in detectron2's ``DepthwiseSeparableConv2d``.
    [N, in_channels, H, W] -> [N, out_channels, H, W] (stride 1, "same" padding).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 5, *, dilation: int = 1, norm: str = "BN"
    ):
        super().__init__()
        padding = dilation * (kernel_size - 1) // 2
        self.depthwise = ConvNormAct(
            in_channels, in_channels, kernel_size, padding=padding, dilation=dilation, groups=in_channels, norm=norm
        )
        self.pointwise = ConvNormAct(in_channels, out_channels, 1, norm=norm)
        msra_fill(self.depthwise)
        msra_fill(self.pointwise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def xavier_fill(conv: nn.Conv2d) -> None:
    """Caffe2's "XavierFill" (uniform, fan-in, gain 1), bias 0 — detectron2's init of decoder convs."""
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def msra_fill(conv: nn.Conv2d) -> None:
    """Caffe2's "MSRAFill" (normal, fan-out, ReLU gain), bias 0."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
