"""Panoptic-DeepLab training targets from a panoptic id map (semantics: docs/ops.md).

``encode_targets`` runs the native op (``torch.ops.pdlkit.encode_targets``, CPU and CUDA) or the
pure-torch ``encode_targets_reference``; both check their arguments with the same code, so bad input
fails the same way on both.  The semantics are those of detectron2's
``PanopticDeepLabTargetGenerator`` (mass centers in float64, centers rounded half to even, a
(6σ+3)² Gaussian merged by max), so published checkpoints' recipes reproduce.
"""
from __future__ import annotations

import math
import numbers

import torch

from ._backend import use_native

__all__ = ["encode_targets", "encode_targets_reference", "TARGET_KEYS"]

# Output keys, in the order the native op returns them.
TARGET_KEYS = (
    "semantic",
    "center",
    "center_points",
    "offset",
    "semantic_weights",
    "center_weights",
    "offset_weights",
)

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# sigma outside this range (pixels) is refused by both backends: below it, 2σ² underflows in float64
# (0 / 0 at the window's middle); above it, the window's coordinates (~3σ) stop being exact float64
# integers.  Either way the numbers would depend on evaluation details, not on the definition.
MIN_SIGMA, MAX_SIGMA = 1e-6, 1e12
_SEGMENT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _integer(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"{name} must fit in int64, got {value}")
    return value


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _check_arguments(panoptic, segments, sigma, ignore_label, small_instance_area,
                     small_instance_weight, ignore_stuff_in_offset, ignore_crowd_in_semantic):
    """Validate every argument; return (segments as int64 on panoptic's device, the scalars)."""
    if not isinstance(panoptic, torch.Tensor):
        raise ValueError(f"panoptic must be a torch.Tensor, got {type(panoptic).__name__}")
    if panoptic.dim() != 2:
        raise ValueError(f"panoptic must be [H, W] segment ids, got shape {tuple(panoptic.shape)}")
    if panoptic.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"panoptic must be int32 or int64, got {panoptic.dtype}")
    if not isinstance(segments, torch.Tensor):
        raise ValueError(f"segments must be a torch.Tensor, got {type(segments).__name__}")
    if segments.dim() != 2 or segments.shape[1] != 4:
        raise ValueError(
            f"segments must be [S, 4] (id, train_id, is_thing, iscrowd), got shape {tuple(segments.shape)}"
        )
    if segments.dtype not in _SEGMENT_DTYPES:
        raise ValueError(f"segments must be an integer tensor, got {segments.dtype}")
    if segments.device != panoptic.device:
        raise ValueError(
            f"panoptic (on {panoptic.device}) and segments (on {segments.device}) must be on the same device"
        )
    sigma = _real(sigma, "sigma")
    if not MIN_SIGMA <= sigma <= MAX_SIGMA:
        raise ValueError(f"sigma must be between {MIN_SIGMA:g} and {MAX_SIGMA:g} pixels, got {sigma:g}")
    ignore_label = _integer(ignore_label, "ignore_label")
    small_instance_area = _integer(small_instance_area, "small_instance_area")
    if small_instance_area < 0:
        raise ValueError(f"small_instance_area must be >= 0, got {small_instance_area}")
    small_instance_weight = _real(small_instance_weight, "small_instance_weight")
    ignore_stuff_in_offset = _flag(ignore_stuff_in_offset, "ignore_stuff_in_offset")
    ignore_crowd_in_semantic = _flag(ignore_crowd_in_semantic, "ignore_crowd_in_semantic")

    segments = segments.to(torch.int64)
    _check_segment_rows(segments.cpu(), ignore_label)
    return segments, (sigma, ignore_label, small_instance_area, small_instance_weight,
                      ignore_stuff_in_offset, ignore_crowd_in_semantic)


