"""pdl eval on a user's COCO-panoptic dataset equals the reference evaluators on the same files:
PQ/SQ/RQ (all, things, stuff, per class) = cityscapesscripts' evaluatePanoptic (panopticapi's
pq_compute), mIoU = a plain numpy count, AP/AP50 = pycocotools on `pdl convert --format coco`'s
results loaded with COCO.loadRes.  Integer and string image ids; bad predictions refused."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import custom_dataset as custom  # noqa: E402

from pdlkit.data.coco_format import prepare_panoptic  # noqa: E402
from pdlkit.errors import DataError  # noqa: E402
from pdlkit.evaluation import convert_predictions, evaluate_predictions  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom")
    splits = custom.write_custom(root, train=1, val=5)
    for split, (images, json_file, masks) in splits.items():
        prepare_panoptic(root, split, images=images, json_file=json_file, masks=masks)
    images, json_file, masks = splits["val"]
    return root, images, json_file, masks, json.loads(json_file.read_text())


def _close(ours, reference, tolerance=1e-9):
    if reference is None or (isinstance(reference, float) and math.isnan(reference)):
        return ours is None
    return ours is not None and abs(ours - reference) <= tolerance


def _check(dataset, pred_dir, work):
    root, _, json_file, masks, data = dataset
    ours = evaluate_predictions(root, "val", pred_dir, progress=False)
    official = custom.official_pq(json_file, masks, pred_dir, work)
    for group, name in ((ours, "All"), (ours["things"], "Things"), (ours["stuff"], "Stuff")):
        for metric in ("PQ", "SQ", "RQ"):
            assert _close(group[metric], 100 * official[name][metric.lower()]), (name, metric)
        assert group["n"] == official[name]["n"]
    assert len(official["per_class"]) == 6
    for category_id, reference in official["per_class"].items():
        per_class = next(v for v in ours["per_class"].values() if v["category_id"] == int(category_id))
        for metric in ("PQ", "SQ", "RQ"):
            assert _close(per_class[metric], 100 * reference[metric.lower()]), (category_id, metric)
    assert ours["mIoU"] == pytest.approx(custom.reference_miou(data, masks, pred_dir), abs=1e-9)

    convert_predictions(pred_dir, work / "instances", format="coco", data_root=root, split="val")
    results = work / "instances" / "coco_instances_results.json"
    assert {r["image_id"] for r in json.loads(results.read_text())} <= {im["id"] for im in data["images"]}
    ap, ap50 = custom.pycocotools_ap(custom.coco_instances_gt(data, masks), results)
    assert ours["AP"] == pytest.approx(ap, abs=1e-9) and ours["AP50"] == pytest.approx(ap50, abs=1e-9)
    return ours


def test_perfect_predictions(dataset, tmp_path):
    root, images, _, masks, data = dataset
    pred = custom.write_predictions(images, masks, data, tmp_path / "pred", seed=0, perturb=False)
    ours = _check(dataset, pred, tmp_path)
    assert ours["PQ"] == pytest.approx(100.0) and ours["mIoU"] == pytest.approx(100.0)
    assert ours["AP"] == pytest.approx(100.0)
    assert ours["num_images"] == 5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_perturbed_predictions(dataset, tmp_path, seed):
    root, images, _, masks, data = dataset
    pred = custom.write_predictions(images, masks, data, tmp_path / "pred", seed=seed, perturb=True)
    ours = _check(dataset, pred, tmp_path)
    assert 0.0 < ours["PQ"] < 100.0 and ours["mIoU"] < 100.0


def test_integer_image_ids_equal_file_names(dataset, tmp_path):
    """Predictions named by the dataset's integer ids score exactly as those named by file."""
    root, images, _, masks, data = dataset
    by_file = custom.write_predictions(images, masks, data, tmp_path / "a", seed=4, perturb=True)
    by_id = custom.write_predictions(images, masks, data, tmp_path / "b", seed=4, perturb=True, ids="dataset")
    assert isinstance(json.loads((by_id / "panoptic.json").read_text())["annotations"][0]["image_id"], int)
    one = evaluate_predictions(root, "val", by_file, progress=False)
    two = evaluate_predictions(root, "val", by_id, progress=False)
    assert one == two


def test_string_image_ids_of_a_vistas_layout(tmp_path):
    from pdlkit.data.prepare import prepare_vistas

    custom.write_vistas(tmp_path / "vistas")
    prepare_vistas(tmp_path / "vistas")
    panoptic = tmp_path / "vistas" / "validation" / "v2.0" / "panoptic"
    data = json.loads((panoptic / "panoptic_2020.json").read_text())
    pred = custom.write_predictions(tmp_path / "vistas" / "validation" / "images", panoptic, data, tmp_path / "p",
                                    seed=5, perturb=True)
    ours = evaluate_predictions(tmp_path / "vistas", "val", pred, progress=False)
    official = custom.official_pq(panoptic / "panoptic_2020.json", panoptic, pred, tmp_path / "work")
    assert _close(ours["PQ"], 100 * official["All"]["pq"])
    assert ours["num_images"] == 2


def _edit(pred_dir: Path, change) -> None:
    path = pred_dir / "panoptic.json"
    index = json.loads(path.read_text())
    change(index["annotations"])
    path.write_text(json.dumps(index))


def test_bad_predictions_are_named(dataset, tmp_path):
    root, images, _, masks, data = dataset
    pred = custom.write_predictions(images, masks, data, tmp_path / "pred", seed=6, perturb=False)
    first = json.loads((pred / "panoptic.json").read_text())["annotations"][0]["image_id"]

    _edit(pred, lambda anns: anns.append(dict(anns[0])))
    with pytest.raises(DataError, match=f"image_id '{first}' appears twice"):
        evaluate_predictions(root, "val", pred, progress=False)
    _edit(pred, lambda anns: anns.pop())

    _edit(pred, lambda anns: anns[1].update(segments_info=None))
    with pytest.raises(DataError, match="segments_info of image .* must be a list of segments, got NoneType"):
        evaluate_predictions(root, "val", pred, progress=False)

    _edit(pred, lambda anns: anns.__delitem__(1))
    with pytest.raises(DataError, match="1 image\\(s\\) of split 'val' have no prediction: 2007"):
        evaluate_predictions(root, "val", pred, progress=False)

    _edit(pred, lambda anns: anns[0].update(file_name="../../escape.png"))
    with pytest.raises(DataError, match="'../../escape.png' leads outside"):
        evaluate_predictions(root, "val", pred, progress=False)


def test_ground_truth_paths_stay_inside_the_dataset(dataset, tmp_path):
    """A dataset json whose file_name climbs out of its folder is refused, not read."""
    import shutil

    root, images, json_file, masks, data = dataset
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    bad = json.loads((copy / "annotations" / "val.json").read_text())
    bad["annotations"][0]["file_name"] = "../../../../etc/passwd"
    (copy / "annotations" / "val.json").write_text(json.dumps(bad))
    pred = custom.write_predictions(images, masks, data, tmp_path / "pred", seed=7, perturb=False)
    with pytest.raises(DataError, match="'../../../../etc/passwd' leads outside"):
        evaluate_predictions(copy, "val", pred, progress=False)
