"""prepare_coco on a tiny COCO-panoptic folder made here; COCO records and training items."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pdlkit.config import Config
from pdlkit.data import build_train_dataset, load_records, prepare_coco, spec_for
from pdlkit.errors import DataError
from pdlkit.io import id_to_rgb, write_png

CATEGORIES = [
    {"id": 184, "name": "tree-merged", "isthing": 0, "color": [107, 142, 35], "supercategory": "plant"},
    {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60], "supercategory": "person"},
    {"id": 3, "name": "car", "isthing": 1, "color": [0, 0, 142], "supercategory": "vehicle"},
]
# panoptic ids chosen to use all three bytes of the RGB encoding
TREE, PERSON, CAR, CROWD = 0x0A0B0C, 2_000_001, 77, 300


def _panoptic(height=12, width=16) -> tuple:
    ids = np.zeros((height, width), np.int64)
    ids[:, :8] = TREE
    ids[2:6, 9:12] = PERSON
    ids[7:11, 9:15] = CAR
    ids[0:2, 12:16] = CROWD
    segments = [
        {"id": TREE, "category_id": 184, "iscrowd": 0},
        {"id": PERSON, "category_id": 1, "iscrowd": 0},
        {"id": CAR, "category_id": 3, "iscrowd": 0},
        {"id": CROWD, "category_id": 1, "iscrowd": 1},
    ]
    for seg in segments:
        seg["area"] = int(np.sum(ids == seg["id"]))
    return ids, segments


def make_coco(root: Path) -> Path:
    import cv2

    ids, segments = _panoptic()
    for split, count in (("train", 2), ("val", 1)):
        images, annotations = [], []
        for k in range(count):
            image_id = 100 * (split == "val") + k + 1
            name = f"{image_id:012d}"
            rgb = np.random.default_rng(image_id).integers(0, 256, (12, 16, 3), dtype=np.uint8)
            (root / f"{split}2017").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / f"{split}2017" / f"{name}.jpg"), rgb[:, :, ::-1])
            write_png(root / "annotations" / f"panoptic_{split}2017" / f"{name}.png", id_to_rgb(ids))
            images.append({"id": image_id, "file_name": f"{name}.jpg", "height": 12, "width": 16})
            annotations.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": segments})
        (root / "annotations" / f"panoptic_{split}2017.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return root


def test_prepare_coco_writes_the_manifest(tmp_path):
    root = make_coco(tmp_path)
    manifest = prepare_coco(root)
    assert manifest["splits"] == {
        "train": {"images": "train2017", "json": "annotations/panoptic_train2017.json",
                  "masks": "annotations/panoptic_train2017", "num_images": 2},
        "val": {"images": "val2017", "json": "annotations/panoptic_val2017.json",
                "masks": "annotations/panoptic_val2017", "num_images": 1},
    }
    spec = spec_for(Config().data.__class__(dataset="coco", root=str(root)))
    assert spec.category_ids == (1, 3, 184)  # train ids follow the ascending category id
    assert spec.class_names == ("person", "car", "tree-merged")
    assert spec.thing_ids == (0, 1)
    assert spec.colors[2] == (107, 142, 35)
    assert json.loads((root / "pdlkit_dataset.json").read_text())["spec"] == spec.to_dict()


def test_coco_records_and_items(tmp_path):
    root = make_coco(tmp_path)
    prepare_coco(root)
    records = load_records(root, "train", "coco")
    assert [r.image_id for r in records] == ["000000000001", "000000000002"]
    assert records[0].image_path == (root / "train2017" / "000000000001.jpg").resolve()
    assert records[0].segments.tolist() == [[TREE, 2, 0, 0], [PERSON, 0, 1, 0], [CAR, 1, 1, 0], [CROWD, 0, 1, 1]]
    assert len(load_records(root, "val", "coco")) == 1
    with pytest.raises(DataError, match="no split 'val2017' .*prepared splits: train, val"):
        load_records(root, "val2017", "coco")

    cfg = Config()
    cfg.data.dataset, cfg.data.root = "coco", str(root)
    item = build_train_dataset(cfg, spec_for(cfg.data), augment=False)[0]
    ids, _ = _panoptic()
    expected = np.full(ids.shape, 255)
    expected[ids == TREE], expected[ids == PERSON], expected[ids == CAR], expected[ids == CROWD] = 2, 0, 1, 0
    assert np.array_equal(item["semantic"].numpy(), expected)
    # crowd and unlabelled pixels carry no center / offset loss
    assert np.array_equal(item["center_weights"].numpy(), np.isin(ids, [TREE, PERSON, CAR]).astype(np.float32))
    assert np.array_equal(item["offset_weights"].numpy(), np.isin(ids, [PERSON, CAR]).astype(np.float32))
    assert item["image"].shape == (3, 12, 16)


def test_prepare_coco_lists_what_is_missing(tmp_path):
    with pytest.raises(DataError) as info:
        prepare_coco(tmp_path)
    message = str(info.value)
    for part in ("annotations/panoptic_train2017.json", "annotations/panoptic_val2017.json",
                 "annotations/panoptic_train2017/", "train2017/", "val2017/"):
        assert part in message
    with pytest.raises(DataError, match="dataset folder not found"):
        prepare_coco(tmp_path / "absent")


def test_prepare_coco_names_a_missing_png_and_a_bad_json(tmp_path):
    root = make_coco(tmp_path)
    (root / "annotations" / "panoptic_val2017" / "000000000101.png").unlink()
    with pytest.raises(DataError, match="missing panoptic pngs 000000000101.png named in"):
        prepare_coco(root)
    (root / "annotations" / "panoptic_train2017.json").write_text("{not json")
    with pytest.raises(DataError, match="panoptic_train2017.json: not a readable JSON file"):
        prepare_coco(root)
    assert not (root / "pdlkit_dataset.json").exists()


def test_categories_must_agree_between_splits(tmp_path):
    root = make_coco(tmp_path)
    path = root / "annotations" / "panoptic_val2017.json"
    data = json.loads(path.read_text())
    data["categories"] = data["categories"][:2]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="categories differ"):
        prepare_coco(root)