def _check_segment_rows(rows: torch.Tensor, ignore_label: int) -> None:
    """Values of ``segments`` rows ([S, 4] int64 on the CPU: small; one copy checks any device)."""
    ids, train_ids, is_thing, is_crowd = rows.unbind(1)
    bad = ((train_ids < 0) | (train_ids > 255)).nonzero()
    if len(bad):
        row = int(bad[0])
        raise ValueError(f"segments row {row}: train_id must be in 0..255, got {int(train_ids[row])}")
    bad = (train_ids == ignore_label).nonzero()
    if len(bad):
        raise ValueError(
            f"segments row {int(bad[0])}: train_id equals ignore_label ({ignore_label}); "
            "leave ignored regions out of segments"
        )
    for column, name in ((is_thing, "is_thing"), (is_crowd, "iscrowd")):
        bad = ((column != 0) & (column != 1)).nonzero()
        if len(bad):
            row = int(bad[0])
            raise ValueError(f"segments row {row}: {name} must be 0 or 1, got {int(column[row])}")
    if len(ids) > 1:
        sorted_ids, order = torch.sort(ids, stable=True)
        repeated = (sorted_ids[1:] == sorted_ids[:-1]).nonzero()
        if len(repeated):
            k = int(repeated[0])
            raise ValueError(
                f"segments: id {int(sorted_ids[k])} appears more than once "
                f"(rows {int(order[k])} and {int(order[k + 1])})"
            )


def encode_targets(panoptic: torch.Tensor, segments: torch.Tensor, *, sigma: float = 8.0,
                   ignore_label: int = 255, small_instance_area: int = 4096,
                   small_instance_weight: float = 3.0, ignore_stuff_in_offset: bool = True,
                   ignore_crowd_in_semantic: bool = False, backend: str = "auto") -> dict:
    """Panoptic-DeepLab targets of one image.

    Args:
        panoptic: [H, W] int32/int64 segment ids (any layout); pixels whose id is in no segment are
            unlabelled.
        segments: [S, 4] integer rows (id, train_id, is_thing, iscrowd), ids unique, train ids in
            0..255 and not ``ignore_label``; an id absent from ``panoptic`` is a segment without pixels.
        sigma: standard deviation of the center Gaussian, in pixels (window (6σ+3)²), in
            [1e-6, 1e12].
        ignore_label: semantic label of unlabelled pixels (and of crowd pixels when
            ``ignore_crowd_in_semantic``).
        small_instance_area, small_instance_weight: thing segments with fewer pixels get this
            semantic loss weight.
        ignore_stuff_in_offset: offset weights only on thing pixels.
        ignore_crowd_in_semantic: crowd pixels get ``ignore_label`` in ``semantic``.
        backend: "native", "reference" or "auto" (native when built).

    Returns:
        dict on panoptic's device: ``semantic`` [H, W] int64; ``center`` [H, W] float32 heatmap;
        ``center_points`` [K, 2] float32 mass centers (y, x) of the non-empty thing segments (crowd
        included) in segment order; ``offset`` [2, H, W] float32 (offset_y, offset_x) = mass center
        minus pixel on thing pixels, 0 elsewhere; ``semantic_weights``, ``center_weights``,
        ``offset_weights`` [H, W] float32.
    """
    segments, scalars = _check_arguments(panoptic, segments, sigma, ignore_label, small_instance_area,
                                         small_instance_weight, ignore_stuff_in_offset,
                                         ignore_crowd_in_semantic)
    if not use_native(backend, panoptic.device):
        return _encode_reference(panoptic, segments, *scalars)
    outputs = torch.ops.pdlkit.encode_targets(panoptic, segments, *scalars)
    return dict(zip(TARGET_KEYS, outputs))


def encode_targets_reference(panoptic: torch.Tensor, segments: torch.Tensor, *, sigma: float = 8.0,
                             ignore_label: int = 255, small_instance_area: int = 4096,
                             small_instance_weight: float = 3.0, ignore_stuff_in_offset: bool = True,
                             ignore_crowd_in_semantic: bool = False) -> dict:
    """Pure-torch ``encode_targets`` (same arguments and outputs, no ``backend``); any device."""
    segments, scalars = _check_arguments(panoptic, segments, sigma, ignore_label, small_instance_area,
                                         small_instance_weight, ignore_stuff_in_offset,
                                         ignore_crowd_in_semantic)
    return _encode_reference(panoptic, segments, *scalars)


