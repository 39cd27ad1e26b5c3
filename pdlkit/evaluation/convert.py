"""Panoptic predictions -> instance predictions (one per thing segment, scored objectness × class score).

Two formats:

- ``"cityscapes"``: for every image ``OUT/<sub-folder>/<image_id>_pred.txt`` with one line per
  instance, ``masks/<image_id>_<k>.png <label id> <score>``, and the masks as uint8 PNGs (0 / 255)
  under ``OUT/<sub-folder>/masks/``; cityscapesscripts' ``evalInstanceLevelSemanticLabeling`` reads
  them (with ``OUT`` as its results folder).  Every image gets a ``_pred.txt``, empty when it has no
  thing segment, because the official tool needs one per ground-truth image.
- ``"coco"``: ``OUT/coco_instances_results.json``, a COCO detection-results list of
  ``{"image_id", "category_id", "segmentation": RLE (counts as str), "bbox": [x, y, w, h],
  "score", "area"}``; ``image_id`` is the dataset's id of the image (an integer for COCO), which
  pycocotools' ``COCO.loadRes`` and panopticapi expect.

Scores are written with Python's shortest exact float text, so a reader gets the very same numbers
that :func:`pdlkit.evaluation.evaluate_predictions` ranks by.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import numpy as np

from pdlkit.errors import DataError, PdlError
from pdlkit.fileio import atomic_write_text, resolve_inside
from pdlkit.io import read_json, write_json, write_png

from ._io import load_ground_truth, load_predictions, read_panoptic_png
from .instance import thing_instances

__all__ = ["convert_predictions", "thing_category_ids_of", "COCO_RESULTS_NAME", "DatasetIdsNeeded"]

COCO_RESULTS_NAME = "coco_instances_results.json"
FORMATS = ("cityscapes", "coco")


class DatasetIdsNeeded(DataError):
    """The predictions' image ids are not integers and no dataset json was given to map them."""


def thing_category_ids_of(spec) -> list:
    """Dataset category ids of a :class:`~pdlkit.data.spec.DatasetSpec`'s thing classes."""
    return [int(spec.category_ids[t]) for t in spec.thing_ids]


def _thing_category_ids(predictions: Dict, spec, gt_json=None) -> list:
    """Thing category ids: from ``spec``, else the dataset json's categories, else the folder's
    ``spec.json`` (written by pdl predict), else ``panoptic.json``'s categories, else Cityscapes'."""
    from pdlkit.data.spec import DatasetSpec, cityscapes_spec

    if spec is not None:
        return thing_category_ids_of(spec)
    if gt_json is not None:
        return [int(c["id"]) for c in gt_json["categories"] if c.get("isthing")]
    spec_path = predictions["dir"] / "spec.json"
    if spec_path.is_file():
        return thing_category_ids_of(DatasetSpec.from_dict(read_json(spec_path)))
    categories = predictions["categories"]
    if isinstance(categories, list) and categories:
        return [int(c["id"]) for c in categories if c.get("isthing")]
    return thing_category_ids_of(cityscapes_spec())


def _masks(pred_ids: np.ndarray, instances, png_path: Path):
    """(instance, boolean mask) per instance; a json segment absent from the PNG is an error."""
    for instance in instances:
        mask = pred_ids == instance.segment_id
        if not mask.any():
            raise DataError(f"{png_path}: segment {instance.segment_id} is in panoptic.json but not in the PNG")
        yield instance, mask


def _check_cityscapes_outputs(output: Path, annotations: Dict) -> None:
    """Refuse, before anything is written, an image whose output files would leave ``output``."""
    for image_id, annotation in annotations.items():
        sub = Path(annotation["file_name"]).parent.as_posix()
        for name in (f"{image_id}_pred.txt", f"masks/{image_id}_0.png"):
            resolve_inside(output, f"{sub}/{name}", what=f"image {image_id!r} of the predictions")


def _write_cityscapes_image(output: Path, image_id, annotation: Dict, pred_ids, instances, png_path: Path) -> None:
    """``<sub-folder>/<image_id>_pred.txt`` and its masks; every path must stay inside ``output``."""
    sub = Path(annotation["file_name"]).parent.as_posix()
    where = f"image {image_id!r} of the predictions"
    lines = []
    for k, (instance, mask) in enumerate(_masks(pred_ids, instances, png_path)):
        relative = f"masks/{image_id}_{k}.png"
        target = resolve_inside(output, f"{sub}/{relative}", what=where)
        write_png(target, mask.astype(np.uint8) * 255)
        lines.append(f"{relative} {instance.category_id} {instance.score!r}\n")
    atomic_write_text(resolve_inside(output, f"{sub}/{image_id}_pred.txt", what=where), "".join(lines))


