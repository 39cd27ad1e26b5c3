"""Evaluation equal to cityscapesscripts' evaluators, and instance conversion.

:func:`evaluate_predictions` gives PQ/SQ/RQ (``evalPanopticSemanticLabeling``), mIoU
(``evalPixelLevelSemanticLabeling``) and instance AP / AP50 (``evalInstanceLevelSemanticLabeling``)
of a predictions folder (DESIGN.md §3) against a prepared Cityscapes-layout root, in percent.
:func:`convert_predictions` writes the instance predictions the official instance tool reads.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, Optional

import numpy as np

from pdlkit.errors import DataError

from ._io import (
    load_ground_truth,
    load_predictions,
    read_label_png,
    read_panoptic_png,
)
from .convert import convert_predictions
from .instance import instance_ap, match_image_instances, thing_instances
from .panoptic import PQStats, pq_image_stats, pq_summary
from .report import format_results
from .semantic import confusion_matrix, iou_summary

__all__ = ["evaluate_predictions", "convert_predictions", "format_results"]


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _category_map(id_map: np.ndarray, segments, void_label: int) -> np.ndarray:
    """Semantic label ids from a panoptic id map: each segment's category, ``void_label`` elsewhere."""
    from ._io import index_map

    ids = np.array([int(s["id"]) for s in segments], np.int64)
    categories = np.array([int(s["category_id"]) for s in segments] + [void_label], np.int64)
    return categories[index_map(id_map, ids)]


def _evaluate_semantic(task: Dict) -> np.ndarray:
    """Confusion matrix of one image from its two label PNGs."""
    gt_labels = read_label_png(task["gt_label_png"])
    pred_labels = read_label_png(task["pred_semantic_png"])
    return confusion_matrix(gt_labels, pred_labels, task["class_ids"], image_id=task["image_id"])


def _evaluate_image(task: Dict) -> Dict:
    """One image's share of the work, run in a worker thread.

    ``task["part"]``: "panoptic" (PQ counts and instance matches), "semantic" (confusion matrix
    from the label PNGs) or "all" (both; used when a semantic map must be derived from a panoptic
    one).  Splitting an image in two keeps both cores busy when there are few large images.
    """
    if task["part"] == "semantic":
        return {"pq": None, "confusion": _evaluate_semantic(task), "matches": None}
    image_id = task["image_id"]
    gt_ann, pred_ann = task["gt_annotation"], task["pred_annotation"]
    gt_ids = read_panoptic_png(task["gt_png"])
    pred_ids = read_panoptic_png(task["pred_png"])
    pq = pq_image_stats(
        gt_ids,
        gt_ann["segments_info"],
        pred_ids,
        pred_ann["segments_info"],
        task["category_index"],
        image_id=image_id,
    )
    confusion = None
    if task["part"] == "all":
        # Semantic maps: the files when present; otherwise each segment's category (void -> label
        # 0, which is not evaluated), which gives the same counts on createPanopticImgs ground truth.
        if task["gt_label_png"] is not None:
            gt_labels = read_label_png(task["gt_label_png"])
        else:
            gt_labels = _category_map(gt_ids, gt_ann["segments_info"], 0)
        if task["pred_semantic_png"] is not None:
            pred_labels = read_label_png(task["pred_semantic_png"])
        else:
            pred_labels = _category_map(pred_ids, pred_ann["segments_info"], 0)
        confusion = confusion_matrix(gt_labels, pred_labels, task["class_ids"], image_id=image_id)
    matches = None
    if task["instance_png"] is not None:
        instance_map = read_label_png(task["instance_png"])
        instances = thing_instances(
            pred_ann["segments_info"], task["thing_ids"], where=str(task["pred_png"])
        )
        matches = match_image_instances(
            instance_map,
            pred_ids,
            instances,
            task["thing_ids"],
            task["evaluated_ids"],
            label_divisor=task["label_divisor"],
            image_id=image_id,
        )
    return {"pq": pq, "confusion": confusion, "matches": matches}