def _segment_of_pixel(flat_ids: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
    """[P] index into segments of each pixel's id, S (= len(segment_ids)) where no segment has it."""
    num_segments = len(segment_ids)
    if num_segments == 0:
        return torch.zeros_like(flat_ids)
    sorted_ids, order = torch.sort(segment_ids)
    position = torch.searchsorted(sorted_ids, flat_ids).clamp_(max=num_segments - 1)
    found = sorted_ids[position] == flat_ids
    return torch.where(found, order[position], torch.full_like(flat_ids, num_segments))


def _encode_reference(panoptic, segments, sigma, ignore_label, small_instance_area,
                      small_instance_weight, ignore_stuff_in_offset, ignore_crowd_in_semantic):
    device = panoptic.device
    height, width = panoptic.shape
    num_segments = segments.shape[0]
    segment_ids, train_ids, is_thing, is_crowd = segments.unbind(1)
    is_thing, is_crowd = is_thing.bool(), is_crowd.bool()

    segment = _segment_of_pixel(panoptic.reshape(-1).to(torch.int64), segment_ids)  # [H * W]
    ys = torch.arange(height, device=device).repeat_interleave(width)
    xs = torch.arange(width, device=device).repeat(height)
    pixel_counts = torch.bincount(segment, minlength=num_segments + 1)[:num_segments]
    # Exact integer sums, divided once in float64: np.mean over the mask's coordinates.
    sum_y = torch.zeros(num_segments + 1, dtype=torch.int64, device=device).index_add_(0, segment, ys)
    sum_x = torch.zeros(num_segments + 1, dtype=torch.int64, device=device).index_add_(0, segment, xs)
    area = pixel_counts.clamp(min=1).double()
    center_y = sum_y[:num_segments].double() / area
    center_x = sum_x[:num_segments].double() / area
    is_instance = is_thing & (pixel_counts > 0)

    # Per-segment values, plus one last entry for unlabelled pixels, gathered per pixel.
    def table(values, unlabelled):
        return torch.cat([values, torch.tensor([unlabelled], dtype=values.dtype, device=device)])

    ignored = is_crowd & ignore_crowd_in_semantic
    semantic_of = table(torch.where(ignored, torch.full_like(train_ids, ignore_label), train_ids),
                        ignore_label)
    small = is_instance & (pixel_counts < small_instance_area)
    semantic_weight_of = table(
        torch.where(small, torch.tensor(small_instance_weight, dtype=torch.float32, device=device),
                    torch.tensor(1.0, device=device)),
        1.0,
    )
    center_weight_of = table((~is_crowd).float(), 0.0)
    offset_weight_of = table((~is_crowd & (is_thing | (not ignore_stuff_in_offset))).float(), 0.0)
    has_offset_of = table(is_instance, False)

    has_offset = has_offset_of[segment]
    offset_y = torch.where(has_offset, table(center_y, 0.0)[segment] - ys.double(), 0.0)
    offset_x = torch.where(has_offset, table(center_x, 0.0)[segment] - xs.double(), 0.0)

    centers = torch.stack([center_y[is_instance], center_x[is_instance]], dim=1)  # [K, 2] float64
    return {
        "semantic": semantic_of[segment].view(height, width),
        "center": _center_heatmap(centers.tolist(), sigma, height, width, device),
        "center_points": centers.float(),
        "offset": torch.stack([offset_y, offset_x]).float().view(2, height, width),
        "semantic_weights": semantic_weight_of[segment].view(height, width),
        "center_weights": center_weight_of[segment].view(height, width),
        "offset_weights": offset_weight_of[segment].view(height, width),
    }


def _center_heatmap(centers, sigma, height, width, device) -> torch.Tensor:
    """[H, W] float32: max over instances of the (6σ+3)² Gaussian around each rounded mass center."""
    heatmap = torch.zeros(height, width, dtype=torch.float32, device=device)
    middle = 3 * sigma + 1
    for center_y, center_x in centers:
        y, x = round(center_y), round(center_x)  # Python round: half to even, as np.round
        left, top = round(x - 3 * sigma - 1), round(y - 3 * sigma - 1)
        right, bottom = round(x + 3 * sigma + 2), round(y + 3 * sigma + 2)
        if left >= width or top >= height or right < 0 or bottom < 0:
            continue
        row_begin, row_end = max(0, top), min(bottom, height)
        col_begin, col_end = max(0, left), min(right, width)
        if row_begin >= row_end or col_begin >= col_end:
            continue
        dy = torch.arange(row_begin - top, row_end - top, dtype=torch.float64, device=device) - middle
        dx = torch.arange(col_begin - left, col_end - left, dtype=torch.float64, device=device) - middle
        gaussian = torch.exp(-(dx[None, :] * dx[None, :] + dy[:, None] * dy[:, None]) / (2 * (sigma * sigma)))
        window = heatmap[row_begin:row_end, col_begin:col_end]
        torch.maximum(window, gaussian.float(), out=window)
    return heatmap
