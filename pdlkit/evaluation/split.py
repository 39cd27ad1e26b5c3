"""Predict a split with a model in memory and score it: the trainer's periodic evaluation.

``pdl train`` passes ``functools.partial(evaluate_model, cfg=cfg, work_dir=...)`` to the trainer,
which calls it as ``evaluate(model, iteration)``; the trainer itself imports nothing from
inference or evaluation.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional

from torch import nn

from ..config import Config
from ..data import load_records
from ..data.spec import DatasetSpec, spec_for
from ..errors import DataError
from ..inference import Predictor, predict_paths
from . import evaluate_predictions

__all__ = ["evaluate_model"]

logger = logging.getLogger("pdlkit.evaluation")


def evaluate_model(model: nn.Module, iteration: int = 0, *, cfg: Config, work_dir: str | os.PathLike,
                   spec: Optional[DatasetSpec] = None) -> dict:
    """PQ / SQ / RQ / mIoU (percent) of ``model`` on ``cfg.data.val_split`` (AP skipped for speed).

    Predicts into a temporary folder under ``work_dir`` on the model's own device, in eval mode
    (the model's mode is restored afterwards).  ``cfg.test.max_eval_images`` > 0 scores only that
    many images (the first in sorted order).  Returns ``{}`` (with a warning) when the split has no
    images.  ``iteration`` only labels the log.
    """
    spec = spec or spec_for(cfg.data)
    try:
        records = load_records(cfg.data.root, cfg.data.val_split, dataset=cfg.data.dataset, spec=spec)
    except DataError as exc:
        logger.warning("skipping evaluation at iteration %d: %s", iteration, exc)
        return {}
    if not records:
        logger.warning("no %r images under %s: skipping evaluation", cfg.data.val_split, cfg.data.root)
        return {}
    limit = cfg.test.max_eval_images
    chosen = records[:limit] if limit and limit < len(records) else records
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    was_training = model.training
    try:
        with tempfile.TemporaryDirectory(prefix="eval_", dir=work_dir) as tmp:
            inputs = _input_folder([Path(r.image_path) for r in records], len(chosen), Path(tmp) / "images")
            predictor = Predictor.from_model(model.eval(), cfg, spec)
            predictions = Path(tmp) / "predictions"
            predict_paths(predictor, str(inputs), predictions, progress=False)
            image_ids = [r.image_id for r in chosen] if len(chosen) < len(records) else None
            return evaluate_predictions(cfg.data.root, cfg.data.val_split, predictions, spec=spec,
                                        compute_ap=False, progress=False, image_ids=image_ids)
    finally:
        model.train(was_training)


def _input_folder(image_paths: List[Path], count: int, subset_root: Path) -> Path:
    """The split's image folder, or (for the first ``count`` images only) a folder laid out like it
    holding links to them."""
    source_root = Path(os.path.commonpath([str(p.parent) for p in image_paths]))
    if count >= len(image_paths):
        return source_root
    for path in image_paths[:count]:
        link = subset_root / path.relative_to(source_root)
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(path.resolve(), link)
        except OSError:  # file systems without symlinks
            shutil.copyfile(path, link)
    return subset_root
