"""Running the network on normalised images: test resize, padding, test-time augmentation, precision.

Test geometry (``TestConfig``), as detectron2 does it when configured alike: the uint8 image is resized
so that its shorter side is ``min_size`` unless its longer side would then exceed ``max_size``
(:func:`shortest_edge_shape`, PIL bilinear: :func:`resize_images`), normalised, zero-padded at the bottom
and right to a multiple of ``size_divisibility`` (:func:`pad_to_multiple`), run, cropped back to the
resized size and resized back to the input size (:func:`outputs_to_size`).

Panoptic-DeepLab's outputs are dense maps at the input resolution, so TTA averages maps: every
view (a scale, optionally mirrored) is run, its outputs are resized back to the original
size and un-mirrored, and the semantic probabilities, the center heatmap and the offsets are averaged.
Offsets are displacements in pixels of the view they were predicted in: resized back to the original
resolution they are multiplied by original size / view size (per axis), and a mirrored view's x
offsets change sign.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "PRECISIONS",
    "shortest_edge_shape",
    "resize_images",
    "outputs_to_size",
    "pad_to_multiple",
    "forward_padded",
    "forward_tta",
]

# precision name -> autocast dtype (None: plain float32)
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def shortest_edge_shape(height: int, width: int, min_size: int, max_size: int) -> Tuple[int, int]:
    """(new height, new width): shorter side -> ``min_size``, then the longer side capped at ``max_size``.

    detectron2's ``ResizeShortestEdge`` rule: both sides are scaled as floats and rounded half up at
    the end.  ``min_size`` 0: no resize; ``max_size`` 0: no cap.
    """
    if min_size <= 0:
        return height, width
    scale = float(min_size) / min(height, width)
    new_h, new_w = (float(min_size), scale * width) if height < width else (scale * height, float(min_size))
    if max_size > 0 and max(new_h, new_w) > max_size:
        cap = float(max_size) / max(new_h, new_w)
        new_h, new_w = new_h * cap, new_w * cap
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_images(batch: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """[N, H, W, 3] uint8 -> [N, size[0], size[1], 3] uint8 with PIL's bilinear filter (which, unlike
    ``F.interpolate``, antialiases when shrinking) — the resize detectron2 applies to test images."""
    from PIL import Image

    if tuple(batch.shape[1:3]) == tuple(size):
        return batch
    resized = [np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR)) for image in batch]
    return np.stack(resized)


def outputs_to_size(outputs: Dict[str, torch.Tensor], size: Tuple[int, int], *,
                    scale_offsets: bool = True) -> Dict[str, torch.Tensor]:
    """Resize the network's output maps ``[N, *, h, w]`` to ``size`` (bilinear, align_corners=False).

    ``scale_offsets`` multiplies the offsets by size / (h, w) per axis, so they stay displacements in
    pixels of the new size; detectron2 resizes the offset map without it (False).
    """
    height, width = outputs["center"].shape[-2:]
    if (height, width) == tuple(size):
        return outputs
    resized = {key: F.interpolate(value, size=size, mode="bilinear", align_corners=False)
               for key, value in outputs.items()}
    if scale_offsets:
        ratio = resized["offset"].new_tensor([size[0] / height, size[1] / width]).view(1, 2, 1, 1)
        resized["offset"] = resized["offset"] * ratio
    return resized


def pad_to_multiple(images: torch.Tensor, divisor: int) -> torch.Tensor:
    """Zero-pad ``[N, C, H, W]`` at the bottom and right to multiples of ``divisor`` (<= 1: no padding).

    Zero is the mean colour after normalisation, i.e. the images are padded with the mean, as in
    training and as detectron2's ``ImageList.from_tensors`` does.
    """
    if divisor <= 1:
        return images
    height, width = images.shape[-2:]
    pad_h = (-height) % divisor
    pad_w = (-width) % divisor
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h), value=0.0)


def _autocast(device_type: str, precision: str):
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    return torch.autocast(device_type=device_type, dtype=dtype or torch.float32, enabled=dtype is not None)


def forward_padded(
    model, images: torch.Tensor, size_divisibility: int, amp: bool = False, *, precision: str = "fp32"
) -> Dict[str, torch.Tensor]:
    """One forward pass of ``images`` ``[N, 3, H, W]`` (normalised), padded then cropped back.

    ``precision`` "fp16" / "bf16" runs the network under autocast (``amp`` True is "fp16").  Returns
    float32 ``{"semantic": [N, C, H, W] logits, "center": [N, 1, H, W], "offset": [N, 2, H, W] (y, x)}``.
    """
    height, width = images.shape[-2:]
    padded = pad_to_multiple(images, size_divisibility)
    with _autocast(images.device.type, "fp16" if amp else precision):
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
    precision: str = "fp32",
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
        return forward_padded(model, images, size_divisibility, amp, precision=precision)

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
            out = forward_padded(model, view, size_divisibility, amp, precision=precision)
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