def _coco_image_results(dataset_id, pred_ids, instances, png_path: Path) -> list:
    """COCO detection results of one image: RLE masks (counts as text), boxes, scores, areas."""
    from pycocotools import mask as mask_util

    results = []
    for instance, mask in _masks(pred_ids, instances, png_path):
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        segmentation = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
        results.append({"image_id": dataset_id, "category_id": instance.category_id, "segmentation": segmentation,
                        "bbox": [float(v) for v in mask_util.toBbox(rle)], "score": instance.score,
                        "area": int(mask.sum())})
    return results


def _own_integer_ids(predictions: Dict) -> Dict:
    """Prediction image_id -> integer id without a dataset: integers as they are, digit strings
    (COCO names files by zero-padded id) as numbers; anything else cannot be guessed."""
    ids = {}
    for key in predictions["annotations"]:
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            ids[key] = int(key)
        else:
            raise DatasetIdsNeeded(f"{predictions['json_path']}: image_id {key!r} is not an integer; give the "
                                   f"dataset (data_root and split) so that its own image ids are written")
    if len(set(ids.values())) != len(ids):
        raise DataError(f"{predictions['json_path']}: two image_ids name the same integer id")
    return ids


def _dataset_ids(predictions: Dict, gt_json: dict, split) -> Dict:
    """Prediction image_id -> the dataset json's id of its image (pairing rules of pdl eval)."""
    from .pairing import dataset_image_ids

    return dataset_image_ids(gt_json, predictions, split)


def convert_predictions(
    predictions_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    format: str = "cityscapes",
    spec=None,
    data_root=None,
    split: str = "val",
    progress: bool = False,
) -> Dict:
    """Write the instance predictions of a panoptic predictions folder (docs/formats.md).

    ``spec`` (a :class:`~pdlkit.data.spec.DatasetSpec`) says which category ids are things; by
    default the dataset's categories (``data_root``), else the folder's ``spec.json`` (written by
    ``pdl predict``), else the ``categories`` of its ``panoptic.json``, else Cityscapes.
    ``format="coco"`` writes the image ids of the dataset's json when ``data_root`` (and ``split``)
    are given, else the predictions' own ids, which must then be integers or digit strings.  Every output path must stay inside ``output_dir``.  Returns
    ``{"images": N, "instances": M, "output": path of the txt folder or json}``; every file is
    written atomically.
    """
    from tqdm import tqdm

    if format not in FORMATS:
        raise PdlError(f"unknown instance format {format!r}; choose one of {', '.join(FORMATS)}")
    predictions = load_predictions(predictions_dir)
    gt_json = load_ground_truth(data_root, split)["json"] if data_root is not None else None
    thing_ids = _thing_category_ids(predictions, spec, gt_json)
    if format == "coco":
        ids = _dataset_ids(predictions, gt_json, split) if gt_json is not None else _own_integer_ids(predictions)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if format == "cityscapes":
        _check_cityscapes_outputs(output, predictions["annotations"])
    coco_results, num_instances = [], 0
    annotations = predictions["annotations"]
    for image_id, annotation in tqdm(annotations.items(), total=len(annotations), desc="convert", unit="img",
                                     disable=not progress):
        png_path = predictions["png"][image_id]
        if not png_path.is_file():
            raise DataError(f"{png_path}: the panoptic PNG of image {image_id} is missing")
        pred_ids = read_panoptic_png(png_path)
        instances = thing_instances(annotation["segments_info"], thing_ids, where=str(png_path))
        num_instances += len(instances)
        if format == "cityscapes":
            _write_cityscapes_image(output, image_id, annotation, pred_ids, instances, png_path)
        else:
            coco_results += _coco_image_results(ids[image_id], pred_ids, instances, png_path)
    result_path = output / COCO_RESULTS_NAME if format == "coco" else output
    if format == "coco":
        write_json(result_path, coco_results, indent=None)
    return {"images": len(annotations), "instances": num_instances, "output": str(result_path)}
