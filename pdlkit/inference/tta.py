"""Running the network on normalised images: padding to the stride, test-time augmentation, AMP.

Panoptic-DeepLab's outputs are dense maps at the input resolution, so TTA averages maps (DESIGN.md
§5): every view (a scale, optionally mirrored) is run, its outputs are resized back to the original
size and un-mirrored, and the semantic probabilities, the center heatmap and the offsets are averaged.
Offsets are displacements in pixels of the view they were predicted in: resized back to the original
resolution they are multiplied by original size / view size (per axis), and a mirrored view's x
offsets change sign.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F

__all__ = ["pad_to_multiple", "forward_padded", "forward_tta"]


def pad_to_multiple(images: torch.Tensor, divisor: int) -> torch.Tensor:
    """Zero-pad ``[N, C, H, W]`` at the bottom and right to multiples of ``divisor``.

    Zero is the mean colour after normalisation, i.e. the images are padded with the mean, as in
    training.
    """
    if divisor <= 1:
        return images
    height, width = images.shape[-2:]
    pad_h = (-height) % divisor
    pad_w = (-width) % divisor
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h), value=0.0)


def forward_padded(
    model: torch.nn.Module, images: torch.Tensor, size_divisibility: int, amp: bool = False
) -> Dict[str, torch.Tensor]:
    """One forward pass of ``images`` ``[N, 3, H, W]`` (normalised), padded then cropped back.

    Returns float32 ``{"semantic": [N, C, H, W] logits, "center": [N, 1, H, W],
    "offset": [N, 2, H, W] (y, x)}``.
    """
    height, width = images.shape[-2:]
    padded = pad_to_multiple(images, size_divisibility)
    with torch.autocast(device_type=images.device.type, dtype=torch.float16, enabled=amp):
        outputs = model(padded)
    return {
        key: outputs[key][..., :height, :width].float() for key in ("semantic", "center", "offset")
    }


def forward_tta(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    size_divisibility: int = 1,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    amp: bool = False,
) -> Dict[str, torch.Tensor]:
    """Average the network's outputs over ``scales`` x (``flip``: original and mirrored).

    images: ``[N, 3, H, W]`` normalised float.  Returns ``{"semantic", "center", "offset"}`` at
    ``[H, W]`` like :func:`forward_padded`.  With one view (scale 1, no flip) the semantic output is
    the network's logits, unchanged; with several it is the log of the averaged softmax
    probabilities, which the merge's softmax turns back into exactly those probabilities.
    """
    scales = [float(s) for s in scales] or [1.0]
    if any(s <= 0 for s in scales):
        raise ValueError(f"TTA scales must be positive, got {scales}")
    flips = (False, True) if flip else (False,)
    if len(scales) == 1 and scales[0] == 1.0 and not flip:
        return forward_padded(model, images, size_divisibility, amp)

    height, width = images.shape[-2:]
    prob_sum = center_sum = offset_sum = None
    views = 0
    for scale in scales:
        view_h = max(1, int(round(height * scale)))
        view_w = max(1, int(round(width * scale)))
        if (view_h, view_w) == (height, width):
            scaled = images
        else:
            scaled = F.interpolate(images, size=(view_h, view_w), mode="bilinear", align_corners=False)
        for mirrored in flips:
            view = scaled.flip(-1) if mirrored else scaled
            out = forward_padded(model, view, size_divisibility, amp)
            logits, center, offset = out["semantic"], out["center"], out["offset"]
            if mirrored:
                logits, center, offset = logits.flip(-1), center.flip(-1), offset.flip(-1)
                offset = offset * offset.new_tensor([1.0, -1.0]).view(1, 2, 1, 1)
            if (view_h, view_w) != (height, width):
                size = (height, width)
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
                center = F.interpolate(center, size=size, mode="bilinear", align_corners=False)
                offset = F.interpolate(offset, size=size, mode="bilinear", align_corners=False)
                offset = offset * offset.new_tensor([height / view_h, width / view_w]).view(1, 2, 1, 1)
            probs = torch.softmax(logits, dim=1)
            prob_sum = probs if prob_sum is None else prob_sum.add_(probs)
            center_sum = center if center_sum is None else center_sum.add_(center)
            offset_sum = offset if offset_sum is None else offset_sum.add_(offset)
            views += 1
    # tiny floor: log(0) would make the merge's softmax see -inf for a class no view supports
    semantic = torch.log(prob_sum.div_(views).clamp_min_(1e-30))
    return {"semantic": semantic, "center": center_sum.div_(views), "offset": offset_sum.div_(views)}
