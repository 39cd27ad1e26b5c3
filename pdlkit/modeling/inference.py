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
from typing import Callable, Dict, Tuple

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .layers import ConvNormAct

__all__ = ["fold_batchnorm", "prepare_network", "InferenceNetwork"]

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
        return {key: value.float().contiguous() for key, value in outputs.items()}


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
    inside, so the caller pads to a common multiple of both.  ``bf16_weights`` runs a bfloat16 copy.
    The network takes float32 images ``[N, 3, H, W]`` and returns float32 maps.
    """
    own = int(getattr(model, "size_divisibility", 1) or 1)
    wanted = own if size_divisibility < 0 else max(1, int(size_divisibility))
    caller_pads = _takes_size_divisibility(model)
    divisor = wanted if caller_pads else wanted * own // math.gcd(wanted, own)
    if not any(True for _ in model.parameters()):  # e.g. an onnxruntime session: nothing to rewrite
        fold_bn = channels_last = bf16_weights = False
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
    network = InferenceNetwork(model, caller_pads=caller_pads, channels_last=channels_last, dtype=dtype).eval()
    if compile:
        network = torch.compile(network, dynamic=False)
    return divisor, network
