"""IoU rules of the official pixel-level evaluator on a hand-made case."""
from __future__ import annotations

import numpy as np
import pytest

from pdlkit.errors import DataError
from pdlkit.evaluation.semantic import confusion_matrix, iou_summary


def test_iou_counts_and_mean_over_defined_classes():
    gt = np.array([[7, 7, 26, 4], [0, 26, 26, 7]], np.uint8)
    pred = np.array([[7, 26, 26, 7], [7, 4, 26, 0]], np.uint8)
    confusion = confusion_matrix(gt, pred, [7, 8, 26])
    result = iou_summary(confusion, ["road", "sidewalk", "car"])
    # road: tp 1; ground-truth road predicted car or label 0 -> fn 2; ground truth 4 and 0
    # (not evaluated) predicted road are no false positives -> 1 / 3.
    # car: tp 2, fn 1 (predicted 4), fp 1 (road predicted car) -> 2 / 4.
    # sidewalk occurs nowhere: undefined and left out of the mean.
    assert result["per_class_iou"] == pytest.approx({"road": 100 / 3, "sidewalk": None, "car": 50.0})
    assert result["mIoU"] == pytest.approx(100 * (1 / 3 + 1 / 2) / 2)
    assert result["n"] == 2


def test_a_predicted_class_absent_from_the_ground_truth_scores_zero():
    gt = np.array([[7, 7]], np.uint8)
    pred = np.array([[7, 8]], np.uint8)
    result = iou_summary(confusion_matrix(gt, pred, [7, 8]), ["road", "sidewalk"])
    assert result["per_class_iou"] == {"road": 50.0, "sidewalk": 0.0}
    assert result["mIoU"] == pytest.approx(25.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(DataError, match="semantic prediction is 1x2"):
        confusion_matrix(np.zeros((2, 2), np.uint8), np.zeros((2, 1), np.uint8), [7])
