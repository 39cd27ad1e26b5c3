"""The Panoptic-DeepLab network: output contract, parameter counts, detectron2 layout, training step."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from pdlkit.config import ModelConfig
from pdlkit.errors import PdlError
from pdlkit.modeling import PanopticDeepLabLoss, build_model
from pdlkit.modeling.aspp import ImagePooling

NUM_CLASSES = 19


def _model(**overrides):
    cfg = ModelConfig(pretrained="none", **overrides)
    return build_model(cfg, NUM_CLASSES)


@pytest.mark.parametrize(
    "backbone, output_stride",
    [("resnet18", 16), ("resnet50", 16), ("resnet50", 8), ("resnet101", 16), ("resnet52", 16), ("mobilenet_v3_large", 16)],
)
def test_outputs_at_input_resolution_for_odd_sizes(backbone, output_stride):
    model = _model(backbone=backbone, output_stride=output_stride).eval()
    assert model.size_divisibility == output_stride
    with torch.no_grad():
        outputs = model(torch.randn(2, 3, 65, 97))
    assert outputs["semantic"].shape == (2, NUM_CLASSES, 65, 97)
    assert outputs["center"].shape == (2, 1, 65, 97)
    assert outputs["offset"].shape == (2, 2, 65, 97)
    assert all(torch.isfinite(v).all() for v in outputs.values())


def test_padding_inside_equals_padding_by_the_caller():
    torch.manual_seed(0)
    model = _model(backbone="resnet18").eval()
    images = torch.randn(1, 3, 65, 97)
    padded = F.pad(images, (0, 112 - 97, 0, 80 - 65))  # zeros to the next multiples of 16
    with torch.no_grad():
        direct = model(images)
        by_caller = model(padded)
    assert by_caller["semantic"].shape[-2:] == (80, 112)
    for key in direct:
        torch.testing.assert_close(direct[key], by_caller[key][..., :65, :97], rtol=0, atol=1e-6)


def test_offsets_are_scaled_to_input_pixels():
    torch.manual_seed(0)
    model = _model(backbone="resnet18").eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = model.backbone(images)
        _, raw_offset = model.instance_branch(features)
        outputs = model(images)
    upsampled = F.interpolate(raw_offset, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(outputs["offset"], upsampled * 4)


# ------------------------------------------------------------------ independent parameter counts
def _conv_bn(k, cin, cout):
    return k * k * cin * cout + 2 * cout


def _dsconv(k, cin, cout):
    return k * k * cin + 2 * cin + cin * cout + 2 * cout


def _aspp(cin, c, ds):
    atrous = 3 * (_dsconv(3, cin, c) if ds else _conv_bn(3, cin, c))
    return _conv_bn(1, cin, c) + atrous + (cin * c + c) + _conv_bn(1, 5 * c, c)


def _fuse(cin, cout, ds):
    return _dsconv(5, cin, cout) if ds else _conv_bn(3, cin, cout) + _conv_bn(3, cout, cout)


def _head(cin, cout, ds):
    return _dsconv(5, cin, cout) if ds else _conv_bn(3, cin, cin) + _conv_bn(3, cin, cout)


def _decoder(channels, projections, decoder, aspp, ds):
    c4, c8, deep = channels
    p8, p4 = projections
    return (
        _aspp(deep, aspp, ds)
        + _conv_bn(1, c8, p8) + _fuse(p8 + aspp, decoder, ds)
        + _conv_bn(1, c4, p4) + _fuse(p4 + decoder, decoder, ds)
    )


def _expected_head_parameters(channels, cfg, ds):
    semantic = _decoder(channels, cfg.semantic_low_level_channels, cfg.semantic_decoder_channels, cfg.aspp_channels, ds)
    semantic += _head(cfg.semantic_decoder_channels, cfg.semantic_head_channels, ds)
    semantic += cfg.semantic_head_channels * NUM_CLASSES + NUM_CLASSES
    instance = _decoder(channels, cfg.instance_low_level_channels, cfg.instance_decoder_channels, cfg.aspp_channels, ds)
    instance += _head(cfg.instance_decoder_channels, cfg.instance_head_channels, False) + cfg.instance_head_channels + 1
    instance += _head(cfg.instance_decoder_channels, cfg.instance_head_channels, ds) + 2 * cfg.instance_head_channels + 2
    return semantic + instance


@pytest.mark.parametrize(
    "backbone, channels, ds",
    [
        ("resnet18", (64, 128, 512), True),
        ("resnet18", (64, 128, 512), False),
        ("resnet50", (256, 512, 2048), True),
        ("resnet50", (256, 512, 2048), False),
        ("mobilenet_v3_large", (24, 40, 960), True),
    ],
)
def test_parameter_count_against_closed_form(backbone, channels, ds):
    cfg = ModelConfig(backbone=backbone, pretrained="none", depthwise_separable=ds)
    model = build_model(cfg, NUM_CLASSES)
    backbone_params = sum(p.numel() for p in model.backbone.parameters())
    head_params = sum(p.numel() for p in model.parameters()) - backbone_params
    assert head_params == _expected_head_parameters(channels, cfg, ds)


def test_detectron2_checkpoint_layout_r52_dsconv():
    """The module names the detectron2 importer maps onto (docstring of panoptic_deeplab.py)."""
    cfg = ModelConfig(
        backbone="resnet52",
        pretrained="none",
        instance_low_level_channels=(64, 32),
        depthwise_separable=True,
        aspp_pooling_size=(512, 1024),
    )
    state = build_model(cfg, NUM_CLASSES).state_dict()
    expected_shapes = {
        "backbone.conv3.weight": (128, 64, 3, 3),
        "backbone.layer4.2.conv2.weight": (512, 512, 3, 3),
        "semantic_branch.decoder.res5.project_conv.convs.0.weight": (256, 2048, 1, 1),
        "semantic_branch.decoder.res5.project_conv.convs.1.depthwise.weight": (2048, 1, 3, 3),
        "semantic_branch.decoder.res5.project_conv.convs.1.pointwise.norm.running_var": (256,),
        "semantic_branch.decoder.res5.project_conv.convs.4.1.bias": (256,),
        "semantic_branch.decoder.res5.project_conv.project.weight": (256, 1280, 1, 1),
        "semantic_branch.decoder.res3.project_conv.weight": (64, 512, 1, 1),
        "semantic_branch.decoder.res3.fuse_conv.depthwise.weight": (320, 1, 5, 5),
        "semantic_branch.decoder.res2.fuse_conv.pointwise.weight": (256, 288, 1, 1),
        "semantic_branch.head.pointwise.weight": (256, 256, 1, 1),
        "semantic_branch.predictor.weight": (NUM_CLASSES, 256, 1, 1),
        "instance_branch.decoder.res2.fuse_conv.depthwise.weight": (160, 1, 5, 5),
        "instance_branch.center_head.0.weight": (128, 128, 3, 3),
        "instance_branch.center_head.1.norm.weight": (32,),
        "instance_branch.center_predictor.weight": (1, 32, 1, 1),
        "instance_branch.offset_head.depthwise.weight": (128, 1, 5, 5),
        "instance_branch.offset_predictor.bias": (2,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert "semantic_branch.decoder.res3.project_conv.bias" not in state  # normed convs have no bias


def test_two_3x3_convs_without_depthwise_separable():
    state = _model(backbone="resnet18", depthwise_separable=False).state_dict()
    assert tuple(state["semantic_branch.decoder.res2.fuse_conv.0.weight"].shape) == (256, 32 + 256, 3, 3)
    assert tuple(state["semantic_branch.decoder.res2.fuse_conv.1.weight"].shape) == (256, 256, 3, 3)
    assert tuple(state["semantic_branch.decoder.res5.project_conv.convs.3.weight"].shape) == (256, 512, 3, 3)
    assert tuple(state["instance_branch.offset_head.1.weight"].shape) == (32, 128, 3, 3)


def test_aspp_rates_double_at_output_stride_8():
    model = _model(backbone="resnet18", output_stride=8)
    aspp = model.semantic_branch.decoder["res5"]["project_conv"]
    assert [aspp.convs[i].depthwise.dilation[0] for i in (1, 2, 3)] == [12, 24, 36]


def test_aspp_pooling_window_from_crop_size():
    torch.manual_seed(0)
    global_pool = _model(backbone="resnet18").eval()
    windowed = _model(backbone="resnet18", aspp_pooling_size=(64, 64)).eval()
    windowed.load_state_dict(global_pool.state_dict())
    pooling = windowed.semantic_branch.decoder["res5"]["project_conv"].convs[4][0]
    assert isinstance(pooling, ImagePooling) and pooling.kernel_size == (4, 4)
    with torch.no_grad():
        at_crop = torch.randn(1, 3, 64, 64)
        torch.testing.assert_close(windowed(at_crop)["semantic"], global_pool(at_crop)["semantic"])
        larger = torch.randn(1, 3, 128, 128)  # an 8x8 feature map: 4x4 windows differ from the global mean
        assert not torch.allclose(windowed(larger)["semantic"], global_pool(larger)["semantic"])
        smaller = torch.randn(1, 3, 32, 32)  # the window is clipped to the 2x2 map: global pooling again
        torch.testing.assert_close(windowed(smaller)["semantic"], global_pool(smaller)["semantic"])


@pytest.mark.parametrize("norm, kind", [("GN", torch.nn.GroupNorm), ("SyncBN", torch.nn.SyncBatchNorm)])
def test_norm_choice(norm, kind):
    model = _model(backbone="resnet18", norm=norm).eval()
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm, torch.nn.SyncBatchNorm))]
    assert norms and all(isinstance(m, kind) for m in norms)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32))["semantic"].shape == (1, NUM_CLASSES, 32, 32)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"backbone": "resnet34"}, "unknown backbone 'resnet34'"),
        ({"norm": "LN"}, "model.norm must be one of"),
        ({"output_stride": 4}, "output_stride must be 8, 16 or 32"),
        ({"aspp_pooling_size": (500, 1000)}, "aspp_pooling_size"),
        ({"semantic_low_level_channels": (64,)}, "semantic_low_level_channels needs two widths"),
    ],
)
def test_bad_model_settings_are_user_errors(overrides, message):
    with pytest.raises(PdlError, match=message):
        _model(**overrides)


def test_one_optimisation_step_lowers_the_loss():
    torch.manual_seed(0)
    model = _model(backbone="resnet18", aspp_dropout=0.0).train()
    loss_fn = PanopticDeepLabLoss()
    images = torch.randn(2, 3, 64, 64)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    semantic = (xx >= 32).long().expand(2, 64, 64).clone()
    semantic[:, :4] = 255
    center = torch.exp(-((yy - 20) ** 2 + (xx - 44) ** 2) / (2 * 8.0**2)).expand(2, 64, 64)
    offset = torch.stack([20 - yy, 44 - xx]).expand(2, 2, 64, 64) * (xx >= 32)
    ones = torch.ones(2, 64, 64)
    targets = {
        "semantic": semantic,
        "center": center,
        "offset": offset,
        "semantic_weights": ones,
        "center_weights": ones,
        "offset_weights": (xx >= 32).float().expand(2, 64, 64),
    }
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = loss_fn(model(images), targets)
    before["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    optimizer.step()
    after = loss_fn(model(images), targets)
    assert after["total"].item() < before["total"].item()


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
def test_a_traced_model_serves_other_input_sizes():
    """Export traces one graph; padding and cropping must follow the input size, not the traced one."""
    torch.manual_seed(0)
    model = _model(backbone="resnet18").eval()
    with torch.no_grad(), pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(model, torch.randn(1, 3, 64, 96), strict=False)
    images = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        expected, got = model(images), traced(images)
    for key in expected:
        assert got[key].shape == expected[key].shape
        torch.testing.assert_close(got[key], expected[key])
