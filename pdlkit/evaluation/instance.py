"""Instance AP and AP50, equal to cityscapesscripts' ``evalInstanceLevelSemanticLabeling``.

Instances are the predicted thing segments of the panoptic output, one per segment, scored
objectness × class score (the segment's ``score``) — exactly what :func:`convert_predictions`
writes for the official tool.  Their masks are disjoint, so one joint histogram per image of
(ground-truth instance-map value, predicted segment) gives every intersection the official tool
computes mask by mask.  The official rules, reproduced here:

- ground truth comes from ``*_gtFine_instanceIds.png``: values ``>= 1000`` are instances
  (label ``value // 1000``), smaller values are a label id (crowd regions for thing labels);
- only instances (not crowd) of at least 100 pixels are targets; a prediction matches one when
  ``IoU > t`` for ``t`` in 0.50, 0.55, .., 0.95;
- an unmatched prediction is a false positive unless more than ``t`` of it lies on void (label
  ids that are not evaluated), on crowd regions of its class or on too-small instances of its class
  (a small crowd region counts twice, as officially); a prediction that overlaps a crowd region or
  a small instance with ``IoU > t`` is neither;
- AP per class and threshold from the official precision/recall curve; classes without ground
  truth are left out of the mean (NaN), classes with ground truth but no predictions score 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from pdlkit.errors import DataError

from ._io import index_map, pair_histogram, value_counts

__all__ = [
    "OVERLAP_THRESHOLDS",
    "MIN_REGION_SIZE",
    "PredictedInstance",
    "ImageInstanceMatches",
    "thing_instances",
    "match_image_instances",
    "instance_ap",
]

# The official thresholds, as the same float64 values (np.arange(0.5, 1., 0.05)).
OVERLAP_THRESHOLDS = np.arange(0.5, 1.0, 0.05)
MIN_REGION_SIZE = 100


@dataclass(frozen=True)
class PredictedInstance:
    """One predicted thing segment: its panoptic id, dataset category id and score."""

    segment_id: int
    category_id: int
    score: float


def _segment_score(segment: Mapping, where: str) -> float:
    if "score" in segment:
        return float(segment["score"])
    if "objectness" in segment and "class_score" in segment:
        return float(segment["objectness"]) * float(segment["class_score"])
    raise DataError(
        f"{where}: thing segment {segment.get('id')} has no 'score' (nor objectness and class_score)"
    )


def thing_instances(
    segments: Sequence[Mapping], thing_category_ids, *, where: str = "prediction"
) -> List[PredictedInstance]:
    """The thing segments of one ``segments_info`` list, in its order, with their scores."""
    things = set(int(c) for c in thing_category_ids)
    return [
        PredictedInstance(int(s["id"]), int(s["category_id"]), _segment_score(s, where))
        for s in segments
        if int(s["category_id"]) in things
    ]


@dataclass
class ImageInstanceMatches:
    """Per thing category of one image (all arrays small).

    ``gt_ids [G]`` instance-map values of the category (crowd: the label id itself),
    ``gt_pixels [G]``; ``pred_pixels [P]``, ``pred_void [P]`` (pixels on void), ``pred_scores [P]``
    (in json order); ``intersections [G, P]``.
    """

    per_category: Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def match_image_instances(
    instance_map: np.ndarray,
    pred_ids: np.ndarray,
    instances: Sequence[PredictedInstance],
    thing_category_ids: Sequence[int],
    evaluated_category_ids: Sequence[int],
    *,
    label_divisor: int = 1000,
    image_id: str = "",
) -> ImageInstanceMatches:
    """Intersections of one image's predicted instances with its ground-truth instances.

    ``instance_map``: ``[H, W]`` Cityscapes instanceIds (label id, or label id × divisor + k);
    ``pred_ids``: ``[H, W]`` predicted panoptic ids; ``instances``: the predicted thing segments;
    ``evaluated_category_ids``: every evaluated label id (other label ids are void).
    """
    if instance_map.shape != pred_ids.shape:
        raise DataError(
            f"image {image_id}: prediction is {pred_ids.shape[1]}x{pred_ids.shape[0]} but the "
            f"instance ground truth is {instance_map.shape[1]}x{instance_map.shape[0]} (width x height)"
        )
    if (instance_map < 0).any():
        raise DataError(f"image {image_id}: negative values in the instance ground truth")
    gt_values, gt_pixels = value_counts(instance_map)
    gt_labels = np.where(gt_values < label_divisor, gt_values, gt_values // label_divisor)
    is_void = (gt_values < label_divisor) & ~np.isin(gt_values, np.asarray(evaluated_category_ids))

    num_preds = len(instances)
    gt_index = index_map(instance_map, gt_values)
    pred_index = index_map(pred_ids, np.array([i.segment_id for i in instances], np.int64))
    joint = pair_histogram(gt_index, pred_index, len(gt_values) + 1, num_preds + 1)
    joint = joint[: len(gt_values), :num_preds]
    pred_pixels = joint.sum(axis=0)
    pred_void = joint[is_void].sum(axis=0)
    pred_categories = np.array([i.category_id for i in instances], np.int64)
    pred_scores = np.array([i.score for i in instances], np.float64)

    per_category = {}
    for category in thing_category_ids:
        gt_rows = np.nonzero(gt_labels == int(category))[0]
        # The official tool skips predictions whose mask is empty.
        pred_cols = np.nonzero((pred_categories == int(category)) & (pred_pixels > 0))[0]
        per_category[int(category)] = (
            gt_values[gt_rows],
            gt_pixels[gt_rows],
            pred_pixels[pred_cols],
            pred_void[pred_cols],
            pred_scores[pred_cols],
            joint[np.ix_(gt_rows, pred_cols)],
        )
    return ImageInstanceMatches(per_category)


def _image_examples(entry, threshold: float, label_divisor: int, min_region_size: int):
    """The official per-image loop for one class and threshold: (labels, scores, hard FNs)."""
    gt_ids, gt_pixels, pred_pixels, pred_void, pred_scores, inter = entry
    union = gt_pixels[:, None] + pred_pixels[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = np.where(inter > 0, inter / np.maximum(union, 1), 0.0)
    above = (inter > 0) & (overlap > threshold)

    is_target = (gt_ids >= label_divisor) & (gt_pixels >= min_region_size)
    labels: List[float] = []
    scores: List[float] = []
    hard_false_negatives = 0
    for g in np.nonzero(is_target)[0]:
        matching = np.nonzero(above[g])[0]
        if len(matching) == 0:
            hard_false_negatives += 1
            continue
        # First match is the true positive; every further match keeps the higher score on the
        # true positive and adds the lower one as a false positive (official behaviour).
        best = pred_scores[matching[0]]
        for p in matching[1:]:
            labels.append(0.0)
            scores.append(min(best, pred_scores[p]))
            best = max(best, pred_scores[p])
        labels.append(1.0)
        scores.append(best)

    found = above.any(axis=0)
    ignored = pred_void.astype(np.int64).copy()
    if len(gt_ids):
        ignored += (inter * (gt_ids < label_divisor)[:, None]).sum(axis=0)
        ignored += (inter * (gt_pixels < min_region_size)[:, None]).sum(axis=0)
    for p in np.nonzero(~found)[0]:
        if float(ignored[p]) / pred_pixels[p] <= threshold:
            labels.append(0.0)
            scores.append(pred_scores[p])
    return labels, scores, hard_false_negatives


def _average_precision(labels: np.ndarray, scores: np.ndarray, hard_false_negatives: int) -> float:
    """The official precision/recall curve integration."""
    if len(scores) == 0:
        # Only unmatched ground truth: the official tool crashes here; zero recall means AP 0.
        return 0.0
    order = np.argsort(scores)
    sorted_scores = scores[order]
    cumulative_true = np.cumsum(labels[order])
    _, first_index = np.unique(sorted_scores, return_index=True)
    total = len(sorted_scores)
    total_true = cumulative_true[-1]
    cumulative_true = np.append(cumulative_true, 0)  # index -1 reads 0 for the first threshold
    below = cumulative_true[first_index - 1]
    tp = total_true - below
    fp = total - first_index - tp
    fn = below + hard_false_negatives
    precision = np.append(tp / (tp + fp), 1.0)
    recall = np.append(tp / (tp + fn), 0.0)
    padded = np.concatenate([recall[:1], recall, [0.0]])
    step_widths = np.convolve(padded, [-0.5, 0, 0.5], "valid")
    return float(np.dot(precision, step_widths))


def instance_ap(
    matches: Sequence[ImageInstanceMatches],
    thing_categories: Sequence[Tuple[int, str]],
    *,
    label_divisor: int = 1000,
    min_region_size: int = MIN_REGION_SIZE,
) -> Dict:
    """AP (mean over IoU 0.50:0.95) and AP50 in percent (0..100), overall and per class.

    ``thing_categories``: ``(category id, name)`` pairs in the official order.  Classes without
    ground-truth instances are None and left out of the means; the means are None when no class
    has ground truth.
    """
    ap = np.full((len(thing_categories), len(OVERLAP_THRESHOLDS)), np.nan)
    for c, (category, _) in enumerate(thing_categories):
        entries = [m.per_category[int(category)] for m in matches if int(category) in m.per_category]
        have_gt = any(bool(((e[0] >= label_divisor) & (e[1] >= min_region_size)).any()) for e in entries)
        have_pred = any(len(e[2]) > 0 for e in entries)
        if not have_gt:
            continue
        if not have_pred:
            ap[c, :] = 0.0
            continue
        for t, threshold in enumerate(OVERLAP_THRESHOLDS):
            all_labels: List[float] = []
            all_scores: List[float] = []
            hard = 0
            for entry in entries:
                labels, scores, hard_fns = _image_examples(
                    entry, float(threshold), label_divisor, min_region_size
                )
                all_labels += labels
                all_scores += scores
                hard += hard_fns
            ap[c, t] = _average_precision(
                np.asarray(all_labels, np.float64), np.asarray(all_scores, np.float64), hard
            )

    o50 = int(np.argmin(np.abs(OVERLAP_THRESHOLDS - 0.5)))
    per_class = {}
    for c, (_, name) in enumerate(thing_categories):
        defined = not np.isnan(ap[c, 0])
        per_class[str(name)] = {
            "AP": 100.0 * float(ap[c].mean()) if defined else None,
            "AP50": 100.0 * float(ap[c, o50]) if defined else None,
        }
    defined_rows = ~np.isnan(ap[:, 0])
    if not defined_rows.any():
        return {"AP": None, "AP50": None, "per_class_ap": per_class}
    return {
        "AP": 100.0 * float(ap[defined_rows].mean()),
        "AP50": 100.0 * float(ap[defined_rows, o50].mean()),
        "per_class_ap": per_class,
    }
