"""Backbones: atrous ResNets (18, 50, 101, deep-stem "52") and MobileNetV3-Large.

Every backbone reports its feature pyramid in ``feature_info`` — a tuple of :class:`FeatureInfo` (name,
stride, channels) ordered shallow to deep: the stride-4 feature, the stride-8 feature and the deepest
feature (stride = the output stride).  ``forward(images [N, 3, H, W])`` returns a dict name -> tensor
[N, channels, ceil(H / stride), ceil(W / stride)].  The decoders read channel counts from
``feature_info`` and nowhere else (the timm "features_only" contract).

ResNets keep torchvision's parameter names (``conv1``, ``bn1``, ``layer1`` .. ``layer4``; a block's
``conv1/bn1 .. conv3/bn3`` and ``downsample.0/.1``), so torchvision ImageNet state dicts load unchanged
(minus ``fc``).  The deep stem of "resnet52" adds ``conv2/bn2`` and ``conv3/bn3`` beside ``conv1/bn1``.

Atrous convolution follows detectron2's DeepLab ResNet (``projects/DeepLab/deeplab/resnet.py``), not
torchvision's ``replace_stride_with_dilation``: every block of a dilated stage uses the stage's dilation
(torchvision keeps the previous dilation in a stage's first block), and res5 ("layer4") uses multi-grid
dilations ``dilation * (1, 2, 4)``; the stride sits in the 3x3 conv ("STRIDE_IN_1X1: False").

- output stride 32: no dilation, res5 dilations (1, 2, 4);
- output stride 16: res5 stride 1, dilations (2, 4, 8)          (detectron2 "DC5");
- output stride 8:  res4 stride 1 dilation 2, res5 dilations (4, 8, 16).

ResNet-18 has two blocks in res5, so multi-grid does not apply: both use the stage dilation (both 3x3
convs of a basic block are dilated).

Names of the reported features: "res2" (stride 4), "res3" (stride 8), "res5" (deepest) for ResNets, as
in detectron2; "stride4", "stride8", "stride16" for MobileNetV3-Large.

detectron2 name map of the ResNet parameters (``backbone.`` prefix on both sides):

==========================================  =======================================
detectron2                                  pdlkit
==========================================  =======================================
``stem.conv{k}.weight``                     ``conv{k}.weight``            (k = 1..3)
``stem.conv{k}.norm.{w,b,mean,var}``        ``bn{k}.{weight,bias,running_mean,running_var}``
``res{s}.{i}.conv{k}.weight``               ``layer{s-1}.{i}.conv{k}.weight``
``res{s}.{i}.conv{k}.norm.*``               ``layer{s-1}.{i}.bn{k}.*``
``res{s}.{i}.shortcut.weight``              ``layer{s-1}.{i}.downsample.0.weight``
``res{s}.{i}.shortcut.norm.*``              ``layer{s-1}.{i}.downsample.1.*``
==========================================  =======================================

(detectron2's SyncBN checkpoints hold ``num_batches_tracked`` as 0-d arrays, some older files omit it.)
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .layers import make_norm, msra_fill

__all__ = [
    "FeatureInfo",
    "Backbone",
    "ResNetBackbone",
    "MobileNetV3Backbone",
    "BACKBONES",
    "build_backbone",
]


@dataclass(frozen=True)
class FeatureInfo:
    """One level of a backbone's feature pyramid."""

    name: str
    stride: int
    channels: int


class Backbone(nn.Module):
    """Base class: ``feature_info`` (shallow to deep), ``forward(images) -> {name: features}``.

    ``torchvision_arch`` names the torchvision model whose ImageNet weights fit this backbone (None when
    torchvision has none); ``classifier_prefixes`` lists the state-dict prefixes of the classifier that
    such weights carry and the backbone drops.
    """

    feature_info: Tuple[FeatureInfo, ...] = ()
    torchvision_arch: Optional[str] = None
    classifier_prefixes: Tuple[str, ...] = ()

    @property
    def output_stride(self) -> int:
        return self.feature_info[-1].stride


# ------------------------------------------------------------------------------------------- ResNet
def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


def _shortcut(in_channels: int, out_channels: int, stride: int, norm: str) -> Optional[nn.Sequential]:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), make_norm(norm, out_channels)
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs (both dilated by ``dilation``) + identity / projection shortcut."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, *, stride: int, dilation: int, norm: str):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = _conv3x3(in_channels, width, stride, dilation)
        self.bn1 = make_norm(norm, width)
        self.conv2 = _conv3x3(width, out_channels, 1, dilation)
        self.bn2 = make_norm(norm, out_channels)
        self.downsample = _shortcut(in_channels, out_channels, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride and dilation here), 1x1 expand (x4) + identity / projection shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, *, stride: int, dilation: int, norm: str):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = make_norm(norm, width)
        self.conv2 = _conv3x3(width, width, stride, dilation)
        self.bn2 = make_norm(norm, width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = make_norm(norm, out_channels)
        self.downsample = _shortcut(in_channels, out_channels, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity)


# name -> (block, blocks per stage, deep stem, torchvision arch with ImageNet weights)
_RESNETS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), False, "resnet18"),
    "resnet50": (Bottleneck, (3, 4, 6, 3), False, "resnet50"),
    "resnet101": (Bottleneck, (3, 4, 23, 3), False, "resnet101"),
    "resnet52": (Bottleneck, (3, 4, 6, 3), True, None),
}


