"""``pdl prepare``: make a Cityscapes / COCO panoptic / toy folder ready for training and evaluation.

Cityscapes: validate the layout, then create ``*_gtFine_labelTrainIds.png`` from the polygons (as
cityscapesscripts' ``createTrainIdLabelImgs`` does) and ``gtFine/cityscapes_panoptic_{split}.json`` +
``gtFine/cityscapes_panoptic_{split}/`` with cityscapesscripts' ``createPanopticImgs``.  What exists
is skipped; every output appears under its final name only when complete (temp name + rename, and the
panoptic conversion runs in a temporary folder that is moved into place, json last).
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import write_png
from .coco_format import prepare_splits

__all__ = ["prepare_cityscapes", "prepare_coco", "prepare_vistas", "prepare_toy", "CityscapesPrepareSummary"]

CITYSCAPES_SPLITS = ("train", "val", "test")
COCO_SPLITS = ("train", "val")
_MAX_LISTED = 5  # missing items named in an error before "and N more"


class CityscapesPrepareSummary(dict):
    """Counts of what ``prepare_cityscapes`` did: ``train_ids_written``, ``train_ids_skipped``,
    ``panoptic_written`` (splits), ``panoptic_skipped`` (splits), ``splits``."""


def _list_missing(root: Path, missing: list) -> str:
    shown = [str(m) for m in missing[:_MAX_LISTED]]
    more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
    return f"{root} is not a complete Cityscapes layout; missing: {', '.join(shown)}{more}"


def _cityscapes_layout(root: Path) -> dict:
    """{split: [(city, stem)]} of the annotated images; DataError listing everything missing."""
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    missing = []
    for top in ("leftImg8bit", "gtFine"):
        if not (root / top).is_dir():
            missing.append(f"{top}/")
    if missing:
        raise DataError(_list_missing(root, missing))
    splits = [s for s in CITYSCAPES_SPLITS if (root / "leftImg8bit" / s).is_dir()]
    if not any(s in splits for s in ("train", "val")):
        raise DataError(_list_missing(root, ["leftImg8bit/train/", "leftImg8bit/val/"]))
    layout = {}
    for split in splits:
        if not (root / "gtFine" / split).is_dir():
            missing.append(f"gtFine/{split}/")
            continue
        items = []
        for image in sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png")):
            city = image.parent.name
            stem = image.name[: -len("_leftImg8bit.png")]
            gt = root / "gtFine" / split / city
            for suffix in ("_gtFine_polygons.json", "_gtFine_instanceIds.png"):
                if not (gt / f"{stem}{suffix}").is_file():
                    missing.append(f"gtFine/{split}/{city}/{stem}{suffix}")
            items.append((city, stem))
        if not items:
            missing.append(f"leftImg8bit/{split}/<city>/*_leftImg8bit.png")
        layout[split] = items
    if missing:
        raise DataError(_list_missing(root, missing))
    return layout


def _write_train_ids(polygons_json: Path, out_png: Path) -> None:
    """``*_labelTrainIds.png`` from the polygons, exactly as cityscapesscripts' json2labelImg draws it."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2labelImg import createLabelImage

    annotation = Annotation()
    try:
        annotation.fromJsonFile(str(polygons_json))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{polygons_json}: not a readable Cityscapes polygons file ({exc})") from None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            image = createLabelImage(annotation, "trainIds")
    except SystemExit:  # cityscapesscripts exits on an unknown label name
        raise DataError(f"{polygons_json}: contains a label that cityscapesscripts does not know") from None
    write_png(out_png, np.asarray(image, dtype=np.uint8))


class _ProgressSink(io.TextIOBase):
    """Stands in for stdout during convert2panoptic: turns its "Progress:" prints into a tqdm bar."""

    def __init__(self, bar):
        self.bar = bar

    def write(self, text: str) -> int:
        count = text.count("Progress:")
        if count:
            self.bar.update(count)
        return len(text)


def _convert_panoptic_split(root: Path, split: str, count: int, progress: bool) -> None:
    """Run createPanopticImgs.convert2panoptic for one split into a temp folder, then move into place."""
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic
    from tqdm import tqdm

    gt = root / "gtFine"
    final_json = gt / f"cityscapes_panoptic_{split}.json"
    final_dir = gt / f"cityscapes_panoptic_{split}"
    work = Path(tempfile.mkdtemp(prefix=f".pdl_panoptic_{split}_", dir=gt))
    old_env = os.environ.get("CITYSCAPES_DATASET")
    os.environ["CITYSCAPES_DATASET"] = str(root)  # only for this call; paths are passed explicitly too
    try:
        with tqdm(total=count, desc=f"panoptic {split}", unit="img", disable=not progress,
                  file=sys.stderr) as bar, contextlib.redirect_stdout(_ProgressSink(bar)):
            try:
                convert2panoptic(cityscapesPath=str(gt), outputFolder=str(work), useTrainId=False,
                                 setNames=[split])
            except SystemExit:
                raise DataError(f"{gt / split}: cityscapesscripts found no *_instanceIds.png") from None
        produced_json = work / f"cityscapes_panoptic_{split}.json"
        produced_dir = work / f"cityscapes_panoptic_{split}"
        if not produced_json.is_file() or not produced_dir.is_dir():  # pragma: no cover - upstream contract
            raise RuntimeError(f"createPanopticImgs wrote no output for {split}")
        # The json is the completion mark: the png folder moves first, the json last.
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(produced_dir, final_dir)
        os.replace(produced_json, final_json)
    finally:
        if old_env is None:
            os.environ.pop("CITYSCAPES_DATASET", None)
        else:
            os.environ["CITYSCAPES_DATASET"] = old_env
        shutil.rmtree(work, ignore_errors=True)


