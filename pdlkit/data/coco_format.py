"""COCO-panoptic datasets with any file names: the manifest ``pdl prepare`` writes, and its checks.

A COCO-panoptic split is three things: a folder of images, a JSON file (``images``,
``annotations``, ``categories``) and a folder of RGB-id PNGs.  ``prepare_panoptic`` checks one
split and records where its files are in ``ROOT/pdlkit_dataset.json`` (the *manifest*)::

    {"format": "coco_panoptic", "spec": DatasetSpec.to_dict(),
     "splits": {"train": {"images": "...", "json": "...", "masks": "...", "num_images": N}, ...}}

Paths inside ROOT are stored relative to it (the folder can move), others absolute.  The category
list of the JSON becomes the dataset spec (train id ``t`` = ``t``-th category by ascending id);
every split of one root must list the same categories.  A config then needs one block::

    data: {dataset: coco, root: ROOT, train_split: train, val_split: val}

Every ``file_name`` of the JSON must stay inside its folder (no absolute paths, no ``..``, no
link leading out), checked here and again whenever the split is read.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, Optional

from ..errors import DataError
from ..fileio import resolve_inside
from ..io import read_json, write_json
from .spec import DatasetSpec, coco_spec_from_categories

__all__ = [
    "MANIFEST_NAME",
    "prepare_panoptic",
    "prepare_splits",
    "manifest_spec",
    "read_manifest",
    "split_files",
    "read_split_json",
    "layout_hint",
    "is_coco_format",
]

MANIFEST_NAME = "pdlkit_dataset.json"
_MAX_LISTED = 3
_MAX_CATEGORY_ID = (1 << 24) // 1000  # exclusive: 16776 x 1000 + 999 still fits in 24 bits
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _listing(items: list) -> str:
    shown = ", ".join(str(i) for i in items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def is_coco_format(root) -> bool:
    """Whether ``root`` holds a manifest written by ``pdl prepare coco/vistas/panoptic``."""
    return (Path(root) / MANIFEST_NAME).is_file()


def layout_hint(root) -> str:
    """The ``pdl prepare`` command that fits what ``root`` holds, as advice for an error message."""
    root = Path(root)
    if (root / "leftImg8bit").is_dir():
        return f"run `pdl prepare cityscapes {root}`"
    if any((root / "annotations").glob("panoptic_*.json")):
        return f"run `pdl prepare coco {root}`"
    if (root / "training" / "v2.0" / "panoptic").is_dir() or (root / "training" / "panoptic").is_dir():
        return f"run `pdl prepare vistas {root}`"
    return (f"run `pdl prepare cityscapes {root}` for the Cityscapes layout (leftImg8bit/, gtFine/), or "
            f"`pdl prepare panoptic {root} --split NAME --images DIR --json FILE --masks DIR` once per split "
            f"for COCO-panoptic data (see docs/custom_data.md)")


# ----------------------------------------------------------------------------- reading
def read_json_object(path: Path) -> dict:
    """A JSON file whose top level is an object; DataError naming the file otherwise."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: the top level must be an object")
    return data


def read_manifest(root) -> dict:
    """The manifest of a prepared COCO-format root; DataError with the fitting prepare command."""
    root = Path(root)
    path = root / MANIFEST_NAME
    if not path.is_file():
        if not root.is_dir():
            raise DataError(f"{root}: dataset folder not found")
        raise DataError(f"{root}: not a prepared COCO-panoptic dataset (no {MANIFEST_NAME}); {layout_hint(root)}")
    data = read_json_object(path)
    if data.get("format") != "coco_panoptic" or not isinstance(data.get("splits"), dict) or "spec" not in data:
        raise DataError(f"{path}: not a pdlkit dataset manifest; {layout_hint(root)}")
    return data


