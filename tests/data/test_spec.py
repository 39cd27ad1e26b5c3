"""DatasetSpec: the Cityscapes table, (de)serialisation, COCO ordering and spec_for."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pdlkit.data import DatasetSpec, cityscapes_spec, coco_spec_from_categories, spec_for
from pdlkit.errors import DataError

CITYSCAPES_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                    "motorcycle", "bicycle")
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


def test_cityscapes_spec_matches_the_official_table():
    spec = cityscapes_spec()
    assert spec.name == "cityscapes"
    assert spec.num_classes == 19
    assert spec.class_names == CITYSCAPES_NAMES
    assert spec.category_ids == CITYSCAPES_LABEL_IDS
    assert spec.thing_ids == (11, 12, 13, 14, 15, 16, 17, 18)
    assert [spec.class_names[t] for t in spec.thing_ids] == [
        "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
    assert spec.stuff_ids == tuple(range(11))
    assert spec.colors[0] == (128, 64, 128) and spec.colors[13] == (0, 0, 142)
    assert spec.label_divisor == 1000 and spec.ignore_label == 255
    assert spec.category_to_train_id[26] == 13 and 9 not in spec.category_to_train_id


def test_to_dict_from_dict_round_trip_through_json():
    spec = cityscapes_spec()
    data = json.loads(json.dumps(spec.to_dict()))
    again = DatasetSpec.from_dict(data)
    assert again == spec
    assert hash(again) == hash(spec)
    assert data["colors"][2] == [70, 70, 70]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"category_ids": [1, 2]}, "category_ids has 2 entries"),
        ({"is_thing": [True]}, "is_thing has 1 entries"),
        ({"category_ids": [4, 4, 5]}, "not unique"),
        ({"ignore_label": 1}, "ignore_label 1 is a valid train id"),
        ({"colors": [[0, 0], [1, 1, 1], [2, 2, 2]]}, "(r, g, b)"),
    ],
)
def test_from_dict_rejects_inconsistent_specs(change, message):
    data = {"name": "mine", "class_names": ["a", "b", "c"], "category_ids": [4, 5, 6],
            "is_thing": [False, True, True], "colors": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}
    data.update(change)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DatasetSpec.from_dict(data)


def test_from_dict_names_missing_and_unknown_keys():
    with pytest.raises(DataError, match="missing category_ids, is_thing"):
        DatasetSpec.from_dict({"name": "x", "class_names": ["a"], "colors": [[0, 0, 0]]})
    good = cityscapes_spec().to_dict()
    with pytest.raises(DataError, match="unknown keys colour"):
        DatasetSpec.from_dict({**good, "colour": 1})


def test_coco_spec_orders_train_ids_by_category_id():
    categories = [
        {"id": 184, "name": "tree-merged", "isthing": 0, "color": [1, 2, 3]},
        {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
        {"id": 3, "name": "car", "isthing": 1},  # no colour: derived, stable
    ]
    spec = coco_spec_from_categories(categories)
    assert spec.class_names == ("person", "car", "tree-merged")
    assert spec.category_ids == (1, 3, 184)
    assert spec.thing_ids == (0, 1)
    assert spec.colors[0] == (220, 20, 60) and spec.colors[2] == (1, 2, 3)
    assert spec.colors[1] == coco_spec_from_categories(categories).colors[1]


def test_spec_for_by_dataset_name(tmp_path):
    assert spec_for(SimpleNamespace(dataset="cityscapes", root="x")) == cityscapes_spec()
    assert spec_for(SimpleNamespace(dataset="toy", root="x")) == cityscapes_spec()
    with pytest.raises(DataError, match="pdl prepare panoptic"):
        spec_for(SimpleNamespace(dataset="coco", root=str(tmp_path)))
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "panoptic_val2017.json").write_text("{}")
    with pytest.raises(DataError, match="not a prepared COCO-panoptic dataset .*run `pdl prepare coco"):
        spec_for(SimpleNamespace(dataset="coco", root=str(tmp_path)))
    with pytest.raises(DataError, match="unknown dataset 'kitti'"):
        spec_for(SimpleNamespace(dataset="kitti", root=str(tmp_path)))
