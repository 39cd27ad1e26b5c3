"""Predict a split with a model, then score it: what ``pdl eval --weights`` and the trainer's
periodic and final evaluations both run."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, Optional

from pdlkit.errors import DataError
from pdlkit.io import read_json

from .evaluate import evaluate_predictions

__all__ = ["predict_and_evaluate", "spec_of_predictions", "dataset_kind"]


def dataset_kind(root) -> str:
    """``"coco"`` for a root prepared by ``pdl prepare coco|vistas|panoptic``, else ``"cityscapes"``."""
    from pdlkit.data.coco_format import is_coco_format

    return "coco" if is_coco_format(root) else "cityscapes"


def spec_of_predictions(directory) -> Optional[object]:
    """The dataset spec that ``pdl predict`` stored beside its predictions (``spec.json``), if any."""
    from pdlkit.data.spec import DatasetSpec

    path = Path(directory) / "spec.json"
    return DatasetSpec.from_dict(read_json(path)) if path.is_file() else None


def _link_subset(image_paths: list, folder: Path) -> Path:
    """Mirror the chosen images (by link, else copy) in ``folder``, keeping their relative layout."""
    source_root = Path(os.path.commonpath([str(p.parent) for p in image_paths]))
    for path in image_paths:
        link = folder / path.relative_to(source_root)
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(path.resolve(), link)
        except OSError:  # file systems without symlinks
            shutil.copyfile(path, link)
    return folder


def predict_and_evaluate(
    predictor,
    data_root,
    split: str,
    *,
    dataset: Optional[str] = None,
    work_dir=None,
    max_images: int = 0,
    compute_ap: bool = True,
    batch_size: int = 1,
    progress: bool = False,
    num_workers: Optional[int] = None,
) -> Dict:
    """Predict the annotated images of ``split`` with ``predictor`` into a temporary folder (under
    ``work_dir``, default the system's) and score them with :func:`evaluate_predictions`.

    ``dataset``: ``cityscapes`` / ``toy`` / ``coco`` (default: ``coco`` when ``data_root`` holds a
    ``pdl prepare`` manifest).  ``max_images`` > 0 scores only that many images (the first by image
    id).  The predictor's spec sets the mIoU classes.  Raises :class:`DataError` when the split has
    no images or an image could not be predicted.
    """
    from pdlkit.data import load_records
    from pdlkit.inference import predict_paths

    records = load_records(data_root, split, dataset or dataset_kind(data_root), spec=predictor.spec)
    if not records:
        raise DataError(f"{data_root}: split {split!r} has no annotated images to evaluate")
    chosen = records[:max_images] if 0 < max_images < len(records) else records
    # Under torchrun (a process group is initialised) every rank predicts its share into one
    # folder and rank 0 scores it all: the numbers are the single-process numbers exactly.
    from pdlkit.inference.distributed import barrier, broadcast_object, shared_temp_dir, world

    is_main = world()[0] == 0
    with shared_temp_dir(parent=work_dir, prefix="pdl_eval_") as tmp:
        image_paths = [Path(r.image_path) for r in chosen]
        if chosen is records:
            inputs = Path(os.path.commonpath([str(p.parent) for p in image_paths]))
        else:
            inputs = _link_subset(image_paths, Path(tmp) / "images") if is_main else Path(tmp) / "images"
            barrier()
        predictions = Path(tmp) / "predictions"
        summary = predict_paths(predictor, str(inputs), predictions, batch_size=batch_size, progress=progress)
        failed = broadcast_object(summary.failed)  # rank 0's summary holds every rank's failures
        if failed:
            path, reason = failed[0]
            raise DataError(f"{path}: could not be predicted ({reason}); {len(failed)} image(s) failed")
        image_ids = [r.image_id for r in chosen] if chosen is not records else None
        results, error = None, None
        if is_main:
            try:
                results = evaluate_predictions(data_root, split, predictions, spec=predictor.spec,
                                               compute_ap=compute_ap, progress=progress, image_ids=image_ids,
                                               num_workers=num_workers)
            except Exception as exc:  # raised on every rank below, so none waits for rank 0
                error = exc
        results, error = broadcast_object((results, error))
        if error is not None:
            raise error
        return results
