"""Panoptic-DeepLab: backbones, ASPP, decoders, heads, the network and its losses.

``build_model(model_cfg, num_classes)`` and ``PanopticDeepLabLoss(loss_cfg)`` are the public faces
(docs/ARCHITECTURE.md); the building blocks are importable one by one for tests and tools.
"""
from .aspp import ASPP
from .backbones import BACKBONES, Backbone, FeatureInfo, MobileNetV3Backbone, ResNetBackbone, build_backbone
from .decoder import PanopticDecoder
from .heads import InstanceBranch, SemanticBranch
from .losses import PanopticDeepLabLoss, bootstrapped_cross_entropy
from .panoptic_deeplab import PanopticDeepLab, build_model
from .weights import load_backbone_weights

__all__ = [
    "ASPP",
    "BACKBONES",
    "Backbone",
    "FeatureInfo",
    "MobileNetV3Backbone",
    "ResNetBackbone",
    "build_backbone",
    "PanopticDecoder",
    "SemanticBranch",
    "InstanceBranch",
    "PanopticDeepLab",
    "PanopticDeepLabLoss",
    "bootstrapped_cross_entropy",
    "build_model",
    "load_backbone_weights",
]
