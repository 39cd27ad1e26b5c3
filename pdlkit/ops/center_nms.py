"""Instance-center NMS on the predicted center heatmap (semantics: docs/ops.md).

Semantics (those of detectron2's Panoptic-DeepLab ``find_instance_center``): values ``<= threshold``
become -1; a pixel survives when it equals the maximum of its ``nms_kernel x nms_kernel`` window
(windows clipped at the border); non-survivors become -1; with ``k = min(top_k, H * W)`` and ``kth``
the k-th largest value of that map, the centers are the pixels whose value is ``> max(kth, 0)``.
So when ``top_k`` or more positive peaks survive, at most ``top_k - 1`` are kept.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F

from ._backend import use_native

__all__ = [
    "find_instance_centers",
    "find_instance_centers_reference",
    "find_instance_centers_batched",
    "check_nms_params",
    "heatmap_2d",
]


def check_nms_params(threshold: float, nms_kernel: int, top_k: int) -> None:
    """Raise ValueError on an even or non-positive ``nms_kernel``, ``top_k < 1`` or a NaN threshold."""
    if isinstance(nms_kernel, bool) or not isinstance(nms_kernel, int) or nms_kernel < 1 or nms_kernel % 2 == 0:
        raise ValueError(f"nms_kernel must be an odd integer >= 1, got {nms_kernel!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    threshold = float(threshold)
    if threshold != threshold:
        raise ValueError("threshold must be a number, got NaN")


def heatmap_2d(heatmap: torch.Tensor, name: str = "heatmap", check_values: bool = True) -> torch.Tensor:
    """Validate a float32 ``[H, W]`` or ``[1, H, W]`` heatmap and return it as ``[H, W]`` (a view)."""
    if not isinstance(heatmap, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(heatmap).__name__}")
    if heatmap.dtype != torch.float32:
        raise ValueError(f"{name} must be float32, got {heatmap.dtype}")
    if heatmap.dim() == 3:
        if heatmap.shape[0] != 1:
            raise ValueError(f"{name} must be [H, W] or [1, H, W], got shape {tuple(heatmap.shape)}")
        heatmap = heatmap[0]
    elif heatmap.dim() != 2:
        raise ValueError(f"{name} must be [H, W] or [1, H, W], got shape {tuple(heatmap.shape)}")
    if check_values and heatmap.numel() > 0 and bool(torch.isnan(heatmap).any()):
        raise ValueError(f"{name} contains NaN")
    return heatmap


def find_instance_centers(
    heatmap: torch.Tensor,
    *,
    threshold: float = 0.1,
    nms_kernel: int = 7,
    top_k: int = 200,
    backend: str = "auto",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Instance centers of one center heatmap.

    Args:
        heatmap: ``[H, W]`` or ``[1, H, W]`` float32 center heatmap (any layout, CPU or CUDA).
        threshold: values ``<= threshold`` are never centers.
        nms_kernel: odd side of the square NMS window.
        top_k: at most ``top_k - 1`` centers when ``top_k`` or more peaks survive (see module doc).
        backend: ``"auto" | "native" | "reference"``.

    Returns:
        ``centers`` ``[K, 2]`` int64 ``(y, x)`` in raster order and ``scores`` ``[K]`` float32 (the
        heatmap values at the centers), on the heatmap's device.
    """
    check_nms_params(threshold, nms_kernel, top_k)
    heatmap = heatmap_2d(heatmap, check_values=False)
    native = use_native(backend, heatmap.device)
    if native:
        # The native op checks for NaN while it reads the heatmap; the reference needs its own pass.
        return torch.ops.pdlkit.find_instance_centers(heatmap, float(threshold), nms_kernel, top_k)
    return _reference_2d(heatmap_2d(heatmap), float(threshold), nms_kernel, top_k)


def find_instance_centers_reference(
    heatmap: torch.Tensor,
    *,
    threshold: float = 0.1,
    nms_kernel: int = 7,
    top_k: int = 200,
    backend: str = "reference",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch :func:`find_instance_centers` (same signature; ``backend`` is ignored)."""
    check_nms_params(threshold, nms_kernel, top_k)
    return _reference_2d(heatmap_2d(heatmap), float(threshold), nms_kernel, top_k)


def _reference_2d(heatmap: torch.Tensor, threshold: float, nms_kernel: int, top_k: int):
    height, width = heatmap.shape
    if heatmap.numel() == 0:
        return (torch.zeros((0, 2), dtype=torch.int64, device=heatmap.device),
                torch.zeros((0,), dtype=torch.float32, device=heatmap.device))
    thresholded = F.threshold(heatmap, threshold, -1.0)
    # max_pool2d pads with -inf, so windows are clipped at the border.
    pooled = F.max_pool2d(thresholded[None, None], kernel_size=nms_kernel, stride=1,
                          padding=(nms_kernel - 1) // 2)[0, 0]
    suppressed = thresholded.clone()
    suppressed[thresholded != pooled] = -1.0
    k = min(top_k, height * width)
    kth = torch.topk(suppressed.flatten(), k).values[-1].clamp(min=0)
    centers = torch.nonzero(suppressed > kth)
    scores = heatmap[centers[:, 0], centers[:, 1]].to(torch.float32)
    return centers, scores


def _heatmaps_3d(heatmaps: torch.Tensor, name: str = "heatmaps") -> torch.Tensor:
    if not isinstance(heatmaps, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(heatmaps).__name__}")
    if heatmaps.dim() == 4:
        if heatmaps.shape[1] != 1:
            raise ValueError(f"{name} must be [N, H, W] or [N, 1, H, W], got shape {tuple(heatmaps.shape)}")
        heatmaps = heatmaps[:, 0]
    elif heatmaps.dim() != 3:
        raise ValueError(f"{name} must be [N, H, W] or [N, 1, H, W], got shape {tuple(heatmaps.shape)}")
    return heatmaps


def find_instance_centers_batched(
    heatmaps: torch.Tensor,
    *,
    threshold: float = 0.1,
    nms_kernel: int = 7,
    top_k: int = 200,
    backend: str = "auto",
) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """:func:`find_instance_centers` over ``[N, H, W]`` or ``[N, 1, H, W]`` heatmaps.

    Returns a list of N ``(centers [K_i, 2] int64 (y, x), scores [K_i] float32)`` pairs.
    """
    heatmaps = _heatmaps_3d(heatmaps)
    return [find_instance_centers(h, threshold=threshold, nms_kernel=nms_kernel, top_k=top_k,
                                  backend=backend) for h in heatmaps]
