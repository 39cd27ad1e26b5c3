"""Panoptic quality (PQ = SQ × RQ), equal to cityscapesscripts' ``evalPanopticSemanticLabeling``.

Per image, one joint histogram of (ground-truth segment, predicted segment) pixel pairs (one
pass over the two id maps) gives every intersection at once; matching, void and crowd
handling then work on that small matrix.  The rules are the official evaluator's:

- a ground-truth segment and a predicted segment of the same category match when
  ``IoU > 0.5``, where the union leaves out the predicted segment's pixels on void (id 0);
  ground-truth crowd segments never match;
- the ground-truth segment's area is the json's ``area``; the predicted segment's area is counted
  in the PNG;
- unmatched non-crowd ground-truth segments are false negatives;
- an unmatched predicted segment is a false positive unless more than half of it lies on void
  plus the same category's crowd region;
- class averages take only the categories with ``tp + fp + fn > 0``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from pdlkit.errors import DataError

from ._io import count_png_pairs, known_pair_histogram

__all__ = ["PQStats", "pq_image_stats", "pq_from_joint", "joint_histogram", "count_files", "segment_ids",
           "pq_summary"]

VOID_ID = 0


@dataclass
class PQStats:
    """Sums over images, one entry per category (in the order of the categories list).

    tp, fp, fn ``[K]`` int64; iou ``[K]`` float64 (sum of the matched pairs' IoU).
    """

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou: np.ndarray

    @classmethod
    def zeros(cls, num_categories: int) -> "PQStats":
        return cls(
            np.zeros(num_categories, np.int64),
            np.zeros(num_categories, np.int64),
            np.zeros(num_categories, np.int64),
            np.zeros(num_categories, np.float64),
        )

    def __iadd__(self, other: "PQStats") -> "PQStats":
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.iou += other.iou
        return self


def segment_ids(segments) -> np.ndarray:
    """``[1 + S]`` int64: void (0), then the ``id`` of each segment listed, in order: the rows (or
    columns) of :func:`joint_histogram` before its last, for ids not listed."""
    return np.array([VOID_ID] + [int(s["id"]) for s in segments], np.int64)


def _pred_segment_ids(pred_segments, image_id) -> np.ndarray:
    pred_seg_ids = segment_ids(pred_segments)
    if len(np.unique(pred_seg_ids)) != len(pred_seg_ids):
        raise DataError(f"image {image_id}: the prediction json lists a segment id twice (or id 0)")
    return pred_seg_ids


def _json_disagrees(joint: np.ndarray) -> bool:
    """Whether the prediction PNG has an id its json does not list, or the json one the PNG lacks."""
    pred_area = joint.sum(axis=0)
    return bool(pred_area[-1] > 0 or (pred_area[1:-1] == 0).any())


def joint_histogram(gt_ids: np.ndarray, gt_segments, pred_ids: np.ndarray, pred_segments, image_id="") -> np.ndarray:
    """``[G + 2, P + 2]`` pixel counts of (ground-truth row, predicted column) pairs, one pass
    over the two ``[H, W]`` id maps.

    Rows: 0 = void, 1..G = ground-truth segments, G + 1 = ids its json does not list (ignored).
    Columns: 0 = void, 1..P = predicted segments, P + 1 = ids its json does not list (an error).
    """
    pred_seg_ids = _pred_segment_ids(pred_segments, image_id)
    joint = known_pair_histogram(gt_ids, segment_ids(gt_segments), pred_ids, pred_seg_ids)
    pred_area = joint.sum(axis=0)
    if pred_area[-1] > 0:
        present = np.unique(pred_ids[~np.isin(pred_ids, pred_seg_ids)])
        raise DataError(
            f"image {image_id}: segment ids {present[:5].tolist()} are in the prediction PNG but not "
            f"in its json"
        )
    missing = [int(pred_seg_ids[k]) for k in range(1, len(pred_seg_ids)) if pred_area[k] == 0]
    if missing:
        raise DataError(
            f"image {image_id}: segment ids {missing[:5]} are in the prediction json but not in its PNG"
        )
    return joint


def count_files(gt_png, gt_segments, pred_png, pred_segments, labels_png=None, class_ids=(), *,
                keep_maps: bool = False, image_id="") -> Optional[Dict]:
    """:func:`joint_histogram` of two panoptic PNGs, and the ``[G + 2, K + 1]`` counts of
    (ground-truth row, position of the label in ``class_ids``, ``K`` for other labels) pairs of a
    semantic label PNG, straight from the files in one pass over their rows (see
    :func:`pdlkit.evaluation._io.count_png_pairs`, whose dict this returns: ``"joint"``,
    ``"labels"``, ``"gt_map"``, ``"pred_map"``).

    None when a file is off that path or the prediction's PNG and json disagree: the caller then
    decodes the maps, and :func:`joint_histogram` names the defect.
    """
    pred_seg_ids = _pred_segment_ids(pred_segments, image_id)
    counted = count_png_pairs(gt_png, segment_ids(gt_segments), pred_png, pred_seg_ids, labels_png,
                              np.asarray(class_ids, np.int64), keep_maps=keep_maps)
    if counted is None or _json_disagrees(counted["joint"]):
        return None
    return counted


def _count_false_positives(stats: PQStats, inter, pred_void, area_p, pred_cat, gt_cat, gt_crowd,
                           pred_matched) -> None:
    """An unmatched prediction is a false positive unless more than half of it lies on void plus
    its category's crowd region (the official evaluator keeps the last crowd segment listed)."""
    crowd_row_of_category: Dict[int, int] = {}
    for g in np.nonzero(gt_crowd)[0]:
        crowd_row_of_category[int(gt_cat[g])] = int(g)
    ignored = pred_void.astype(np.int64).copy()
    for p in range(len(pred_cat)):
        crowd_row = crowd_row_of_category.get(int(pred_cat[p]))
        if crowd_row is not None:
            ignored[p] += inter[crowd_row, p]
    is_fp = ~pred_matched & ~(ignored / area_p > 0.5)
    np.add.at(stats.fp, pred_cat[is_fp], 1)


def pq_image_stats(
    gt_ids: np.ndarray,
    gt_segments: Sequence[Mapping],
    pred_ids: np.ndarray,
    pred_segments: Sequence[Mapping],
    category_index: Mapping[int, int],
    *,
    image_id: str = "",
) -> PQStats:
    """PQ counts of one image.

    ``gt_ids`` / ``pred_ids``: ``[H, W]`` segment id maps (0 = void); ``gt_segments`` /
    ``pred_segments``: COCO ``segments_info`` lists (``id``, ``category_id``; ground truth also
    ``area`` and ``iscrowd``); ``category_index``: category id -> position in the result arrays.
    Raises :class:`DataError` (naming ``image_id``) for predictions the official evaluator rejects:
    a PNG id missing from the json, a json id missing from the PNG, an unknown category.
    """
    if gt_ids.shape != pred_ids.shape:
        raise DataError(
            f"image {image_id}: prediction is {pred_ids.shape[1]}x{pred_ids.shape[0]} but the ground "
            f"truth is {gt_ids.shape[1]}x{gt_ids.shape[0]} (width x height)"
        )
    joint = joint_histogram(gt_ids, gt_segments, pred_ids, pred_segments, image_id)
    return pq_from_joint(joint, gt_segments, pred_segments, category_index, image_id=image_id)


def pq_from_joint(joint: np.ndarray, gt_segments: Sequence[Mapping], pred_segments: Sequence[Mapping],
                  category_index: Mapping[int, int], *, image_id: str = "") -> PQStats:
    """PQ counts of one image from its :func:`joint_histogram` ``[G + 2, P + 2]``."""
    stats = PQStats.zeros(len(category_index))
    try:
        pred_cat = np.array([category_index[int(s["category_id"])] for s in pred_segments], np.int64)
    except KeyError as exc:
        raise DataError(f"image {image_id}: a predicted segment has unknown category_id {exc}") from None
    gt_cat = np.array([category_index.get(int(s["category_id"]), -1) for s in gt_segments], np.int64)
    gt_area = np.array([s["area"] for s in gt_segments], np.int64)
    gt_crowd = np.array([int(s.get("iscrowd", 0)) == 1 for s in gt_segments], bool)

    inter = joint[1 : 1 + len(gt_segments), 1 : 1 + len(pred_segments)]  # [G, P]
    pred_void = joint[0, 1 : 1 + len(pred_segments)]  # [P]
    area_p = joint.sum(axis=0)[1 : 1 + len(pred_segments)]
    candidate = (inter > 0) & (gt_cat[:, None] == pred_cat[None, :]) & (gt_cat[:, None] >= 0) & ~gt_crowd[:, None]
    union = area_p[None, :] + gt_area[:, None] - inter - pred_void[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(candidate, inter / np.where(candidate, union, 1), 0.0)
    matched = candidate & (iou > 0.5)
    gi, pi = np.nonzero(matched)
    np.add.at(stats.tp, gt_cat[gi], 1)
    np.add.at(stats.iou, gt_cat[gi], iou[gi, pi])
    # Ground truth with a category outside the list cannot be counted; the official evaluator
    # would fail on it, and createPanopticImgs never writes one.
    counted_fn = ~matched.any(axis=1) & ~gt_crowd & (gt_cat >= 0)
    np.add.at(stats.fn, gt_cat[counted_fn], 1)
    _count_false_positives(stats, inter, pred_void, area_p, pred_cat, gt_cat, gt_crowd, matched.any(axis=0))
    return stats


def pq_summary(stats: PQStats, categories: Sequence[Mapping]) -> Dict:
    """PQ, SQ, RQ in percent (0..100) for all, things and stuff, and per category.

    ``categories``: the ground-truth json's list (``id``, ``name``, ``isthing``), in the order of
    ``stats``.  A group's average is over its categories with ``tp + fp + fn > 0`` (``n`` of them);
    when there are none its PQ/SQ/RQ are None.  Per category: ``PQ``, ``SQ``, ``RQ``, ``tp``, ``fp``,
    ``fn``, ``category_id``, ``isthing``, ``present``; absent categories have 0.0, as officially.
    """
    per_class: Dict[str, Dict] = {}
    pq = np.zeros(len(categories))
    sq = np.zeros(len(categories))
    rq = np.zeros(len(categories))
    present = (stats.tp + stats.fp + stats.fn) > 0
    for k, category in enumerate(categories):
        tp, fp, fn = int(stats.tp[k]), int(stats.fp[k]), int(stats.fn[k])
        if present[k]:
            denominator = tp + 0.5 * fp + 0.5 * fn
            pq[k] = stats.iou[k] / denominator
            sq[k] = stats.iou[k] / tp if tp else 0.0
            rq[k] = tp / denominator
        per_class[str(category["name"])] = {
            "PQ": 100.0 * pq[k],
            "SQ": 100.0 * sq[k],
            "RQ": 100.0 * rq[k],
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "category_id": int(category["id"]),
            "isthing": bool(category.get("isthing", 0)),
            "present": bool(present[k]),
        }

    def group(selected: np.ndarray) -> Dict:
        chosen = selected & present
        n = int(chosen.sum())
        if n == 0:
            return {"PQ": None, "SQ": None, "RQ": None, "n": 0}
        return {
            "PQ": 100.0 * float(pq[chosen].sum() / n),
            "SQ": 100.0 * float(sq[chosen].sum() / n),
            "RQ": 100.0 * float(rq[chosen].sum() / n),
            "n": n,
        }

    is_thing = np.array([bool(c.get("isthing", 0)) for c in categories], bool)
    everything = group(np.ones(len(categories), bool))
    return {
        "PQ": everything["PQ"],
        "SQ": everything["SQ"],
        "RQ": everything["RQ"],
        "n": everything["n"],
        "things": group(is_thing),
        "stuff": group(~is_thing),
        "per_class": per_class,
    }
