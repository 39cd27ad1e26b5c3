"""Records: one annotated image of a prepared dataset (image path, panoptic png, segments)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import resolve_inside
from ..io import read_json
from .coco_format import is_coco_format, layout_hint, manifest_spec, read_split_json, split_files
from .spec import CITYSCAPES_LAYOUT_NAMES, UNKNOWN_DATASET, DatasetSpec, cityscapes_spec

__all__ = ["Record", "load_records", "segments_from_info"]


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous: records compare by identity
class Record:
    """One image: ``segments`` is [S, 4] int64 rows (id, train_id, is_thing, iscrowd) for
    ``pdlkit.ops.encode_targets``; ids are those of the panoptic png (R + 256 G + 256^2 B).  Segments
    whose category has no train id are left out, so their pixels count as unlabelled."""

    image_id: str
    image_path: Path
    panoptic_path: Path
    segments: np.ndarray
    height: int
    width: int


def segments_from_info(segments_info, spec: DatasetSpec, *, source: str = "") -> np.ndarray:
    """COCO-style ``segments_info`` -> [S, 4] int64 (id, train_id, is_thing, iscrowd).

    Categories outside the spec are dropped (their pixels become unlabelled).
    """
    to_train = spec.category_to_train_id
    rows = []
    for seg in segments_info:
        try:
            segment_id, category = int(seg["id"]), int(seg["category_id"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{source}: a segment lacks an integer 'id' or 'category_id'") from None
        train_id = to_train.get(category)
        if train_id is None:
            continue
        rows.append((segment_id, train_id, int(spec.is_thing[train_id]), int(bool(seg.get("iscrowd", 0)))))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def _read_json(path: Path) -> dict:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: not a COCO panoptic json (no 'annotations' list)")
    return data


def _cityscapes_records(root: Path, split: str, spec: DatasetSpec) -> list:
    gt = root / "gtFine"
    json_path = gt / f"cityscapes_panoptic_{split}.json"
    png_dir = gt / f"cityscapes_panoptic_{split}"
    if not json_path.is_file():
        if is_coco_format(root):
            raise DataError(f"{root} holds a COCO-panoptic dataset: set data.dataset to coco")
        raise DataError(f"{json_path} not found: {layout_hint(root)}")
    data = _read_json(json_path)
    # image_id is "{city}_{seq}_{frame}"; find images by name rather than by parsing the city
    images = {p.name[: -len("_leftImg8bit.png")]: p
              for p in (root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png")}
    sizes = {im["id"]: (int(im["height"]), int(im["width"])) for im in data.get("images", [])}
    records = []
    for ann in data["annotations"]:
        image_id = str(ann["image_id"])
        if image_id not in images:
            raise DataError(f"{json_path}: image {image_id} has no leftImg8bit/{split}/*/{image_id}_leftImg8bit.png")
        height, width = sizes.get(image_id, (0, 0))
        png_path = resolve_inside(png_dir, ann["file_name"], what=f"{json_path}: file_name")
        records.append(Record(image_id, images[image_id], png_path,
                              segments_from_info(ann["segments_info"], spec, source=str(json_path)),
                              height, width))
    return records


def _coco_records(root: Path, split: str, spec: DatasetSpec) -> list:
    """Records of a split prepared by ``pdl prepare coco|vistas|panoptic``.

    ``image_id`` is the image's ``file_name`` without extension (what ``pdl predict`` names its
    outputs when given the images folder); every path must stay inside its folder.
    """
    files = split_files(root, split)
    json_path = files["json"]
    data = read_split_json(json_path)
    images = {im["id"]: im for im in data["images"]}
    records = []
    for ann in data["annotations"]:
        image = images[ann["image_id"]]
        name = image["file_name"]
        image_path = resolve_inside(files["images"], name, what=f"{json_path}: image file_name")
        png_path = resolve_inside(files["masks"], ann["file_name"],
                                  what=f"{json_path}: file_name")
        records.append(Record(Path(name).with_suffix("").as_posix(), image_path, png_path,
                              segments_from_info(ann["segments_info"], spec, source=str(json_path)),
                              int(image.get("height", 0)), int(image.get("width", 0))))
    return records


def load_records(root, split: str, dataset: str = "cityscapes", *, spec: DatasetSpec | None = None) -> list:
    """Records of ``split`` of a prepared dataset, sorted by image id.

    ``dataset``: ``cityscapes`` / ``toy`` (reads ``gtFine/cityscapes_panoptic_{split}.json``; category
    ids are label ids) or ``coco`` (any COCO-panoptic dataset prepared with ``pdl prepare
    coco|vistas|panoptic``).  ``spec`` defaults to the Cityscapes spec, or for COCO the categories
    stored by ``pdl prepare``.
    """
    root = Path(root)
    dataset = str(dataset).lower()
    if dataset in CITYSCAPES_LAYOUT_NAMES:
        records = _cityscapes_records(root, split, spec or cityscapes_spec())
    elif dataset == "coco":
        if spec is None:
            spec = manifest_spec(root)
        records = _coco_records(root, split, spec)
    else:
        raise DataError(UNKNOWN_DATASET.format(name=dataset))
    return sorted(records, key=lambda r: r.image_id)
