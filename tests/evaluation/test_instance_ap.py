"""Instance AP rules of the official evaluator on hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest

from pdlkit.evaluation.instance import (
    OVERLAP_THRESHOLDS,
    PredictedInstance,
    _average_precision,
    instance_ap,
    match_image_instances,
)

CAR, PERSON = 26, 24
THINGS = [(PERSON, "person"), (CAR, "car")]
EVALUATED = [7, 24, 26]


def test_precision_recall_integration_by_hand():
    # One target matched at score 0.9, a false positive at 0.95, one target missed (hard FN).
    # Scores ascending: [0.9 (T), 0.95 (F)].  Thresholds: at 0.9 tp 1, fp 1, fn 1 -> p = r = 0.5;
    # at 0.95 tp 0 -> p = r = 0; then the end point (p 1, r 0).  Step widths of recall
    # [0.5, 0, 0] padded to [0.5, 0.5, 0, 0, 0]: [0.25, 0.25, 0] -> AP = 0.5 * 0.25 = 0.125.
    ap = _average_precision(np.array([1.0, 0.0]), np.array([0.9, 0.95]), 1)
    assert ap == pytest.approx(0.125)
    assert _average_precision(np.array([1.0]), np.array([0.3]), 0) == pytest.approx(1.0)
    # Targets all missed and every prediction ignored: no ranked example at all.  The official
    # tool fails with an IndexError here; zero recall gives AP 0.
    assert _average_precision(np.array([]), np.array([]), 2) == 0.0


def test_small_crowd_and_void_rules():
    instance_map = np.full((10, 30), 7, np.int32)
    instance_map[:, 0:12] = 26001  # 120 px car: a target
    instance_map[:, 12:17] = 26002  # 50 px car: too small to be a target
    instance_map[:, 17:22] = 26  # car crowd region
    instance_map[:, 22:30] = 0  # void
    pred_ids = np.zeros((10, 30), np.int32)
    pred_ids[:, 0:10] = 1  # IoU 100/120 = 0.83 with the target
    pred_ids[:, 12:17] = 2  # exactly the small car: neither true nor false positive
    pred_ids[:, 17:24] = 3  # crowd (50) + void (20): ignored at every threshold
    pred_ids[:, 24:30] = 4  # void only: ignored
    instances = [
        PredictedInstance(1, CAR, 0.9),
        PredictedInstance(2, CAR, 0.8),
        PredictedInstance(3, CAR, 0.7),
        PredictedInstance(4, CAR, 0.6),
    ]
    matches = match_image_instances(instance_map, pred_ids, instances, [PERSON, CAR], EVALUATED)
    result = instance_ap([matches], THINGS)
    # Thresholds 0.50 .. 0.80 (7 of 10): one true positive -> AP 1.  0.85 .. 0.95: the target is
    # missed and the prediction is a false positive -> AP 0.  Person has no ground truth.
    assert (OVERLAP_THRESHOLDS < 100 / 120).sum() == 7
    assert result["per_class_ap"]["car"] == pytest.approx({"AP": 70.0, "AP50": 100.0})
    assert result["per_class_ap"]["person"] == {"AP": None, "AP50": None}
    assert result["AP"] == pytest.approx(70.0)
    assert result["AP50"] == pytest.approx(100.0)


def test_ground_truth_without_predictions_scores_zero():
    instance_map = np.full((10, 20), 24001, np.int32)
    matches = match_image_instances(instance_map, np.zeros((10, 20), np.int32), [], [PERSON, CAR], EVALUATED)
    result = instance_ap([matches], THINGS)
    assert result["per_class_ap"]["person"] == {"AP": 0.0, "AP50": 0.0}
    assert result["AP"] == 0.0


def test_no_ground_truth_instances_gives_none():
    matches = match_image_instances(np.full((4, 4), 7, np.int32), np.zeros((4, 4), np.int32), [], [CAR], EVALUATED)
    assert instance_ap([matches], [(CAR, "car")]) == {
        "AP": None, "AP50": None, "per_class_ap": {"car": {"AP": None, "AP50": None}}
    }
