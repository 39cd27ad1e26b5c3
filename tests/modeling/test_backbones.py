"""Backbones: feature pyramid contract, atrous layout, parameters and outputs against torchvision."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision

from pdlkit.modeling.backbones import BACKBONES, MobileNetV3Backbone, ResNetBackbone, build_backbone


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", BACKBONES)
def test_features_match_reported_pyramid(name):
    backbone = build_backbone(name, output_stride=16).eval()
    assert [f.stride for f in backbone.feature_info] == [4, 8, 16]
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 96))
    assert list(features) == [f.name for f in backbone.feature_info]
    for info in backbone.feature_info:
        assert features[info.name].shape == (1, info.channels, 64 // info.stride, 96 // info.stride)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet101"])
def test_resnet_parameters_are_torchvisions_minus_fc(name):
    ours = ResNetBackbone(name)
    reference = getattr(torchvision.models, name)(weights=None)
    expected = {k: v.shape for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == expected
    assert _count(ours) == _count(reference) - _count(reference.fc)


def test_resnet52_parameter_count_from_resnet50():
    resnet50 = _count(torchvision.models.resnet50(weights=None)) - (2048 * 1000 + 1000)
    # The 7x7 stem conv (3->64) + its BN become three 3x3 convs 3->64->64->128, each with a BN ...
    stem_change = -(7 * 7 * 3 * 64) + (3 * 3 * 3 * 64 + 3 * 3 * 64 * 64 + 3 * 3 * 64 * 128) + 2 * (64 + 128)
    # ... and res2's first block reads 128 channels instead of 64 (its 1x1 conv and its shortcut).
    res2_change = (128 - 64) * 64 + (128 - 64) * 256
    assert _count(ResNetBackbone("resnet52")) == resnet50 + stem_change + res2_change


def test_mobilenet_parameters_are_torchvision_features():
    ours = MobileNetV3Backbone()
    reference = torchvision.models.mobilenet_v3_large(weights=None)
    assert _count(ours) == _count(reference.features)
    assert [f.channels for f in ours.feature_info] == [24, 40, 960]


def _dilations(stage):
    return [block.conv2.dilation[0] for block in stage], [block.conv2.stride[0] for block in stage]


def test_resnet_atrous_layout_output_stride_16_and_8():
    os16 = ResNetBackbone("resnet50", output_stride=16)
    assert _dilations(os16.layer3) == ([1] * 6, [2] + [1] * 5)
    assert _dilations(os16.layer4) == ([2, 4, 8], [1, 1, 1])  # multi-grid (1, 2, 4) x 2
    assert os16.layer4[0].downsample[0].stride == (1, 1)
    os8 = ResNetBackbone("resnet50", output_stride=8)
    assert _dilations(os8.layer3) == ([2] * 6, [1] * 6)
    assert _dilations(os8.layer4) == ([4, 8, 16], [1, 1, 1])
    with torch.no_grad():
        features = os8.eval()(torch.randn(1, 3, 64, 64))
    assert features["res5"].shape == (1, 2048, 8, 8)
    assert features["res3"].shape == (1, 512, 8, 8)


def test_resnet18_dilates_both_convs_of_its_basic_blocks():
    backbone = ResNetBackbone("resnet18", output_stride=16)
    assert [(b.conv1.dilation[0], b.conv2.dilation[0]) for b in backbone.layer4] == [(2, 2), (2, 2)]
    assert backbone.layer4[0].conv1.stride == (1, 1)


def test_deep_stem_shapes():
    backbone = ResNetBackbone("resnet52")
    assert (backbone.conv1.weight.shape, backbone.conv2.weight.shape, backbone.conv3.weight.shape) == (
        (64, 3, 3, 3),
        (64, 64, 3, 3),
        (128, 64, 3, 3),
    )
    assert backbone.layer1[0].conv1.in_channels == 128
    assert backbone.layer1[0].downsample[0].in_channels == 128


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_undilated_resnet_computes_what_torchvision_computes(name):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    ours = ResNetBackbone(name, output_stride=32, multi_grid=()).eval()
    ours.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")})
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        x = reference.maxpool(reference.relu(reference.bn1(reference.conv1(images))))
        res2 = reference.layer1(x)
        res3 = reference.layer2(res2)
        res5 = reference.layer4(reference.layer3(res3))
        features = ours(images)
    for name_, expected in (("res2", res2), ("res3", res3), ("res5", res5)):
        torch.testing.assert_close(features[name_], expected, rtol=1e-5, atol=1e-5)


def test_mobilenet_computes_what_torchvision_computes():
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v3_large(weights=None, dilated=True).eval()
    ours = MobileNetV3Backbone().eval()
    ours.load_state_dict(reference.features.state_dict(prefix="features."))
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected_stride4 = reference.features[:4](images)
        expected = reference.features(images)
        features = ours(images)
    torch.testing.assert_close(features["stride4"], expected_stride4)
    torch.testing.assert_close(features["stride16"], expected)
    assert features["stride16"].shape[-2:] == (math.ceil(64 / 16), math.ceil(64 / 16))


def test_unknown_backbone_and_bad_output_stride_are_errors():
    with pytest.raises(ValueError, match="unknown backbone 'resnet34'"):
        build_backbone("resnet34")
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32"):
        build_backbone("resnet50", output_stride=4)
    with pytest.raises(ValueError, match="output_stride 16 only"):
        build_backbone("mobilenet_v3_large", output_stride=8)
