"""The trainer's periodic and final evaluation as a function of (model, iteration).

``pdl train`` passes ``functools.partial(evaluate_model, cfg=cfg, work_dir=...)`` to the trainer,
which calls it as ``evaluate(model, iteration)``; the trainer itself imports nothing from
inference or evaluation.  The work is :func:`~pdlkit.evaluation.predict_and_evaluate`'s, the same
that ``pdl eval --weights`` runs.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

from torch import nn

from ..config import Config
from ..data.spec import DatasetSpec, spec_for
from ..errors import DataError
from ..inference import Predictor
from .run import predict_and_evaluate

__all__ = ["evaluate_model"]

logger = logging.getLogger("pdlkit.evaluation")


def evaluate_model(model: nn.Module, iteration: int = 0, *, cfg: Config, work_dir: str | os.PathLike,
                   spec: Optional[DatasetSpec] = None) -> dict:
    """PQ / SQ / RQ / mIoU (percent) of ``model`` on ``cfg.data.val_split`` (AP skipped for speed),
    predicted on the model's own device under ``work_dir``; ``cfg.test.max_eval_images`` > 0 scores
    only that many images.  Returns ``{}`` with a warning when the split cannot be read or has no
    images.  ``iteration`` only labels the log."""
    predictor = Predictor.from_model(model, cfg, spec or spec_for(cfg.data))
    try:
        return predict_and_evaluate(predictor, cfg.data.root, cfg.data.val_split, dataset=cfg.data.dataset,
                                    work_dir=work_dir, max_images=cfg.test.max_eval_images, compute_ap=False)
    except DataError as exc:
        logger.warning("skipping the evaluation at iteration %d: %s", iteration, exc)
        return {}
