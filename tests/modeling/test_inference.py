"""The network made fast for inference (pdlkit.modeling.inference): batch-norm folding, channels-last,
bfloat16 and torch.compile keep the outputs of plain eager float32."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pdlkit.config import Config
from pdlkit.modeling import build_model
from pdlkit.modeling.inference import InferenceNetwork, fold_batchnorm, prepare_network


def _small_model(backbone: str, depthwise_separable: bool = True, seed: int = 0) -> nn.Module:
    cfg = Config().model
    cfg.backbone, cfg.pretrained, cfg.depthwise_separable = backbone, "none", depthwise_separable
    cfg.aspp_channels = cfg.semantic_decoder_channels = cfg.semantic_head_channels = 32
    cfg.instance_decoder_channels = cfg.instance_head_channels = 16
    torch.manual_seed(seed)
    model = build_model(cfg, 5)
    # trained-looking statistics, so that folding has something to fold
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(module.bias.shape, generator=generator) * 0.2 - 0.1)
    for predictor in (model.semantic_branch.predictor, model.instance_branch.center_predictor,
                      model.instance_branch.offset_predictor):
        nn.init.normal_(predictor.weight, 0.0, 2.0)  # outputs of order 1, not ~0
    return model.eval()


@pytest.mark.parametrize("backbone,dsconv", [("resnet18", True), ("resnet52", False), ("mobilenet_v3_large", True)])
def test_fold_batchnorm_keeps_the_outputs(backbone, dsconv):
    model = _small_model(backbone, dsconv)
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == norms > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = model(images), folded(images)
    assert want["semantic"].abs().max() > 0.5  # a real signal
    for key in ("semantic", "center", "offset"):
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-3)


def test_fold_batchnorm_refuses_training_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(_small_model("resnet18").train())


@pytest.mark.parametrize("options", [dict(fold_bn=True), dict(channels_last=True),
                                     dict(fold_bn=True, channels_last=True)])
def test_prepared_network_equals_eager_fp32(options):
    model = _small_model("resnet18")
    reference = copy.deepcopy(model.state_dict())
    divisor, network = prepare_network(model, -1, **options)
    assert divisor == 16 and isinstance(network, InferenceNetwork)
    images = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = model(images), network(images)
    for key in ("semantic", "center", "offset"):
        assert got[key].is_contiguous() and got[key].dtype == torch.float32
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-3)
    # the caller's model is untouched (e.g. the trainer's, which keeps training)
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


def test_bf16_network_is_close_but_not_exact():
    model = _small_model("resnet18")
    _, network = prepare_network(model, -1, fold_bn=True, channels_last=True, bf16_weights=True)
    assert next(network.model.parameters()).dtype == torch.bfloat16
    images = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want, got = model(images)["semantic"], network(images)["semantic"]
    assert got.dtype == torch.float32
    error = (got - want).abs().max().item()
    assert 0 < error < 0.1 * want.abs().max().item()


def test_size_divisibility_choices():
    model = _small_model("resnet18")
    assert prepare_network(model, -1)[0] == 16
    assert prepare_network(model, 0)[0] == 1
    assert prepare_network(model, 640)[0] == 640

    class Padding(nn.Module):  # a network that pads by itself (like an exported ONNX graph)
        size_divisibility = 16

        def forward(self, images):
            return {"semantic": images}

    divisor, network = prepare_network(Padding(), 24)
    assert divisor == 48 and isinstance(network, Padding)


@pytest.mark.slow
def test_compiled_network_equals_eager():
    model = _small_model("resnet18")
    _, network = prepare_network(model, -1, fold_bn=True, channels_last=True, compile=True)
    images = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want, got = model(images), network(images)
    for key in ("semantic", "center", "offset"):
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-3)


needs_onednn = pytest.mark.skipif(not (torch.backends.mkldnn.is_available()
                                       and hasattr(torch.ops.mkldnn, "_convolution_pointwise")),
                                  reason="this PyTorch has no oneDNN fused convolutions")


@needs_onednn
@pytest.mark.parametrize("rate,kernel,size", [(2, 3, (9, 14)), (6, 3, (16, 32)), (12, 3, (7, 11)),
                                              (18, 3, (32, 64)), (4, 5, (13, 10))])
@pytest.mark.parametrize("relu", [False, True])
def test_atrous_depthwise_equals_the_dilated_conv(rate, kernel, size, relu):
    from pdlkit.modeling.inference import AtrousDepthwise

    torch.manual_seed(rate)
    conv = nn.Conv2d(8, 8, kernel, padding=rate * (kernel // 2), dilation=rate, groups=8).eval()
    x = torch.randn(2, 8, *size).contiguous(memory_format=torch.channels_last)
    want = conv(x)
    want = torch.relu(want) if relu else want
    with torch.no_grad():
        got = AtrousDepthwise(conv, relu)(x)
    assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@needs_onednn
def test_packed_conv_fuses_relu_and_the_residual_sum_and_repacks_per_size():
    from pdlkit.modeling.inference import PackedConv

    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 3, stride=2, padding=2, dilation=2).eval()
    packed = PackedConv(conv, relu=True)
    with torch.no_grad():
        for size in ((20, 30), (11, 17), (20, 30)):
            x = torch.randn(1, 16, *size).contiguous(memory_format=torch.channels_last)
            other = torch.randn_like(conv(x)).contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(packed(x), torch.relu(conv(x)), rtol=0, atol=1e-5)
            torch.testing.assert_close(packed(x, other), torch.relu(conv(x) + other), rtol=0, atol=1e-5)
    plain = PackedConv(conv, relu=False)
    x = torch.randn(1, 16, 9, 9).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert (plain(x) < 0).any()
        torch.testing.assert_close(plain(x), conv(x), rtol=0, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("backbone,dsconv", [("resnet18", True), ("resnet50", True), ("resnet52", False),
                                             ("mobilenet_v3_large", True)])
def test_fused_network_equals_eager_fp32(backbone, dsconv):
    from pdlkit.modeling.inference import AtrousDepthwise

    model = _small_model(backbone, dsconv)
    _, network = prepare_network(model, -1, fold_bn=True, channels_last=True)
    kinds = {type(m).__name__ for m in network.modules()}
    assert "PackedConv" in kinds
    # the ASPP's depthwise-separable atrous branches (rates 6, 12, 18) run space-to-batch
    assert (sum(isinstance(m, AtrousDepthwise) for m in network.modules()) == 6) == dsconv
    if backbone.startswith("resnet"):
        assert "_FusedBlock" in kinds and not kinds & {"BasicBlock", "Bottleneck"}
    images = torch.randn(1, 3, 80, 112, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want, got = model(images), network(images)
        copy.deepcopy(network)(images)  # packed weights survive a copy
    for key in ("semantic", "center", "offset"):
        # within 1e-3, or float32 rounding of the deep-stem model's logits of ~100
        torch.testing.assert_close(got[key], want[key], rtol=2e-5, atol=1e-3)
