"""PQ counting on small hand-made maps whose answers are worked out in the comments."""
from __future__ import annotations

import numpy as np
import pytest

from pdlkit.errors import DataError
from pdlkit.evaluation.panoptic import PQStats, pq_image_stats, pq_summary

ROAD, PERSON, CAR = 7, 24, 26
CATEGORIES = [
    {"id": ROAD, "name": "road", "isthing": 0},
    {"id": PERSON, "name": "person", "isthing": 1},
    {"id": CAR, "name": "car", "isthing": 1},
]
INDEX = {c["id"]: k for k, c in enumerate(CATEGORIES)}


def _segments(id_map, categories, crowd=()):
    segments = []
    for segment_id, category in categories.items():
        segments.append(
            {"id": segment_id, "category_id": category, "area": int((id_map == segment_id).sum()),
             "iscrowd": int(segment_id in crowd)}
        )
    return segments


def test_void_crowd_and_matching_counts():
    gt = np.array(
        [
            [7, 7, 7, 7, 7, 7, 0, 0],
            [26001, 26001, 26001, 26001, 7, 24001, 24001, 0],
            [26001, 26001, 26001, 26001, 7, 24001, 24001, 0],
            [26, 26, 7, 7, 7, 7, 7, 7],
        ]
    )
    gt_segments = _segments(gt, {7: ROAD, 26001: CAR, 24001: PERSON, 26: CAR}, crowd=(26,))
    pred = np.array(
        [
            [7, 7, 7, 7, 7, 7, 7, 7],
            [1, 1, 1, 1, 1, 7, 7, 3],
            [1, 1, 0, 0, 1, 7, 7, 3],
            [2, 2, 7, 7, 7, 7, 7, 7],
        ]
    )
    pred_segments = [
        {"id": 7, "category_id": ROAD},
        {"id": 1, "category_id": CAR},
        {"id": 2, "category_id": CAR},  # lies wholly on the car crowd region: ignored
        {"id": 3, "category_id": PERSON},  # lies wholly on void: ignored
    ]
    stats = pq_image_stats(gt, gt_segments, pred, pred_segments, INDEX)
    # road: area 18, intersection 12, 2 px on void -> IoU 12 / (18 + 14 - 12 - 2) = 2/3.
    # car: area 8, intersection 6, 0 on void -> IoU 6 / (8 + 8 - 6) = 0.6.
    # person: predicted as road -> one false negative; the void-only person is no false positive.
    assert stats.tp.tolist() == [1, 0, 1]
    assert stats.fp.tolist() == [0, 0, 0]
    assert stats.fn.tolist() == [0, 1, 0]
    assert stats.iou.tolist() == pytest.approx([2 / 3, 0.0, 0.6])

    summary = pq_summary(stats, CATEGORIES)
    assert summary["per_class"]["road"]["PQ"] == pytest.approx(100 * 2 / 3)
    assert summary["per_class"]["car"]["SQ"] == pytest.approx(60.0)
    assert summary["per_class"]["person"]["RQ"] == 0.0
    assert summary["PQ"] == pytest.approx(100 * (2 / 3 + 0.6 + 0.0) / 3)
    assert summary["things"] == pytest.approx({"PQ": 30.0, "SQ": 30.0, "RQ": 50.0, "n": 2})
    assert summary["stuff"]["PQ"] == pytest.approx(100 * 2 / 3)


def test_half_on_void_is_still_a_false_positive_and_iou_half_does_not_match():
    gt = np.array([[0, 0, 7, 7]])
    gt_segments = _segments(gt, {7: ROAD})
    pred = np.array([[5, 5, 5, 5]])
    stats = pq_image_stats(gt, gt_segments, pred, [{"id": 5, "category_id": CAR}], INDEX)
    # exactly half of the car lies on void: not "more than half", so it counts.
    assert stats.fp.tolist() == [0, 0, 1]
    assert stats.fn.tolist() == [1, 0, 0]

    gt = np.array([[0, 26, 7, 7]])
    gt_segments = _segments(gt, {7: ROAD, 26: CAR}, crowd=(26,))
    pred = np.array([[5, 5, 5, 7]])
    stats = pq_image_stats(
        gt, gt_segments, pred, [{"id": 5, "category_id": CAR}, {"id": 7, "category_id": ROAD}], INDEX
    )
    # car: 1 void + 1 same-class crowd of 3 px -> ignored.  road: IoU 1 / (1 + 2 - 1) = 0.5 is no match.
    assert stats.tp.tolist() == [0, 0, 0]
    assert stats.fp.tolist() == [1, 0, 0]
    assert stats.fn.tolist() == [1, 0, 0]


def test_crowd_of_another_class_does_not_excuse_a_false_positive():
    gt = np.array([[24, 24, 24, 7]])
    gt_segments = _segments(gt, {7: ROAD, 24: PERSON}, crowd=(24,))
    pred = np.array([[5, 5, 5, 7]])
    stats = pq_image_stats(
        gt, gt_segments, pred, [{"id": 5, "category_id": CAR}, {"id": 7, "category_id": ROAD}], INDEX
    )
    assert stats.fp.tolist() == [0, 0, 1]
    assert stats.tp.tolist() == [1, 0, 0]


def test_absent_categories_are_left_out_of_averages():
    stats = PQStats.zeros(3)
    stats.tp[0], stats.iou[0] = 2, 1.5
    summary = pq_summary(stats, CATEGORIES)
    assert summary["n"] == 1 and summary["PQ"] == pytest.approx(75.0)
    assert summary["things"] == {"PQ": None, "SQ": None, "RQ": None, "n": 0}
    assert summary["per_class"]["car"]["present"] is False


def test_prediction_errors_name_the_image():
    gt = np.array([[7, 7]])
    gt_segments = _segments(gt, {7: ROAD})
    with pytest.raises(DataError, match="img1.*in the prediction PNG but not"):
        pq_image_stats(gt, gt_segments, np.array([[7, 9]]), [{"id": 7, "category_id": ROAD}], INDEX, image_id="img1")
    with pytest.raises(DataError, match="in the prediction json but not in its PNG"):
        pq_image_stats(
            gt, gt_segments, np.array([[7, 7]]),
            [{"id": 7, "category_id": ROAD}, {"id": 9, "category_id": CAR}], INDEX,
        )
    with pytest.raises(DataError, match="unknown category_id"):
        pq_image_stats(gt, gt_segments, np.array([[7, 7]]), [{"id": 7, "category_id": 99}], INDEX)
    with pytest.raises(DataError, match="2x1"):
        pq_image_stats(gt, gt_segments, np.array([[7], [7]]), [{"id": 7, "category_id": ROAD}], INDEX)
