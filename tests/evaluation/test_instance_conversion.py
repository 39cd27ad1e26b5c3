"""Instance conversion: Cityscapes txt + masks and COCO RLE, read back exactly."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pdlkit.errors import DataError, PdlError
from pdlkit.evaluation import convert_predictions
from pdlkit.evaluation.convert import COCO_RESULTS_NAME


def _write_prediction_dir(root, *, spec_json=None, categories=None):
    """Two images in sub-folders; the first has a stuff segment and two things, the second none."""
    ids_a = np.zeros((6, 9), np.int64)
    ids_a[:, :] = 7000  # road (stuff)
    ids_a[1:4, 1:4] = 26001  # car, 9 px
    ids_a[2:6, 6:8] = 24001  # person, 8 px
    ids_b = np.full((6, 9), 7000, np.int64)
    annotations = []
    for sub, image_id, ids, segments in (
        ("cityA", "cityA_000000_000019", ids_a, [
            {"id": 7000, "category_id": 7, "iscrowd": 0},
            {"id": 26001, "category_id": 26, "iscrowd": 0, "score": 0.123456789012345,
             "objectness": 0.5, "class_score": 0.246913578024690},
            {"id": 24001, "category_id": 24, "iscrowd": 0, "objectness": 0.5, "class_score": 0.5},
        ]),
        ("cityB", "cityB_000001_000019", ids_b, [{"id": 7000, "category_id": 7, "iscrowd": 0}]),
    ):
        rgb = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)
        (root / "panoptic" / sub).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "panoptic" / sub / f"{image_id}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        annotations.append({"image_id": image_id, "file_name": f"{sub}/{image_id}.png", "segments_info": segments})
    index = {"annotations": annotations}
    if categories is not None:
        index["categories"] = categories
    (root / "panoptic.json").write_text(json.dumps(index))
    if spec_json is not None:
        (root / "spec.json").write_text(json.dumps(spec_json))
    return ids_a


def test_cityscapes_format_lines_and_masks(tmp_path):
    ids = _write_prediction_dir(tmp_path / "pred")
    summary = convert_predictions(tmp_path / "pred", tmp_path / "out", format="cityscapes")
    assert summary["images"] == 2 and summary["instances"] == 2
    lines = (tmp_path / "out" / "cityA" / "cityA_000000_000019_pred.txt").read_text().splitlines()
    assert lines == [
        "masks/cityA_000000_000019_0.png 26 0.123456789012345",
        "masks/cityA_000000_000019_1.png 24 0.25",  # objectness x class score when no "score"
    ]
    for line, segment_id in zip(lines, (26001, 24001)):
        mask = cv2.imread(str(tmp_path / "out" / "cityA" / line.split()[0]), cv2.IMREAD_UNCHANGED)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
        np.testing.assert_array_equal(mask == 255, ids == segment_id)
    assert (tmp_path / "out" / "cityB" / "cityB_000001_000019_pred.txt").read_text() == ""
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_coco_format_round_trips_masks(tmp_path):
    from pycocotools import mask as mask_util

    ids = _write_prediction_dir(tmp_path / "pred")
    # String ids cannot be guessed as COCO's integers without the dataset's json.
    with pytest.raises(DataError, match="image_id 'cityA_000000_000019' is not an integer"):
        convert_predictions(tmp_path / "pred", tmp_path / "out", format="coco")
    assert not (tmp_path / "out" / COCO_RESULTS_NAME).exists()
    index = json.loads((tmp_path / "pred" / "panoptic.json").read_text())
    index["annotations"][0]["image_id"], index["annotations"][1]["image_id"] = "000000000042", 43
    (tmp_path / "pred" / "panoptic.json").write_text(json.dumps(index))
    summary = convert_predictions(tmp_path / "pred", tmp_path / "out", format="coco")
    results = json.loads((tmp_path / "out" / COCO_RESULTS_NAME).read_text())
    assert summary["output"].endswith(COCO_RESULTS_NAME)
    assert [(r["image_id"], r["category_id"]) for r in results] == [(42, 26), (42, 24)]
    assert results[0]["score"] == 0.123456789012345 and results[1]["score"] == 0.25
    for result, segment_id in zip(results, (26001, 24001)):
        assert isinstance(result["segmentation"]["counts"], str)
        rle = dict(result["segmentation"], counts=result["segmentation"]["counts"].encode())
        np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), ids == segment_id)
        ys, xs = np.nonzero(ids == segment_id)
        assert result["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert result["area"] == int((ids == segment_id).sum())


def test_thing_classes_come_from_spec_json_then_categories(tmp_path):
    from pdlkit.data.spec import cityscapes_spec

    spec = cityscapes_spec().to_dict()
    spec["is_thing"] = [cid == 24 for cid in spec["category_ids"]]  # only person is a thing
    _write_prediction_dir(tmp_path / "a", spec_json=spec)
    assert convert_predictions(tmp_path / "a", tmp_path / "out_a")["instances"] == 1
    _write_prediction_dir(tmp_path / "b", categories=[{"id": 26, "name": "car", "isthing": 1}])
    assert convert_predictions(tmp_path / "b", tmp_path / "out_b")["instances"] == 1


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        convert_predictions(tmp_path / "missing", tmp_path / "out")
    _write_prediction_dir(tmp_path / "pred")
    with pytest.raises(PdlError, match="unknown instance format"):
        convert_predictions(tmp_path / "pred", tmp_path / "out", format="voc")
    index = json.loads((tmp_path / "pred" / "panoptic.json").read_text())
    del index["annotations"][0]["segments_info"][2]["objectness"]
    (tmp_path / "pred" / "panoptic.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match="thing segment 24001 has no 'score'"):
        convert_predictions(tmp_path / "pred", tmp_path / "out")


def test_outputs_never_leave_the_output_folder(tmp_path):
    """image_id with ../ or an absolute file_name is refused before anything is written."""
    _write_prediction_dir(tmp_path / "pred")
    index_path = tmp_path / "pred" / "panoptic.json"
    original = index_path.read_text()

    index = json.loads(original)
    index["annotations"][0]["image_id"] = "../../escaped"
    index_path.write_text(json.dumps(index))
    with pytest.raises(DataError, match="image '../../escaped' of the predictions: .* leads outside"):
        convert_predictions(tmp_path / "pred", tmp_path / "out" / "inner", format="cityscapes")
    assert not list(tmp_path.glob("**/escaped*"))

    index = json.loads(original)
    source = tmp_path / "pred" / "panoptic" / index["annotations"][0]["file_name"]
    index["annotations"][0]["file_name"] = str(source)  # absolute: would write beside the source
    index_path.write_text(json.dumps(index))
    with pytest.raises(DataError, match="is an absolute path"):
        convert_predictions(tmp_path / "pred", tmp_path / "out2", format="cityscapes")
    assert not list((tmp_path / "pred").glob("**/*_pred.txt"))


def test_null_segments_info_is_one_sentence(tmp_path):
    _write_prediction_dir(tmp_path / "pred")
    index = json.loads((tmp_path / "pred" / "panoptic.json").read_text())
    index["annotations"][1]["segments_info"] = None
    (tmp_path / "pred" / "panoptic.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match="segments_info of image 'cityB_000001_000019' must be a list"):
        convert_predictions(tmp_path / "pred", tmp_path / "out")