class ResNetBackbone(Backbone):
    """An atrous ResNet reporting res2 (stride 4), res3 (stride 8) and res5 (the output stride).

    Args:
        name: "resnet18" | "resnet50" | "resnet101" | "resnet52" (deep stem: three 3x3 convs 64-64-128).
        output_stride: 8, 16 or 32.
        norm: "BN" | "SyncBN" | "GN".
        multi_grid: res5 dilation multipliers, used when res5 has that many blocks.
    """

    classifier_prefixes = ("fc.",)

    def __init__(
        self, name: str, *, output_stride: int = 16, norm: str = "BN", multi_grid: Sequence[int] = (1, 2, 4)
    ):
        super().__init__()
        if name not in _RESNETS:
            raise ValueError(f"unknown ResNet {name!r}; expected one of {', '.join(_RESNETS)}")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"{name}: output_stride must be 8, 16 or 32, got {output_stride}")
        block, blocks_per_stage, deep_stem, self.torchvision_arch = _RESNETS[name]
        self.name = name
        self.deep_stem = deep_stem

        if deep_stem:
            self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
            self.bn1 = make_norm(norm, 64)
            self.conv2 = nn.Conv2d(64, 64, 3, stride=1, padding=1, bias=False)
            self.bn2 = make_norm(norm, 64)
            self.conv3 = nn.Conv2d(64, 128, 3, stride=1, padding=1, bias=False)
            self.bn3 = make_norm(norm, 128)
            in_channels = 128
        else:
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = make_norm(norm, 64)
            in_channels = 64
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        # (stride, dilation) of res2..res5; a dilated stage keeps stride 1.
        res4_dilation = 2 if output_stride == 8 else 1
        res5_dilation = {8: 4, 16: 2, 32: 1}[output_stride]
        stage_plan = [(1, 1), (2, 1), (1 if res4_dilation > 1 else 2, res4_dilation), (1 if res5_dilation > 1 else 2, res5_dilation)]
        widths = (64, 128, 256, 512)
        for stage_index, ((stride, dilation), width, num_blocks) in enumerate(zip(stage_plan, widths, blocks_per_stage)):
            if stage_index == 3 and len(multi_grid) == num_blocks:
                dilations = [dilation * grid for grid in multi_grid]
            else:
                dilations = [dilation] * num_blocks
            blocks = []
            for block_index in range(num_blocks):
                blocks.append(
                    block(
                        in_channels,
                        width,
                        stride=stride if block_index == 0 else 1,
                        dilation=dilations[block_index],
                        norm=norm,
                    )
                )
                in_channels = width * block.expansion
            self.add_module(f"layer{stage_index + 1}", nn.Sequential(*blocks))

        expansion = block.expansion
        self.feature_info = (
            FeatureInfo("res2", 4, 64 * expansion),
            FeatureInfo("res3", 8, 128 * expansion),
            FeatureInfo("res5", output_stride, 512 * expansion),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                msra_fill(module)
            elif isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(images)))
        if self.deep_stem:
            x = F.relu(self.bn2(self.conv2(x)))
            x = F.relu(self.bn3(self.conv3(x)))
        x = self.maxpool(x)
        res2 = self.layer1(x)
        res3 = self.layer2(res2)
        res5 = self.layer4(self.layer3(res3))
        return {"res2": res2, "res3": res3, "res5": res5}


# ------------------------------------------------------------------------------------ MobileNetV3
class MobileNetV3Backbone(Backbone):
    """torchvision's MobileNetV3-Large ``features`` with the last stage dilated (output stride 16).

    Reports "stride4" (24 ch), "stride8" (40 ch) and "stride16" (960 ch, the final 1x1 conv).  Parameter
    names are torchvision's (``features.<i>...``); the classifier is not built.
    """

    torchvision_arch = "mobilenet_v3_large"
    classifier_prefixes = ("classifier.",)

    def __init__(self, *, output_stride: int = 16, norm: str = "BN"):
        super().__init__()
        if output_stride != 16:
            raise ValueError(f"mobilenet_v3_large supports output_stride 16 only, got {output_stride}")
        from torchvision.models import mobilenet_v3_large

        # torchvision's own norm settings for BN (eps 1e-3, momentum 0.01), so its weights behave as trained.
        if norm == "BN":
            norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        elif norm == "SyncBN":
            norm_layer = partial(nn.SyncBatchNorm, eps=0.001, momentum=0.01)
        else:
            norm_layer = partial(make_norm, norm)
        network = mobilenet_v3_large(weights=None, dilated=True, norm_layer=norm_layer)
        self.features = network.features
        # Blocks flagged _is_cn start a new resolution: the 2nd and 3rd of them start stride 8 and 16.
        starts = [i for i, block in enumerate(self.features) if getattr(block, "_is_cn", False)]
        self._stride8_start, self._stride16_start = starts[1], starts[2]
        channels = [block.out_channels for block in self.features]
        self.feature_info = (
            FeatureInfo("stride4", 4, channels[self._stride8_start - 1]),
            FeatureInfo("stride8", 8, channels[self._stride16_start - 1]),
            FeatureInfo("stride16", 16, channels[-1]),
        )

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        outputs = {}
        x = images
        for index, block in enumerate(self.features):
            if index == self._stride8_start:
                outputs["stride4"] = x
            elif index == self._stride16_start:
                outputs["stride8"] = x
            x = block(x)
        outputs["stride16"] = x
        return outputs


BACKBONES = ("resnet18", "resnet50", "resnet101", "resnet52", "mobilenet_v3_large")


def build_backbone(name: str, *, output_stride: int = 16, norm: str = "BN") -> Backbone:
    """The backbone ``name`` (one of :data:`BACKBONES`), randomly initialised."""
    if name == "mobilenet_v3_large":
        return MobileNetV3Backbone(output_stride=output_stride, norm=norm)
    if name in _RESNETS:
        return ResNetBackbone(name, output_stride=output_stride, norm=norm)
    raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
