"""``evaluate_predictions``: PQ/SQ/RQ, mIoU and instance AP of a predictions folder, image by image
in worker threads (numpy, OpenCV and pycocotools release the GIL for the heavy parts), each PNG
decoded once."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from pdlkit.errors import DataError
from pdlkit.threads import usable_cores

from ._io import load_ground_truth, load_predictions, read_label_png, read_panoptic_png
from .coco_ap import image_instances, mask_ap
from .instance import instance_ap, match_image_instances, thing_instances
from .pairing import pair_images
from .panoptic import PQStats, count_files, joint_histogram, pq_from_joint, pq_image_stats, pq_summary
from .semantic import confusion_from_segments, fold_joint, fold_segment_counts, iou_summary

__all__ = ["evaluate_predictions", "score_images", "combine_shares", "EvalShare"]


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
    # Each image's position in the ground truth orders what shares of the split add up.
    position = {id(annotation): k for k, annotation in enumerate(ground_truth["json"]["annotations"])}
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
        tasks.append({"image_id": name, "position": position[id(gt_ann)], "gt_annotation": gt_ann, "pred_annotation": pred_ann, "pred_png": pred_png,
                      "gt_png": resolve_inside(ground_truth["panoptic_dir"], gt_ann["file_name"],
                                               what=f"{json_path}: file_name"),
                      "pred_semantic_png": pred_semantic,
                      "instance_png": ground_truth["instance_ids"].get(name) if ap_mode == "cityscapes" else None,
                      "coco_ap": ap_mode == "coco", "classes": classes})
    return tasks


def _semantic_part(task: Dict, counted: Dict) -> np.ndarray:
    """Confusion matrix of one image.  Ground truth: each segment's category in the panoptic map,
    which on Cityscapes data equals ``*_gtFine_labelIds.png`` on every evaluated class (the
    panoptic ground truth is made from the same ids, leaving out only the unevaluated labels), so
    that file need not be decoded.  Prediction: ``semantic/`` when present (counted in the same
    pass as PQ's histogram when the files allowed it), else the panoptic map's categories, read
    off PQ's joint histogram without another pass over the pixels.

    ``counted``: :func:`count_files`' dict (``"joint"`` ``[G + 2, P + 2]``, ``"labels"``
    ``[G + 2, K + 1]`` or None, ``"gt_map"`` ``[H, W]`` ground-truth ids where ``"labels"`` is None).
    """
    classes, image_id = task["classes"], task["image_id"]
    void, gt_segments = classes.void_label, task["gt_annotation"]["segments_info"]
    if counted["labels"] is not None:
        return fold_segment_counts(counted["labels"], gt_segments, void, classes.class_ids, image_id=image_id)
    if task["pred_semantic_png"] is not None:
        pred_labels = read_label_png(task["pred_semantic_png"], reuse="semantic")
        return confusion_from_segments(counted["gt_map"], gt_segments, void, pred_labels, classes.class_ids,
                                       image_id=image_id)
    row_labels = [void] + [int(s["category_id"]) for s in gt_segments] + [void]
    col_labels = [void] + [int(s["category_id"]) for s in task["pred_annotation"]["segments_info"]] + [void]
    return fold_joint(counted["joint"], row_labels, col_labels, classes.class_ids, image_id=image_id)


def _instance_part(task: Dict, gt_ids: Optional[np.ndarray], pred_ids: Optional[np.ndarray]):
    """This image's share of instance AP: Cityscapes matches or pycocotools instances (or None).
    ``gt_ids`` / ``pred_ids``: the ``[H, W]`` id maps (kept whenever AP needs them)."""
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
    """One image, run in a worker thread: PQ counts, confusion matrix and instance results.  The
    PNGs are decoded row by row and counted while each row is in the cache (no ``[H, W]`` map
    unless AP needs one); mIoU's ground truth comes from the panoptic map (no labelIds file).
    Files off that path are decoded to maps first, and any defect is named there."""
    classes, image_id = task["classes"], task["image_id"]
    gt_segments, pred_segments = task["gt_annotation"]["segments_info"], task["pred_annotation"]["segments_info"]
    counted = count_files(task["gt_png"], gt_segments, task["pred_png"], pred_segments, task["pred_semantic_png"],
                          classes.class_ids, keep_maps=task["coco_ap"] or task["instance_png"] is not None,
                          image_id=image_id)
    if counted is None:
        # The decoded maps live in this thread's reused buffers: nothing below keeps a view of them.
        gt_ids = read_panoptic_png(task["gt_png"], reuse="gt")
        pred_ids = read_panoptic_png(task["pred_png"], reuse="pred")
        if gt_ids.shape != pred_ids.shape:  # the message pq_image_stats gives
            pq_image_stats(gt_ids, gt_segments, pred_ids, pred_segments, classes.category_index, image_id=image_id)
        counted = {"joint": joint_histogram(gt_ids, gt_segments, pred_ids, pred_segments, image_id),
                   "labels": None, "gt_map": gt_ids, "pred_map": pred_ids}
    pq = pq_from_joint(counted["joint"], gt_segments, pred_segments, classes.category_index, image_id=image_id)
    return {"pq": pq, "confusion": _semantic_part(task, counted),
            "instances": _instance_part(task, counted["gt_map"], counted["pred_map"])}


@dataclass
class EvalShare:
    """The statistics of some of a split's images, from which :func:`combine_shares` finishes the
    scores; under torchrun each rank scores its own images into one of these.

    Integer sums (``tp``, ``fp``, ``fn`` ``[K]``, ``confusion`` ``[C + 1, C + 1]``) add up in any
    order.  What is summed in floating point (each image's per-category IoU sums) or listed (each
    image's instances) is kept per image with the image's position in the ground truth, so that
    shares combine in exactly the order one process adds them: the numbers are equal bit for bit.
    """

    classes: _Classes
    ap_mode: Optional[str]
    num_images: int
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    confusion: np.ndarray
    iou: List[tuple] = field(default_factory=list)  # (position, category indices, IoU sums)
    instances: List[tuple] = field(default_factory=list)  # (position, instance results)

    @classmethod
    def empty(cls, classes: _Classes, ap_mode: Optional[str]) -> "EvalShare":
        size, k = len(classes.class_ids) + 1, len(classes.categories)
        return cls(classes, ap_mode, 0, np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k, np.int64),
                   np.zeros((size, size), np.int64))

    def add(self, position: int, result: Dict) -> None:
        pq = result["pq"]
        self.num_images += 1
        self.tp += pq.tp
        self.fp += pq.fp
        self.fn += pq.fn
        self.confusion += result["confusion"]
        touched = np.flatnonzero(pq.iou)
        self.iou.append((position, touched, pq.iou[touched]))
        if result["instances"] is not None:
            self.instances.append((position, result["instances"]))


def _run(tasks: List[Dict], share: EvalShare, workers: int, progress: bool) -> EvalShare:
    """Score every task into ``share`` (images in worker threads, added in the tasks' order)."""
    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=workers) as executor, tqdm(
        total=len(tasks), desc="eval", unit="img", disable=not progress
    ) as bar:
        for task, result in zip(tasks, executor.map(_evaluate_image, tasks)):
            share.add(task["position"], result)
            bar.update(1)
    return share


def combine_shares(shares: Sequence[EvalShare]) -> Dict:
    """The results of :func:`evaluate_predictions` from the shares of disjoint image sets (one per
    rank, in any order): sums in the ground truth's image order, then PQ/SQ/RQ, mIoU and AP."""
    first = shares[0]
    classes, ap_mode = first.classes, first.ap_mode
    stats = PQStats(sum(s.tp for s in shares), sum(s.fp for s in shares), sum(s.fn for s in shares),
                    np.zeros(len(classes.categories), np.float64))
    for _, touched, sums in sorted((item for s in shares for item in s.iou), key=lambda item: item[0]):
        stats.iou[touched] += sums
    results = pq_summary(stats, classes.categories)
    semantic = iou_summary(sum(s.confusion for s in shares), classes.class_names)
    results["mIoU"], results["per_class_iou"] = semantic["mIoU"], semantic["per_class_iou"]
    instances = [item for _, item in sorted((i for s in shares for i in s.instances), key=lambda i: i[0])]
    if ap_mode == "coco":
        results.update(mask_ap(instances, classes.thing_categories))
    elif ap_mode == "cityscapes":
        results.update(instance_ap(instances, classes.thing_categories, label_divisor=classes.label_divisor))
    results["num_images"] = sum(s.num_images for s in shares)
    return results


def score_images(
    data_root: str | os.PathLike,
    split: str,
    predictions_dir: str | os.PathLike,
    *,
    spec=None,
    compute_ap: bool = True,
    progress: bool = True,
    image_ids: Optional[Iterable[str]] = None,
    num_workers: Optional[int] = None,
    shard: Optional[Tuple[int, int]] = None,
) -> EvalShare:
    """The statistics of :func:`evaluate_predictions` (same arguments) before they become scores;
    ``image_ids`` may be empty (a share with no images).  ``shard=(rank, world_size)``: score only
    every ``world_size``-th of the selected images, from the ``rank``-th on (in ground-truth order).
    :func:`combine_shares` finishes them."""
    ground_truth = load_ground_truth(data_root, split)
    classes = _classes(ground_truth["json"], spec)
    if image_ids is not None:
        image_ids = list(image_ids)
        if not image_ids:
            return EvalShare.empty(classes, _ap_mode(ground_truth, [], compute_ap, classes, split))
    predictions = load_predictions(predictions_dir)
    pairs = pair_images(ground_truth["json"], predictions, split, image_ids=image_ids)
    if not pairs:
        raise DataError(f"{ground_truth['json_path']}: no images to evaluate")
    ap_mode = _ap_mode(ground_truth, pairs, compute_ap, classes, split)
    if shard is not None:
        pairs = pairs[shard[0]::shard[1]]
    tasks = _tasks(ground_truth, predictions, pairs, classes, ap_mode)
    return _run(tasks, EvalShare.empty(classes, ap_mode), num_workers or usable_cores(), progress)


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
    return combine_shares([score_images(data_root, split, predictions_dir, spec=spec, compute_ap=compute_ap,
                                        progress=progress, image_ids=image_ids, num_workers=num_workers)])
