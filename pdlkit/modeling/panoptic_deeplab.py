"""The Panoptic-DeepLab network: backbone, semantic branch, instance branch; and ``build_model``.

``PanopticDeepLab.forward(images [N, 3, H, W])`` (normalised RGB) returns, at the input resolution::

    {"semantic": [N, C, H, W] logits,
     "center":   [N, 1, H, W] center heatmap,
     "offset":   [N, 2, H, W] offsets (y, x) in input pixels, pointing from each pixel to its center}

Input contract: any H, W.  The network zero-pads the batch at the bottom and right to a multiple of
``size_divisibility`` (default: the backbone's output stride; zero is the mean colour after
normalisation), runs, upsamples the stride-4 outputs by exactly 4 (bilinear, align_corners=False, as
detectron2's heads do with ``scale_factor=4``) and crops back to H x W.  So a caller who pads first gets
the same numbers, and a caller who does not gets outputs aligned with the input.
``forward(images, size_divisibility=1)`` runs without padding (detectron2's Cityscapes inference, whose
size divisibility is 0): the stride-4 maps are then ceil(H / 4) x ceil(W / 4) and their 4x upsampling
is cropped to H x W.
The offset head predicts in decoder pixels; its upsampled output is multiplied by the decoder stride (4),
as detectron2 does.

detectron2 name map (``projects/Panoptic-DeepLab``, ``MODEL.META_ARCHITECTURE: PanopticDeepLab``).  Below
the branch prefixes the names are equal, because the decoder, ASPP and heads copy detectron2's module
layout (the ResNet part is mapped in backbones.py; ``pdlkit.modeling.detectron2_import`` applies it):

- ``backbone.stem.conv{k}[.norm]``, ``backbone.res{s}.*``  ->  ``backbone.conv{k}`` / ``backbone.bn{k}``,
  ``backbone.layer{s-1}.*``
- ``sem_seg_head.decoder.res5.project_conv.*`` (ASPP)  ->  ``semantic_branch.decoder.res5.project_conv.*``
- ``sem_seg_head.decoder.res{2,3}.{project_conv,fuse_conv}.*``  ->  ``semantic_branch.decoder.res{2,3}...``
- ``sem_seg_head.{head,predictor}.*``  ->  ``semantic_branch.{head,predictor}.*``
- ``ins_embed_head.decoder.*``  ->  ``instance_branch.decoder.*``
- ``ins_embed_head.{center,offset}_{head,predictor}.*``  ->  ``instance_branch.{center,offset}_{head,predictor}.*``
- ``pixel_mean``, ``pixel_std``  ->  none (normalisation is preprocessing)

Settings that reproduce detectron2's R52-DC5 Cityscapes checkpoints: backbone "resnet52", output stride
16, norm "SyncBN" (or "BN" for inference), ``instance_low_level_channels (64, 32)``,
``semantic_low_level_channels (64, 32)``, ``aspp_pooling_size (512, 1024)`` and ``depthwise_separable``
True for the DSConv checkpoint / False for the other one.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import PdlError
from .backbones import Backbone, build_backbone
from .heads import InstanceBranch, SemanticBranch
from .layers import NORMS
from .weights import load_backbone_weights

__all__ = ["PanopticDeepLab", "build_model"]


class PanopticDeepLab(nn.Module):
    """Backbone + :class:`SemanticBranch` + :class:`InstanceBranch` (see the module docstring)."""

    def __init__(self, backbone: Backbone, semantic_branch: SemanticBranch, instance_branch: InstanceBranch):
        super().__init__()
        self.backbone = backbone
        self.semantic_branch = semantic_branch
        self.instance_branch = instance_branch
        self.size_divisibility = backbone.output_stride
        self.num_classes = semantic_branch.predictor.out_channels

    def forward(self, images: torch.Tensor, size_divisibility: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """images [N, 3, H, W] normalised -> the output dict of the module docstring.

        size_divisibility: pad H and W to multiples of it first (None: ``self.size_divisibility``;
        0 or 1: no padding).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {list(images.shape)}")
        height, width = images.shape[-2:]
        divisor = self.size_divisibility if size_divisibility is None else max(1, int(size_divisibility))
        # Padding unconditionally (a no-op pad when already divisible) keeps one graph for every input
        # size when the model is traced for export.
        padded_height = (height + divisor - 1) // divisor * divisor
        padded_width = (width + divisor - 1) // divisor * divisor
        images = F.pad(images, (0, padded_width - width, 0, padded_height - height))

        features = self.backbone(images)
        semantic = self.semantic_branch(features)
        center, offset = self.instance_branch(features)
        decoder_stride = self.instance_branch.common_stride

        def to_input_size(x: torch.Tensor) -> torch.Tensor:
            # exactly decoder_stride x the map: equal to the padded size when it is a multiple of 4
            size = (x.shape[-2] * decoder_stride, x.shape[-1] * decoder_stride)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            return x[..., :height, :width]

        return {
            "semantic": to_input_size(semantic),
            "center": to_input_size(center),
            "offset": to_input_size(offset) * decoder_stride,
        }


