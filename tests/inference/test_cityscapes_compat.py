"""pdl predict's files are read unchanged by cityscapesscripts' evalPanopticSemanticLabeling."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from pdlkit.inference import Prediction, Predictor, predict_paths
from pdlkit.inference.predictor import segments_from_panoptic
from pdlkit.inference.writers import PredictionWriter
from pdlkit.io import rgb_to_id

from .fakes import ConvPanopticNet, small_config


def _evaluate(toy_root, split, out, tmp_path):
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    gt_json = toy_root / "gtFine" / f"cityscapes_panoptic_{split}.json"
    return evaluatePanoptic(str(gt_json), str(toy_root / "gtFine" / f"cityscapes_panoptic_{split}"),
                            str(out / "panoptic.json"), str(out / "panoptic"), str(tmp_path / "results.json"))


def _prediction_from_ground_truth(annotation, gt_folder, spec) -> Prediction:
    """The ground truth, re-encoded as a Prediction in train-id space (crowd regions as instances)."""
    gt_ids = rgb_to_id(cv2.cvtColor(cv2.imread(str(gt_folder / annotation["file_name"])), cv2.COLOR_BGR2RGB))
    panoptic = np.full(gt_ids.shape, -1, dtype=np.int32)
    semantic = np.zeros(gt_ids.shape, dtype=np.int64)
    instance_info, counters = {}, {}
    to_train = spec.category_to_train_id
    for segment in annotation["segments_info"]:
        train_id = to_train[segment["category_id"]]
        if spec.is_thing[train_id]:
            counters[train_id] = counters.get(train_id, 0) + 1
            pan_id = train_id * 1000 + counters[train_id]
            instance_info[pan_id] = {"score": 0.9, "objectness": 0.9, "class_score": 1.0, "center": [0, 0]}
        else:
            pan_id = train_id * 1000
        panoptic[gt_ids == segment["id"]] = pan_id
        semantic[gt_ids == segment["id"]] = train_id
    segments = segments_from_panoptic(torch.from_numpy(panoptic), spec, 1000, instance_info)
    return Prediction(panoptic=panoptic, semantic=semantic, segments=segments,
                      center_heatmap=np.zeros(gt_ids.shape, np.float32),
                      offsets=np.zeros((2,) + gt_ids.shape, np.float32), centers=np.zeros((0, 2), np.int64),
                      instance_ids=sorted(instance_info))


@pytest.mark.slow
def test_ground_truth_written_as_predictions_scores_pq_100(toy_root, tmp_path):
    from pdlkit.data.spec import cityscapes_spec

    spec = cityscapes_spec()
    gt = json.loads((toy_root / "gtFine" / "cityscapes_panoptic_val.json").read_text())
    writer = PredictionWriter(tmp_path / "out", spec)
    for annotation in gt["annotations"]:
        prediction = _prediction_from_ground_truth(annotation, toy_root / "gtFine" / "cityscapes_panoptic_val", spec)
        writer.write(prediction, "city", annotation["image_id"])
    writer.write_index()
    results = _evaluate(toy_root, "val", tmp_path / "out", tmp_path)
    for group in ("All", "Things", "Stuff"):
        assert results[group]["pq"] == pytest.approx(1.0)
        assert results[group]["rq"] == pytest.approx(1.0)


@pytest.mark.slow
def test_predicted_toy_val_is_read_by_the_official_evaluator(toy_root, tmp_path):
    from pdlkit.data.spec import cityscapes_spec

    spec = cityscapes_spec()
    predictor = Predictor.from_model(ConvPanopticNet(spec.num_classes, size_divisibility=8), small_config(),
                                     spec, "cpu")
    out = tmp_path / "out"
    summary = predict_paths(predictor, toy_root / "leftImg8bit" / "val", out, batch_size=2, progress=False)
    assert summary.processed == len(list((toy_root / "leftImg8bit" / "val").rglob("*.png")))
    assert not summary.failed
    results = _evaluate(toy_root, "val", out, tmp_path)
    assert 0.0 <= results["All"]["pq"] <= 1.0
    assert (tmp_path / "results.json").is_file()
