"""Fake (meta) kernels of the native ops: output shapes, dtypes and devices without computing.

``torch.compile``, ``torch.export`` and FakeTensor tracing call these instead of the kernels. The
numbers of centers and instances depend on the data, so they are new dynamic sizes (unbacked
symbols, bounded by what the op can return). Registered by ``_backend`` once the extension loads.
"""
from __future__ import annotations

import torch

__all__ = ["register"]

_registered = False


def _dynamic_count(upper) -> torch.SymInt:
    """A data-dependent count in ``[0, upper]`` (unbounded above when ``upper`` is symbolic)."""
    ctx = torch.library.get_ctx()
    if isinstance(upper, int) and upper >= 2:
        return ctx.new_dynamic_size(min=0, max=upper)
    return ctx.new_dynamic_size(min=0)


def _heatmap_size(heatmap: torch.Tensor, name: str):
    torch._check(heatmap.dtype == torch.float32, lambda: f"{name} must be float32, got {heatmap.dtype}")
    torch._check(heatmap.dim() == 2 or (heatmap.dim() == 3 and heatmap.shape[0] == 1),
                 lambda: f"{name} must be [H, W] or [1, H, W], got shape {tuple(heatmap.shape)}")
    return heatmap.shape[-2], heatmap.shape[-1]


def find_instance_centers_fake(heatmap, threshold, nms_kernel, top_k):
    """(centers [K, 2] int64 (y, x), scores [K] float32), K data-dependent (< top_k when capped)."""
    _heatmap_size(heatmap, "heatmap")
    count = _dynamic_count(top_k)
    return (heatmap.new_empty((count, 2), dtype=torch.int64), heatmap.new_empty((count,), dtype=torch.float32))


def encode_targets_fake(panoptic, segments, sigma, ignore_label, small_instance_area, small_instance_weight,
                        ignore_stuff_in_offset, ignore_crowd_in_semantic):
    """The seven target tensors; center_points [K, 2] with K (thing segments with pixels) data-dependent."""
    torch._check(panoptic.dim() == 2, lambda: f"panoptic must be 2-D [H, W] segment ids, got {tuple(panoptic.shape)}")
    torch._check(segments.dim() == 2 and segments.shape[1] == 4,
                 lambda: f"segments must be [S, 4], got shape {tuple(segments.shape)}")
    height, width = panoptic.shape
    count = _dynamic_count(segments.shape[0])
    plane = panoptic.new_empty((height, width), dtype=torch.float32)
    return (
        panoptic.new_empty((height, width), dtype=torch.int64),
        plane,
        panoptic.new_empty((count, 2), dtype=torch.float32),
        panoptic.new_empty((2, height, width), dtype=torch.float32),
        torch.empty_like(plane),
        torch.empty_like(plane),
        torch.empty_like(plane),
    )


def panoptic_merge_fake(semantic, center_heatmap, offsets, thing_ids, label_divisor, stuff_area, void_label,
                        threshold, nms_kernel, top_k):
    """(panoptic [H, W] int32, semantic [H, W] int64, then [K] / [K, 2] per-instance tensors)."""
    torch._check(semantic.dim() in (2, 3), lambda: f"semantic must be [C, H, W] or [H, W], got {tuple(semantic.shape)}")
    height, width = semantic.shape[-2], semantic.shape[-1]
    _heatmap_size(center_heatmap, "center_heatmap")
    count = _dynamic_count(top_k)
    vector = semantic.new_empty((count,), dtype=torch.float32)
    return (
        semantic.new_empty((height, width), dtype=torch.int32),
        semantic.new_empty((height, width), dtype=torch.int64),
        semantic.new_empty((count,), dtype=torch.int64),
        semantic.new_empty((count,), dtype=torch.int64),
        semantic.new_empty((count, 2), dtype=torch.int64),
        vector,
        torch.empty_like(vector),
        torch.empty_like(vector),
    )


def register() -> None:
    """Register the fake kernels (once; the ops must be defined, i.e. pdlkit._C imported)."""
    global _registered
    if _registered:
        return
    torch.library.register_fake("pdlkit::find_instance_centers")(find_instance_centers_fake)
    torch.library.register_fake("pdlkit::encode_targets")(encode_targets_fake)
    torch.library.register_fake("pdlkit::panoptic_merge")(panoptic_merge_fake)
    _registered = True
