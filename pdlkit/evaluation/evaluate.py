"""``evaluate_predictions``: PQ/SQ/RQ, mIoU and instance AP of a predictions folder, image by image
in worker threads (numpy, OpenCV and pycocotools release the GIL for the heavy parts), each PNG
decoded once."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

import numpy as np

from pdlkit.errors import DataError

from ._io import load_ground_truth, load_predictions, read_label_png, read_panoptic_png
from .coco_ap import image_instances, mask_ap
from .instance import instance_ap, match_image_instances, thing_instances
from .pairing import pair_images
from .panoptic import PQStats, joint_histogram, pq_from_joint, pq_image_stats, pq_summary
from .semantic import confusion_from_segments, fold_joint, iou_summary

__all__ = ["evaluate_predictions"]


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class _Classes:
    """What is scored: the ground truth's categories (PQ, AP) and the classes of mIoU."""

    categories: list
    category_index: dict
    class_ids: list
    class_names: list
    thing_categories: list
    label_divisor: int
    void_label: int = field(init=False)

    def __post_init__(self) -> None:
        # The label that derived semantic maps give void pixels: one that is not a class.
        self.void_label = 0 if 0 not in self.class_ids else max(self.class_ids) + 1

    @property
    def thing_ids(self) -> list:
        return [c for c, _ in self.thing_categories]


def _classes(gt_json: dict, spec) -> _Classes:
    categories = list(gt_json["categories"])
    if spec is not None:
        class_ids, class_names = [int(c) for c in spec.category_ids], list(spec.class_names)
        label_divisor = int(spec.label_divisor)
    else:
        class_ids = [int(c["id"]) for c in categories]
        class_names, label_divisor = [str(c["name"]) for c in categories], 1000
    return _Classes(categories, {int(c["id"]): k for k, c in enumerate(categories)}, class_ids, class_names,
                    [(int(c["id"]), str(c["name"])) for c in categories if c.get("isthing")], label_divisor)


def _ap_mode(ground_truth: Dict, pairs: list, compute_ap: bool, classes: _Classes, split: str) -> Optional[str]:
    """"cityscapes" (instanceIds files), "coco" (pycocotools on the panoptic ground truth) or None."""
    if not compute_ap or not classes.thing_ids:
        return None
    if ground_truth["format"] == "coco":
        return "coco"
    absent = [name for name, _, _ in pairs if name not in ground_truth["instance_ids"]]
    if absent:
        raise DataError(
            f"{ground_truth['json_path'].parents[1]}: no gtFine/{split}/*/{absent[0]}_gtFine_instanceIds.png "
            f"for instance AP ({len(absent)} image(s) lack one); pass compute_ap=False (--no-ap) to skip AP"
        )
    return "cityscapes"


def _tasks(ground_truth: Dict, predictions: Dict, pairs: list, classes: _Classes, ap_mode) -> List[Dict]:
    """One task per image: its files and what to compute."""
    from pdlkit.fileio import resolve_inside

    semantic_dir = predictions["dir"] / "semantic"
    json_path = ground_truth["json_path"]
    tasks = []
    for name, gt_ann, pred_ann in pairs:
        pred_png = predictions["png"][pred_ann["image_id"]]
        if not pred_png.is_file():
            raise DataError(f"{pred_png}: the panoptic PNG of image {name} is missing")
        pred_semantic = None
        if semantic_dir.is_dir():
            pred_semantic = resolve_inside(semantic_dir, pred_ann["file_name"],
                                           what=f"{predictions['json_path']}: file_name")
            if not pred_semantic.is_file():
                raise DataError(f"{pred_semantic}: the semantic PNG of image {name} is missing")
        tasks.append({"image_id": name, "gt_annotation": gt_ann, "pred_annotation": pred_ann, "pred_png": pred_png,
                      "gt_png": resolve_inside(ground_truth["panoptic_dir"], gt_ann["file_name"],
                                               what=f"{json_path}: file_name"),
                      "pred_semantic_png": pred_semantic,
                      "instance_png": ground_truth["instance_ids"].get(name) if ap_mode == "cityscapes" else None,
                      "coco_ap": ap_mode == "coco", "classes": classes})
    return tasks


def _semantic_part(task: Dict, gt_ids: np.ndarray, joint: np.ndarray) -> np.ndarray:
    """Confusion matrix of one image.  Ground truth: each segment's category in the panoptic map,
    which on Cityscapes data equals ``*_gtFine_labelIds.png`` on every evaluated class (the
    panoptic ground truth is made from the same ids, leaving out only the unevaluated labels), so
    that file need not be decoded.  Prediction: ``semantic/`` when present, else the panoptic
    map's categories, read off PQ's joint histogram without another pass over the pixels.

    ``gt_ids``: ``[H, W]`` ground-truth segment ids; ``joint``: PQ's ``[G + 2, P + 2]`` histogram.
    """
    classes = task["classes"]
    void, gt_segments = classes.void_label, task["gt_annotation"]["segments_info"]
    if task["pred_semantic_png"] is not None:
        pred_labels = read_label_png(task["pred_semantic_png"], reuse="semantic")
        return confusion_from_segments(gt_ids, gt_segments, void, pred_labels, classes.class_ids,
                                       image_id=task["image_id"])
    row_labels = [void] + [int(s["category_id"]) for s in gt_segments] + [void]
    col_labels = [void] + [int(s["category_id"]) for s in task["pred_annotation"]["segments_info"]] + [void]
    return fold_joint(joint, row_labels, col_labels, classes.class_ids, image_id=task["image_id"])


