"""Predict a split with a model, then score it: what ``pdl eval --weights`` and the trainer's
periodic and final evaluations both run."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, Optional

from pdlkit.errors import DataError
from pdlkit.io import read_json

from .evaluate import EvalShare, combine_shares, score_images

__all__ = ["predict_and_evaluate", "evaluate_across_ranks", "spec_of_predictions", "dataset_kind"]


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


def _predict_and_score(predictor, data_root, split: str, records: list, *, whole: bool, work_dir,
                       batch_size: int, progress: bool, compute_ap: bool, num_workers: Optional[int]) -> EvalShare:
    """Predict ``records`` (all of the split when ``whole``) into a temporary folder of this
    process and score them: this process's :class:`EvalShare`."""
    from pdlkit.inference import predict_paths

    if not records:  # more ranks than images
        return score_images(data_root, split, None, spec=predictor.spec, compute_ap=compute_ap, image_ids=[])
    with tempfile.TemporaryDirectory(prefix="pdl_eval_", dir=work_dir) as tmp:
        image_paths = [Path(r.image_path) for r in records]
        if whole:
            inputs = Path(os.path.commonpath([str(p.parent) for p in image_paths]))
        else:
            inputs = _link_subset(image_paths, Path(tmp) / "images")
        predictions = Path(tmp) / "predictions"
        summary = predict_paths(predictor, str(inputs), predictions, batch_size=batch_size, progress=progress,
                                shard=False)
        if summary.failed:
            path, reason = summary.failed[0]
            raise DataError(f"{path}: could not be predicted ({reason}); {len(summary.failed)} image(s) failed")
        return score_images(data_root, split, predictions, spec=predictor.spec, compute_ap=compute_ap,
                            progress=progress, image_ids=None if whole else [r.image_id for r in records],
                            num_workers=num_workers)


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
    ``work_dir``, default the system's) and score them as :func:`evaluate_predictions` does.

    ``dataset``: ``cityscapes`` / ``toy`` / ``coco`` (default: ``coco`` when ``data_root`` holds a
    ``pdl prepare`` manifest).  ``max_images`` > 0 scores only that many images (the first by image
    id).  The predictor's spec sets the mIoU classes.  Under torchrun (a process group is
    initialised) each rank predicts and scores its own share of the images in a folder of its own
    (no shared file system needed) and the statistics are gathered on every rank: every rank
    returns the single-process numbers exactly.  Raises :class:`DataError` (on every rank) when
    the split has no images or an image could not be predicted.
    """
    from pdlkit.data import load_records
    from pdlkit.inference.distributed import shard, world

    records = load_records(data_root, split, dataset or dataset_kind(data_root), spec=predictor.spec)
    if not records:
        raise DataError(f"{data_root}: split {split!r} has no annotated images to evaluate")
    chosen = records[:max_images] if 0 < max_images < len(records) else records
    rank, world_size = world()
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    return _gather_scores(lambda: _predict_and_score(
        predictor, data_root, split, shard(chosen, rank, world_size), whole=world_size == 1 and chosen is records,
        work_dir=work_dir, batch_size=batch_size, progress=progress and rank == 0, compute_ap=compute_ap,
        num_workers=num_workers))


def evaluate_across_ranks(data_root, split: str, predictions_dir, **kwargs) -> Dict:
    """:func:`evaluate_predictions` (same arguments) with the images shared among the ranks of a
    torchrun job (each scores every N-th image; ``predictions_dir`` must be readable by all) and
    the statistics gathered: every rank returns the single-process numbers exactly (alone, those
    of :func:`evaluate_predictions`)."""
    from pdlkit.inference.distributed import world

    rank, world_size = world()
    if rank != 0:
        kwargs["progress"] = False
    return _gather_scores(lambda: score_images(data_root, split, predictions_dir, shard=(rank, world_size),
                                               **kwargs))


def _gather_scores(score: Callable[[], EvalShare]) -> Dict:
    """Run ``score`` on every rank, gather the shares and combine them; an exception on any rank
    is raised on every rank (so that none waits for a rank that failed)."""
    from pdlkit.inference.distributed import all_gather_objects

    try:
        outcome = (score(), None)
    except Exception as exc:  # sent to every rank below
        outcome = (None, exc)
    gathered = all_gather_objects(outcome)
    errors = [error for _, error in gathered if error is not None]
    if errors:
        raise errors[0]
    return combine_shares([share for share, _ in gathered])
