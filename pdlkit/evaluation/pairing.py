"""Which prediction belongs to which ground-truth image.

A dataset's json names each image by its ``id`` (an integer in COCO, a string in Cityscapes and
Mapillary Vistas) and its ``file_name``; ``pdl predict`` names its outputs after the image file
(its path below the input folder, without extension).  A prediction belongs to a ground-truth
image when, in this order:

1. its ``image_id`` equals the image's ``id``, type included (42 is not "42");
2. its ``file_name`` without ``.png`` equals the image's ``file_name`` without extension;
3. its ``image_id`` equals that name, or the bare file stem (without ``_leftImg8bit``).

A prediction claimed by two images is an error, as is an image without a prediction.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

from pdlkit.errors import DataError

__all__ = ["pair_images", "image_names", "dataset_image_ids"]


def _without_suffix(name: str) -> str:
    path = Path(name)
    return path.with_suffix("").as_posix() if path.suffix else path.as_posix()


def image_names(image: Optional[dict]) -> List[str]:
    """The names ``pdl predict`` could have given an image entry's file: relative path and stem."""
    if not image or not isinstance(image.get("file_name"), str):
        return []
    relative = _without_suffix(image["file_name"])
    stem = Path(relative).name
    names = [relative, stem]
    if stem.endswith("_leftImg8bit"):
        names.append(stem[: -len("_leftImg8bit")])
    return list(dict.fromkeys(names))


def _find(gt_id: Any, names: List[str], by_id: Dict, by_file: Dict) -> Optional[Any]:
    """The prediction key (its image_id) of one ground-truth image, or None."""
    if gt_id in by_id:
        return gt_id
    for name in names:
        if name in by_file:
            return by_file[name]
    for name in names:
        if name in by_id:
            return name
    return None


def _missing_error(predictions: Dict, split: str, missing: List[str]) -> DataError:
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return DataError(f"{predictions['json_path']}: {len(missing)} image(s) of split {split!r} have no "
                     f"prediction: {shown}")


def pair_images(
    gt_json: dict, predictions: Dict, split: str, *, image_ids: Optional[Iterable[str]] = None
) -> List[Tuple[str, dict, dict]]:
    """``[(name, ground-truth annotation, predicted annotation)]`` in the ground truth's order.

    ``name`` is ``str(id)`` of the ground-truth image (used in messages and results).
    ``image_ids``: keep only the images whose ``str(id)`` or file name (without extension) is listed.
    Raises :class:`DataError` for unknown ``image_ids``, images without a prediction and a
    prediction that two images would share.
    """
    images = {im.get("id"): im for im in gt_json.get("images", []) if isinstance(im, dict)}
    by_id = predictions["annotations"]
    by_file = {_without_suffix(ann["file_name"]): key for key, ann in by_id.items()}
    selected = _select(gt_json["annotations"], images, image_ids, split)
    pairs, missing, owner = [], [], {}
    for gt_ann in selected:
        gt_id = gt_ann["image_id"]
        key = _find(gt_id, image_names(images.get(gt_id)), by_id, by_file)
        if key is None:
            missing.append(str(gt_id))
            continue
        if key in owner:
            raise DataError(f"{predictions['json_path']}: the prediction {key!r} matches two images of split "
                            f"{split!r} ({owner[key]} and {gt_id}); give each image its own image_id")
        owner[key] = gt_id
        pairs.append((str(gt_id), gt_ann, by_id[key]))
    if missing:
        raise _missing_error(predictions, split, missing)
    return pairs


def _select(annotations: list, images: dict, image_ids: Optional[Iterable[str]], split: str) -> list:
    if image_ids is None:
        return list(annotations)
    wanted = set(str(i) for i in image_ids)
    chosen, known = [], set()
    for ann in annotations:
        names = {str(ann["image_id"]), *image_names(images.get(ann["image_id"]))}
        if names & wanted:
            chosen.append(ann)
            known |= names & wanted
    unknown = sorted(wanted - known)
    if unknown:
        raise DataError(f"images {unknown[:5]} are not in the ground truth of split {split!r}")
    return chosen


def dataset_image_ids(gt_json: dict, predictions: Dict, split: str) -> Dict[Any, Any]:
    """Prediction image_id -> the id the dataset's json gives that image (int or str, as written).

    Every prediction must belong to an image of the json (same rules as :func:`pair_images`, which
    also requires the reverse).
    """
    images = {im.get("id"): im for im in gt_json.get("images", []) if isinstance(im, dict)}
    by_id = predictions["annotations"]
    by_file = {_without_suffix(ann["file_name"]): key for key, ann in by_id.items()}
    found: Dict[Any, Any] = {}
    for gt_ann in gt_json["annotations"]:
        gt_id = gt_ann["image_id"]
        key = _find(gt_id, image_names(images.get(gt_id)), by_id, by_file)
        if key is not None:
            if key in found:
                raise DataError(f"{predictions['json_path']}: the prediction {key!r} matches two images of "
                                f"split {split!r} ({found[key]!r} and {gt_id!r})")
            found[key] = gt_id
    unknown = [str(k) for k in by_id if k not in found]
    if unknown:
        raise DataError(f"{predictions['json_path']}: image(s) {', '.join(unknown[:3])} are not in split {split!r} "
                        f"of the dataset, so they have no dataset image id")
    return found
