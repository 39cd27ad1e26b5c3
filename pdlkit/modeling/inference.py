"""The network made fast for inference: batch norm folded into convs, channels-last, torch.compile.

Every step keeps the network's function (float32 outputs equal plain eager float32 within float
rounding, tested to 1e-3 on the logits):

- :func:`fold_batchnorm`: an eval-mode batch norm after a conv is an affine map per channel, so it
  folds into the conv's weight and bias (w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma /
  sqrt(var + eps) + beta); the norm becomes ``nn.Identity``.  Pairs found: :class:`ConvNormAct` and
  its ``norm``, the ResNets' ``conv{k}`` / ``bn{k}`` siblings, and a conv followed by a batch norm in
  an ``nn.Sequential`` (ResNet shortcuts, MobileNetV3 blocks).
- channels-last (NHWC) memory format: oneDNN's convolutions run without reordering the tensors.
- ``torch.compile``: fuses the pointwise tails; the first call of each input size compiles (slow).
- fused oneDNN convs (:func:`fuse_for_cpu`, with both of the above on the CPU): each conv's ReLU and
  the ResNet blocks' residual sum run inside the conv, weights are packed once into oneDNN's layout,
  and the ASPP's dilated depthwise convs run space-to-batch (:class:`AtrousDepthwise`), which
  oneDNN's depthwise kernel does not cover at rates 12 and 18.
- bfloat16 on the CPU (``precision="bf16"``): the weights are converted once and the network runs
  in bfloat16 (oneDNN's AVX-512 BF16 / AMX kernels), its outputs cast back to float32.  This is
  several times faster than CPU autocast, which re-casts the weights at every call; it is not exact
  (logits within ~1e-2 of float32), so it is opt-in.

:func:`prepare_network` applies them to a copy (the caller's model, e.g. the trainer's, is untouched)
and returns the callable the :class:`~pdlkit.inference.Predictor` runs, with the padding it must do.
"""
from __future__ import annotations

import copy
import inspect
import math
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .backbones import BasicBlock, Bottleneck
from .layers import ConvNormAct

__all__ = ["fold_batchnorm", "fuse_for_cpu", "prepare_network", "InferenceNetwork"]

_BATCH_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)


def _fold_conv_norm_act(module: ConvNormAct) -> ConvNormAct:
    fused = fuse_conv_bn_eval(module, module.norm)  # a deep copy with the folded weight and bias
    fused.norm = nn.Identity()
    return fused


def _fold_siblings(parent: nn.Module) -> int:
    """conv{k} + bn{k} children of one module (the ResNets' stems and blocks)."""
    folded = 0
    for name, child in list(parent.named_children()):
        if not (name.startswith("conv") and isinstance(child, nn.Conv2d) and not isinstance(child, ConvNormAct)):
            continue
        norm = getattr(parent, "bn" + name[len("conv"):], None)
        if isinstance(norm, _BATCH_NORMS):
            setattr(parent, name, fuse_conv_bn_eval(child, norm))
            setattr(parent, "bn" + name[len("conv"):], nn.Identity())
            folded += 1
    return folded


def _fold_sequential(parent: nn.Sequential) -> int:
    """A plain conv directly followed by a batch norm inside an nn.Sequential."""
    folded = 0
    names = [name for name, _ in parent.named_children()]
    for first, second in zip(names, names[1:]):
        conv, norm = parent._modules[first], parent._modules[second]
        if isinstance(conv, nn.Conv2d) and not isinstance(conv, ConvNormAct) and isinstance(norm, _BATCH_NORMS):
            parent._modules[first] = fuse_conv_bn_eval(conv, norm)
            parent._modules[second] = nn.Identity()
            folded += 1
    return folded


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode batch norm that follows a conv into that conv, in place.

    ``model`` must be in eval mode (the running statistics are what is folded).  Returns the number of
    folded norms.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (model.eval())")
    folded = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ConvNormAct) and isinstance(child.norm, _BATCH_NORMS):
                parent._modules[name] = _fold_conv_norm_act(child)
                folded += 1
        folded += _fold_siblings(parent)
        if isinstance(parent, nn.Sequential):
            folded += _fold_sequential(parent)
    return folded


