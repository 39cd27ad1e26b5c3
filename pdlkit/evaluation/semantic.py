"""Class IoU and mIoU, equal to cityscapesscripts' ``evalPixelLevelSemanticLabeling``.

The official evaluator builds a confusion matrix over all label ids and scores each evaluated class
``c`` as ``tp / (tp + fp + fn)`` with

- ``tp``: ground truth ``c`` predicted ``c``;
- ``fn``: ground truth ``c`` predicted anything else, including ids that are not evaluated;
- ``fp``: ground truth of another *evaluated* class predicted ``c`` (pixels whose ground truth is
  not evaluated never count);

and the mean is over the classes whose IoU is defined (``tp + fp + fn > 0``).  Folding every
non-evaluated label id into one extra row/column gives the same numbers from a
``(K + 1) × (K + 1)`` matrix.
"""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from pdlkit.errors import DataError

from ._io import index_map, known_pair_histogram, pair_histogram

__all__ = ["confusion_matrix", "confusion_from_segments", "fold_segment_counts", "fold_joint", "iou_summary"]


def confusion_matrix(
    gt_labels: np.ndarray, pred_labels: np.ndarray, class_ids: Sequence[int], *, image_id: str = ""
) -> np.ndarray:
    """``[K + 1, K + 1]`` int64 pixel counts (row: ground truth, column: prediction).

    ``gt_labels`` / ``pred_labels``: ``[H, W]`` dataset label ids; ``class_ids``: the ``K``
    evaluated label ids; index ``K`` collects every other id.
    """
    if gt_labels.shape != pred_labels.shape:
        raise DataError(
            f"image {image_id}: semantic prediction is {pred_labels.shape[1]}x{pred_labels.shape[0]} "
            f"but the ground truth is {gt_labels.shape[1]}x{gt_labels.shape[0]} (width x height)"
        )
    num_classes = len(class_ids)
    ids = np.asarray(class_ids, np.int64)
    size = num_classes + 1
    if (gt_labels.dtype.kind == "i" and (gt_labels < 0).any()) or (
        pred_labels.dtype.kind == "i" and (pred_labels < 0).any()
    ):
        raise DataError(f"image {image_id}: negative label ids in a semantic map")
    gt_index = index_map(gt_labels, ids)
    pred_index = index_map(pred_labels, ids)
    return pair_histogram(gt_index, pred_index, size, size)


def _label_classes(labels: np.ndarray, ids: np.ndarray, image_id: str) -> np.ndarray:
    """Class index (``K`` for non-evaluated ids) of each entry of a short label list."""
    labels = np.asarray(labels, np.int64)
    if (labels < 0).any():
        raise DataError(f"image {image_id}: negative label ids in a semantic map")
    return index_map(labels, ids).astype(np.int64)


def confusion_from_segments(
    gt_ids: np.ndarray, gt_segments, void_label: int, pred_labels: np.ndarray, class_ids: Sequence[int], *,
    image_id: str = "",
) -> np.ndarray:
    """:func:`confusion_matrix` of a ground truth given as a panoptic map: ``gt_ids`` ``[H, W]``
    segment ids, each pixel labelled with its segment's ``category_id`` (``segments_info``
    entries), ``void_label`` where no segment is listed.

    One histogram of (segment, predicted class) pairs straight from the ids, its rows then summed
    per class, gives the same matrix as building the ``[H, W]`` label map first, without that pass.
    """
    if gt_ids.shape != pred_labels.shape:
        raise DataError(
            f"image {image_id}: semantic prediction is {pred_labels.shape[1]}x{pred_labels.shape[0]} "
            f"but the ground truth is {gt_ids.shape[1]}x{gt_ids.shape[0]} (width x height)"
        )
    if pred_labels.dtype.kind == "i" and (pred_labels < 0).any():
        raise DataError(f"image {image_id}: negative label ids in a semantic map")
    segment_ids = [0] + [int(s["id"]) for s in gt_segments]
    counts = known_pair_histogram(gt_ids, segment_ids, pred_labels, np.asarray(class_ids, np.int64))
    return fold_segment_counts(counts, gt_segments, void_label, class_ids, image_id=image_id)


def fold_segment_counts(counts: np.ndarray, gt_segments, void_label: int, class_ids: Sequence[int], *,
                        image_id: str = "") -> np.ndarray:
    """:func:`confusion_matrix` from ``[G + 2, K + 1]`` counts of (ground-truth row, predicted
    class) pairs: rows void (id 0), the ``G`` segments of ``gt_segments``, ids not listed (both
    void, ``void_label``, as the label map has it); columns the positions in ``class_ids``, ``K``
    for any other label.  Rows are summed per segment category."""
    ids = np.asarray(class_ids, np.int64)
    size = len(ids) + 1
    row_labels = [void_label] + [int(s["category_id"]) for s in gt_segments] + [void_label]
    confusion = np.zeros((size, size), np.int64)
    np.add.at(confusion, _label_classes(row_labels, ids, image_id), counts)
    return confusion


def fold_joint(joint: np.ndarray, row_labels, col_labels, class_ids: Sequence[int], *, image_id: str = "") -> np.ndarray:
    """:func:`confusion_matrix` from a joint histogram of segments ``[R, C]`` (PQ's) whose rows and
    columns have the label ids ``row_labels`` ``[R]`` and ``col_labels`` ``[C]``: no pixel pass."""
    ids = np.asarray(class_ids, np.int64)
    size = len(ids) + 1
    by_row = np.zeros((size, joint.shape[1]), np.int64)
    np.add.at(by_row, _label_classes(row_labels, ids, image_id), joint)
    confusion = np.zeros((size, size), np.int64)
    np.add.at(confusion.T, _label_classes(col_labels, ids, image_id), by_row.T)
    return confusion


def iou_summary(confusion: np.ndarray, class_names: Sequence[str]) -> Dict:
    """mIoU and per-class IoU in percent (0..100) from a ``[K + 1, K + 1]`` confusion matrix.

    Classes with ``tp + fp + fn == 0`` have IoU None and do not enter the mean (the official
    evaluator's NaN); ``mIoU`` is None when no class is defined.
    """
    num_classes = len(class_names)
    evaluated = confusion[:num_classes].astype(np.int64)
    tp = np.diagonal(evaluated)[:num_classes]
    fn = evaluated.sum(axis=1) - tp
    fp = evaluated[:, :num_classes].sum(axis=0) - tp
    denominator = tp + fp + fn
    per_class = {}
    values = []
    for k, name in enumerate(class_names):
        if denominator[k] == 0:
            per_class[str(name)] = None
        else:
            iou = float(tp[k]) / float(denominator[k])
            per_class[str(name)] = 100.0 * iou
            values.append(iou)
    mean = 100.0 * (sum(values) / len(values)) if values else None
    return {"mIoU": mean, "per_class_iou": per_class, "n": len(values)}