def _instance_part(task: Dict, gt_ids: np.ndarray, pred_ids: np.ndarray):
    """This image's share of instance AP: Cityscapes matches or pycocotools instances (or None)."""
    classes, pred_segments = task["classes"], task["pred_annotation"]["segments_info"]
    where = str(task["pred_png"])
    if task["coco_ap"]:
        return image_instances(gt_ids, task["gt_annotation"]["segments_info"], pred_ids, pred_segments,
                               classes.thing_ids, where=where)
    if task["instance_png"] is None:
        return None
    instances = thing_instances(pred_segments, classes.thing_ids, where=where)
    return match_image_instances(read_label_png(task["instance_png"]), pred_ids, instances, classes.thing_ids,
                                 list(classes.category_index), label_divisor=classes.label_divisor,
                                 image_id=task["image_id"])


def _evaluate_image(task: Dict) -> Dict:
    """One image, run in a worker thread: PQ counts, confusion matrix and instance results, with
    each PNG decoded once; mIoU's ground truth comes from the panoptic map (no labelIds file)."""
    # The decoded maps live in this thread's reused buffers: nothing below keeps a view of them.
    gt_ids = read_panoptic_png(task["gt_png"], reuse="gt")
    pred_ids = read_panoptic_png(task["pred_png"], reuse="pred")
    image_id, gt_segments = task["image_id"], task["gt_annotation"]["segments_info"]
    pred_segments = task["pred_annotation"]["segments_info"]
    if gt_ids.shape != pred_ids.shape:  # the message pq_image_stats gives
        pq_image_stats(gt_ids, gt_segments, pred_ids, pred_segments, task["classes"].category_index,
                       image_id=image_id)
    joint = joint_histogram(gt_ids, gt_segments, pred_ids, pred_segments, image_id)
    pq = pq_from_joint(joint, gt_segments, pred_segments, task["classes"].category_index, image_id=image_id)
    return {"pq": pq, "confusion": _semantic_part(task, gt_ids, joint),
            "instances": _instance_part(task, gt_ids, pred_ids)}


def _run(tasks: List[Dict], classes: _Classes, num_images: int, workers: int, progress: bool) -> tuple:
    """(PQ sums, confusion matrix, per-image instance results) over all tasks."""
    from tqdm import tqdm

    pq_stats = PQStats.zeros(len(classes.categories))
    size = len(classes.class_ids) + 1
    confusion = np.zeros((size, size), np.int64)
    instances = []
    with ThreadPoolExecutor(max_workers=workers) as executor, tqdm(
        total=num_images, desc="eval", unit="img", disable=not progress
    ) as bar:
        for result in executor.map(_evaluate_image, tasks):
            pq_stats += result["pq"]
            confusion += result["confusion"]
            bar.update(1)
            if result["instances"] is not None:
                instances.append(result["instances"])
    return pq_stats, confusion, instances


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

    Ground truth: a COCO-panoptic dataset prepared by ``pdl prepare coco|vistas|panoptic``, or a
    Cityscapes-layout root (``gtFine/cityscapes_panoptic_{split}.json`` + PNGs, with
    ``*_gtFine_instanceIds.png`` for AP).  Predictions:
    ``panoptic.json`` + ``panoptic/`` and optionally ``semantic/`` (docs/formats.md); they are paired
    with the images as :mod:`pdlkit.evaluation.pairing` describes.

    PQ/SQ/RQ equal panopticapi's ``pq_compute`` (and cityscapesscripts' copy of it).  mIoU
    (equal to ``evalPixelLevelSemanticLabeling`` on Cityscapes data) takes the ground truth's
    classes from its panoptic map and the prediction's from ``semantic/`` when present, else from
    its panoptic map.  AP / AP50: Cityscapes data as
    ``evalInstanceLevelSemanticLabeling``; COCO-format data as pycocotools' mask ``COCOeval`` on the
    thing segments.  ``spec``: its ``category_ids`` are the classes of mIoU (default: the ground
    truth's categories) and its ``label_divisor`` decodes instance ids.  ``image_ids``: score only
    these images (``str(id)`` or file name without extension).  Images run in ``num_workers``
    threads (default: the usable CPU cores).

    Returns ``{"PQ", "SQ", "RQ", "n", "things": {...}, "stuff": {...}, "per_class": {name: {"PQ",
    "SQ", "RQ", "tp", "fp", "fn", ...}}, "mIoU", "per_class_iou", "AP", "AP50", "per_class_ap",
    "num_images"}``; only classes that occur enter an average; AP keys are absent when
    ``compute_ap`` is false.  Raises :class:`DataError` for a wrong root, a malformed predictions
    folder and images without a prediction (naming them).
    """
    ground_truth = load_ground_truth(data_root, split)
    predictions = load_predictions(predictions_dir)
    classes = _classes(ground_truth["json"], spec)
    pairs = pair_images(ground_truth["json"], predictions, split, image_ids=image_ids)
    if not pairs:
        raise DataError(f"{ground_truth['json_path']}: no images to evaluate")
    ap_mode = _ap_mode(ground_truth, pairs, compute_ap, classes, split)
    tasks = _tasks(ground_truth, predictions, pairs, classes, ap_mode)
    pq_stats, confusion, instances = _run(tasks, classes, len(pairs), num_workers or _default_workers(), progress)
    results = pq_summary(pq_stats, classes.categories)
    semantic = iou_summary(confusion, classes.class_names)
    results["mIoU"], results["per_class_iou"] = semantic["mIoU"], semantic["per_class_iou"]
    if compute_ap and ap_mode == "coco":
        results.update(mask_ap(instances, classes.thing_categories))
    elif compute_ap:
        results.update(instance_ap(instances, classes.thing_categories, label_divisor=classes.label_divisor))
    results["num_images"] = len(pairs)
    return results