def _stored_path(root: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else root / path


def split_files(root, split: str) -> Dict[str, Path]:
    """``{"images": DIR, "json": FILE, "masks": DIR}`` of ``split`` of a prepared root."""
    root = Path(root)
    manifest = read_manifest(root)
    entry = manifest["splits"].get(split)
    if not isinstance(entry, dict):
        known = ", ".join(sorted(manifest["splits"])) or "none"
        raise DataError(f"{root}: no split {split!r} (prepared splits: {known}); add it with "
                        f"`pdl prepare panoptic {root} --split {split} --images DIR --json FILE --masks DIR`")
    return {key: _stored_path(root, str(entry[key])) for key in ("images", "json", "masks")}


def _check_categories(path: Path, categories: Any) -> list:
    if not isinstance(categories, list) or not categories:
        raise DataError(f"{path}: has no 'categories' list; is it a COCO panoptic file?")
    for cat in categories:
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or "name" not in cat:
            raise DataError(f"{path}: every category needs an integer 'id' and a 'name'")
    ids = [c["id"] for c in categories]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: category ids are not unique")
    # Predictions store category id x 1000 + instance number in 24-bit PNG colours.
    too_large = [i for i in ids if not 0 <= i < _MAX_CATEGORY_ID]
    if too_large:
        raise DataError(f"{path}: category ids must lie in 0..{_MAX_CATEGORY_ID - 1} (predicted segment ids "
                        f"are category id x 1000 + instance in a 24-bit PNG); renumber {_listing(too_large)}")
    return categories


def _check_images(path: Path, images: Any) -> Dict[Any, dict]:
    """{image id: image entry}; ids unique, each with a ``file_name``."""
    by_id: Dict[Any, dict] = {}
    for image in images:
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise DataError(f"{path}: every entry of 'images' needs an 'id' and a 'file_name'")
        if image["id"] in by_id:
            raise DataError(f"{path}: image id {image['id']!r} appears twice in 'images'")
        by_id[image["id"]] = image
    return by_id


def _check_annotations(path: Path, annotations: list, images: Dict[Any, dict]) -> None:
    seen = set()
    for ann in annotations:
        if not isinstance(ann, dict) or not isinstance(ann.get("file_name"), str) or "image_id" not in ann:
            raise DataError(f"{path}: every annotation needs an 'image_id' and a 'file_name'")
        if not isinstance(ann.get("segments_info"), list):
            raise DataError(f"{path}: the annotation of image {ann['image_id']!r} has no 'segments_info' list")
        if ann["image_id"] not in images:
            raise DataError(f"{path}: the annotation of image id {ann['image_id']!r} has no 'images' entry")
        if ann["image_id"] in seen:
            raise DataError(f"{path}: image id {ann['image_id']!r} has two annotations")
        seen.add(ann["image_id"])


def read_split_json(path) -> dict:
    """A COCO-panoptic JSON, checked: ``images`` / ``annotations`` / ``categories`` lists, unique
    image and category ids, one annotation per image, each naming a listed image."""
    path = Path(path)
    data = read_json_object(path)
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: has no '{key}' list; is it a COCO panoptic file?")
    _check_categories(path, data.get("categories"))
    _check_annotations(path, data["annotations"], _check_images(path, data["images"]))
    return data


def _check_files(data: dict, json_path: Path, images: Path, masks: Path) -> None:
    """Every annotation's PNG and every annotated image exists inside its folder."""
    by_id = {im["id"]: im for im in data["images"]}
    lacking_png, lacking_image = [], []
    for ann in data["annotations"]:
        png = resolve_inside(masks, ann["file_name"], what=f"{json_path}: file_name")
        if not png.is_file():
            lacking_png.append(ann["file_name"])
        name = by_id[ann["image_id"]]["file_name"]
        if not resolve_inside(images, name, what=f"{json_path}: image file_name").is_file():
            lacking_image.append(name)
    if lacking_png:
        raise DataError(f"{masks}: missing panoptic pngs {_listing(lacking_png)} named in {json_path}")
    if lacking_image:
        raise DataError(f"{images}: missing images {_listing(lacking_image)} named in {json_path}")


# ----------------------------------------------------------------------------- writing
def _same_categories(spec: DatasetSpec, other: DatasetSpec) -> bool:
    return (spec.category_ids, spec.class_names, spec.is_thing) == (
        other.category_ids, other.class_names, other.is_thing)


def _to_stored(root: Path, path: Path) -> str:
    """Relative to ``root`` when inside it (so the dataset folder can move), else absolute."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return str(absolute)


def _existing_manifest(root: Path) -> Optional[dict]:
    return read_manifest(root) if (root / MANIFEST_NAME).is_file() else None


def check_split(root, split: str, *, images, json_file, masks, name: Optional[str] = None) -> tuple:
    """Check one COCO-panoptic split; returns ``(spec, manifest entry)``.  See :func:`prepare_panoptic`."""
    root = Path(root)
    if not _SPLIT_NAME.match(str(split)):
        raise DataError(f"split name {split!r}: use letters, digits, '_', '-' or '.'")
    images, json_file, masks = Path(images), Path(json_file), Path(masks)
    for folder, what in ((images, "images"), (masks, "masks")):
        if not folder.is_dir():
            raise DataError(f"{folder}: the {what} folder of split {split!r} does not exist")
    data = read_split_json(json_file)
    _check_files(data, json_file, images, masks)
    spec = coco_spec_from_categories(data["categories"], name=name or Path(os.path.abspath(root)).name)
    entry = {"images": _to_stored(root, images), "json": _to_stored(root, json_file),
             "masks": _to_stored(root, masks), "num_images": len(data["annotations"])}
    return spec, entry


def write_manifest(root, spec: DatasetSpec, splits: Dict[str, dict], *, sources: Dict[str, Path]) -> dict:
    """Merge ``splits`` into ``root``'s manifest (all must share ``spec``'s categories) and write it.

    ``sources``: split -> its JSON, to name the file whose categories differ.
    """
    root = Path(root)
    manifest = _existing_manifest(root) if root.is_dir() else None
    if manifest is None or set(manifest["splits"]) <= set(splits):
        manifest = {"format": "coco_panoptic", "spec": spec.to_dict(), "splits": {}}
    else:
        kept = sorted(set(manifest["splits"]) - set(splits))
        if not _same_categories(DatasetSpec.from_dict(manifest["spec"]), spec):
            split = next(iter(splits))
            raise DataError(f"{sources[split]}: its categories differ from those of split {kept[0]!r} "
                            f"already prepared in {root}; every split must list the same categories")
    manifest["splits"].update(splits)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / MANIFEST_NAME, manifest, indent=2)
    return manifest


def prepare_panoptic(root, split: str, *, images, json_file, masks, name: Optional[str] = None) -> dict:
    """Check one COCO-panoptic split and record it in ``root``'s manifest; returns the manifest.

    ``images``: folder the JSON's image ``file_name`` s are relative to; ``json_file``: the
    COCO-panoptic JSON; ``masks``: folder of its PNGs.  ``name``: the spec's name (default: the
    root folder's name).  A split already in the manifest is replaced.  Raises DataError naming
    the file and the problem (missing files, malformed JSON, categories that differ from the
    other splits', a ``file_name`` leading outside its folder).
    """
    spec, entry = check_split(root, split, images=images, json_file=json_file, masks=masks, name=name)
    return write_manifest(root, spec, {split: entry}, sources={split: Path(json_file)})


def prepare_splits(root, name: str, splits: Dict[str, tuple]) -> dict:
    """Check every ``split: (images, json, masks)``, then write the manifest once (a failure leaves
    the previous manifest, or none, in place).  Every split must list the same categories."""
    checked, spec, first = {}, None, None
    for split, (images, json_file, masks) in splits.items():
        split_spec, checked[split] = check_split(root, split, images=images, json_file=json_file,
                                                 masks=masks, name=name)
        if spec is None:
            spec, first = split_spec, split
        elif not _same_categories(spec, split_spec):
            raise DataError(f"{json_file}: its categories differ from those of split {first!r} "
                            f"({splits[first][1]}); every split must list the same categories")
    return write_manifest(root, spec, checked, sources={s: Path(v[1]) for s, v in splits.items()})


def manifest_spec(root) -> DatasetSpec:
    """The dataset spec a prepared COCO-format root's manifest holds."""
    return DatasetSpec.from_dict(read_manifest(root)["spec"])
