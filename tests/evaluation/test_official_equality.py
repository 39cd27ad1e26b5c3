"""pdlkit's evaluation equals cityscapesscripts' three evaluators on the same files.

Ground truth is hand-made (instance/label ids -> cityscapesscripts' createPanopticImgs); predictions
are made from it, perfect and perturbed (dropped, merged, relabelled, shifted instances, void and
crowd overlaps, a missing stuff class, semantic noise).
"""
from __future__ import annotations

import math

import pytest

import scenes
from pdlkit.evaluation import convert_predictions, evaluate_predictions


@pytest.fixture(scope="module")
def gt_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("handmade_gt")
    scenes.write_ground_truth(root, "val", num_images=10, height=64, width=128, seed=3)
    return root


def _close(ours, official, tolerance):
    if official is None or (isinstance(official, float) and math.isnan(official)):
        return ours is None
    return ours is not None and abs(ours - official) <= tolerance


def _check_against_official(gt_root, pred_dir, work):
    ours = evaluate_predictions(gt_root, "val", pred_dir, progress=False)

    panoptic = scenes.official_panoptic(gt_root, "val", pred_dir, work)
    for ours_group, name in ((ours, "All"), (ours["things"], "Things"), (ours["stuff"], "Stuff")):
        for metric in ("PQ", "SQ", "RQ"):
            assert _close(ours_group[metric], 100 * panoptic[name][metric.lower()], 1e-6), (name, metric)
        assert ours_group["n"] == panoptic[name]["n"]
    for category_id, official in panoptic["per_class"].items():
        name = next(n for n, v in ours["per_class"].items() if v["category_id"] == int(category_id))
        for metric in ("PQ", "SQ", "RQ"):
            assert _close(ours["per_class"][name][metric], 100 * official[metric.lower()], 1e-6), (name, metric)

    pixel = scenes.official_pixel(gt_root, "val", pred_dir)
    assert _close(ours["mIoU"], 100 * pixel["averageScoreClasses"], 1e-6)
    for name, value in ours["per_class_iou"].items():
        assert _close(value, 100 * pixel["classScores"][name], 1e-6), name

    results = work / "instance_results"
    convert_predictions(pred_dir, results, format="cityscapes")
    instance = scenes.official_instance(gt_root, "val", results, work)
    averages = instance["averages"]
    assert _close(ours["AP"], 100 * averages["allAp"], 1e-4)
    assert _close(ours["AP50"], 100 * averages["allAp50%"], 1e-4)
    for name, official in averages["classes"].items():
        assert _close(ours["per_class_ap"][name]["AP"], 100 * official["ap"], 1e-4), name
        assert _close(ours["per_class_ap"][name]["AP50"], 100 * official["ap50%"], 1e-4), name
    return ours


def test_perfect_predictions_match_official(gt_root, tmp_path):
    pred_dir = scenes.write_predictions(gt_root, "val", tmp_path / "pred", seed=0, perturb=False)
    ours = _check_against_official(gt_root, pred_dir, tmp_path)
    # A perfect panoptic map: every class that occurs is recognised exactly.
    assert ours["PQ"] == pytest.approx(100.0)
    assert ours["SQ"] == pytest.approx(100.0)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_perturbed_predictions_match_official(gt_root, tmp_path, seed):
    pred_dir = scenes.write_predictions(gt_root, "val", tmp_path / "pred", seed=seed, perturb=True)
    ours = _check_against_official(gt_root, pred_dir, tmp_path)
    assert 0.0 < ours["PQ"] < 100.0
    assert ours["mIoU"] < 100.0


def test_semantic_folder_absent_uses_panoptic_categories(gt_root, tmp_path):
    """Without semantic/ the panoptic prediction's categories are scored (void counts as label 0)."""
    import shutil

    pred_dir = scenes.write_predictions(gt_root, "val", tmp_path / "pred", seed=5, perturb=True, semantic_noise=0.0)
    with_files = evaluate_predictions(gt_root, "val", pred_dir, compute_ap=False, progress=False)
    shutil.rmtree(pred_dir / "semantic")
    derived = evaluate_predictions(gt_root, "val", pred_dir, compute_ap=False, progress=False)
    assert derived["mIoU"] == pytest.approx(with_files["mIoU"], abs=1e-9)
    assert derived["PQ"] == with_files["PQ"]


def test_thread_count_does_not_change_results(gt_root, tmp_path):
    pred_dir = scenes.write_predictions(gt_root, "val", tmp_path / "pred", seed=6, perturb=True)
    one = evaluate_predictions(gt_root, "val", pred_dir, progress=False, num_workers=1)
    two = evaluate_predictions(gt_root, "val", pred_dir, progress=False, num_workers=3)
    assert one["per_class"] == two["per_class"]
    for key in ("PQ", "mIoU", "AP", "AP50"):
        assert one[key] == pytest.approx(two[key], abs=1e-12)


def test_image_subset(gt_root, tmp_path):
    """``image_ids`` scores only those images; predictions of the others may be missing."""
    import json

    pred_dir = scenes.write_predictions(gt_root, "val", tmp_path / "pred", seed=7, perturb=True)
    index = json.loads((pred_dir / "panoptic.json").read_text())
    keep = [a["image_id"] for a in index["annotations"][:3]]
    index["annotations"] = index["annotations"][:3]
    (pred_dir / "panoptic.json").write_text(json.dumps(index))
    subset = evaluate_predictions(gt_root, "val", pred_dir, progress=False, image_ids=keep)
    assert subset["num_images"] == 3


@pytest.mark.parametrize("seed", [11, 12])
def test_toy_dataset_predictions_match_official(toy_root, tmp_path, seed):
    """The same equality on the toy set that ``pdl prepare toy`` writes (the data layer's generator)."""
    pred_dir = scenes.write_predictions(toy_root, "val", tmp_path / "pred", seed=seed, perturb=True)
    _check_against_official(toy_root, pred_dir, tmp_path)
