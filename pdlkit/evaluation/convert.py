"""Panoptic predictions -> instance predictions (one per thing segment, scored objectness × class score).

Two formats:

- ``"cityscapes"``: for every image ``OUT/<sub-folder>/<image_id>_pred.txt`` with one line per
  instance, ``masks/<image_id>_<k>.png <label id> <score>``, and the masks as uint8 PNGs (0 / 255)
  under ``OUT/<sub-folder>/masks/``; cityscapesscripts' ``evalInstanceLevelSemanticLabeling`` reads
  them (with ``OUT`` as its results folder).  Every image gets a ``_pred.txt``, empty when it has no
  thing segment, because the official tool needs one per ground-truth image.
- ``"coco"``: ``OUT/coco_instances_results.json``, a COCO detection-results list of
  ``{"image_id", "category_id", "segmentation": RLE (counts as str), "bbox": [x, y, w, h],
  "score", "area"}``; ``image_id`` is the prediction's (string) image id.

Scores are written with Python's shortest exact float text, so a reader gets the very same numbers
that :func:`pdlkit.evaluation.evaluate_predictions` ranks by.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import numpy as np

from pdlkit.errors import DataError, PdlError

from ._io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_json,
    load_predictions,
    read_panoptic_png,
)
from .instance import thing_instances

__all__ = ["convert_predictions", "thing_category_ids_of", "COCO_RESULTS_NAME"]

COCO_RESULTS_NAME = "coco_instances_results.json"
FORMATS = ("cityscapes", "coco")


def thing_category_ids_of(spec) -> list:
    """Dataset category ids of a :class:`~pdlkit.data.spec.DatasetSpec`'s thing classes."""
    return [int(spec.category_ids[t]) for t in spec.thing_ids]


def _thing_category_ids(predictions: Dict, spec) -> list:
    """Thing category ids: from ``spec``, else the folder's ``spec.json`` (written by pdl predict),
    else ``panoptic.json``'s categories, else Cityscapes'."""
    from pdlkit.data.spec import DatasetSpec, cityscapes_spec

    if spec is not None:
        return thing_category_ids_of(spec)
    spec_path = predictions["dir"] / "spec.json"
    if spec_path.is_file():
        return thing_category_ids_of(DatasetSpec.from_dict(load_json(spec_path)))
    categories = predictions["categories"]
    if isinstance(categories, list) and categories:
        return [int(c["id"]) for c in categories if c.get("isthing")]
    return thing_category_ids_of(cityscapes_spec())


def _encode_mask_png(mask: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", mask)
    if not ok:  # pragma: no cover - uint8 gray always encodes
        raise DataError("could not encode an instance mask as PNG")
    return encoded.tobytes()


def convert_predictions(
    predictions_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    format: str = "cityscapes",
    spec=None,
    progress: bool = False,
) -> Dict:
    """Write the instance predictions of a panoptic predictions folder (DESIGN.md §3).

    ``spec`` (a :class:`~pdlkit.data.spec.DatasetSpec`) says which category ids are things; by
    default the folder's ``spec.json`` (written by ``pdl predict``), else the ``categories`` of its
    ``panoptic.json``, else Cityscapes.  Returns ``{"images": N, "instances": M, "output": path of the txt folder or json}``.
    Every file is written atomically.
    """
    if format not in FORMATS:
        raise PdlError(f"unknown instance format {format!r}; choose one of {', '.join(FORMATS)}")
    predictions = load_predictions(predictions_dir)
    thing_ids = _thing_category_ids(predictions, spec)
    panoptic_dir = predictions["dir"] / "panoptic"
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)

    from tqdm import tqdm

    coco_results = []
    num_instances = 0
    annotations = predictions["annotations"]
    for image_id, annotation in tqdm(
        annotations.items(), total=len(annotations), desc="convert", unit="img", disable=not progress
    ):
        png_path = panoptic_dir / annotation["file_name"]
        if not png_path.is_file():
            raise DataError(f"{png_path}: the panoptic PNG of image {image_id} is missing")
        pred_ids = read_panoptic_png(png_path)
        instances = thing_instances(annotation["segments_info"], thing_ids, where=str(png_path))
        num_instances += len(instances)
        if format == "cityscapes":
            sub_dir = output / Path(annotation["file_name"]).parent
            lines = []
            for k, instance in enumerate(instances):
                mask = pred_ids == instance.segment_id
                if not mask.any():
                    raise DataError(
                        f"{png_path}: segment {instance.segment_id} is in panoptic.json but not in the PNG"
                    )
                relative = f"masks/{image_id}_{k}.png"
                atomic_write_bytes(sub_dir / relative, _encode_mask_png(mask.astype(np.uint8) * 255))
                lines.append(f"{relative} {instance.category_id} {instance.score!r}\n")
            atomic_write_text(sub_dir / f"{image_id}_pred.txt", "".join(lines))
        else:
            from pycocotools import mask as mask_util

            for instance in instances:
                mask = pred_ids == instance.segment_id
                if not mask.any():
                    raise DataError(
                        f"{png_path}: segment {instance.segment_id} is in panoptic.json but not in the PNG"
                    )
                rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                coco_results.append(
                    {
                        "image_id": image_id,
                        "category_id": instance.category_id,
                        "segmentation": {
                            "size": [int(v) for v in rle["size"]],
                            "counts": rle["counts"].decode("ascii"),
                        },
                        "bbox": [float(v) for v in mask_util.toBbox(rle)],
                        "score": instance.score,
                        "area": int(mask.sum()),
                    }
                )
    if format == "coco":
        result_path = output / COCO_RESULTS_NAME
        atomic_write_json(result_path, coco_results, indent=None)
    else:
        result_path = output
    return {"images": len(annotations), "instances": num_instances, "output": str(result_path)}