def _mkldnn_fusion_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class PackedConv(nn.Module):
    """A folded conv run by oneDNN with its ReLU (and a residual sum) fused into the conv's epilogue,
    its weight reordered once per input size into oneDNN's blocked layout.

    Unfused, every ReLU and residual add is a separate pass over the feature map and a separate
    parallel region (costly when the cores are shared), and every call reorders the weight again.
    ``forward(x [N, C, H, W], other=None)`` -> relu?(conv(x) (+ other)), the dtype of ``x``.
    """

    def __init__(self, conv: nn.Conv2d, relu: bool):
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach(), requires_grad=False)
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.relu = relu
        self._packed: Tuple[tuple, Optional[torch.Tensor]] = ((), None)  # (input shape + dtypes, weight)

    def __getstate__(self):
        # oneDNN's opaque tensors cannot be copied or pickled: a copy packs again on its first call
        state = self.__dict__.copy()
        state["_packed"] = ((), None)
        return state

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        key = (*x.shape, x.dtype, self.weight.data_ptr(), self.weight.dtype)  # a .to() after packing repacks
        if self._packed[0] != key:
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, self.padding, self.stride, self.dilation, self.groups, list(x.shape))
            self._packed = (key, packed)
        return self._packed[1]

    def forward(self, x: torch.Tensor, other: Optional[torch.Tensor] = None) -> torch.Tensor:
        weight = self._packed_weight(x)
        if other is None:
            return torch.ops.mkldnn._convolution_pointwise(
                x, weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
                "relu" if self.relu else "none", [], "")
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, other, weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
            "add", None, "relu" if self.relu else "none", [], "")