def _pool_kernel(pooling_size: Optional[tuple], output_stride: int) -> Optional[Tuple[int, int]]:
    if pooling_size is None:
        return None
    if len(pooling_size) != 2 or any(int(s) <= 0 or int(s) % output_stride for s in pooling_size):
        raise PdlError(
            f"model.aspp_pooling_size must be (height, width) in pixels, each a positive multiple of the "
            f"output stride {output_stride}; got {tuple(pooling_size)}"
        )
    return int(pooling_size[0]) // output_stride, int(pooling_size[1]) // output_stride


def build_model(cfg, num_classes: int) -> PanopticDeepLab:
    """A :class:`PanopticDeepLab` for ``cfg`` (a :class:`pdlkit.config.ModelConfig`).

    The backbone is initialised as ``cfg.pretrained`` says (see :mod:`pdlkit.modeling.weights`); the
    rest randomly.  ``cfg.aspp_rates`` are the rates at output stride 16 and scale with it (x2 at 8).
    Bad settings raise :class:`~pdlkit.errors.PdlError` naming the setting.
    """
    if int(num_classes) < 1:
        raise PdlError(f"a model needs at least one class, got num_classes={num_classes}")
    if cfg.norm not in NORMS:
        raise PdlError(f"model.norm must be one of {', '.join(NORMS)}, got {cfg.norm!r}")
    for key in ("semantic_low_level_channels", "instance_low_level_channels"):
        if len(getattr(cfg, key)) != 2:
            raise PdlError(f"model.{key} needs two widths (stride 8, stride 4), got {tuple(getattr(cfg, key))}")
    if len(cfg.aspp_rates) != 3:
        raise PdlError(f"model.aspp_rates needs three rates, got {tuple(cfg.aspp_rates)}")
    try:
        backbone = build_backbone(cfg.backbone, output_stride=cfg.output_stride, norm=cfg.norm)
    except ValueError as exc:
        raise PdlError(f"model.backbone / model.output_stride: {exc}") from None
    load_backbone_weights(backbone, cfg.pretrained, norm=cfg.norm)

    output_stride = backbone.output_stride
    rates = tuple(max(1, round(r * 16 / output_stride)) for r in cfg.aspp_rates)
    shared = dict(
        norm=cfg.norm,
        depthwise_separable=cfg.depthwise_separable,
        aspp_channels=cfg.aspp_channels,
        aspp_rates=rates,
        aspp_dropout=cfg.aspp_dropout,
        aspp_pool_kernel_size=_pool_kernel(cfg.aspp_pooling_size, output_stride),
    )
    semantic_branch = SemanticBranch(
        backbone.feature_info,
        int(num_classes),
        low_level_channels=tuple(cfg.semantic_low_level_channels),
        decoder_channels=cfg.semantic_decoder_channels,
        head_channels=cfg.semantic_head_channels,
        **shared,
    )
    instance_branch = InstanceBranch(
        backbone.feature_info,
        low_level_channels=tuple(cfg.instance_low_level_channels),
        decoder_channels=cfg.instance_decoder_channels,
        head_channels=cfg.instance_head_channels,
        **shared,
    )
    return PanopticDeepLab(backbone, semantic_branch, instance_branch)
