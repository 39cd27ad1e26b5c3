"""Evaluation equal to the reference evaluators, and instance conversion.

:func:`evaluate_predictions` gives PQ/SQ/RQ (panopticapi's ``pq_compute``, as cityscapesscripts'
``evalPanopticSemanticLabeling`` copies it), mIoU and instance AP / AP50 (cityscapesscripts'
``evalInstanceLevelSemanticLabeling`` on Cityscapes data, pycocotools' mask ``COCOeval`` on
COCO-format data) of a predictions folder (docs/formats.md), in percent.
:func:`predict_and_evaluate` predicts a split with a model first (``pdl eval --weights`` and the
trainer's evaluations); under torchrun each rank scores its share (:func:`score_images`) and the
shares combine exactly (:func:`combine_shares`).  :func:`convert_predictions` writes instance predictions for the official
tools.
"""
from __future__ import annotations

from pdlkit.io import read_json, write_json

from ._io import load_ground_truth
from .convert import convert_predictions
from .evaluate import EvalShare, combine_shares, evaluate_predictions, score_images
from .report import format_results
from .run import evaluate_across_ranks, predict_and_evaluate, spec_of_predictions

__all__ = [
    "evaluate_predictions",
    "score_images",
    "combine_shares",
    "EvalShare",
    "predict_and_evaluate",
    "evaluate_across_ranks",
    "convert_predictions",
    "format_results",
    "load_ground_truth",
    "spec_of_predictions",
    "write_results_json",
    "read_json",
]


def write_results_json(path, results) -> None:
    """Write a results dict as strict JSON (NaN/inf as null), atomically."""
    write_json(path, results)