def prepare_cityscapes(root, *, progress: bool = True) -> CityscapesPrepareSummary:
    """Validate ``root`` as Cityscapes and create what training and evaluation read.

    Creates ``gtFine/{split}/{city}/*_gtFine_labelTrainIds.png`` and, per split,
    ``gtFine/cityscapes_panoptic_{split}.json`` + ``gtFine/cityscapes_panoptic_{split}/*.png``
    (category ids = Cityscapes label ids).  Existing outputs are kept.  Raises DataError naming what is
    missing when the layout is incomplete.
    """
    from tqdm import tqdm

    root = Path(root)
    layout = _cityscapes_layout(root)
    summary = CityscapesPrepareSummary(train_ids_written=0, train_ids_skipped=0, panoptic_written=[],
                                       panoptic_skipped=[], splits=sorted(layout))
    jobs = []
    for split, items in layout.items():
        for city, stem in items:
            gt = root / "gtFine" / split / city
            target = gt / f"{stem}_gtFine_labelTrainIds.png"
            if target.is_file():
                summary["train_ids_skipped"] += 1
            else:
                jobs.append((gt / f"{stem}_gtFine_polygons.json", target))
    for polygons_json, target in tqdm(jobs, desc="labelTrainIds", unit="img", disable=not progress or not jobs):
        _write_train_ids(polygons_json, target)
        summary["train_ids_written"] += 1

    for split, items in layout.items():
        done = (root / "gtFine" / f"cityscapes_panoptic_{split}.json").is_file() and \
            (root / "gtFine" / f"cityscapes_panoptic_{split}").is_dir()
        if done:
            summary["panoptic_skipped"].append(split)
            continue
        _convert_panoptic_split(root, split, len(items), progress)
        summary["panoptic_written"].append(split)
    return summary


def prepare_toy(out, *, train: int = 40, val: int = 10, height: int = 128, width: int = 256, seed: int = 0,
                progress: bool = True) -> Path:
    """Generate the toy dataset (:func:`pdlkit.data.toy.generate_toy`) and prepare it like Cityscapes."""
    from .toy import generate_toy

    out = generate_toy(out, train=train, val=val, height=height, width=width, seed=seed, progress=progress)
    prepare_cityscapes(out, progress=progress)
    return out


# ----------------------------------------------------------------------------- COCO panoptic
def coco_panoptic_png_dir(root: Path, split: str) -> Path | None:
    """The folder of ``panoptic_{split}2017`` pngs: under ``annotations/`` (as the zip unpacks) or the root."""
    for candidate in (root / "annotations" / f"panoptic_{split}2017", root / f"panoptic_{split}2017"):
        if candidate.is_dir():
            return candidate
    return None


def prepare_coco(root) -> dict:
    """Check a COCO panoptic 2017 folder and write its manifest (splits ``train`` and ``val``).

    Expects ``annotations/panoptic_{train,val}2017.json``, their png folders
    (``annotations/panoptic_{split}2017/`` or ``panoptic_{split}2017/``) and the images
    (``{split}2017/``).  Train id ``t`` is the ``t``-th category by ascending id.  Returns the
    manifest (see :mod:`pdlkit.data.coco_format`); other names go through :func:`prepare_panoptic`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    missing = []
    for split in COCO_SPLITS:
        if not (root / "annotations" / f"panoptic_{split}2017.json").is_file():
            missing.append(f"annotations/panoptic_{split}2017.json")
        if coco_panoptic_png_dir(root, split) is None:
            missing.append(f"annotations/panoptic_{split}2017/")
        if not (root / f"{split}2017").is_dir():
            missing.append(f"{split}2017/")
    if missing:
        raise DataError(f"{root} is not a complete COCO panoptic layout; missing: {', '.join(missing)} "
                        f"(other names: `pdl prepare panoptic`, see docs/custom_data.md)")
    return prepare_splits(root, "coco", {
        split: (root / f"{split}2017", root / "annotations" / f"panoptic_{split}2017.json",
                coco_panoptic_png_dir(root, split)) for split in COCO_SPLITS})


def vistas_layout(root: Path) -> dict:
    """``{split: (images, json, masks)}`` of a Mapillary Vistas folder (v2.0, else v1.2).

    Vistas unpacks as ``{training,validation}/images/*.jpg`` beside
    ``{training,validation}/v2.0/panoptic/panoptic_2020.json`` and its PNGs in the same folder
    (v1.2: ``.../panoptic/panoptic_2018.json``); ``training`` becomes split ``train``,
    ``validation`` split ``val``.
    """
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    splits, missing = {}, []
    for folder, split in (("training", "train"), ("validation", "val")):
        candidates = [(root / folder / "v2.0" / "panoptic", "panoptic_2020.json"),
                      (root / folder / "panoptic", "panoptic_2018.json")]
        found = [(d, d / n) for d, n in candidates if (d / n).is_file()]
        if not found:
            missing.append(f"{folder}/v2.0/panoptic/panoptic_2020.json")
            continue
        if not (root / folder / "images").is_dir():
            missing.append(f"{folder}/images/")
            continue
        masks, json_file = found[0]
        splits[split] = (root / folder / "images", json_file, masks)
    if missing:
        raise DataError(f"{root} is not a Mapillary Vistas layout; missing: {', '.join(missing)} "
                        f"(other names: `pdl prepare panoptic`, see docs/custom_data.md)")
    return splits


def prepare_vistas(root) -> dict:
    """Check a Mapillary Vistas (v2.0 or v1.2 panoptic) folder and write its manifest."""
    root = Path(root)
    return prepare_splits(root, "vistas", vistas_layout(root))
