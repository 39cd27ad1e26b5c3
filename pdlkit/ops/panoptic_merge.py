"""Grouping thing pixels to instance centers and the majority-vote panoptic merge (docs/ops.md).

Semantics (those of detectron2's Panoptic-DeepLab post-processing):

* centers come from :func:`find_instance_centers` on the center heatmap;
* a thing pixel (label in ``thing_ids``) at ``(y, x)`` with offset ``(oy, ox)`` points at
  ``loc = (y + oy, x + ox)``; it joins the center with the smallest
  ``d = sqrt(dy * dy + dx * dx)``, ``dy = center_y - loc_y``, ``dx = center_x - loc_x`` (every step
  rounded to float32), the first center on equal ``d``;
* instances are visited in center order; one that owns no pixel is dropped; its class is the most
  frequent label among its pixels (ties: the smallest class id); ids count from 1 per class; its
  pixels get ``class * label_divisor + id``;
* every non-thing class whose pixel count is ``>= stuff_area`` gets ``class * label_divisor`` on its
  pixels; all other pixels get ``void_label``;
* per instance: objectness = the heatmap at its center, class score = the mean softmax probability of
  its class over its pixels (1 for label input), score = objectness * class score.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Iterable, List, Sequence

import torch

from ._backend import use_native
from .center_nms import _heatmaps_3d, _reference_2d, check_nms_params, heatmap_2d

__all__ = [
    "PanopticResult",
    "panoptic_merge",
    "panoptic_merge_reference",
    "panoptic_merge_batched",
]

_INT32_MAX = 2**31 - 1
_INT32_MIN = -(2**31)


@dataclass
class PanopticResult:
    """One image's panoptic segmentation.

    Attributes:
        panoptic: ``[H, W]`` int32, ``class * label_divisor + id`` (ids from 1 per class) on instance
            pixels, ``class * label_divisor`` on kept stuff, ``void_label`` elsewhere.
        semantic: ``[H, W]`` int64 train ids (the argmax of the logits, or the given labels).
        ids: ``[K]`` int64 panoptic ids of the instances, in center order.
        classes: ``[K]`` int64 train ids of the instances.
        centers: ``[K, 2]`` int64 ``(y, x)`` centers of the instances.
        objectness: ``[K]`` float32, the heatmap at each center.
        class_scores: ``[K]`` float32, mean softmax probability of the class over the instance.
        scores: ``[K]`` float32, ``objectness * class_scores``.
    """

    panoptic: torch.Tensor
    semantic: torch.Tensor
    ids: torch.Tensor
    classes: torch.Tensor
    centers: torch.Tensor
    objectness: torch.Tensor
    class_scores: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def to(self, device) -> "PanopticResult":
        return PanopticResult(*(getattr(self, f).to(device) for f in _FIELDS))


_FIELDS = ("panoptic", "semantic", "ids", "classes", "centers", "objectness", "class_scores", "scores")


def _check_int(value, name: str, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def _thing_id_list(thing_ids) -> List[int]:
    if isinstance(thing_ids, torch.Tensor):
        if thing_ids.dtype.is_floating_point or thing_ids.dtype == torch.bool or thing_ids.dim() > 1:
            raise ValueError(f"thing_ids must be a 1-D integer sequence, got a {thing_ids.dtype} tensor "
                             f"of shape {tuple(thing_ids.shape)}")
        return [int(v) for v in thing_ids.tolist()]
    if isinstance(thing_ids, (str, bytes)) or not isinstance(thing_ids, Iterable):
        raise ValueError(f"thing_ids must be a sequence of integer train ids, got {thing_ids!r}")
    return [_check_int(v, "thing_ids") for v in thing_ids]


def _validate(semantic, center_heatmap, offsets, thing_ids, label_divisor, stuff_area, void_label,
              threshold, nms_kernel, top_k, check_values: bool):
    """Shared checks of both backends; returns ``(semantic, heatmap [H, W], offsets, thing_ids)``."""
    check_nms_params(threshold, nms_kernel, top_k)
    label_divisor = _check_int(label_divisor, "label_divisor", 1)
    _check_int(stuff_area, "stuff_area")
    void_label = _check_int(void_label, "void_label")
    if not _INT32_MIN <= void_label <= _INT32_MAX:
        raise ValueError(f"void_label must fit in int32, got {void_label}")
    if not isinstance(semantic, torch.Tensor):
        raise ValueError(f"semantic must be a torch.Tensor, got {type(semantic).__name__}")
    if semantic.dtype.is_floating_point:
        if semantic.dtype != torch.float32:
            raise ValueError(f"semantic logits must be float32, got {semantic.dtype}")
        if semantic.dim() != 3 or semantic.shape[0] < 1:
            raise ValueError(f"semantic logits must be [C, H, W] with C >= 1, got shape {tuple(semantic.shape)}")
        logits = True
    elif semantic.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        if semantic.dim() != 2:
            raise ValueError(f"semantic labels must be [H, W], got shape {tuple(semantic.shape)}")
        logits = False
    else:
        raise ValueError(f"semantic must be float32 logits [C, H, W] or integer labels [H, W], got {semantic.dtype}")
    height, width = semantic.shape[-2:]
    heatmap = heatmap_2d(center_heatmap, "center_heatmap", check_values=False)
    if tuple(heatmap.shape) != (height, width):
        raise ValueError(f"center_heatmap has size {tuple(heatmap.shape)}, semantic has {(height, width)}")
    if not isinstance(offsets, torch.Tensor):
        raise ValueError(f"offsets must be a torch.Tensor, got {type(offsets).__name__}")
    if offsets.dtype != torch.float32:
        raise ValueError(f"offsets must be float32, got {offsets.dtype}")
    if offsets.dim() != 3 or offsets.shape[0] != 2 or tuple(offsets.shape[1:]) != (height, width):
        raise ValueError(f"offsets must be [2, H, W] = [2, {height}, {width}] (y, x), got shape {tuple(offsets.shape)}")
    for name, tensor in (("center_heatmap", heatmap), ("offsets", offsets)):
        if tensor.device != semantic.device:
            raise ValueError(f"{name} is on {tensor.device} but semantic is on {semantic.device}: "
                             "all inputs must be on one device")
    things = _thing_id_list(thing_ids)
    num_classes = semantic.shape[0] if logits else label_divisor
    for thing in things:
        if not 0 <= thing < num_classes:
            what = f"the {num_classes} logit channels" if logits else f"[0, label_divisor={label_divisor})"
            raise ValueError(f"thing_ids holds {thing}, outside {what}")
    max_instances = min(top_k, height * width)
    if logits and (num_classes - 1) * label_divisor + max_instances > _INT32_MAX:
        raise ValueError(f"label_divisor={label_divisor} with {num_classes} classes overflows the int32 panoptic ids")
    if check_values:
        heatmap_2d(heatmap, "center_heatmap", check_values=True)
        if logits and semantic.numel() and not bool(torch.isfinite(semantic).all()):
            raise ValueError("semantic logits contain NaN or infinity")
        if offsets.numel() and not bool(torch.isfinite(offsets).all()):
            raise ValueError("offsets contain NaN or infinity")
        if not logits and semantic.numel():
            low, high = int(semantic.min()), int(semantic.max())
            if low < 0 or high >= label_divisor:
                raise ValueError(f"semantic labels must lie in [0, label_divisor={label_divisor}), "
                                 f"got values in [{low}, {high}]")
            if high * label_divisor + max_instances > _INT32_MAX:
                raise ValueError(f"label {high} * label_divisor {label_divisor} overflows the int32 panoptic ids")
    return semantic, heatmap, offsets, things, label_divisor, void_label


def panoptic_merge(
    semantic: torch.Tensor,
    center_heatmap: torch.Tensor,
    offsets: torch.Tensor,
    thing_ids: Sequence[int],
    *,
    label_divisor: int = 1000,
    stuff_area: int = 2048,
    void_label: int = -1,
    threshold: float = 0.1,
    nms_kernel: int = 7,
    top_k: int = 200,
    backend: str = "auto",
) -> PanopticResult:
    """Panoptic segmentation of one image from the network outputs.

    Args:
        semantic: ``[C, H, W]`` float32 logits, or ``[H, W]`` integer train-id labels in
            ``[0, label_divisor)``.
        center_heatmap: ``[H, W]`` or ``[1, H, W]`` float32.
        offsets: ``[2, H, W]`` float32 ``(offset_y, offset_x)``: pixel + offset = its center.
        thing_ids: train ids of the thing classes.
        label_divisor, stuff_area, void_label: see the module doc.
        threshold, nms_kernel, top_k: center NMS (:func:`find_instance_centers`).
        backend: ``"auto" | "native" | "reference"``.

    Inputs may have any memory layout and must share one device. Returns a :class:`PanopticResult`.
    """
    native = use_native(backend, semantic.device if isinstance(semantic, torch.Tensor) else "cpu")
    semantic, heatmap, offsets, things, label_divisor, void_label = _validate(
        semantic, center_heatmap, offsets, thing_ids, label_divisor, stuff_area, void_label,
        threshold, nms_kernel, top_k, check_values=not native)
    if not native:
        return _merge_reference(semantic, heatmap, offsets, things, label_divisor, int(stuff_area),
                                void_label, float(threshold), nms_kernel, top_k)
    outputs = torch.ops.pdlkit.panoptic_merge(semantic, heatmap, offsets, things, label_divisor,
                                              int(stuff_area), void_label, float(threshold), nms_kernel, top_k)
    return PanopticResult(*outputs)


def panoptic_merge_reference(
    semantic: torch.Tensor,
    center_heatmap: torch.Tensor,
    offsets: torch.Tensor,
    thing_ids: Sequence[int],
    *,
    label_divisor: int = 1000,
    stuff_area: int = 2048,
    void_label: int = -1,
    threshold: float = 0.1,
    nms_kernel: int = 7,
    top_k: int = 200,
    backend: str = "reference",
) -> PanopticResult:
    """Pure-torch :func:`panoptic_merge` (same signature; ``backend`` is ignored)."""
    semantic, heatmap, offsets, things, label_divisor, void_label = _validate(
        semantic, center_heatmap, offsets, thing_ids, label_divisor, stuff_area, void_label,
        threshold, nms_kernel, top_k, check_values=True)
    return _merge_reference(semantic, heatmap, offsets, things, label_divisor, int(stuff_area),
                            void_label, float(threshold), nms_kernel, top_k)


def _nearest_center(centers: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """``[H, W]`` int64 index of the nearest center (first on equal float32 distance)."""
    _, height, width = offsets.shape
    device = offsets.device
    loc_y = torch.arange(height, dtype=torch.float32, device=device)[:, None] + offsets[0]
    loc_x = torch.arange(width, dtype=torch.float32, device=device)[None, :] + offsets[1]
    centers_f = centers.to(torch.float32)
    best_distance = torch.full((height, width), float("inf"), device=device)
    best_index = torch.zeros((height, width), dtype=torch.int64, device=device)
    chunk = 16  # centers per step: bounds the [chunk, H, W] temporaries
    for start in range(0, centers.shape[0], chunk):
        cy = centers_f[start:start + chunk, 0, None, None]
        cx = centers_f[start:start + chunk, 1, None, None]
        dy = cy - loc_y
        dx = cx - loc_x
        # The native op's float32 distance: products and sum rounded to float32 (no FMA), then the
        # correctly rounded float32 square root.  torch's float32 sqrt need not be correctly
        # rounded; the float64 root rounded to float32 is (53 >= 2 * 24 + 2 bits: double rounding
        # of a square root is innocuous).
        distance = torch.sqrt((dy * dy + dx * dx).double()).float()
        chunk_min, chunk_index = torch.min(distance, dim=0)  # first minimum within the chunk
        closer = chunk_min < best_distance  # strict: an earlier chunk wins ties
        if start == 0:
            closer = torch.ones_like(closer)
        best_distance = torch.where(closer, chunk_min, best_distance)
        best_index = torch.where(closer, chunk_index + start, best_index)
    return best_index


def _merge_reference(semantic, heatmap, offsets, things, label_divisor, stuff_area, void_label,
                     threshold, nms_kernel, top_k) -> PanopticResult:
    device = semantic.device
    logits = semantic.dtype.is_floating_point
    if logits:
        labels = torch.argmax(semantic, dim=0)
        probabilities = torch.softmax(semantic, dim=0)
    else:
        labels = semantic.to(torch.int64)
    height, width = labels.shape
    centers, objectness_all = _reference_2d(heatmap, threshold, nms_kernel, top_k)
    thing_tensor = torch.tensor(sorted(set(things)), dtype=torch.int64, device=device)
    is_thing = torch.isin(labels, thing_tensor)
    panoptic = torch.full((height, width), void_label, dtype=torch.int32, device=device)

    ids, classes, kept, class_scores = [], [], [], []
    if centers.shape[0] > 0 and height * width > 0:
        nearest = _nearest_center(centers, offsets)
        instance = torch.where(is_thing, nearest, torch.full_like(nearest, -1))
        count_per_class: dict = {}
        for k in range(centers.shape[0]):
            mask = instance == k
            member_labels = labels[mask]
            if member_labels.numel() == 0:
                continue
            votes = torch.bincount(member_labels)
            class_id = int(torch.argmax(votes))  # first maximum: the smallest class on a tie
            count_per_class[class_id] = count_per_class.get(class_id, 0) + 1
            panoptic_id = class_id * label_divisor + count_per_class[class_id]
            panoptic[mask] = panoptic_id
            ids.append(panoptic_id)
            classes.append(class_id)
            kept.append(k)
            if logits:
                class_scores.append(float(probabilities[class_id][mask].to(torch.float64).mean()))
            else:
                class_scores.append(1.0)
    for class_id in torch.unique(labels).tolist():
        if class_id in things:
            continue
        mask = labels == class_id
        if int(mask.sum()) >= stuff_area:
            panoptic[mask] = class_id * label_divisor

    kept_index = torch.tensor(kept, dtype=torch.int64, device=device)
    objectness = objectness_all[kept_index]
    class_score_tensor = torch.tensor(class_scores, dtype=torch.float32, device=device)
    return PanopticResult(
        panoptic=panoptic,
        semantic=labels,
        ids=torch.tensor(ids, dtype=torch.int64, device=device),
        classes=torch.tensor(classes, dtype=torch.int64, device=device),
        centers=centers[kept_index].reshape(-1, 2),
        objectness=objectness,
        class_scores=class_score_tensor,
        scores=objectness * class_score_tensor,
    )


def panoptic_merge_batched(
    semantic: torch.Tensor,
    center_heatmap: torch.Tensor,
    offsets: torch.Tensor,
    thing_ids: Sequence[int],
    *,
    label_divisor: int = 1000,
    stuff_area: int = 2048,
    void_label: int = -1,
    threshold: float = 0.1,
    nms_kernel: int = 7,
    top_k: int = 200,
    backend: str = "auto",
) -> List[PanopticResult]:
    """:func:`panoptic_merge` over a batch.

    Args:
        semantic: ``[N, C, H, W]`` float32 logits or ``[N, H, W]`` integer labels.
        center_heatmap: ``[N, 1, H, W]`` or ``[N, H, W]`` float32.
        offsets: ``[N, 2, H, W]`` float32 ``(y, x)``.

    Returns a list of N :class:`PanopticResult`.
    """
    if not isinstance(semantic, torch.Tensor):
        raise ValueError(f"semantic must be a torch.Tensor, got {type(semantic).__name__}")
    expected_dim = 4 if semantic.dtype.is_floating_point else 3
    if semantic.dim() != expected_dim:
        layout = "[N, C, H, W] logits" if expected_dim == 4 else "[N, H, W] labels"
        raise ValueError(f"semantic must be {layout}, got shape {tuple(semantic.shape)}")
    heatmaps = _heatmaps_3d(center_heatmap, "center_heatmap")
    if not isinstance(offsets, torch.Tensor) or offsets.dim() != 4:
        shape = tuple(offsets.shape) if isinstance(offsets, torch.Tensor) else type(offsets).__name__
        raise ValueError(f"offsets must be [N, 2, H, W], got {shape}")
    batch = semantic.shape[0]
    thing_ids = _thing_id_list(thing_ids)  # once: a generator would be spent after the first image
    for name, tensor in (("center_heatmap", heatmaps), ("offsets", offsets)):
        if tensor.shape[0] != batch:
            raise ValueError(f"{name} holds {tensor.shape[0]} images, semantic holds {batch}")
    return [
        panoptic_merge(semantic[i], heatmaps[i], offsets[i], thing_ids, label_divisor=label_divisor,
                       stuff_area=stuff_area, void_label=void_label, threshold=threshold,
                       nms_kernel=nms_kernel, top_k=top_k, backend=backend)
        for i in range(batch)
    ]