class AtrousDepthwise(nn.Module):
    """A dilated depthwise conv (stride 1, "same" padding) as the undilated conv on the ``d x d``
    interleaved sub-grids of the map (space-to-batch), then the sub-grids put back.

    oneDNN's fast depthwise kernel does not take the ASPP's large rates (12, 18) on small maps and
    falls back to a grouped or GEMM convolution tens of times slower; the two re-layouts cost far
    less.  Exact: output pixel (a d + r, b d + s) only ever reads sub-grid (r, s), and the zero
    padding of each sub-grid (plus the zero rows and columns that round H and W up to multiples of
    d) is the zero padding of the dilated conv.  [N, C, H, W] channels-last -> the same.
    """

    def __init__(self, conv: nn.Conv2d, relu: bool):
        super().__init__()
        self.rate = conv.dilation[0]
        undilated = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                              padding=conv.kernel_size[0] // 2, groups=conv.groups, bias=conv.bias is not None)
        undilated.weight, undilated.bias = conv.weight, conv.bias
        self.conv = PackedConv(undilated, relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        d = self.rate
        hb, wb = -(-h // d), -(-w // d)
        x = F.pad(x, (0, wb * d - w, 0, hb * d - h)).permute(0, 2, 3, 1)  # [n, H', W', c]
        grids = x.reshape(n, hb, d, wb, d, c).permute(0, 2, 4, 1, 3, 5).reshape(n * d * d, hb, wb, c)
        y = self.conv(grids.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # [n d d, hb, wb, c]
        out = torch.empty((n, hb * d, wb * d, c), dtype=y.dtype, device=y.device)
        out.view(n, hb, d, wb, d, c).copy_(y.reshape(n, d, d, hb, wb, c).permute(0, 3, 1, 4, 2, 5))
        return out[:, :h, :w].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def _is_atrous_depthwise(conv: nn.Conv2d) -> bool:
    k, d = conv.kernel_size, conv.dilation
    return (conv.groups == conv.in_channels == conv.out_channels and d[0] == d[1] > 1 and k[0] == k[1]
            and k[0] % 2 == 1 and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (d[0] * (k[0] // 2),) * 2)


def _fusable(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and (not isinstance(conv, ConvNormAct) or isinstance(conv.norm, nn.Identity)))


def _fused_conv(conv: nn.Conv2d, relu: bool) -> nn.Module:
    return AtrousDepthwise(conv, relu) if _is_atrous_depthwise(conv) else PackedConv(conv, relu)


class _FusedBlock(nn.Module):
    """A folded ResNet block: every conv with its ReLU fused, the last one with the residual sum and
    the final ReLU.  [N, C, H, W] -> [N, C', H', W']."""

    def __init__(self, block: nn.Module):
        super().__init__()
        convs = [block.conv1, block.conv2] + ([block.conv3] if isinstance(block, Bottleneck) else [])
        self.convs = nn.ModuleList(PackedConv(conv, relu=True) for conv in convs)
        self.shortcut = None if block.downsample is None else PackedConv(block.downsample[0], relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        for conv in self.convs[:-1]:
            x = conv(x)
        return self.convs[-1](x, identity)


def _block_is_folded(block: nn.Module) -> bool:
    names = ("1", "2", "3") if isinstance(block, Bottleneck) else ("1", "2")
    shortcut = block.downsample
    return (all(_fusable(getattr(block, "conv" + k)) and isinstance(getattr(block, "bn" + k), nn.Identity)
                for k in names)
            and (shortcut is None or (len(shortcut) == 2 and _fusable(shortcut[0])
                                      and isinstance(shortcut[1], nn.Identity))))


def fuse_for_cpu(model: nn.Module) -> int:
    """Replace, in place, the folded ResNet blocks and the folded :class:`ConvNormAct` convs of a
    :func:`fold_batchnorm`-ed model by oneDNN convs with fused ReLU / residual sum (and dilated
    depthwise convs by :class:`AtrousDepthwise`).  Returns the number of modules replaced (0 where
    this PyTorch has no oneDNN).  For a CPU, channels-last network; outputs equal within rounding."""
    if not _mkldnn_fusion_available():
        return 0
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (BasicBlock, Bottleneck)) and type(child).forward in (
                    BasicBlock.forward, Bottleneck.forward) and _block_is_folded(child):
                parent._modules[name] = _FusedBlock(child)
            elif isinstance(child, ConvNormAct) and type(child).forward is ConvNormAct.forward and _fusable(child):
                parent._modules[name] = _fused_conv(child, relu=child.activation)
            else:
                continue
            replaced += 1
    return replaced


class InferenceNetwork(nn.Module):
    """Calls ``model(images)`` (or ``model(images, size_divisibility=1)`` when the caller pads) in the
    chosen memory format; returns the output dict with contiguous (NCHW) tensors."""

    def __init__(self, model: nn.Module, *, caller_pads: bool, channels_last: bool,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model = model
        self.caller_pads = caller_pads
        self.channels_last = channels_last
        self.dtype = dtype
        self.size_divisibility = getattr(model, "size_divisibility", 1)

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        images = images.to(self.dtype)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        outputs = self.model(images, size_divisibility=1) if self.caller_pads else self.model(images)
        return {key: _float_nchw(value) for key, value in outputs.items()}


def _float_nchw(value: torch.Tensor) -> torch.Tensor:
    """float32 and NCHW-contiguous in one pass (cast and re-layout in the same copy)."""
    if value.dtype == torch.float32 and value.is_contiguous():
        return value
    return torch.empty(value.shape, dtype=torch.float32, device=value.device).copy_(value)


def _takes_size_divisibility(model: nn.Module) -> bool:
    try:
        return "size_divisibility" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def prepare_network(
    model: nn.Module, size_divisibility: int = -1, *, fold_bn: bool = False, channels_last: bool = False,
    compile: bool = False, bf16_weights: bool = False,
) -> Tuple[int, Callable[[torch.Tensor], Dict[str, torch.Tensor]]]:
    """(the multiple the caller must pad inputs to, the network to call) for an eval-mode ``model``.

    size_divisibility: -1 the model's own (its ``size_divisibility`` attribute, the output stride);
    0 no padding; N pad to multiples of N.  A model whose ``forward`` takes ``size_divisibility`` is
    told not to pad again; any other network (e.g. an exported ONNX graph) pads to its own stride
    inside, so the caller pads to a common multiple of both.  ``bf16_weights`` runs a bfloat16 copy
    (and implies ``fold_bn`` and ``channels_last``).  With both of those on the CPU (and no
    ``compile``), :func:`fuse_for_cpu` fuses the ReLUs and residual sums into the convs.
    The network takes float32 images ``[N, 3, H, W]`` and returns float32 maps.
    """
    own = int(getattr(model, "size_divisibility", 1) or 1)
    wanted = own if size_divisibility < 0 else max(1, int(size_divisibility))
    caller_pads = _takes_size_divisibility(model)
    divisor = wanted if caller_pads else wanted * own // math.gcd(wanted, own)
    if not any(True for _ in model.parameters()):  # e.g. an onnxruntime session: nothing to rewrite
        fold_bn = channels_last = bf16_weights = False
    if bf16_weights:  # the bf16 kernels want the folded, channels-last, fused network (folding is exact)
        fold_bn = channels_last = True
    if not (fold_bn or channels_last or compile or caller_pads or bf16_weights):
        return divisor, model
    if fold_bn or channels_last or bf16_weights:
        model = copy.deepcopy(model)
    if fold_bn:
        fold_batchnorm(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if bf16_weights else torch.float32
    model = model.to(dtype)
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    if fold_bn and channels_last and on_cpu and not compile:  # torch.compile fuses by itself
        fuse_for_cpu(model)
    network = InferenceNetwork(model, caller_pads=caller_pads, channels_last=channels_last, dtype=dtype).eval()
    if compile:
        network = torch.compile(network, dynamic=False)
    return divisor, network
