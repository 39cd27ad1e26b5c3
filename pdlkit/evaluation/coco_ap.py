"""Mask AP / AP50 of COCO-format datasets through pycocotools' ``COCOeval`` (iouType ``segm``).

Ground-truth instances are the thing segments of the panoptic ground truth (crowd segments keep
``iscrowd``); predicted instances are the thing segments of the panoptic prediction, scored as
``pdl convert --format coco`` scores them.  The numbers are pycocotools' own: this module only
builds its inputs in memory from maps that are already decoded.
"""
from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Sequence, Tuple

import numpy as np

from pdlkit.errors import DataError

from .instance import thing_instances

__all__ = ["image_instances", "mask_ap"]


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def image_instances(
    gt_ids: np.ndarray, gt_segments: Sequence, pred_ids: np.ndarray, pred_segments: Sequence,
    thing_ids: Sequence[int], *, where: str = "",
) -> Tuple[List[dict], List[dict], Tuple[int, int]]:
    """(ground-truth, predicted) instance dicts of one image (no ``image_id`` yet) and its (H, W).

    ``gt_ids`` / ``pred_ids`` ``[H, W]`` panoptic id maps; ground truth keeps ``iscrowd``.
    """
    from pycocotools import mask as mask_util

    things = set(int(c) for c in thing_ids)
    gts = []
    for segment in gt_segments:
        if int(segment["category_id"]) in things:
            rle = _rle(gt_ids == int(segment["id"]))
            gts.append({"category_id": int(segment["category_id"]), "segmentation": rle,
                        "area": float(mask_util.area(rle)), "bbox": [float(v) for v in mask_util.toBbox(rle)],
                        "iscrowd": int(bool(segment.get("iscrowd", 0)))})
    dts = []
    for instance in thing_instances(pred_segments, thing_ids, where=where):
        mask = pred_ids == instance.segment_id
        if not mask.any():
            raise DataError(f"{where}: segment {instance.segment_id} is in panoptic.json but not in the PNG")
        dts.append({"category_id": instance.category_id, "segmentation": _rle(mask), "score": instance.score})
    return gts, dts, (int(gt_ids.shape[0]), int(gt_ids.shape[1]))


def _coco_ground_truth(per_image: List[tuple], category_ids: Sequence[int]):
    from pycocotools.coco import COCO

    annotations = []
    for index, (gts, _, _) in enumerate(per_image):
        for gt in gts:
            annotations.append({**gt, "image_id": index, "id": len(annotations) + 1})
    coco = COCO()
    images = [{"id": k, "height": size[0], "width": size[1]} for k, (_, _, size) in enumerate(per_image)]
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": int(c)} for c in category_ids]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def mask_ap(per_image: List[tuple], thing_categories: Sequence[Tuple[int, str]]) -> Dict:
    """``{"AP", "AP50", "per_class_ap": {name: {"AP", "AP50"}}}`` in percent (None where pycocotools
    has no ground truth to score) from :func:`image_instances` of every image."""
    from pycocotools.cocoeval import COCOeval

    category_ids = [c for c, _ in thing_categories]
    empty = {"AP": None, "AP50": None, "per_class_ap": {name: {"AP": None, "AP50": None}
                                                         for _, name in thing_categories}}
    if not category_ids or not any(gts for gts, _, _ in per_image):
        return empty
    ground_truth = _coco_ground_truth(per_image, category_ids)
    detections = [{**dt, "image_id": index} for index, (_, dts, _) in enumerate(per_image) for dt in dts]
    if not detections:  # pycocotools cannot load an empty result: nothing found scores 0
        return {"AP": 0.0, "AP50": 0.0, "per_class_ap": _per_class_without_detections(per_image, thing_categories)}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(detections), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"AP": _percent(evaluator.stats[0]), "AP50": _percent(evaluator.stats[1]),
            "per_class_ap": _per_class(evaluator, thing_categories)}


def _percent(value: float):
    return None if value < 0 else 100.0 * float(value)


def _per_class(evaluator, thing_categories) -> Dict:
    """Per category, as summarize() averages: all areas, the largest maxDets, valid entries only."""
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    order = {int(c): k for k, c in enumerate(evaluator.params.catIds)}
    result = {}
    for category_id, name in thing_categories:
        k = order[int(category_id)]
        values = {}
        for key, block in (("AP", precision[:, :, k, 0, -1]), ("AP50", precision[0, :, k, 0, -1])):
            valid = block[block > -1]
            values[key] = 100.0 * float(valid.mean()) if valid.size else None
        result[name] = values
    return result


def _per_class_without_detections(per_image, thing_categories) -> Dict:
    present = {gt["category_id"] for gts, _, _ in per_image for gt in gts if not gt["iscrowd"]}
    return {name: ({"AP": 0.0, "AP50": 0.0} if int(c) in present else {"AP": None, "AP50": None})
            for c, name in thing_categories}