def evaluate_predictions(
    data_root: str | os.PathLike,
    split: str,
    predictions_dir: str | os.PathLike,
    *,
    spec=None,
    compute_ap: bool = True,
    progress: bool = True,
    image_ids: Optional[Iterable[str]] = None,
    num_workers: Optional[int] = None,
) -> Dict:
    """Evaluate a predictions folder against the ground truth of ``split``; all scores in percent.

    Ground truth: ``data_root/gtFine/cityscapes_panoptic_{split}.json`` + PNGs (PQ),
    ``gtFine/{split}/*/*_gtFine_labelIds.png`` (mIoU; without them the panoptic ground truth's
    categories are used) and ``*_gtFine_instanceIds.png`` (AP).  Predictions: ``panoptic.json`` +
    ``panoptic/`` (PQ, AP from the thing segments and their ``score``) and ``semantic/`` (mIoU;
    without it the panoptic prediction's categories are used).

    ``spec``: the dataset spec whose ``category_ids`` are the classes of mIoU (default: the ground
    truth json's categories, i.e. the 19 Cityscapes classes) and whose ``label_divisor`` decodes the
    instance ids.  ``image_ids``: evaluate only these ground-truth images (default: all).
    Images run in ``num_workers`` threads (default: the usable CPU cores).

    Returns ``{"PQ", "SQ", "RQ", "n", "things": {"PQ", "SQ", "RQ", "n"}, "stuff": {...},
    "per_class": {name: {"PQ", "SQ", "RQ", "tp", "fp", "fn", ...}}, "mIoU", "per_class_iou":
    {name: IoU or None}, "AP", "AP50", "per_class_ap": {name: {"AP", "AP50"}}, "num_images"}``.
    Averages follow the official tools: only classes that occur count.  AP keys are absent when
    ``compute_ap`` is false.  Raises :class:`DataError` for a wrong root, a missing or malformed
    predictions folder, and ground-truth images without a prediction (naming them).
    """
    from tqdm import tqdm

    ground_truth = load_ground_truth(data_root, split)
    predictions = load_predictions(predictions_dir)
    gt_json = ground_truth["json"]
    categories = list(gt_json["categories"])
    category_index = {int(c["id"]): k for k, c in enumerate(categories)}
    if spec is not None:
        class_ids = [int(c) for c in spec.category_ids]
        class_names = list(spec.class_names)
        label_divisor = int(spec.label_divisor)
    else:
        class_ids = [int(c["id"]) for c in categories]
        class_names = [str(c["name"]) for c in categories]
        label_divisor = 1000
    thing_categories = [(int(c["id"]), str(c["name"])) for c in categories if c.get("isthing")]
    thing_ids = [c for c, _ in thing_categories]

    gt_annotations = list(gt_json["annotations"])
    if image_ids is not None:
        wanted = set(str(i) for i in image_ids)
        unknown = sorted(wanted - {str(a["image_id"]) for a in gt_annotations})
        if unknown:
            raise DataError(f"images {unknown[:5]} are not in the ground truth of split {split!r}")
        gt_annotations = [a for a in gt_annotations if str(a["image_id"]) in wanted]
    if not gt_annotations:
        raise DataError(f"{ground_truth['json_path']}: no images to evaluate")
    missing = [str(a["image_id"]) for a in gt_annotations if str(a["image_id"]) not in predictions["annotations"]]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(
            f"{predictions['json_path']}: {len(missing)} image(s) of split {split!r} have no "
            f"prediction: {shown}"
        )

    pred_dir = predictions["dir"]
    semantic_dir = pred_dir / "semantic"
    if compute_ap and thing_ids:
        absent = [str(a["image_id"]) for a in gt_annotations if str(a["image_id"]) not in ground_truth["instance_ids"]]
        if absent:
            raise DataError(
                f"{data_root}: no gtFine/{split}/*/{absent[0]}_gtFine_instanceIds.png for instance AP "
                f"({len(absent)} image(s) lack one); pass compute_ap=False (--no-ap) to skip AP"
            )
    tasks = []
    for gt_ann in gt_annotations:
        image_id = str(gt_ann["image_id"])
        pred_ann = predictions["annotations"][image_id]
        pred_png = pred_dir / "panoptic" / pred_ann["file_name"]
        if not pred_png.is_file():
            raise DataError(f"{pred_png}: the panoptic PNG of image {image_id} is missing")
        pred_semantic = None
        if semantic_dir.is_dir():
            pred_semantic = semantic_dir / pred_ann["file_name"]
            if not pred_semantic.is_file():
                raise DataError(f"{pred_semantic}: the semantic PNG of image {image_id} is missing")
        task = {
            "image_id": image_id,
            "gt_annotation": gt_ann,
            "pred_annotation": pred_ann,
            "gt_png": ground_truth["panoptic_dir"] / gt_ann["file_name"],
            "pred_png": pred_png,
            "gt_label_png": ground_truth["label_ids"].get(image_id),
            "pred_semantic_png": pred_semantic,
            "instance_png": ground_truth["instance_ids"].get(image_id) if compute_ap and thing_ids else None,
            "category_index": category_index,
            "class_ids": class_ids,
            "thing_ids": thing_ids,
            "evaluated_ids": [int(c["id"]) for c in categories],
            "label_divisor": label_divisor,
        }
        if task["gt_label_png"] is not None and task["pred_semantic_png"] is not None:
            tasks.append({**task, "part": "panoptic"})
            tasks.append({**task, "part": "semantic"})
        else:
            tasks.append({**task, "part": "all"})

    pq_stats = PQStats.zeros(len(categories))
    confusion = np.zeros((len(class_ids) + 1, len(class_ids) + 1), np.int64)
    all_matches = []
    workers = num_workers or _default_workers()
    num_images = len(gt_annotations)
    with ThreadPoolExecutor(max_workers=workers) as executor, tqdm(
        total=num_images, desc="eval", unit="img", disable=not progress
    ) as bar:
        for result in executor.map(_evaluate_image, tasks):
            if result["pq"] is not None:  # the panoptic part ends an image's work in the bar
                pq_stats += result["pq"]
                bar.update(1)
            if result["confusion"] is not None:
                confusion += result["confusion"]
            if result["matches"] is not None:
                all_matches.append(result["matches"])

    results = pq_summary(pq_stats, categories)
    semantic = iou_summary(confusion, class_names)
    results["mIoU"] = semantic["mIoU"]
    results["per_class_iou"] = semantic["per_class_iou"]
    if compute_ap:
        results.update(instance_ap(all_matches, thing_categories, label_divisor=label_divisor))
    results["num_images"] = num_images
    return results
